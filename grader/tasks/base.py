"""What a task plug-in is: :class:`Task`, the contract of one homework.

A task holds everything that differs between homeworks, so that nothing outside its module ever
asks which task it is:

* the environment (:meth:`Task.make_env`) and the policy's I/O signature (``state_shape``,
  ``n_actions``);
* the episode protocol (:meth:`Task.play_episode`, a generator yielding a :class:`Turn` each
  time the policy must act) and any preprocessing it applies;
* engine settings: the pool of environments stepped together per worker, the video frame rate,
  the stride of the probe rollout;
* the hints shown for export mistakes;
* optionally, its notebook checks (``notebook``: a module with ``MARKERS`` and ``collect``).

The default protocol (used by LunarLander and CartPole) resets with the episode's seed and steps
until the environment terminates or truncates; a task with another protocol overrides
:meth:`Task.play_episode`.
"""

from __future__ import annotations

import importlib
from collections.abc import Generator
from dataclasses import dataclass
from typing import Any

import numpy as np


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


@dataclass(frozen=True)
class Task:
    """The contract of one homework; subclass it to change the environment or the protocol."""

    name: str
    env_id: str
    state_shape: tuple[int, ...]  # one state, without the batch axis
    n_actions: int
    success_threshold: float | None  # an episode return at or above it counts as a success
    description: str
    pool_size: int = 8  # environments stepped together in each worker
    video_fps: int = 30
    video_pixelated: bool = False  # the report scales the video without smoothing (pixel art)
    probe_stride: int = 5  # the probe rollout keeps every n-th state
    input_hint: str = ""  # how to export with the right input (shown when the input is wrong)
    output_hint: str = ""  # what the output must be (shown when it is wrong)
    notebook: str | None = None  # module with MARKERS and collect() for this task's notebooks

    @property
    def input_signature(self) -> str:
        """The ONNX input signature, as shown in messages: ``[batch, 5, 44, 40]``."""
        return "[batch, " + ", ".join(str(d) for d in self.state_shape) + "]"

    def make_env(self, *, render: bool = False) -> Any:
        """The task's environment with its contract arguments (``render`` enables ``env.render()``)."""
        import gymnasium as gym

        return gym.make(self.env_id, render_mode="rgb_array" if render else None)

    def play_episode(self, env: Any, seed: int) -> Episode:
        """Play one seeded episode: reset with ``seed``, step until it terminates or truncates.

        Usage: ``turn = next(gen)``; while not ``turn.done``: ``turn = gen.send(action)``.
        """
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

    def notebook_module(self) -> Any | None:
        """The module grading this task's notebooks, or None when the task has none."""
        return importlib.import_module(self.notebook) if self.notebook else None
