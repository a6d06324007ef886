"""The parent's handle on one worker process: starting it (from one long-lived thread), sending it
commands, killing it, and saying why it died."""

from __future__ import annotations

import atexit
import os
import signal
import socket
import subprocess
import tempfile
import threading
import weakref
from concurrent.futures import ThreadPoolExecutor
from multiprocessing.connection import Connection
from typing import Any

from grader.errors import EngineBug
from grader.limits import WorkerLimits
from grader.runtime.channel import encode
from grader.runtime.isolation import WORKER_MODULE, Isolation, worker_command

_launcher: ThreadPoolExecutor | None = None
_launcher_lock = threading.Lock()


def _launch(cmd: list[str], **kwargs: Any) -> subprocess.Popen:
    """Start a worker from one long-lived thread: bubblewrap's --die-with-parent (PR_SET_PDEATHSIG)
    fires when the *thread* that started it ends, and engines are used from short-lived threads."""
    global _launcher
    if threading.current_thread() is threading.main_thread():
        return subprocess.Popen(cmd, **kwargs)
    with _launcher_lock:
        if _launcher is None:
            _launcher = ThreadPoolExecutor(max_workers=1, thread_name_prefix="grader-launcher")
    return _launcher.submit(lambda: subprocess.Popen(cmd, **kwargs)).result()


_live: weakref.WeakSet[WorkerProcess] = weakref.WeakSet()


@atexit.register
def _kill_live_workers() -> None:
    for w in list(_live):
        w.kill()


INLINE_SEND_BYTES = 64 * 1024  # smaller messages fit a socket's buffer: sent without a thread


class WorkerProcess:
    """One worker process and the parent's end of its socket, its stderr kept in a temporary file.

    ``module`` is the module whose ``main()`` it runs (tests start test doubles this way)."""

    def __init__(self, iso: Isolation, limits: WorkerLimits, *, module: str = WORKER_MODULE):
        self.iso = iso
        self.ready = False
        # fallback: the worker's folder; bubblewrap: the empty folder its bounded scratch is mounted on
        self.workdir: str | None = tempfile.mkdtemp(prefix="grader-worker-")
        self.stderr = tempfile.TemporaryFile()
        parent, child = socket.socketpair()
        cmd, env, cwd = worker_command(iso, child.fileno(), self.workdir, limits, module=module)
        try:
            drop = {"user": iso.uid, "group": iso.uid, "extra_groups": []} if iso.mode == "fallback" and iso.uid is not None else {}
            self.process = _launch(cmd, env=env, cwd=cwd, pass_fds=(child.fileno(),), stdin=subprocess.DEVNULL,
                                   stdout=subprocess.DEVNULL, stderr=self.stderr, start_new_session=True, **drop)
        except OSError as exc:
            parent.close()
            raise EngineBug(f"could not start a worker process ({self.iso.mode}): {exc}") from None
        finally:
            child.close()
        self.conn = Connection(parent.detach())
        _live.add(self)

    def send(self, command: str, args: dict[str, Any]) -> None:
        self.send_encoded(encode(command, args))

    def send_encoded(self, payload: bytes) -> None:
        try:
            self.conn.send_bytes(payload)
        except OSError:
            pass  # it died: the reply's EOF says why

    def alive(self) -> bool:
        return self.process.poll() is None

    def kill(self) -> None:
        if self.process.poll() is None:
            try:
                os.killpg(self.process.pid, signal.SIGKILL)
            except OSError:
                self.process.kill()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass
        self.conn.close()
        if self.workdir:
            import shutil

            shutil.rmtree(self.workdir, ignore_errors=True)
            self.workdir = None
        _live.discard(self)

    def stderr_tail(self, n: int = 4000) -> str:
        try:
            self.stderr.seek(0, os.SEEK_END)
            size = self.stderr.tell()
            self.stderr.seek(max(0, size - n))
            return self.stderr.read().decode(errors="replace")
        except (OSError, ValueError):
            return ""

    def exit_signal(self) -> int | None:
        try:
            code = self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            return None
        if code < 0:
            return -code
        if self.iso.mode == "bwrap" and code > 128:  # bubblewrap exits 128 + the child's signal
            return code - 128
        return None

    def death_reason(self, cpu_s: float | None = None) -> str:
        sig = self.exit_signal()
        if sig == signal.SIGXCPU:
            budget = f" (its budget: {cpu_s:g} s)" if cpu_s else ""
            return f"the model used more CPU time than the grader allows{budget}: use a smaller network"
        if sig in (signal.SIGKILL, signal.SIGSEGV, signal.SIGABRT, signal.SIGBUS):
            return f"the model crashed the runtime (signal {signal.Signals(sig).name}), often by exhausting memory"
        if sig is not None:
            try:
                return f"the grading process was stopped by signal {signal.Signals(sig).name}"
            except ValueError:
                return f"the grading process was stopped by signal {sig}"
        return f"the grading process exited unexpectedly (code {self.process.returncode})"
