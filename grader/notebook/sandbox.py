"""Running untrusted notebook code: in bubblewrap; without it, only when explicitly allowed.

Without a usable bubblewrap the code is **not run** (:attr:`SandboxRun.refused`, with
:func:`grader.runtime.bwrap.refusal` saying what to install), unless the weaker sandbox is asked for
(``GRADER_SANDBOX=fallback``) or allowed (``GRADER_ALLOW_UNSANDBOXED=1``: bubblewrap where it
works, the fallback where not; for a machine that is itself one submission's container, such as
Gradescope's). The fallback: rlimits, ``unshare --net``, uid 65534 when root, a clean environment.

The caller prepares ``WORK/in/`` (the runner, the job, the probe inputs, this one submission's
files); the child is ``python -I -u in/runner.py in/job.json FD BLOB_FD``, unbuffered so that
whatever it prints reaches the log even when it is killed. It reports JSON lines on the pipe FD
and exported models on BLOB_FD; both, and stdout / stderr, are read with size caps and the
reports are validated by :mod:`grader.notebook.protocol`. Nothing is read back from its files.

Scratch space (the disk quota): under bubblewrap the child's working folder ``/sandbox`` and its
``/tmp`` are tmpfs of ``Limits.scratch_mb`` each (``--size``), ``in/`` is bound read-only. Without
bubblewrap (or a bubblewrap without ``--size``) the scratch is ``WORK`` on the host: each file is
capped by RLIMIT_FSIZE and the grader measures the total written every 0.2 s, stopping the child
beyond the quota. Other limits (all modes): RLIMIT_AS (memory), RLIMIT_CPU, RLIMIT_NOFILE,
RLIMIT_CORE=0, a process limit (cgroup ``pids.max`` when the cgroup is writable, and RLIMIT_NPROC,
which the kernel ignores for root), and a wall-clock timeout that kills the whole process group
(and the cgroup, and the bubblewrap pid namespace). See docs/notebooks.md for what each mode allows.
"""

from __future__ import annotations

import os
import resource
import signal
import stat
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from grader.errors import GraderBug
from grader.notebook.protocol import Blobs, Report, parse_blobs, parse_report
from grader.runtime.bwrap import (  # noqa: F401 - re-exported: the sandbox's primitives live there
    MODES,
    NOBODY,
    SANDBOX_ENV_VAR,
    SCRATCH_HELPER_FAILED,
    SEAL,
    bwrap_has_size,
    bwrap_status,
    fallback_uid,
    python_roots,
    readable_by_others,
    refusal,
    requested_mode,
    unsandboxed_allowed,
    unshare_net_prefix,
    writable_places,
)
from grader.runtime.bwrap import bwrap_base as _bwrap_base

INSIDE = "/sandbox"  # where the work folder appears inside bubblewrap


@dataclass
class Limits:
    timeout_s: float = 60.0
    memory_mb: int = 3072
    file_size_mb: int = 128
    processes: int = 64
    output_bytes: int = 1 << 20  # stdout / stderr kept for the report (each)
    flood_bytes: int = 64 << 20  # beyond this much output the child is killed
    channel_bytes: int = 4 << 20  # JSON report channel cap
    scratch_mb: int = 256  # the disk quota: the working folder, /tmp and /dev/shm together (under bubblewrap)
    scratch_files: int = 4096  # files and folders the code may create there (tmpfs nr_inodes)
    model_bytes: int = 100 << 20  # each exported ONNX file sent back
    poll_s: float = 0.2  # how often the process count and the scratch usage are checked

    @classmethod
    def from_rubric(cls, nb_rubric) -> Limits:
        """The limits of a rubric's ``[notebook]`` table (``grader.scoring.rubric.NotebookRubric``); None: defaults."""
        limits = cls()
        if nb_rubric is not None:
            limits.timeout_s = float(nb_rubric.timeout_s)
            limits.memory_mb = int(nb_rubric.memory_mb)
            limits.file_size_mb = int(nb_rubric.file_size_mb)
            limits.processes = int(nb_rubric.processes)
        return limits


@dataclass
class SandboxRun:
    mode: str  # bwrap | fallback
    report: Report = field(default_factory=Report)
    blobs: Blobs = field(default_factory=Blobs)
    stdout: bytes = b""
    stderr: bytes = b""
    stdout_total: int = 0
    stderr_total: int = 0
    channel_total: int = 0
    returncode: int | None = None
    timed_out: bool = False
    flooded: bool = False
    seconds: float = 0.0
    warnings: list[str] = field(default_factory=list)  # weaker-sandbox notes
    limits_note: str = ""
    launch_error: str | None = None
    process_limit_hit: bool = False  # the pids cgroup refused a fork
    process_limit: int = 0
    scratch: str = ""  # how the disk quota is enforced, in words
    quota_hit: bool = False  # the child wrote more than the quota (host scratch) and was stopped
    models_overflow: bool = False  # more model bytes than allowed were sent
    host_scratch: bool = False  # the scratch is a host folder the grader measures (fallback, old bubblewrap)
    refused: bool = False  # nothing ran: no usable bubblewrap, and running without it was not allowed

    @property
    def signal_name(self) -> str | None:
        rc = self.returncode
        if rc is not None and rc < 0:
            try:
                return signal.Signals(-rc).name
            except ValueError:
                return f"signal {-rc}"
        return None


# --- cgroup (process limit that also binds root) -------------------------------------------------
class _PidsCgroup:
    def __init__(self, limit: int):
        self.path: Path | None = None
        name = f"rl-grader-{os.getpid()}-{time.monotonic_ns()}"
        for base in (Path("/sys/fs/cgroup/pids"), Path("/sys/fs/cgroup")):
            try:
                if base == Path("/sys/fs/cgroup") and "pids" not in (base / "cgroup.controllers").read_text():
                    continue
                p = base / name
                p.mkdir()
                (p / "pids.max").write_text(str(limit))
                self.path = p
                return
            except OSError:
                continue

    def procs_file(self) -> str | None:
        return str(self.path / "cgroup.procs") if self.path else None

    def kill_all(self) -> None:
        if not self.path:
            return
        for _ in range(50):
            try:
                pids = [int(x) for x in (self.path / "cgroup.procs").read_text().split()]
            except OSError:
                return
            if not pids:
                return
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGKILL)
                except OSError:
                    pass
            time.sleep(0.02)

    def limit_hit(self) -> bool:
        if not self.path:
            return False
        try:
            text = (self.path / "pids.events").read_text()
        except OSError:
            return False
        return any(line.split()[:1] == ["max"] and line.split()[1] != "0" for line in text.splitlines() if line.strip())

    def remove(self) -> None:
        if not self.path:
            return
        self.kill_all()
        for _ in range(50):
            try:
                self.path.rmdir()
                return
            except OSError:
                time.sleep(0.05)


def _count_processes_of(uid: int) -> int:
    n = 0
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                if os.stat(f"/proc/{d}").st_uid == uid:
                    n += 1
            except OSError:
                pass
    return n


class _Reader(threading.Thread):
    def __init__(self, fd: int, cap: int, flood: int, on_flood, *, close: bool = False):
        super().__init__(daemon=True)
        self.fd, self.cap, self.flood, self.on_flood, self.close = fd, cap, flood, on_flood, close
        self.buf = bytearray()
        self.total = 0

    def run(self) -> None:
        try:
            while True:
                chunk = os.read(self.fd, 1 << 16)
                if not chunk:
                    break
                self.total += len(chunk)
                if len(self.buf) < self.cap:
                    self.buf += chunk[: self.cap - len(self.buf)]
                if self.total > self.flood:
                    self.on_flood()
                    break
        except OSError:
            pass
        finally:
            if self.close:
                try:
                    os.close(self.fd)
                except OSError:
                    pass


def disk_usage(root: Path, max_entries: int = 20_000) -> int | None:
    """Bytes allocated under ``root`` (symlinks not followed); None beyond ``max_entries`` entries."""
    total, seen, stack = 0, 0, [root]
    while stack:
        try:
            it = os.scandir(stack.pop())
        except OSError:
            continue
        with it:
            for entry in it:
                seen += 1
                if seen > max_entries:
                    return None
                try:
                    st = entry.stat(follow_symlinks=False)
                except OSError:
                    continue
                total += st.st_blocks * 512
                if stat.S_ISDIR(st.st_mode):
                    stack.append(Path(entry.path))
    return total


_ENV = {"PATH": "/usr/bin:/bin", "HOME": "/tmp", "LANG": "C.UTF-8", "OMP_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MPLBACKEND": "Agg", "USER": "nobody",
        "LOGNAME": "nobody", "KERAS_BACKEND": "torch", "PYTHONHASHSEED": "0", "TORCHINDUCTOR_CACHE_DIR": "/tmp/inductor"}


def _child_argv(root: str, fd: int, blob_fd: int) -> list[str]:
    return [sys.executable, "-I", "-u", f"{root}in/runner.py", f"{root}in/job.json", str(fd), str(blob_fd)]


def _bwrap_command(workdir: Path, limits: Limits, run: SandboxRun, fds: tuple[int, int]) -> list[str]:
    """bubblewrap's command line; the writable places are ``/sandbox``, ``/tmp`` and ``/dev/shm``,
    bounded together in bytes and files (:func:`grader.runtime.bwrap.writable_places`)."""
    env = dict(_ENV, GRADER_SANDBOX_MODE="bwrap")
    (workdir / "scratch").mkdir(exist_ok=True)
    places = writable_places([INSIDE, "/tmp", "/dev/shm"], size_bytes=limits.scratch_mb << 20, files=limits.scratch_files,
                             mountpoint=str(workdir / "scratch"))
    prefix: list[str] = []
    if places is not None:
        prefix, tmp, shm, own = places.prefix, places.binds["/tmp"], places.binds["/dev/shm"], places.binds[INSIDE]
        run.scratch = places.note
    else:
        for name in ("tmp", "shm"):
            (workdir / name).mkdir(exist_ok=True)
        tmp, shm = ["--bind", str(workdir / "tmp"), "/tmp"], ["--bind", str(workdir / "shm"), "/dev/shm"]
        own = ["--bind", str(workdir), INSIDE]
        run.host_scratch = True
        run.scratch = f"{limits.scratch_mb} MB measured on the host (this bubblewrap has no --size)"
    scratch = [*own, "--ro-bind", str(workdir / "in"), INSIDE + "/in"]
    cmd = prefix + _bwrap_base(tmp, shm=shm) + scratch + SEAL
    cmd += ["--uid", str(NOBODY), "--gid", str(NOBODY), "--chdir", INSIDE, "--clearenv"]
    for k, v in env.items():
        cmd += ["--setenv", k, v]
    return cmd + ["--", *_child_argv("", *fds)]


def _fallback_command(workdir: Path, limits: Limits, run: SandboxRun, fds: tuple[int, int], why: str,
                      is_root: bool) -> tuple[list[str], dict, int | None]:
    env = dict(_ENV, GRADER_SANDBOX_MODE="fallback", TMPDIR=str(workdir / "tmp"), HOME=str(workdir / "tmp"))
    (workdir / "tmp").mkdir(exist_ok=True)
    drop_uid = fallback_uid() if is_root else None  # the same rule as the model workers' fallback
    prefix = unshare_net_prefix(drop_uid)
    if drop_uid is not None:
        for p in [workdir, *workdir.rglob("*")]:
            writable = p == workdir or p == workdir / "tmp"
            os.chmod(p, (0o777 if writable else 0o555) if p.is_dir() else 0o444)
    run.scratch = f"{limits.scratch_mb} MB measured on the host, files of at most {limits.file_size_mb} MB"
    weak = [f"bubblewrap is not used ({why}): the notebook's code could read files outside its folder"]
    weak.append("network: " + ("cut off with `unshare --net`" if prefix else "NOT cut off (unshare failed)"))
    if is_root and drop_uid is None:
        weak.append("the code ran as root (the Python installation is not readable by uid 65534)")
    run.warnings += weak
    return prefix + _child_argv("", *fds), env, drop_uid


def _process_limit(run: SandboxRun, limits: Limits, cg: _PidsCgroup, is_root: bool, drop_uid: int | None) -> int:
    nproc_limit = limits.processes
    if not is_root or drop_uid is not None:
        nproc_limit += _count_processes_of(drop_uid if drop_uid is not None else os.getuid())
    if cg.procs_file():
        run.limits_note = f"processes: cgroup pids.max={limits.processes}"
    elif is_root and drop_uid is None:
        run.limits_note = "processes: NOT limited (root, no writable pids cgroup; bubblewrap's pid namespace still reaps them)"
        run.warnings.append("no process-count limit: the pids cgroup is not writable and RLIMIT_NPROC does not bind root")
    else:
        run.limits_note = f"processes: RLIMIT_NPROC={nproc_limit}"
    return nproc_limit


def _preexec(limits: Limits, procs_file: str | None, nproc_limit: int, drop_uid: int | None):
    mem = limits.memory_mb << 20
    cpu = int(limits.timeout_s) + 5
    fsize = limits.file_size_mb << 20

    def preexec() -> None:  # runs in the child between fork and exec
        if procs_file:
            try:
                with open(procs_file, "w") as f:
                    f.write(str(os.getpid()))
            except OSError:
                pass
        resource.setrlimit(resource.RLIMIT_AS, (mem, mem))
        resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 2))
        resource.setrlimit(resource.RLIMIT_FSIZE, (fsize, fsize))
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        resource.setrlimit(resource.RLIMIT_NOFILE, (256, 256))
        resource.setrlimit(resource.RLIMIT_NPROC, (nproc_limit, nproc_limit))
        if drop_uid is not None:
            os.setgroups([])
            os.setgid(drop_uid)
            os.setuid(drop_uid)

    return preexec


def run_in_sandbox(workdir: Path, limits: Limits, *, mode: str | None = None) -> SandboxRun:
    """Run ``in/runner.py in/job.json FD BLOB_FD``; ``workdir/in/`` was prepared by the caller.

    When the bounded scratch's helper was remembered to work but fails now (it exits 125 before
    anything of the notebook ran, :mod:`grader.runtime.scratchns`), the memory is dropped and the
    run starts once more, with the helper probed again (:func:`grader.runtime.bwrap.forget_scratch_probe`)."""
    run = _run_once(workdir, limits, mode=mode)
    if run.mode == "bwrap" and run.returncode == SCRATCH_HELPER_FAILED and run.stderr.startswith(b"scratchns:"):
        from grader.runtime.bwrap import forget_scratch_probe

        forget_scratch_probe()
        run = _run_once(workdir, limits, mode=mode)
    return run


def _run_once(workdir: Path, limits: Limits, *, mode: str | None = None) -> SandboxRun:
    wanted = requested_mode(mode)
    ok, why = bwrap_status() if wanted in ("auto", "bwrap") else (False, "the weaker sandbox was requested")
    run = SandboxRun(mode="bwrap" if ok else "fallback", process_limit=limits.processes)
    if not ok and not (wanted == "fallback" or (wanted == "auto" and unsandboxed_allowed())):
        run.launch_error, run.refused = refusal(why, required=wanted == "bwrap"), True
        return run
    r_fd, w_fd = os.pipe()
    rb_fd, wb_fd = os.pipe()
    is_root = os.geteuid() == 0
    cg = _PidsCgroup(limits.processes)
    drop_uid, cwd = None, str(workdir)
    if run.mode == "bwrap":
        cmd, env, cwd = _bwrap_command(workdir, limits, run, (w_fd, wb_fd)), dict(_ENV), "/"
    else:
        cmd, env, drop_uid = _fallback_command(workdir, limits, run, (w_fd, wb_fd), why, is_root)
    host_scratch = run.mode == "fallback" or run.host_scratch
    nproc_limit = _process_limit(run, limits, cg, is_root, drop_uid)
    start = time.monotonic()
    try:
        proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, pass_fds=(w_fd, wb_fd),
                                preexec_fn=_preexec(limits, cg.procs_file(), nproc_limit, drop_uid), start_new_session=True)
    except OSError as exc:
        for fd in (r_fd, w_fd, rb_fd, wb_fd):
            os.close(fd)
        cg.remove()
        run.launch_error = f"could not start the sandbox: {exc}"
        return run
    os.close(w_fd)
    os.close(wb_fd)
    _supervise(proc, run, limits, cg, (r_fd, rb_fd), workdir if host_scratch else None, start)
    return run


def _supervise(proc: subprocess.Popen, run: SandboxRun, limits: Limits, cg: _PidsCgroup, fds: tuple[int, int],
               host_scratch: Path | None, start: float) -> None:
    """Wait for the child under the limits, collect its outputs into ``run``."""

    def kill() -> None:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except OSError:
            pass
        cg.kill_all()

    def flood() -> None:
        run.flooded = True
        kill()

    def models_overflow() -> None:
        run.models_overflow = True
        kill()

    stdout, stderr = proc.stdout, proc.stderr
    if stdout is None or stderr is None:
        raise GraderBug("the notebook sandbox was started without its output pipes")
    blob_cap = 2 * (limits.model_bytes + 4096)
    readers = [_Reader(stdout.fileno(), limits.output_bytes, limits.flood_bytes, flood),
               _Reader(stderr.fileno(), limits.output_bytes, limits.flood_bytes, flood),
               _Reader(fds[0], limits.channel_bytes, limits.channel_bytes * 4, flood, close=True),
               _Reader(fds[1], blob_cap, blob_cap, models_overflow, close=True)]
    for t in readers:
        t.start()
    baseline = disk_usage(host_scratch) if host_scratch else 0
    deadline = start + limits.timeout_s
    while True:
        try:
            proc.wait(timeout=limits.poll_s)
            break
        except subprocess.TimeoutExpired:
            pass
        if cg.limit_hit():  # a fork bomb: stop it now rather than at the wall timeout
            run.process_limit_hit = True
            break
        if host_scratch is not None and _over_quota(host_scratch, baseline or 0, limits):
            run.quota_hit = True
            break
        if time.monotonic() > deadline:
            run.timed_out = True
            break
    kill()  # the child if a limit stopped it, and leftovers (a fork that outlived the main process)
    proc.wait()
    for t in readers:
        t.join(timeout=5)
    if not any(t.is_alive() for t in readers[:2]):
        stdout.close()
        stderr.close()
    run.process_limit_hit = run.process_limit_hit or cg.limit_hit()
    cg.remove()
    if host_scratch is not None and not run.quota_hit:
        run.quota_hit = _over_quota(host_scratch, baseline or 0, limits)
    run.seconds = time.monotonic() - start
    run.returncode = proc.returncode
    run.stdout, run.stderr = bytes(readers[0].buf), bytes(readers[1].buf)
    run.stdout_total, run.stderr_total = readers[0].total, readers[1].total
    run.channel_total = readers[2].total
    run.report = parse_report(bytes(readers[2].buf))
    run.blobs = parse_blobs(bytes(readers[3].buf), max_bytes=limits.model_bytes)


def _over_quota(root: Path, baseline: int, limits: Limits) -> bool:
    used = disk_usage(root)
    return used is None or used - baseline > limits.scratch_mb << 20
