"""Task ``mspacman``: the DQN homework on ``ALE/MsPacman-v5`` (the lesson's protocol).

* Environment: default arguments (frameskip 4, sticky actions 0.25); the policy uses actions
  0..4 (NOOP, UP, RIGHT, LEFT, DOWN). Built with ``first_seed``, it is made ready for that
  episode (:func:`_preseeded_atari_class`): one ROM load of 65 ms fewer, the same episode.
* Preprocessing (:func:`preprocess_frames`): a pure, vectorised function, the lesson's steps.
* State: the last 5 preprocessed frames, oldest first, ``[5, 44, 40]`` float32 in 0..255.
* The second input contract (:data:`CONTRACTS`, tasks ``mspacman_raw1`` .. ``mspacman_raw8``, the
  same homework): the model preprocesses itself. Its input is the last K raw RGB frames, oldest
  first, ``[batch, K, 210, 160, 3]`` uint8, K = 1..8 read off the model's input shape: exactly the
  frames the lesson's stack would hold (the first frame repeated at the start, the NOOP frames
  after a lost life not pushed). Same environment, protocol, score and diagnostics. The episode
  keeps references to the emulator's frames (each step's frame is a new array), never a copy: a
  state is the tuple of its K frames, and :meth:`MsPacmanRaw.stack_states` copies each frame
  once, straight into the policy's batch.
* Protocol (:meth:`MsPacman.play_episode`): 80 + 1 steps of LEFT after reset (the last gives the
  first frame, stacked 5 times), then the policy; after a step that loses a life, 36 NOOPs whose
  frames are not stacked. The score counts every reward, protocol steps included.
* Diagnostics (:class:`PacTracker`, per decision): when each life was lost (decision, step and
  score), the points of each life, stretches of at least :data:`DROUGHT_DECISIONS` decisions
  without any reward, and how often the player's position changed (RAM bytes 10 and 16: x and y,
  checked by moving her along the start corridor). The level is not reported: ale-py's ``info``
  has only ``lives``, ``episode_frame_number`` and ``frame_number``, and no RAM address for the
  level was verified.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np

from grader.tasks.base import Episode, Outcome, Task, Tracker, Turn

OPENING_STEPS = 80  # steps of OPENING_ACTION after reset, before the first state
OPENING_ACTION = 3  # LEFT
DEATH_STEPS = 36  # NOOP steps after a step that loses a life; their frames are not stacked
DEATH_ACTION = 0  # NOOP
FRAME_STACK = 5
FRAME_SHAPE = (210, 160, 3)  # one raw RGB frame of the emulator
MAX_RAW_STACK = 8  # the raw-frame contract takes the last K = 1..8 frames
BORDER_VALUE = 150
PLAYER_X_RAM, PLAYER_Y_RAM = 10, 16  # the player's position in the console's RAM (verified by moving)
DROUGHT_DECISIONS = 100  # this many decisions in a row without any reward: a drought (stuck?)
STILL_SHARE = 0.95  # the position unchanged for this share of decisions: an agent that never moves
MAX_LIVES_KEPT = 32
MAX_DROUGHTS_KEPT = 10

OUTCOMES = (
    Outcome("game_over", "lost every life", success=True),
    Outcome("time_limit", "still playing at the emulator's time limit", success=True),
)

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

    def make_env(self, *, render: bool = False, first_seed: int | None = None) -> Any:
        """The contract's environment; with ``first_seed``, built ready for that episode
        (:func:`_seeded_env_spec`): one ROM load instead of two."""
        import ale_py
        import gymnasium as gym

        gym.register_envs(ale_py)
        ale_py.ALEInterface.setLoggerMode(ale_py.LoggerMode.Error)  # no banner per env
        # The observation is the RGB frame either way; rgb_array only enables env.render().
        mode = "rgb_array" if render else None
        if first_seed is None:
            return gym.make(self.env_id, render_mode=mode)
        return gym.make(_seeded_env_spec(self.env_id), render_mode=mode, first_seed=int(first_seed))

    def play_episode(self, env: Any, seed: int) -> Episode:
        return _episode(env, seed, state_shape=self.state_shape, prepare=preprocess_frames, stacked=np.stack)

    def tracker(self, env: Any) -> Tracker:
        return PacTracker(env)

    def frames_source(self) -> Task:
        """The K = 8 raw contract: the lesson's states are its last 5 frames, preprocessed."""
        return raw_contract(MAX_RAW_STACK)

    def frames_view(self, frames: np.ndarray) -> np.ndarray:
        """The lesson's preprocessing of each frame (stacked, the same values as preprocessing each stack's frames)."""
        return preprocess_frames(frames)

    def refine(self, diag: Any) -> Any:
        """An agent that never moves (NOOP almost always, or its position never changes), and droughts."""
        names = diag.actions.names
        noop = diag.actions.shares[DEATH_ACTION] if diag.actions.shares else 0.0
        decisions = sum(e.decisions for e in diag.episodes) or 1
        still = sum(e.end.get("still_share", 0.0) * e.decisions for e in diag.episodes) / decisions
        if noop >= STILL_SHARE or still >= STILL_SHARE:
            why = (f"it chooses {names[DEATH_ACTION]} for {100 * noop:.0f}% of its decisions" if noop >= STILL_SHARE
                   else f"Ms. Pac-Man's position did not change in {100 * still:.0f}% of its decisions")
            diag.collapsed = True
            diag.collapse = (f"an agent that never moves: {why}; check the action mapping of the exported network "
                             "(outputs 0..4 are NOOP, UP, RIGHT, LEFT, DOWN) and that it was trained past the start")
        dry = [e for e in diag.episodes if e.droughts]
        if not diag.hint and dry and len(dry) >= max(1, 0.1 * len(diag.episodes)):
            longest = max(d[2] for e in dry for d in e.droughts)
            diag.hint = (f"{len(dry)} of {len(diag.episodes)} episodes had stretches of {DROUGHT_DECISIONS} or more "
                         f"decisions without scoring (the longest {longest}): the agent gets stuck, often against a "
                         "wall; train longer, and check that the frames it sees change when it moves")
        diag.notes.append("the level reached is not reported: the emulator does not expose it (no verified RAM address)")
        from grader.tasks.diagnostics import summary_lines

        diag.summary = summary_lines(self, diag)
        return diag

    def outcome_line(self, diag: Any) -> str:
        eps = diag.episodes
        line = super().outcome_line(diag)
        if eps:
            per_life = [s for e in eps for s in e.life_scores]
            if per_life:
                line += f"; {sum(per_life) / len(per_life):.0f} points per life on average"
            dry = sum(1 for e in eps if e.droughts)
            if dry:
                line += f"; {dry} with {DROUGHT_DECISIONS}+ decisions without scoring"
        return line


def _seeded_env_spec(env_id: str) -> Any:
    """``env_id``'s gymnasium spec (the same arguments and wrappers) building the class of
    :func:`_preseeded_atari_class`."""
    import dataclasses

    import gymnasium as gym

    return dataclasses.replace(gym.spec(env_id), entry_point=_preseeded_atari_class())


@lru_cache(maxsize=1)
def _preseeded_atari_class() -> Any:
    """ale-py's ``AtariEnv``, built with the ROM loaded for its first episode's seed.

    A seeded reset (``reset(seed=s)``) seeds the emulator and loads the ROM again; that load is
    65 ms of CPU (three quarters of it ALE computing its colour-averaging palette), a fifth of a
    whole MsPacman episode. The constructor loads the ROM too, with a random seed, so every new
    environment loaded it twice before its first step. This one seeds the constructor's load with
    ``first_seed`` instead; its first episode with that seed then starts with a plain reset (the
    emulator is in exactly the state a seeded reset would leave: a test plays whole episodes both
    ways, observation by observation). Anything else (another seed, a reset or a step before) takes
    the usual seeded reset. If a later ale-py no longer seeds and loads in its constructor as this
    expects, nothing is marked and every episode takes the usual reset."""
    from ale_py.env import AtariEnv

    class PreseededAtari(AtariEnv):
        def __init__(self, *, first_seed: int | None = None, **kwargs: Any) -> None:
            self._pending_seed = None if first_seed is None else int(first_seed)
            self._seeding: int | None = None
            self._loaded_for: int | None = None
            super().__init__(**kwargs)

        def seed_game(self, seed: int | None = None):
            if seed is None and self._pending_seed is not None:  # the constructor's own seeding
                seed, self._pending_seed = self._pending_seed, None
                self._seeding = seed
            else:
                self._seeding = None
            self._loaded_for = None
            return super().seed_game(seed)

        def load_game(self) -> None:
            super().load_game()
            self._loaded_for, self._seeding = self._seeding, None

        def take_preloaded(self, seed: int) -> bool:
            """True (once) if the ROM was loaded for ``seed`` and nothing ran since."""
            ready, self._loaded_for = self._loaded_for == seed, None
            return ready

        def reset(self, *, seed: int | None = None, options: dict | None = None):
            self._loaded_for = None
            return super().reset(seed=seed, options=options)

        def step(self, action: Any):
            self._loaded_for = None
            return super().step(action)

    return PreseededAtari


def _reset(env: Any, seed: int) -> tuple[Any, dict]:
    """``env.reset(seed=seed)``, or a plain reset when ``env`` was built ready for this seed."""
    take = getattr(getattr(env, "unwrapped", env), "take_preloaded", None)
    if take is not None and take(int(seed)):
        return env.reset()
    return env.reset(seed=int(seed))


@dataclass(frozen=True)
class MsPacmanRaw(MsPacman):
    """The raw-frame contract: the lesson's episodes, the model's input the last K raw frames."""

    @property
    def family_signature(self) -> str:
        return f"[batch, K, {', '.join(map(str, FRAME_SHAPE))}] uint8 (K = 1..{MAX_RAW_STACK} raw frames)"

    def play_episode(self, env: Any, seed: int) -> Episode:
        return _episode(env, seed, state_shape=self.state_shape, prepare=_same_frame, stacked=tuple)

    def probe_source(self) -> Task:
        """The K = 8 contract: its probe stacks' last K frames are exactly this contract's."""
        return raw_contract(MAX_RAW_STACK)

    def probe_view(self, states: np.ndarray) -> np.ndarray:
        return states[:, states.shape[1] - self.state_shape[0]:]

    def frames_view(self, frames: np.ndarray) -> np.ndarray:
        """The raw frames as they are."""
        return frames

    def stack_states(self, states: Any) -> np.ndarray:
        """``n`` states (tuples of K frames, or arrays ``[K, 210, 160, 3]``) -> ``[n, K, 210, 160, 3]``
        uint8, each frame copied once, into the batch."""
        out = np.empty((len(states), *self.state_shape), dtype=np.uint8)
        for j, state in enumerate(states):
            if isinstance(state, np.ndarray):
                out[j] = state
            else:
                for k, frame in enumerate(state):
                    out[j, k] = frame
        return out


def _same_frame(frame: np.ndarray) -> np.ndarray:
    """The raw contract's "preprocessing": the emulator's frame itself (a new array every step)."""
    return frame


def _episode(env: Any, seed: int, *, state_shape: tuple[int, ...], prepare: Any, stacked: Any) -> Episode:
    """The lesson's episode; ``prepare`` makes the stack's element of a frame, ``stacked`` the state
    of the stack (oldest first)."""
    frame, info = _reset(env, seed)
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
    depth = state_shape[0]
    stack = deque([prepare(frame)] * depth, maxlen=depth)
    lives = info["lives"]
    life_lost = False
    while True:
        reward, pending = pending, 0.0
        action = yield Turn(stacked(stack), reward, life_lost, False, total, length)
        frame, done, info = step(int(action))
        stack.append(prepare(frame))
        life_lost = info["lives"] < lives
        lives = info["lives"]  # as in the lesson: the policy step's count, not the NOOPs'
        if life_lost and not done:
            for _ in range(DEATH_STEPS):
                _, done, _ = step(DEATH_ACTION)
                if done:
                    break
        if done:
            yield Turn(stacked(stack), pending, life_lost, True, total, length)
            return


class PacTracker(Tracker):
    """Per decision: lives lost, rewards, the player's position (one RAM read, about 1 us)."""

    per_step = True

    def __init__(self, env: Any):
        super().__init__(env)
        self.ale = env.unwrapped.ale
        self.decisions = 0
        self.lives: list[list] = []
        self.droughts: list[list[int]] = []
        self.dry_since, self.dry_step = 0, 0  # decision and step of the last reward
        self.still = 0
        self.pos: tuple[int, int] | None = None

    def _close_drought(self, decision: int, step: int) -> None:
        if decision - self.dry_since >= DROUGHT_DECISIONS:
            self.droughts.append([self.dry_step, step, decision - self.dry_since])

    def step(self, turn: Turn, decision: int) -> None:
        self.decisions = decision
        ram = self.ale.getRAM()
        pos = (int(ram[PLAYER_X_RAM]), int(ram[PLAYER_Y_RAM]))
        if pos == self.pos:
            self.still += 1
        self.pos = pos
        if turn.reward > 0:
            self._close_drought(decision - 1, turn.length)
            self.dry_since, self.dry_step = decision, turn.length
        if turn.life_lost and len(self.lives) < MAX_LIVES_KEPT:
            self.lives.append([decision, turn.length, round(float(turn.episode_return), 3)])

    def finish(self, turn: Turn) -> dict[str, Any]:
        self._close_drought(self.decisions, turn.length)
        droughts = sorted(self.droughts, key=lambda d: -d[2])[:MAX_DROUGHTS_KEPT]
        over = self.ale.lives() == 0  # every life lost (0 at game over); else the frame limit truncated it
        return {"outcome": "game_over" if over else "time_limit", "lives": self.lives, "droughts": droughts,
                "end": {"lives_lost": len(self.lives), "still_share": round(self.still / max(1, self.decisions), 4),
                        "longest_drought": max((d[2] for d in droughts), default=0)}}


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
                "export with torch.zeros(1, 5, 44, 40) as the example input; with your own preprocessing, export a "
                "module whose forward preprocesses, then calls the network, taking the last K raw frames: "
                "torch.zeros(1, K, 210, 160, 3, dtype=torch.uint8) (docs/mspacman.md)"),
    output_hint="the output is the 5 Q-values of actions 0..4 (NOOP, UP, RIGHT, LEFT, DOWN)",
    notebook="grader.notebook.mspacman",
    action_names=("NOOP", "UP", "RIGHT", "LEFT", "DOWN"),
    outcomes=OUTCOMES,
    random_level_hint=("if you changed the preprocessing, your network was trained on other states than the grader "
                       "feeds this model (the lesson's 5 stacked 44x40 frames, 0..255): put your preprocessing inside "
                       "the model and export it taking the raw frames, uint8 [batch, K, 210, 160, 3] (docs/mspacman.md)"),
)


def raw_contract(k: int) -> MsPacmanRaw:
    """The raw-frame contract with a stack of ``k`` frames (task ``mspacman_raw<k>``)."""
    import dataclasses

    return MsPacmanRaw(**{
        **{f.name: getattr(TASK, f.name) for f in dataclasses.fields(TASK)},
        "name": f"mspacman_raw{k}",
        "homework": TASK.name,
        "state_shape": (k, *FRAME_SHAPE),
        "input_dtype": "uint8",
        "random_level_hint": "",
        "description": f"DQN on ALE/MsPacman-v5, the preprocessing inside the model: the last {k} raw RGB frames",
        "input_hint": ("with the preprocessing inside the model, the input is the last K raw RGB frames, oldest first, "
                       f"uint8 [batch, K, 210, 160, 3] (K = 1..{MAX_RAW_STACK}); export the module whose forward "
                       "preprocesses, then calls the network, with torch.zeros(1, K, 210, 160, 3, dtype=torch.uint8) "
                       "as the example input; or export the network alone with torch.zeros(1, 5, 44, 40) (the lesson's "
                       "states)"),
    })


CONTRACTS = tuple(raw_contract(k) for k in range(1, MAX_RAW_STACK + 1))
