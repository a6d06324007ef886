"""One top-level entry of an LMS download (a file or folder name), parsed by :mod:`.moodle` or :mod:`.canvas`."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

Layout = Literal["moodle", "canvas", "plain"]

DIGITS = re.compile(r"^[0-9]{1,18}$")
_CANVAS_RESUBMIT = re.compile(r"^(?P<stem>.+?)-[0-9]{1,4}(?P<ext>\.[A-Za-z0-9]{1,16})$")
_BAD_NAME = re.compile(r"[/\\\x00-\x1f\x7f]")


@dataclass(frozen=True)
class LmsEntry:
    """One top-level entry of an LMS download, parsed.

    ``student_key`` is safe for paths and the gradebook; ``lms_id`` is the LMS's own id (Moodle
    participant id, Canvas user id, or ``anon_<id>``); ``file_name`` is the student's original file
    name, or None for a Moodle folder (the files are inside). ``plugin`` is Moodle's submission
    plugin (``file``, ``onlinetext``) or Canvas's kind (``upload``, ``text``, ``link``).
    """

    name: str
    layout: Layout
    student_key: str
    lms_id: str
    display_name: str
    late: bool
    file_name: str | None
    plugin: str = "file"
    attachment_id: str | None = None

    @property
    def is_folder(self) -> bool:
        return self.file_name is None

    @property
    def canonical_file_name(self) -> str | None:
        """``file_name`` without the ``-1``/``-2`` Canvas adds to a re-uploaded file (``model-1.onnx``
        -> ``model.onnx``); other names unchanged."""
        if self.file_name is None or self.layout != "canvas":
            return self.file_name
        m = _CANVAS_RESUBMIT.match(self.file_name)
        return m.group("stem") + m.group("ext") if m else self.file_name


def usable_name(name: str) -> bool:
    """A single, visible path component: no separators, control characters, ``.``/``..`` or leading dot."""
    return bool(name) and not name.startswith(".") and not _BAD_NAME.search(name) and len(name) <= 1024


def norm_id(value: object) -> str:
    """An LMS id as text with leading zeros dropped (``"0042"`` and ``42`` are the same participant)."""
    text = str(value).strip()
    return str(int(text)) if DIGITS.match(text) else text


def file_part_ok(part: str) -> bool:
    return bool(part) and part not in (".", "..") and not _BAD_NAME.search(part)
