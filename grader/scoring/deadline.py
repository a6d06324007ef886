"""Deadlines and late work: the rubric's ``[deadline]`` table, extensions, submission times, the penalty.

The rubric says when the work is due and what lateness costs::

    [deadline]
    due = "2026-12-01T23:59:00+03:00"   # ISO 8601 with an offset
    late_penalty_per_day = 0.1          # a fraction of the maximum, per started day late
    late_max_days = 5                   # later than this: 0 points, and the result says why
    timezone = "Europe/Moscow"          # optional: how times written without an offset are read
    extensions_file = "extensions.csv"  # optional: student_id,days (or student_id,due), beside the rubric

A channel that knows when the work was handed in builds a :class:`Late` with :func:`lateness`;
:func:`grader.scoring.points.compose` turns it into the ``late`` part of the score (negative points, never
below 0 in total), so the penalty shows on every output like every other part.

Submission times come from the channel: Moodle's worksheet ("Last modified (submission)", written in
the site's time zone without an offset, e.g. ``Monday, 2 December 2026, 10:15 AM``), a
``submitted`` column of a roster, Canvas's ``_LATE_`` flag (late, but by how much Canvas does not
say: counted as one started day), the site's upload time, Gradescope's ``created_at``, and a
file's modification time only when nothing better exists.
"""

from __future__ import annotations

import csv
import datetime as _dt
import math
import re
from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, field_validator

from grader.errors import GraderBug, SetupError
from grader.result import Late  # the schema lives with the result's (result.json's "late")

DAY_S = 86_400.0
# How Moodle writes a date in its worksheet (strftimedatetime, English), and close variants.
_MOODLE_FORMATS = ("%A, %d %B %Y, %I:%M %p", "%A, %d %B %Y, %H:%M", "%d %B %Y, %I:%M %p", "%d %B %Y, %H:%M",
                   "%A, %d %b %Y, %I:%M %p", "%d/%m/%Y, %H:%M", "%Y-%m-%d %H:%M:%S", "%Y-%m-%d %H:%M")
Source = str  # "Moodle worksheet", "roster", "Canvas's late flag", "upload time", "Gradescope", "file time"


class DeadlineError(SetupError, ValueError):
    """The deadline, an extension or a submission time cannot be read; the message says where and why."""


class Deadline(BaseModel):
    """The rubric's ``[deadline]`` table."""

    model_config = ConfigDict(extra="forbid")

    due: str = Field(description="ISO 8601 time with an offset, e.g. 2026-12-01T23:59:00+03:00")
    late_penalty_per_day: float = Field(0.0, ge=0, le=1, description="fraction of the maximum lost per started day late")
    late_max_days: int = Field(0, ge=0, le=3650, description="later than this many days: 0 points")
    timezone: str | None = Field(None, description="IANA zone for times written without an offset (default: due's offset)")
    extensions_file: str | None = Field(None, description="CSV of student_id,days or student_id,due, relative to the rubric")

    @field_validator("due")
    @classmethod
    def _aware(cls, v: str) -> str:
        parse_iso(v, where="deadline.due", default_tz=None)
        return v

    @field_validator("timezone")
    @classmethod
    def _zone(cls, v: str | None) -> str | None:
        if v is not None:
            _zone_info(v)
        return v

    def due_at(self) -> _dt.datetime:
        return parse_iso(self.due, where="deadline.due", default_tz=None)

    def local_tz(self) -> _dt.tzinfo:
        """The zone in which times without an offset are read: ``timezone``, else the offset of ``due``."""
        if self.timezone:
            return _zone_info(self.timezone)
        tz = self.due_at().tzinfo
        if tz is None:  # the validator refuses a due time without an offset
            raise GraderBug(f"deadline.due {self.due!r} has no offset")
        return tz


def _zone_info(name: str) -> _dt.tzinfo:
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise DeadlineError(f"deadline.timezone: {name!r} is not a time zone name (e.g. 'Europe/Moscow')") from None


def parse_iso(text: str, *, where: str, default_tz: _dt.tzinfo | None) -> _dt.datetime:
    """An ISO 8601 time; one without an offset is read in ``default_tz`` (None: refused)."""
    t = str(text).strip()
    if t.endswith("Z"):
        t = t[:-1] + "+00:00"
    try:
        value = _dt.datetime.fromisoformat(t)
    except ValueError:
        raise DeadlineError(f"{where}: {text!r} is not an ISO 8601 time like 2026-12-01T23:59:00+03:00") from None
    if value.tzinfo is None:
        if default_tz is None:
            raise DeadlineError(f"{where}: {text!r} has no offset; write it like 2026-12-01T23:59:00+03:00")
        value = value.replace(tzinfo=default_tz)
    return value


def parse_time(text: str, *, where: str, tz: _dt.tzinfo) -> _dt.datetime | None:
    """A submission time as an LMS writes it: ISO 8601, or Moodle's ``Monday, 2 December 2026, 10:15
    AM`` (read in ``tz``). None for Moodle's ``-`` (no submission) or an empty cell."""
    t = " ".join(str(text).split())
    if t in ("", "-"):
        return None
    if re.match(r"^\d{4}-\d{2}-\d{2}[T ]\d", t):
        return parse_iso(t, where=where, default_tz=tz)
    for fmt in _MOODLE_FORMATS:
        try:
            return _dt.datetime.strptime(t, fmt).replace(tzinfo=tz)
        except ValueError:
            continue
    raise DeadlineError(f"{where}: cannot read the time {text!r} (expected e.g. 'Monday, 2 December 2026, 10:15 AM' "
                        "or 2026-12-02T10:15:00+03:00); download the worksheet with the interface language set to English")


# --- extensions --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Extension:
    """A student's own deadline: ``days`` more than the class, or a new ``due`` time."""

    days: float = 0.0
    due: _dt.datetime | None = None

    def applied_to(self, due: _dt.datetime) -> _dt.datetime:
        return self.due if self.due is not None else due + _dt.timedelta(days=self.days)


def parse_extension(text: str, *, where: str, tz: _dt.tzinfo) -> Extension | None:
    """``3`` (days), ``1.5`` or an ISO time (a new deadline); None when empty."""
    t = str(text).strip()
    if not t:
        return None
    if re.fullmatch(r"[0-9]+(\.[0-9]+)?", t):
        days = float(t)
        if days > 3650:
            raise DeadlineError(f"{where}: an extension of {t} days is more than ten years")
        return Extension(days=days)
    return Extension(due=parse_iso(t, where=where, default_tz=tz))


def read_extensions(path: Path, *, tz: _dt.tzinfo) -> dict[str, Extension]:
    """``student_id,extension`` rows (a header naming ``student_id`` is optional; ``#`` comments):
    the extension is a number of days or an ISO time. A student listed twice is an error."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise DeadlineError(f"cannot read the extensions file {path}: {exc}") from None
    out: dict[str, Extension] = {}
    for n, row in enumerate(csv.reader(text.splitlines()), start=1):
        if not row or not row[0].strip() or row[0].lstrip().startswith("#"):
            continue
        sid = row[0].strip()
        if not out and sid.lower() in ("student_id", "id", "student"):
            continue  # the header
        if len(row) < 2:
            raise DeadlineError(f"{path}:{n}: expected student_id,days (or student_id,ISO time), got {sid!r} alone")
        if sid in out:
            raise DeadlineError(f"{path}:{n}: student {sid} has two extensions; keep one")
        ext = parse_extension(row[1], where=f"{path}:{n}", tz=tz)
        if ext is not None:
            out[sid] = ext
    return out


# --- lateness ----------------------------------------------------------------------------------------

def lateness(deadline: Deadline, submitted: _dt.datetime | None, *, source: Source,
             extension: Extension | None = None, late_flag: bool | None = None) -> Late:
    """The lateness of one submission. Without a time, ``late_flag`` (Canvas's ``_LATE_``: True, or
    False when the channel would have flagged late work) decides: late counts as one started day,
    unflagged as on time; a time always wins over the flag."""
    due = deadline.due_at()
    own_due = extension.applied_to(due) if extension is not None else due
    ext_text = ""
    if extension is not None:
        ext_text = f"due {_fmt(own_due)}" if extension.due is not None else f"{extension.days:g} days"
    if submitted is None and late_flag is None:
        return Late(submitted=None, due=_fmt(own_due), source=source, extension=ext_text)
    if submitted is None:  # late (or not) by Canvas's word; by how much it does not say
        days = 1 if late_flag else 0
        shown = "after Canvas's due date" if late_flag else "before Canvas's due date"
    else:
        seconds = (submitted - own_due).total_seconds()
        days = 0 if seconds <= 0 else math.ceil(seconds / DAY_S - 1e-9)
        shown = _fmt(submitted)
    over = days > deadline.late_max_days if days > 0 else False
    fraction = 1.0 if over else min(1.0, days * deadline.late_penalty_per_day)
    return Late(submitted=shown, due=_fmt(own_due), source=source, days_late=days, extension=ext_text,
                fraction=round(fraction, 6), over_limit=over, max_days=deadline.late_max_days)


def _fmt(t: _dt.datetime) -> str:
    return t.isoformat(timespec="minutes")


def late_points(late: Late | None, *, earned: float, maximum: float) -> float:
    """The late part's points: minus the penalty, never more than what was earned (the total stays >= 0)."""
    if late is None or late.days_late == 0:
        return 0.0
    penalty = earned if late.over_limit else late.fraction * maximum
    return -round(min(max(earned, 0.0), penalty), 4)


@dataclass
class Deadlines:
    """A rubric's deadline with its extensions, ready to tell each student's lateness."""

    deadline: Deadline
    extensions: dict[str, Extension]

    def late(self, student: str, submitted: _dt.datetime | None, *, source: Source,
             late_flag: bool | None = None) -> Late:
        return lateness(self.deadline, submitted, source=source, extension=self.extensions.get(student),
                        late_flag=late_flag)


def deadlines_of(rubric, *, roster_extensions: dict[str, Extension] | None = None) -> Deadlines | None:
    """The rubric's deadline and extensions (its ``extensions_file``, then the roster's ``extension``
    column, which wins); None when the rubric has no ``[deadline]``."""
    deadline: Deadline | None = getattr(rubric, "deadline", None)
    if deadline is None:
        return None
    extensions: dict[str, Extension] = {}
    if deadline.extensions_file:
        extensions.update(read_extensions(rubric.resolve(deadline.extensions_file), tz=deadline.local_tz()))
    extensions.update(roster_extensions or {})
    return Deadlines(deadline, extensions)
