"""The LMS files' shared machinery: CSV tables read and written as the LMS made them, roster
students, and what both formats' grade exports share (points, scaling, the summary)."""

from __future__ import annotations

import csv
import io
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from grader.classroom.lms.entry import DIGITS, norm_id
from grader.errors import SetupError
from grader.outputs.fsutil import atomic_write
from grader.outputs.textsafe import clean_text, csv_cell

Grades = Mapping[str, "tuple[float | None, str]"]

MAX_CSV_BYTES = 32 * 1024 * 1024
BOM = "\ufeff"


class LmsFormatError(SetupError):
    """An LMS file (worksheet, gradebook) cannot be read or used; the message names the file, the line
    and what to fix."""


@dataclass
class Table:
    """A CSV as the LMS wrote it: the header, the records (each with its first line number), the
    format details a writer must reproduce."""

    path: Path
    header: list[str]
    records: list[tuple[int, list[str]]]
    bom: bool = False
    newline: str = "\r\n"
    delimiter: str = ","


def _decode(path: Path) -> tuple[str, bool]:
    try:
        with open(path, "rb") as f:
            raw = f.read(MAX_CSV_BYTES + 1)
    except OSError as exc:
        raise LmsFormatError(f"cannot read {path}: {exc.strerror or exc}; check the path given to --roster") from None
    if len(raw) > MAX_CSV_BYTES:
        raise LmsFormatError(f"{path} is larger than {MAX_CSV_BYTES // (1024 * 1024)} MiB; is it really the LMS's CSV?")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise LmsFormatError(f"{path}, line {line}: not UTF-8 text; download the file again from the LMS, or save "
                             "it from the spreadsheet as 'CSV UTF-8'") from None
    bom = text.startswith(BOM)
    return (text[1:] if bom else text), bom


def _sniff_delimiter(text: str) -> str:
    """``,`` or ``;``: the one that splits the header into more fields (Canvas may export with ``;``)."""
    first = text.split("\n", 1)[0]
    counts = {d: len(next(csv.reader([first], delimiter=d), [])) for d in (",", ";")}
    return ";" if counts[";"] > counts[","] else ","


def _newline(text: str) -> str:
    """The template's line ending: that of its first line."""
    end = text.find("\n")
    return "\r\n" if end > 0 and text[end - 1] == "\r" else "\n"


def _allow_long_cells() -> None:
    """Let the csv module read any cell that fits the file cap: its default field limit (128 KiB)
    would refuse a whole worksheet for one student's long online text."""
    if csv.field_size_limit() < MAX_CSV_BYTES:
        csv.field_size_limit(MAX_CSV_BYTES)


def read_table(path: str | Path, *, delimiters: Sequence[str] = (",",)) -> Table:
    path = Path(path)
    text, bom = _decode(path)
    _allow_long_cells()
    delimiter = _sniff_delimiter(text) if len(delimiters) > 1 else delimiters[0]
    newline = _newline(text)
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, strict=True)
    records: list[tuple[int, list[str]]] = []
    start = 1
    try:
        for row in reader:
            if row and any(c.strip() for c in row):
                records.append((start, row))
            start = reader.line_num + 1
    except csv.Error as exc:
        raise LmsFormatError(f"{path}, line {reader.line_num}: broken CSV quoting ({exc}); download the file "
                             "again from the LMS instead of editing it by hand") from None
    if not records:
        raise LmsFormatError(f"{path} is empty; download it again from the LMS")
    header = [h.strip() for h in records[0][1]]
    return Table(path=path, header=header, records=records[1:], bom=bom, newline=newline, delimiter=delimiter)


def show(value: str) -> str:
    return repr(clean_text(value, max_len=60))


def unique_header(table: Table) -> None:
    seen: set[str] = set()
    for h in table.header:
        if h in seen:
            raise LmsFormatError(f"{table.path}, line 1: the column {show(h)} appears twice; download the file "
                                 "again from the LMS")
        seen.add(h)


def column_index(table: Table, name: str, what: str) -> int:
    try:
        return table.header.index(name)
    except ValueError:
        raise LmsFormatError(f"{table.path}, line 1: no {name!r} column, so this is not {what} (columns: "
                             f"{', '.join(show(h) for h in table.header[:8])}); download it again from the LMS "
                             "with the interface language set to English") from None


def write_table(out_path: str | Path, header: Sequence[str], rows: Sequence[Sequence[object]], *, bom: bool, newline: str,
                 delimiter: str = ",") -> None:
    buf = io.StringIO(newline="")
    w = csv.writer(buf, delimiter=delimiter, lineterminator=newline, quoting=csv.QUOTE_MINIMAL)
    w.writerow(header)
    w.writerows(rows)
    atomic_write(Path(out_path), ((BOM if bom else "") + buf.getvalue()).encode("utf-8"))


@dataclass(frozen=True)
class LmsStudent:
    """One student of an LMS roster file; ``row`` is the whole row as read (column -> text) and
    ``line`` its line in the file."""

    student_key: str
    lms_id: str
    name: str
    email: str
    row: dict[str, str] = field(default_factory=dict, compare=False)
    line: int = 0
    source: str = ""  # moodle | canvas | generic


@dataclass(frozen=True)
class ExportSummary:
    """What an export wrote: the graded students found in the template, and the grade keys that have
    no row there (students the LMS file does not list: they cannot be imported)."""

    path: Path
    written: list[str]
    missing: list[str]
    scale: str = ""  # how points were scaled to the LMS's maximum ("" when they were not)
    column: str = ""  # Canvas: the assignment column filled
    new_column: bool = False  # Canvas: a column the gradebook did not have (Canvas creates an assignment)


def format_points(points: float) -> str:
    """Points as both LMSs import them: two decimals, a decimal point, no thousands separator."""
    if isinstance(points, bool) or not isinstance(points, (int, float)) or not math.isfinite(points) or points < 0:
        raise LmsFormatError(f"cannot export {points!r} points: grades must be finite numbers >= 0")
    return f"{points:.2f}"


def parse_number(text: str) -> float | None:
    """A number as Moodle or Canvas exports it (``100.00``, ``100,00``); None when it is not one."""
    t = text.strip().replace("\u00a0", "").replace(" ", "")
    if re.fullmatch(r"-?[0-9]+([.,][0-9]+)?", t):
        return float(t.replace(",", "."))
    return None


def checked_grades(grades: Grades) -> dict[str, tuple[float | None, str]]:
    out: dict[str, tuple[float | None, str]] = {}
    for key, value in grades.items():
        points, feedback = value
        if points is not None:
            format_points(points)  # validates
        out[norm_id(key)] = (points, feedback or "")
    return out


def defuse(cell: str) -> str:
    """A kept cell the LMS does not read on import (names, e-mails, status), spreadsheet-safe; Moodle's
    ``-`` (no date) stays as it is."""
    return cell if cell.strip() in ("", "-") else str(csv_cell(cell))


def scale_points(points: float | None, *, rubric_max: float | None, lms_max: float | None) -> float | None:
    """``points`` out of ``rubric_max`` as the same fraction of ``lms_max`` (2 decimals); unchanged
    when either maximum is unknown or not positive."""
    if points is None or not rubric_max or not lms_max or rubric_max <= 0 or lms_max <= 0:
        return points
    return round(points / rubric_max * lms_max, 2)


def scale_note(rubric_max: float, maxima: set[float], lms: str, column: str) -> str:
    if not maxima:
        return ""
    shown = ", ".join(f"{m:g}" for m in sorted(maxima))
    if maxima == {rubric_max}:
        return f"the {lms} maximum ({column} {shown}) is the rubric's: points written as they are"
    return (f"points scaled from the rubric's maximum of {rubric_max:g} to {lms}'s {column} {shown} "
            f"(--lms-points raw writes the rubric's points)")


def id_sort(key: str) -> tuple[int, str]:
    return (0, f"{int(key):020d}") if DIGITS.match(key) else (1, key)
