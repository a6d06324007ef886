"""The task contracts: what a submission is, for each graded task.

This module is the project's single implementation of ``shared/CONTRACTS.md``. The checks, the
evaluation engine, the video recorder, the notebook grader and the reference agents all import
it; nothing else in the project builds an environment, preprocesses a frame or plays an episode.

A task contract has four parts:

* the environment (:func:`make_env`);
* the policy's I/O signature (:attr:`TaskSpec.state_shape`, :attr:`TaskSpec.n_actions`) and how
  an ONNX output becomes an action (:func:`actions_from_output`);
* the MsPacman frame preprocessing (:func:`preprocess_frames`), a pure vectorised function;
* the episode protocol (:func:`play_episode`): a generator that owns the environment, yields a
  :class:`Turn` each time the policy must act and receives the action back. Drivers (the batched
  engine, the video recorder, the reference trainers) only decide how actions are computed.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Generator
from dataclasses import dataclass
from typing import Any

import numpy as np

TASK_NAMES = ("lunarlander", "mspacman")


@dataclass(frozen=True)
class TaskSpec:
    """Static facts about one task's contract."""

    name: str
    env_id: str
    state_shape: tuple[int, ...]  # one state, without the batch axis
    n_actions: int
    success_threshold: float | None  # an episode return at or above it counts as a success
    description: str

    @property
    def input_signature(self) -> str:
        """The ONNX input signature, as shown in messages: ``[batch, 5, 44, 40]``."""
        return "[batch, " + ", ".join(str(d) for d in self.state_shape) + "]"


LUNARLANDER = TaskSpec(
    name="lunarlander",
    env_id="LunarLander-v3",
    state_shape=(8,),
    n_actions=4,
    success_threshold=200.0,
    description="actor-critic on Gymnasium LunarLander-v3 (discrete, 1000-step limit)",
)

MSPACMAN = TaskSpec(
    name="mspacman",
    env_id="ALE/MsPacman-v5",
    state_shape=(5, 44, 40),
    n_actions=5,
    success_threshold=None,
    description="DQN on ALE/MsPacman-v5, 5 stacked 44x40 grayscale frames, actions 0..4",
)

TASKS: dict[str, TaskSpec] = {t.name: t for t in (LUNARLANDER, MSPACMAN)}

# --- MsPacman constants (the lesson's values) -------------------------------------------------
OPENING_STEPS = 80  # steps of OPENING_ACTION after reset, before the first state
OPENING_ACTION = 3  # LEFT
DEATH_STEPS = 36  # NOOP steps after a step that loses a life; their frames are not stacked
DEATH_ACTION = 0  # NOOP
FRAME_STACK = 5
BORDER_VALUE = 150


def get_task(name: str) -> TaskSpec:
    """Return the contract of task ``name``, or raise ``KeyError`` naming the known tasks."""
    try:
        return TASKS[name]
    except KeyError:
        raise KeyError(f"unknown task {name!r}; known tasks: {', '.join(TASK_NAMES)}") from None


def make_env(task: TaskSpec | str, *, render: bool = False) -> Any:
    """Create the task's environment with its contract arguments.

    ``render=True`` asks for ``render_mode="rgb_array"`` (for videos). Scoring never renders.
    """
    import gymnasium as gym

    spec = get_task(task) if isinstance(task, str) else task
    if spec.name == "mspacman":
        import ale_py

        gym.register_envs(ale_py)
        ale_py.ALEInterface.setLoggerMode(ale_py.LoggerMode.Error)  # no banner per env
        # The observation is the RGB frame either way; rgb_array only enables env.render().
    return gym.make(spec.env_id, render_mode="rgb_array" if render else None)


# --- Preprocessing ----------------------------------------------------------------------------
_ROWS = slice(4, 169, 4)  # rows 1..42 of the 44x40 output come from these frame rows
_COLS = slice(1, None, 4)


def preprocess_frames(frames: np.ndarray) -> np.ndarray:
    """MsPacman frames ``(..., 210, 160, 3)`` uint8 -> ``(..., 44, 40)`` float32.

    The lesson's steps are: grayscale as the float mean of the channels truncated to uint8; keep
    rows ``[1:171]``; add 2 rows of 150 above and below (174 rows); take ``[1::4, 1::4]``.
    Output row 0 and row 43 fall on the added borders, and rows 1..42 on frame rows 4, 8, .., 168;
    this computes exactly that while touching only the kept pixels (a test checks it against a
    literal transcription of the lesson). Values stay in 0..255.
    """
    frames = np.asarray(frames)
    if frames.shape[-3:] != (210, 160, 3) or frames.dtype != np.uint8:
        raise ValueError(
            f"expected uint8 frames of shape (..., 210, 160, 3), got {frames.dtype} {frames.shape}"
        )
    kept = frames[..., _ROWS, _COLS, :]
    gray = (kept.sum(axis=-1, dtype=np.float32) / np.float32(3.0)).astype(np.uint8)
    out = np.full(frames.shape[:-3] + (44, 40), BORDER_VALUE, dtype=np.float32)
    out[..., 1:43, :] = gray
    return out


def preprocess_frame(frame: np.ndarray) -> np.ndarray:
    """One frame ``(210, 160, 3)`` -> ``(44, 40)`` float32; see :func:`preprocess_frames`."""
    return preprocess_frames(frame)


# --- ONNX output -> action ---------------------------------------------------------------------
def actions_from_output(output: np.ndarray, n_actions: int) -> np.ndarray:
    """Turn a policy output for a batch into int64 actions.

    A float ``[b, n_actions]`` output (probabilities, logits or Q-values) gives its argmax, the
    first index on ties. An integer ``[b]`` or ``[b, 1]`` output is the action itself. Raises
    ``ValueError`` for anything else, including an action outside ``0..n_actions-1``.
    """
    out = np.asarray(output)
    if np.issubdtype(out.dtype, np.floating):
        if out.ndim != 2 or out.shape[1] != n_actions:
            raise ValueError(f"expected a float output of shape [batch, {n_actions}], got {list(out.shape)}")
        return np.argmax(out, axis=1).astype(np.int64)
    if np.issubdtype(out.dtype, np.integer):
        if out.ndim == 2 and out.shape[1] == 1:
            out = out[:, 0]
        if out.ndim != 1:
            raise ValueError(f"expected an integer action output of shape [batch] or [batch, 1], got {list(out.shape)}")
        if out.size and (out.min() < 0 or out.max() >= n_actions):
            raise ValueError(f"action {int(out.max() if out.max() >= n_actions else out.min())} is outside 0..{n_actions - 1}")
        return out.astype(np.int64)
    raise ValueError(f"output dtype {out.dtype} is neither float nor integer")


# --- Episode protocol ---------------------------------------------------------------------------
@dataclass(frozen=True)
class Turn:
    """What an episode generator yields.

    ``state`` is the policy input for this env (no batch axis). ``reward`` is the env reward
    collected since the previous turn (protocol steps included) and ``life_lost`` says whether
    a life was lost since then; trainers use both, graders only the totals. When ``done`` is true
    the episode is over: send nothing more, read ``episode_return`` and ``length``.
    """

    state: np.ndarray
    reward: float
    life_lost: bool
    done: bool
    episode_return: float
    length: int  # env steps so far, protocol steps included


Episode = Generator[Turn, int, None]


def play_episode(task: TaskSpec | str, env: Any, seed: int) -> Episode:
    """Play one seeded episode of ``task`` on ``env`` under the contract's protocol.

    Usage: ``turn = next(gen)``; while not ``turn.done``: ``turn = gen.send(action)``.
    """
    spec = get_task(task) if isinstance(task, str) else task
    if spec.name == "lunarlander":
        return _lunarlander_episode(env, seed)
    return _mspacman_episode(env, seed)


def _lunarlander_episode(env: Any, seed: int) -> Episode:
    obs, _ = env.reset(seed=int(seed))
    total, length, reward, done = 0.0, 0, 0.0, False
    while True:
        turn = Turn(np.asarray(obs, dtype=np.float32), reward, False, done, total, length)
        if done:
            yield turn
            return
        action = yield turn
        obs, reward, terminated, truncated, _ = env.step(int(action))
        reward = float(reward)
        total += reward
        length += 1
        done = bool(terminated or truncated)


def _mspacman_episode(env: Any, seed: int) -> Episode:
    frame, info = env.reset(seed=int(seed))
    total, length, pending = 0.0, 0, 0.0

    def step(action: int) -> tuple[np.ndarray, bool, dict]:
        nonlocal total, length, pending
        frame, reward, terminated, truncated, info = env.step(action)
        total += float(reward)
        pending += float(reward)
        length += 1
        return frame, bool(terminated or truncated), info

    def empty_state() -> np.ndarray:
        return np.zeros(MSPACMAN.state_shape, dtype=np.float32)

    for _ in range(OPENING_STEPS + 1):
        frame, done, info = step(OPENING_ACTION)
        if done:
            yield Turn(empty_state(), pending, False, True, total, length)
            return
    first = preprocess_frames(frame)
    stack = deque([first] * FRAME_STACK, maxlen=FRAME_STACK)
    lives = info["lives"]
    life_lost = False
    while True:
        reward, pending = pending, 0.0
        action = yield Turn(np.stack(stack), reward, life_lost, False, total, length)
        frame, done, info = step(int(action))
        stack.append(preprocess_frames(frame))
        life_lost = info["lives"] < lives
        lives = info["lives"]  # as in the lesson: the policy step's count, not the NOOPs'
        if life_lost and not done:
            for _ in range(DEATH_STEPS):
                _, done, _ = step(DEATH_ACTION)
                if done:
                    break
        if done:
            yield Turn(np.stack(stack), pending, life_lost, True, total, length)
            return
