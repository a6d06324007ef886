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
* optionally, its notebook checks (``notebook``: a module with ``MARKERS`` and ``collect``);
* its diagnostics (:meth:`Task.tracker`, :attr:`Task.outcomes`, :meth:`Task.diagnose`): the facts
  of each scored episode, collected in the worker while it is played (no extra runs), and what
  they say about the policy (how episodes ended, the dominant failure and its hint).

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
class Outcome:
    """One way an episode can end (a task's :attr:`Task.outcomes`).

    ``hint`` is shown when this is the dominant failure; it may use ``{n}`` (episodes with this
    outcome), ``{total}`` and ``{pct}``."""

    key: str
    label: str  # "landed between the flags": reads after a count
    success: bool = False
    hint: str = ""


class Tracker:
    """Collects the facts of one episode in the worker, during the one scored play.

    :meth:`step` runs after every decision when ``per_step`` is true (keep it cheap: it runs in the
    scoring loop); :meth:`finish` runs once, on the last turn, while the environment still holds the
    final state. Both read only; they must never act on the environment. ``finish`` returns small
    JSON-able data: ``{"outcome": key, "end": {name: number}, ...}``."""

    per_step = False

    def __init__(self, env: Any = None):
        self.env = env

    def step(self, turn: Turn, decision: int) -> None:
        pass

    def finish(self, turn: Turn) -> dict[str, Any]:
        return {}


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
    video_stride: int = 1  # env steps per video frame (the last step is always shown): fps x stride = env Hz
    video_pixelated: bool = False  # the report scales the video without smoothing (pixel art)
    probe_stride: int = 5  # the probe rollout keeps every n-th state
    input_hint: str = ""  # how to export with the right input (shown when the input is wrong)
    output_hint: str = ""  # what the output must be (shown when it is wrong)
    notebook: str | None = None  # module with MARKERS and collect() for this task's notebooks
    action_names: tuple[str, ...] = ()  # what each action does, in words (diagnostics)
    outcomes: tuple[Outcome, ...] = ()  # how an episode can end (diagnostics), in the order shown
    homework: str = ""  # the homework whose rubric grades this input contract; "" = ``name``
    input_dtype: str = "float32"  # the ONNX input's element type (numpy's name)
    # said when a model under this contract plays at the random policy's level ("" = nothing to add): a likely
    # cause that belongs to the contract (MsPacman's lesson states fed to a network trained on other states)
    random_level_hint: str = ""

    @property
    def homework_name(self) -> str:
        """The homework this contract belongs to: its rubric, notebook checks and baselines.

        A homework may accept several input contracts (MsPacman: the lesson's preprocessed states,
        or raw frames with the preprocessing inside the model); each is a task of its own, named
        apart, with ``homework`` naming the homework's main task."""
        return self.homework or self.name

    @property
    def input_signature(self) -> str:
        """The ONNX input signature, as shown in messages: ``[batch, 5, 44, 40]``."""
        shape = "[batch, " + ", ".join(str(d) for d in self.state_shape) + "]"
        return shape if self.input_dtype == "float32" else f"{shape} {self.input_dtype}"

    @property
    def family_signature(self) -> str:
        """The signature of this contract's family in the list of what tasks take (messages): one
        entry for contracts that differ only in a size the student chooses."""
        return self.input_signature

    def probe_source(self) -> Task:
        """The contract whose probe rollout (and shipped file) gives this one's probe states:
        itself, or for a family of contracts the largest (see :meth:`probe_view`)."""
        return self

    def probe_view(self, states: np.ndarray) -> np.ndarray:
        """This contract's probe states from those of :meth:`probe_source`."""
        return states

    def stack_states(self, states: Any) -> np.ndarray:
        """One policy batch ``[n, *state_shape]`` of ``input_dtype`` from ``n`` :attr:`Turn.state` s."""
        return np.stack(states)

    def frames_source(self) -> Task | None:
        """The contract whose raw frames give every contract of this homework its states
        (:meth:`states_from_frames`), so that duplicate detection compares models of different
        contracts on the same frames; None when the homework has one form of states."""
        return None

    def frames_view(self, frames: np.ndarray) -> np.ndarray:
        """Raw frames of :meth:`frames_source` as this contract stacks them (its preprocessing of each)."""
        return frames

    def states_from_frames(self, frames: np.ndarray, index: np.ndarray) -> np.ndarray:
        """This contract's states ``[n, *state_shape]`` from :meth:`frames_source`'s compact rollout:
        each distinct frame once (``frames``) and each state as ``[n, K]`` indices into them, oldest
        first; this contract stacks the last ``state_shape[0]`` of them, each in its :meth:`frames_view`."""
        return np.take(self.frames_view(frames), index[:, index.shape[1] - self.state_shape[0]:], axis=0)

    def make_env(self, *, render: bool = False, first_seed: int | None = None) -> Any:
        """The task's environment with its contract arguments (``render`` enables ``env.render()``).

        ``first_seed`` is a hint: the seed of the first episode it will play. A task whose seeded
        reset is costly may build the environment ready for that episode (MsPacman); the
        episode is the same either way, and a wrong hint only costs the saving."""
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

    # -- diagnostics ------------------------------------------------------------------------------
    def tracker(self, env: Any) -> Tracker:
        """A fresh :class:`Tracker` for one episode played on ``env`` (runs in the worker)."""
        return Tracker(env)

    def diagnose(self, facts: list[Any], returns: list[float]) -> Any:
        """What the episodes say: a :class:`grader.result.Diagnostics` (None without facts).

        ``facts`` are what the worker collected for each episode (in the order of ``returns``);
        the generic part (outcome counts, actions, collapse, confidence) is
        :func:`grader.tasks.diagnostics.diagnose`; a task refines it in :meth:`refine`."""
        from grader.tasks.diagnostics import diagnose_episodes

        diag = diagnose_episodes(self, facts, returns)
        return self.refine(diag) if diag is not None else None

    def refine(self, diag: Any) -> Any:
        """Task-specific additions to the diagnostics (a collapse that only this task can see, a hint)."""
        return diag

    def outcome_line(self, diag: Any) -> str:
        """The terminal's first line of diagnostics: ``outcomes: 81 landed, 11 crashed, ...``."""
        parts = [f"{o.count} {o.label}" for o in diag.outcomes if o.count]
        return "outcomes: " + ", ".join(parts) if parts else ""

    def notebook_module(self) -> Any | None:
        """The module grading this task's notebooks, or None when the task has none."""
        return importlib.import_module(self.notebook) if self.notebook else None
