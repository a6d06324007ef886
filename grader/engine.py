"""The evaluation engine: persistent sandboxed worker processes that play seeded episodes.

``Engine`` starts ``workers`` processes with ``spawn`` (see :mod:`grader.worker`), loads a model
into each, and spreads the seeds over them; each worker steps a pool of environments together.
Results are keyed by seed, so the per-episode returns do not depend on the number of workers,
the pool size or the order in which episodes finish.

Every call has a wall timeout that restarts whenever the worker reports progress; a worker that
hangs, dies or exceeds its limits is killed and replaced, and the model gets a plain message.
"""

from __future__ import annotations

import multiprocessing as mp
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from typing import Any

from grader.tasks import get_task
from grader.worker import Limits, worker_main



@dataclass(frozen=True)
class Timeouts:
    """Wall-clock limits, in seconds of silence from a worker (progress messages reset them)."""

    load: float = 60.0
    probe: float = 60.0
    episodes: float = 60.0  # no episode finished and no heartbeat for this long: the model hangs
    record: float = 600.0


class EngineFailure(RuntimeError):
    """The model could not be loaded or run; ``str(exc)`` is the student-facing reason."""


class _Worker:
    def __init__(self, limits: Limits):
        ctx = mp.get_context("spawn")
        self.conn, child = ctx.Pipe()
        self.process = ctx.Process(target=worker_main, args=(child, limits), daemon=True, name="grader-worker")
        self.process.start()
        child.close()

    def send(self, command: str, args: dict[str, Any]) -> None:
        self.conn.send((command, args))

    def alive(self) -> bool:
        return self.process.is_alive()

    def kill(self) -> None:
        if self.process.is_alive():
            self.process.kill()
        self.process.join(timeout=10)
        self.conn.close()

    def death_reason(self) -> str:
        self.process.join(timeout=5)
        code = self.process.exitcode
        if code is not None and code < 0:
            import signal

            sig = -code
            if sig == signal.SIGXCPU:
                return "the model used more CPU time than the grader allows"
            if sig in (signal.SIGKILL, signal.SIGSEGV, signal.SIGABRT, signal.SIGBUS):
                return f"the model crashed the runtime (signal {signal.Signals(sig).name}), often by exhausting memory"
            return f"the grading process was stopped by signal {signal.Signals(sig).name}"
        return f"the grading process exited unexpectedly (code {code})"


class Engine:
    """A set of worker processes; use as a context manager, or call :meth:`close`."""

    def __init__(self, workers: int = 1, *, limits: Limits | None = None, timeouts: Timeouts | None = None):
        if workers < 1:
            raise ValueError("workers must be at least 1")
        self.n_workers = workers
        self.limits = limits or Limits()
        self.timeouts = timeouts or Timeouts()
        self._workers: list[_Worker] = [_Worker(self.limits) for _ in range(workers)]
        self._loaded: dict[str, Any] | None = None

    def __enter__(self) -> "Engine":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        for w in self._workers:
            try:
                if w.alive():
                    w.send("close", {})
            except (OSError, BrokenPipeError):
                pass
        for w in self._workers:
            w.process.join(timeout=5)
            w.kill()
        self._workers = []

    # -- plumbing ------------------------------------------------------------------------------
    def _replace(self, index: int) -> None:
        self._workers[index].kill()
        self._workers[index] = _Worker(self.limits)

    def _fail_all(self, indices: Sequence[int], reason: str) -> EngineFailure:
        for i in indices:
            self._replace(i)
        self._loaded = None
        return EngineFailure(reason)

    def _gather(
        self,
        indices: Sequence[int],
        *,
        silence_s: float,
        on_message: Callable[[str, Any], None] = lambda kind, value: None,
    ) -> list[Any]:
        """Wait for an ("ok", value) from each worker in ``indices``; raise EngineFailure otherwise."""
        waiting = {self._workers[i].conn: i for i in indices}
        values: dict[int, Any] = {}
        while waiting:
            ready = wait(list(waiting), timeout=silence_s)
            if not ready:
                raise self._fail_all(indices, f"the model did not answer within {silence_s:.0f} s (it hangs or is far too slow)")
            for conn in ready:
                i = waiting[conn]
                try:
                    kind, value = conn.recv()
                except (EOFError, OSError):
                    raise self._fail_all(indices, self._workers[i].death_reason()) from None
                if kind == "ok":
                    values[i] = value
                    del waiting[conn]
                elif kind == "fail":
                    raise self._fail_all(indices, value)
                else:
                    on_message(kind, value)
        return [values[i] for i in indices]

    # -- commands ------------------------------------------------------------------------------
    def load(self, model: bytes | None, *, task: str, device: str = "cpu") -> None:
        """Load an ONNX model (or ``None`` for the random policy) into every worker."""
        for i, w in enumerate(self._workers):
            if not w.alive():
                self._replace(i)
        args = {"model": model, "task": task, "device": device}
        for w in self._workers:
            w.send("load", args)
        self._gather(range(len(self._workers)), silence_s=self.timeouts.load)
        self._loaded = args

    def probe(self) -> dict[str, Any]:
        self._require_loaded()
        self._workers[0].send("probe", {})
        return self._gather([0], silence_s=self.timeouts.probe)[0]

    def evaluate(
        self,
        seeds: Sequence[int],
        *,
        pool_size: int | None = None,
        on_episode: Callable[[int, float, int], None] = lambda seed, ret, length: None,
    ) -> dict[int, tuple[float, int]]:
        """Play one episode per seed; returns ``{seed: (return, length)}``."""
        self._require_loaded()
        task = self._loaded["task"]
        pool = pool_size or get_task(task).pool_size
        share = [list(seeds)[i :: self.n_workers] for i in range(self.n_workers)]
        busy = [i for i, s in enumerate(share) if s]
        for i in busy:
            self._workers[i].send("episodes", {"task": task, "seeds": share[i], "pool_size": pool})
        results: dict[int, tuple[float, int]] = {}

        def on_message(kind: str, value: Any) -> None:
            if kind == "episode":
                seed, ret, length = value
                results[seed] = (ret, length)
                on_episode(seed, ret, length)

        self._gather(busy, silence_s=self.timeouts.episodes, on_message=on_message)
        missing = set(seeds) - set(results)
        if missing:
            raise EngineFailure(f"internal error: no result for seeds {sorted(missing)[:5]}")
        return {s: results[s] for s in seeds}

    def actions(self, states: Any) -> Any:
        """The loaded policy's actions (argmax) on a batch of states, as an int64 array."""
        self._require_loaded()
        self._workers[0].send("actions", {"states": states})
        return self._gather([0], silence_s=self.timeouts.probe)[0]

    def record(self, seed: int, path: str) -> dict[str, Any]:
        """Replay ``seed`` with rendering and write an MP4 to ``path``."""
        self._require_loaded()
        self._workers[0].send("record", {"task": self._loaded["task"], "seed": seed, "path": os.path.abspath(path)})
        return self._gather([0], silence_s=self.timeouts.record)[0]

    def _require_loaded(self) -> None:
        if self._loaded is None:
            raise RuntimeError("load a model first")
