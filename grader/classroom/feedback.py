"""Feedback delivered: the text each student's LMS grade carries, and the zips of feedback files.

* :func:`feedback_text`: the points, every scored part (the late penalty included), the band, and an
  instructor's override with its comment: the LMS feedback column and ``feedback.txt``.
* ``feedback_moodle.zip``: what Moodle's "Upload multiple feedback files in a zip" imports. Moodle
  (``mod/assign/feedback/file/importziplib.php``) walks each path, splits a part on ``_`` into
  ``fullname_participantid_plugintype_pluginname[_rest]`` and matches the participant id; we use the
  folder names of Moodle's own download with the trailing ``_`` (``Full Name_1234567_assignsubmission_file_/``,
  the full name with ``_`` as a space), each holding ``report.html`` and ``feedback.txt``. Moodle 4.1
  and later read folders with or without that ``_``; before 4.1 the importer split the whole path
  into at most five parts and needed it (without it the file name fused with the plugin name).
* ``feedback_reports.zip``: one folder per student id (``<student_id>/report.html`` and
  ``feedback.txt``) for LMSs without such an import.

Students see these files, so they follow the hidden-seed policy: the report is rendered again from
the result without its videos (whose file names may hold seeds), and ``result.json``, which names the
grading seeds, is never included.
"""

from __future__ import annotations

import io
import logging
import re
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING

from grader.outputs.textsafe import clean_text

if TYPE_CHECKING:
    from grader.classroom.exports import StudentRow

log = logging.getLogger("grader.feedback")
MOODLE_ZIP = "feedback_moodle.zip"
REPORTS_ZIP = "feedback_reports.zip"
_FILENAME_BAD = re.compile(r"[\\/:*?\"<>|\x00-\x1f\x7f]")
_ZIP_TIME = (2026, 1, 1, 0, 0, 0)  # fixed: the same grades give the same bytes


def _num(v: float) -> str:
    return f"{v:.2f}".rstrip("0").rstrip(".")


def feedback_text(row: StudentRow, max_points: float) -> str:
    """What the student reads beside the grade: status, points, parts, lateness, the override."""
    from grader.outputs.seedpolicy import SeedPolicy

    r = row.result
    lines = [f"{row.status}: {_num(row.points)} / {_num(max_points)}"]
    if r is not None:
        scrub = SeedPolicy(r).scrub
        if r.band and row.override is None:
            lines[0] += f" ({r.band})"
        parts = [p for p in r.parts if p.max_points > 0 or p.kind == "late"]
        if len(parts) > 1 or any(p.kind == "late" for p in parts):
            lines.append("; ".join(f"{p.name} {_num(p.points)}" + (f"/{_num(p.max_points)}" if p.kind != "late" else "")
                                   for p in parts))
        late = next((p for p in r.parts if p.kind == "late"), None)
        if late is not None:
            lines.append(f"deadline: {late.detail}")
        if r.status != "graded" and r.error:
            lines.append(scrub(r.error)[:300])
    if row.override is not None:
        graded = "no grade" if row.graded_points is None else _num(row.graded_points)
        lines.append(f"points set by the instructor ({graded} graded): {row.override.comment}")
    return "\n".join(clean_text(line, max_len=2000) for line in lines)


def student_report_html(result) -> str:
    """The student's report, without videos (their names may hold seeds), seeds hidden as in every report."""
    from grader.outputs.report import baseline_values, render_html

    return render_html(result.model_copy(update={"videos": []}), baselines=baseline_values(result), video_paths={})


def moodle_folder(full_name: str, participant_id: str) -> str:
    """The folder name Moodle's download gives a participant (3.1 to 4.0 style, which every version's
    feedback import reads)."""
    name = _FILENAME_BAD.sub("", clean_text(full_name).replace("_", " ")).strip() or "Participant"
    return f"{name}_{participant_id}_assignsubmission_file_"


def _add(z: zipfile.ZipFile, name: str, data: str) -> None:
    info = zipfile.ZipInfo(name, date_time=_ZIP_TIME)
    info.compress_type = zipfile.ZIP_DEFLATED
    info.external_attr = 0o644 << 16
    z.writestr(info, data.encode("utf-8"))


def _files(row: StudentRow, max_points: float) -> dict[str, str]:
    files = {"feedback.txt": feedback_text(row, max_points) + "\n"}
    if row.result is not None:
        try:
            files["report.html"] = student_report_html(row.result)
        except Exception:  # noqa: BLE001 - a report that cannot be rendered: the text still goes out
            log.exception("the feedback report of %s could not be rendered; feedback.txt only", row.id)
    return files


def write_feedback_zips(out: Path, rows: list[StudentRow], *, max_points: float,
                        moodle_names: dict[str, str] | None = None) -> list[Path]:
    """``feedback_reports.zip`` (by student id) for every graded student, and ``feedback_moodle.zip``
    when the students are Moodle participants (keys ``moodle-<id>``; ``moodle_names`` gives their full
    names). Returns the zips written."""
    from grader.outputs.fsutil import atomic_write

    graded = [r for r in rows if r.result is not None or r.override is not None]
    per_student = {r.id: _files(r, max_points) for r in graded}
    written = []
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for r in graded:
            for name, data in per_student[r.id].items():
                _add(z, f"{r.id}/{name}", data)
    atomic_write(out / REPORTS_ZIP, buf.getvalue())
    written.append(out / REPORTS_ZIP)
    moodle = [r for r in graded if r.id.startswith("moodle-")]
    if moodle:
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w") as z:
            for r in moodle:
                pid = r.id.removeprefix("moodle-")
                folder = moodle_folder((moodle_names or {}).get(r.id) or r.name, pid)
                for name, data in per_student[r.id].items():
                    _add(z, f"{folder}/{name}", data)
        atomic_write(out / MOODLE_ZIP, buf.getvalue())
        written.append(out / MOODLE_ZIP)
    return written

