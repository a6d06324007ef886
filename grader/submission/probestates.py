"""The probe states: realistic contract states on which the runtime checks look at a model.

They come from a fixed-seed random rollout under the task's own protocol (:func:`rollout`), the
same for every model. The rollout costs a MsPacman worker about 0.1 s of its start-up (a seeded
reset reloads the ROM, then the opening steps), on the critical path of every ``grade`` (the
probe must pass before the episodes start). So the states are also shipped with the grader, one
file per task (``grader/data/probe_<task>.npz``, written by ``python -m grader.submission.probestates``),
and :func:`probe_states` reads the file when it holds states of the right shape and type.

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
    return DATA_DIR / f"probe_{spec.name}.npz"


def rollout(spec: Task, n: int = L.PROBE_STATES, env: Any = None) -> np.ndarray:
    """``n`` states of a random rollout with seed :data:`grader.limits.PROBE_SEED` (then the next
    seeds while episodes end), keeping every ``spec.probe_stride``-th state."""
    own = env is None
    env = make_env(spec) if own else env
    rng = np.random.default_rng(L.PROBE_SEED)
    states: list[np.ndarray] = []
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
    return np.stack(states).astype(np.float32)


def shipped(spec: Task, n: int = L.PROBE_STATES) -> np.ndarray | None:
    """The shipped states of ``spec``, or None when there is no usable file."""
    try:
        with np.load(shipped_path(spec), allow_pickle=False) as data:
            states = data["states"]
    except (OSError, KeyError, ValueError):
        return None
    if states.dtype != np.float32 or states.shape != (n, *spec.state_shape) or not np.isfinite(states).all():
        return None
    return states


def probe_states(spec: Task, n: int = L.PROBE_STATES, env: Any = None, *,
                 env_factory: Callable[[], Any] | None = None) -> np.ndarray:
    """The probe states: the shipped ones when usable (the default ``n`` only), else a rollout on
    ``env`` (or on ``env_factory()``, called only then; else a new environment)."""
    states = shipped(spec, n) if n == L.PROBE_STATES else None
    if states is not None:
        return states
    return rollout(spec, n, env if env is not None or env_factory is None else env_factory())


def write(spec: Task) -> Path:
    """Roll the states out and write them as ``spec``'s shipped file."""
    path = shipped_path(spec)
    np.savez_compressed(path, states=rollout(spec))
    return path


def main(argv: list[str] | None = None) -> int:
    """``python -m grader.submission.probestates [TASK ...]``: rewrite the shipped files (default: every task)."""
    from grader.tasks import task_names

    for name in (argv if argv is not None else sys.argv[1:]) or task_names():
        path = write(get_task(name))
        print(f"{name}: {path} ({path.stat().st_size} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
