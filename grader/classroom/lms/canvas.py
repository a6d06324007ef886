"""Canvas: the "Download Submissions" names and the gradebook export (read as a roster, written as
the grade import). See the package docstring and ``docs/lms.md``."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from grader.classroom.lms.entry import DIGITS, LmsEntry, file_part_ok, norm_id
from grader.classroom.lms.table import (
    ExportSummary,
    Grades,
    LmsFormatError,
    LmsStudent,
    Table,
    checked_grades,
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
from grader.outputs.textsafe import clean_text

_ANON_ID = re.compile(r"^[A-Za-z0-9]{1,16}$")

CANVAS_POINTS_POSSIBLE = "Points Possible"
_CANVAS_MUTED_CELL = re.compile(r"^\s*(Muted|Manual Posting.*)?\s*$", re.IGNORECASE | re.DOTALL)
# identity columns Canvas's importer uses to find the student: kept byte for byte
_CANVAS_READ = {"ID", "SIS User ID", "SIS Login ID", "Integration ID", "Root Account"}
_CANVAS_RESERVED = {"Student", "LastName", "FirstName", "ID", "SIS User ID", "SIS Login ID", "Section",
                    "Integration ID", "Root Account"}
_CANVAS_TOTALS = re.compile(r"Current Score|Current Points|Current Grade|Final Score|Final Points|Final Grade|"
                            r"Override Score|Override Grade|Override Status")
_CANVAS_TITLE_ID = re.compile(r"^(?P<title>.*?)\s*\((?P<id>[0-9]+)\)\s*$", re.DOTALL)


def _parse_canvas_anon(name: str, tokens: list[str], late: bool, is_dir: bool | None) -> LmsEntry | None:
    if len(tokens) < 3 or not _ANON_ID.match(tokens[1]) or is_dir:
        return None
    found = _canvas_file_part(tokens[2:])
    if found is None:
        return None
    plugin, attachment, file_name = found
    aid = tokens[1]
    return LmsEntry(name=name, layout="canvas", student_key=f"canvas-anon-{aid}", lms_id=f"anon_{aid}",
                    display_name="", late=late, file_name=file_name, plugin=plugin, attachment_id=attachment)


def _canvas_file_part(rest: list[str]) -> tuple[str, str | None, str] | None:
    """(kind, attachment id, original name) from the tokens after the user id, or None."""
    if rest in (["text.html"], ["link.html"]):
        return rest[0][:4], None, rest[0]
    if len(rest) >= 2 and DIGITS.match(rest[0]):
        original = "_".join(rest[1:])
        if file_part_ok(original):
            return "upload", rest[0], original
    return None


def parse_canvas_entry(name: str, is_dir: bool | None) -> LmsEntry | None:
    if is_dir:
        return None  # Canvas's zip has no folders
    tokens = name.split("_")
    late = tokens[0] == "LATE"
    if tokens[late:late + 1] == ["anon"]:
        return _parse_canvas_anon(name, tokens[late:], late, is_dir)
    # the user id is the first all-digit token (Canvas's own re-upload rule): names never hold `_<digits>_`
    i = next((k for k, t in enumerate(tokens) if k >= 1 and DIGITS.match(t)), None)
    if i is None:
        return None
    name_tokens = tokens[:i]
    if name_tokens[-1] == "LATE":
        late, name_tokens = True, name_tokens[:-1]
    display = clean_text("_".join(name_tokens)).strip()
    found = _canvas_file_part(tokens[i + 1:])
    if not display or found is None:
        return None
    plugin, attachment, file_name = found
    uid = norm_id(tokens[i])
    return LmsEntry(name=name, layout="canvas", student_key=f"canvas-{uid}", lms_id=uid, display_name=display,
                    late=late, file_name=file_name, plugin=plugin, attachment_id=attachment)


@dataclass
class _CanvasLayout:
    """Where things are in a Canvas gradebook export."""

    identity: int  # number of identity columns (up to and including Section)
    id_col: int
    name_cols: list[int]


def _canvas_layout(table: Table) -> _CanvasLayout:
    h = table.header
    first_last = len(h) > 2 and h[0] == "LastName" and h[1] == "FirstName"
    id_col = 2 if first_last else 1
    if not (len(h) > id_col and ("Student" in h[0] or first_last) and "ID" in h[id_col]):
        raise LmsFormatError(f"{table.path}, line 1: the header does not start with 'Student, ID' (it starts "
                             f"{', '.join(show(x) for x in h[:3])}), so this is not a Canvas gradebook export; "
                             "export it from Canvas: Grades -> Export -> Export Entire Gradebook")
    try:
        section = h.index("Section")
    except ValueError:
        raise LmsFormatError(f"{table.path}, line 1: no 'Section' column; Canvas needs it to import the file; "
                             "export the gradebook again from Canvas") from None
    return _CanvasLayout(identity=section + 1, id_col=id_col, name_cols=[1, 0] if first_last else [0])


def _canvas_kind(row: list[str]) -> str:
    """``points`` for the Points Possible row, ``muted`` for the manual posting row, else ``student``."""
    if row and CANVAS_POINTS_POSSIBLE in row[0]:
        return "points"
    if all(_CANVAS_MUTED_CELL.match(c) for c in row):
        return "muted"
    return "student"


def _canvas_name(cell: str) -> str:
    """A Student cell as text: Canvas writes a name starting with ``=`` as ``="name"``."""
    m = re.fullmatch(r'="(.*)"', cell, re.DOTALL)
    return m.group(1) if m else cell


def _canvas_students(table: Table, lay: _CanvasLayout) -> list[LmsStudent]:
    unique_header(table)
    out: list[LmsStudent] = []
    seen: dict[str, int] = {}
    for line, row in table.records:
        if _canvas_kind(row) != "student":
            continue
        uid_cell = row[lay.id_col].strip() if len(row) > lay.id_col else ""
        if not DIGITS.match(uid_cell):
            raise LmsFormatError(f"{table.path}, line {line}: ID {show(uid_cell)} is not a Canvas user id (a "
                                 "number); export the gradebook again instead of editing it by hand")
        uid = norm_id(uid_cell)
        if uid in seen:
            raise LmsFormatError(f"{table.path}, line {line}: user {uid} is already on line {seen[uid]}; remove "
                                 "the duplicate row")
        seen[uid] = line
        raw = dict(zip(table.header, row + [""] * (len(table.header) - len(row))))
        name = " ".join(_canvas_name(row[i]).strip() for i in lay.name_cols if i < len(row))
        login = raw.get("SIS Login ID", "").strip()
        out.append(LmsStudent(student_key=f"canvas-{uid}", lms_id=uid, name=clean_text(name, max_len=200).strip(),
                              email=clean_text(login, max_len=200) if "@" in login else "",
                              row=raw, line=line, source="canvas"))
    return out


def read_canvas_gradebook(path: str | Path) -> list[LmsStudent]:
    """The students of a Canvas gradebook export CSV, in file order, keyed ``canvas-<user id>``; the
    Points Possible and Manual Posting/Muted rows are skipped. ``name`` is "Last, First" as Canvas
    exports it; ``email`` is the SIS Login ID when it is an e-mail address."""
    table = read_table(path, delimiters=(",", ";"))
    return _canvas_students(table, _canvas_layout(table))


def _canvas_column(table: Table, lay: _CanvasLayout, wanted: str) -> int | None:
    """The index of the assignment column: the exact header, else the header whose title (before
    ``(id)``) is ``wanted``; None when the gradebook has no such column."""
    candidates = list(range(lay.identity, len(table.header)))
    for i in candidates:
        if table.header[i] == wanted:
            return i
    titled = [i for i in candidates if (m := _CANVAS_TITLE_ID.match(table.header[i])) and m.group("title") == wanted]
    if not titled:  # the same title with other case or spacing ("hw 3" for "HW  3")
        key = _title_key(wanted)
        titled = [i for i in candidates if _title_key(_CANVAS_TITLE_ID.sub(r"\g<title>", table.header[i])) == key]
    if len(titled) > 1:
        raise LmsFormatError(f"{table.path}, line 1: {len(titled)} assignments are titled {show(wanted)}; give the "
                             f"exact column header, e.g. {show(table.header[titled[0]])}")
    return titled[0] if titled else None


def _title_key(title: str) -> str:
    return " ".join(title.casefold().split())


def existing_canvas_column(template_path: str | Path, names: Sequence[str]) -> str | None:
    """The header of the gradebook's assignment column titled like one of ``names`` (the exact
    header, or its title before ``(id)``, case and spacing aside), first name first; None when the
    gradebook has none."""
    table = read_table(template_path, delimiters=(",", ";"))
    lay = _canvas_layout(table)
    for name in names:
        if not name or not name.strip():
            continue
        try:
            col = _canvas_column(table, lay, name)
        except LmsFormatError:
            continue  # ambiguous title: not a detection
        if col is not None:
            return table.header[col]
    return None


def _check_column_name(name: str) -> None:
    if not name.strip() or clean_text(name) != name or name != name.strip():
        raise LmsFormatError(f"the assignment column {show(name)} is empty or holds control characters or "
                             "surrounding spaces; give the assignment's name as in Canvas")
    if name in _CANVAS_RESERVED or _CANVAS_TOTALS.search(name):
        raise LmsFormatError(f"{show(name)} is one of Canvas's own column names (Canvas's importer skips columns "
                             "named like its totals); give the assignment's name")


def _canvas_target(table: Table, lay: _CanvasLayout, assignment_column: str) -> int | None:
    """The existing column to fill, or None for a new one (checked to be importable as one)."""
    _check_column_name(assignment_column)
    col = _canvas_column(table, lay, assignment_column)
    if col is None and _CANVAS_TITLE_ID.match(assignment_column):
        raise LmsFormatError(f"{table.path}: no column {show(assignment_column)}, and a new column ending in "
                             "'(number)' would be read by Canvas as that assignment id; give the exact header "
                             "from the export or a name without '(number)' at the end")
    return col


def _canvas_points_row(first: str, lay: _CanvasLayout, value: str) -> list[str]:
    return [first] + [""] * (lay.identity - 1) + [value]


def _canvas_rows(table: Table, lay: _CanvasLayout, col: int | None, todo: dict[str, tuple[float | None, str]],
                 new_points: str) -> tuple[list[list[str]], list[str]]:
    """The output rows (Points Possible first, then the students) and the graded students written."""
    by_line = {s.line: s for s in _canvas_students(table, lay)}
    ident = table.header[: lay.identity]
    points_row = _canvas_points_row("    " + CANVAS_POINTS_POSSIBLE, lay, new_points)
    rows: list[list[str]] = []
    written: list[str] = []
    for line, row in table.records:
        row = row + [""] * (len(table.header) - len(row))
        kind = _canvas_kind(row)
        if kind == "points":
            points_row = _canvas_points_row(row[0], lay, row[col] if col is not None else new_points)
        if kind != "student":
            continue  # the Manual Posting/Muted row is dropped: Canvas skips it anyway
        student = by_line[line]
        cells = [c if h in _CANVAS_READ else defuse(c) for h, c in zip(ident, row)]
        points = todo.get(student.lms_id, (None, ""))[0]
        if student.lms_id in todo:
            written.append(student.lms_id)
        current = row[col] if col is not None else ""
        rows.append(cells + [current if points is None else format_points(points)])
    return [points_row] + rows, written


def _canvas_points_possible(table: Table, col: int | None) -> float | None:
    if col is None:
        return None
    for _, row in table.records:
        if _canvas_kind(row) == "points":
            return parse_number(row[col]) if col < len(row) else None
    return None


def write_canvas_gradebook(template_path: str | Path, assignment_column: str, grades: Grades, out_path: str | Path,
                           *, points_possible: float | None = None, scale_from: float | None = None) -> ExportSummary:
    """Canvas's import CSV: the template's identity columns (Student, ID, [SIS User ID], SIS Login ID,
    ..., Section), its Points Possible row and one column for the assignment.

    ``assignment_column`` is the header as exported (``HW 3 (12345)``) or the assignment's title; when
    the gradebook has no such column it becomes a new column with that name (Canvas offers to create
    the assignment on import; ``points_possible`` fills its Points Possible cell). Students not in
    ``grades``, or with ``None`` points, keep the template's cell (empty for a new column), which Canvas
    reads as "no change". The separator, BOM and line endings of the template are kept. With
    ``scale_from`` (the rubric's maximum), points are scaled to an existing column's Points
    Possible (7 of 10 becomes 70 of 100).
    """
    table = read_table(template_path, delimiters=(",", ";"))
    lay = _canvas_layout(table)
    col = _canvas_target(table, lay, assignment_column)
    todo = checked_grades(grades)
    possible = _canvas_points_possible(table, col)
    scale = ""
    if scale_from is not None and possible is not None and possible > 0:
        todo = {k: (scale_points(p, rubric_max=scale_from, lms_max=possible), f) for k, (p, f) in todo.items()}
        scale = scale_note(scale_from, {possible}, "Canvas", "Points Possible")
    new_points = "" if points_possible is None else format_points(points_possible)
    rows, written = _canvas_rows(table, lay, col, todo, new_points)
    header = table.header[: lay.identity] + [table.header[col] if col is not None else assignment_column]
    write_table(out_path, header, rows, bom=table.bom, newline=table.newline, delimiter=table.delimiter)
    return ExportSummary(Path(out_path), written, sorted(set(todo) - set(written), key=id_sort), scale=scale,
                         column=header[-1], new_column=col is None)
