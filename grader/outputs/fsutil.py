"""Writing output safely into folders that may be hostile.

``grade model.onnx`` writes into ``model.onnx.grading/`` beside the submission, and that folder
may have arrived with the student's files: it can hold symbolic links at the very names the
grader writes (``result.json``, a temporary file, ``network.onnx``). Every writer of the grader
therefore goes through :class:`OutputDir`:

* the folder itself must not be a symbolic link;
* a folder that exists is reused only if it is empty or was written by the grader (it holds the
  :data:`MARKER` file); its old entries are then *removed* (links are unlinked, never followed)
  before anything is written. Any other non-empty folder is refused with :class:`OutputDirError`;
* files are written to a temporary name created exclusively (``O_CREAT | O_EXCL | O_NOFOLLOW``)
  relative to the folder's file descriptor, then renamed into place: a link planted at the final
  name is replaced, never written through;
* tools that need a path (ffmpeg for the videos) get a fresh private sub-folder made with
  ``mkdir`` (which fails if anything is there) and their file is renamed into place.

:func:`atomic_write` is the one helper for writing a whole file atomically anywhere else (the
gradebook's folders, the exports, the site): same exclusive temporary file, same rename.
"""

from __future__ import annotations

import os
import shutil
import stat
import uuid
from pathlib import Path

from grader.errors import SetupError

MARKER = ".rl-grader-output"
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_CLOEXEC = getattr(os, "O_CLOEXEC", 0)


class OutputDirError(SetupError):
    """The output folder cannot be used safely; the message says why and what to do."""


def _write_exclusive(dir_fd: int | None, name: str, data: bytes, mode: int = 0o644) -> None:
    fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _NOFOLLOW | _CLOEXEC, mode, dir_fd=dir_fd)
    try:
        view = memoryview(data)
        while view:
            n = os.write(fd, view)
            view = view[n:]
    finally:
        os.close(fd)


def atomic_write(path: str | Path, data: bytes | str, *, mode: int = 0o644) -> None:
    """Write ``data`` to ``path`` atomically: an exclusive temporary file beside it, then a rename.

    A symbolic link at ``path`` is replaced by the new file, never followed.
    """
    path = Path(path)
    raw = data.encode("utf-8") if isinstance(data, str) else bytes(data)
    tmp = f".{path.name}.{uuid.uuid4().hex[:12]}.part"
    dir_fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY | _CLOEXEC)
    try:
        _write_exclusive(dir_fd, tmp, raw, mode)
        try:
            os.replace(tmp, path.name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
        except BaseException:
            os.unlink(tmp, dir_fd=dir_fd)
            raise
    finally:
        os.close(dir_fd)


def _remove_entry(dir_path: Path, name: str) -> None:
    p = dir_path / name
    st = os.lstat(p)
    if stat.S_ISDIR(st.st_mode):
        shutil.rmtree(p)  # rmtree does not follow links inside
    else:
        os.unlink(p)


class OutputDir:
    """An output folder that the grader owns for this run (see the module docstring)."""

    def __init__(self, path: str | Path, *, fresh: bool = True):
        self.path = Path(path)
        try:
            self._prepare(fresh)
        except OSError as exc:  # no permission, a read-only disk, ...: the caller's set-up, said plainly
            raise OutputDirError(f"cannot use the output folder {self.path}: {exc.strerror or exc}; "
                                 "choose another --out") from None

    def _prepare(self, fresh: bool) -> None:
        p = self.path
        try:
            st = os.lstat(p)
        except FileNotFoundError:
            p.parent.mkdir(parents=True, exist_ok=True)
            os.mkdir(p)
            st = os.lstat(p)
        if stat.S_ISLNK(st.st_mode):
            raise OutputDirError(f"the output folder {p} is a symbolic link; remove it or choose another --out")
        if not stat.S_ISDIR(st.st_mode):
            raise OutputDirError(f"the output path {p} exists and is not a folder; remove it or choose another --out")
        names = os.listdir(p)
        if names and MARKER not in names:
            raise OutputDirError(
                f"the output folder {p} holds files the grader did not write ({', '.join(sorted(names)[:3])}"
                f"{', ...' if len(names) > 3 else ''}); remove it or choose another --out")
        if fresh:
            for name in names:
                _remove_entry(p, name)
        self._dir_fd_path = p
        marker = p / MARKER
        if fresh or not os.path.lexists(marker):
            self.write_bytes(MARKER, b"written by rl-grader; the whole folder is replaced at the next grading\n")

    # -- writers ---------------------------------------------------------------------------------
    def _check_name(self, name: str) -> str:
        if not name or "/" in name or name in (".", "..") or "\x00" in name:
            raise ValueError(f"not a plain file name: {name!r}")
        return name

    def write_bytes(self, name: str, data: bytes) -> Path:
        atomic_write(self.path / self._check_name(name), data)
        return self.path / name

    def write_text(self, name: str, text: str) -> Path:
        return self.write_bytes(name, text.encode("utf-8"))

    def private_dir(self) -> Path:
        """A new sub-folder that nothing else can have prepared (``mkdir`` fails on any existing entry)."""
        d = self.path / f".tmp-{uuid.uuid4().hex[:12]}"
        os.mkdir(d, 0o700)
        return d

    def adopt(self, produced: Path, name: str) -> Path:
        """Move a file written in :meth:`private_dir` to ``name`` (a link at ``name`` is replaced)."""
        st = os.lstat(produced)
        if not stat.S_ISREG(st.st_mode):
            raise OutputDirError(f"{produced} is not a regular file")
        os.replace(produced, self.path / self._check_name(name))
        return self.path / name

    def discard(self, private: Path) -> None:
        shutil.rmtree(private, ignore_errors=True)
