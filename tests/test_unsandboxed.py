"""Student code never runs unisolated by default.

Without a usable bubblewrap (simulated: ``PATH`` without ``bwrap`` for a ``grade`` subprocess, or
the probe's answer replaced in-process), a notebook's code is not run: ``grade homework.ipynb``
exits 1 (a set-up problem, not the student's) saying what to install; in ``grade batch`` the row
is an ``error`` that keeps the model's episodes and points. ``GRADER_ALLOW_UNSANDBOXED=1`` runs
it in the weaker sandbox, which never sees the grader's environment variables.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import notebook_fixtures as F
import onnx_fixtures as O
import pytest

pytest.importorskip("torch")  # the MsPacman notebook's checks build its network

REPO = Path(__file__).resolve().parent.parent
NO_BWRAP = "bubblewrap (bwrap) is not installed"


def _hostile(marker: Path) -> str:
    """Definitions that leave a trace on the host and print what they can see."""
    return (f"class Probe:\n    import os\n    open({str(marker)!r}, 'w').write('ran')\n"
            "    print('ENV', sorted(os.environ))\n    print('SECRET', os.environ.get('GRADER_TEST_SECRET'))\n")


def _no_bwrap_env(tmp_path: Path, **extra: str) -> dict:
    """The grader's environment on a machine without bubblewrap: a PATH that holds no bwrap."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    env = {k: v for k, v in os.environ.items() if k not in ("GRADER_SANDBOX", "GRADER_ALLOW_UNSANDBOXED")}
    env.update(PATH=str(bin_dir), GRADER_TEST_SECRET="s3cret-token", **extra)
    return env


def _grade(args: list, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "grader.cli", *map(str, args)], capture_output=True, text=True,
                          env=env, cwd=REPO, timeout=600)


def _hand_in(folder: Path, marker: Path) -> Path:
    """A MsPacman hand-in: the notebook (with the hostile definitions) and its trained model."""
    F.write_notebook(folder / "homework.ipynb", F.mspacman_cells(params=F.PARAMS + "\n" + _hostile(marker)))
    O.conv_policy(folder / "model.onnx")
    return folder


def test_without_bubblewrap_a_notebook_is_not_run_and_grade_exits_1(tmp_path):
    marker = tmp_path / "ran.txt"
    folder = _hand_in(tmp_path / "alice", marker)
    proc = _grade([folder, "--json", "--no-video", "--episodes", "1"], _no_bwrap_env(tmp_path))
    assert not marker.exists()  # the code never ran
    assert proc.returncode == 1, proc.stderr
    result = json.loads(proc.stdout)
    assert result["status"] == "error" and "Traceback" not in proc.stderr
    assert "was not run" in result["error"] and "apt-get install -y bubblewrap" in result["error"]
    assert "not a problem with the submission" in result["error"]
    checks = {c["name"]: c for c in result["checks"]}
    assert "not checked: the notebook's code was not run" in checks["preprocess_values"]["message"]


def test_the_explicit_option_runs_it_without_the_graders_environment(tmp_path):
    marker = tmp_path / "ran.txt"
    folder = _hand_in(tmp_path / "alice", marker)
    out = tmp_path / "out"
    proc = _grade([folder, "--json", "--no-video", "--episodes", "1", "--out", out],
                  _no_bwrap_env(tmp_path, GRADER_ALLOW_UNSANDBOXED="1"))
    assert marker.exists(), proc.stderr  # it ran, in the weaker sandbox
    result = json.loads(proc.stdout)
    assert result["status"] == "graded", result["error"]
    assert any("weaker sandbox" in note for note in result["operator_notes"])  # said to the instructor
    printed = (out / "notebook_stdout.txt").read_text()
    assert "SECRET None" in printed and "s3cret-token" not in printed and "GRADER_TEST_SECRET" not in printed


def test_in_batch_the_row_is_an_error_that_keeps_the_model_grade(tmp_path):
    """A notebook and a model in a Moodle download: the model is played and its points kept in the
    result; the notebook says why it was not run; the LMS import gets no grade for the error row
    (partial points are not the student's grade), only the feedback saying what happened."""
    marker = tmp_path / "ran.txt"
    _hand_in(tmp_path / "class" / "Alice Smith_1234567_assignsubmission_file_", marker)
    worksheet = tmp_path / "Grades.csv"
    worksheet.write_text('Identifier,"Full name","Email address",Status,Grade,"Maximum Grade","Grade can be changed",'
                         '"Last modified (grade)","Feedback comments"\r\n'
                         '"Participant 1234567","Alice Smith",alice@example.org,"Submitted for grading",,100.00,Yes,-,'
                         '\r\n', encoding="utf-8")
    out = tmp_path / "out"
    proc = _grade(["batch", tmp_path / "class", "--rubric", REPO / "rubrics" / "mspacman.toml", "--out", out,
                   "--roster", worksheet, "--episodes", "1", "--no-video", "--no-progress", "--workers", "1"],
                  _no_bwrap_env(tmp_path))
    assert not marker.exists()
    assert "Traceback" not in proc.stderr, proc.stderr
    (row,) = list(csv.DictReader((out / "grades.csv").open()))
    assert row["status"] == "error" and "was not run" in row["note"], row
    (path,) = (out / "reports" / "moodle-1234567").glob("*/result.json")
    result = json.loads(path.read_text())
    assert result["status"] == "error" and len(result["episodes"]) == 1  # the model was played
    episodes = next(p for p in result["parts"] if p["kind"] == "episodes")
    assert episodes["detail"].startswith("mean") and result["score"] >= episodes["points"]  # kept in the total
    assert "the model was graded" in result["error"]
    (lms_row,) = list(csv.DictReader((out / "moodle_grades.csv").open(encoding="utf-8-sig")))
    assert lms_row["Grade"] == "" and "was not run" in lms_row["Feedback comments"], lms_row


WORKER_PROBE = """
import json, os, sys
os.environ["GRADER_TEST_SECRET"] = "s3cret-token"
from grader.runtime.engine import Engine
with Engine(1, sandbox="fallback") as engine:
    info = engine.info(paths=[sys.argv[1]])[0]
    pid = engine._workers[0].process.pid
    environ = open(f"/proc/{pid}/environ", "rb").read().decode(errors="replace")
    print(json.dumps({"uid": info["uid"], "exists": info["exists"], "warnings": engine.warnings,
                      "secret_in_env": "s3cret-token" in environ,
                      "own_netns": info["netns"] != os.readlink("/proc/self/ns/net")}))
"""


def test_the_model_workers_fallback_runs_as_another_user_without_the_graders_environment(tmp_path):
    """The workers' fallback follows the notebook's rule: uid 65534 when the grader is root and that
    user can read the interpreter, and never the grader's environment variables."""
    import shutil
    import tempfile

    system_python = Path("/usr/bin/python3")
    if os.geteuid() != 0 or not system_python.is_file():
        pytest.skip("needs root and a system Python readable by uid 65534 (/usr/bin/python3)")
    root = Path(tempfile.mkdtemp(prefix="grader-fallback-uid-", dir="/tmp"))
    try:
        root.chmod(0o755)
        venv = root / "venv"
        subprocess.run([str(system_python), "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
        site = next(venv.glob("lib/python3*/site-packages"))
        deps = next(Path(sys.prefix).glob("lib/python3*/site-packages"))
        (site / "zz_grader.pth").write_text(f"{deps}\n{REPO}\n")
        private = tmp_path / "private"
        private.mkdir(mode=0o700)
        (private / "seeds.txt").write_text("424242\n")
        r = subprocess.run([str(venv / "bin" / "python"), "-c", WORKER_PROBE, str(private / "seeds.txt")],
                           capture_output=True, text=True, timeout=120, env={"PATH": "/usr/bin:/bin", "HOME": str(root)})
        assert r.returncode == 0, r.stderr[-3000:]
        seen = json.loads(r.stdout.strip().splitlines()[-1])
        from grader.runtime.bwrap import readable_by_others

        if not readable_by_others(str(REPO / "grader")):
            pytest.skip("this checkout is not readable by uid 65534")
        assert seen["uid"] == 65534 and seen["exists"] == [False], seen
        assert not seen["secret_in_env"]
        assert seen["own_netns"] or shutil.which("unshare") is None  # the network cut off for the dropped uid too
        assert any("as uid 65534" in w for w in seen["warnings"]), seen["warnings"]
    finally:
        shutil.rmtree(root, ignore_errors=True)
