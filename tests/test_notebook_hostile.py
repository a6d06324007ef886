"""Hostile notebooks: each ends as a failed check with a specific message, within a time bound,
and nothing outside the sandbox is read or changed. Run with bubblewrap when it is usable, and
(for what the fallback can promise) with the fallback forced. Each test is the attack, then the
effect observed on the evidence (checks, models, logs)."""

from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path

import notebook_fixtures as F
import pytest

from grader.errors import SubmissionError
from grader.notebook import mspacman
from grader.notebook.common import common_checks, parse_notebook
from grader.notebook.sandbox import Limits, bwrap_status
from grader.scoring.rubric import default_rubric_path, load_rubric

CANARY = "canary: other student's work\n"
needs_bwrap = pytest.mark.skipif(not bwrap_status()[0], reason="bubblewrap not usable here: " + bwrap_status()[1])
MODES = ["auto", "fallback"]
PROBED = ("preprocess_shape", "preprocess_range", "preprocess_values",
          "network_constructs", "network_forward", "network_batch_independent")


@pytest.fixture
def grader_tmp(tmp_path, monkeypatch):
    """The grader's own temporary folder (where the sandbox's work folder is made), watched by the test."""
    d = tmp_path / "grader-tmp"
    d.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(d))
    return d


def _collect_hostile(tmp_path: Path, grader_tmp: Path, hostile: str, *, sandbox: str | None = None,
                     timeout_s: float | None = None, cells=None):
    other = tmp_path / "other_student"
    other.mkdir()
    (other / "model.onnx").write_text(CANARY)
    canary = tmp_path / "canary.txt"
    canary.write_text(CANARY)
    hostile = hostile.replace("@CANARY@", str(canary))
    cells = cells(hostile) if cells else F.mspacman_cells(params=F.PARAMS + "\n" + hostile)
    nb = parse_notebook(F.write_notebook(tmp_path / "student" / "homework.ipynb", cells))
    limits = Limits.from_rubric(load_rubric(default_rubric_path("mspacman")).notebook)
    if timeout_s:
        limits.timeout_s = timeout_s
    t = time.monotonic()
    ev = mspacman.collect(nb, limits=limits, sandbox=sandbox, weights=[])
    elapsed = time.monotonic() - t  # returned for messages only: the tests assert which cap stopped the code
    assert canary.read_text() == CANARY and (other / "model.onnx").read_text() == CANARY
    assert sorted(p.name for p in tmp_path.iterdir()) == ["canary.txt", "grader-tmp", "other_student", "student"]
    assert list(grader_tmp.iterdir()) == []  # the work folder is gone, nothing left on the host
    checks = common_checks(nb) + ev.checks
    return ev, {c.name: c for c in checks}, elapsed


OS_EXIT = "import os\nclass Quit:\n    os._exit(0)\n"
FORK_BOMB = "import os\nclass Bomb:\n    while True:\n        try:\n            os.fork()\n        except OSError:\n            pass\n"
FLOOD = "class Loud:\n    print('x' * (100 << 20))\n"
BIG_FILE = ("class Big:\n    with open('big.bin', 'wb') as fh:\n        for _ in range(1024):\n"
            "            fh.write(b'\\0' * (1 << 20))\n")
MANY_FILES = ("class Fill:\n    block = b'\\1' * (1 << 20)\n    for i in range(10):\n"
              "        with open('fill%d.bin' % i, 'wb') as fh:\n            for _ in range(100):\n"
              "                fh.write(block)\n")
PATCH = ("import builtins, json, sys\nbuiltins.print = None\nbuiltins.open = None\njson.dumps = None\n"
         "sys.exit = None\nsys.stdout = None\n")
STEAL = ("class Thief:\n    loot = open('../other_student/model.onnx').read()\n"
         "class Thief2:\n    loot = open('/work/main/rubrics/mspacman.toml').read()\n"
         "class Vandal:\n    open('@CANARY@', 'w').write('pwned')\n"
         "class Etc:\n    loot = open('/etc/passwd').read()\n"
         "class Root:\n    loot = open('/root/.bashrc').read()\n"
         "class HostTmp:\n    open('/tmp/notebook-hostile-canary', 'w').write('x')\n"
         "import os\nclass Who:\n    print('uid', os.getuid(), 'pid', os.getpid(), flush=True)\n")
NETWORK = ("import socket\nclass Phone:\n    s = socket.create_connection(('1.1.1.1', 80), timeout=3)\n")
LOOPBACK = ("import socket\nclass Loop:\n    srv = socket.socket()\n    srv.bind(('127.0.0.1', 0))\n    srv.listen(1)\n"
            "    cli = socket.create_connection(srv.getsockname(), timeout=3)\n    print('loopback ok', flush=True)\n")
SPIN = "class Spin:\n    while True:\n        pass\n"
SPIN_NO_ALARM = "import signal\nclass Spin:\n    signal.signal(signal.SIGALRM, signal.SIG_IGN)\n    while True:\n        pass\n"
UNFLUSHED = "import os\nclass Bye:\n    print('hello')\n    os._exit(0)\n"

# The answer key: a preprocessing that searches its sandbox for .npz / .npy files and returns
# the stored (44, 40) plane closest to a rough preprocessing of the frame. With the reference
# states of the probe frames inside (the old layout) this returned the exact answers.
# The thief searches every place the grader could leave the answer key: the sandbox's folder, its
# temporary folder, the grader's own temporary folder on the host (@GRADER_TMP@) and, inside
# bubblewrap, the whole (private) /tmp. The fallback shares the host's /tmp with every other
# process, so files other programs left there are out of the grader's hands and not searched.
ANSWER_THIEF = '''import os
import tempfile
import numpy as np

def _planes():
    found = []
    tops = {os.getcwd(), "/sandbox", tempfile.gettempdir(), "@GRADER_TMP@"}
    if os.environ.get("GRADER_SANDBOX_MODE") == "bwrap":
        tops.add("/tmp")
    for top in tops:
        for root, dirs, files in os.walk(top):
            for name in files:
                if name.endswith((".npz", ".npy")):
                    try:
                        data = np.load(os.path.join(root, name))
                        arrays = [data[k] for k in data.files] if hasattr(data, "files") else [data]
                    except Exception:
                        continue
                    for a in arrays:
                        if a.ndim >= 2 and a.shape[-2:] == (44, 40):
                            found.extend(a.reshape(-1, 44, 40).astype(np.float32))
    return found

PLANES = []

def preprocess_observation(self, observation):
    if not PLANES:
        PLANES.extend(_planes() or [None])
    rough = np.concatenate([np.full((2, 160), 150.0), observation.mean(axis=2)[1:171], np.full((2, 160), 150.0)])[1::4, 1::4]
    if PLANES[0] is None:
        return rough.astype(np.float32)
    return min(PLANES, key=lambda p: float(np.abs(p - rough).sum()))

Agent.preprocess_observation = preprocess_observation
'''

# The forged channel: a notebook with no preprocessing and no network that reports "passed".
_FAKE_OLD = [
    {"ev": "preprocess", "found": True, "name": "preprocess_observation(observation)",
     "frames": [{"shape": [44, 40], "dtype": "float32", "min": 0, "max": 200, "finite": True}] * 5},
    {"ev": "network", "found": True, "name": "DQN", "constructed": True, "args": [5, 5],
     "forward": {"shape": [4, 5], "finite": True}, "batch_diff": 0.0},
    {"ev": "verdict", "check": "preprocess_values", "passed": True, "points": 2},
]
_B64 = "import base64, numpy as np\nB = lambda a: base64.b64encode(np.asarray(a, '<f4').tobytes()).decode()\n"
_FAKE_NEW = ("def fake_report(send):\n"
             "    arr = lambda shape, v: {'type': 'torch.Tensor', 'dtype': 'float32', 'shape': list(shape), 'data': B(np.full(shape, v))}\n"
             "    send(ev='definitions_done', params={'sequence_size': 5, 'n_actions': 5})\n"
             "    send(ev='preprocess', found=True, name='preprocess_observation(observation)', function='preprocess_observation',\n"
             "         outputs=[arr((44, 40), 100.0 + i) for i in range(5)])\n"
             "    send(ev='network', found=True, name='DQN', constructed=True, args=[5, 5],\n"
             "         out_batch=arr((4, 5), 0.5), out_single=[arr((1, 5), 0.5)] * 4)\n"
             "    send(ev='done')\n")
FORGERIES = {
    # fake lines, old and new format, on every inherited descriptor; the runner goes on
    "lines": _B64 + _FAKE_NEW + "import os, json\ndef forge_all():\n"
             f"    for fd in range(3, 40):\n        for m in {_FAKE_OLD!r}:\n"
             "            try:\n                os.write(fd, (json.dumps(m) + '\\n').encode())\n"
             "            except OSError:\n                pass\n"
             "        try:\n            fake_report(lambda **m: os.write(fd, (json.dumps(m) + '\\n').encode()))\n"
             "        except OSError:\n            pass\n"
             "class Forge:\n    forge_all()\n",
    # rebind the runner's reporting function, forge through the real one
    "rebind": _B64 + _FAKE_NEW + "import sys\nclass Forge:\n    runner = sys.modules['__main__']\n"
              "    real = runner.send\n    runner.send = lambda **m: None\n    fake_report(real)\n",
    # write a complete forged report to the result fd named on the runner's command line, then leave
    "result_fd": _B64 + _FAKE_NEW + "import os, sys, json\ndef forge_fd():\n    fd = int(sys.argv[2])\n"
                 "    fake_report(lambda **m: os.write(fd, (json.dumps(m) + '\\n').encode()))\n    os._exit(0)\n"
                 "class Forge:\n    forge_fd()\n",
}


def _without_probes(hostile: str) -> list[str]:
    return F.mspacman_cells(network="x = 1\n", preprocess="y = 2\n", params=F.PARAMS + "\n" + hostile)


# --- the limits ---------------------------------------------------------------------------------
@pytest.mark.parametrize("mode", MODES)
def test_os_exit_at_import(tmp_path, grader_tmp, mode):
    ev, c, _ = _collect_hostile(tmp_path, grader_tmp, OS_EXIT, sandbox=mode)
    assert not c["sandbox"].passed and c["sandbox"].severity == "error"
    assert "os._exit()" in c["sandbox"].message and "cell 3" in c["sandbox"].message
    assert not c["preprocess_values"].passed and "not checked" in c["preprocess_values"].message
    assert ev.models == []


@pytest.mark.parametrize("mode", MODES)
def test_fork_bomb(tmp_path, grader_tmp, mode):
    ev, c, elapsed = _collect_hostile(tmp_path, grader_tmp, FORK_BOMB, sandbox=mode)
    assert not c["sandbox"].passed
    if c["sandbox_isolation"].passed or "cgroup" in c["sandbox_isolation"].message:
        assert "fork bomb" in c["sandbox"].message
        assert "did not finish within" not in c["sandbox"].message  # the cgroup refused a fork, not the wall timeout


@pytest.mark.parametrize("mode", MODES)
def test_100mb_of_output(tmp_path, grader_tmp, mode):
    ev, c, _ = _collect_hostile(tmp_path, grader_tmp, FLOOD, sandbox=mode)
    assert "printed more than" in c["sandbox"].message
    assert len(ev.logs["notebook_stdout.txt"]) < 2 << 20 and b"more bytes not kept" in ev.logs["notebook_stdout.txt"]


@pytest.mark.parametrize("mode", MODES)
def test_1gb_file(tmp_path, grader_tmp, mode):
    ev, c, _ = _collect_hostile(tmp_path, grader_tmp, BIG_FILE, sandbox=mode)
    msg = c["definitions_run"].message
    assert not c["definitions_run"].passed
    assert "File too large" in msg or "disk quota" in msg or "disk quota" in c["sandbox"].message, msg


@pytest.mark.parametrize("mode", MODES)
def test_disk_quota(tmp_path, grader_tmp, mode):
    """1 GB in ten 100 MB files (each under the file-size limit) at definition time."""
    ev, c, elapsed = _collect_hostile(tmp_path, grader_tmp, MANY_FILES, sandbox=mode)
    quota = [x.message for x in (c["definitions_run"], c["sandbox"]) if "disk quota" in x.message]
    assert quota, (c["definitions_run"].message, c["sandbox"].message)
    assert "256 MB" in quota[0]
    assert not c["definitions_run"].passed
    if c["sandbox_isolation"].passed:  # bubblewrap: the write fails inside its tmpfs, the rest is still graded
        assert "No space left on device" in c["definitions_run"].message
        assert c["preprocess_values"].passed
    else:  # on the host: stopped by the grader's measurement, the grading is invalid
        assert not c["sandbox"].passed and c["sandbox"].severity == "error"


@needs_bwrap
def test_disk_quota_with_a_bubblewrap_without_size(tmp_path, grader_tmp, monkeypatch):
    """bubblewrap < 0.8 has no --size: the scratch is then measured on the host, as in the fallback."""
    from grader.notebook import sandbox

    monkeypatch.setattr(sandbox, "writable_places", lambda *a, **k: None)  # neither --size nor the bounded tmpfs
    ev, c, elapsed = _collect_hostile(tmp_path, grader_tmp, MANY_FILES, sandbox="bwrap")
    assert c["sandbox_isolation"].passed and "measured on the host" in c["sandbox_isolation"].message
    assert not c["sandbox"].passed and "disk quota of 256 MB" in c["sandbox"].message


@pytest.mark.parametrize("mode", MODES)
def test_only_the_given_weights_are_visible(tmp_path, grader_tmp, mode):
    """Files beside the notebook that the pipeline did not assign to the student are not copied in."""
    (tmp_path / "student").mkdir()
    (tmp_path / "student" / "secret.pt").write_bytes(b"not yours")
    ev, c, _ = _collect_hostile(tmp_path, grader_tmp, "import os\nclass Look:\n    print(sorted(os.listdir('in/submission')), flush=True)\n",
                                sandbox=mode)
    assert b"[]" in ev.logs["notebook_stdout.txt"], ev.logs


@pytest.mark.parametrize("mode", MODES)
def test_patched_builtins_do_not_break_the_report(tmp_path, grader_tmp, mode):
    ev, c, _ = _collect_hostile(tmp_path, grader_tmp, PATCH, sandbox=mode)
    assert not c["sandbox"].passed and "replaced built-in functions" in c["sandbox"].message
    assert "builtins.print" in c["sandbox"].message and "json.dumps" in c["sandbox"].message
    assert c["preprocess_values"].passed and c["network_forward"].passed


@needs_bwrap
def test_reading_other_students_rubrics_etc_root_fails(tmp_path, grader_tmp):
    assert Path("/etc/passwd").is_file()
    ev, c, _ = _collect_hostile(tmp_path, grader_tmp, STEAL, sandbox="bwrap")
    msg = c["definitions_run"].message
    assert not c["definitions_run"].passed
    assert msg.count("No such file or directory") >= 4, msg  # other student, rubric, canary, /etc (and /root)
    assert c["sandbox_isolation"].passed
    assert not Path("/tmp/notebook-hostile-canary").exists()  # its /tmp is its own
    out = ev.logs["notebook_stdout.txt"].decode()
    uid, pid = out.split()[1], out.split()[3]
    assert uid == "65534" and int(pid) < 16, out  # nobody, in its own pid namespace


@pytest.mark.parametrize("mode", MODES)
def test_network_is_cut_off(tmp_path, grader_tmp, mode):
    ev, c, _ = _collect_hostile(tmp_path, grader_tmp, NETWORK, sandbox=mode)
    assert not c["definitions_run"].passed
    assert "Network is unreachable" in c["definitions_run"].message or "no network" in c["definitions_run"].message


@needs_bwrap
def test_loopback_only(tmp_path, grader_tmp):
    ev, c, _ = _collect_hostile(tmp_path, grader_tmp, LOOPBACK, sandbox="bwrap")
    assert c["definitions_run"].passed, c["definitions_run"].message
    assert b"loopback ok" in ev.logs["notebook_stdout.txt"]


def test_endless_loop_at_definition_time(tmp_path, grader_tmp):
    ev, c, _ = _collect_hostile(tmp_path, grader_tmp, SPIN)
    assert not c["definitions_run"].passed
    assert "cell 3 line" in c["definitions_run"].message and "did not finish within 10 s" in c["definitions_run"].message
    assert c["preprocess_values"].passed


@pytest.mark.slow
def test_endless_loop_ignoring_the_alarm_hits_the_wall_timeout(tmp_path, grader_tmp):
    ev, c, _ = _collect_hostile(tmp_path, grader_tmp, SPIN_NO_ALARM, timeout_s=12)
    assert not c["sandbox"].passed
    assert "did not finish within" in c["sandbox"].message and "cell 3" in c["sandbox"].message


@pytest.mark.parametrize("mode", MODES)
def test_output_is_not_lost(tmp_path, grader_tmp, mode):
    """print() without a flush, then a hard exit: the text still reaches the log."""
    ev, c, _ = _collect_hostile(tmp_path, grader_tmp, UNFLUSHED, sandbox=mode)
    assert b"hello" in ev.logs["notebook_stdout.txt"]
    assert not c["sandbox"].passed and "os._exit()" in c["sandbox"].message


# --- judging outside ----------------------------------------------------------------------------
@pytest.mark.parametrize("mode", MODES)
def test_the_answer_key_is_not_in_the_sandbox(tmp_path, grader_tmp, mode):
    ev, c, _ = _collect_hostile(tmp_path, grader_tmp, "", sandbox=mode,
                                cells=lambda _: F.mspacman_cells(
                                    preprocess=ANSWER_THIEF.replace("@GRADER_TMP@", str(grader_tmp))))
    assert c["definitions_run"].passed, c["definitions_run"].message
    assert not c["preprocess_values"].passed, c["preprocess_values"].message
    assert "differs from the reference" in c["preprocess_values"].message


def test_the_answer_thief_works_on_the_old_layout(tmp_path, monkeypatch):
    """The attack is real: with the reference states of the probe frames beside it (the old
    frames.npz), the thief returns the exact answers."""
    import numpy as np

    from grader.tasks.mspacman import preprocess_frames

    frames, _ = mspacman.probe_inputs()
    ref = preprocess_frames(frames)
    old_states = np.stack([ref[i:i + 1].repeat(5, axis=0) for i in range(len(frames))])
    np.savez(tmp_path / "frames.npz", frames=frames, states=old_states)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))

    class Agent:
        pass

    ns = {"Agent": Agent}
    try:
        exec(ANSWER_THIEF, ns)
        assert all(np.array_equal(ns["preprocess_observation"](None, f), r) for f, r in zip(frames, ref))
    finally:  # the answer key must not outlive the test, where a later run's thief could find it
        (tmp_path / "frames.npz").unlink()


@pytest.mark.parametrize("forgery", sorted(FORGERIES))
def test_a_forged_report_earns_nothing(tmp_path, grader_tmp, forgery):
    ev, c, _ = _collect_hostile(tmp_path, grader_tmp, FORGERIES[forgery], cells=_without_probes)
    for name in PROBED:
        assert not c[name].passed, (name, c[name].message)
    # the runner's own report, or the notebook's statements, contradict the forgery: nothing from the channel is used
    assert not c["sandbox"].passed and "the grader did not send" in c["sandbox"].message, c["sandbox"].message
    assert not c["definitions_run"].passed
    assert ev.models == []


# --- malformed notebooks --------------------------------------------------------------------------
def _nb_json(cells: list[str], metadata=None) -> str:
    return json.dumps({"nbformat": 4, "nbformat_minor": 5, "metadata": metadata or {},
                       "cells": [{"cell_type": "code", "metadata": {}, "source": s, "outputs": [],
                                  "execution_count": None} for s in cells]})


def test_deeply_nested_json_is_invalid(tmp_path):
    p = tmp_path / "deep.ipynb"
    p.write_text(_nb_json(["x = 1"]).replace('"metadata": {}', '"metadata": {"x": ' + "[" * 100_000 + "]" * 100_000 + "}", 1))
    with pytest.raises(SubmissionError) as info:
        parse_notebook(p)
    assert info.value.check == "notebook_format" and "nested too deeply" in info.value.message


def test_moderately_nested_json_is_invalid_not_a_crash(tmp_path):
    p = tmp_path / "deep.ipynb"
    p.write_text(_nb_json(["x = 1"], metadata={"x": json.loads("[" * 600 + "]" * 600)}))
    with pytest.raises(SubmissionError) as info:
        parse_notebook(p)
    assert info.value.check == "notebook_format"


@pytest.mark.parametrize("source", ["(" * 200_000 + ")" * 200_000, "[" * 50_000, "x = " + "-" * 100_000 + "1",
                                    "x = " + "1 + " * 100_000 + "1"])
def test_source_nested_too_deeply_fails_cells_parse(tmp_path, source):
    p = tmp_path / "nested.ipynb"
    p.write_text(_nb_json(["import torch", source]))
    nb = parse_notebook(p)
    c = {x.name: x for x in common_checks(nb)}["cells_parse"]
    assert not c.passed and "cell 2 does not parse" in c.message, c.message


def test_bubblewrap_is_used_where_it_is_installed():
    """Where Debian's bubblewrap is installed (CI installs it), the real sandbox must work:
    a silent fallback would hide a broken sandbox (e.g. a virtualenv under /tmp hidden by the
    sandbox's own /tmp)."""
    import shutil

    if not shutil.which("bwrap") or os.geteuid() != 0:
        pytest.skip("bubblewrap is not installed here, or not running as root")
    usable, reason = bwrap_status()
    assert usable, reason
