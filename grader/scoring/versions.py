"""The package versions that decide returns: which they are, what is installed, and how it differs
from the versions a baselines file records (``grade doctor``, and the warning of ``grade batch`` and
``grade serve`` at start; docs/environment.md)."""

from __future__ import annotations

import re
from pathlib import Path

# The packages whose version can change a return (the simulator, the emulator, the arithmetic of the
# observations and of the policy). The lock keeps them at one version on every supported Python.
DECISIVE = ("gymnasium", "box2d", "ale-py", "numpy", "onnxruntime")


def normalize(name: str) -> str:
    """A distribution name as the lock and pip compare them (PEP 503)."""
    return re.sub(r"[-_.]+", "-", name).lower()


def installed_versions() -> dict[str, str]:
    """name -> version of every distribution installed in this interpreter's environment.

    Its site-packages only, not every entry of ``sys.path``: a package that puts its vendored
    copies on ``sys.path`` when imported (Ray's ``thirdparty_files``: colorama, psutil) installed
    nothing, and must not make the answer depend on what the process imported before."""
    import sysconfig
    from importlib import metadata

    paths = sysconfig.get_paths()
    found: dict[str, str] = {}
    for dist in metadata.distributions(path=sorted({paths["purelib"], paths["platlib"]})):
        name = dist.metadata["Name"]
        if name:
            found.setdefault(normalize(name), dist.version)
    return found


def same_release(installed: str, pinned: str) -> bool:
    """torch's CPU build is ``2.13.0+cpu`` for the pin ``2.13.0``: the local label is not a release."""
    return installed == pinned or installed.split("+", 1)[0] == pinned


def version_drift(recorded: dict[str, str], installed: dict[str, str] | None = None) -> list[str]:
    """'name recorded -> installed' for each decisive package whose installed version differs from
    the one a baselines file (or a result) records."""
    installed = installed_versions() if installed is None else installed
    drift = []
    for key, was in recorded.items():
        name = normalize(key)
        if name in DECISIVE and was != "not installed":
            now = installed.get(name, "not installed")
            if not same_release(now, was):
                drift.append(f"{name} {was} -> {now}")
    return drift


def baselines_version_warning(rubric_path: Path) -> str | None:
    """A warning for ``grade batch`` / ``grade serve`` when this machine's decisive packages differ
    from those that made the rubric's baselines file; None when they agree (or there is no file)."""
    from grader.scoring.baselines import load_baselines
    from grader.scoring.rubric import load_rubric

    try:
        rubric = load_rubric(rubric_path, materialize=False)
        if not rubric.baselines:
            return None
        recorded = load_baselines(rubric.resolve(rubric.baselines)).versions
    except Exception:  # noqa: BLE001 - a missing or broken file is reported where the rubric is read
        return None
    drift = version_drift(recorded)
    if not drift:
        return None
    return (f"the installed packages that decide returns differ from those that made {rubric.baselines} "
            f"({'; '.join(drift)}): returns may differ from the baselines; run `grade doctor`")
