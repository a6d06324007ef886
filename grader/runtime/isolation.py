"""How a worker process is isolated: bubblewrap where it works, else the weaker fallback, and the
command line that starts a worker in either (:func:`worker_command`).

The isolation primitives shared with the notebook sandbox are in :mod:`grader.runtime.bwrap`.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass

from grader import limits as L
from grader.errors import SetupError
from grader.limits import WorkerLimits
from grader.resources import source_root


@dataclass(frozen=True)
class Isolation:
    mode: str  # "bwrap" | "fallback"
    warnings: tuple[str, ...] = ()
    verified: bool = True  # False: bwrap is tried without the probe; the first worker's "ready" proves it
    tmpfs_size: bool = True  # bwrap takes --size (0.8 and later)
    uid: int | None = None  # fallback: the uid workers run as (65534 when the grader is root), None: the grader's


def isolation(mode: str | None = None, *, probe: bool = True) -> Isolation:
    """bubblewrap when it works (probed once, by the notebook sandbox's probe), else the fallback.

    ``mode`` (or ``$GRADER_SANDBOX``): ``auto`` (default), ``bwrap`` (required: a
    :class:`~grader.errors.SetupError` when unusable) or ``fallback``. ``probe=False`` skips the
    probe (a whole interpreter started in bubblewrap) where bwrap is installed: the engine's
    workers are then the probe, each one says its uid when ready, and a worker that cannot start
    makes the engine run the real probe and fall back (:meth:`Engine._ensure_ready`)."""
    import shutil

    from grader.runtime.bwrap import bwrap_has_size, bwrap_status, requested_mode, unshare_net_prefix

    wanted = requested_mode(mode)
    if not probe and wanted in ("auto", "bwrap") and shutil.which("bwrap"):
        return Isolation("bwrap", verified=False)
    ok, why = bwrap_status() if wanted in ("auto", "bwrap") else (False, "the weaker sandbox was requested")
    if ok:
        return Isolation("bwrap", tmpfs_size=bwrap_has_size())
    if wanted == "bwrap":
        raise SetupError(f"the bubblewrap sandbox was required for the model workers but {why}")
    from grader.runtime.bwrap import fallback_uid

    uid = fallback_uid(str(source_root()))
    net = "cut off with `unshare --net`" if unshare_net_prefix(uid) else "NOT cut off (unshare failed)"
    who = f"as uid {uid}" if uid is not None else "as the grader's user"
    return Isolation("fallback", (
        f"the model ran without bubblewrap ({why}): {who}, with the host's files visible "
        f"(resource limits, a clean environment and an empty working folder only); network {net}",), uid=uid)


WORKER_MODULE = "grader.runtime.worker"  # the module whose main() a worker process runs
_BOOT = "import sys; sys.path.insert(0, {root!r}); from {module} import main; main()"
_ENV = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
        "OPENBLAS_NUM_THREADS": "1", "PYTHONHASHSEED": "0", "SDL_AUDIODRIVER": "dummy"}
INSIDE_WORKDIR = "/tmp/work"  # the worker's empty working folder inside bubblewrap (a tmpfs)


def worker_command(iso: Isolation, fd: int, workdir: str | None, limits: WorkerLimits, *,
                   module: str = WORKER_MODULE) -> tuple[list[str], dict[str, str], str]:
    """The argv, environment and working folder of a worker process talking over ``fd``: in
    bubblewrap (the package read-only, a tmpfs bounded in bytes and files mounted on the empty folder
    ``workdir``, uid nobody, no network) or, in the fallback, in ``workdir`` (its own folders for
    ``work`` and ``home``, uid 65534 when :attr:`Isolation.uid` says so) with the network cut off
    where ``unshare`` works. ``module`` is the module whose ``main()`` it runs."""
    import dataclasses
    import json

    root = str(source_root())
    boot = [sys.executable, "-I", "-c", _BOOT.format(root=root, module=module), str(fd),
            json.dumps(dataclasses.asdict(limits))]
    if iso.mode == "bwrap":
        from grader.runtime.bwrap import NOBODY, SEAL, Writable, bwrap_base, python_roots, writable_places

        if workdir is None:
            raise ValueError("the bubblewrap sandbox needs an empty folder to mount its scratch on")
        places = writable_places(["/tmp", "/dev/shm"], size_bytes=L.WORKER_TMPFS_BYTES, files=L.WORKER_TMPFS_FILES,
                                 mountpoint=workdir)
        if places is None:  # a bubblewrap without --size: plain tmpfs (what the worker writes is the grader's)
            places = Writable(binds={d: ["--tmpfs", d] for d in ("/tmp", "/dev/shm")})
        cmd = places.prefix + bwrap_base(places.binds["/tmp"], shm=places.binds["/dev/shm"])
        pkg = os.path.join(root, "grader")
        if not any(pkg == r or pkg.startswith(r + "/") for r in python_roots()):
            cmd += ["--ro-bind", pkg, pkg]  # only the package: not the checkout's rubrics or tests
        cmd += ["--dir", INSIDE_WORKDIR, "--dir", "/tmp/home", *SEAL, "--chdir", INSIDE_WORKDIR,
                "--uid", str(NOBODY), "--gid", str(NOBODY), "--clearenv"]
        env = dict(_ENV, HOME="/tmp/home", TMPDIR="/tmp", GRADER_WORKER_MODE="bwrap")
        for k, v in env.items():
            cmd += ["--setenv", k, v]
        return cmd + ["--", *boot], {"PATH": os.environ.get("PATH", "/usr/bin:/bin")}, "/"
    from grader.runtime.bwrap import unshare_net_prefix

    if workdir is None:
        raise ValueError("the fallback sandbox needs a working folder")
    work, home = os.path.join(workdir, "work"), os.path.join(workdir, "home")
    os.makedirs(work, exist_ok=True)
    os.makedirs(home, exist_ok=True)
    if iso.uid is not None:  # the worker drops to this uid: only its own folders are writable for it
        os.chmod(workdir, 0o711)
        for d in (work, home):
            os.chown(d, iso.uid, iso.uid)
    env = dict(_ENV, HOME=home, TMPDIR=home, GRADER_WORKER_MODE="fallback")
    return unshare_net_prefix(iso.uid) + boot, env, work
