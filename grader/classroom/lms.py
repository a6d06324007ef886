"""Round trips with an LMS: Moodle's and Canvas's download layouts, their rosters, their grade imports.

Pure functions; nothing here grades. The formats were checked against the LMSs' own code (see
``docs/lms.md`` for the sources and the quirks):

* **Moodle** "Download all submissions" (``mod/assign/classes/downloader.php``): the prefix is the full
  name with ``_`` replaced by a space, then ``_<participant id>``. With folders (the default since
  3.1) each student gets ``<prefix>_assignsubmission_file`` (4.1 and later) or
  ``<prefix>_assignsubmission_file_`` (3.1 to 4.0); without folders the files are flat,
  ``<prefix>_assignsubmission_file_<original name>``. The participant id is the number in the
  grading worksheet's ``Identifier`` (``Participant 1234567``).
* **Canvas** "Download Submissions" (``lib/content_zipper.rb``): ``<name>[_LATE]_<user id>_<file
  id>_<original name>``, where ``<name>`` is the sortable name ("Last, First") lower-cased with every
  non-word character removed; text entries are ``<name>_<user id>_text.html``, URLs
  ``..._link.html``; anonymous grading puts ``anon_<anonymous id>`` in place of name and user id.
* **Moodle grading worksheet** (offline grading): a CSV with ``Identifier, Full name, <identity
  fields>, Status, Grade, Maximum Grade, Grade can be changed, Last modified (submission), Last
  modified (grade), Feedback comments``. Moodle's importer finds ``Identifier``, ``Grade`` and ``Last
  modified (grade)`` by name, needs every row as wide as the header, strips a BOM and reads grades
  with a decimal point (or the site's decimal separator) and no thousands separator.
* **Canvas gradebook** (``lib/gradebook_exporter.rb``, ``app/models/gradebook_importer.rb``):
  ``Student, ID, [SIS User ID], SIS Login ID, [Integration ID], [Root Account], Section, <custom
  columns>, <Assignment (id)>..., <totals>``, an optional "Manual Posting"/"Muted" row, then
  ``    Points Possible``; separator ``,`` or ``;``; an optional BOM.

Student keys are ``moodle-<participant id>`` and ``canvas-<user id>`` (``canvas-anon-<id>`` for
anonymous grading): built from digits only, so they always satisfy
:func:`grader.classroom.roster.valid_student_id` whatever the file names hold.
"""

from __future__ import annotations

import csv
import html
import io
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from grader.classroom.roster import Roster, RosterStudent, valid_student_id
from grader.errors import SetupError
from grader.outputs.fsutil import atomic_write
from grader.outputs.textsafe import clean_text, csv_cell

Layout = Literal["moodle", "canvas", "plain"]
RosterKind = Literal["moodle", "canvas", "generic"]
Grades = Mapping[str, "tuple[float | None, str]"]

MAX_CSV_BYTES = 32 * 1024 * 1024
BOM = "\ufeff"

# Moodle: "<name>_<participant id>_assignsubmission_<plugin>" + "" | "_" | "_<file>"
_MOODLE_RE = re.compile(r"^(?P<name>.+?)_(?P<id>[0-9]{1,18})_assignsubmission_(?P<plugin>[a-z0-9]+)(?:_(?P<file>.*))?$",
                        re.DOTALL)
_DIGITS = re.compile(r"^[0-9]{1,18}$")
_ANON_ID = re.compile(r"^[A-Za-z0-9]{1,16}$")
_CANVAS_RESUBMIT = re.compile(r"^(?P<stem>.+?)-[0-9]{1,4}(?P<ext>\.[A-Za-z0-9]{1,16})$")
_BAD_NAME = re.compile(r"[/\\\x00-\x1f\x7f]")

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

CANVAS_POINTS_POSSIBLE = "Points Possible"
_CANVAS_MUTED_CELL = re.compile(r"^\s*(Muted|Manual Posting.*)?\s*$", re.IGNORECASE | re.DOTALL)
# identity columns Canvas's importer uses to find the student: kept byte for byte
_CANVAS_READ = {"ID", "SIS User ID", "SIS Login ID", "Integration ID", "Root Account"}
_CANVAS_RESERVED = {"Student", "LastName", "FirstName", "ID", "SIS User ID", "SIS Login ID", "Section",
                    "Integration ID", "Root Account"}
_CANVAS_TOTALS = re.compile(r"Current Score|Current Points|Current Grade|Final Score|Final Points|Final Grade|"
                            r"Override Score|Override Grade|Override Status")
_CANVAS_TITLE_ID = re.compile(r"^(?P<title>.*?)\s*\((?P<id>[0-9]+)\)\s*$", re.DOTALL)


class LmsFormatError(SetupError):
    """An LMS file (worksheet, gradebook) cannot be read or used; the message names the file, the line
    and what to fix."""


# --- submission names ----------------------------------------------------------------------------
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


def _usable_name(name: str) -> bool:
    """A single, visible path component: no separators, control characters, ``.``/``..`` or leading dot."""
    return bool(name) and not name.startswith(".") and not _BAD_NAME.search(name) and len(name) <= 1024


def _norm_id(value: object) -> str:
    """An LMS id as text with leading zeros dropped (``"0042"`` and ``42`` are the same participant)."""
    text = str(value).strip()
    return str(int(text)) if _DIGITS.match(text) else text


def _file_part_ok(part: str) -> bool:
    return bool(part) and part not in (".", "..") and not _BAD_NAME.search(part)


def _parse_moodle(name: str, is_dir: bool | None) -> LmsEntry | None:
    m = _MOODLE_RE.match(name)
    if not m:
        return None
    display = clean_text(m.group("name")).strip()
    rest = m.group("file")
    folder = rest is None or rest == ""
    if not display or (is_dir is True and not folder) or (is_dir is False and folder):
        return None
    if not folder and not _file_part_ok(rest):
        return None
    pid = _norm_id(m.group("id"))
    return LmsEntry(name=name, layout="moodle", student_key=f"moodle-{pid}", lms_id=pid, display_name=display,
                    late=False, file_name=None if folder else rest, plugin=m.group("plugin"))


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
    if len(rest) >= 2 and _DIGITS.match(rest[0]):
        original = "_".join(rest[1:])
        if _file_part_ok(original):
            return "upload", rest[0], original
    return None


def _parse_canvas(name: str, is_dir: bool | None) -> LmsEntry | None:
    if is_dir:
        return None  # Canvas's zip has no folders
    tokens = name.split("_")
    late = tokens[0] == "LATE"
    if tokens[late:late + 1] == ["anon"]:
        return _parse_canvas_anon(name, tokens[late:], late, is_dir)
    # the user id is the first all-digit token (Canvas's own re-upload rule): names never hold `_<digits>_`
    i = next((k for k, t in enumerate(tokens) if k >= 1 and _DIGITS.match(t)), None)
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
    uid = _norm_id(tokens[i])
    return LmsEntry(name=name, layout="canvas", student_key=f"canvas-{uid}", lms_id=uid, display_name=display,
                    late=late, file_name=file_name, plugin=plugin, attachment_id=attachment)


def parse_entry(name: str, layout: Layout, *, is_dir: bool | None = None) -> LmsEntry | None:
    """Parse one top-level entry name of a class folder in ``layout``; None when it does not match.

    ``is_dir`` (when known) rules out a folder name for Canvas and a file name for a Moodle folder.
    Names with a path separator, a control character, a leading dot or ``..`` as a component are
    never parsed; the ``student_key`` is built from digits only. ``plain`` names are not LMS names
    (``grader.classroom.classdir`` reads them): always None.
    """
    if layout not in ("moodle", "canvas", "plain"):
        raise ValueError(f"unknown layout {layout!r}")
    if not isinstance(name, str) or not _usable_name(name) or layout == "plain":
        return None
    entry = _parse_moodle(name, is_dir) if layout == "moodle" else _parse_canvas(name, is_dir)
    if entry is not None and not valid_student_id(entry.student_key):  # cannot happen; belt and braces
        return None
    return entry


def detect_layout(names: Iterable[str]) -> Layout:
    """``moodle`` or ``canvas`` when at least half of the visible entries (not starting with a dot)
    parse as that LMS's names (the larger count wins), else ``plain``."""
    visible = [n for n in names if isinstance(n, str) and n and not n.startswith(".")]
    if not visible:
        return "plain"
    counts = {lay: sum(parse_entry(n, lay) is not None for n in visible) for lay in ("moodle", "canvas")}
    best = max(counts, key=lambda lay: counts[lay])
    if counts[best] == 0 or 2 * counts[best] < len(visible):
        return "plain"
    return best  # type: ignore[return-value]


# --- CSV files ----------------------------------------------------------------------------------------
@dataclass
class _Table:
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


def _read_table(path: str | Path, *, delimiters: Sequence[str] = (",",)) -> _Table:
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
    return _Table(path=path, header=header, records=records[1:], bom=bom, newline=newline, delimiter=delimiter)


def _show(value: str) -> str:
    return repr(clean_text(value, max_len=60))


def _unique_header(table: _Table) -> None:
    seen: set[str] = set()
    for h in table.header:
        if h in seen:
            raise LmsFormatError(f"{table.path}, line 1: the column {_show(h)} appears twice; download the file "
                                 "again from the LMS")
        seen.add(h)


def _column(table: _Table, name: str, what: str) -> int:
    try:
        return table.header.index(name)
    except ValueError:
        raise LmsFormatError(f"{table.path}, line 1: no {name!r} column, so this is not {what} (columns: "
                             f"{', '.join(_show(h) for h in table.header[:8])}); download it again from the LMS "
                             "with the interface language set to English") from None


def _write_table(out_path: str | Path, header: Sequence[str], rows: Sequence[Sequence[object]], *, bom: bool, newline: str,
                 delimiter: str = ",") -> None:
    buf = io.StringIO(newline="")
    w = csv.writer(buf, delimiter=delimiter, lineterminator=newline, quoting=csv.QUOTE_MINIMAL)
    w.writerow(header)
    w.writerows(rows)
    atomic_write(Path(out_path), ((BOM if bom else "") + buf.getvalue()).encode("utf-8"))


# --- rosters ------------------------------------------------------------------------------------------
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


def _moodle_rows(table: _Table) -> list[tuple[int, list[str]]]:
    width = len(table.header)
    for line, row in table.records:
        if len(row) != width:
            raise LmsFormatError(f"{table.path}, line {line}: {len(row)} fields but the header has {width}; Moodle "
                                 "refuses such a file: download the worksheet again instead of editing it by hand")
    return table.records


def _moodle_students(table: _Table) -> list[LmsStudent]:
    _unique_header(table)
    ident = _column(table, MOODLE_IDENTIFIER, "a Moodle grading worksheet")
    out: list[LmsStudent] = []
    seen: dict[str, int] = {}
    for line, row in _moodle_rows(table):
        m = _MOODLE_IDENTIFIER_VALUE.match(row[ident])
        if not m:
            raise LmsFormatError(f"{table.path}, line {line}: Identifier {_show(row[ident])} is not 'Participant "
                                 "<number>'; download the worksheet again from the assignment's grading page")
        pid = _norm_id(m.group(1))
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
    return _moodle_students(_read_table(path))


@dataclass
class _CanvasLayout:
    """Where things are in a Canvas gradebook export."""

    identity: int  # number of identity columns (up to and including Section)
    id_col: int
    name_cols: list[int]


def _canvas_layout(table: _Table) -> _CanvasLayout:
    h = table.header
    first_last = len(h) > 2 and h[0] == "LastName" and h[1] == "FirstName"
    id_col = 2 if first_last else 1
    if not (len(h) > id_col and ("Student" in h[0] or first_last) and "ID" in h[id_col]):
        raise LmsFormatError(f"{table.path}, line 1: the header does not start with 'Student, ID' (it starts "
                             f"{', '.join(_show(x) for x in h[:3])}), so this is not a Canvas gradebook export; "
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


def _canvas_students(table: _Table, lay: _CanvasLayout) -> list[LmsStudent]:
    _unique_header(table)
    out: list[LmsStudent] = []
    seen: dict[str, int] = {}
    for line, row in table.records:
        if _canvas_kind(row) != "student":
            continue
        uid_cell = row[lay.id_col].strip() if len(row) > lay.id_col else ""
        if not _DIGITS.match(uid_cell):
            raise LmsFormatError(f"{table.path}, line {line}: ID {_show(uid_cell)} is not a Canvas user id (a "
                                 "number); export the gradebook again instead of editing it by hand")
        uid = _norm_id(uid_cell)
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
    table = _read_table(path, delimiters=(",", ";"))
    return _canvas_students(table, _canvas_layout(table))


def detect_roster_kind(path: str | Path) -> RosterKind:
    """``moodle`` (a worksheet: an ``Identifier`` column), ``canvas`` (a header starting ``Student,
    ID`` with a ``Section`` column) or ``generic`` (the grader's ``student_id,name,email``)."""
    table = _read_table(path, delimiters=(",", ";"))
    h = table.header
    if MOODLE_IDENTIFIER in h:
        return "moodle"
    if "Section" in h and len(h) > 2 and (h[0].startswith("Student") or h[:2] == ["LastName", "FirstName"]):
        return "canvas"
    return "generic"


def read_lms_roster(path: str | Path) -> tuple[RosterKind, list[LmsStudent]]:
    """Any roster ``--roster`` accepts: the kind (see :func:`detect_roster_kind`) and its students; a
    generic roster is read by :func:`grader.classroom.roster.read_roster` (its problems raise)."""
    kind = detect_roster_kind(path)
    if kind == "moodle":
        return kind, read_moodle_worksheet(path)
    if kind == "canvas":
        return kind, read_canvas_gradebook(path)
    from grader.classroom.roster import RosterError, read_roster

    try:
        roster = read_roster(path)
    except RosterError as exc:
        raise LmsFormatError(str(exc)) from None
    if roster.problems:
        p = roster.problems[0]
        raise LmsFormatError(f"{p.entry}: {p.reason}; fix the roster (columns student_id,name,email)")
    return kind, [LmsStudent(student_key=s.id, lms_id=s.id, name=s.name, email=s.email, source="generic")
                  for s in roster.students]


def to_roster(students: Sequence[LmsStudent]) -> Roster:
    """The students as a :class:`grader.classroom.roster.Roster` (ids are the student keys), for ``grade batch``."""
    return Roster(students=[RosterStudent(s.student_key, s.name, s.email) for s in students])


# --- exports -----------------------------------------------------------------------------------------
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


def _parse_number(text: str) -> float | None:
    """A number as Moodle or Canvas exports it (``100.00``, ``100,00``); None when it is not one."""
    t = text.strip().replace("\u00a0", "").replace(" ", "")
    if re.fullmatch(r"-?[0-9]+([.,][0-9]+)?", t):
        return float(t.replace(",", "."))
    return None


def _grades(grades: Grades) -> dict[str, tuple[float | None, str]]:
    out: dict[str, tuple[float | None, str]] = {}
    for key, value in grades.items():
        points, feedback = value
        if points is not None:
            format_points(points)  # validates
        out[_norm_id(key)] = (points, feedback or "")
    return out


def _defuse(cell: str) -> str:
    """A kept cell the LMS does not read on import (names, e-mails, status), spreadsheet-safe; Moodle's
    ``-`` (no date) stays as it is."""
    return cell if cell.strip() in ("", "-") else str(csv_cell(cell))


def _feedback_html(text: str) -> str:
    """Feedback as Moodle stores it (HTML): escaped, newlines as ``<br>``, then spreadsheet-safe."""
    clean = clean_text(text.replace("\r\n", "\n"), keep_newlines=True).strip()
    return str(csv_cell(html.escape(clean, quote=False).replace("\n", "<br>\n")))


def _moodle_template(template: str | Path | Sequence[LmsStudent]) -> tuple[_Table, list[LmsStudent]]:
    if isinstance(template, (str, Path)):
        table = _read_table(template)
        return table, _moodle_students(table)
    students = list(template)
    if not students or not students[0].row:
        raise LmsFormatError("the worksheet rows are empty; pass the path of the worksheet downloaded from Moodle")
    header = list(students[0].row)
    records = [(s.line, [s.row.get(h, "") for h in header]) for s in students]
    table = _Table(path=Path("worksheet"), header=header, records=records, bom=True, newline="\n")
    return table, students


def _moodle_max_grade(table: _Table) -> int | None:
    if MOODLE_SCALE in table.header and MOODLE_MAX_GRADE not in table.header:
        raise LmsFormatError(f"{table.path}, line 1: the assignment is graded with a scale ('Scale' column), so "
                             "Moodle would not import points; set the assignment's grade type to Point in Moodle "
                             "and download the worksheet again")
    return table.header.index(MOODLE_MAX_GRADE) if MOODLE_MAX_GRADE in table.header else None


def scale_points(points: float | None, *, rubric_max: float | None, lms_max: float | None) -> float | None:
    """``points`` out of ``rubric_max`` as the same fraction of ``lms_max`` (2 decimals); unchanged
    when either maximum is unknown or not positive."""
    if points is None or not rubric_max or not lms_max or rubric_max <= 0 or lms_max <= 0:
        return points
    return round(points / rubric_max * lms_max, 2)


def _scale_note(rubric_max: float, maxima: set[float], lms: str, column: str) -> str:
    if not maxima:
        return ""
    shown = ", ".join(f"{m:g}" for m in sorted(maxima))
    if maxima == {rubric_max}:
        return f"the {lms} maximum ({column} {shown}) is the rubric's: points written as they are"
    return (f"points scaled from the rubric's maximum of {rubric_max:g} to {lms}'s {column} {shown} "
            f"(--lms-points raw writes the rubric's points)")


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
    grade_col = _column(table, MOODLE_GRADE, "a Moodle grading worksheet with grades")
    _column(table, MOODLE_LAST_MODIFIED_GRADE, "a complete Moodle grading worksheet (Moodle needs it to import)")
    fb_col = table.header.index(MOODLE_FEEDBACK) if MOODLE_FEEDBACK in table.header else None
    max_col = _moodle_max_grade(table)
    todo = _grades(grades)
    rows, written, maxima = [], [], set()
    for student, (line, row) in zip(students, table.records):
        out = [c if h in _MOODLE_READ else _defuse(c) for h, c in zip(table.header, row)]
        if student.lms_id in todo:
            points, feedback = todo[student.lms_id]
            if scale_from is not None and max_col is not None and (top := _parse_number(row[max_col])) is not None:
                points = scale_points(points, rubric_max=scale_from, lms_max=top)
                maxima.add(top)
            _check_max(table, line, row, max_col, points)
            out[grade_col] = "" if points is None else format_points(points)
            if fb_col is not None and feedback.strip():
                out[fb_col] = _feedback_html(feedback)
            written.append(student.lms_id)
        rows.append(out)
    _write_table(out_path, table.header, rows, bom=table.bom, newline=table.newline)
    scale = _scale_note(scale_from, maxima, "Moodle", "Maximum Grade") if scale_from else ""
    return ExportSummary(Path(out_path), written, sorted(set(todo) - set(written), key=_id_sort), scale=scale)


def _check_max(table: _Table, line: int, row: list[str], max_col: int | None, points: float | None) -> None:
    if points is None or max_col is None:
        return
    top = _parse_number(row[max_col])
    if top is not None and round(points, 2) > top + 1e-9:
        raise LmsFormatError(f"{table.path}, line {line}: {format_points(points)} points but the assignment's "
                             f"Maximum Grade is {row[max_col]}; Moodle would skip this grade: set the maximum "
                             "grade in Moodle to the rubric's points and download the worksheet again (or "
                             "leave out --lms-points raw: points are then scaled to the Maximum Grade)")


def _id_sort(key: str) -> tuple[int, str]:
    return (0, f"{int(key):020d}") if _DIGITS.match(key) else (1, key)


def _canvas_column(table: _Table, lay: _CanvasLayout, wanted: str) -> int | None:
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
        raise LmsFormatError(f"{table.path}, line 1: {len(titled)} assignments are titled {_show(wanted)}; give the "
                             f"exact column header, e.g. {_show(table.header[titled[0]])}")
    return titled[0] if titled else None


def _title_key(title: str) -> str:
    return " ".join(title.casefold().split())


def existing_canvas_column(template_path: str | Path, names: Sequence[str]) -> str | None:
    """The header of the gradebook's assignment column titled like one of ``names`` (the exact
    header, or its title before ``(id)``, case and spacing aside), first name first; None when the
    gradebook has none."""
    table = _read_table(template_path, delimiters=(",", ";"))
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
        raise LmsFormatError(f"the assignment column {_show(name)} is empty or holds control characters or "
                             "surrounding spaces; give the assignment's name as in Canvas")
    if name in _CANVAS_RESERVED or _CANVAS_TOTALS.search(name):
        raise LmsFormatError(f"{_show(name)} is one of Canvas's own column names (Canvas's importer skips columns "
                             "named like its totals); give the assignment's name")


def _canvas_target(table: _Table, lay: _CanvasLayout, assignment_column: str) -> int | None:
    """The existing column to fill, or None for a new one (checked to be importable as one)."""
    _check_column_name(assignment_column)
    col = _canvas_column(table, lay, assignment_column)
    if col is None and _CANVAS_TITLE_ID.match(assignment_column):
        raise LmsFormatError(f"{table.path}: no column {_show(assignment_column)}, and a new column ending in "
                             "'(number)' would be read by Canvas as that assignment id; give the exact header "
                             "from the export or a name without '(number)' at the end")
    return col


def _canvas_points_row(first: str, lay: _CanvasLayout, value: str) -> list[str]:
    return [first] + [""] * (lay.identity - 1) + [value]


def _canvas_rows(table: _Table, lay: _CanvasLayout, col: int | None, todo: dict[str, tuple[float | None, str]],
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
        cells = [c if h in _CANVAS_READ else _defuse(c) for h, c in zip(ident, row)]
        points = todo.get(student.lms_id, (None, ""))[0]
        if student.lms_id in todo:
            written.append(student.lms_id)
        current = row[col] if col is not None else ""
        rows.append(cells + [current if points is None else format_points(points)])
    return [points_row] + rows, written


def _canvas_points_possible(table: _Table, col: int | None) -> float | None:
    if col is None:
        return None
    for _, row in table.records:
        if _canvas_kind(row) == "points":
            return _parse_number(row[col]) if col < len(row) else None
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
    table = _read_table(template_path, delimiters=(",", ";"))
    lay = _canvas_layout(table)
    col = _canvas_target(table, lay, assignment_column)
    todo = _grades(grades)
    possible = _canvas_points_possible(table, col)
    scale = ""
    if scale_from is not None and possible is not None and possible > 0:
        todo = {k: (scale_points(p, rubric_max=scale_from, lms_max=possible), f) for k, (p, f) in todo.items()}
        scale = _scale_note(scale_from, {possible}, "Canvas", "Points Possible")
    new_points = "" if points_possible is None else format_points(points_possible)
    rows, written = _canvas_rows(table, lay, col, todo, new_points)
    header = table.header[: lay.identity] + [table.header[col] if col is not None else assignment_column]
    _write_table(out_path, header, rows, bom=table.bom, newline=table.newline, delimiter=table.delimiter)
    return ExportSummary(Path(out_path), written, sorted(set(todo) - set(written), key=_id_sort), scale=scale,
                         column=header[-1], new_column=col is None)
