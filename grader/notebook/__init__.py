"""Notebook grader: grade a student's .ipynb without running its training.

See docs/notebooks.md. Entry point: :func:`grade_notebook`.
"""

from grader.notebook.grade import grade_notebook

__all__ = ["grade_notebook"]
