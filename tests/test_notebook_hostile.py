"""Hostile notebooks: each ends as a failed check with a specific message, within a time bound,
and nothing outside the sandbox is read or changed. Run with bubblewrap when it is usable, and
(for what the fallback can promise) with the fallback forced."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

import notebook_fixtures as F
from grader.notebook import grade_notebook
from grader.notebook.sandbox import bwrap_status
from grader.rubric import default_rubric_path, load_rubric

BOUND_S = 30.0
CANARY = "canary: other student's work\n"
needs_bwrap = pytest.mark.skipif(not bwrap_status()[0], reason="bubblewrap not usable here: " + bwrap_status()[1])


def _grade_hostile(tmp_path: Path, hostile: str, *, sandbox: str | None = None, timeout_s: float | None = None,
                   bound: float = BOUND_S):
    other = tmp_path / "other_student"
    other.mkdir()
    (other / "model.onnx").write_text(CANARY)
    canary = tmp_path / "canary.txt"
    canary.write_text(CANARY)
    nb = F.write_notebook(tmp_path / "student" / "homework.ipynb",
                          F.mspacman_cells(params=F.PARAMS + "\n" + hostile.replace("@CANARY@", str(canary))))
    rubric = load_rubric(default_rubric_path("mspacman"))
    if timeout_s:
        rubric.notebook.timeout_s = timeout_s
    t = time.monotonic()
    r = grade_notebook(nb, rubric=rubric, out_dir=tmp_path / "out", sandbox=sandbox)
    elapsed = time.monotonic() - t
    assert elapsed < bound, f"grading took {elapsed:.1f} s"
    assert canary.read_text() == CANARY and (other / "model.onnx").read_text() == CANARY
    assert sorted(p.name for p in tmp_path.iterdir()) == ["canary.txt", "other_student", "out", "student"]
    return r, {c.name: c for c in r.checks}


MODES = ["auto", "fallback"]

OS_EXIT = "import os\nclass Quit:\n    os._exit(0)\n"
FORK_BOMB = "import os\nclass Bomb:\n    while True:\n        try:\n            os.fork()\n        except OSError:\n            pass\n"
FLOOD = "class Loud:\n    print('x' * (100 << 20))\n"
BIG_FILE = ("class Big:\n    with open('big.bin', 'wb') as fh:\n        for _ in range(1024):\n"
            "            fh.write(b'\\0' * (1 << 20))\n")
PATCH = ("import builtins, json, sys\nbuiltins.print = None\nbuiltins.open = None\njson.dumps = None\n"
         "sys.exit = None\nsys.stdout = None\n")
STEAL = ("class Thief:\n    loot = open('../other_student/model.onnx').read()\n"
         "class Thief2:\n    loot = open('/work/main/rubrics/mspacman.toml').read()\n"
         "class Vandal:\n    open('@CANARY@', 'w').write('pwned')\n")
NETWORK = ("import socket\nclass Phone:\n    s = socket.create_connection(('1.1.1.1', 80), timeout=3)\n")
SPIN = "class Spin:\n    while True:\n        pass\n"
SPIN_NO_ALARM = "import signal\nclass Spin:\n    signal.signal(signal.SIGALRM, signal.SIG_IGN)\n    while True:\n        pass\n"


@pytest.mark.parametrize("mode", MODES)
def test_os_exit_at_import(tmp_path, mode):
    r, c = _grade_hostile(tmp_path, OS_EXIT, sandbox=mode)
    assert r.status == "invalid" and not c["sandbox"].passed
    assert "os._exit()" in c["sandbox"].message and "cell 3" in c["sandbox"].message
    assert not c["preprocess_values"].passed and "not checked" in c["preprocess_values"].message


@pytest.mark.parametrize("mode", MODES)
def test_fork_bomb(tmp_path, mode):
    r, c = _grade_hostile(tmp_path, FORK_BOMB, sandbox=mode)
    assert r.status == "invalid" and not c["sandbox"].passed
    if c["sandbox_isolation"].passed or "cgroup" in c["sandbox_isolation"].message:
        assert "fork bomb" in c["sandbox"].message


@pytest.mark.parametrize("mode", MODES)
def test_100mb_of_output(tmp_path, mode):
    r, c = _grade_hostile(tmp_path, FLOOD, sandbox=mode)
    assert r.status == "invalid" and "printed more than" in c["sandbox"].message
    assert (tmp_path / "out" / "notebook_stdout.txt").stat().st_size < 2 << 20


@pytest.mark.parametrize("mode", MODES)
def test_1gb_file(tmp_path, mode):
    r, c = _grade_hostile(tmp_path, BIG_FILE, sandbox=mode)
    assert not c["definitions_run"].passed and "File too large" in c["definitions_run"].message
    assert c["preprocess_values"].passed  # the rest still graded


@pytest.mark.parametrize("mode", MODES)
def test_patched_builtins_do_not_break_the_report(tmp_path, mode):
    r, c = _grade_hostile(tmp_path, PATCH, sandbox=mode)
    assert r.status == "invalid" and "replaced built-in functions" in c["sandbox"].message
    assert "builtins.print" in c["sandbox"].message and "json.dumps" in c["sandbox"].message
    assert c["preprocess_values"].passed and c["network_forward"].passed


@needs_bwrap
def test_reading_other_students_and_rubrics_fails(tmp_path):
    r, c = _grade_hostile(tmp_path, STEAL, sandbox="bwrap")
    msg = c["definitions_run"].message
    assert not c["definitions_run"].passed
    assert msg.count("No such file or directory") >= 3, msg
    assert c["sandbox_isolation"].passed


@pytest.mark.parametrize("mode", MODES)
def test_network_is_cut_off(tmp_path, mode):
    r, c = _grade_hostile(tmp_path, NETWORK, sandbox=mode)
    assert not c["definitions_run"].passed
    assert "Network is unreachable" in c["definitions_run"].message or "no network" in c["definitions_run"].message


def test_endless_loop_at_definition_time(tmp_path):
    r, c = _grade_hostile(tmp_path, SPIN)
    assert not c["definitions_run"].passed
    assert "cell 3 line" in c["definitions_run"].message and "did not finish within 10 s" in c["definitions_run"].message
    assert c["preprocess_values"].passed


@pytest.mark.slow
def test_endless_loop_ignoring_the_alarm_hits_the_wall_timeout(tmp_path):
    r, c = _grade_hostile(tmp_path, SPIN_NO_ALARM, timeout_s=12, bound=40)
    assert r.status == "invalid"
    assert "did not finish within" in c["sandbox"].message and "cell 3" in c["sandbox"].message


def test_bubblewrap_is_used_where_it_is_installed():
    """Where Debian's bubblewrap is installed (CI installs it), the real sandbox must work:
    a silent fallback would hide a broken sandbox (e.g. a virtualenv under /tmp hidden by the
    sandbox's own /tmp)."""
    import os
    import shutil

    if not shutil.which("bwrap") or os.geteuid() != 0:
        pytest.skip("bubblewrap is not installed here, or not running as root")
    usable, reason = bwrap_status()
    assert usable, reason
