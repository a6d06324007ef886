"""Notebook grader: grade a student's .ipynb without running its training.

See README.md in this folder. Entry point: :func:`grade_notebook`.
"""

from grader.notebook.grade import grade_notebook

__all__ = ["grade_notebook"]
