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
plain data (:func:`grader.runtime.channel.decode`, :mod:`grader.runtime.replies`), validated here; never a pickle.

Errors: :class:`~grader.errors.EngineFailure` is the model's fault (its message is
student-facing); :class:`~grader.errors.EngineBug` is the grader's own (it carries the worker's
traceback).

The concerns around the engine live beside it: how a worker is isolated and started
(:mod:`grader.runtime.isolation`), the handle on one worker process (:mod:`grader.runtime.process`),
the validation of what a worker sends (:mod:`grader.runtime.replies`) and which worker plays which
seed (:mod:`grader.runtime.dispatch`). This module holds the commands.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from multiprocessing.connection import wait
from pathlib import Path
from typing import Any, TypedDict

from grader import limits as L
from grader.errors import EngineBug, EngineFailure, MalformedMessage
from grader.limits import WorkerLimits
from grader.runtime.channel import decode, encode
from grader.runtime.dispatch import Dispatch, fresh_envs
from grader.runtime.isolation import WORKER_MODULE, isolation
from grader.runtime.process import INLINE_SEND_BYTES, WorkerProcess
from grader.runtime.replies import (
    Facts,
    ProbeReply,
    RecheckReply,
    RecordedEpisode,
    check_facts,
    check_probe,
    check_recheck,
    check_text,
    expect,
    is_num,
)

# Nothing here imports numpy, the task registry or the worker's module when this module is
# imported: `grade` starts its workers first, and imports those while the workers boot.
__all__ = ["Engine", "Timeouts"]


class LoadedModel(TypedDict):
    """What :meth:`Engine.load` loaded into the workers."""

    task: str
    device: str
    fixed_batch_one: bool


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


class Engine:
    """A set of worker processes; use as a context manager, or call :meth:`close`.

    ``sandbox``: ``auto`` | ``bwrap`` | ``fallback`` (default ``$GRADER_SANDBOX`` or auto).
    :attr:`warnings` says when the model workers are not in bubblewrap (copy it into the result).
    ``worker_module``: the module whose ``main()`` the workers run (tests start test doubles).
    """

    def __init__(self, workers: int = 1, *, limits: WorkerLimits | None = None, timeouts: Timeouts | None = None,
                 sandbox: str | None = None, worker_module: str = WORKER_MODULE):
        if workers < 1:
            raise ValueError("workers must be at least 1")
        self.n_workers = workers
        self.limits = limits or WorkerLimits()
        self.timeouts = timeouts or Timeouts()
        self._sandbox = sandbox
        self._worker_module = worker_module
        self.isolation = isolation(sandbox, probe=False)
        self.warnings: list[str] = list(self.isolation.warnings)
        self.stats: dict[str, float] = {}  # of the last evaluate(): calls, call_s, cpu_s, wall_s
        self._workers: list[WorkerProcess] = [self._start_worker() for _ in range(workers)]
        self._loaded: LoadedModel | None = None
        self._budgets: L.BudgetValues | None = None
        self.facts: dict[int, Facts] = {}  # of the last evaluate(diagnostics=True), by seed
        self.last_recheck: RecheckReply | None = None  # of the last evaluate(recheck=True)
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
            self._workers.append(self._start_worker())
        self.n_workers = workers

    @property
    def sandbox_mode(self) -> str:
        return self.isolation.mode

    def __enter__(self) -> Engine:
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
    def _start_worker(self) -> WorkerProcess:
        return WorkerProcess(self.isolation, self.limits, module=self._worker_module)

    def _replace(self, index: int) -> None:
        self._workers[index].kill()
        self._workers[index] = self._start_worker()

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
    def _broadcast(workers: Sequence[WorkerProcess], command: str, args: dict[str, Any]) -> None:
        """Send the same command to every worker without one busy worker holding up the others.

        A message larger than a socket's buffer (a model of a few MB) blocks its sender until the
        worker reads it, and a worker reads only between its own steps (building an environment,
        say). Sent one after the other, the second worker would get the model only after the
        first had finished what it was doing; so a large message goes out on one thread per
        worker, all at once. The threads end when their worker has read the message or died; the
        caller's :meth:`_gather` waits for the replies, with its timeouts, as for any command."""
        payload = encode(command, args)
        if len(payload) <= INLINE_SEND_BYTES or len(workers) < 2:
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
        waiting: dict[Any, int] = {self._workers[i].conn: i for i in indices}
        values: dict[int, Any] = {}
        while waiting:
            for conn in self._wait_any(list(waiting), indices, silence_s=silence_s, deadline=deadline,
                                       on_deadline=on_deadline):
                i = waiting[conn]
                raw = self._read(i, indices, cpu_s)
                try:
                    answered = self._on_reply(i, indices, raw, on_message=on_message, on_ok=on_ok, values=values)
                except MalformedMessage as exc:
                    raise self._fail_all(indices, f"the grading process sent a malformed reply, which was refused ({exc})") from None
                if answered:
                    del waiting[conn]
        return [values[i] for i in indices]

    def _wait_any(self, conns: list[Any], indices: Sequence[int], *, silence_s: float, deadline: float | None,
                  on_deadline: Callable[[], str]) -> list[Any]:
        """The connections with something to read; past the deadline or after ``silence_s`` of
        silence, every worker of ``indices`` is replaced and the model fails."""
        timeout = silence_s
        if deadline is not None:
            left = deadline - time.monotonic()
            if left <= 0:  # checked before reading: a stream of progress messages cannot push it back
                raise self._fail_all(indices, on_deadline())
            timeout = min(timeout, left)
        ready = wait(conns, timeout=timeout)
        if not ready:
            if deadline is not None and time.monotonic() >= deadline:
                raise self._fail_all(indices, on_deadline())
            raise self._fail_all(indices, f"the model did not answer within {silence_s:.0f} s (it hangs or is far too slow)")
        return ready

    def _read(self, i: int, indices: Sequence[int], cpu_s: float | None) -> bytes:
        """The next message of worker ``i``; its end says why it died (a bug before it was ready)."""
        w = self._workers[i]
        try:
            return w.conn.recv_bytes(L.CHANNEL_FROM_WORKER_BYTES)
        except (EOFError, OSError) as exc:
            if not w.ready:
                tail = w.stderr_tail()
                raise self._bug_all(indices, f"the worker process did not start ({w.death_reason()})", tail) from None
            if isinstance(exc, OSError) and w.alive():
                raise self._fail_all(indices, "the grading process sent a message over the size limit") from None
            raise self._fail_all(indices, w.death_reason(cpu_s)) from None

    def _on_reply(self, i: int, indices: Sequence[int], raw: bytes, *, on_message: Callable[[int, str, Any], None],
                  on_ok: Callable[[int, Any], bool] | None, values: dict[int, Any]) -> bool:
        """Handle one message of worker ``i``; True when it answered its command (``values[i]``)."""
        kind, value = decode(raw, max_bytes=L.CHANNEL_FROM_WORKER_BYTES)
        if kind == "ready":
            self._check_ready(self._workers[i], value)
            return False
        if kind == "ok":
            if on_ok is not None and on_ok(i, value):
                return False
            values[i] = value
            return True
        if kind == "fail":
            raise self._fail_all(indices, check_text(value, "fail"))
        if kind == "bug":
            expect(isinstance(value, dict) and isinstance(value.get("message"), str)
                   and isinstance(value.get("traceback"), str), "bug: fields")
            raise self._bug_all(indices, value["message"][:1000], value["traceback"][-20_000:])
        if kind in ("episode", "alive"):
            on_message(i, kind, value)
            return False
        raise MalformedMessage(f"unknown reply kind {kind[:32]!r}")

    def _check_ready(self, w: WorkerProcess, value: Any) -> None:
        expect(isinstance(value, dict) and type(value.get("uid")) is int, "ready: fields")
        if self.isolation.mode == "bwrap":
            from grader.runtime.bwrap import NOBODY

            expect(value["uid"] == NOBODY and value.get("mode") == "bwrap", "ready: not in the sandbox")
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
            from grader.runtime.bwrap import forget_scratch_probe

            forget_scratch_probe()  # the bounded scratch's helper is probed again too
            self.isolation = isolation(self._sandbox)  # the real probe: SetupError if bwrap was required
            self.warnings[:] = list(self.isolation.warnings)
            for i in range(len(self._workers)):
                self._replace(i)
            self._wait_ready(range(len(self._workers)))
        if not self.isolation.verified:
            import dataclasses

            self.isolation = dataclasses.replace(self.isolation, verified=True)

    def _wait_ready(self, indices: Sequence[int]) -> None:
        waiting: dict[Any, int] = {self._workers[i].conn: i for i in indices if not self._workers[i].ready}
        deadline = time.monotonic() + self.timeouts.load
        while waiting:
            ready = wait(list(waiting), timeout=max(0.0, deadline - time.monotonic()))
            if not ready:
                raise self._bug_all(list(indices), f"no worker process started within {self.timeouts.load:.0f} s")
            for conn in ready:
                i = waiting.pop(conn)
                w = self._workers[i]
                try:
                    kind, value = decode(w.conn.recv_bytes(L.CHANNEL_FROM_WORKER_BYTES), max_bytes=L.CHANNEL_FROM_WORKER_BYTES)
                    expect(kind == "ready", "the first message is not ready")
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
            self._budgets = L.ModelBudgets()
        return float(getattr(self._budgets, name))

    # -- commands ------------------------------------------------------------------------------
    def load(self, model: bytes | None, *, task: str, device: str = "cpu", budgets: L.BudgetValues | None = None,
             episodes: int | None = None) -> None:
        """Load an ONNX model (or ``None`` for the random policy) into every worker.

        ``budgets`` (a rubric's :class:`grader.scoring.rubric.Budgets`, e.g. ``rubric.budgets``;
        default: :class:`grader.limits.ModelBudgets`) bounds every later command on this model.
        ``episodes`` (how many the next :meth:`evaluate` plays) lets each worker build its
        environments right after the session, while the first worker runs the probe."""
        self._ensure_ready()
        b = self._budgets = budgets if budgets is not None else L.ModelBudgets()
        for i, w in enumerate(self._workers):
            if not w.alive():
                self._replace(i)
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
                expect(isinstance(r, dict) and isinstance(r.get("fixed_batch_one"), bool), "load: fields")
            except MalformedMessage as exc:
                raise self._fail_all(range(len(self._workers)), f"the grading process sent a malformed reply ({exc})") from None
        self._loaded = {"task": args["task"], "device": device, "fixed_batch_one": replies[0]["fixed_batch_one"]}

    def prepare(self, task: str, *, episodes: int | None = None, seeds: Sequence[int] | None = None) -> None:
        """Non-blocking: have the workers build the environments of ``task`` (for ``episodes``
        episodes, or the episodes of ``seeds``) and the first worker its probe states, as soon as
        they are up and while this process goes on (e.g. with the static checks). With ``seeds``
        (those the next :meth:`evaluate` plays), each worker is told the seeds it will start with,
        and builds each environment ready for its first one (:class:`grader.runtime.episodes.EnvPool`).
        Nothing is waited for; a failure shows in the next command's reply."""
        spec = get_task(task)
        if seeds is not None:
            episodes = len(seeds)
        n = fresh_envs(spec.pool_size, int(episodes), self.n_workers) if episodes else 1
        first = Dispatch([int(s) for s in seeds], self.n_workers, spec.pool_size, recheck=False).hand() if seeds else {}
        for k, w in enumerate(self._workers):
            if w.alive():
                w.send("prepare", {"task": spec.name, "envs": n, "probe": k == 0, "seeds": first.get(k, []),
                                   "cpu_s": self._budget("probe_s") + 5})

    def probe(self, *, pool_size: int | None = None) -> ProbeReply:
        """Raw outputs on the probe states, one by one and at every batch size 1..pool_size (the
        task's pool size by default) and a few more; the keyword arguments of
        :class:`grader.submission.checks.Probe`."""
        pool = pool_size or get_task(self._require_loaded()["task"]).pool_size
        self._workers[0].send("probe", {"pool_size": int(pool), "cpu_s": self._budget("probe_s") + 5})
        raw = self._gather([0], **self._probe_wait())[0]
        try:
            return check_probe(raw)
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
        :meth:`rerun`). Seeds are handed out as workers free up (:class:`Dispatch`), so no worker
        idles while another still has seeds waiting. The whole call is bounded by the budgets'
        ``episodes_wall_s`` (whatever the heartbeats) and ``episodes_cpu_s``; the mean and
        maximum time of a model call by ``decision_s`` / ``call_max_s`` (measured in the worker).

        ``recheck``: the decisions of one episode are also computed again alone, one state per
        call, while the other workers finish (see :class:`Dispatch`); the outcome is in
        :attr:`last_recheck` (``{"seed", "decisions", "differs"}``, see :func:`grader.runtime.episodes.recheck`;
        judge it with :func:`grader.submission.checks.check_recheck`). When each worker played a single
        episode (:attr:`played_alone`), every episode already ran one state per call, exactly as a
        re-run would: there is nothing to check and :attr:`last_recheck` stays None.

        ``on_idle()`` is called once, the first time a worker has nothing left to do while another
        still plays: a processor is free until the last episode ends (the pipeline loads there
        what its outputs need)."""
        task = self._require_loaded()["task"]
        seeds = [int(s) for s in seeds]
        pool = int(pool_size or get_task(task).pool_size)
        wall_s, cpu_s = self._budget("episodes_wall_s"), self._budget("episodes_cpu_s")
        plan = Dispatch(seeds, self.n_workers, pool, recheck=recheck)
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
        self.facts = {}
        progress: dict[int, dict] = {}
        stats: dict[int, dict] = {}
        self.last_recheck = None
        t_done = [t0]
        idle_called = [False]

        def on_message(i: int, kind: str, value: Any) -> None:
            if kind == "episode":
                expect(isinstance(value, list) and len(value) in (3, 4) and type(value[0]) is int and value[0] in expected
                       and is_num(value[1]) and type(value[2]) is int and value[2] >= 0, "episode: fields")
                seed, ret, length = value[:3]
                expect(plan.state.get(i) == "episodes", "episode: not while playing episodes")
                if len(value) == 4:
                    self.facts[seed] = check_facts(value[3])
                results[seed] = (float(ret), length)
                on_episode(seed, float(ret), length)
                send(plan.freed(i))
            else:
                expect(isinstance(value, dict) and all(is_num(x) for x in value.values()), "alive: fields")
                if plan.state.get(i) == "episodes":
                    progress[i] = value

        def on_ok(i: int, value: Any) -> bool:
            if plan.state[i] == "recheck":
                self.last_recheck = check_recheck(value, results)
            else:
                expect(isinstance(value, dict) and all(is_num(value.get(k)) for k in ("calls", "call_s", "cpu_s", "wall_s")),
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

    def actions(self, states: Any, *, batch_sizes: Sequence[int] | None = None, index: Any = None) -> Any:
        """The loaded policy's actions (argmax) on a batch of states, as an int64 array.

        The states go to the model in chunks whose sizes cycle through ``batch_sizes`` (default:
        every size 1..pool_size the episodes use, and 7), twice in different orders; actions that
        change with the batch size raise :class:`EngineFailure`. So a model cannot behave one way
        in episodes and another on the duplicate-detection probe set.

        With ``index`` (``[n, K]``), ``states`` are frames and the states are ``states[index]``,
        stacked in the worker: stacks that share frames travel compactly (raw frames: 100 kB each)."""
        import numpy as np

        from grader.runtime.policy import probe_batch_sizes

        task = self._require_loaded()["task"]
        states = np.ascontiguousarray(states, dtype=np.dtype(get_task(task).input_dtype))
        if batch_sizes is None:
            pool = get_task(task).pool_size
            batch_sizes = [b for b in probe_batch_sizes(pool) if b <= max(pool, 7)]
        sizes = [int(b) for b in batch_sizes]
        if not sizes or min(sizes) < 1:
            raise ValueError("batch sizes must be positive")
        args = {"states": states, "batch_sizes": sizes, "cpu_s": self._budget("probe_s") + 5}
        if index is not None:
            index = np.ascontiguousarray(index, dtype=np.int64)
            if index.ndim != 2 or (index.size and (index.min() < 0 or index.max() >= len(states))):
                raise ValueError("the index must be [n, K] positions of the frames")
            args["index"] = index
        self._workers[0].send("actions", args)
        out = self._gather([0], **self._probe_wait())[0]
        n = len(states) if index is None else len(index)
        if not (isinstance(out, np.ndarray) and out.dtype == np.int64 and out.shape == (n,)):
            raise self._fail_all([0], "the grading process sent a malformed reply (actions)")
        return out

    @property
    def loaded_task(self) -> str | None:
        """The contract (task name) of the loaded model, or None: duplicate detection gives each model
        the probe states in its own contract's form."""
        return None if self._loaded is None else str(self._loaded["task"])

    def tensors(self, model: bytes, states: Any, *, size: int) -> list[Any]:
        """Every intermediate tensor of ``size`` elements that ``model`` computes on ``states``, in
        the sandboxed worker (:func:`grader.runtime.policy.tensors`): how the notebook checks find
        the preprocessed state inside a model that preprocesses its raw frames."""
        import numpy as np

        self._ensure_ready()
        self._workers[0].send("tensors", {"model": model, "states": np.ascontiguousarray(states), "size": int(size),
                                          "cpu_s": self._budget("probe_s") + 5})
        out = self._gather([0], **self._probe_wait())[0]
        if not (isinstance(out, list) and all(isinstance(t, np.ndarray) and t.size == size for t in out)):
            raise self._fail_all([0], "the grading process sent a malformed reply (tensors)")
        return out

    def record(self, seed: int, path: str) -> RecordedEpisode:
        """Replay ``seed`` with rendering and write an MP4 to ``path``; see :meth:`record_many`."""
        return self.record_many([(seed, path)])[0]

    def record_many(self, jobs: Sequence[tuple[int, str]], *,
                    on_video: Callable[[int, RecordedEpisode], None] = lambda k, info: None) -> list[RecordedEpisode]:
        """Replay each ``(seed, path)`` with rendering (a batch of 1) and write its MP4 to ``path``,
        the videos spread over the workers: each takes the next one as it finishes its own.

        The worker encodes the video in its private folder and sends the bytes; this process
        writes them and calls ``on_video(k, info)`` for job ``k`` as it arrives, so that the videos
        made before a failure are kept by a caller that stops at the failure. Returns, in the
        order of ``jobs``, ``{"return", "length", "frames"}``. Each video has the rubric's
        ``record_s`` budget (CPU, in the worker; wall, here: one budget per round of videos)."""
        task = self._require_loaded()["task"]
        budget = self._budget("record_s")
        indices = list(range(min(self.n_workers, len(jobs))))
        queue = list(range(len(jobs)))[::-1]
        doing: dict[int, int] = {}
        infos: dict[int, RecordedEpisode] = {}

        def send(i: int) -> bool:
            if not queue:
                return False
            k = doing[i] = queue.pop()
            self._workers[i].send("record", {"task": task, "seed": int(jobs[k][0]), "cpu_s": budget + 5})
            return True

        def on_ok(i: int, info: Any) -> bool:
            if not (isinstance(info, dict) and set(info) == {"return", "length", "frames", "video"} and is_num(info["return"])
                    and type(info["length"]) is int and type(info["frames"]) is int and isinstance(info["video"], bytes)):
                raise self._fail_all(indices, "the grading process sent a malformed reply (record)")
            k = doing.pop(i)
            Path(jobs[k][1]).write_bytes(info["video"])
            infos[k] = {"return": float(info["return"]), "length": info["length"], "frames": info["frames"]}
            on_video(k, infos[k])
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

    def _require_loaded(self) -> LoadedModel:
        """What :meth:`load` loaded (``task``, ``device``, ``fixed_batch_one``)."""
        if self._loaded is None:
            raise RuntimeError("load a model first")
        return self._loaded
