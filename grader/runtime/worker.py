"""The sandboxed worker process: the only place a submitted model is run.

A worker is a fresh interpreter (``python -I``) started by :mod:`grader.runtime.engine`, inside
bubblewrap where it works (no network, uid 65534, a read-only view of the system and the venv,
a private tmpfs ``/tmp`` and an empty working directory in it) and otherwise as a plain process
in an empty private folder. It sets its own resource limits (address space, file size, open
files, no core files; CPU time per command, sized from the rubric's budgets), says ``ready``, then
serves commands over one socket: ``load`` a model from bytes, ``probe`` it on contract states at
every batch size the episodes use, play ``episodes`` with a pool of environments stepped together
(one batched onnxruntime call per step), ``record`` one episode to MP4 (written in its private
folder and sent back as bytes), return the policy's ``actions`` on given states (duplicate
detection), or describe itself (``info``).

**The channel carries plain data only** (:func:`encode` / :func:`decode`): a JSON header and raw
array bytes with their dtype and shape, validated on receipt. Nothing from the worker is ever
unpickled: a worker taken over by a hostile model can send the parent only data.

**Whose fault.** Errors raised by onnxruntime while creating the session or running the model,
and :class:`PolicyFailure` (NaN, a bad output, a budget exceeded), are the model's: they come back
as ``fail`` with a student-facing message. Anything else is a bug of the grader (or of an
environment) and comes back as ``bug`` with the traceback, so the engine can raise
:class:`grader.runtime.engine.EngineBug` instead of blaming the student.

Episodes are played by :func:`grader.tasks.contract.play_episode`; this module only decides how the
actions of many episodes are computed together, and how long they may take.
"""

from __future__ import annotations

import json
import os
import resource
import sys
import threading
import time
import traceback
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from grader import limits as L
from grader.tasks.contract import Task, actions_from_output, get_task, make_env, play_episode
from grader.submission.probestates import probe_states

HEARTBEAT_S = L.HEARTBEAT_S  # during episodes the worker reports progress at least this often
PROBE_STATES = L.PROBE_STATES


class PolicyFailure(RuntimeError):
    """The model failed while acting (bad output, NaN, onnxruntime error); the message is student-facing."""


class BudgetExceeded(PolicyFailure):
    """The model is slower than the rubric's budgets allow; the message says by how much."""


# --- the channel: grader.runtime.channel (re-exported: the worker's side of it) ----------------------------
from grader.runtime.channel import MAGIC, MalformedMessage, decode, encode  # noqa: E402,F401


# --- policies ---------------------------------------------------------------------------------------
class Policy(Protocol):
    """What the engine needs from a policy: actions for a batch of states."""

    def act(self, states: np.ndarray, seeds: np.ndarray, steps: np.ndarray) -> np.ndarray: ...


@dataclass(frozen=True)
class CallBudget:
    """How long policy calls may take (from the rubric's ``[budgets]``)."""

    decision_s: float = L.BUDGET_DECISION_S
    window: int = L.BUDGET_DECISION_WINDOW
    call_max_s: float = L.BUDGET_CALL_MAX_S


class CallMeter:
    """Times every model call; raises :class:`BudgetExceeded` when the budget is exceeded.

    The mean over a window of ``window`` consecutive calls must stay under ``decision_s``; it is
    checked after every call as "the window's total exceeds ``window * decision_s``", so a model
    far too slow fails after a few calls instead of a whole window. ``started`` is read by the
    watchdog thread, which stops a single call that runs past ``call_max_s``.
    """

    def __init__(self, budget: CallBudget):
        self.budget = budget
        self.window: deque[float] = deque()
        self.window_s = 0.0
        self.calls = 0
        self.total_s = 0.0
        self.started: float | None = None

    def run(self, fn: Callable[[], Any]) -> Any:
        self.started = time.monotonic()
        try:
            return fn()
        finally:
            elapsed = time.monotonic() - self.started
            self.started = None
            self._record(elapsed)

    def _record(self, elapsed: float) -> None:
        b = self.budget
        self.calls += 1
        self.total_s += elapsed
        self.window.append(elapsed)
        self.window_s += elapsed
        if len(self.window) > b.window:
            self.window_s -= self.window.popleft()
        if elapsed > b.call_max_s:
            raise BudgetExceeded(f"one call of the model took {elapsed:.2f} s; the limit is {b.call_max_s:g} s per call: "
                                 "use a smaller network")
        if self.window_s > b.window * b.decision_s:
            n = len(self.window)
            raise BudgetExceeded(f"the model took {self.window_s / n:.2f} s per decision (mean of {n} call{'s' * (n > 1)}); "
                                 f"the limit is {b.decision_s:g} s: use a smaller network")

    def snapshot(self) -> dict[str, float]:
        return {"calls": self.calls, "call_s": round(self.total_s, 6)}


class OnnxPolicy:
    """An onnxruntime session with one intra-op thread, run on a whole batch per call."""

    def __init__(self, model_bytes: bytes, spec: Task, *, device: str = "cpu", meter: CallMeter | None = None):
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.log_severity_level = 3
        options.enable_mem_pattern = False
        providers = ["CPUExecutionProvider"]
        if device == "cuda" and "CUDAExecutionProvider" in ort.get_available_providers():
            providers = ["CUDAExecutionProvider", "CPUExecutionProvider"]
        try:
            self.session = ort.InferenceSession(model_bytes, options, providers=providers)
        except MemoryError:
            raise PolicyFailure("the model tried to allocate more memory than the grader allows") from None
        except Exception as exc:  # noqa: BLE001 - onnxruntime raises many types for bad models: the model's
            raise PolicyFailure(_short(exc)) from None
        self.spec = spec
        self.meter = meter or CallMeter(CallBudget())
        inp = self.session.get_inputs()[0]
        self.input_name = inp.name
        self.output_name = self.session.get_outputs()[0].name
        self.fixed_batch_one = inp.shape[0] == 1

    def _run(self, states: np.ndarray) -> np.ndarray:
        try:
            out = self.meter.run(lambda: self.session.run([self.output_name], {self.input_name: states})[0])
        except PolicyFailure:
            raise
        except MemoryError:
            raise PolicyFailure("the model tried to allocate more memory than the grader allows") from None
        except Exception as exc:  # noqa: BLE001 - an error of onnxruntime running the model: the model's
            raise PolicyFailure(_short(exc)) from None
        return np.asarray(out)

    def raw(self, states: np.ndarray) -> np.ndarray:
        """The model's output for a batch, run state by state if the batch is fixed at 1."""
        states = np.ascontiguousarray(states, dtype=np.float32)
        if self.fixed_batch_one and len(states) != 1:
            return np.concatenate([self.raw(s[None]) for s in states])
        return self._run(states)

    def act(self, states: np.ndarray, seeds: np.ndarray, steps: np.ndarray) -> np.ndarray:
        out = self.raw(states)
        if np.issubdtype(out.dtype, np.floating) and not np.isfinite(out).all():
            raise PolicyFailure("the model output NaN or infinity during an episode")
        try:
            return actions_from_output(out, self.spec.n_actions)
        except ValueError as exc:
            raise PolicyFailure(f"unusable model output during an episode: {exc}") from None


class RandomPolicy:
    """Uniform random actions, a function of (episode seed, decision index) only."""

    def __init__(self, spec: Task):
        self.spec = spec
        self.n = spec.n_actions
        self.fixed_batch_one = False
        self.output_name = "random"

    def act(self, states: np.ndarray, seeds: np.ndarray, steps: np.ndarray) -> np.ndarray:
        return np.array([np.random.default_rng([int(s), int(t)]).integers(self.n) for s, t in zip(seeds, steps)])


# --- probing --------------------------------------------------------------------------------------
def _probe_states(spec: Task, pool: EnvPool) -> np.ndarray:
    """The probe states (:func:`grader.submission.probestates.probe_states`); a rollout, when needed, on a pool env."""
    return probe_states(spec, env_factory=lambda: pool.get(spec, 1)[0])


def probe_batch_sizes(pool_size: int, n_states: int = PROBE_STATES) -> list[int]:
    """Every batch size the episodes use (1..pool_size: a pool shrinks as its episodes end) and a few more."""
    return sorted(set(range(1, max(1, pool_size) + 1)) | set(L.EXTRA_PROBE_BATCH_SIZES) | {n_states})


def probe(policy: OnnxPolicy, env: Any = None, *, pool_size: int | None = None,
          states: np.ndarray | None = None) -> dict[str, Any]:
    """Raw outputs on the probe states: one by one, then at each batch size of :func:`probe_batch_sizes`.

    A batch of ``b`` holds the first ``b`` probe states (cycled when ``b`` exceeds them), so row ``i``
    of every batch can be compared with state ``i`` alone. A batch that fails is recorded as an
    error for the checks; a budget exceeded stops the probe.
    """
    states = probe_states(policy.spec, env=env) if states is None else states
    singles = [policy.raw(s[None]) for s in states]
    batches: list[list] = []
    if not policy.fixed_batch_one:
        for b in probe_batch_sizes(pool_size or policy.spec.pool_size, len(states)):
            if b == 1:
                continue
            try:
                batches.append([b, policy.raw(states[np.arange(b) % len(states)]), ""])
            except BudgetExceeded:
                raise
            except PolicyFailure as exc:
                batches.append([b, None, str(exc)[:400]])
    return {"singles": singles, "batches": batches, "fixed_batch_one": bool(policy.fixed_batch_one),
            "output_name": policy.output_name[:200], "pool_size": int(pool_size or policy.spec.pool_size)}


def actions_at_batch_sizes(policy: Policy, states: np.ndarray, batch_sizes: Sequence[int]) -> np.ndarray:
    """Argmax actions on ``states``, in consecutive chunks whose sizes cycle through ``batch_sizes``
    and then again through them reversed; both passes must agree on all but 2 % of the states (else
    :class:`PolicyFailure`)."""
    n = len(states)
    passes = []
    for sizes in (list(batch_sizes), list(batch_sizes)[::-1]):
        out = np.empty(n, np.int64)
        i = k = 0
        while i < n:
            b = max(1, int(sizes[k % len(sizes)]))
            chunk = states[i : i + b]
            out[i : i + len(chunk)] = np.asarray(policy.act(chunk, np.zeros(len(chunk), np.int64), np.zeros(len(chunk), np.int64)))
            i += len(chunk)
            k += 1
        passes.append(out)
    differ = int(np.sum(passes[0] != passes[1]))
    if differ > max(1, n // 50):  # a near-tie may flip in the last bit; a model that reads the batch flips many
        raise PolicyFailure(f"the model's actions depend on the batch size: {differ} of {n} probe states change "
                            f"between batches of {', '.join(map(str, batch_sizes))}")
    return passes[0]


# --- episodes ------------------------------------------------------------------------------------
@dataclass
class _Slot:
    seed: int
    episode: Any
    turn: Any
    decisions: int = 0
    diag: Any = None  # _Diag while diagnostics are collected


class EnvPool:
    """Environments kept alive between commands: building an ALE env costs ~70 ms.

    :meth:`expect` says which seeds the next environments built will play first (environment
    ``k`` of the pool plays the ``k``-th seed of an episodes command): each is built ready for its
    seed (:meth:`grader.tasks.Task.make_env`'s ``first_seed``), so that its first episode skips
    a second ROM load. A wrong guess costs only that saving: the episode is the same."""

    def __init__(self, factory: Callable[..., Any] = make_env) -> None:
        self._envs: dict[str, list[Any]] = {}
        self._served: dict[str, int] = {}  # episodes commands played per task
        self._first: dict[str, list[int]] = {}  # per task: the seeds environments 0, 1, ... play first
        self.factory = factory

    def expect(self, spec: Task, seeds: Sequence[int]) -> None:
        self._first[spec.name] = [int(s) for s in seeds]

    def _build(self, spec: Task, envs: list[Any]) -> None:
        first = self._first.get(spec.name, [])
        k = len(envs)
        envs.append(self.factory(spec, first_seed=first[k]) if k < len(first) else self.factory(spec))

    def get(self, spec: Task, n: int) -> list[Any]:
        envs = self._envs.setdefault(spec.name, [])
        while len(envs) < n:
            self._build(spec, envs)
        return envs[:n]

    def size_for(self, spec: Task, *, slots: int, fresh: int) -> int:
        """How many environments the next episodes of ``spec`` step together, at most ``slots``:
        for the first episodes command, ``fresh`` (see :func:`grader.runtime.engine.fresh_envs`) or those
        already built if more; for every later one, one more than those built, so that a
        long-lived worker's pool grows to the full batch over its first commands."""
        built = len(self._envs.get(spec.name, []))
        served = self._served.get(spec.name, 0)
        self._served[spec.name] = served + 1
        return max(1, min(slots, max(fresh, built + (1 if served else 0))))

    def fill_while_idle(self, spec: Task, n: int, conn: Any) -> None:
        """Build up to ``n`` environments, one at a time, for as long as no command is waiting:
        a command (the probe, the episodes) is answered first, and the episodes build the rest."""
        envs = self._envs.setdefault(spec.name, [])
        while len(envs) < n and not conn.poll(0):
            self._build(spec, envs)


def run_episodes(
    policy: Policy,
    spec: Task,
    seeds: Sequence[int] | Callable[[], int | None],
    *,
    envs: Sequence[Any],
    on_episode: Callable[[int, float, int], None] = lambda seed, ret, length: None,
    on_step: Callable[[], None] = lambda: None,
    on_facts: Callable[[int, dict], None] | None = None,
    on_trace: Callable[[int, list, list], None] | None = None,
) -> dict[int, tuple[float, int]]:
    """Play one episode per seed on ``envs``, stepped together.

    Each step gathers the states of all running episodes into one batch and makes one policy
    call. Per-episode results depend only on the seed and the model (whose outputs the checks
    prove independent of the batch size), never on the pool size or the order of seeds.

    With ``on_facts`` the same play also collects each episode's diagnostics (:func:`_facts`:
    the actions chosen, the policy's confidence, the task's tracker), handed to ``on_facts(seed,
    facts)`` just before ``on_episode``; the actions, and so the returns, are the same either way.

    ``seeds`` is a sequence, or a callable giving the next seed when a slot frees up (None: no
    more), e.g. a :class:`SeedFeed` that the engine fills as episodes end.

    With ``on_trace`` the states and actions of the first episode to end after a decision are
    kept and handed to ``on_trace(seed, states, actions)`` (for :func:`recheck`); the other
    episodes are recorded only until then.
    """
    if callable(seeds):
        next_seed = seeds
        envs = list(envs)
    else:
        pending = list(seeds)[::-1]
        envs = list(envs)[: len(pending)]

        def next_seed() -> int | None:
            return pending.pop() if pending else None

    results: dict[int, tuple[float, int]] = {}
    slots: dict[int, _Slot] = {}
    track = on_facts is not None
    n_actions = spec.n_actions
    traces: dict[int, tuple[list, list]] | None = {} if on_trace is not None else None

    def finish(i: int, seed: int, turn: Any, slot: _Slot | None) -> None:
        nonlocal traces
        if traces is not None and slot is not None:
            on_trace(seed, *traces[i])
            traces = None  # one episode is enough: stop recording the others
        results[seed] = (turn.episode_return, turn.length)
        if track:
            on_facts(seed, _facts(slot.diag if slot else _Diag(spec.tracker(envs[i]), n_actions), turn))
        on_episode(seed, turn.episode_return, turn.length)

    def start(i: int) -> None:
        while (seed := next_seed()) is not None:
            episode = play_episode(spec, envs[i], seed)
            turn = next(episode)
            if turn.done:  # ended during the opening protocol
                finish(i, seed, turn, None)
                continue
            slots[i] = _Slot(seed, episode, turn)
            if traces is not None:
                traces[i] = ([], [])
            if track:
                slots[i].diag = _Diag(spec.tracker(envs[i]), n_actions)
            return
        slots.pop(i, None)

    for i in range(len(envs)):
        start(i)
    while slots:
        on_step()
        order = sorted(slots)
        states = np.stack([slots[i].turn.state for i in order])
        seeds_now, steps_now = np.array([slots[i].seed for i in order]), np.array([slots[i].decisions for i in order])
        if track:
            actions, out = _act_observed(policy, states, seeds_now, steps_now)
            out = out.tolist() if out is not None else None  # rows as lists: cheap to keep, one array at the end
        else:
            actions = policy.act(states, seeds_now, steps_now)
        for k, (i, action) in enumerate(zip(order, actions)):
            slot = slots[i]
            a = int(action)
            if traces is not None:
                states_i, actions_i = traces[i]
                states_i.append(slot.turn.state)
                actions_i.append(a)
            slot.turn = slot.episode.send(a)
            slot.decisions += 1
            if track:
                d = slot.diag
                d.counts[a] += 1
                if out is not None:
                    d.rows.append(out[k])
                if d.per_step:
                    d.tracker.step(slot.turn, slot.decisions)
            if slot.turn.done:
                finish(i, slot.seed, slot.turn, slot)
                start(i)
    return results


def recheck(policy: Policy, seed: int, states: Sequence[np.ndarray], actions: Sequence[int]) -> dict[str, Any]:
    """One scored episode's decisions computed again, one state per call.

    ``states`` and ``actions`` are what the batched play saw and chose (``run_episodes``'s
    ``on_trace``). The environment is deterministic given its seed and the actions, so if every
    action is the same alone, the episode re-run alone follows the same states and gives exactly
    its scored return: this proves it without stepping the environment again. Returns
    ``{"seed", "decisions", "differs"}``: ``differs`` is ``[decision, batched action, alone]`` at
    the first difference (``decisions`` then counts up to it), None when every action agrees."""
    for t, (state, taken) in enumerate(zip(states, actions)):
        alone = int(policy.act(np.asarray(state)[None], np.array([seed]), np.array([t]))[0])
        if alone != int(taken):
            return {"seed": int(seed), "decisions": t + 1, "differs": [t, int(taken), alone]}
    return {"seed": int(seed), "decisions": len(actions), "differs": None}


class _Diag:
    """One episode's diagnostics while it is played: action counts, output rows, the task's tracker."""

    __slots__ = ("tracker", "per_step", "counts", "rows")

    def __init__(self, tracker: Any, n_actions: int):
        self.tracker = tracker
        self.per_step = bool(tracker.per_step)
        self.counts = [0] * n_actions
        self.rows: list[list[float]] = []  # the policy's output row of each decision


def _act_observed(policy: Policy, states: np.ndarray, seeds: np.ndarray, steps: np.ndarray) -> tuple[np.ndarray, Any]:
    """``policy.act`` and, for an ONNX policy, the raw output the actions were taken from.

    For an unmodified :class:`OnnxPolicy` this is exactly what its ``act`` does (the same call,
    the same checks, the same argmax); any other policy is simply asked for its actions."""
    if not (isinstance(policy, OnnxPolicy) and type(policy).act is OnnxPolicy.act):
        return policy.act(states, seeds, steps), None
    out = policy.raw(states)
    floating = np.issubdtype(out.dtype, np.floating)
    if floating and not np.isfinite(out).all():
        raise PolicyFailure("the model output NaN or infinity during an episode")
    try:
        actions = actions_from_output(out, policy.spec.n_actions)
    except ValueError as exc:
        raise PolicyFailure(f"unusable model output during an episode: {exc}") from None
    return actions, (out if floating and out.ndim == 2 else None)


def _facts(diag: _Diag, turn: Any) -> dict[str, Any]:
    """The plain, bounded facts of one finished episode (what travels to the parent)."""
    facts: dict[str, Any] = {"actions": list(diag.counts), "decisions": sum(diag.counts), "measure": None,
                             "confidence": None, "task": diag.tracker.finish(turn)}
    if diag.rows:
        rows = np.array(diag.rows, dtype=np.float64)
        if rows.min() >= 0.0 and rows.max() <= 1.0 and np.abs(rows.sum(axis=1) - 1.0).max() < 1e-3:
            p = np.clip(rows, 1e-12, 1.0)
            facts["measure"], value = "entropy", float(-(rows * np.log(p)).sum(axis=1).mean())
        elif rows.shape[1] >= 2:
            top = np.partition(rows, -2, axis=1)
            facts["measure"], value = "gap", float((top[:, -1] - top[:, -2]).mean())
        else:
            value = None
        facts["confidence"] = round(value, 6) if value is not None and np.isfinite(value) else None
    return facts


class SeedFeed:
    """The seeds of one ``episodes`` command: those it came with, then those the engine sends
    (``seeds`` messages, ``{"seeds": [...], "end": bool}``) as this worker's episodes end.

    Called when a slot frees up: takes what has arrived without waiting, and waits only when it
    has no seed left and the engine has not said ``end``."""

    def __init__(self, conn: Any, seeds: Sequence[int]):
        self.conn = conn
        self.local = deque(int(s) for s in seeds)
        self.end = False

    def _take(self) -> None:
        kind, value = decode(self.conn.recv_bytes(L.CHANNEL_TO_WORKER_BYTES), max_bytes=L.CHANNEL_TO_WORKER_BYTES)
        if kind != "seeds" or not isinstance(value, dict) or not isinstance(value.get("seeds"), list):
            raise MalformedMessage(f"expected more seeds, got {kind[:32]!r}")
        self.local.extend(int(s) for s in value["seeds"])
        self.end = self.end or bool(value.get("end"))

    def __call__(self) -> int | None:
        while not self.end and self.conn.poll(0):
            self._take()
        while not self.local and not self.end:
            self._take()
        return self.local.popleft() if self.local else None


def record_episode(policy: Policy, spec: Task, seed: int, path: str) -> dict[str, Any]:
    """Replay one seed with rendering on and write it as an H.264 MP4; returns return/frames."""
    from grader.runtime.video import FrameRecorder

    with FrameRecorder(make_env(spec, render=True, first_seed=seed), path, fps=spec.video_fps,
                       stride=spec.video_stride) as env:
        result = run_episodes(policy, spec, [seed], envs=[env])
        return {"return": result[seed][0], "length": result[seed][1], "frames": env.frames}


# --- the process ------------------------------------------------------------------------------------
Limits = L.WorkerLimits  # the worker's resource limits (grader.limits)


def _lower(limit: int, value: int) -> None:
    soft, hard = resource.getrlimit(limit)
    if hard == resource.RLIM_INFINITY or hard > value:
        resource.setrlimit(limit, (value, value))
    elif soft > hard:
        resource.setrlimit(limit, (hard, hard))


def _apply_limits(limits: Limits) -> None:
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


def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    line = text[-1] if text else type(exc).__name__
    if isinstance(exc, MemoryError) or "bad_alloc" in line or "Failed to allocate" in line:
        return "the model tried to allocate more memory than the grader allows"
    return f"{type(exc).__name__}: {line[:400]}"


class _Channel:
    """The worker's end of the socket; ``send`` may be called from the watchdog thread too."""

    def __init__(self, conn):
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
            started = meter.started if meter is not None else None
            if started is None:
                continue
            elapsed = time.monotonic() - started
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


class _Faults:
    """Test doubles (sent by tests through ``_fault``): a grader component that raises (``probe``,
    ``env``), or what a worker taken over by a model might do (``pickle``: a forged reply;
    ``spam``: progress messages forever)."""

    def __init__(self) -> None:
        self.where: str | None = None
        self.marker = "/nonexistent/marker"


def serve(conn, limits: Limits = Limits()) -> None:
    """Serve commands until ``close`` or the socket ends.

    Replies: ``("ok", value)``, ``("fail", student-facing message)``, ``("bug", {"message",
    "traceback"})``; during episodes also ``("episode", [seed, return, length])`` and
    ``("alive", stats)`` at least every :data:`HEARTBEAT_S`.
    """
    import onnxruntime  # import before the limits: it maps large shared libraries

    onnxruntime.set_default_logger_severity(4)  # errors come back as messages, not log lines
    _apply_limits(limits)
    channel = _Channel(conn)
    watchdog = _Watchdog(channel)
    watchdog.start()
    policy: Any = None
    meter = CallMeter(CallBudget())
    faults = _Faults()
    pool = EnvPool()
    probe_cache: dict[str, np.ndarray] = {}
    trace: dict[str, Any] = {}  # the decisions of one episode of the last episodes command (recheck)
    channel.send("ready", {"pid": os.getpid(), "uid": os.getuid(), "mode": os.environ.get("GRADER_WORKER_MODE", "")})
    if not conn.poll(0):  # nothing to do yet: load what every task's environments need meanwhile
        try:
            import gymnasium  # noqa: F401
        except ImportError:
            pass
    while True:
        try:
            raw = conn.recv_bytes(L.CHANNEL_TO_WORKER_BYTES)
        except (EOFError, OSError):
            return
        try:
            command, args = decode(raw, max_bytes=L.CHANNEL_TO_WORKER_BYTES)
            if not isinstance(args, dict):
                raise MalformedMessage("command arguments must be a mapping")
        except MalformedMessage as exc:
            channel.send("bug", {"message": f"malformed command: {exc}", "traceback": ""})
            continue
        if command == "close":
            return
        _cpu_budget(float(args.get("cpu_s", L.BUDGET_PROBE_S)))
        cpu0, t0 = _cpu_used(), time.monotonic()
        try:
            if faults.where == "pickle":  # a forged reply: what a worker taken over by a model might send
                import pickle

                channel.send_raw(pickle.dumps(_PickleBomb(faults.marker)))
                continue
            if faults.where == "spam":  # progress messages forever, never an answer
                while True:
                    channel.send("alive", {"calls": 0})
                    time.sleep(0.01)
            if command == "prepare":  # no reply: environments and probe states ahead of the commands needing them
                spec = get_task(args["task"])
                pool.expect(spec, [int(x) for x in args.get("seeds") or []])  # the seeds it will be given first
                if faults.where != "env":
                    if args.get("probe") and spec.name not in probe_cache:
                        probe_cache[spec.name] = _probe_states(spec, pool)
                    pool.fill_while_idle(spec, min(int(args.get("envs") or 1), spec.pool_size), conn)
            elif command == "load":
                spec = get_task(args["task"])
                b = args.get("budget") or {}
                meter = CallMeter(CallBudget(decision_s=float(b.get("decision_s", L.BUDGET_DECISION_S)),
                                             window=int(b.get("window", L.BUDGET_DECISION_WINDOW)),
                                             call_max_s=float(b.get("call_max_s", L.BUDGET_CALL_MAX_S))))
                watchdog.meter = meter
                policy = None
                trace.clear()  # decisions of the previous model
                policy = (RandomPolicy(spec) if args["model"] is None
                          else OnnxPolicy(args["model"], spec, device=args.get("device", "cpu"), meter=meter))
                channel.send("ok", {"fixed_batch_one": bool(policy.fixed_batch_one)})
                # The environments of the coming episodes, built while the engine checks the probe.
                if faults.where != "env":
                    pool.fill_while_idle(spec, min(int(args.get("prepare") or 0), spec.pool_size), conn)
            elif command == "probe":
                if faults.where == "probe":
                    raise RuntimeError("injected fault: the grader's probe failed")
                if not isinstance(policy, OnnxPolicy):
                    raise RuntimeError("probe needs an ONNX model loaded")
                name = policy.spec.name
                if name not in probe_cache:  # the same states for every model: once per task
                    probe_cache[name] = _probe_states(policy.spec, pool)
                channel.send("ok", probe(policy, pool_size=args.get("pool_size"), states=probe_cache[name]))
            elif command == "episodes":
                last = [time.monotonic()]
                calls0 = meter.snapshot()

                def stats() -> dict[str, float]:
                    now = meter.snapshot()
                    return {"calls": now["calls"] - calls0["calls"], "call_s": round(now["call_s"] - calls0["call_s"], 6),
                            "cpu_s": round(_cpu_used() - cpu0, 4), "wall_s": round(time.monotonic() - t0, 4)}

                facts: dict[int, dict] = {}

                def episode_done(seed: int, ret: float, length: int) -> None:
                    extra = [facts.pop(seed)] if seed in facts else []  # diagnostics: plain JSON data
                    channel.send("episode", [int(seed), float(ret), int(length), *extra])
                    last[0] = time.monotonic()

                first = [True]  # one early heartbeat after the first call: the engine learns the speed at once

                def heartbeat() -> None:
                    if time.monotonic() - last[0] > HEARTBEAT_S or (first[0] and meter.calls > calls0["calls"]):
                        first[0] = False
                        channel.send("alive", stats())
                        last[0] = time.monotonic()

                spec = get_task(args["task"])
                if faults.where == "env":
                    pool.factory = _broken_env_factory
                given = [int(s) for s in args["seeds"]]
                pool.expect(spec, given)  # environment k plays given[k] first: one built now is made ready for it
                n_envs = pool.size_for(spec, slots=min(int(args["pool_size"]), int(args.get("envs") or args["pool_size"])),
                                       fresh=int(args.get("fresh_envs") or args["pool_size"]))
                trace.clear()
                run_episodes(policy, spec, SeedFeed(conn, given) if args.get("more") else given,
                             envs=pool.get(spec, n_envs), on_episode=episode_done, on_step=heartbeat,
                             on_facts=facts.__setitem__ if args.get("diagnostics") else None,
                             on_trace=(lambda seed, states, acts: trace.update(seed=seed, states=states, actions=acts))
                             if args.get("trace") else None)
                channel.send("ok", stats())
            elif command == "recheck":
                if policy is None:
                    raise RuntimeError("recheck needs a model loaded")
                channel.send("ok", recheck(policy, trace["seed"], trace["states"], trace["actions"]) if trace
                             else {"seed": None, "decisions": 0, "differs": None})
                trace.clear()
            elif command == "actions":
                states = np.asarray(args["states"], dtype=np.float32)
                sizes = [int(b) for b in args.get("batch_sizes") or [len(states)]]
                channel.send("ok", actions_at_batch_sizes(policy, states, sizes))
            elif command == "record":
                path = os.path.join(os.getcwd(), "video.mp4")
                try:
                    info = record_episode(policy, get_task(args["task"]), int(args["seed"]), path)
                    with open(path, "rb") as f:
                        info["video"] = f.read()
                finally:
                    if os.path.exists(path):
                        os.unlink(path)
                channel.send("ok", info)
            elif command == "info":
                info = _sandbox_info()
                info["exists"] = [os.path.exists(str(p)) for p in list(args.get("paths") or [])[:64]]
                channel.send("ok", info)
            elif command == "_fault":
                faults.where = str(args.get("where"))
                faults.marker = str(args.get("marker", faults.marker))
                channel.send("ok", None)
            else:
                raise RuntimeError(f"unknown command {command!r}")
        except PolicyFailure as exc:
            channel.send("fail", str(exc))
        except MemoryError:
            channel.send("fail", "the model tried to allocate more memory than the grader allows")
        except Exception as exc:  # noqa: BLE001 - not the model's: a bug of the grader or of an environment
            channel.send("bug", {"message": _short(exc), "traceback": traceback.format_exc()[-20_000:]})


def _broken_env_factory(spec: Task, **kwargs: Any) -> Any:
    raise RuntimeError("injected fault: the environment factory failed")


class _PickleBomb:
    """Pickles to "open(marker, 'w')": unpickling it would create the file (tests: it never is)."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point of the worker process: ``python -I -c '...main()' FD [LIMITS_JSON]`` (see grader.runtime.engine)."""
    from multiprocessing.connection import Connection

    argv = list(sys.argv[1:] if argv is None else argv)
    given = json.loads(argv[1]) if len(argv) > 1 else {}
    limits = Limits(**{k: int(v) for k, v in given.items() if k in Limits.__dataclass_fields__})
    serve(Connection(int(argv[0])), limits)


if __name__ == "__main__":
    main()
