"""The sandboxed worker process: the only place a submitted model is run.

A worker is a fresh interpreter (``python -I``) started by :mod:`grader.runtime.engine`, inside
bubblewrap where it works (no network, uid 65534, a read-only view of the system and the venv,
a private tmpfs ``/tmp`` and an empty working directory in it) and otherwise as a plain process
in an empty private folder. It sets its own resource limits (address space, file size, open
files, no core files; CPU time per command, sized from the rubric's budgets), says ``ready``, then
serves commands over one socket (:class:`WorkerServer`): ``load`` a model from bytes, ``probe`` it
on contract states at every batch size the episodes use, play ``episodes`` with a pool of
environments stepped together (:mod:`grader.runtime.episodes`), ``recheck`` one episode's
decisions, ``record`` one episode to MP4 (written in its private folder and sent back as bytes),
return the policy's ``actions`` on given states (duplicate detection), or describe itself
(``info``). The policies and the probe are in :mod:`grader.runtime.policy`.

**The channel carries plain data only** (:mod:`grader.runtime.channel`): a JSON header and raw
array bytes with their dtype and shape, validated on receipt. Nothing from the worker is ever
unpickled: a worker taken over by a hostile model can send the parent only data.

**Whose fault.** Errors raised by onnxruntime while creating the session or running the model,
and :class:`~grader.errors.PolicyFailure` (NaN, a bad output, a budget exceeded), are the model's:
they come back as ``fail`` with a student-facing message. Anything else is a bug of the grader (or
of an environment) and comes back as ``bug`` with the traceback, so the engine can raise
:class:`~grader.errors.EngineBug` instead of blaming the student.
"""

from __future__ import annotations

import json
import os
import resource
import sys
import threading
import time
import traceback
from collections.abc import Callable, Sequence
from multiprocessing.connection import Connection
from typing import Any

import numpy as np

from grader import limits as L
from grader.errors import MalformedMessage, PolicyFailure
from grader.limits import WorkerLimits
from grader.runtime.channel import decode, encode
from grader.runtime.episodes import EnvPool, SeedFeed, recheck, record_episode, run_episodes
from grader.runtime.policy import (
    CallBudget,
    CallMeter,
    OnnxPolicy,
    RandomPolicy,
    actions_at_batch_sizes,
    probe,
    short_reason,
    tensors,
)
from grader.submission.probestates import probe_states
from grader.tasks.contract import Task, get_task

HEARTBEAT_S = L.HEARTBEAT_S  # during episodes the worker reports progress at least this often

def _lower(limit: int, value: int) -> None:
    soft, hard = resource.getrlimit(limit)
    if hard == resource.RLIM_INFINITY or hard > value:
        resource.setrlimit(limit, (value, value))
    elif soft > hard:
        resource.setrlimit(limit, (hard, hard))


def _apply_limits(limits: WorkerLimits) -> None:
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    _lower(resource.RLIMIT_AS, limits.memory_bytes)
    _lower(resource.RLIMIT_FSIZE, limits.file_bytes)
    _lower(resource.RLIMIT_NOFILE, limits.open_files)


def _cpu_used() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _cpu_budget(seconds: float) -> None:
    """RLIMIT_CPU (soft) = the CPU used so far + ``seconds``: over it the kernel sends SIGXCPU."""
    _, hard = resource.getrlimit(resource.RLIMIT_CPU)
    soft = int(_cpu_used() + seconds) + 1
    if hard != resource.RLIM_INFINITY:
        soft = min(soft, hard)
    resource.setrlimit(resource.RLIMIT_CPU, (soft, hard))


class _Channel:
    """The worker's end of the socket; ``send`` may be called from the watchdog thread too."""

    def __init__(self, conn: Connection):
        self.conn = conn
        self.lock = threading.Lock()

    def send(self, kind: str, value: Any = None) -> None:
        data = encode(kind, value)
        with self.lock:
            self.conn.send_bytes(data)

    def send_raw(self, data: bytes) -> None:
        with self.lock:
            self.conn.send_bytes(data)


class _Watchdog(threading.Thread):
    """Stops the worker when one model call runs past the budget's ``call_max_s``.

    onnxruntime releases the GIL while it runs, so this thread sees a call that never returns; it
    sends the student-facing reason and ends the process (the engine replaces it)."""

    def __init__(self, channel: _Channel):
        super().__init__(daemon=True, name="grader-watchdog")
        self.channel = channel
        self.meter: CallMeter | None = None
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.wait(0.05):
            meter = self.meter
            if meter is None or meter.started is None:
                continue
            elapsed = time.monotonic() - meter.started
            if elapsed > meter.budget.call_max_s:
                try:
                    self.channel.send("fail", f"one call of the model took over {elapsed:.1f} s; the limit is "
                                              f"{meter.budget.call_max_s:g} s per call: use a smaller network")
                finally:
                    os._exit(70)


def _sandbox_info() -> dict[str, Any]:
    def listing(path: str) -> list[str]:
        try:
            return sorted(os.listdir(path))[:1000]
        except OSError:
            return []

    try:
        netns = os.readlink("/proc/self/ns/net")
    except OSError:
        netns = ""
    cwd = os.getcwd()
    return {"uid": os.getuid(), "gid": os.getgid(), "pid": os.getpid(), "cwd": cwd, "cwd_entries": listing(cwd),
            "tmp_entries": listing("/tmp"), "netns": netns, "mode": os.environ.get("GRADER_WORKER_MODE", "")}


def _probe_states(spec: Task, pool: EnvPool) -> np.ndarray:
    """The probe states (:func:`grader.submission.probestates.probe_states`); a rollout, when needed, on a pool env."""
    return probe_states(spec, env_factory=lambda: pool.get(spec, 1)[0])

class _EpisodeReporter:
    """What a worker says while it plays one ``episodes`` command: each finished episode (with its
    facts), a heartbeat at least every :data:`HEARTBEAT_S` (and one after the first model call, so
    the engine learns the model's speed at once), and the command's totals at the end."""

    def __init__(self, channel: _Channel, meter: CallMeter, cpu0: float, t0: float):
        self.channel, self.meter, self.cpu0, self.t0 = channel, meter, cpu0, t0
        self.calls0 = meter.snapshot()
        self.last = time.monotonic()
        self.first = True
        self.facts: dict[int, dict] = {}

    def stats(self) -> dict[str, float]:
        now = self.meter.snapshot()
        return {"calls": now["calls"] - self.calls0["calls"], "call_s": round(now["call_s"] - self.calls0["call_s"], 6),
                "cpu_s": round(_cpu_used() - self.cpu0, 4), "wall_s": round(time.monotonic() - self.t0, 4)}

    def episode_done(self, seed: int, ret: float, length: int) -> None:
        extra = [self.facts.pop(seed)] if seed in self.facts else []  # diagnostics: plain JSON data
        self.channel.send("episode", [int(seed), float(ret), int(length), *extra])
        self.last = time.monotonic()

    def heartbeat(self) -> None:
        if time.monotonic() - self.last > HEARTBEAT_S or (self.first and self.meter.calls > self.calls0["calls"]):
            self.first = False
            self.channel.send("alive", self.stats())
            self.last = time.monotonic()


class WorkerServer:
    """The commands a worker serves, one method each (``cmd_<name>``), and the state they share:
    the loaded policy and its meter, the pool of environments, the probe states of each task and
    the decisions of one episode kept for the recheck. A command replies ``ok`` (or nothing, for
    ``prepare``) and raises for ``fail`` / ``bug`` (:meth:`handle`)."""

    def __init__(self, conn: Connection, channel: _Channel, watchdog: _Watchdog):
        self.conn, self.channel, self.watchdog = conn, channel, watchdog
        self.policy: OnnxPolicy | RandomPolicy | None = None
        self.meter = CallMeter(CallBudget())
        self.pool = EnvPool()
        self.probe_cache: dict[str, np.ndarray] = {}
        self.trace: dict[str, Any] = {}  # the decisions of one episode of the last episodes command (recheck)
        self.cpu0 = self.t0 = 0.0  # when the current command started

    def commands(self) -> dict[str, Callable[[dict[str, Any]], None]]:
        return {"prepare": self.cmd_prepare, "load": self.cmd_load, "probe": self.cmd_probe,
                "episodes": self.cmd_episodes, "recheck": self.cmd_recheck, "actions": self.cmd_actions,
                "record": self.cmd_record, "info": self.cmd_info, "tensors": self.cmd_tensors}

    def handle(self, command: str, args: dict[str, Any]) -> None:
        """Run one command under its CPU budget; a failure goes back as ``fail`` (the model's) or ``bug``."""
        _cpu_budget(float(args.get("cpu_s", L.BUDGET_PROBE_S)))
        self.cpu0, self.t0 = _cpu_used(), time.monotonic()
        try:
            run = self.commands().get(command)
            if run is None:
                raise RuntimeError(f"unknown command {command!r}")
            run(args)
        except PolicyFailure as exc:
            self.channel.send("fail", str(exc))
        except MemoryError:
            self.channel.send("fail", "the model tried to allocate more memory than the grader allows")
        except Exception as exc:  # noqa: BLE001 - not the model's: a bug of the grader or of an environment
            self.channel.send("bug", {"message": short_reason(exc), "traceback": traceback.format_exc()[-20_000:]})

    def loaded(self) -> OnnxPolicy | RandomPolicy:
        """The loaded policy (a command that needs one, without one, is the engine's bug)."""
        if self.policy is None:
            raise RuntimeError("this command needs a model loaded")
        return self.policy

    def probe_states(self, spec: Task) -> np.ndarray:
        """The task's probe states, computed once per task (the same for every model)."""
        if spec.name not in self.probe_cache:
            self.probe_cache[spec.name] = _probe_states(spec, self.pool)
        return self.probe_cache[spec.name]

    def cmd_prepare(self, args: dict[str, Any]) -> None:
        """No reply: environments and probe states ahead of the commands needing them."""
        spec = get_task(args["task"])
        self.pool.expect(spec, [int(x) for x in args.get("seeds") or []])  # the seeds it will be given first
        if args.get("probe"):
            self.probe_states(spec)
        self.pool.fill_while_idle(spec, min(int(args.get("envs") or 1), spec.pool_size), self.conn)

    def cmd_load(self, args: dict[str, Any]) -> None:
        spec = get_task(args["task"])
        b = args.get("budget") or {}
        self.meter = CallMeter(CallBudget(decision_s=float(b.get("decision_s", L.BUDGET_DECISION_S)),
                                          window=int(b.get("window", L.BUDGET_DECISION_WINDOW)),
                                          call_max_s=float(b.get("call_max_s", L.BUDGET_CALL_MAX_S))))
        self.watchdog.meter = self.meter
        self.policy = None
        self.trace.clear()  # decisions of the previous model
        self.policy = (RandomPolicy(spec) if args["model"] is None
                       else OnnxPolicy(args["model"], spec, device=args.get("device", "cpu"), meter=self.meter))
        self.channel.send("ok", {"fixed_batch_one": bool(self.policy.fixed_batch_one)})
        # The environments of the coming episodes, built while the engine checks the probe.
        self.pool.fill_while_idle(spec, min(int(args.get("prepare") or 0), spec.pool_size), self.conn)

    def cmd_probe(self, args: dict[str, Any]) -> None:
        if not isinstance(self.policy, OnnxPolicy):
            raise RuntimeError("probe needs an ONNX model loaded")
        states = self.probe_states(self.policy.spec)
        self.channel.send("ok", probe(self.policy, pool_size=args.get("pool_size"), states=states))

    def cmd_episodes(self, args: dict[str, Any]) -> None:
        report = _EpisodeReporter(self.channel, self.meter, self.cpu0, self.t0)
        spec = get_task(args["task"])
        given = [int(s) for s in args["seeds"]]
        self.pool.expect(spec, given)  # environment k plays given[k] first: one built now is made ready for it
        n_envs = self.pool.size_for(spec, slots=min(int(args["pool_size"]), int(args.get("envs") or args["pool_size"])),
                                    fresh=int(args.get("fresh_envs") or args["pool_size"]))
        self.trace.clear()
        run_episodes(self.loaded(), spec, SeedFeed(self.conn, given) if args.get("more") else given,
                     envs=self.pool.get(spec, n_envs), on_episode=report.episode_done, on_step=report.heartbeat,
                     on_facts=report.facts.__setitem__ if args.get("diagnostics") else None,
                     on_trace=self._keep_trace if args.get("trace") else None)
        self.channel.send("ok", report.stats())

    def _keep_trace(self, seed: int, states: Sequence[np.ndarray], actions: Sequence[int]) -> None:
        self.trace.update(seed=seed, states=states, actions=actions)

    def cmd_recheck(self, args: dict[str, Any]) -> None:
        if self.policy is None:
            raise RuntimeError("recheck needs a model loaded")
        t = self.trace
        self.channel.send("ok", recheck(self.policy, t["seed"], t["states"], t["actions"]) if t
                          else {"seed": None, "decisions": 0, "differs": None})
        self.trace.clear()

    def cmd_actions(self, args: dict[str, Any]) -> None:
        states = np.asarray(args["states"], dtype=getattr(self.policy, "input_dtype", np.float32))
        if args.get("index") is not None:  # frames, and each state's positions in them
            states = np.take(states, np.asarray(args["index"], dtype=np.int64), axis=0)
        sizes = [int(b) for b in args.get("batch_sizes") or [len(states)]]
        self.channel.send("ok", actions_at_batch_sizes(self.loaded(), states, sizes))

    def cmd_tensors(self, args: dict[str, Any]) -> None:
        """A model's intermediate tensors of a given size on given states (:func:`grader.runtime.policy.tensors`)."""
        self.channel.send("ok", tensors(args["model"], args["states"], size=int(args["size"])))

    def cmd_record(self, args: dict[str, Any]) -> None:
        path = os.path.join(os.getcwd(), "video.mp4")
        try:
            info = record_episode(self.loaded(), get_task(args["task"]), int(args["seed"]), path)
            with open(path, "rb") as f:
                info["video"] = f.read()
        finally:
            if os.path.exists(path):
                os.unlink(path)
        self.channel.send("ok", info)

    def cmd_info(self, args: dict[str, Any]) -> None:
        info = _sandbox_info()
        info["exists"] = [os.path.exists(str(p)) for p in list(args.get("paths") or [])[:64]]
        self.channel.send("ok", info)


def _receive(conn: Connection, channel: _Channel) -> tuple[str, dict[str, Any]] | None:
    """The next command, or None when the socket ended; a malformed one is answered ``bug`` and skipped."""
    while True:
        try:
            raw = conn.recv_bytes(L.CHANNEL_TO_WORKER_BYTES)
        except (EOFError, OSError):
            return None
        try:
            command, args = decode(raw, max_bytes=L.CHANNEL_TO_WORKER_BYTES)
            if not isinstance(args, dict):
                raise MalformedMessage("command arguments must be a mapping")
            return command, args
        except MalformedMessage as exc:
            channel.send("bug", {"message": f"malformed command: {exc}", "traceback": ""})


def serve(conn: Connection, limits: WorkerLimits = WorkerLimits(), *, server: type[WorkerServer] = WorkerServer) -> None:
    """Serve commands until ``close`` or the socket ends.

    Replies: ``("ok", value)``, ``("fail", student-facing message)``, ``("bug", {"message",
    "traceback"})``; during episodes also ``("episode", [seed, return, length])`` and
    ``("alive", stats)`` at least every :data:`HEARTBEAT_S`. ``server`` is the class serving the
    commands (tests pass a subclass with test doubles).
    """
    import onnxruntime  # import before the limits: it maps large shared libraries

    onnxruntime.set_default_logger_severity(4)  # errors come back as messages, not log lines
    _apply_limits(limits)
    channel = _Channel(conn)
    watchdog = _Watchdog(channel)
    watchdog.start()
    worker = server(conn, channel, watchdog)
    channel.send("ready", {"pid": os.getpid(), "uid": os.getuid(), "mode": os.environ.get("GRADER_WORKER_MODE", "")})
    if not conn.poll(0):  # nothing to do yet: load what every task's environments need meanwhile
        try:
            import gymnasium  # noqa: F401
        except ImportError:
            pass
    while (message := _receive(conn, channel)) is not None and message[0] != "close":
        worker.handle(*message)


def main(argv: Sequence[str] | None = None, *, server: type[WorkerServer] = WorkerServer) -> None:
    """Entry point of the worker process: ``python -I -c '...main()' FD [LIMITS_JSON]`` (see
    :func:`grader.runtime.isolation.worker_command`)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    given = json.loads(argv[1]) if len(argv) > 1 else {}
    limits = WorkerLimits(**{k: int(v) for k, v in given.items() if k in WorkerLimits.__dataclass_fields__})
    serve(Connection(int(argv[0])), limits, server=server)


if __name__ == "__main__":
    main()
