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

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Literal

from grader.classroom.lms.canvas import parse_canvas_entry, read_canvas_gradebook
from grader.classroom.lms.entry import Layout, LmsEntry, usable_name
from grader.classroom.lms.moodle import MOODLE_IDENTIFIER, parse_moodle_entry, read_moodle_worksheet
from grader.classroom.lms.table import LmsFormatError, LmsStudent, read_table
from grader.classroom.roster import Roster, RosterStudent, valid_student_id

RosterKind = Literal["moodle", "canvas", "generic"]


def parse_entry(name: str, layout: Layout, *, is_dir: bool | None = None) -> LmsEntry | None:
    """Parse one top-level entry name of a class folder in ``layout``; None when it does not match.

    ``is_dir`` (when known) rules out a folder name for Canvas and a file name for a Moodle folder.
    Names with a path separator, a control character, a leading dot or ``..`` as a component are
    never parsed; the ``student_key`` is built from digits only. ``plain`` names are not LMS names
    (``grader.classroom.classdir`` reads them): always None.
    """
    if layout not in ("moodle", "canvas", "plain"):
        raise ValueError(f"unknown layout {layout!r}")
    if not isinstance(name, str) or not usable_name(name) or layout == "plain":
        return None
    entry = parse_moodle_entry(name, is_dir) if layout == "moodle" else parse_canvas_entry(name, is_dir)
    if entry is not None and not valid_student_id(entry.student_key):  # cannot happen; belt and braces
        return None
    return entry


def detect_layout(names: Iterable[str]) -> Layout:
    """``moodle`` or ``canvas`` when at least half of the visible entries (not starting with a dot)
    parse as that LMS's names (the larger count wins), else ``plain``."""
    visible = [n for n in names if isinstance(n, str) and n and not n.startswith(".")]
    if not visible:
        return "plain"
    lms_layouts: tuple[Layout, ...] = ("moodle", "canvas")
    counts = {lay: sum(parse_entry(n, lay) is not None for n in visible) for lay in lms_layouts}
    best = max(counts, key=lambda lay: counts[lay])
    if counts[best] == 0 or 2 * counts[best] < len(visible):
        return "plain"
    return best


def detect_roster_kind(path: str | Path) -> RosterKind:
    """``moodle`` (a worksheet: an ``Identifier`` column), ``canvas`` (a header starting ``Student,
    ID`` with a ``Section`` column) or ``generic`` (the grader's ``student_id,name,email``)."""
    table = read_table(path, delimiters=(",", ";"))
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
