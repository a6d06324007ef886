"""Reading a class folder and a roster: which student handed in which file, and what does not fit.

Layout (either, or mixed):

* one folder per student: ``CLASS_DIR/<student_id>/`` holding ``model.onnx`` (or exactly one
  ``*.onnx``), a notebook ``*.ipynb`` (exactly one), or both;
* flat files: ``CLASS_DIR/<student_id>.onnx`` and/or ``CLASS_DIR/<student_id>.ipynb``.

Student ids are untrusted: they must match :data:`STUDENT_ID_RE`, not start with a dot and not
contain ``..``; only validated ids are ever used in output paths. A symlink whose target lies
outside the class folder is refused, and so is anything that is not a regular file (a FIFO would
hang a reader). Whatever does not fit the layout becomes a :class:`Problem` with the reason; nothing
is skipped silently.
"""

from __future__ import annotations

import csv
import os
import re
import stat
from dataclasses import dataclass, field
from pathlib import Path

STUDENT_ID_RE = re.compile(r"^[A-Za-z0-9_.@-]{1,64}$")
KINDS = {".onnx": "model", ".ipynb": "notebook"}
MAX_NOTEBOOK_BYTES = 64 * 1024 * 1024


def valid_student_id(sid: str) -> bool:
    return bool(STUDENT_ID_RE.fullmatch(sid)) and ".." not in sid and not sid.startswith(".")


@dataclass(frozen=True)
class Entry:
    """One file to grade."""

    student: str
    kind: str  # model | notebook
    path: Path  # resolved, inside the class folder
    rel: str  # as found, relative to the class folder (display name, gradebook ``file``)


@dataclass(frozen=True)
class Problem:
    """Something in the class folder or the roster that does not fit the layout."""

    entry: str  # path relative to the class folder (or "roster.csv:LINE")
    reason: str
    student: str | None = None  # the student it concerns, when the name is a valid id


@dataclass
class ClassFolder:
    root: Path
    entries: list[Entry] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)

    @property
    def students(self) -> list[str]:
        return sorted({e.student for e in self.entries})

    def by_student(self) -> dict[str, list[Entry]]:
        out: dict[str, list[Entry]] = {}
        for e in self.entries:
            out.setdefault(e.student, []).append(e)
        return out


def _inside(path: Path, root: Path) -> bool:
    try:
        path.relative_to(root)
        return True
    except ValueError:
        return False


def _check_file(p: Path, root: Path, rel: str) -> tuple[Path | None, str]:
    """(resolved path, "") for a regular file inside ``root``; (None, reason) otherwise."""
    try:
        real = Path(os.path.realpath(p))
    except OSError as exc:  # a symlink loop
        return None, f"cannot resolve the path ({exc.strerror})"
    if p.is_symlink() and not _inside(real, root):
        return None, "a symlink pointing outside the class folder (refused)"
    if not _inside(real, root):
        return None, "resolves outside the class folder (refused)"
    try:
        st = os.stat(real)
    except OSError as exc:
        return None, f"cannot read it ({exc.strerror})"
    if not stat.S_ISREG(st.st_mode):
        return None, "not a regular file"
    return real, ""


def scan_class(class_dir: str | Path, *, exclude: Path | None = None) -> ClassFolder:
    """Find every submission in ``class_dir``; ``exclude`` is a folder to leave out (the output)."""
    root = Path(os.path.realpath(class_dir))
    cf = ClassFolder(root=root)
    excluded = Path(os.path.realpath(exclude)) if exclude is not None else None
    folder_students: set[str] = set()
    flat: list[tuple[str, str, Path, str]] = []
    for item in sorted(os.scandir(root), key=lambda d: d.name):
        name, p = item.name, Path(item.path)
        if excluded is not None and Path(os.path.realpath(p)) == excluded:
            continue  # the output folder itself (documented)
        if name.startswith("."):
            cf.problems.append(Problem(name, "hidden entry, ignored"))
            continue
        if item.is_symlink():
            real = Path(os.path.realpath(p))
            if not _inside(real, root):
                cf.problems.append(Problem(name, "a symlink pointing outside the class folder (refused)"))
                continue
        if item.is_dir():
            if not valid_student_id(name):
                cf.problems.append(Problem(name + "/", "folder name is not a valid student id "
                                           "(letters, digits, _ . @ -, at most 64 characters, no '..')"))
                continue
            found = _scan_student_folder(root, p, name, cf)
            if found:
                folder_students.add(name)
            continue
        stem, suffix = os.path.splitext(name)
        kind = KINDS.get(suffix.lower())
        if kind is None:
            cf.problems.append(Problem(name, "not a student folder, a .onnx or a .ipynb file"))
            continue
        if not valid_student_id(stem):
            cf.problems.append(Problem(name, "file name is not <student_id>.onnx / <student_id>.ipynb with a valid id"))
            continue
        real, reason = _check_file(p, root, name)
        if real is None:
            cf.problems.append(Problem(name, reason, stem))
            continue
        flat.append((stem, kind, real, name))
    for stem, kind, real, name in flat:
        if stem in folder_students:
            cf.problems.append(Problem(name, f"student {stem} also has a folder; the folder's files are graded", stem))
            continue
        cf.entries.append(Entry(stem, kind, real, name))
    cf.entries.sort(key=lambda e: (e.student, e.kind))
    return cf


def _scan_student_folder(root: Path, folder: Path, student: str, cf: ClassFolder) -> bool:
    rel_dir = folder.name
    files: dict[str, list[tuple[str, Path]]] = {"model": [], "notebook": []}
    try:
        items = sorted(os.scandir(folder), key=lambda d: d.name)
    except OSError as exc:
        cf.problems.append(Problem(rel_dir + "/", f"cannot list the folder ({exc.strerror})", student))
        return False
    for item in items:
        kind = KINDS.get(os.path.splitext(item.name)[1].lower())
        if kind is None or item.name.startswith("."):
            continue  # other files in a student's folder are not graded
        rel = f"{rel_dir}/{item.name}"
        real, reason = _check_file(Path(item.path), root, rel)
        if real is None:
            cf.problems.append(Problem(rel, reason, student))
            continue
        files[kind].append((rel, real))
    found = False
    models = files["model"]
    if len(models) == 1 or any(r.endswith("/model.onnx") for r, _ in models):
        rel, real = next(((r, p) for r, p in models if r.endswith("/model.onnx")), models[0])
        cf.entries.append(Entry(student, "model", real, rel))
        found = True
    elif len(models) > 1:
        cf.problems.append(Problem(rel_dir + "/", f"{len(models)} .onnx files and none is named model.onnx; "
                                   "which one to grade is unclear", student))
    notebooks = files["notebook"]
    if len(notebooks) == 1:
        cf.entries.append(Entry(student, "notebook", notebooks[0][1], notebooks[0][0]))
        found = True
    elif len(notebooks) > 1:
        cf.problems.append(Problem(rel_dir + "/", f"{len(notebooks)} notebooks; hand in exactly one .ipynb", student))
    if not found and not any(p.entry.startswith(rel_dir + "/") for p in cf.problems):
        cf.problems.append(Problem(rel_dir + "/", "no model.onnx, *.onnx or *.ipynb in the folder", student))
    return found


# --- roster --------------------------------------------------------------------------------------
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


class RosterError(ValueError):
    pass


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

        def col(key: str) -> str:
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
