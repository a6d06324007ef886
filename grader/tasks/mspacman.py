"""Task ``mspacman``: the DQN homework on ``ALE/MsPacman-v5`` (the lesson's protocol).

* Environment: default arguments (frameskip 4, sticky actions 0.25); the policy uses actions
  0..4 (NOOP, UP, RIGHT, LEFT, DOWN).
* Preprocessing (:func:`preprocess_frames`): a pure, vectorised function, the lesson's steps.
* State: the last 5 preprocessed frames, oldest first, ``[5, 44, 40]`` float32 in 0..255.
* Protocol (:meth:`MsPacman.play_episode`): 80 + 1 steps of LEFT after reset (the last gives the
  first frame, stacked 5 times), then the policy; after a step that loses a life, 36 NOOPs whose
  frames are not stacked. The score counts every reward, protocol steps included.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Any

import numpy as np

from grader.tasks.base import Episode, Task, Turn

OPENING_STEPS = 80  # steps of OPENING_ACTION after reset, before the first state
OPENING_ACTION = 3  # LEFT
DEATH_STEPS = 36  # NOOP steps after a step that loses a life; their frames are not stacked
DEATH_ACTION = 0  # NOOP
FRAME_STACK = 5
BORDER_VALUE = 150

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


@dataclass(frozen=True)
class MsPacman(Task):
    """MsPacman's environment needs ale-py registered; its episodes follow the lesson's protocol."""

    def make_env(self, *, render: bool = False) -> Any:
        import ale_py
        import gymnasium as gym

        gym.register_envs(ale_py)
        ale_py.ALEInterface.setLoggerMode(ale_py.LoggerMode.Error)  # no banner per env
        # The observation is the RGB frame either way; rgb_array only enables env.render().
        return gym.make(self.env_id, render_mode="rgb_array" if render else None)

    def play_episode(self, env: Any, seed: int) -> Episode:
        return _episode(env, seed, self.state_shape)


def _episode(env: Any, seed: int, state_shape: tuple[int, ...]) -> Episode:
    frame, info = env.reset(seed=int(seed))
    total, length, pending = 0.0, 0, 0.0

    def step(action: int) -> tuple[np.ndarray, bool, dict]:
        nonlocal total, length, pending
        frame, reward, terminated, truncated, info = env.step(action)
        total += float(reward)
        pending += float(reward)
        length += 1
        return frame, bool(terminated or truncated), info

    for _ in range(OPENING_STEPS + 1):
        frame, done, info = step(OPENING_ACTION)
        if done:
            yield Turn(np.zeros(state_shape, dtype=np.float32), pending, False, True, total, length)
            return
    stack = deque([preprocess_frames(frame)] * FRAME_STACK, maxlen=FRAME_STACK)
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


TASK = MsPacman(
    name="mspacman",
    env_id="ALE/MsPacman-v5",
    state_shape=(FRAME_STACK, 44, 40),
    n_actions=5,
    success_threshold=None,
    description="DQN on ALE/MsPacman-v5, 5 stacked 44x40 grayscale frames, actions 0..4",
    pool_size=4,
    video_fps=15,  # 60 Hz / frameskip 4
    video_pixelated=True,
    probe_stride=3,
    input_hint=("the state is 5 stacked preprocessed frames of 44x40 (see the lesson's preprocess_observation); "
                "export with torch.zeros(1, 5, 44, 40) as the example input"),
    output_hint="the output is the 5 Q-values of actions 0..4 (NOOP, UP, RIGHT, LEFT, DOWN)",
    notebook="grader.notebook.mspacman",
)
