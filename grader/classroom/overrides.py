"""Instructor overrides: a student's points set by hand, with a comment, that survive every regrade.

``grade batch --overrides FILE`` reads a CSV of ``student_id,points,comment`` (a header row is
optional; ``#`` starts a comment line; empty points remove the student's override) and records
each row in the gradebook (:meth:`grader.classroom.gradebook.Gradebook.set_override`) with who set it and
when; the site's instructor page sets the same rows. Every export then shows the overridden
points with the comment, and flags an override whose underlying grade changed since it was set.
"""

from __future__ import annotations

import csv
import getpass
import math
from dataclasses import dataclass
from pathlib import Path

from grader.classroom.roster import valid_student_id
from grader.errors import SetupError

MAX_COMMENT = 2000


class OverrideError(SetupError, ValueError):
    """The overrides file (or an override form) is wrong; the message names the line and the fix."""


@dataclass(frozen=True)
class OverrideRow:
    student: str
    points: float | None  # None: remove the override
    comment: str
    line: int


def check_override(points: float, comment: str, *, max_points: float, where: str) -> None:
    """An override is between 0 and the maximum and says why."""
    if not math.isfinite(points) or not 0 <= points <= max_points + 1e-9:
        raise OverrideError(f"{where}: {points:g} points is outside 0..{max_points:g} (the rubric's maximum)")
    if not comment.strip():
        raise OverrideError(f"{where}: an override needs a comment saying why (it reaches the student's feedback)")
    if len(comment) > MAX_COMMENT:
        raise OverrideError(f"{where}: the comment is longer than {MAX_COMMENT} characters")


def read_overrides(path: Path, *, max_points: float) -> list[OverrideRow]:
    """The rows of an overrides CSV, checked; raises :class:`OverrideError` naming the line."""
    try:
        text = Path(path).read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise OverrideError(f"cannot read the overrides file {path}: {exc}") from None
    out: list[OverrideRow] = []
    seen: dict[str, int] = {}
    for n, row in enumerate(csv.reader(text.splitlines()), start=1):
        if not row or not row[0].strip() or row[0].lstrip().startswith("#"):
            continue
        sid = row[0].strip()
        if not out and sid.lower() in ("student_id", "id", "student"):
            continue  # the header
        where = f"{path}:{n}"
        if not valid_student_id(sid):
            raise OverrideError(f"{where}: {sid[:80]!r} is not a valid student id")
        if sid in seen:
            raise OverrideError(f"{where}: student {sid} is already on line {seen[sid]}; keep one row per student")
        seen[sid] = n
        cell = row[1].strip() if len(row) > 1 else ""
        comment = ",".join(row[2:]).strip() if len(row) > 2 else ""
        if not cell:
            out.append(OverrideRow(sid, None, comment, n))
            continue
        try:
            points = float(cell.replace(",", "."))
        except ValueError:
            raise OverrideError(f"{where}: points {cell!r} is not a number (write e.g. 7.5)") from None
        check_override(points, comment, max_points=max_points, where=where)
        out.append(OverrideRow(sid, points, comment, n))
    return out


def who() -> str:
    """The person running the command, as the gradebook records it."""
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


def apply_overrides(gradebook, rows: list[OverrideRow], *, rubric_id: str, graded: dict[str, float | None],
                    source: str) -> None:
    """Record the file's rows in the gradebook: set (with the graded points under it now) or remove."""
    for r in rows:
        if r.points is None:
            gradebook.clear_override(r.student, rubric_id)
        else:
            gradebook.set_override(r.student, rubric_id, r.points, r.comment, set_by=f"{who()} ({source})",
                                   graded_points=graded.get(r.student))
