"""bubblewrap and network namespaces: the isolation primitives shared by the notebook sandbox
(:mod:`grader.notebook.sandbox`) and the engine's model workers (:mod:`grader.runtime.engine`).

:func:`bwrap_status` says whether bubblewrap can start this interpreter as uid 65534 (probed once
per process); :func:`bwrap_base` is the read-only view of the system both sandboxes start from;
:func:`unshare_net_prefix` cuts the network off where bubblewrap cannot be used. Nothing here
imports numpy or pydantic: the engine starts its workers before the rest of the grader is loaded.
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
from functools import lru_cache
from pathlib import Path

SANDBOX_ENV_VAR = "GRADER_SANDBOX"  # auto (default) | bwrap | fallback
MODES = ("auto", "bwrap", "fallback")
NOBODY = 65534


def requested_mode(mode: str | None) -> str:
    mode = (mode or os.environ.get(SANDBOX_ENV_VAR) or "auto").strip().lower()
    if mode not in MODES:
        raise ValueError(f"sandbox mode must be one of {', '.join(MODES)}, not {mode!r}")
    return mode


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


def bwrap_base(tmp: list[str] | None = None) -> list[str]:
    """The read-only system view; ``tmp`` mounts /tmp (default: an unsized tmpfs, for the probe)."""
    args = ["bwrap", "--unshare-all", "--die-with-parent", "--new-session", "--hostname", "sandbox",
            "--ro-bind", "/usr", "/usr"]
    for name in ("bin", "lib", "lib32", "lib64", "sbin", "libx32"):
        p = Path("/") / name
        if p.is_symlink():
            args += ["--symlink", os.readlink(p), str(p)]
        elif p.is_dir():
            args += ["--ro-bind", str(p), str(p)]
    # The fresh /tmp comes before the interpreter's binds: a venv under /tmp must stay visible.
    args += ["--proc", "/proc", "--dev", "/dev", *(tmp or ["--tmpfs", "/tmp"])]
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
    cmd = bwrap_base() + ["--uid", str(NOBODY),
                           "--gid", str(NOBODY), "--chdir", "/tmp", "--", sys.executable, "-I", "-c", "import os; print(os.getuid())"]
    try:
        r = subprocess.run(cmd, capture_output=True, timeout=30, stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return False, f"bwrap could not start: {exc}"
    if r.returncode != 0 or r.stdout.strip() != str(NOBODY).encode():
        err = r.stderr.decode(errors="replace").strip().splitlines()[-1:] or ["?"]
        return False, f"bwrap cannot run the interpreter as uid {NOBODY}: {err[0][:200]}"
    return True, "ok"


@lru_cache(maxsize=1)
def unshare_net_prefix() -> list[str]:
    exe = shutil.which("unshare")
    if not exe:
        return []
    for prefix in (["unshare", "--net"], ["unshare", "--user", "--map-root-user", "--net"]):
        try:
            if subprocess.run(prefix + ["true"], capture_output=True, timeout=10).returncode == 0:
                return prefix
        except (OSError, subprocess.TimeoutExpired):
            pass
    return []
