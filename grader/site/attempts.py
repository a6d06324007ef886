"""Reading gradebook attempts, whatever their shape (dict, sqlite3.Row or object).

The site depends only on the gradebook's API (``enqueue``, ``claim_next``, ``finish``, ...); the
few fields it reads go through :func:`field`, which accepts the usual spellings.
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Mapping
from typing import Any

FINISHED = ("graded", "invalid", "error")


def field(attempt: Any, *names: str, default: Any = None) -> Any:
    for name in names:
        if isinstance(attempt, Mapping):
            if name in attempt:
                return attempt[name]
        elif hasattr(attempt, "keys") and name in attempt.keys():  # sqlite3.Row
            return attempt[name]
        elif hasattr(attempt, name):
            return getattr(attempt, name)
    return default


def attempt_id(a: Any) -> int:
    return int(field(a, "id", "attempt_id"))


def student(a: Any) -> str:
    return str(field(a, "student", "student_id", default=""))


def status(a: Any) -> str:
    return str(field(a, "status", default=""))


def score(a: Any) -> float | None:
    s = field(a, "score")
    return None if s is None else float(s)


def band(a: Any) -> str:
    """The band the grading gave (``GradeResult.band`` in the stored result), or ""."""
    stored = field(a, "band", default=None)
    if stored:
        return str(stored)
    text = field(a, "result_json", default=None)
    if not text:
        return ""
    import json

    try:
        data = json.loads(text)
    except (TypeError, ValueError):
        return ""
    value = data.get("band") if isinstance(data, dict) else None
    return value if isinstance(value, str) else ""


def rubric_id(a: Any) -> str:
    return str(field(a, "rubric", "rubric_id", default=""))


def file_path(a: Any) -> str:
    return str(field(a, "file_path", "path", "file", default=""))


def _to_datetime(value: Any) -> _dt.datetime | None:
    if value is None or value == "":
        return None
    if isinstance(value, _dt.datetime):
        dt = value
    elif isinstance(value, (int, float)):
        dt = _dt.datetime.fromtimestamp(float(value), _dt.timezone.utc)
    else:
        try:
            dt = _dt.datetime.fromisoformat(str(value).replace("Z", "+00:00"))
        except ValueError:
            try:
                return _dt.datetime.fromtimestamp(float(value), _dt.timezone.utc)
            except ValueError:
                return None
    return dt if dt.tzinfo else dt.replace(tzinfo=_dt.timezone.utc)


def submitted(a: Any) -> _dt.datetime | None:
    return _to_datetime(field(a, "submitted", "submitted_at", "created", "created_at", "enqueued", "enqueued_at", "queued_at", "time"))


def finished_at(a: Any) -> _dt.datetime | None:
    return _to_datetime(field(a, "finished", "finished_at", "graded_at", "completed_at"))


def fmt_time(dt: _dt.datetime | None) -> str:
    return dt.astimezone(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC") if dt else ""
