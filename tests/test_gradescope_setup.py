"""The Gradescope zip run the way Gradescope runs it: its own setup.sh installs the grader from the
zip's lock into a fresh virtual environment (torch's CPU build for a rubric with notebook checks)
and runs `grade doctor`; then run_autograder grades a hand-in with that environment's `grade`.

``GRADESCOPE_ROOT`` replaces /autograder; ``RL_GRADER_TORCH_INDEX=""`` takes torch from pip's
configured index instead of PyTorch's (this machine's CPU wheel). Nothing of the test's own
environment is used after the zip is built.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from grader.errors import SetupError
from grader.gradescope.autograder import LOCK_ENTRY, build_autograder, install_for
from grader.scoring.rubric import load_rubric
from tests.notebook_fixtures import mspacman_cells, write_notebook

REPO = Path(__file__).resolve().parent.parent
MSPACMAN = REPO / "rubrics" / "mspacman.toml"
EPISODES = 2


def _clean_env(**extra: str) -> dict[str, str]:
    """The machine's environment without this test run's virtual environment."""
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME")}
    venv_bin = str(Path(sys.prefix) / "bin")
    env["PATH"] = os.pathsep.join(p for p in env.get("PATH", "").split(os.pathsep) if p != venv_bin)
    return {**env, **extra}


def test_a_notebook_rubric_zip_ships_the_lock_with_torch_and_an_onnx_one_without(tmp_path):
    rubric = load_rubric(MSPACMAN)
    install = install_for(rubric, REPO)
    assert install.torch == "torch==2.13.0" and b"# unhashed: torch==2.13.0" in install.lock
    assert any("notebooks" in p and "torch==2.13.0" in p for p in install.parts)
    no_notebook = rubric.model_copy(update={"notebook": rubric.notebook.model_copy(update={"points": {}})})
    plain = install_for(no_notebook, REPO)
    assert plain.torch is None and b"# unhashed" not in plain.lock
    assert plain.lock == (REPO / "lock" / "grader.txt").read_bytes()
    # LunarLander's notebook checks are static (RUNS_TORCH = False): their points, and no torch
    lunar = load_rubric(REPO / "rubrics" / "lunarlander.toml")
    points = {"cells_parse": 1.0, "actor_input": 1.0, "actor_output": 2.0}
    lunar = lunar.model_copy(update={"notebook": lunar.notebook.model_copy(update={"points": points})})
    install = install_for(lunar, REPO)
    assert install.torch is None and install.lock == plain.lock
    assert "notebooks (4 points), read without running them: no torch" in install.parts


def test_a_zip_that_could_not_grade_notebooks_is_refused(tmp_path):
    source = tmp_path / "src"
    (source / "lock").mkdir(parents=True)
    (source / "lock" / "notebooks.txt").write_text(
        re.sub(r"(?m)^# unhashed: torch.*\n", "", (REPO / "lock" / "notebooks.txt").read_text()))
    with pytest.raises(SetupError, match=r"grades notebooks \(11 points\), but lock/notebooks.txt pins no torch"):
        install_for(load_rubric(MSPACMAN), source)
    shutil.rmtree(source / "lock")
    with pytest.raises(SetupError, match=r"has no lock/notebooks.txt"):
        install_for(load_rubric(MSPACMAN), source)


def test_the_builder_says_what_the_zip_grades(tmp_path, capsys):
    from grader.cli import main

    assert main(["gradescope", "--rubric", str(MSPACMAN), "--out", str(tmp_path / "a.zip"), "--source", str(REPO)]) == 0
    out = capsys.readouterr().out
    assert "note: setup.sh installs what grades notebooks (11 points) with torch==2.13.0 (CPU build)" in out
    assert "note: setup.sh installs what grades ONNX models (10 points)" in out
    with zipfile.ZipFile(tmp_path / "a.zip") as z:
        assert z.read(LOCK_ENTRY) == (REPO / "lock" / "notebooks.txt").read_bytes()


@pytest.mark.slow
def test_the_mspacman_zip_grades_a_notebook_and_its_model_as_gradescope_runs_it(tmp_path):
    if not shutil.which("python3") or subprocess.run(["python3", "-c", "import venv, ensurepip"]).returncode:
        pytest.skip("needs python3 with venv and ensurepip, as on Gradescope's image")
    zip_path = build_autograder(rubric=MSPACMAN, out=tmp_path / "autograder.zip", source=REPO)
    root = tmp_path / "autograder"
    for sub in ("source", "submission", "results"):
        (root / sub).mkdir(parents=True)
    with zipfile.ZipFile(zip_path) as z:
        z.extractall(root / "source")
    for name in ("setup.sh", "run_autograder"):
        (root / "source" / name).chmod(0o755)
    rubric = root / "source" / "mspacman.toml"
    text, n = re.subn(r"(?m)^episodes = \d+$", f"episodes = {EPISODES}", rubric.read_text())
    assert n == 1
    rubric.write_text(text)
    env = _clean_env(GRADESCOPE_ROOT=str(root), RL_GRADER_TORCH_INDEX="")

    setup = subprocess.run(["bash", "./setup.sh"], cwd=root / "source", env=env, capture_output=True, text=True,
                           timeout=1800)
    log = setup.stdout + setup.stderr
    if setup.returncode and re.search(r"(?i)(connection|network is unreachable|temporary failure in name)", log):
        pytest.skip(f"setup.sh could not reach the package index: {log[-300:]}")
    assert setup.returncode == 0, log[-4000:]
    assert "grade doctor: this machine simulates the locked environment" in log, log[-4000:]
    assert re.search(r"ok +mspacman +mspacman: \d+ replayed episodes \(random\) match", log), log[-4000:]
    venv_python = root / "rl-grader-venv" / "bin" / "python"
    versions = subprocess.run([str(venv_python), "-c", "import torch, numpy, onnxruntime; print(torch.__version__, "
                               "numpy.__version__, onnxruntime.__version__)"], capture_output=True, text=True, env=env)
    assert versions.stdout.split()[0].startswith("2.13.0"), versions.stdout + versions.stderr

    write_notebook(root / "submission" / "homework.ipynb", mspacman_cells())
    shutil.copy(REPO / "reference" / "models" / "mspacman_dqn.onnx", root / "submission" / "model.onnx")
    run = subprocess.run([str(root / "source" / "run_autograder")], cwd=root, env=env, capture_output=True, text=True,
                         timeout=1200)
    assert run.returncode == 0, run.stdout + run.stderr
    data = json.loads((root / "results" / "results.json").read_text())
    tests = {t["name"]: t for t in data["tests"]}
    report = json.loads((root / "results" / "report" / "result.json").read_text())
    # the model was played, on the rubric's episodes
    assert len(report["episodes"]) == EPISODES and tests["episode score"]["max_score"] == 10, data
    # the notebook was graded with torch: its definitions ran and its network was built, not "not your fault"
    assert tests["definitions_run"]["score"] == tests["definitions_run"]["max_score"] == 1, tests["definitions_run"]
    assert tests["network_constructs"]["score"] == 1, tests["network_constructs"]
    assert "not your fault" not in json.dumps(data)
    assert data["score"] == pytest.approx(sum(t.get("score", 0) for t in data["tests"]))
