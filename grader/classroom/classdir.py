"""Reading a class folder and a roster: which student handed in which files, and what does not fit.

Layouts (detected, or named with ``--lms``):

* ``plain``: one folder per student (``CLASS_DIR/<student_id>/`` holding a model, a notebook,
  weights) or flat files (``CLASS_DIR/<student_id>.onnx``, ``.ipynb``, ``.pt``), or both;
* ``moodle``: Moodle's "Download all submissions" (``Full Name_1234567_assignsubmission_file_/``
  folders, or flat files with that prefix); the student is ``moodle-<participant id>``;
* ``canvas``: Canvas's download names (``lastfirst_1234_567_model.onnx``, ``_LATE_`` for late
  work); the student is ``canvas-<user id>``.

Each student's files become one :class:`~grader.submission.bundle.Bundle` by the one rule of
:mod:`grader.submission.bundle` (a folder is one student's; flat files go with their stem). Student ids are
untrusted: they must match :data:`STUDENT_ID_RE`, not start with a dot and not contain ``..``;
only validated ids are ever used in output paths. Links are refused (a link could lead out of
the class folder, or make one folder count for two students), and so is anything that is not a
regular file (a FIFO would hang a reader). Whatever does not fit becomes a :class:`Problem` with
the reason; nothing is skipped silently.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from grader.classroom.roster import Problem, valid_student_id
from grader.errors import SetupError
from grader.submission.bundle import Bundle, bundle_files, bundle_folder, bundle_stem, kind_of, stem_of

if TYPE_CHECKING:
    from grader.classroom.lms.entry import Layout

LAYOUTS = ("auto", "plain", "moodle", "canvas")
_NAMED: dict[str, Layout] = {"plain": "plain", "moodle": "moodle", "canvas": "canvas"}  # --lms, once checked


@dataclass
class ClassFolder:
    root: Path
    layout: str = "plain"  # a Layout, or "final" (grader.classroom.final: the kept hand-ins)
    bundles: list[Bundle] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    names: dict[str, str] = field(default_factory=dict)  # student -> name the LMS gave (display)
    texts: list[Problem] = field(default_factory=list)  # LMS online text / link entries: read, not graded
    late_flags: set[str] = field(default_factory=set)  # students whose files Canvas named _LATE_

    @property
    def students(self) -> list[str]:
        return sorted({b.student for b in self.bundles})


def _is_link_or_odd(p: Path) -> str:
    try:
        st = os.lstat(p)
    except OSError as exc:
        return f"cannot read it ({exc.strerror})"
    if stat.S_ISLNK(st.st_mode):
        return "a symbolic link (refused: hand in the files themselves)"
    if not (stat.S_ISDIR(st.st_mode) or stat.S_ISREG(st.st_mode)):
        return "not a regular file or folder"
    return ""


def scan_class(class_dir: str | Path, *, exclude: Path | None = None, layout: str = "auto") -> ClassFolder:
    """Find every student's bundle in ``class_dir``; ``exclude`` is a folder to leave out (the output)."""
    from grader.classroom import lms

    if layout not in LAYOUTS:
        raise SetupError(f"unknown layout {layout!r}; choose one of {', '.join(LAYOUTS)}")
    root = Path(os.path.realpath(class_dir))
    excluded = Path(os.path.realpath(exclude)) if exclude is not None else None
    entries = []
    cf = ClassFolder(root=root)
    for item in sorted(os.scandir(root), key=lambda d: d.name):
        if excluded is not None and Path(os.path.realpath(item.path)) == excluded:
            continue  # the output folder itself (documented)
        if item.name.startswith("."):
            cf.problems.append(Problem(item.name, "hidden entry, ignored"))
            continue
        odd = _is_link_or_odd(Path(item.path))
        if odd:
            cf.problems.append(Problem(item.name, odd))
            continue
        entries.append((item.name, item.is_dir(follow_symlinks=False)))
    found = lms.detect_layout(n for n, _ in entries) if layout == "auto" else _NAMED[layout]
    cf.layout = found
    if found == "plain":
        _scan_plain(cf, entries)
    else:
        _scan_lms(cf, entries, found)
    cf.bundles.sort(key=lambda b: b.student)
    return cf


def class_folder_evidence(folder: Path) -> str:
    """Why ``folder`` looks like a whole class's hand-ins rather than one student's ("" when it does
    not): an LMS download, several student folders holding hand-ins, or several notebooks / models
    under different names and none named model.onnx."""
    from grader.classroom.lms import detect_layout
    from grader.submission.bundle import MODEL_NAME, _listing, kind_of, stem_of

    names = _listing(folder)
    layout = detect_layout(names)
    if layout != "plain":
        return f"its entries are named as {layout.capitalize()}'s download of a whole class"
    students = [n for n in names if (folder / n).is_dir() and not (folder / n).is_symlink()
                and any(kind_of(m) in ("model", "notebook", "weights") for m in _listing(folder / n))]
    if len(students) >= 2:
        return f"{len(students)} folders in it hold hand-ins ({', '.join(students[:3])}{' ...' if len(students) > 3 else ''})"
    stems = {stem_of(n) for n in names if kind_of(n) in ("model", "notebook")}
    if len(stems) >= 2 and MODEL_NAME not in names and len([n for n in names if kind_of(n) == "notebook"]) != 1:
        return f"it holds hand-ins under {len(stems)} different names ({', '.join(sorted(stems)[:3])} ...)"
    return ""


def _scan_plain(cf: ClassFolder, entries: list[tuple[str, bool]]) -> None:
    folders: set[str] = set()
    stems: dict[str, list[str]] = {}
    for name, is_dir in entries:
        if is_dir:
            if not valid_student_id(name):
                cf.problems.append(Problem(name + "/", "folder name is not a valid student id "
                                           "(letters, digits, _ . @ -, at most 64 characters, no '..')"))
                continue
            bundle, problems = bundle_folder(cf.root / name, name)
            _add(cf, bundle, problems, prefix=f"{name}/")
            folders.add(name)
            continue
        if kind_of(name) is None:
            cf.problems.append(Problem(name, "not a student folder, nor a .onnx, .ipynb or .pt file"))
            continue
        stem = stem_of(name)
        if not valid_student_id(stem):
            cf.problems.append(Problem(name, "file name is not <student_id>.onnx / .ipynb / .pt with a valid id"))
            continue
        stems.setdefault(stem, []).append(name)
    for stem, names in sorted(stems.items()):
        if stem in folders:
            cf.problems += [Problem(n, f"student {stem} also has a folder; the folder's files are graded", stem) for n in names]
            continue
        bundle, problems = bundle_stem(cf.root, stem, names=names)
        _add(cf, bundle, problems, prefix="")


def _add(cf: ClassFolder, bundle: Bundle, problems: list, *, prefix: str) -> None:
    for misfit in problems:
        entry = prefix + misfit.entry if misfit.entry else (prefix or bundle.student)
        cf.problems.append(Problem(entry, misfit.reason, bundle.student))
    if bundle.empty:
        if not problems:
            cf.problems.append(Problem(prefix or bundle.student, "no model (.onnx) or notebook (.ipynb) to grade",
                                       bundle.student))
        return
    cf.bundles.append(bundle)


def _scan_lms(cf: ClassFolder, entries: list[tuple[str, bool]], layout: Layout) -> None:
    from grader.classroom import lms

    flat: dict[str, list[tuple[str, str]]] = {}
    folders: dict[str, list[str]] = {}
    for name, is_dir in entries:
        entry = lms.parse_entry(name, layout, is_dir=is_dir)
        if entry is None:
            cf.problems.append(Problem(name, f"not a {cf.layout} submission name (expected e.g. "
                                       + ("'Full Name_1234567_assignsubmission_file_/'" if cf.layout == "moodle"
                                          else "'lastfirst_1234_567_model.onnx'") + ")"))
            continue
        cf.names.setdefault(entry.student_key, entry.display_name)
        if entry.late:
            cf.late_flags.add(entry.student_key)
        if entry.plugin not in ("file", "upload"):
            cf.texts.append(Problem(name, _text_entry_reason(entry.plugin), entry.student_key))
        elif entry.is_folder:
            folders.setdefault(entry.student_key, []).append(name)
        else:
            flat.setdefault(entry.student_key, []).append((name, entry.canonical_file_name or name))
    for key, names in sorted(folders.items()):
        name = _one_folder(cf, key, names)
        bundle, problems = bundle_folder(cf.root / name, key, label=None)
        _add(cf, bundle, problems, prefix=f"{name}/")
    for key, files in sorted(flat.items()):
        if any(b.student == key for b in cf.bundles):
            cf.problems += [Problem(n, f"student {key} also has a folder; the folder's files are graded", key) for n, _ in files]
            continue
        bundle, problems = bundle_files(cf.root, key, [n for n, _ in files], display=dict(files))
        _add(cf, bundle, problems, prefix="")


def _text_entry_reason(plugin: str) -> str:
    """What an LMS entry that is not a file upload is (Moodle's online text, Canvas's text or link)."""
    what = {"onlinetext": "Moodle online text", "text": "Canvas text entry", "link": "Canvas website URL"}.get(
        plugin, f"LMS {plugin} entry")
    return f"{what}: read, not graded (the assignment grades uploaded files)"


def _newest_file(folder: Path) -> float:
    """The latest modification time of the hand-in files in ``folder`` (0 when it has none)."""
    times = []
    for e in os.scandir(folder):
        if kind_of(e.name) is not None and e.is_file(follow_symlinks=False):
            times.append(e.stat(follow_symlinks=False).st_mtime)
    return max(times, default=0.0)


def _one_folder(cf: ClassFolder, key: str, names: list[str]) -> str:
    """One folder per participant. Two (``..._file`` and ``..._file_``: two downloads unzipped into
    one folder) are a problem, and one rule picks the graded one: the folder whose newest hand-in
    file is the newest; on a tie, the name Moodle 4.1 and later writes (``..._file``, no trailing
    ``_``). The other is listed, never graded silently."""
    if len(names) == 1:
        return names[0]
    ranked = sorted(names, key=lambda n: (_newest_file(cf.root / n), not n.endswith("_")), reverse=True)
    kept = ranked[0]
    for other in ranked[1:]:
        cf.problems.append(Problem(other + "/", f"a second entry for {key} (two downloads in one folder?); only "
                                   f"{kept}/ is graded (the newer files; see docs/lms.md)", key))
    return kept

