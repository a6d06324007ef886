"""Every place a sandboxed process can write is bounded, in bytes and in files.

The attack: code in the sandbox writes into ``/``, ``/dev``, ``/dev/shm``, ``/tmp`` (and the
notebook's ``/sandbox``) until a write fails, then creates empty files until that fails. The
effect observed: bubblewrap's own root and ``/dev`` refuse every write (read-only), and the
writable places stop at the configured bytes and files, together. Both sandboxes are tested
through their real command lines (the notebook's :func:`grader.notebook.sandbox._bwrap_command`
and the engine's :func:`grader.runtime.isolation.worker_command`), with only the program after
bubblewrap's ``--`` replaced by the attack, and the notebook once end to end.
"""

from __future__ import annotations

import os
import tempfile

import pytest

from benchmarks.bench_sandbox_bounds import run_attack
from grader.runtime.bwrap import bwrap_status, scratch_mounts_work

pytestmark = pytest.mark.skipif(not bwrap_status()[0], reason="bubblewrap not usable here: " + bwrap_status()[1])
MB = 1 << 20

def _assert_bounded(seen: dict, *, sealed: list[str], writable: list[str], size: int, files: int) -> None:
    for place in sealed:  # bubblewrap's own tmpfs: not a byte, not a file
        assert seen[place]["bytes"] == [0, "EROFS"], (place, seen[place])
        assert seen[place]["files"] == [0, "EROFS"], (place, seen[place])
    for place in writable:
        written, err = seen[place]["bytes"]
        assert err == "ENOSPC" and written <= size, (place, seen[place])
        made, err = seen[place]["files"]
        assert err == "ENOSPC" and made <= files, (place, seen[place])
        assert made >= files // 2  # the bound is the one configured, not an accident


def test_the_notebook_sandbox_bounds_every_writable_place(tmp_path):
    if not scratch_mounts_work()[0]:
        pytest.skip("no unprivileged user namespaces: the file count cannot be bounded here " + scratch_mounts_work()[1])
    from grader.notebook import sandbox

    limits = sandbox.Limits(scratch_mb=8, scratch_files=300)
    work = tmp_path / "work"
    (work / "in").mkdir(parents=True)
    run = sandbox.SandboxRun(mode="bwrap")
    cmd = sandbox._bwrap_command(work, limits, run, (3, 4))
    places = ["/sandbox", "/tmp", "/dev/shm"]
    seen = run_attack(cmd, {"PATH": "/usr/bin:/bin"}, "/", ["/", "/dev", *places], 4 * 8 * MB, 3000)
    _assert_bounded(seen, sealed=["/", "/dev"], writable=places, size=8 * MB, files=300)
    assert "8 MB and 300 files" in run.scratch
    assert sorted(p.name for p in work.iterdir()) == ["in", "scratch"] and not any((work / "scratch").iterdir())


def test_the_model_workers_sandbox_bounds_every_writable_place(tmp_path, monkeypatch):
    if not scratch_mounts_work()[0]:
        pytest.skip("no unprivileged user namespaces: the file count cannot be bounded here " + scratch_mounts_work()[1])
    from grader import limits as L
    from grader.limits import WorkerLimits
    from grader.runtime import isolation

    monkeypatch.setattr(L, "WORKER_TMPFS_BYTES", 8 * MB)
    monkeypatch.setattr(L, "WORKER_TMPFS_FILES", 300)
    workdir = tempfile.mkdtemp(dir=tmp_path)
    cmd, env, cwd = isolation.worker_command(isolation.Isolation("bwrap"), 3, workdir, WorkerLimits())
    seen = run_attack(cmd, env, cwd, ["/", "/dev", "/tmp", "/dev/shm"], 4 * 8 * MB, 3000)
    _assert_bounded(seen, sealed=["/", "/dev"], writable=["/tmp", "/dev/shm"], size=8 * MB, files=300)
    assert os.listdir(workdir) == []  # the tmpfs lived in the helper's namespace only


def test_without_user_namespaces_bytes_stay_bounded_and_the_note_says_files_are_not(tmp_path, monkeypatch):
    """Where the helper cannot mount (no unprivileged user namespaces): --size tmpfs, said in words."""
    from grader.notebook import sandbox
    from grader.runtime import bwrap

    monkeypatch.setattr(bwrap, "scratch_mounts_work", lambda: (False, "unshare: Operation not permitted"))
    limits = sandbox.Limits(scratch_mb=8, scratch_files=300)
    (tmp_path / "in").mkdir()
    run = sandbox.SandboxRun(mode="bwrap")
    cmd = sandbox._bwrap_command(tmp_path, limits, run, (3, 4))
    assert "number of files is NOT bounded" in run.scratch and "Operation not permitted" in run.scratch
    seen = run_attack(cmd, {"PATH": "/usr/bin:/bin"}, "/", ["/", "/dev", "/tmp", "/dev/shm"], 4 * 8 * MB, 10)
    for place in ("/", "/dev"):
        assert seen[place]["bytes"] == [0, "EROFS"], seen[place]
    for place in ("/tmp", "/dev/shm"):
        assert seen[place]["bytes"][1] == "ENOSPC" and seen[place]["bytes"][0] <= 8 * MB, seen[place]


def test_a_notebook_filling_dev_shm_is_stopped_at_the_quota(tmp_path):
    """End to end: the notebook's definitions write into /dev/shm until it fails; the quota stops it."""
    pytest.importorskip("torch")
    import notebook_fixtures as F

    from grader.notebook import mspacman
    from grader.notebook.common import parse_notebook
    from grader.notebook.sandbox import Limits

    hostile = ("class Fill:\n    import os\n    n = 0\n    try:\n"
               "        with open('/dev/shm/fill', 'wb', buffering=0) as f:\n"
               "            while n < 64 << 20:\n                n += f.write(b'\\1' * (1 << 20))\n"
               "    except OSError as e:\n        print('stopped', e.strerror)\n    print('wrote', n)\n")
    nb = parse_notebook(F.write_notebook(tmp_path / "homework.ipynb", F.mspacman_cells(params=F.PARAMS + "\n" + hostile)))
    limits = Limits(scratch_mb=16)
    ev = mspacman.collect(nb, limits=limits, sandbox="bwrap", weights=[])
    out = ev.logs["notebook_stdout.txt"].decode()
    wrote = int(out.split("wrote ")[1].split()[0])
    assert "stopped No space left on device" in out and wrote <= 16 * MB, out


def test_a_working_helper_is_remembered_and_a_failing_one_is_probed_again(tmp_path, monkeypatch):
    """The helper's probe costs a process start before the first worker: a success is remembered
    per machine state (kernel, user-namespace sysctls, interpreter, helper, user), a failure is
    not (a machine that gains user namespaces gets the bounded tmpfs), and forgetting drops it."""
    from grader.runtime import bwrap

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    probes: list[bool] = []
    answer = [(False, "unshare: Operation not permitted")]

    def probe() -> tuple[bool, str]:
        probes.append(True)
        return answer[0]

    monkeypatch.setattr(bwrap, "_probe_scratch", probe)
    bwrap.scratch_mounts_work.cache_clear()
    try:
        for _ in range(2):
            bwrap.scratch_mounts_work.cache_clear()
            assert bwrap.scratch_mounts_work() == answer[0]
        assert len(probes) == 2 and not list((tmp_path / "cache").rglob("scratch-ok-*"))  # a failure: asked again
        answer[0] = (True, "")
        for _ in range(3):
            bwrap.scratch_mounts_work.cache_clear()
            assert bwrap.scratch_mounts_work() == (True, "")
        assert len(probes) == 3  # remembered after the first success
        bwrap.forget_scratch_probe()
        assert bwrap.scratch_mounts_work() == (True, "") and len(probes) == 4
    finally:
        bwrap.scratch_mounts_work.cache_clear()


@pytest.fixture
def stale_scratch_memory(tmp_path, monkeypatch):
    """A helper that now fails (exit 125, as without user namespaces), remembered from a time when
    it worked: yields the memory's marker file."""
    from grader.runtime import bwrap

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    failing = tmp_path / "failing_helper.py"
    failing.write_text("import sys\nsys.stderr.write('scratchns: unshare: Operation not permitted\\n')\nsys.exit(125)\n")
    monkeypatch.setattr(bwrap, "SCRATCH_HELPER", failing)
    bwrap.scratch_mounts_work.cache_clear()
    marker = bwrap._scratch_marker()
    assert marker is not None
    marker.touch()
    try:
        yield marker
    finally:
        bwrap.scratch_mounts_work.cache_clear()


def test_workers_start_when_the_helper_was_wrongly_remembered_to_work(stale_scratch_memory):
    """A remembered success that no longer holds (user namespaces turned off since): the first
    workers fail to start, the engine forgets it, probes again and starts them with --size."""
    from grader.runtime import bwrap
    from grader.runtime.engine import Engine

    with Engine(1) as engine:
        engine.load(None, task="lunarlander")  # waits for the workers: the random policy
        assert engine.sandbox_mode == "bwrap" and engine.evaluate([3])[3][1] > 0
    assert not stale_scratch_memory.exists() and bwrap.scratch_mounts_work()[0] is False


def test_a_notebook_runs_when_the_helper_was_wrongly_remembered_to_work(tmp_path, stale_scratch_memory):
    """The notebook sandbox, like the engine: a remembered helper that fails (exit 125 before
    anything of the notebook ran) is forgotten and the notebook runs once more, with --size."""
    pytest.importorskip("torch")
    import notebook_fixtures as F

    from grader.notebook import mspacman
    from grader.notebook.common import parse_notebook
    from grader.notebook.sandbox import Limits
    from grader.scoring.rubric import default_rubric_path, load_rubric

    nb = parse_notebook(F.write_notebook(tmp_path / "student" / "homework.ipynb", F.mspacman_cells()))
    limits = Limits.from_rubric(load_rubric(default_rubric_path("mspacman")).notebook)
    checks = {c.name: c for c in mspacman.collect(nb, limits=limits, sandbox="bwrap", weights=[]).checks}
    assert checks["sandbox"].passed and checks["network_forward"].passed, checks["sandbox"].message
    assert "number of files is NOT bounded" in checks["sandbox_isolation"].message
    assert not stale_scratch_memory.exists()
