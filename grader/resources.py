"""Where the shipped files are: the default rubrics and the reference models, the package's own
data (probe states, frames), its templates, and the folder holding the package.

In a checkout (or an editable install) they are the repository's ``rubrics/`` and
``reference/models/``. An installed wheel carries the same files as package data under
``grader/_data/`` in the same relative layout (``_data/rubrics``, ``_data/reference/models``), so
that a rubric's relative paths (``../reference/models/x.onnx``, ``baselines/x.json``) resolve the
same way in both.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

_PACKAGE = Path(__file__).resolve().parent
_CHECKOUT = _PACKAGE.parent


def _root() -> Path:
    if (_CHECKOUT / "rubrics").is_dir() and (_CHECKOUT / "pyproject.toml").is_file():
        return _CHECKOUT
    return _PACKAGE / "_data"


def package_dir() -> Path:
    """The ``grader`` package's folder (in a checkout or in site-packages)."""
    return _PACKAGE


def source_root() -> Path:
    """The folder holding the ``grader`` package: what a worker puts on its ``sys.path``."""
    return _CHECKOUT


def data_dir() -> Path:
    """The package's data files: the shipped probe states and the MsPacman probe frames."""
    return _PACKAGE / "data"


def templates_dir() -> Path:
    """The report's and the class page's Jinja templates (:mod:`grader.outputs.templating`)."""
    return _PACKAGE / "outputs" / "templates"


def gradescope_templates_dir() -> Path:
    """The Gradescope zip's ``setup.sh`` and ``run_autograder`` templates."""
    return _PACKAGE / "gradescope" / "templates"


def rubrics_dir() -> Path:
    return _root() / "rubrics"


def reference_models_dir() -> Path:
    return _root() / "reference" / "models"


def lock_dir() -> Path:
    """The lock files (``lock/*.txt``, docs/environment.md): the checkout's, or the wheel's copy."""
    return _root() / "lock"


def default_rubric_path(task_name: str) -> Path:
    return rubrics_dir() / f"{task_name}.toml"


def user_cache_dir(name: str) -> Path | None:
    """``$XDG_CACHE_HOME/rl-grader/<name>`` (default ``~/.cache/...``), made mode 0700; None when it
    cannot be made, or is a link or another user's (e.g. planted by someone else). What the grader
    caches there is its own work (compiled templates, the references' weight prints, a probe of
    onnxruntime): a cache problem is a miss, never an error."""
    root = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    folder = root / "rl-grader" / name
    try:
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        st = os.lstat(folder)
        if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.getuid():
            return None
        if stat.S_IMODE(st.st_mode) != 0o700:  # ours, but open to others: close it
            os.chmod(folder, 0o700)
            st = os.lstat(folder)
    except (OSError, RuntimeError):  # RuntimeError: no home folder to expand
        return None
    return folder if stat.S_ISDIR(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o700 else None
