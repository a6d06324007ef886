"""Rosters and the student-id rule, shared by ``grade batch``, the LMS round trip and the site.

A roster is a CSV of ``id, name, email`` (a header row naming ``id``/``student_id`` is recognised
and optional; columns after the id are optional). Student ids are untrusted everywhere: one rule,
:func:`valid_student_id`, decides which can become a path or a gradebook key.
"""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass, field
from pathlib import Path

from grader.errors import SetupError

STUDENT_ID_RE = re.compile(r"^[A-Za-z0-9_.@-]{1,64}$")


def valid_student_id(sid: str) -> bool:
    """The one rule for student ids, shared by the batch grader, the rosters and the site."""
    return bool(STUDENT_ID_RE.fullmatch(sid)) and ".." not in sid and not sid.startswith(".")


@dataclass(frozen=True)
class Problem:
    """Something in the class folder or the roster that does not fit the layout."""

    entry: str  # path relative to the class folder (or "roster.csv:LINE")
    reason: str
    student: str | None = None  # the student it concerns, when the name is a valid id


@dataclass(frozen=True)
class RosterStudent:
    id: str
    name: str = ""
    email: str = ""


@dataclass
class Roster:
    students: list[RosterStudent] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)

    def ids(self) -> list[str]:
        return [s.id for s in self.students]

    def get(self, sid: str) -> RosterStudent | None:
        return next((s for s in self.students if s.id == sid), None)


class RosterError(SetupError, ValueError):
    """The roster cannot be read; the message names the file and what to fix."""


def read_roster(path: str | Path) -> Roster:
    """A CSV of ``id, name, email`` (a header row naming ``id``/``student_id`` is recognised and
    optional; columns after the id are optional). Bad or repeated ids become problems."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise RosterError(f"cannot read the roster {path}: {exc}") from None
    rows = list(csv.reader(text.splitlines()))
    roster = Roster()
    cols = {"id": 0, "name": 1, "email": 2}
    start = 0
    if rows and rows[0] and rows[0][0].strip().lower() in ("id", "student_id", "student", "sid"):
        header = [h.strip().lower() for h in rows[0]]
        cols = {"id": 0}
        for key, names in (("name", ("name", "full_name", "student_name")), ("email", ("email", "e-mail", "mail"))):
            cols[key] = next((i for i, h in enumerate(header) if h in names), -1)
        start = 1
    seen: set[str] = set()
    for n, row in enumerate(rows[start:], start=start + 1):
        if not row or not any(c.strip() for c in row) or row[0].lstrip().startswith("#"):
            continue
        sid = row[0].strip()

        def col(key: str, row: list[str] = row) -> str:
            i = cols.get(key, -1)
            return row[i].strip() if 0 <= i < len(row) else ""

        if not valid_student_id(sid):
            roster.problems.append(Problem(f"{path.name}:{n}", f"roster id {sid[:80]!r} is not a valid student id"))
            continue
        if sid in seen:
            roster.problems.append(Problem(f"{path.name}:{n}", f"student {sid} is listed twice in the roster"))
            continue
        seen.add(sid)
        roster.students.append(RosterStudent(sid, col("name"), col("email")))
    return roster
