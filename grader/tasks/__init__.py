"""The task registry: every homework the grader knows, one plug-in module each.

``grader/tasks/<name>.py`` defines ``TASK``, a :class:`~grader.tasks.base.Task`. Adding a homework
is one module here, its name in :data:`MODULES`, a rubric in ``rubrics/`` and its baselines
(``grade baselines``); nothing else in the grader names a task.
"""

from __future__ import annotations

import importlib
from functools import lru_cache

from grader.errors import SetupError
from grader.tasks.base import Episode, Outcome, Task, Tracker, Turn

__all__ = ["Task", "Turn", "Episode", "Outcome", "Tracker", "UnknownTask", "get_task", "task_names", "all_tasks", "task_for_input"]

MODULES = ("grader.tasks.lunarlander", "grader.tasks.mspacman", "grader.tasks.cartpole")


class UnknownTask(SetupError):
    """A task name that no plug-in provides."""


@lru_cache(maxsize=1)
def _registry() -> dict[str, Task]:
    tasks: dict[str, Task] = {}
    for module in MODULES:
        task = importlib.import_module(module).TASK
        if task.name in tasks:
            raise RuntimeError(f"two task plug-ins are named {task.name!r}")
        tasks[task.name] = task
    return tasks


def all_tasks() -> list[Task]:
    return list(_registry().values())


def task_names() -> tuple[str, ...]:
    return tuple(_registry())


def get_task(task: str | Task) -> Task:
    """The task named ``task`` (a Task passes through); :class:`UnknownTask` names the known ones."""
    if isinstance(task, Task):
        return task
    try:
        return _registry()[task]
    except (KeyError, TypeError):
        raise UnknownTask(f"unknown task {task!r}; known tasks: {', '.join(task_names())}") from None


def task_for_input(state_shape: tuple[int, ...]) -> Task | None:
    """The task whose policy input is ``[batch, *state_shape]``, or None."""
    for task in all_tasks():
        if tuple(task.state_shape) == tuple(state_shape):
            return task
    return None


def signatures() -> str:
    """``[batch, 8] for lunarlander; ...``: what each task takes, for messages."""
    return "; ".join(f"{t.input_signature} for {t.name}" for t in all_tasks())
