"""Notebook evidence: what a student's ``.ipynb`` defines, judged without running its training.

The grading pipeline calls, per notebook: :func:`grader.notebook.common.parse_notebook`,
:func:`~grader.notebook.common.detect_notebook_task` (with the task plug-ins' ``MARKERS``),
:func:`~grader.notebook.common.common_checks`, and the task's ``collect`` (``mspacman.collect``,
``lunarlander.collect``), which returns a :class:`~grader.notebook.evidence.NotebookEvidence`:
checks without points, the ONNX models the notebook produced (graded by the pipeline like
uploaded files) and the logs. See docs/notebooks.md.
"""
