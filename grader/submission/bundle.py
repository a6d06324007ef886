"""What one student handed in: the one rule that gathers a submission's files, and reading them.

A submission is a *bundle* of one student's files: an ONNX model, a notebook, trained weights
(``*.pt`` / ``*.pth``). Every front end gathers it with the same two rules:

* **a folder is one student's submission** (``CLASS_DIR/alice/``, or ``grade DIR``): its model
  (``model.onnx``, or its only ``*.onnx``), its notebook (exactly one ``*.ipynb``) and up to
  :data:`MAX_WEIGHTS` weight files;
* **a file is graded with the files that share its stem** (``alice.ipynb`` with ``alice.onnx``
  and ``alice.pt``): in a flat class folder, another student's files are never taken. Files
  beside it under other names are not part of the submission; :attr:`Bundle.notes` says so, with
  how to include them.

Reading (:func:`read_bundle`) happens once, capped, without following links out of the folder;
the bytes are what is graded (so a file that changes afterwards cannot change the grade), and
their digest keys the gradebook. torch's default export writes ``model.onnx`` plus
``model.onnx.data``: a *sidecar* is read only when it is **one of the same student's files**
(:attr:`Bundle.sidecars`: a file of the student's own folder, a file sharing the student's stem in
a flat folder, or one of the student's files in an LMS download, matched by the name the student
gave it before the LMS renamed it), a regular file (not a link), within the size cap; its bytes are
inlined into the model in memory (:func:`inline_external_data`). A model that names any other file
(a classmate's model, the roster, ``../x``, a link) is refused before a byte of it is read.
"""

from __future__ import annotations

import hashlib
import os
import stat
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

from grader.errors import ExternalDataError
from grader.limits import MAX_MODEL_BYTES, MAX_NOTEBOOK_BYTES, MAX_WEIGHT_BYTES

MODEL_SUFFIXES = (".onnx",)
NOTEBOOK_SUFFIXES = (".ipynb",)
WEIGHT_SUFFIXES = (".pt", ".pth")
SIDECAR_SUFFIX = ".data"  # torch: model.onnx -> model.onnx.data
MAX_WEIGHTS = 3
MODEL_NAME = "model.onnx"
GENERIC_STEMS = frozenset({"model", "policy"})  # model.onnx, policy.pt: the names the course and the grader's hints give


class Misfit(NamedTuple):
    """A file (or the folder itself, ``entry == ""``) that does not fit the bundle rule, and why."""

    entry: str
    reason: str

    def __str__(self) -> str:
        return f"{self.entry}: {self.reason}" if self.entry else self.reason


def kind_of(name: str) -> str | None:
    """``model``, ``notebook``, ``weights``, ``sidecar`` or None, from a file name's suffix (any case)."""
    low = name.lower()
    if low.endswith(".onnx" + SIDECAR_SUFFIX):
        return "sidecar"
    for kind, suffixes in (("model", MODEL_SUFFIXES), ("notebook", NOTEBOOK_SUFFIXES), ("weights", WEIGHT_SUFFIXES)):
        if low.endswith(suffixes):
            return kind
    return None


def stem_of(name: str) -> str:
    """``alice`` for ``alice.onnx``, ``alice.ipynb``, ``alice.pt`` and ``alice.onnx.data``."""
    if kind_of(name) == "sidecar":
        name = name[: -len(SIDECAR_SUFFIX)]
    return os.path.splitext(name)[0]


@dataclass(frozen=True)
class Bundle:
    """The files of one submission (paths; nothing read yet)."""

    student: str
    label: str  # how the submission is shown: "alice/" or "alice.ipynb + alice.onnx"
    model: Path | None = None
    notebook: Path | None = None
    weights: tuple[Path, ...] = ()
    notes: tuple[str, ...] = ()  # what was near it and not taken, and why
    # the student's own files a model may name as its external data: (name the student gave it, path)
    sidecars: tuple[tuple[str, Path], ...] = ()

    @property
    def empty(self) -> bool:
        return self.model is None and self.notebook is None

    @property
    def kind(self) -> str:
        return "+".join(k for k, p in (("notebook", self.notebook), ("model", self.model)) if p is not None) or "empty"


@dataclass(frozen=True)
class NamedBytes:
    name: str
    data: bytes


@dataclass(frozen=True)
class Submission:
    """A bundle's bytes, as graded. ``problems`` are reading failures: the submission's fault."""

    student: str
    label: str
    model: NamedBytes | None = None
    notebook: NamedBytes | None = None
    weights: tuple[NamedBytes, ...] = ()
    notes: tuple[str, ...] = ()
    problems: tuple[tuple[str, str, str], ...] = ()  # (check name, message, hint)

    def digest(self) -> str:
        """sha256 over every graded byte, by role: what the gradebook keys an attempt on."""
        h = hashlib.sha256()
        for role, item in (("model", self.model), ("notebook", self.notebook), *(("weights", w) for w in self.weights)):
            if item is not None:
                h.update(f"{role}\0{item.name}\0{len(item.data)}\0".encode())
                h.update(hashlib.sha256(item.data).digest())
        for problem in self.problems:
            h.update(("problem\0" + "\0".join(problem)).encode())
        return h.hexdigest()


# --- gathering -------------------------------------------------------------------------------------
def _regular(path: Path) -> bool:
    try:
        return stat.S_ISREG(os.lstat(path).st_mode)
    except OSError:
        return False


def _listing(folder: Path) -> list[str]:
    try:
        return sorted(e.name for e in os.scandir(folder) if not e.name.startswith("."))
    except OSError:
        return []


def bundle_folder(folder: Path, student: str, *, label: str | None = None) -> tuple[Bundle, list[Misfit]]:
    """One student's folder: its model, notebook and weights. Returns the bundle and the problems
    (several models with none named model.onnx, several notebooks, links, ...)."""
    names = _listing(folder)
    return bundle_files(folder, student, names, label=label, label_prefix=f"{folder.name}/", own=names)


def bundle_files(folder: Path, student: str, names: list[str], *, label: str | None = None,
                 label_prefix: str = "", display: dict[str, str] | None = None,
                 own: list[str] | None = None) -> tuple[Bundle, list[Misfit]]:
    """The named files of ``folder``, all one student's (a folder, or an LMS's prefixed files).

    ``display`` maps a file name to the name the student gave it (an LMS prefixes its own); the
    model may then be the one displayed as ``model.onnx``. ``own`` are every file of ``folder``
    that is this student's (default ``names``): the only files its model may name as its
    external data, by their displayed names.
    """
    display = display or {}
    sidecars = tuple((display.get(n, n), folder / n) for n in (names if own is None else own))
    by_kind: dict[str, list[str]] = {"model": [], "notebook": [], "weights": [], "sidecar": []}
    problems: list[Misfit] = []
    for name in names:
        kind = kind_of(display.get(name, name))
        if kind is None:
            continue
        if not _regular(folder / name):
            problems.append(Misfit(name, "not a regular file (a link, a folder or a device); not graded"))
            continue
        by_kind[kind].append(name)
    problems += _case_duplicates(by_kind)
    model = None
    models = by_kind["model"]
    named = [m for m in models if display.get(m, m) == MODEL_NAME]
    if named:
        model = named[0]
    elif len(models) == 1:
        model = models[0]
    elif models:
        problems.append(Misfit("", f"{len(models)} .onnx files and none is named model.onnx ({', '.join(models[:4])}); "
                               "which one to grade is unclear: keep one, or name it model.onnx"))
    notebook = by_kind["notebook"][0] if len(by_kind["notebook"]) == 1 else None
    if len(by_kind["notebook"]) > 1:
        problems.append(Misfit("", f"{len(by_kind['notebook'])} notebooks ({', '.join(by_kind['notebook'][:4])}); "
                               "hand in exactly one .ipynb"))
    weights = by_kind["weights"][:MAX_WEIGHTS]
    notes = [f"{w}: more than {MAX_WEIGHTS} weight files; not used" for w in by_kind["weights"][MAX_WEIGHTS:]]
    if model is None and notebook is None and weights:
        # A checkpoint alone: graded as the model the student meant, so that the checks say what it
        # is and how to export it (as `grade policy.pt` does), never a bare "nothing to grade".
        model, weights = weights[0], []
    taken = [n for n in (notebook, model) if n]
    shown = " + ".join(taken) or "nothing to grade"
    bundle = Bundle(student=student, label=label or (f"{label_prefix} ({shown})" if label_prefix else shown),
                    model=folder / model if model else None, notebook=folder / notebook if notebook else None,
                    weights=tuple(folder / w for w in weights), notes=tuple(notes), sidecars=sidecars)
    return bundle, problems


def _case_duplicates(by_kind: dict[str, list[str]]) -> list[Misfit]:
    """Drop (and report) names of one kind that differ only in case: ``frank.onnx`` / ``frank.ONNX``."""
    problems = []
    for names in by_kind.values():
        seen: dict[str, str] = {}
        kept = []
        for name in names:
            first = seen.setdefault(name.lower(), name)
            if first is name:
                kept.append(name)
            else:
                problems.append(Misfit(name, f"differs from {first} only in case; keep one (only {first} is graded)"))
        names[:] = kept
    return problems


def bundle_stem(folder: Path, stem: str, *, names: list[str] | None = None) -> tuple[Bundle, list[Misfit]]:
    """The files of ``folder`` whose stem is exactly ``stem`` (a flat class folder, or ``grade FILE``)."""
    names = _listing(folder) if names is None else names
    mine = [n for n in names if kind_of(n) is not None and stem_of(n) == stem]
    bundle, problems = bundle_files(folder, stem, mine)
    if not bundle.label or bundle.label == "nothing to grade":
        bundle = Bundle(**{**bundle.__dict__, "label": stem})
    return bundle, problems


def _notebook_alone(path: Path) -> Bundle | None:
    """The folder's bundle when ``path`` is the only notebook in it and every other hand-in file
    there is named like it or as the course names them (:data:`GENERIC_STEMS`); else None."""
    folder, name = path.parent, path.name
    if kind_of(name) != "notebook" or not _regular(path):
        return None
    listing = [n for n in _listing(folder) if kind_of(n) is not None]
    stems = {stem_of(n) for n in listing if n != name}
    if [n for n in listing if kind_of(n) == "notebook"] != [name] or not stems <= {stem_of(name), *GENERIC_STEMS}:
        return None
    bundle, problems = bundle_folder(folder, stem_of(name), label=None)
    if problems or bundle.notebook != folder / name:
        return None
    taken = " + ".join(p.name for p in (bundle.notebook, bundle.model, *bundle.weights) if p is not None)
    return Bundle(**{**bundle.__dict__, "label": taken})


def gather(path: Path) -> tuple[Bundle, list[Misfit]]:
    """The bundle ``grade PATH`` grades: a folder is one student's, a file goes with its stem, and
    a notebook alone in its folder (the only ``.ipynb`` there, and every other hand-in file named
    like it or as the course names them: ``model.onnx``, ``policy.pt``) stands for that folder
    (``homework.ipynb`` + ``model.onnx`` + ``model.onnx.data``). A file named like another
    student's (``bob.onnx``) is never taken."""
    path = Path(path)
    if path.is_dir():
        return bundle_folder(path, path.resolve().name or "submission")
    folder, name = path.parent, path.name
    alone = _notebook_alone(path)
    if alone is not None:
        return alone, []
    bundle, problems = bundle_stem(folder, stem_of(name))
    kind = kind_of(name)
    if kind in ("model", "notebook") and getattr(bundle, kind) != path:  # the very file named wins
        bundle = Bundle(**{**bundle.__dict__, kind: path})
    if kind in ("weights", None) and bundle.empty:  # `grade policy.pt`: graded as the model the student meant
        bundle = Bundle(**{**bundle.__dict__, "model": path, "weights": (), "label": name})
    taken = {p.name for p in (bundle.model, bundle.notebook, *bundle.weights) if p is not None}
    if name not in taken and kind_of(name) in ("model", "notebook"):
        taken.add(name)
    others = [n for n in _listing(folder) if kind_of(n) in ("model", "notebook", "weights") and n not in taken
              and stem_of(n) != stem_of(name)]
    if bundle.notebook is not None and others:
        note = (f"{', '.join(others[:3])}{' ...' if len(others) > 3 else ''} beside the notebook "
                f"{'is' if len(others) == 1 else 'are'} not part of this submission (another name): to grade "
                f"them together, grade the folder (grade {folder.name or '.'}/) or give them the notebook's name "
                f"({stem_of(name)}.onnx, {stem_of(name)}.pt)")
        bundle = Bundle(**{**bundle.__dict__, "notes": bundle.notes + (note,)})
    return bundle, problems


# --- reading -----------------------------------------------------------------------------------------
def read_capped(path: Path, cap: int) -> bytes:
    """The bytes of a regular file (a link is refused), at most ``cap`` + 1 of them (so that an
    oversized file is detected without reading it all)."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0))
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(21, "not a regular file")
        chunks, total = [], 0
        while total <= cap:
            b = os.read(fd, min(1 << 20, cap + 1 - total))
            if not b:
                break
            chunks.append(b)
            total += len(b)
        return b"".join(chunks)
    finally:
        os.close(fd)


def read_bundle(bundle: Bundle) -> Submission:
    """Read every file of ``bundle`` (capped); problems become part of the submission, never raised."""
    problems: list[tuple[str, str, str]] = []

    def read(path: Path, cap: int, what: str) -> bytes | None:
        try:
            data = read_capped(path, cap)
        except OSError as exc:
            problems.append(("readable", f"cannot read {path.name}: {exc.strerror or exc}",
                             "hand in a plain file (not a link or a folder) that you can open"))
            return None
        if len(data) > cap:
            problems.append(("size", f"{path.name} is over the {cap >> 20} MB limit for {what}",
                             "hand in only the exported network / the notebook, without data or checkpoints"))
            return None
        return data

    model = notebook = None
    notes = list(bundle.notes)
    if bundle.model is not None:
        data = read(bundle.model, MAX_MODEL_BYTES, "models")
        if data is not None:
            try:
                inlined = inline_external_data(data, bundle.model.name, sidecars=dict(bundle.sidecars))
            except ExternalDataError as exc:
                problems.append(("no_external_data", exc.message, exc.hint))
                inlined = None
            if inlined is not None and inlined is not data:
                notes.append(f"{bundle.model.name}: its weights were read from the file it names beside it "
                             "(torch's default export; a file of this submission) and graded as one model")
            data = inlined
        model = NamedBytes(bundle.model.name, data) if data is not None else None
    if bundle.notebook is not None:
        data = read(bundle.notebook, MAX_NOTEBOOK_BYTES, "notebooks")
        notebook = NamedBytes(bundle.notebook.name, data) if data is not None else None
    weights = []
    for w in bundle.weights:
        data = read(w, MAX_WEIGHT_BYTES, "weights")
        if data is not None:
            weights.append(NamedBytes(w.name, data))
    return Submission(student=bundle.student, label=bundle.label, model=model, notebook=notebook,
                      weights=tuple(weights), notes=tuple(notes), problems=tuple(problems))


def submission_from_bytes(name: str, data: bytes, *, student: str = "", label: str | None = None) -> Submission:
    """A one-file submission (an upload): a model or a notebook by its suffix, a model otherwise."""
    item = NamedBytes(name, data)
    if kind_of(name) == "notebook":
        return Submission(student=student, label=label or name, notebook=item)
    return Submission(student=student, label=label or name, model=item)


# --- torch's external-data sidecar --------------------------------------------------------------------
_EXPORT_HINT = ("export into one file: torch.onnx.export(..., external_data=False), or hand in model.onnx "
                "together with the model.onnx.data file torch wrote beside it")


def inline_external_data(data: bytes, model_name: str, *, sidecars: Mapping[str, Path]) -> bytes:
    """``data`` with the tensors kept in external-data files inlined: each file must be one of
    ``sidecars`` (the same student's files, by the name the student gave them).

    Returns ``data`` unchanged when no tensor uses external data. Raises :class:`ExternalDataError`
    (the student's fault) for a location that is not a plain file name, a name that is not one of
    the student's files (nothing is opened then), a link or anything but a regular file, a file
    over the cap, or an offset/length outside the file.
    """
    if b"location" not in data:  # cheap: external data entries carry the key "location"
        return data
    import onnx
    from google.protobuf.message import DecodeError

    from grader.errors import ModelLoadError
    from grader.submission.onnx_model import scan_structure

    try:
        scan_structure(data)  # a structure bomb is never parsed here; the checks refuse it
        proto = onnx.load_from_string(data)
    except ModelLoadError:
        return data
    except (DecodeError, RuntimeError, ValueError, TypeError):
        return data  # not parseable: the checks will say so
    from grader.submission.onnx_model import iter_tensors

    external = [t for t in iter_tensors(proto) if t.data_location == onnx.TensorProto.EXTERNAL]
    if not external:
        return data
    cache: dict[str, bytes] = {}
    for tensor in external:
        info = {e.key: e.value for e in tensor.external_data}
        location = info.get("location", "")
        if location not in cache:
            cache[location] = _read_sidecar(tensor.name, location, model_name, sidecars,
                                            room=MAX_MODEL_BYTES - len(data) - sum(map(len, cache.values())))
        _inline_tensor(tensor, info, location, cache[location])
    return proto.SerializeToString()


def _read_sidecar(tensor: str, location: str, model_name: str, sidecars: Mapping[str, Path], *, room: int) -> bytes:
    """The bytes of the student's own file ``location`` (at most ``room`` of them), or ExternalDataError."""
    if not location or "/" in location or "\\" in location or location in (".", "..") or "\x00" in location:
        raise ExternalDataError(f"tensor {tensor[:80]!r} keeps its data in {location[:80]!r}, which is not "
                                "a file name beside the model", _EXPORT_HINT)
    path = dict(sidecars).get(location)
    if path is None:  # never opened: only the student's own files are read
        raise ExternalDataError(
            f"the model keeps its weights in {location[:80]}, which is not one of this submission's files (only "
            f"the same student's files are read: in the student's own folder, or named like the model)",
            f"hand in {location[:80]} with {model_name}, in the same folder or under the model's name "
            f"({model_name}.data); or {_EXPORT_HINT}")
    try:
        blob = read_capped(path, max(room, 0))
    except OSError as exc:
        raise ExternalDataError(f"the model keeps its weights in {location[:80]}, which cannot be read "
                                f"({'a link or not a regular file' if exc.errno in (20, 21, 40) else exc.strerror})",
                                "hand in the file itself, not a link: " + _EXPORT_HINT) from None
    if len(blob) > room:
        raise ExternalDataError(f"the model and {location[:80]} are over the {MAX_MODEL_BYTES >> 20} MB limit",
                                "a policy network needs far less: export only the network")
    return blob


def _inline_tensor(tensor, info: dict[str, str], location: str, blob: bytes) -> None:
    """Put ``blob[offset:offset+length]`` into ``tensor`` as its raw data."""
    import onnx

    try:
        offset = int(info.get("offset", 0))
        length = int(info["length"]) if "length" in info else len(blob) - offset
    except ValueError:
        raise ExternalDataError(f"tensor {tensor.name[:80]!r} has a malformed offset or length", _EXPORT_HINT) from None
    if offset < 0 or length < 0 or offset + length > len(blob):
        raise ExternalDataError(f"tensor {tensor.name[:80]!r} points outside {location[:80]}", _EXPORT_HINT)
    tensor.raw_data = blob[offset: offset + length]
    del tensor.external_data[:]
    tensor.data_location = onnx.TensorProto.DEFAULT
