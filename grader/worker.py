"""The sandboxed worker process: the only place a submitted model is run.

A worker is started with ``spawn`` (never ``fork``) by :mod:`grader.engine`. It sets its own
resource limits (address space, CPU time, no core files), then serves commands over a pipe:
``load`` a model from bytes, ``probe`` it on contract states, play ``episodes`` with a pool of
environments stepped together (one batched onnxruntime call per step), ``record`` one episode
to MP4, or return the policy's ``actions`` on given states (duplicate detection). The parent
enforces a wall timeout and kills the worker when it is exceeded, so a hanging or memory-hungry
model costs only its own grading.

Episodes are played by :func:`grader.contract.play_episode`; this module only decides how the
actions of many episodes are computed together.
"""

from __future__ import annotations

import os
import resource
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from grader.contract import Task, actions_from_output, get_task, make_env, play_episode

HEARTBEAT_S = 1.0  # during episodes the worker reports progress at least this often


class PolicyFailure(RuntimeError):
    """The model failed while acting (bad output, NaN); the message is student-facing."""


class Policy(Protocol):
    """What the engine needs from a policy: actions for a batch of states."""

    def act(self, states: np.ndarray, seeds: np.ndarray, steps: np.ndarray) -> np.ndarray: ...


class OnnxPolicy:
    """An onnxruntime session with one intra-op thread, run on a whole batch per call."""

    def __init__(self, model_bytes: bytes, spec: Task, *, device: str = "cpu"):
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
        self.session = ort.InferenceSession(model_bytes, options, providers=providers)
        self.spec = spec
        inp = self.session.get_inputs()[0]
        self.input_name = inp.name
        self.output_name = self.session.get_outputs()[0].name
        self.fixed_batch_one = inp.shape[0] == 1

    def raw(self, states: np.ndarray) -> np.ndarray:
        """The model's output for a batch, run state by state if the batch is fixed at 1."""
        states = np.ascontiguousarray(states, dtype=np.float32)
        if self.fixed_batch_one and len(states) != 1:
            return np.concatenate([self.raw(s[None]) for s in states])
        return np.asarray(self.session.run([self.output_name], {self.input_name: states})[0])

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
        self.n = spec.n_actions

    def act(self, states: np.ndarray, seeds: np.ndarray, steps: np.ndarray) -> np.ndarray:
        return np.array([np.random.default_rng([int(s), int(t)]).integers(self.n) for s, t in zip(seeds, steps)])


# --- probing --------------------------------------------------------------------------------------
PROBE_STATES = 16
PROBE_SEED = 12345


def probe_states(spec: Task, n: int = PROBE_STATES, env: Any = None) -> np.ndarray:
    """Realistic states from a fixed-seed random rollout under the contract's protocol."""
    own = env is None
    env = make_env(spec) if own else env
    rng = np.random.default_rng(PROBE_SEED)
    states: list[np.ndarray] = []
    seed = PROBE_SEED
    stride = spec.probe_stride
    while len(states) < n:
        episode = play_episode(spec, env, seed)
        turn = next(episode)
        t = 0
        while not turn.done and len(states) < n:
            if t % stride == 0:
                states.append(turn.state)
            turn = episode.send(int(rng.integers(spec.n_actions)))
            t += 1
        seed += 1
    if own:
        env.close()
    return np.stack(states).astype(np.float32)


def probe(policy: OnnxPolicy, env: Any = None) -> dict[str, Any]:
    states = probe_states(policy.spec, env=env)
    singles = [policy.raw(s[None]) for s in states]
    batch, batch_error = None, ""
    if not policy.fixed_batch_one:
        try:
            batch = policy.raw(states)
        except Exception as exc:  # noqa: BLE001 - any runtime error is the model's
            batch_error = _short(exc)
    return {"singles": singles, "batch": batch, "batch_error": batch_error,
            "fixed_batch_one": policy.fixed_batch_one, "output_name": policy.output_name[:200]}


# --- episodes ------------------------------------------------------------------------------------
@dataclass
class _Slot:
    seed: int
    episode: Any
    turn: Any
    decisions: int = 0


class EnvPool:
    """Environments kept alive between commands: building an ALE env costs ~80 ms."""

    def __init__(self) -> None:
        self._envs: dict[str, list[Any]] = {}

    def get(self, spec: Task, n: int) -> list[Any]:
        envs = self._envs.setdefault(spec.name, [])
        while len(envs) < n:
            envs.append(make_env(spec))
        return envs[:n]


def run_episodes(
    policy: Policy,
    spec: Task,
    seeds: Sequence[int],
    *,
    envs: Sequence[Any],
    on_episode: Callable[[int, float, int], None] = lambda seed, ret, length: None,
    on_step: Callable[[], None] = lambda: None,
) -> dict[int, tuple[float, int]]:
    """Play one episode per seed on ``envs``, stepped together.

    Each step gathers the states of all running episodes into one batch and makes one policy
    call. Per-episode results depend only on the seed and the model (whose outputs the checks
    prove independent of the batch), never on the pool size or the order of seeds.
    """
    pending = list(seeds)[::-1]
    envs = list(envs)[: len(pending)]
    results: dict[int, tuple[float, int]] = {}
    slots: dict[int, _Slot] = {}

    def start(i: int) -> None:
        while pending:
            seed = pending.pop()
            episode = play_episode(spec, envs[i], seed)
            turn = next(episode)
            if turn.done:  # ended during the opening protocol
                results[seed] = (turn.episode_return, turn.length)
                on_episode(seed, turn.episode_return, turn.length)
                continue
            slots[i] = _Slot(seed, episode, turn)
            return
        slots.pop(i, None)

    for i in range(len(envs)):
        start(i)
    while slots:
        on_step()
        order = sorted(slots)
        states = np.stack([slots[i].turn.state for i in order])
        actions = policy.act(states, np.array([slots[i].seed for i in order]), np.array([slots[i].decisions for i in order]))
        for i, action in zip(order, actions):
            slot = slots[i]
            slot.turn = slot.episode.send(int(action))
            slot.decisions += 1
            if slot.turn.done:
                results[slot.seed] = (slot.turn.episode_return, slot.turn.length)
                on_episode(slot.seed, slot.turn.episode_return, slot.turn.length)
                start(i)
    return results


def record_episode(policy: Policy, spec: Task, seed: int, path: str) -> dict[str, Any]:
    """Replay one seed with rendering on and write it as an H.264 MP4; returns return/frames."""
    from grader.video import FrameRecorder

    with FrameRecorder(make_env(spec, render=True), path, fps=spec.video_fps) as env:
        result = run_episodes(policy, spec, [seed], envs=[env])
        return {"return": result[seed][0], "length": result[seed][1], "frames": env.frames}


# --- the process ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Limits:
    memory_bytes: int = 4 * 2**30
    cpu_seconds_per_command: int = 3600


def _apply_limits(limits: Limits) -> None:
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    if hard == resource.RLIM_INFINITY or hard > limits.memory_bytes:
        resource.setrlimit(resource.RLIMIT_AS, (limits.memory_bytes, limits.memory_bytes))


def _cpu_budget(seconds: int) -> None:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    used = int(usage.ru_utime + usage.ru_stime) + 1
    _, hard = resource.getrlimit(resource.RLIMIT_CPU)
    soft = used + seconds
    if hard != resource.RLIM_INFINITY:
        soft = min(soft, hard)
    resource.setrlimit(resource.RLIMIT_CPU, (soft, hard))


def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    line = text[-1] if text else type(exc).__name__
    if isinstance(exc, MemoryError) or "bad_alloc" in line or "Failed to allocate" in line:
        return "the model tried to allocate more memory than the grader allows"
    return f"{type(exc).__name__}: {line[:400]}"


def worker_main(conn, limits: Limits) -> None:
    """Serve commands until ``close`` or the pipe ends. Replies are ("ok", value) or ("fail", msg)."""
    import onnxruntime  # import before the limits: it maps large shared libraries

    onnxruntime.set_default_logger_severity(4)  # errors come back as messages, not log lines

    os.chdir(os.path.realpath(os.environ.get("TMPDIR", "/tmp")))
    _apply_limits(limits)
    policy: Policy | None = None
    pool = EnvPool()
    while True:
        try:
            command, args = conn.recv()
        except (EOFError, OSError):
            return
        if command == "close":
            return
        _cpu_budget(limits.cpu_seconds_per_command)
        try:
            if command == "load":
                spec = get_task(args["task"])
                policy = RandomPolicy(spec) if args["model"] is None else OnnxPolicy(args["model"], spec, device=args.get("device", "cpu"))
                conn.send(("ok", None))
            elif command == "probe":
                conn.send(("ok", probe(policy, env=pool.get(policy.spec, 1)[0])))
            elif command == "episodes":
                last = [time.monotonic()]

                def episode_done(seed: int, ret: float, length: int) -> None:
                    conn.send(("episode", (seed, ret, length)))
                    last[0] = time.monotonic()

                def heartbeat() -> None:
                    if time.monotonic() - last[0] > HEARTBEAT_S:
                        conn.send(("alive", None))
                        last[0] = time.monotonic()

                spec = get_task(args["task"])
                run_episodes(policy, spec, args["seeds"], envs=pool.get(spec, args["pool_size"]),
                             on_episode=episode_done, on_step=heartbeat)
                conn.send(("ok", None))
            elif command == "actions":
                states = np.asarray(args["states"], dtype=np.float32)
                n = len(states)
                conn.send(("ok", np.asarray(policy.act(states, np.zeros(n, np.int64), np.zeros(n, np.int64)), dtype=np.int64)))
            elif command == "record":
                conn.send(("ok", record_episode(policy, get_task(args["task"]), args["seed"], args["path"])))
            else:
                conn.send(("fail", f"unknown command {command!r}"))
        except PolicyFailure as exc:
            conn.send(("fail", str(exc)))
        except MemoryError:
            conn.send(("fail", "the model tried to allocate more memory than the grader allows"))
        except Exception as exc:  # noqa: BLE001 - onnxruntime raises many types for bad models
            detail = _short(exc)
            if os.environ.get("GRADER_DEBUG"):
                detail += "\n" + traceback.format_exc()
            conn.send(("fail", detail))
