"""Test doubles of the model worker: a :class:`~grader.runtime.worker.WorkerServer` whose grader
components fail on request (``probe``, ``env``), or that behaves like a worker taken over by a
model (``pickle``: a forged reply; ``spam``: progress messages forever).

An engine runs it with ``Engine(n, sandbox="fallback", worker_module=MODULE)`` (bubblewrap shows a
worker the grader package only, not the tests), and :func:`inject_fault` arms it.
"""

from __future__ import annotations

import pickle
import time
from typing import Any

from grader.runtime import worker
from grader.runtime.engine import Engine
from grader.tasks import Task

MODULE = "tests.worker_doubles"


class _PickleBomb:
    """Pickles to "open(marker, 'w')": unpickling it would create the file (tests: it never is)."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _broken_env_factory(spec: Task, **kwargs: Any) -> Any:
    raise RuntimeError("injected fault: the environment factory failed")


class FaultyServer(worker.WorkerServer):
    """A worker that serves the ``_fault`` command, then fails the way it names."""

    fault: str | None = None
    marker = "/nonexistent/marker"

    def commands(self):
        return {**super().commands(), "_fault": self.cmd_fault}

    def cmd_fault(self, args: dict[str, Any]) -> None:
        self.fault = str(args.get("where"))
        self.marker = str(args.get("marker", self.marker))
        if self.fault == "env":
            self.pool.factory = _broken_env_factory
        self.channel.send("ok", None)

    def handle(self, command: str, args: dict[str, Any]) -> None:
        if self.fault == "pickle":  # a forged reply: what a worker taken over by a model might send
            self.channel.send_raw(pickle.dumps(_PickleBomb(self.marker)))
            return
        while self.fault == "spam":  # progress messages forever, never an answer
            self.channel.send("alive", {"calls": 0})
            time.sleep(0.01)
        super().handle(command, args)

    def cmd_probe(self, args: dict[str, Any]) -> None:
        if self.fault == "probe":
            raise RuntimeError("injected fault: the grader's probe failed")
        super().cmd_probe(args)


def faulty_engine(workers: int = 1) -> Engine:
    """An engine whose workers are :class:`FaultyServer` s (in the fallback sandbox)."""
    return Engine(workers, sandbox="fallback", worker_module=MODULE)


def inject_fault(engine: Engine, where: str, marker: str = "") -> None:
    """Arm every worker of ``engine`` (a :func:`faulty_engine`) with the fault ``where``."""
    engine._ensure_ready()
    for w in engine._workers:
        w.send("_fault", {"where": where, **({"marker": marker} if marker else {})})
    engine._gather(range(len(engine._workers)), silence_s=engine.timeouts.load)


def main() -> None:
    worker.main(server=FaultyServer)
