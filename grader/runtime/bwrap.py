"""bubblewrap and network namespaces: the isolation primitives shared by the notebook sandbox
(:mod:`grader.notebook.sandbox`) and the engine's model workers (:mod:`grader.runtime.engine`).

:func:`bwrap_status` says whether bubblewrap can start this interpreter as uid 65534 (probed once
per process); :func:`bwrap_base` is the read-only view of the system both sandboxes start from;
:func:`writable_places` makes the only places a sandbox may write, bounded in bytes and in files;
:func:`unshare_net_prefix` cuts the network off where bubblewrap cannot be used. Nothing here
imports numpy or pydantic: the engine starts its workers before the rest of the grader is loaded.

Writable places. bubblewrap's own mounts are unbounded: its root (``/``) and ``/dev`` are tmpfs
the sandboxed user owns, and ``--tmpfs`` takes a size (``--size``) but no file count. So both
sandboxes seal them read-only (``--remount-ro /dev`` after ``/dev/shm`` is mounted, and
:data:`SEAL`, ``--remount-ro /``, after the last bind), and every place the code may write
(``/tmp``, ``/dev/shm``, the notebook's ``/sandbox``) is a folder of **one tmpfs mounted with
``size=`` and ``nr_inodes=``** by :mod:`grader.runtime.scratchns`, a small helper that runs before
bubblewrap in its own user and mount namespace (invisible to the host, gone with the sandbox).
Where that helper cannot run (no unprivileged user namespaces), each place is a ``--size`` tmpfs:
bytes bounded, the number of files not (:attr:`Writable.note` says so).
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

SANDBOX_ENV_VAR = "GRADER_SANDBOX"  # auto (default) | bwrap | fallback
ALLOW_UNSANDBOXED_ENV_VAR = "GRADER_ALLOW_UNSANDBOXED"  # 1: notebook code may run without bubblewrap
INSTALL_BWRAP = "apt-get install -y bubblewrap on Debian/Ubuntu, dnf install bubblewrap on Fedora"
MODES = ("auto", "bwrap", "fallback")
NOBODY = 65534


def requested_mode(mode: str | None) -> str:
    mode = (mode or os.environ.get(SANDBOX_ENV_VAR) or "auto").strip().lower()
    if mode not in MODES:
        raise ValueError(f"sandbox mode must be one of {', '.join(MODES)}, not {mode!r}")
    return mode


def unsandboxed_allowed() -> bool:
    """``GRADER_ALLOW_UNSANDBOXED=1``: notebook code may run in the fallback where bubblewrap is
    unusable (a machine that is itself one submission's container). Off by default."""
    return os.environ.get(ALLOW_UNSANDBOXED_ENV_VAR, "").strip().lower() in ("1", "yes", "true")


def refusal(why: str, *, required: bool = False) -> str:
    """Why a notebook's code was not run, and what the instructor can do (a set-up problem)."""
    if required:
        return f"the notebook's code was not run: the bubblewrap sandbox was required but {why}"
    return (f"the notebook's code was not run: {why}, and student code never runs unisolated by default. "
            f"Install bubblewrap ({INSTALL_BWRAP}) and grade again; only where the code may see this machine "
            f"(your own notebook on your own computer, or a container that holds one submission) set "
            f"{ALLOW_UNSANDBOXED_ENV_VAR}=1 to run it in the weaker sandbox")


def python_roots() -> list[str]:
    """Folders the interpreter needs: the venv, the base installation, the executable's folder."""
    roots = []
    for p in (sys.prefix, sys.base_prefix, sys.exec_prefix, os.path.dirname(os.path.realpath(sys.executable))):
        for q in {p, os.path.realpath(p)}:
            if os.path.isdir(q):
                roots.append(q)
    out: list[str] = []
    for r in sorted(set(roots), key=len):
        if r == "/usr" or r.startswith("/usr/"):
            continue
        if r.endswith("/bin") and os.path.dirname(r) in out:
            continue
        if not any(r == o or r.startswith(o + "/") for o in out):
            out.append(r)
    return out


def readable_by_others(path: str) -> bool:
    """True when every folder on the way to ``path`` and ``path`` itself let 'other' in (r-x)."""
    p = Path(path).resolve()
    for part in [*reversed(p.parents), p]:
        try:
            mode = part.stat().st_mode
        except OSError:
            return False
        if not mode & stat.S_IXOTH or (part == p and not mode & stat.S_IROTH):
            return False
    return True


SEAL = ["--remount-ro", "/"]  # after the last mount: bubblewrap's own root tmpfs becomes read-only


def fallback_uid(*extra_roots: str) -> int | None:
    """The uid the weaker sandbox (no bubblewrap) runs code as: 65534 when this process is root and
    that user can read the interpreter (and ``extra_roots``); None (this process's user) otherwise."""
    if os.geteuid() != 0:
        return None
    return NOBODY if all(readable_by_others(r) for r in [*python_roots(), *extra_roots]) else None


def bwrap_base(tmp: list[str] | None = None, *, shm: list[str] | None = None) -> list[str]:
    """The read-only system view; ``tmp`` mounts /tmp and ``shm`` /dev/shm (default: unsized tmpfs,
    for the probe). ``/dev`` is sealed read-only after ``shm``; the caller appends :data:`SEAL`
    after its own binds."""
    args = ["bwrap", "--unshare-all", "--die-with-parent", "--new-session", "--hostname", "sandbox",
            "--ro-bind", "/usr", "/usr"]
    for name in ("bin", "lib", "lib32", "lib64", "sbin", "libx32"):
        p = Path("/") / name
        if p.is_symlink():
            args += ["--symlink", os.readlink(p), str(p)]
        elif p.is_dir():
            args += ["--ro-bind", str(p), str(p)]
    # The fresh /tmp comes before the interpreter's binds: a venv under /tmp must stay visible.
    args += ["--proc", "/proc", "--dev", "/dev", *(shm or ["--tmpfs", "/dev/shm"]), "--remount-ro", "/dev",
             *(tmp or ["--tmpfs", "/tmp"])]
    for root in python_roots():
        args += ["--ro-bind", root, root]
    args += ["--ro-bind-try", "/etc/fonts", "/etc/fonts"]  # matplotlib's font lookup, read-only
    return args


@lru_cache(maxsize=1)
def bwrap_has_size() -> bool:
    """``--size`` (tmpfs size cap) exists from bubblewrap 0.8 on."""
    try:
        r = subprocess.run(["bwrap", "--help"], capture_output=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return b"--size" in r.stdout + r.stderr


@lru_cache(maxsize=1)
def bwrap_status() -> tuple[bool, str]:
    """(usable, reason): bwrap exists and can start this interpreter as uid 65534."""
    exe = shutil.which("bwrap")
    if not exe:
        return False, "bubblewrap (bwrap) is not installed"
    cmd = bwrap_base() + SEAL + ["--uid", str(NOBODY),
                           "--gid", str(NOBODY), "--chdir", "/tmp", "--", sys.executable, "-I", "-c", "import os; print(os.getuid())"]
    try:
        r = subprocess.run(cmd, capture_output=True, timeout=30, stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return False, f"bwrap could not start: {exc}"
    if r.returncode != 0 or r.stdout.strip() != str(NOBODY).encode():
        err = r.stderr.decode(errors="replace").strip().splitlines()[-1:] or ["?"]
        return False, f"bwrap cannot run the interpreter as uid {NOBODY}: {err[0][:200]}"
    return True, "ok"


@lru_cache(maxsize=4)
def unshare_net_prefix(uid: int | None = None) -> list[str]:
    """A command prefix that cuts the network off (an empty network namespace) for a process that
    runs as ``uid`` (None: this process's user; a root grader dropping to 65534 needs a user
    namespace for it); ``[]`` when none works here. Probed once with this interpreter, as that
    user, by absolute paths (the child's PATH is not the grader's)."""
    exe = shutil.which("unshare")
    if not exe:
        return []
    as_uid = uid if uid is not None and os.geteuid() == 0 else None
    for flags in (["--net"], ["--user", "--net"], ["--user", "--map-root-user", "--net"]):
        try:
            r = subprocess.run([exe, *flags, sys.executable, "-I", "-S", "-c", ""], capture_output=True, timeout=30,
                               stdin=subprocess.DEVNULL, user=as_uid, group=as_uid,
                               extra_groups=None if as_uid is None else [])
        except (OSError, subprocess.TimeoutExpired):
            continue
        if r.returncode == 0:
            return [exe, *flags]
    return []


# --- writable places, bounded in bytes and files ---------------------------------------------------
SCRATCH_HELPER = Path(__file__).with_name("scratchns.py")


@dataclass
class Writable:
    """How a sandbox's writable places are made: a command prefix (the helper, or nothing), the
    bubblewrap arguments of each place, and what is bounded, in words."""

    prefix: list[str] = field(default_factory=list)
    binds: dict[str, list[str]] = field(default_factory=dict)
    files_bounded: bool = False
    note: str = ""


SCRATCH_HELPER_FAILED = 125  # the helper's exit status when it cannot mount (before bubblewrap starts)


def _helper_prefix(path: str, size_bytes: int, files: int, dirs: list[str]) -> list[str]:
    return [sys.executable, "-I", "-S", str(SCRATCH_HELPER), path, str(size_bytes), str(files), ",".join(dirs), "--"]


# What decides whether the helper can mount: the kernel, the sysctls that allow or restrict
# unprivileged user namespaces, the interpreter, the helper itself and the user.
_USERNS_SYSCTLS = ("/proc/sys/kernel/unprivileged_userns_clone", "/proc/sys/user/max_user_namespaces",
                   "/proc/sys/kernel/apparmor_restrict_unprivileged_userns")


def _scratch_marker() -> Path | None:
    """The file that says a probe of the helper succeeded on this machine as it is now (a
    positive result only, in the user's cache), or None when there is no cache folder."""
    import zlib  # not hashlib: this runs before the first worker starts, and openssl's import is 10 ms

    from grader.resources import user_cache_dir

    folder = user_cache_dir("sandbox")
    if folder is None:
        return None
    parts = [*os.uname(), sys.executable, str(os.geteuid())]
    try:
        st = os.stat(SCRATCH_HELPER)
        parts += [str(st.st_size), str(st.st_mtime_ns)]
    except OSError:
        return None
    for path in _USERNS_SYSCTLS:
        try:
            parts.append(Path(path).read_text().strip())
        except OSError:
            parts.append("-")
    key = chr(0).join(parts).encode()
    return folder / f"scratch-ok-{zlib.crc32(key):08x}{zlib.adler32(key):08x}"


@lru_cache(maxsize=1)
def scratch_mounts_work() -> tuple[bool, str]:
    """(works, why not): the helper can mount a bounded tmpfs here (unprivileged user namespaces).

    A success is remembered (:func:`_scratch_marker`: for this kernel, its user-namespace sysctls,
    this interpreter, helper and user), so that a grading does not run the probe (a helper start,
    ~14 ms before the first worker can start); a failure is probed again every time, so that a
    machine that gains user namespaces gets the bounded tmpfs. When a worker then fails to start
    anyway, :func:`forget_scratch_probe` drops the memory and the engine probes again."""
    marker = _scratch_marker()
    if marker is not None and marker.is_file():
        return True, ""
    ok, why = _probe_scratch()
    if ok and marker is not None:
        try:
            marker.touch()
        except OSError:
            pass
    return ok, why


def forget_scratch_probe() -> None:
    """Probe the helper again (a worker failed to start although it was remembered to work)."""
    marker = _scratch_marker()
    if marker is not None:
        try:
            marker.unlink()
        except OSError:
            pass
    scratch_mounts_work.cache_clear()


def _probe_scratch() -> tuple[bool, str]:
    with tempfile.TemporaryDirectory(prefix="grader-scratch-probe-") as mountpoint:
        cmd = _helper_prefix(mountpoint, 1 << 20, 16, ["t"])
        try:
            r = subprocess.run(cmd + [shutil.which("true") or "/bin/true"], capture_output=True, timeout=30,
                               stdin=subprocess.DEVNULL)
        except (OSError, subprocess.TimeoutExpired) as exc:
            return False, str(exc)
    return r.returncode == 0, r.stderr.decode(errors="replace").strip()[-200:]


def _place_name(dest: str) -> str:
    return dest.strip("/").replace("/", "_") or "root"


def writable_places(places: list[str], *, size_bytes: int, files: int, mountpoint: str) -> Writable | None:
    """The writable ``places`` (``/tmp``, ``/dev/shm``, ...): folders of one tmpfs of ``size_bytes``
    and ``files`` files in all, mounted by the helper on the empty folder ``mountpoint`` (in the
    helper's own namespace: the host's folder stays empty); else a ``--size`` tmpfs each (files not
    bounded); None when bubblewrap has no ``--size`` either (the caller measures a host folder)."""
    mb = size_bytes >> 20
    ok, why = scratch_mounts_work()
    if ok:
        host = mountpoint
        names = {dest: _place_name(dest) for dest in places}
        return Writable(prefix=_helper_prefix(host, size_bytes, files, list(names.values())), files_bounded=True,
                        binds={d: ["--bind", f"{host}/{n}", d] for d, n in names.items()},
                        note=f"one tmpfs of {mb} MB and {files} files in all for {', '.join(places)}")
    if bwrap_has_size():
        return Writable(binds={d: ["--size", str(size_bytes), "--tmpfs", d] for d in places},
                        note=f"a tmpfs of {mb} MB each for {', '.join(places)}; the number of files is NOT bounded "
                             f"(a bounded tmpfs needs unprivileged user namespaces: {why or 'unavailable'})")
    return None
