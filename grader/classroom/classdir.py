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

from grader.classroom.roster import Problem, valid_student_id
from grader.errors import SetupError
from grader.submission.bundle import Bundle, bundle_files, bundle_folder, bundle_stem, kind_of, stem_of

LAYOUTS = ("auto", "plain", "moodle", "canvas")


@dataclass
class ClassFolder:
    root: Path
    layout: str = "plain"
    bundles: list[Bundle] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    names: dict[str, str] = field(default_factory=dict)  # student -> name the LMS gave (display)
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
    cf.layout = lms.detect_layout(n for n, _ in entries) if layout == "auto" else layout
    if cf.layout == "plain":
        _scan_plain(cf, entries)
    else:
        _scan_lms(cf, entries)
    cf.bundles.sort(key=lambda b: b.student)
    return cf


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


def _scan_lms(cf: ClassFolder, entries: list[tuple[str, bool]]) -> None:
    from grader.classroom import lms

    flat: dict[str, list[tuple[str, str]]] = {}
    for name, is_dir in entries:
        entry = lms.parse_entry(name, cf.layout, is_dir=is_dir)
        if entry is None:
            cf.problems.append(Problem(name, f"not a {cf.layout} submission name (expected e.g. "
                                       + ("'Full Name_1234567_assignsubmission_file_/'" if cf.layout == "moodle"
                                          else "'lastfirst_1234_567_model.onnx'") + ")"))
            continue
        cf.names.setdefault(entry.student_key, entry.display_name)
        if entry.late:
            cf.late_flags.add(entry.student_key)
        if entry.is_folder:
            bundle, problems = bundle_folder(cf.root / name, entry.student_key, label=None)
            _add(cf, bundle, problems, prefix=f"{name}/")
        else:
            flat.setdefault(entry.student_key, []).append((name, entry.canonical_file_name or name))
    for key, files in sorted(flat.items()):
        if any(b.student == key for b in cf.bundles):
            cf.problems += [Problem(n, f"student {key} also has a folder; the folder's files are graded", key) for n, _ in files]
            continue
        bundle, problems = bundle_files(cf.root, key, [n for n, _ in files], display=dict(files))
        _add(cf, bundle, problems, prefix="")
