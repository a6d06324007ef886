"""Episodes inside a worker: a pool of environments stepped together (one batched model call per
step), the seeds fed as the engine hands them out, each episode's diagnostics, the reproducibility
recheck, and the recording of one episode to MP4. Each episode is played by
:func:`grader.tasks.contract.play_episode`; this module only decides how the actions of many
episodes are computed together."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from grader import limits as L
from grader.errors import MalformedMessage, PolicyFailure
from grader.runtime.channel import decode
from grader.runtime.policy import OnnxPolicy, Policy
from grader.tasks.base import Episode, Turn
from grader.tasks.contract import Task, actions_from_output, make_env, play_episode


@dataclass
class _Slot:
    seed: int
    episode: Episode
    turn: Turn
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
        self._served: dict[str, int] = {}  # episodes commands played per environment
        self._first: dict[str, list[int]] = {}  # per environment: the seeds environments 0, 1, ... play first
        self.factory = factory

    @staticmethod
    def _key(spec: Task) -> str:
        """The input contracts of one homework share its environments (the same ``make_env``)."""
        return f"{spec.homework_name}:{spec.env_id}"

    def expect(self, spec: Task, seeds: Sequence[int]) -> None:
        self._first[self._key(spec)] = [int(s) for s in seeds]

    def _build(self, spec: Task, envs: list[Any]) -> None:
        first = self._first.get(self._key(spec), [])
        k = len(envs)
        envs.append(self.factory(spec, first_seed=first[k]) if k < len(first) else self.factory(spec))

    def get(self, spec: Task, n: int) -> list[Any]:
        envs = self._envs.setdefault(self._key(spec), [])
        while len(envs) < n:
            self._build(spec, envs)
        return envs[:n]

    def size_for(self, spec: Task, *, slots: int, fresh: int) -> int:
        """How many environments the next episodes of ``spec`` step together, at most ``slots``:
        for the first episodes command, ``fresh`` (see :func:`grader.runtime.dispatch.fresh_envs`) or those
        already built if more; for every later one, one more than those built, so that a
        long-lived worker's pool grows to the full batch over its first commands."""
        built = len(self._envs.get(self._key(spec), []))
        served = self._served.get(self._key(spec), 0)
        self._served[self._key(spec)] = served + 1
        return max(1, min(slots, max(fresh, built + (1 if served else 0))))

    def fill_while_idle(self, spec: Task, n: int, conn: Any) -> None:
        """Build up to ``n`` environments, one at a time, for as long as no command is waiting:
        a command (the probe, the episodes) is answered first, and the episodes build the rest."""
        envs = self._envs.setdefault(self._key(spec), [])
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

    def finish(i: int, seed: int, turn: Turn, slot: _Slot | None) -> None:
        nonlocal traces
        if traces is not None and slot is not None and on_trace is not None:
            on_trace(seed, *traces[i])
            traces = None  # one episode is enough: stop recording the others
        results[seed] = (turn.episode_return, turn.length)
        if on_facts is not None:
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
        actions, out = _decide(policy, spec, [slots[i] for i in order], track)
        for k, (i, action) in enumerate(zip(order, actions)):
            slot = slots[i]
            _advance(slot, int(action), out[k] if out is not None else None,
                     traces.get(i) if traces is not None else None, track)
            if slot.turn.done:
                finish(i, slot.seed, slot.turn, slot)
                start(i)
    return results


def _decide(policy: Policy, spec: Task, slots: list[_Slot], track: bool) -> tuple[np.ndarray, np.ndarray | None]:
    """One policy call on the states of ``slots`` (batched by the task: a raw frame is copied once,
    into the batch): their actions and, when diagnostics are tracked, the policy's output (each
    episode keeps a view of its row: cheap to keep, one float64 array at the end)."""
    states = spec.stack_states([slot.turn.state for slot in slots])
    seeds_now, steps_now = np.array([slot.seed for slot in slots]), np.array([slot.decisions for slot in slots])
    if not track:
        return policy.act(states, seeds_now, steps_now), None
    return _act_observed(policy, states, seeds_now, steps_now)


def _advance(slot: _Slot, action: int, row: np.ndarray | None, trace: tuple[list, list] | None, track: bool) -> None:
    """Play ``action`` in ``slot``'s episode, keeping the trace (the state it was chosen on) and
    the diagnostics (the action's count, the output ``row``, the task's tracker)."""
    if trace is not None:
        trace[0].append(slot.turn.state)
        trace[1].append(action)
    slot.turn = slot.episode.send(action)
    slot.decisions += 1
    if track:
        d = slot.diag
        d.counts[action] += 1
        if row is not None:
            d.rows.append(row)
        if d.per_step:
            d.tracker.step(slot.turn, slot.decisions)


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
        self.rows: list[np.ndarray] = []  # the policy's output row of each decision (a view of its batch's output)


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


def _facts(diag: _Diag, turn: Turn) -> dict[str, Any]:
    """The plain, bounded facts of one finished episode (what travels to the parent)."""
    facts: dict[str, Any] = {"actions": list(diag.counts), "decisions": sum(diag.counts), "measure": None,
                             "confidence": None, "task": diag.tracker.finish(turn)}
    if diag.rows:
        rows = np.stack(diag.rows).astype(np.float64)
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
