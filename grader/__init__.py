"""rl-grader: grade the RL course's homework (DQN on MsPacman, actor-critic on LunarLander).

Python API: ``grade(path, ...)`` grades an ONNX file or a notebook, ``check(path)`` is the
student's self-check; both return a :class:`GradeResult` (which renders as HTML in Jupyter).
The packages are the stages of a grading (``docs/architecture.md``): what each homework is
(:mod:`grader.tasks`), what was handed in and its checks (:mod:`grader.submission`), where a model
runs (:mod:`grader.runtime`), how points are made (:mod:`grader.scoring`), what people read
(:mod:`grader.outputs`), grading a class (:mod:`grader.classroom`), Gradescope and the site.
"""

from __future__ import annotations

__version__ = "0.1.0"
__all__ = ["grade", "check", "GradeResult"]


def _register_jupyter_display() -> None:
    """In Jupyter, a GradeResult renders as the report's inline HTML (the schema itself stays plain data)."""
    try:
        from IPython import get_ipython
    except ImportError:
        return
    shell = get_ipython()
    if shell is None:
        return
    from grader.outputs.report import render_inline_html
    from grader.result import GradeResult

    shell.display_formatter.formatters["text/html"].for_type(GradeResult, render_inline_html)


def __getattr__(name: str):  # lazy: `import grader` stays cheap for the workers
    if name in ("grade", "check"):
        from grader import api as grading

        _register_jupyter_display()
        return getattr(grading, name)
    if name == "GradeResult":
        from grader.result import GradeResult

        return GradeResult
    raise AttributeError(name)
