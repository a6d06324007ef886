"""The probe states: realistic contract states on which the runtime checks look at a model.

They come from a fixed-seed random rollout under the task's own protocol (:func:`rollout`), the
same for every model. The rollout costs a MsPacman worker about 0.1 s of its start-up (a seeded
reset reloads the ROM, then the opening steps), on the critical path of every ``grade`` (the
probe must pass before the episodes start). So the states are also shipped with the grader, one
file per task (``grader/data/probe_<task>.npz``, written by ``python -m grader.submission.probestates``),
and :func:`probe_states` reads the file when it holds states of the right shape and type.

A family of contracts shares one rollout (:meth:`grader.tasks.Task.probe_source`): MsPacman's
raw-frame contracts (K = 1..8 frames) take the last K frames of the K = 8 contract's stacks, whose
file holds each distinct frame once (``frames``) and each state as indices into them
(``index``, ``[n, 8]``). The random actions do not depend on the states, so these are the very
frames whose lesson preprocessing gives the lesson's probe states (a test checks it).

The file is a cache, never a second definition: a test checks that each shipped file equals a
fresh rollout with the installed packages, so a change of the environment or of the protocol
shows up as a failing test (rerun the command above). A file that is missing, unreadable or of
the wrong shape is ignored and the states are rolled out again; a stale file would still hold
realistic states of the right shape, which is all the checks need of them.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from grader import limits as L
from grader.resources import data_dir
from grader.tasks.contract import Task, get_task, make_env, play_episode

DATA_DIR = data_dir()


def shipped_path(spec: Task) -> Path:
    return DATA_DIR / f"probe_{spec.probe_source().name}.npz"


def rollout_turns(spec: Task, n: int = L.PROBE_STATES, env: Any = None) -> list[Any]:
    """The :attr:`~grader.tasks.Turn.state` s of a random rollout with seed
    :data:`grader.limits.PROBE_SEED` (then the next seeds while episodes end), keeping every
    ``spec.probe_stride``-th state."""
    own = env is None
    env = make_env(spec) if own else env
    rng = np.random.default_rng(L.PROBE_SEED)
    states: list[Any] = []
    seed = L.PROBE_SEED
    while len(states) < n:
        episode = play_episode(spec, env, seed)
        turn = next(episode)
        t = 0
        while not turn.done and len(states) < n:
            if t % spec.probe_stride == 0:
                states.append(turn.state)
            turn = episode.send(int(rng.integers(spec.n_actions)))
            t += 1
        seed += 1
    if own:
        env.close()
    return states


def rollout(spec: Task, n: int = L.PROBE_STATES, env: Any = None) -> np.ndarray:
    """``n`` probe states of ``spec``, rolled out: ``[n, *state_shape]`` of its input dtype."""
    source = spec.probe_source()
    states = source.stack_states(rollout_turns(source, n, env))
    return spec.probe_view(states.astype(np.dtype(source.input_dtype), copy=False))


def compact_frames(turns: list[Any]) -> tuple[np.ndarray, np.ndarray]:
    """States that are tuples of frames -> (each distinct frame once, ``[n, K]`` indices into them)."""
    where: dict[int, int] = {}
    frames: list[np.ndarray] = []
    index = np.empty((len(turns), len(turns[0]) if turns else 0), dtype=np.int32)
    for j, state in enumerate(turns):
        for k, frame in enumerate(state):
            if id(frame) not in where:
                where[id(frame)] = len(frames)
                frames.append(frame)
            index[j, k] = where[id(frame)]
    return (np.stack(frames) if frames else np.zeros((0,), np.uint8)), index


def probe_frames(spec: Task, n: int = L.PROBE_STATES, env: Any = None) -> tuple[np.ndarray, np.ndarray]:
    """A frame contract's ``n`` probe states, compact: ``(frames, index)`` with
    ``frames[index]`` the states (``[n, K, ...]``). 512 raw stacks of 8 frames would be 400 MB;
    their distinct frames are a third of that, and a batch of states is ``frames[index[i:j]]``."""
    source = spec.probe_source()
    frames, index = compact_frames(rollout_turns(source, n, env))
    return frames, index[:, index.shape[1] - spec.state_shape[0]:]


def _valid(states: np.ndarray, spec: Task, n: int) -> bool:
    return (states.dtype == np.dtype(spec.input_dtype) and states.shape == (n, *spec.state_shape)
            and (states.dtype != np.float32 or bool(np.isfinite(states).all())))


def shipped(spec: Task, n: int = L.PROBE_STATES) -> np.ndarray | None:
    """The shipped states of ``spec``, or None when there is no usable file."""
    source = spec.probe_source()
    try:
        with np.load(shipped_path(spec), allow_pickle=False) as data:
            if "states" in data.files:
                states = data["states"]
            else:
                frames, index = data["frames"], data["index"]
                if index.ndim != 2 or index.size == 0 or index.min() < 0 or index.max() >= len(frames):
                    return None
                states = frames[index]
    except (OSError, KeyError, ValueError):
        return None
    if not _valid(states, source, n):
        return None
    return spec.probe_view(states)


def probe_states(spec: Task, n: int = L.PROBE_STATES, env: Any = None, *,
                 env_factory: Callable[[], Any] | None = None) -> np.ndarray:
    """The probe states: the shipped ones when usable (the default ``n`` only), else a rollout on
    ``env`` (or on ``env_factory()``, called only then; else a new environment)."""
    states = shipped(spec, n) if n == L.PROBE_STATES else None
    if states is not None:
        return states
    return rollout(spec, n, env if env is not None or env_factory is None else env_factory())


def write(spec: Task) -> Path:
    """Roll the states out and write them as ``spec``'s shipped file (of its probe source)."""
    source = spec.probe_source()
    path = shipped_path(source)
    turns = rollout_turns(source)
    if isinstance(turns[0], tuple):
        frames, index = compact_frames(turns)
        np.savez_compressed(path, frames=frames, index=index)
    else:
        np.savez_compressed(path, states=source.stack_states(turns).astype(np.float32))
    return path


def main(argv: list[str] | None = None) -> int:
    """``python -m grader.submission.probestates [TASK ...]``: rewrite the shipped files (default: every
    contract's probe source)."""
    from grader.tasks import all_contracts

    names = (argv if argv is not None else sys.argv[1:]) or sorted({t.probe_source().name for t in all_contracts()})
    for name in names:
        path = write(get_task(name))
        print(f"{name}: {path} ({path.stat().st_size} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
