"""Where the shipped files are: the default rubrics and the reference models.

In a checkout (or an editable install) they are the repository's ``rubrics/`` and
``reference/models/``. An installed wheel carries the same files as package data under
``grader/_data/`` in the same relative layout (``_data/rubrics``, ``_data/reference/models``), so
that a rubric's relative paths (``../reference/models/x.onnx``, ``baselines/x.json``) resolve the
same way in both.
"""

from __future__ import annotations

from pathlib import Path

_PACKAGE = Path(__file__).resolve().parent
_CHECKOUT = _PACKAGE.parent


def _root() -> Path:
    if (_CHECKOUT / "rubrics").is_dir() and (_CHECKOUT / "pyproject.toml").is_file():
        return _CHECKOUT
    return _PACKAGE / "_data"


def rubrics_dir() -> Path:
    return _root() / "rubrics"


def reference_models_dir() -> Path:
    return _root() / "reference" / "models"


def default_rubric_path(task_name: str) -> Path:
    return rubrics_dir() / f"{task_name}.toml"
