"""When each student handed in, as ``grade batch`` learns it from the class's files.

The submission time comes from whatever the channel knows (see :mod:`grader.scoring.deadline`):
Moodle's grading worksheet ("Last modified (submission)"), a roster's ``submitted`` column (and its
``extension`` column), Canvas's ``_LATE_`` flag, and the files' modification time only when nothing
better exists.
"""

from __future__ import annotations

import csv
import datetime as _dt
from dataclasses import dataclass
from pathlib import Path

from grader.scoring.deadline import Extension, Source, parse_extension, parse_time

MOODLE_SUBMITTED = "Last modified (submission)"


@dataclass(frozen=True)
class HandIn:
    """What a channel knows about when one student handed in: a time, or Canvas's late flag."""

    submitted: _dt.datetime | None
    source: Source
    late_flag: bool | None = None  # Canvas: True for _LATE_, False for a name without it; None elsewhere


def roster_times(path: Path, kind: str, *, tz: _dt.tzinfo) -> tuple[dict[str, HandIn], dict[str, Extension]]:
    """Submission times and extensions a roster carries, by student key: Moodle's worksheet column
    "Last modified (submission)"; a generic roster's ``submitted`` and ``extension`` columns."""
    from grader.classroom.lms.moodle import read_moodle_worksheet

    times: dict[str, HandIn] = {}
    extensions: dict[str, Extension] = {}
    if kind == "moodle":
        for s in read_moodle_worksheet(path):
            cell = s.row.get(MOODLE_SUBMITTED)
            if cell is not None:
                times[s.student_key] = HandIn(parse_time(cell, where=f"{path.name}:{s.line}", tz=tz), "Moodle worksheet")
        return times, extensions
    if kind != "generic":
        return times, extensions
    with open(path, newline="", encoding="utf-8-sig") as f:
        rows = list(csv.reader(f))
    if not rows:
        return times, extensions
    header = [h.strip().lower() for h in rows[0]]
    sub_col = next((header.index(n) for n in ("submitted", "submitted_at", "submission_time") if n in header), None)
    ext_col = next((header.index(n) for n in ("extension", "extension_days") if n in header), None)
    for n, row in enumerate(rows[1:], start=2):
        if not row or not row[0].strip():
            continue
        sid = row[0].strip()
        if sub_col is not None and sub_col < len(row) and row[sub_col].strip():
            times[sid] = HandIn(parse_time(row[sub_col], where=f"{path.name}:{n}", tz=tz), "roster")
        if ext_col is not None and ext_col < len(row):
            ext = parse_extension(row[ext_col], where=f"{path.name}:{n}", tz=tz)
            if ext is not None:
                extensions[sid] = ext
    return times, extensions


def file_time(paths) -> _dt.datetime | None:
    """The latest modification time of a bundle's files (the last resort)."""
    stamps = []
    for p in paths:
        try:
            stamps.append(Path(p).stat().st_mtime)
        except OSError:
            continue
    return _dt.datetime.fromtimestamp(max(stamps), _dt.timezone.utc) if stamps else None
