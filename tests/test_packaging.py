"""The wheel works on its own: installed into a fresh virtual environment, run from another
directory, it finds its default rubrics and its shipped models (package data), and installs no
top-level package but ``grader``."""

from __future__ import annotations

import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    # build from a copy: an in-tree build would leave build/ and *.egg-info in the checkout
    import shutil

    src = out / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copyfile(REPO / name, src / name)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.grading")
    for folder in ("grader", "rubrics", "reference/models", "lock"):
        shutil.copytree(REPO / folder, src / folder, ignore=ignore)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(out), str(src)],
                   check=True, capture_output=True, timeout=300)
    (path,) = out.glob("rl_grader-*.whl")
    return path


def test_the_wheel_holds_one_package_and_the_shipped_data(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    tops = {n.split("/")[0] for n in names if not n.startswith("rl_grader-")}
    assert tops == {"grader"}  # no generic top-level "reference" package
    for needed in ("grader/_data/rubrics/lunarlander.toml", "grader/_data/rubrics/baselines/mspacman.json",
                   "grader/_data/rubrics/cartpole.toml", "grader/_data/reference/models/lunarlander_improved.onnx",
                   "grader/outputs/templates/report.html.j2", "grader/site/templates/base.html", "grader/data/mspacman_frames.npz",
                   "grader/py.typed", "grader/gradescope/templates/gradescope_setup.sh",
                   "grader/_data/lock/requirements.txt", "grader/_data/lock/grader.txt", "grader/_data/lock/notebooks.txt"):
        assert needed in names, needed


def test_the_installed_wheel_grades_from_another_directory(wheel, tmp_path):
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    py = venv / "bin" / "python"
    site = Path(subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               capture_output=True, text=True, check=True).stdout.strip())
    with zipfile.ZipFile(wheel) as z:  # what `pip install --no-deps` does for a pure wheel
        z.extractall(site)
    # the dependencies come from this test environment's site-packages (no download), after the wheel
    (site / "zz_test_deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    elsewhere = tmp_path / "somewhere"
    elsewhere.mkdir()
    # The test borrows its dependencies from another venv, which bubblewrap would not show the
    # workers: they run in the fallback sandbox here (isolation has its own tests).
    env = {"PATH": "/usr/bin:/bin", "GRADER_SANDBOX": "fallback", "HOME": str(tmp_path)}
    def run(*args):
        return subprocess.run([str(py), "-c", "import sys; from grader.cli import main; sys.exit(main())", *args],
                              cwd=elsewhere, capture_output=True, text=True, timeout=300, env=env)

    where = subprocess.run([str(py), "-c", "import grader, grader.resources as r; print(grader.__file__); "
                                           "print(r.reference_models_dir()); print(r.lock_dir())"], cwd=elsewhere,
                           capture_output=True, text=True, check=True).stdout.split()
    assert all(w.startswith(str(site)) for w in where)  # the wheel's copy, not the checkout
    assert (Path(where[2]) / "grader.txt").is_file()  # the lock, for grade doctor on an installed grader
    version = run("--version")
    assert version.returncode == 0 and "rl-grader 0.1.0" in version.stdout
    model = Path(where[1]) / "lunarlander_improved.onnx"
    checked = run("check", str(model), "--json")
    assert checked.returncode == 0, checked.stderr
    assert '"status": "graded"' in checked.stdout and '"max_score": 10.0' in checked.stdout
    assert not list(elsewhere.iterdir())  # a self-check writes nothing
