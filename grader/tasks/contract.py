"""The contract every task shares: environments, episodes and how an ONNX output becomes an action.

Each task's specifics (its environment, preprocessing and episode protocol) live in its plug-in
module, ``grader/tasks/<name>.py`` (``shared/CONTRACTS.md`` implemented once). This module is the
task-independent part that the checks, the engine, the video recorder, the notebook grader and
the reference agents import:

* :func:`make_env` and :func:`play_episode` -- the task's own environment and protocol;
* :func:`actions_from_output` -- float ``[b, n]`` -> argmax (first index on ties); an int64
  ``[b]`` / ``[b, 1]`` output is the action itself.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from grader.tasks import Episode, Task, Turn, get_task

__all__ = ["Episode", "Task", "Turn", "actions_from_output", "get_task", "make_env", "play_episode"]


def make_env(task: Task | str, *, render: bool = False, first_seed: int | None = None) -> Any:
    """The task's environment with its contract arguments (``render=True``: rgb_array for videos;
    ``first_seed``: the seed of its first episode, see :meth:`Task.make_env`)."""
    return get_task(task).make_env(render=render, first_seed=first_seed)


def play_episode(task: Task | str, env: Any, seed: int) -> Episode:
    """Play one seeded episode of ``task`` on ``env`` under the task's protocol.

    Usage: ``turn = next(gen)``; while not ``turn.done``: ``turn = gen.send(action)``.
    """
    return get_task(task).play_episode(env, seed)


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
