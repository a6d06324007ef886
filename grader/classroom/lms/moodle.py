"""Moodle: the "Download all submissions" names and the grading worksheet (read as a roster, written
as the grade import). See the package docstring and ``docs/lms.md``."""

from __future__ import annotations

import html
import re
from collections.abc import Sequence
from pathlib import Path

from grader.classroom.lms.entry import LmsEntry, file_part_ok, norm_id
from grader.classroom.lms.table import (
    ExportSummary,
    Grades,
    LmsFormatError,
    LmsStudent,
    Table,
    checked_grades,
    column_index,
    defuse,
    format_points,
    id_sort,
    parse_number,
    read_table,
    scale_note,
    scale_points,
    show,
    unique_header,
    write_table,
)
from grader.outputs.textsafe import clean_text, csv_cell

_MOODLE_RE = re.compile(r"^(?P<name>.+?)_(?P<id>[0-9]{1,18})_assignsubmission_(?P<plugin>[a-z0-9]+)(?:_(?P<file>.*))?$",
                        re.DOTALL)

MOODLE_IDENTIFIER = "Identifier"
MOODLE_FULL_NAME = "Full name"
MOODLE_EMAIL = "Email address"
MOODLE_GRADE = "Grade"
MOODLE_MAX_GRADE = "Maximum Grade"
MOODLE_SCALE = "Scale"
MOODLE_LAST_MODIFIED_GRADE = "Last modified (grade)"
MOODLE_FEEDBACK = "Feedback comments"
_MOODLE_IDENTIFIER_VALUE = re.compile(r"^\D*?\s*([0-9]{1,18})\s*$")
# columns Moodle's importer reads: kept byte for byte when we do not fill them
_MOODLE_READ = {MOODLE_IDENTIFIER, MOODLE_GRADE, MOODLE_LAST_MODIFIED_GRADE, MOODLE_FEEDBACK}


def parse_moodle_entry(name: str, is_dir: bool | None) -> LmsEntry | None:
    m = _MOODLE_RE.match(name)
    if not m:
        return None
    display = clean_text(m.group("name")).strip()
    rest = m.group("file")
    folder = rest is None or rest == ""
    if not display or (is_dir is True and not folder) or (is_dir is False and folder):
        return None
    if not folder and not file_part_ok(rest):
        return None
    pid = norm_id(m.group("id"))
    return LmsEntry(name=name, layout="moodle", student_key=f"moodle-{pid}", lms_id=pid, display_name=display,
                    late=False, file_name=None if folder else rest, plugin=m.group("plugin"))


def _moodle_rows(table: Table) -> list[tuple[int, list[str]]]:
    width = len(table.header)
    for line, row in table.records:
        if len(row) != width:
            raise LmsFormatError(f"{table.path}, line {line}: {len(row)} fields but the header has {width}; Moodle "
                                 "refuses such a file: download the worksheet again instead of editing it by hand")
    return table.records


def _moodle_students(table: Table) -> list[LmsStudent]:
    unique_header(table)
    ident = column_index(table, MOODLE_IDENTIFIER, "a Moodle grading worksheet")
    out: list[LmsStudent] = []
    seen: dict[str, int] = {}
    for line, row in _moodle_rows(table):
        m = _MOODLE_IDENTIFIER_VALUE.match(row[ident])
        if not m:
            raise LmsFormatError(f"{table.path}, line {line}: Identifier {show(row[ident])} is not 'Participant "
                                 "<number>'; download the worksheet again from the assignment's grading page")
        pid = norm_id(m.group(1))
        if pid in seen:
            raise LmsFormatError(f"{table.path}, line {line}: participant {pid} is already on line {seen[pid]}; "
                                 "remove the duplicate row")
        seen[pid] = line
        raw = dict(zip(table.header, row))
        out.append(LmsStudent(student_key=f"moodle-{pid}", lms_id=pid,
                              name=clean_text(raw.get(MOODLE_FULL_NAME, ""), max_len=200).strip(),
                              email=clean_text(raw.get(MOODLE_EMAIL, ""), max_len=200).strip(),
                              row=raw, line=line, source="moodle"))
    return out


def read_moodle_worksheet(path: str | Path) -> list[LmsStudent]:
    """The students of a Moodle grading worksheet CSV (assignment -> "Download grading worksheet"),
    in file order, keyed ``moodle-<participant id>``."""
    return _moodle_students(read_table(path))


def _feedback_html(text: str) -> str:
    """Feedback as Moodle stores it (HTML): escaped, newlines as ``<br>``, then spreadsheet-safe."""
    clean = clean_text(text.replace("\r\n", "\n"), keep_newlines=True).strip()
    return str(csv_cell(html.escape(clean, quote=False).replace("\n", "<br>\n")))


def _moodle_template(template: str | Path | Sequence[LmsStudent]) -> tuple[Table, list[LmsStudent]]:
    if isinstance(template, (str, Path)):
        table = read_table(template)
        return table, _moodle_students(table)
    students = list(template)
    if not students or not students[0].row:
        raise LmsFormatError("the worksheet rows are empty; pass the path of the worksheet downloaded from Moodle")
    header = list(students[0].row)
    records = [(s.line, [s.row.get(h, "") for h in header]) for s in students]
    table = Table(path=Path("worksheet"), header=header, records=records, bom=True, newline="\n")
    return table, students


def _moodle_max_grade(table: Table) -> int | None:
    if MOODLE_SCALE in table.header and MOODLE_MAX_GRADE not in table.header:
        raise LmsFormatError(f"{table.path}, line 1: the assignment is graded with a scale ('Scale' column), so "
                             "Moodle would not import points; set the assignment's grade type to Point in Moodle "
                             "and download the worksheet again")
    return table.header.index(MOODLE_MAX_GRADE) if MOODLE_MAX_GRADE in table.header else None


def write_moodle_worksheet(template_rows_or_path: str | Path | Sequence[LmsStudent], grades: Grades,
                           out_path: str | Path, *, scale_from: float | None = None) -> ExportSummary:
    """The grading worksheet with ``Grade`` (and ``Feedback comments``, when the worksheet has it) filled
    in for the students in ``grades`` (``lms_id -> (points, feedback)``); every other cell, row and the
    column order as in the template; the template's BOM and line endings kept (a BOM when given rows).

    ``None`` points leave the grade empty (Moodle skips it); empty feedback keeps the template's.
    With ``scale_from`` (the rubric's maximum), points are scaled to each row's ``Maximum Grade``
    (7 of 10 becomes 70 of 100); without it they are written as given. Raises
    :class:`LmsFormatError` when a grade exceeds the worksheet's ``Maximum Grade`` (Moodle would
    skip it silently) or the assignment uses a scale.
    """
    table, students = _moodle_template(template_rows_or_path)
    _moodle_rows(table)
    grade_col = column_index(table, MOODLE_GRADE, "a Moodle grading worksheet with grades")
    column_index(table, MOODLE_LAST_MODIFIED_GRADE, "a complete Moodle grading worksheet (Moodle needs it to import)")
    fb_col = table.header.index(MOODLE_FEEDBACK) if MOODLE_FEEDBACK in table.header else None
    max_col = _moodle_max_grade(table)
    todo = checked_grades(grades)
    rows, written, maxima = [], [], set()
    for student, (line, row) in zip(students, table.records):
        out = [c if h in _MOODLE_READ else defuse(c) for h, c in zip(table.header, row)]
        if student.lms_id in todo:
            points, feedback = todo[student.lms_id]
            if scale_from is not None and max_col is not None and (top := parse_number(row[max_col])) is not None:
                points = scale_points(points, rubric_max=scale_from, lms_max=top)
                maxima.add(top)
            _check_max(table, line, row, max_col, points)
            out[grade_col] = "" if points is None else format_points(points)
            if fb_col is not None and feedback.strip():
                out[fb_col] = _feedback_html(feedback)
            written.append(student.lms_id)
        rows.append(out)
    write_table(out_path, table.header, rows, bom=table.bom, newline=table.newline)
    scale = scale_note(scale_from, maxima, "Moodle", "Maximum Grade") if scale_from else ""
    return ExportSummary(Path(out_path), written, sorted(set(todo) - set(written), key=id_sort), scale=scale)


def _check_max(table: Table, line: int, row: list[str], max_col: int | None, points: float | None) -> None:
    if points is None or max_col is None:
        return
    top = parse_number(row[max_col])
    if top is not None and round(points, 2) > top + 1e-9:
        raise LmsFormatError(f"{table.path}, line {line}: {format_points(points)} points but the assignment's "
                             f"Maximum Grade is {row[max_col]}; Moodle would skip this grade: set the maximum "
                             "grade in Moodle to the rubric's points and download the worksheet again (or "
                             "leave out --lms-points raw: points are then scaled to the Maximum Grade)")
