"""The evaluation engine: persistent sandboxed worker processes that play seeded episodes.

``Engine`` starts ``workers`` processes (``python -I``, see :mod:`grader.runtime.worker`) inside
bubblewrap where it works, else as plain processes with a visible warning (:attr:`Engine.warnings`);
it loads a model into each and spreads the seeds over them; each worker steps a pool of
environments together. Results are keyed by seed, so the per-episode returns do not depend on
the number of workers, the pool size or the order in which episodes finish.

Every command has a wall timeout of silence (a backstop) and the rubric's budgets
(:class:`grader.scoring.rubric.Budgets`): the worker times every model call (mean over a window, a hard
cap per call) and runs under RLIMIT_CPU sized from the budget; the engine stops the episodes phase
at its wall budget whatever the heartbeats say, and sums the workers' CPU time. A worker that
hangs, dies or exceeds its limits is killed and replaced. What comes back over the socket is
plain data (:func:`grader.runtime.worker.decode`), validated here; never a pickle.

Errors: :class:`EngineFailure` is the model's fault (its message is student-facing);
:class:`EngineBug` is the grader's own (it carries the worker's traceback).
"""

from __future__ import annotations

import atexit
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from pathlib import Path
from typing import Any

from grader import limits as L
from grader.runtime.channel import MalformedMessage, decode, encode
from grader.errors import GraderBug, SetupError

# Nothing here imports numpy, the task registry or the worker's module when this module is
# imported: `grade` starts its workers first, and imports those while the workers boot.
Limits = L.WorkerLimits

__all__ = ["Engine", "EngineFailure", "EngineBug", "Timeouts", "Limits", "Isolation", "isolation"]


def get_task(task: Any) -> Any:
    """:func:`grader.tasks.get_task`, imported when first needed."""
    from grader.tasks import get_task as registry_get

    return registry_get(task)


@dataclass(frozen=True)
class Timeouts:
    """Wall-clock limits, in seconds of silence from a worker (progress messages reset them).

    A backstop: the budgets (``Engine.load(..., budgets=)``) are what a model is measured against."""

    load: float = L.TIMEOUT_LOAD_S
    probe: float = L.TIMEOUT_PROBE_S
    episodes: float = L.TIMEOUT_EPISODES_S  # no episode finished and no heartbeat for this long: the model hangs
    record: float = L.TIMEOUT_RECORD_S


class EngineFailure(RuntimeError):
    """The model could not be loaded or run; ``str(exc)`` is the student-facing reason."""


class EngineBug(GraderBug):
    """The grader's own code failed inside a worker (not the model); ``traceback`` is the worker's."""

    def __init__(self, message: str, *, traceback: str = ""):
        super().__init__(message)
        self.traceback = traceback


# --- how workers are isolated ----------------------------------------------------------------------
@dataclass(frozen=True)
class Isolation:
    mode: str  # "bwrap" | "fallback"
    warnings: tuple[str, ...] = ()
    verified: bool = True  # False: bwrap is tried without the probe; the first worker's "ready" proves it
    tmpfs_size: bool = True  # bwrap takes --size (0.8 and later)


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
    net = "cut off with `unshare --net`" if unshare_net_prefix() else "NOT cut off (unshare failed)"
    return Isolation("fallback", (
        f"the model ran without bubblewrap ({why}): as the grader's user, with the host's files visible "
        f"(resource limits and an empty working folder only); network {net}",))


def _source_root() -> str:
    """The folder holding the ``grader`` package the parent runs (a checkout or site-packages)."""
    from grader.resources import source_root

    return str(source_root())


_BOOT = "import sys; sys.path.insert(0, {root!r}); from grader.runtime.worker import main; main()"
_ENV = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
        "OPENBLAS_NUM_THREADS": "1", "PYTHONHASHSEED": "0", "SDL_AUDIODRIVER": "dummy"}
INSIDE_WORKDIR = "/tmp/work"  # the worker's empty working folder inside bubblewrap (a tmpfs)


def _worker_command(iso: Isolation, fd: int, workdir: str | None, limits: Limits) -> tuple[list[str], dict[str, str], str]:
    import dataclasses
    import json

    root = _source_root()
    boot = [sys.executable, "-I", "-c", _BOOT.format(root=root), str(fd), json.dumps(dataclasses.asdict(limits))]
    if iso.mode == "bwrap":
        from grader.runtime.bwrap import NOBODY, bwrap_base, python_roots

        size = ["--size", str(L.WORKER_TMPFS_BYTES)] if iso.tmpfs_size else []
        cmd = bwrap_base([*size, "--tmpfs", "/tmp"])
        pkg = os.path.join(root, "grader")
        if not any(pkg == r or pkg.startswith(r + "/") for r in python_roots()):
            cmd += ["--ro-bind", pkg, pkg]  # only the package: not the checkout's rubrics or tests
        cmd += ["--dir", INSIDE_WORKDIR, "--dir", "/tmp/home", "--chdir", INSIDE_WORKDIR, "--uid", str(NOBODY), "--gid", str(NOBODY),
                "--clearenv"]
        env = dict(_ENV, HOME="/tmp/home", TMPDIR="/tmp", GRADER_WORKER_MODE="bwrap")
        for k, v in env.items():
            cmd += ["--setenv", k, v]
        return cmd + ["--", *boot], {"PATH": os.environ.get("PATH", "/usr/bin:/bin")}, "/"
    from grader.runtime.bwrap import unshare_net_prefix

    assert workdir is not None
    work, home = os.path.join(workdir, "work"), os.path.join(workdir, "home")
    os.makedirs(work, exist_ok=True)
    os.makedirs(home, exist_ok=True)
    env = dict(_ENV, HOME=home, TMPDIR=home, GRADER_WORKER_MODE="fallback")
    return unshare_net_prefix() + boot, env, work


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
    return _launcher.submit(subprocess.Popen, cmd, **kwargs).result()


_live: "weakref.WeakSet[_Worker]" = weakref.WeakSet()


@atexit.register
def _kill_live_workers() -> None:
    for w in list(_live):
        w.kill()


_INLINE_SEND_BYTES = 64 * 1024  # smaller messages fit a socket's buffer: sent without a thread


class _Worker:
    def __init__(self, iso: Isolation, limits: Limits):
        self.iso = iso
        self.ready = False
        self.workdir = tempfile.mkdtemp(prefix="grader-worker-") if iso.mode == "fallback" else None
        self.stderr = tempfile.TemporaryFile()
        parent, child = socket.socketpair()
        cmd, env, cwd = _worker_command(iso, child.fileno(), self.workdir, limits)
        try:
            self.process = _launch(cmd, env=env, cwd=cwd, pass_fds=(child.fileno(),), stdin=subprocess.DEVNULL,
                                   stdout=subprocess.DEVNULL, stderr=self.stderr, start_new_session=True)
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


# --- validation of what a worker sends ------------------------------------------------------------------
def _expect(cond: bool, what: str) -> None:
    if not cond:
        raise MalformedMessage(what)


def _is_num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _check_output_array(a: Any, what: str, max_rows: int) -> None:
    import numpy as np

    _expect(isinstance(a, np.ndarray) and a.ndim <= 3 and a.size <= max_rows * 4096, f"{what}: not a small array")


def _check_probe(v: Any) -> dict[str, Any]:
    _expect(isinstance(v, dict) and set(v) == {"singles", "batches", "fixed_batch_one", "output_name", "pool_size"},
            "probe: bad keys")
    _expect(isinstance(v["singles"], list) and 0 < len(v["singles"]) <= 64, "probe: singles")
    for a in v["singles"]:
        _check_output_array(a, "probe single", 1)
    _expect(isinstance(v["batches"], list) and len(v["batches"]) <= 64, "probe: batches")
    for item in v["batches"]:
        _expect(isinstance(item, list) and len(item) == 3 and type(item[0]) is int and 1 <= item[0] <= 1024
                and isinstance(item[2], str) and len(item[2]) <= 1000, "probe: batch entry")
        if item[1] is not None:
            _check_output_array(item[1], "probe batch", item[0])
    _expect(isinstance(v["fixed_batch_one"], bool) and isinstance(v["output_name"], str) and len(v["output_name"]) <= 200
            and type(v["pool_size"]) is int, "probe: fields")
    return v


def _check_text(v: Any, what: str) -> str:
    _expect(isinstance(v, str) and len(v) <= 4000, f"{what}: not a short text")
    return v


def _check_recheck(value: Any, results: dict[int, tuple[float, int]]) -> dict[str, Any] | None:
    """A worker's ``recheck`` reply, validated (None: it had no episode to check)."""
    _expect(isinstance(value, dict) and set(value) == {"seed", "decisions", "differs"}, "recheck: fields")
    if value["seed"] is None:
        return None
    differs = value["differs"]
    _expect(type(value["seed"]) is int and value["seed"] in results and type(value["decisions"]) is int
            and value["decisions"] >= 1, "recheck: seed or decisions")
    _expect(differs is None or (isinstance(differs, list) and len(differs) == 3 and all(type(x) is int for x in differs)),
            "recheck: differs")
    return {"seed": value["seed"], "decisions": value["decisions"], "differs": differs}


def _check_facts(v: Any) -> Any:
    """An episode's diagnostics: plain JSON data (no arrays, no bytes), small and shallow."""
    import json

    def plain(x: Any, depth: int) -> bool:
        if depth > L.FACTS_DEPTH:
            return False
        if isinstance(x, dict):
            return all(isinstance(k, str) and plain(y, depth + 1) for k, y in x.items())
        if isinstance(x, list):
            return all(plain(y, depth + 1) for y in x)
        return x is None or isinstance(x, (bool, int, float, str))

    _expect(isinstance(v, dict) and plain(v, 0) and len(json.dumps(v)) <= L.FACTS_BYTES, "episode: facts")
    return v


def fresh_envs(pool: int, episodes: int, n_workers: int) -> int:
    """How many environments a worker with none should build to play its share of ``episodes``:
    the pool, but no more than its share (one that plays no episode is not built).

    Each is built ready for the first seed it plays (:meth:`grader.runtime.engine.Engine.prepare` tells
    the worker its first seeds): for MsPacman its construction is that episode's seeded reset, so
    an environment that plays costs nothing extra, and a fuller batch makes each state's model call
    cheaper (the DQN: 62 us a state in pairs, 40 in fours). Measured on the default 10 MsPacman
    episodes: 4 environments a worker grade 7% faster than 2 (15 pairs), 3 no faster than 2.
    (Before environments were built for their seeds, a build cost half an episode and 2 were
    fastest.) A long-lived worker (``grade batch``, the site) keeps its environments and adds one
    per command up to the pool (``grader.runtime.worker``)."""
    share = -(-episodes // max(1, n_workers))
    return max(1, min(pool, share))


class _Dispatch:
    """Which worker plays which seed in one :meth:`Engine.evaluate`, and which one rechecks.

    Each worker starts with as many seeds as a fresh worker builds environments
    (:func:`fresh_envs`: the pool, at most its share), plus a reserve of one when there are many
    (which spares it a round trip per episode), and gets the next seed of the queue when one of
    its episodes ends; when the queue is empty every worker still waiting is told so. A worker
    never holds more seeds than it has environments (and the reserve): when each was given a
    pool's worth but built fewer, the worker whose first episodes ended first took the rest of the
    queue while the other still had seeds waiting (10 MsPacman episodes: one worker finished
    0.45 s before the other in half the runs).

    The reproducibility check (``recheck``): every worker keeps the states and actions of the
    first episode it finishes, and the first worker to finish computes that episode's decisions
    again, one state per call (``recheck`` command, :func:`grader.runtime.worker.recheck`), while the
    others play their last episodes. (Re-playing the episode instead cost a MsPacman grading a
    quarter of a second at its end: a seeded reset reloads the ROM, then every step again. Playing
    it first on one worker, the others taking its share, was slower still: 10 episodes leave too
    few seeds to rebalance.)

    The methods return the messages to send, as ``(worker, kind, args)``; ``state`` says what
    each worker is doing (``"episodes"``, ``"recheck"`` or ``"done"``)."""

    def __init__(self, seeds: list[int], n_workers: int, pool: int, *, recheck: bool):
        self.queue = deque(seeds)
        self.n, self.pool = n_workers, pool
        self.reserve = 1 if len(seeds) >= 4 * n_workers * pool else 0
        self.fresh = fresh_envs(pool, len(seeds), n_workers)
        self.recheck = recheck and pool > 1
        self.rechecking = False
        self.state: dict[int, str] = {}
        self.given: dict[int, int] = {}  # seeds each worker was given to play in its pool
        self.fed: set[int] = set()  # workers that may still be sent seeds

    def hand(self) -> dict[int, list[int]]:
        """The seeds each worker starts with, dealt in turn (the queue is left as it is)."""
        dealt = list(self.queue)[: self.n * (self.fresh + self.reserve)]
        return {i: dealt[i::self.n] for i in range(self.n)}

    def start(self) -> list[tuple[int, str, dict]]:
        first = self.hand()
        for _ in range(sum(len(v) for v in first.values())):
            self.queue.popleft()
        return [self._episodes(i, first[i]) for i in range(self.n) if first[i]]

    def freed(self, i: int) -> list[tuple[int, str, dict]]:
        """Worker ``i`` finished an episode of its pool: the next seed, or the end for everyone."""
        if i not in self.fed:
            return []
        if self.queue:
            self.given[i] += 1
            seed = self.queue.popleft()
            if self.queue:
                return [(i, "seeds", {"seeds": [seed], "end": False})]
            self.fed.discard(i)
            return [(i, "seeds", {"seeds": [seed], "end": True})] + self._end_all()
        return self._end_all()

    def finished(self, i: int, results: dict[int, tuple[float, int]]) -> list[tuple[int, str, dict]]:
        """Worker ``i`` answered its command: what it does next (nothing: it is done)."""
        was, self.state[i] = self.state[i], "done"
        if was == "episodes" and self.recheck and not self.rechecking and results and not self.alone():
            self.rechecking, self.state[i] = True, "recheck"
            return [(i, "recheck", {})]
        return []

    def alone(self) -> bool:
        """Every episode was played one state per call, as a re-run would play it."""
        return self.pool == 1 or all(k == 1 for k in self.given.values())

    def _episodes(self, i: int, seeds: list[int]) -> tuple[int, str, dict]:
        self.state[i] = "episodes"
        self.given[i] = len(seeds)
        if self.queue:
            self.fed.add(i)
        return i, "episodes", {"seeds": seeds, "envs": min(self.pool, len(seeds) + len(self.queue)), "more": bool(self.queue),
                               "fresh_envs": self.fresh, "trace": self.recheck}

    def _end_all(self) -> list[tuple[int, str, dict]]:
        out = [(j, "seeds", {"seeds": [], "end": True}) for j in sorted(self.fed)]
        self.fed.clear()
        return out


class Engine:
    """A set of worker processes; use as a context manager, or call :meth:`close`.

    ``sandbox``: ``auto`` | ``bwrap`` | ``fallback`` (default ``$GRADER_SANDBOX`` or auto).
    :attr:`warnings` says when the model workers are not in bubblewrap (copy it into the result).
    """

    def __init__(self, workers: int = 1, *, limits: Limits | None = None, timeouts: Timeouts | None = None,
                 sandbox: str | None = None):
        if workers < 1:
            raise ValueError("workers must be at least 1")
        self.n_workers = workers
        self.limits = limits or Limits()
        self.timeouts = timeouts or Timeouts()
        self._sandbox = sandbox
        self.isolation = isolation(sandbox, probe=False)
        self.warnings: list[str] = list(self.isolation.warnings)
        self.stats: dict[str, float] = {}  # of the last evaluate(): calls, call_s, cpu_s, wall_s
        self._workers: list[_Worker] = [_Worker(self.isolation, self.limits) for _ in range(workers)]
        self._loaded: dict[str, Any] | None = None
        self._budgets: Any = None
        self.last_recheck: dict[str, Any] | None = None  # of the last evaluate(recheck=True)
        self.played_alone = False  # the last evaluate() gave each worker one episode: all at batch 1

    def resize(self, workers: int) -> None:
        """Keep ``workers`` workers, before a model is loaded: the extra ones are stopped, missing
        ones started. (``grade`` starts the default number first and sizes them once its command
        line is read.)"""
        if workers < 1:
            raise ValueError("workers must be at least 1")
        if self._loaded is not None:
            raise RuntimeError("resize() is for an engine without a model")
        while len(self._workers) > workers:
            self._workers.pop().kill()
        while len(self._workers) < workers:
            self._workers.append(_Worker(self.isolation, self.limits))
        self.n_workers = workers

    @property
    def sandbox_mode(self) -> str:
        return self.isolation.mode

    def __enter__(self) -> "Engine":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Stop the workers. They hold nothing worth a clean exit (the videos came back as bytes):
        each is told ``close`` and then killed at once, instead of waiting for its interpreter's
        teardown (onnxruntime's takes ~0.1 s)."""
        for w in self._workers:
            if w.alive():
                w.send("close", {})
        for w in self._workers:
            w.kill()
        self._workers = []

    # -- plumbing ------------------------------------------------------------------------------
    def _replace(self, index: int) -> None:
        self._workers[index].kill()
        self._workers[index] = _Worker(self.isolation, self.limits)

    def _fail_all(self, indices: Sequence[int], reason: str) -> EngineFailure:
        for i in indices:
            self._replace(i)
        self._loaded = None
        return EngineFailure(reason)

    def _bug_all(self, indices: Sequence[int], message: str, tb: str = "") -> EngineBug:
        for i in indices:
            self._replace(i)
        self._loaded = None
        return EngineBug(f"the grader failed inside its worker: {message}", traceback=tb)

    @staticmethod
    def _broadcast(workers: Sequence[_Worker], command: str, args: dict[str, Any]) -> None:
        """Send the same command to every worker without one busy worker holding up the others.

        A message larger than a socket's buffer (a model of a few MB) blocks its sender until the
        worker reads it, and a worker reads only between its own steps (building an environment,
        say). Sent one after the other, the second worker would get the model only after the
        first had finished what it was doing; so a large message goes out on one thread per
        worker, all at once. The threads end when their worker has read the message or died; the
        caller's :meth:`_gather` waits for the replies, with its timeouts, as for any command."""
        payload = encode(command, args)
        if len(payload) <= _INLINE_SEND_BYTES or len(workers) < 2:
            for w in workers:
                w.send_encoded(payload)
            return
        for w in workers:
            threading.Thread(target=w.send_encoded, args=(payload,), name="grader-send", daemon=True).start()

    def _gather(
        self,
        indices: Sequence[int],
        *,
        silence_s: float,
        deadline: float | None = None,
        on_deadline: Callable[[], str] = lambda: "the model ran past its time budget",
        on_message: Callable[[int, str, Any], None] = lambda i, kind, value: None,
        on_ok: Callable[[int, Any], bool] | None = None,
        cpu_s: float | None = None,
    ) -> list[Any]:
        """Wait for an ("ok", value) from each worker in ``indices``; raise EngineFailure/EngineBug otherwise.

        ``on_ok(i, value)`` returning True keeps waiting on worker ``i`` (it was given another command)."""
        waiting = {self._workers[i].conn: i for i in indices}
        values: dict[int, Any] = {}
        while waiting:
            timeout = silence_s
            if deadline is not None:
                left = deadline - time.monotonic()
                if left <= 0:  # checked before reading: a stream of progress messages cannot push it back
                    raise self._fail_all(indices, on_deadline())
                timeout = min(timeout, left)
            ready = wait(list(waiting), timeout=timeout)
            if not ready:
                if deadline is not None and time.monotonic() >= deadline:
                    raise self._fail_all(indices, on_deadline())
                raise self._fail_all(indices, f"the model did not answer within {silence_s:.0f} s (it hangs or is far too slow)")
            for conn in ready:
                i = waiting[conn]
                w = self._workers[i]
                try:
                    raw = conn.recv_bytes(L.CHANNEL_FROM_WORKER_BYTES)
                except (EOFError, OSError) as exc:
                    if not w.ready:
                        tail = w.stderr_tail()
                        raise self._bug_all(indices, f"the worker process did not start ({w.death_reason()})", tail) from None
                    if isinstance(exc, OSError) and w.alive():
                        raise self._fail_all(indices, "the grading process sent a message over the size limit") from None
                    raise self._fail_all(indices, w.death_reason(cpu_s)) from None
                try:
                    kind, value = decode(raw, max_bytes=L.CHANNEL_FROM_WORKER_BYTES)
                    if kind == "ready":
                        self._check_ready(w, value)
                    elif kind == "ok":
                        if on_ok is not None and on_ok(i, value):
                            continue
                        values[i] = value
                        del waiting[conn]
                    elif kind == "fail":
                        raise self._fail_all(indices, _check_text(value, "fail"))
                    elif kind == "bug":
                        _expect(isinstance(value, dict) and isinstance(value.get("message"), str)
                                and isinstance(value.get("traceback"), str), "bug: fields")
                        raise self._bug_all(indices, value["message"][:1000], value["traceback"][-20_000:])
                    elif kind in ("episode", "alive"):
                        on_message(i, kind, value)
                    else:
                        raise MalformedMessage(f"unknown reply kind {kind[:32]!r}")
                except MalformedMessage as exc:
                    raise self._fail_all(indices, f"the grading process sent a malformed reply, which was refused ({exc})") from None
        return [values[i] for i in indices]

    def _check_ready(self, w: _Worker, value: Any) -> None:
        _expect(isinstance(value, dict) and type(value.get("uid")) is int, "ready: fields")
        if self.isolation.mode == "bwrap":
            from grader.runtime.bwrap import NOBODY

            _expect(value["uid"] == NOBODY and value.get("mode") == "bwrap", "ready: not in the sandbox")
        w.ready = True

    def _ensure_ready(self) -> None:
        """Wait until every worker has said ``ready`` (it started in its sandbox).

        With the probe skipped (:func:`isolation` with ``probe=False``), a worker that cannot start
        makes the engine run the probe: without a usable bubblewrap the workers are started again
        in the fallback, with its warning (or :class:`SetupError` when bwrap was required)."""
        pending = [i for i, w in enumerate(self._workers) if not w.ready]
        if not pending:
            return
        try:
            self._wait_ready(pending)
        except EngineBug:
            if self.isolation.verified:
                raise
            self.isolation = isolation(self._sandbox)  # the real probe: SetupError if bwrap was required
            self.warnings[:] = list(self.isolation.warnings)
            for i in range(len(self._workers)):
                self._replace(i)
            self._wait_ready(range(len(self._workers)))
        if not self.isolation.verified:
            import dataclasses

            self.isolation = dataclasses.replace(self.isolation, verified=True)

    def _wait_ready(self, indices: Sequence[int]) -> None:
        waiting = {self._workers[i].conn: i for i in indices if not self._workers[i].ready}
        deadline = time.monotonic() + self.timeouts.load
        while waiting:
            ready = wait(list(waiting), timeout=max(0.0, deadline - time.monotonic()))
            if not ready:
                raise self._bug_all(list(indices), f"no worker process started within {self.timeouts.load:.0f} s")
            for conn in ready:
                i = waiting.pop(conn)
                w = self._workers[i]
                try:
                    kind, value = decode(conn.recv_bytes(L.CHANNEL_FROM_WORKER_BYTES), max_bytes=L.CHANNEL_FROM_WORKER_BYTES)
                    _expect(kind == "ready", "the first message is not ready")
                    self._check_ready(w, value)
                except (EOFError, OSError, MalformedMessage) as exc:
                    reason = w.death_reason() if isinstance(exc, (EOFError, OSError)) else str(exc)
                    raise self._bug_all(list(indices), f"the worker process did not start ({reason})", w.stderr_tail()) from None

    def _probe_wait(self) -> dict[str, Any]:
        budget = self._budget("probe_s")
        return {"silence_s": min(self.timeouts.probe, budget), "cpu_s": budget, "deadline": time.monotonic() + budget,
                "on_deadline": lambda: f"the model's test calls took longer than their {budget:g} s budget"}

    def _budget(self, name: str) -> float:
        if self._budgets is None:
            from grader.scoring.rubric import Budgets

            self._budgets = Budgets()
        return float(getattr(self._budgets, name))

    # -- commands ------------------------------------------------------------------------------
    def load(self, model: bytes | None, *, task: str, device: str = "cpu", budgets: Any = None,
             episodes: int | None = None) -> None:
        """Load an ONNX model (or ``None`` for the random policy) into every worker.

        ``budgets`` (a :class:`grader.scoring.rubric.Budgets`, e.g. ``rubric.budgets``; default: the
        defaults of :mod:`grader.limits`) bounds every later command on this model. ``episodes``
        (how many the next :meth:`evaluate` plays) lets each worker build its environments right
        after the session, while the first worker runs the probe."""
        from grader.scoring.rubric import Budgets

        self._ensure_ready()
        self._budgets = budgets if budgets is not None else Budgets()
        for i, w in enumerate(self._workers):
            if not w.alive():
                self._replace(i)
        b = self._budgets
        spec = get_task(task)
        prepare = fresh_envs(spec.pool_size, int(episodes), self.n_workers) if episodes else 0
        args = {"model": model, "task": spec.name, "device": device, "cpu_s": float(b.load_s) + 5, "prepare": prepare,
                "budget": {"decision_s": float(b.decision_s), "window": int(b.decision_window), "call_max_s": float(b.call_max_s)}}
        self._broadcast(self._workers, "load", args)
        silence = min(self.timeouts.load, float(b.load_s))
        replies = self._gather(range(len(self._workers)), silence_s=silence, cpu_s=float(b.load_s),
                               deadline=time.monotonic() + float(b.load_s),
                               on_deadline=lambda: f"creating the session took longer than its {float(b.load_s):g} s budget")
        for r in replies:
            try:
                _expect(isinstance(r, dict) and isinstance(r.get("fixed_batch_one"), bool), "load: fields")
            except MalformedMessage as exc:
                raise self._fail_all(range(len(self._workers)), f"the grading process sent a malformed reply ({exc})") from None
        self._loaded = {"task": args["task"], "device": device, "fixed_batch_one": replies[0]["fixed_batch_one"]}

    def prepare(self, task: str, *, episodes: int | None = None, seeds: Sequence[int] | None = None) -> None:
        """Non-blocking: have the workers build the environments of ``task`` (for ``episodes``
        episodes, or the episodes of ``seeds``) and the first worker its probe states, as soon as
        they are up and while this process goes on (e.g. with the static checks). With ``seeds``
        (those the next :meth:`evaluate` plays), each worker is told the seeds it will start with,
        and builds each environment ready for its first one (:class:`grader.runtime.worker.EnvPool`).
        Nothing is waited for; a failure shows in the next command's reply."""
        spec = get_task(task)
        if seeds is not None:
            episodes = len(seeds)
        n = fresh_envs(spec.pool_size, int(episodes), self.n_workers) if episodes else 1
        first = _Dispatch([int(s) for s in seeds], self.n_workers, spec.pool_size, recheck=False).hand() if seeds else {}
        for k, w in enumerate(self._workers):
            if w.alive():
                w.send("prepare", {"task": spec.name, "envs": n, "probe": k == 0, "seeds": first.get(k, []),
                                   "cpu_s": self._budget("probe_s") + 5})

    def probe(self, *, pool_size: int | None = None) -> dict[str, Any]:
        """Raw outputs on the probe states, one by one and at every batch size 1..pool_size (the
        task's pool size by default) and a few more; the keyword arguments of
        :class:`grader.submission.checks.Probe`."""
        self._require_loaded()
        pool = pool_size or get_task(self._loaded["task"]).pool_size
        self._workers[0].send("probe", {"pool_size": int(pool), "cpu_s": self._budget("probe_s") + 5})
        raw = self._gather([0], **self._probe_wait())[0]
        try:
            return _check_probe(raw)
        except MalformedMessage as exc:
            raise self._fail_all([0], f"the grading process sent a malformed reply ({exc})") from None

    def evaluate(
        self,
        seeds: Sequence[int],
        *,
        pool_size: int | None = None,
        on_episode: Callable[[int, float, int], None] = lambda seed, ret, length: None,
        diagnostics: bool = True,
        recheck: bool = False,
        on_idle: Callable[[], None] = lambda: None,
    ) -> dict[int, tuple[float, int]]:
        """Play one episode per seed; returns ``{seed: (return, length)}``.

        With ``diagnostics`` the same play collects each episode's facts (the actions, the
        policy's confidence, the task's tracker: small plain data, validated here), kept in
        :attr:`facts` as ``{seed: facts}`` for :meth:`grader.tasks.Task.diagnose`; the returns are
        identical either way.

        ``pool_size`` (default: the task's) environments are stepped together per worker, so the
        model sees batches of 1..pool_size states; ``pool_size=1`` re-runs state by state (see
        :meth:`rerun`). Seeds are handed out as workers free up (:class:`_Dispatch`), so no worker
        idles while another still has seeds waiting. The whole call is bounded by the budgets'
        ``episodes_wall_s`` (whatever the heartbeats) and ``episodes_cpu_s``; the mean and
        maximum time of a model call by ``decision_s`` / ``call_max_s`` (measured in the worker).

        ``recheck``: the decisions of one episode are also computed again alone, one state per
        call, while the other workers finish (see :class:`_Dispatch`); the outcome is in
        :attr:`last_recheck` (``{"seed", "decisions", "differs"}``, see :func:`grader.runtime.worker.recheck`;
        judge it with :func:`grader.submission.checks.check_recheck`). When each worker played a single
        episode (:attr:`played_alone`), every episode already ran one state per call, exactly as a
        re-run would: there is nothing to check and :attr:`last_recheck` stays None.

        ``on_idle()`` is called once, the first time a worker has nothing left to do while another
        still plays: a processor is free until the last episode ends (the pipeline loads there
        what its outputs need)."""
        self._require_loaded()
        task = self._loaded["task"]
        seeds = [int(s) for s in seeds]
        pool = int(pool_size or get_task(task).pool_size)
        wall_s, cpu_s = self._budget("episodes_wall_s"), self._budget("episodes_cpu_s")
        plan = _Dispatch(seeds, self.n_workers, pool, recheck=recheck)
        base = {"task": task, "pool_size": pool, "cpu_s": cpu_s, "diagnostics": bool(diagnostics)}
        t0 = time.monotonic()

        def send(messages: list[tuple[int, str, dict]]) -> None:
            for i, kind, args in messages:
                self._workers[i].send(kind, {**base, **args} if kind != "seeds" else args)

        started = plan.start()
        busy = sorted({i for i, _, _ in started})
        send(started)
        expected = set(seeds)
        results: dict[int, tuple[float, int]] = {}
        self.facts: dict[int, Any] = {}
        progress: dict[int, dict] = {}
        stats: dict[int, dict] = {}
        self.last_recheck = None
        t_done = [t0]
        idle_called = [False]

        def on_message(i: int, kind: str, value: Any) -> None:
            if kind == "episode":
                _expect(isinstance(value, list) and len(value) in (3, 4) and type(value[0]) is int and value[0] in expected
                        and _is_num(value[1]) and type(value[2]) is int and value[2] >= 0, "episode: fields")
                seed, ret, length = value[:3]
                _expect(plan.state.get(i) == "episodes", "episode: not while playing episodes")
                if len(value) == 4:
                    self.facts[seed] = _check_facts(value[3])
                results[seed] = (float(ret), length)
                on_episode(seed, float(ret), length)
                send(plan.freed(i))
            else:
                _expect(isinstance(value, dict) and all(_is_num(x) for x in value.values()), "alive: fields")
                if plan.state.get(i) == "episodes":
                    progress[i] = value

        def on_ok(i: int, value: Any) -> bool:
            if plan.state[i] == "recheck":
                self.last_recheck = _check_recheck(value, results)
            else:
                _expect(isinstance(value, dict) and all(_is_num(value.get(k)) for k in ("calls", "call_s", "cpu_s", "wall_s")),
                        "episodes: stats")
                stats[i] = value
                t_done[0] = time.monotonic()
            send(plan.finished(i, results))
            if plan.state[i] != "done":
                return True  # it was given the recheck
            if not idle_called[0] and any(s != "done" for s in plan.state.values()):
                idle_called[0] = True
                on_idle()
            return False

        def on_deadline() -> str:
            calls = sum(p.get("calls", 0) for p in progress.values())
            call_s = sum(p.get("call_s", 0.0) for p in progress.values())
            speed = (f"; the model took {call_s / calls:.2f} s per decision (mean of {calls:g} call{'s' * (calls > 1)})"
                     if calls else "")
            return (f"the episodes took longer than the {wall_s:g} s wall-time budget ({len(results)} of {len(seeds)} "
                    f"episodes finished{speed}): use a smaller network")

        try:
            self._gather(busy, silence_s=self.timeouts.episodes, deadline=t0 + wall_s, on_deadline=on_deadline,
                         on_message=on_message, on_ok=on_ok, cpu_s=cpu_s)
        except MalformedMessage as exc:
            raise self._fail_all(busy, f"the grading process sent a malformed reply ({exc})") from None
        self.stats = {k: round(sum(float(r[k]) for r in stats.values()), 4) for k in ("calls", "call_s", "cpu_s")}
        self.stats["calls"] = int(self.stats["calls"])
        self.stats["wall_s"] = round(t_done[0] - t0, 4)
        if self.stats["cpu_s"] > cpu_s:
            raise EngineFailure(f"the episodes used {self.stats['cpu_s']:.1f} s of CPU time; the budget is {cpu_s:g} s: "
                                "use a smaller network")
        missing = expected - set(results)
        if missing:
            raise EngineBug(f"no result for seeds {sorted(missing)[:5]}")
        self.played_alone = plan.alone()
        return {s: results[s] for s in seeds}

    def rerun(self, seeds: Sequence[int]) -> dict[int, tuple[float, int]]:
        """Play ``seeds`` again with a batch of 1 (one state per model call): the scored returns
        must be reproduced exactly (compare with :func:`grader.submission.checks.check_rerun`)."""
        return self.evaluate(seeds, pool_size=1)

    def actions(self, states: Any, *, batch_sizes: Sequence[int] | None = None) -> Any:
        """The loaded policy's actions (argmax) on a batch of states, as an int64 array.

        The states go to the model in chunks whose sizes cycle through ``batch_sizes`` (default:
        every size 1..pool_size the episodes use, and 7), twice in different orders; actions that
        change with the batch size raise :class:`EngineFailure`. So a model cannot behave one way
        in episodes and another on the duplicate-detection probe set."""
        import numpy as np

        from grader.runtime.worker import probe_batch_sizes

        self._require_loaded()
        states = np.ascontiguousarray(states, dtype=np.float32)
        if batch_sizes is None:
            pool = get_task(self._loaded["task"]).pool_size
            batch_sizes = [b for b in probe_batch_sizes(pool) if b <= max(pool, 7)]
        sizes = [int(b) for b in batch_sizes]
        if not sizes or min(sizes) < 1:
            raise ValueError("batch sizes must be positive")
        self._workers[0].send("actions", {"states": states, "batch_sizes": sizes, "cpu_s": self._budget("probe_s") + 5})
        out = self._gather([0], **self._probe_wait())[0]
        if not (isinstance(out, np.ndarray) and out.dtype == np.int64 and out.shape == (len(states),)):
            raise self._fail_all([0], "the grading process sent a malformed reply (actions)")
        return out

    def record(self, seed: int, path: str) -> dict[str, Any]:
        """Replay ``seed`` with rendering and write an MP4 to ``path``; see :meth:`record_many`."""
        return self.record_many([(seed, path)])[0]

    def record_many(self, jobs: Sequence[tuple[int, str]], *,
                    on_video: Callable[[int, dict[str, Any]], None] = lambda k, info: None) -> list[dict[str, Any]]:
        """Replay each ``(seed, path)`` with rendering (a batch of 1) and write its MP4 to ``path``,
        the videos spread over the workers: each takes the next one as it finishes its own.

        The worker encodes the video in its private folder and sends the bytes; this process
        writes them and calls ``on_video(k, info)`` for job ``k`` as it arrives, so that the videos
        made before a failure are kept by a caller that stops at the failure. Returns, in the
        order of ``jobs``, ``{"return", "length", "frames"}``. Each video has the rubric's
        ``record_s`` budget (CPU, in the worker; wall, here: one budget per round of videos)."""
        self._require_loaded()
        budget = self._budget("record_s")
        indices = list(range(min(self.n_workers, len(jobs))))
        queue = list(range(len(jobs)))[::-1]
        doing: dict[int, int] = {}
        infos: dict[int, dict[str, Any]] = {}

        def send(i: int) -> bool:
            if not queue:
                return False
            k = doing[i] = queue.pop()
            self._workers[i].send("record", {"task": self._loaded["task"], "seed": int(jobs[k][0]), "cpu_s": budget + 5})
            return True

        def on_ok(i: int, info: Any) -> bool:
            if not (isinstance(info, dict) and set(info) == {"return", "length", "frames", "video"} and _is_num(info["return"])
                    and type(info["length"]) is int and type(info["frames"]) is int and isinstance(info["video"], bytes)):
                raise self._fail_all(indices, "the grading process sent a malformed reply (record)")
            k = doing.pop(i)
            Path(jobs[k][1]).write_bytes(info.pop("video"))
            info["return"] = float(info["return"])
            infos[k] = info
            on_video(k, info)
            return send(i)

        for i in indices:
            send(i)
        rounds = -(-len(jobs) // max(1, len(indices)))
        self._gather(indices, silence_s=min(self.timeouts.record, budget), deadline=time.monotonic() + budget * rounds,
                     on_deadline=lambda: f"the video re-run took longer than its {budget:g} s budget", cpu_s=budget,
                     on_ok=on_ok)
        return [infos[k] for k in range(len(jobs))]

    def info(self, paths: Sequence[str] = ()) -> list[dict[str, Any]]:
        """What each worker sees of its sandbox: uid, gid, pid, cwd and its entries, /tmp's entries,
        its network namespace, the mode, and whether each of ``paths`` exists for it (``exists``)
        (for tests and diagnostics)."""
        self._ensure_ready()
        for w in self._workers:
            w.send("info", {"paths": [str(p) for p in paths]})
        return self._gather(range(len(self._workers)), silence_s=self.timeouts.load,
                            deadline=time.monotonic() + self.timeouts.load)

    def _inject_fault(self, where: str, marker: str = "") -> None:
        """Tests only: make a grader component inside the workers fail (``probe``, ``env``), make
        the next reply a forged pickle (``pickle``) or an endless stream of heartbeats (``spam``)."""
        self._ensure_ready()
        for w in self._workers:
            w.send("_fault", {"where": where, **({"marker": marker} if marker else {})})
        self._gather(range(len(self._workers)), silence_s=self.timeouts.load)

    def _require_loaded(self) -> None:
        if self._loaded is None:
            raise RuntimeError("load a model first")
