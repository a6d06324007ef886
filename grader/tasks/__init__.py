"""The task registry: every homework the grader knows, one plug-in module each.

``grader/tasks/<name>.py`` defines ``TASK``, a :class:`~grader.tasks.base.Task`. Adding a homework
is one module here, its name in :data:`MODULES`, a rubric in ``rubrics/`` and its baselines
(``grade baselines``); nothing else in the grader names a task.

A module may also define ``CONTRACTS``: other input contracts of the same homework (tasks whose
``homework`` is ``TASK.name``: MsPacman's raw frames, the preprocessing inside the model). They are
graded by the homework's rubric, found by their input signature (:func:`task_for_input`) and by
name (:func:`get_task`: the workers receive a task by name), but not listed among the homeworks
(:func:`all_tasks`, ``--task``).
"""

from __future__ import annotations

import importlib
from functools import lru_cache

from grader.errors import SetupError
from grader.tasks.base import Episode, Outcome, Task, Tracker, Turn

__all__ = ["Task", "Turn", "Episode", "Outcome", "Tracker", "UnknownTask", "get_task", "task_names", "all_tasks",
           "all_contracts", "task_for_input"]

MODULES = ("grader.tasks.lunarlander", "grader.tasks.mspacman", "grader.tasks.cartpole")


class UnknownTask(SetupError):
    """A task name that no plug-in provides."""


@lru_cache(maxsize=1)
def _registry() -> dict[str, Task]:
    """Every contract by name: each module's ``TASK`` (the homework), then its ``CONTRACTS``."""
    tasks: dict[str, Task] = {}
    for module in MODULES:
        mod = importlib.import_module(module)
        for task in (mod.TASK, *getattr(mod, "CONTRACTS", ())):
            if task.name in tasks:
                raise RuntimeError(f"two task plug-ins are named {task.name!r}")
            if task.homework_name != mod.TASK.name:
                raise RuntimeError(f"contract {task.name!r} of {module} belongs to {task.homework_name!r}")
            tasks[task.name] = task
    return tasks


def all_tasks() -> list[Task]:
    """The homeworks: one main task per plug-in module."""
    return [t for t in _registry().values() if t.homework_name == t.name]


def all_contracts() -> list[Task]:
    """Every input contract of every homework (the homeworks' own first)."""
    return list(_registry().values())


def task_names() -> tuple[str, ...]:
    """The homeworks' names (``--task``, rubrics)."""
    return tuple(t.name for t in all_tasks())


def get_task(task: str | Task) -> Task:
    """The task named ``task`` (a Task passes through); :class:`UnknownTask` names the known ones."""
    if isinstance(task, Task):
        return task
    try:
        return _registry()[task]
    except (KeyError, TypeError):
        raise UnknownTask(f"unknown task {task!r}; known tasks: {', '.join(task_names())}") from None


def task_for_input(state_shape: tuple[int, ...]) -> Task | None:
    """The contract whose policy input is ``[batch, *state_shape]``, or None."""
    for task in all_contracts():
        if tuple(task.state_shape) == tuple(state_shape):
            return task
    return None


def signatures() -> str:
    """``[batch, 8] for lunarlander; ...``: what each task takes, for messages."""
    seen: dict[str, str] = {}
    for t in all_contracts():
        seen.setdefault(t.family_signature, t.homework_name)
    return "; ".join(f"{sig} for {name}" for sig, name in seen.items())
