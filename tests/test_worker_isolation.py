"""The ONNX workers are isolated: bubblewrap (no network, uid 65534, an empty private folder, a
private /tmp) or a fallback that says so; the channel back to the grader carries plain data only;
and a failure of the grader's own code inside a worker is a grader bug, not the student's fault."""

import os
import pickle
import uuid

import numpy as np
import onnx_fixtures as F
import pytest
from worker_doubles import faulty_engine, inject_fault

from grader.errors import EngineBug, EngineFailure, MalformedMessage
from grader.notebook.sandbox import bwrap_status
from grader.runtime.channel import MAGIC, decode, encode
from grader.runtime.engine import Engine

BWRAP_OK, BWRAP_WHY = bwrap_status()
needs_bwrap = pytest.mark.skipif(not BWRAP_OK, reason=f"bubblewrap unusable here: {BWRAP_WHY}")
LIMIT = 1 << 20


@needs_bwrap
def test_the_worker_runs_in_bubblewrap_as_nobody_without_network_in_an_empty_private_folder():
    marker = f"/tmp/grader-isolation-{uuid.uuid4().hex}"
    open(marker, "w").close()
    try:
        checkout = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        secret = os.path.join(checkout, "tests", os.path.basename(__file__))
        package = os.path.join(checkout, "grader", "runtime", "worker.py")
        with Engine(2, sandbox="auto") as engine:
            assert engine.sandbox_mode == "bwrap" and engine.warnings == []
            infos = engine.info(paths=[secret, os.path.join(checkout, "rubrics"), package, marker])
            engine.load(None, task="lunarlander")
            assert len(engine.evaluate([0, 1, 2])) == 3  # and it still plays
    finally:
        os.unlink(marker)
    parent_net = os.readlink("/proc/self/ns/net")
    for info in infos:
        assert info["mode"] == "bwrap"
        assert (info["uid"], info["gid"]) == (65534, 65534)
        assert info["netns"].startswith("net:[") and info["netns"] != parent_net
        assert info["cwd_entries"] == [] and info["cwd"] != os.getcwd()
        assert os.path.basename(marker) not in info["tmp_entries"]  # /tmp is its own
        # of the checkout it sees the grader package only (not the tests, not the rubrics and their seeds)
        assert info["exists"] == [False, False, True, False]
    assert infos[0]["netns"] != infos[1]["netns"]  # one namespace per worker


@needs_bwrap
def test_a_video_is_written_by_the_parent_from_bytes_the_sandbox_sends(tmp_path):
    out = tmp_path / "out" / "v.mp4"
    out.parent.mkdir()
    with Engine(1, sandbox="bwrap") as engine:
        engine.load(open(F.mlp(tmp_path / "m.onnx"), "rb").read(), task="lunarlander")
        scored = engine.evaluate([3])
        info = engine.record(3, str(out))
        assert engine.info()[0]["cwd_entries"] == []  # the video was removed from the private folder
    assert info["return"] == scored[3][0] and info["frames"] > 10
    assert out.read_bytes()[4:8] == b"ftyp"


def test_videos_are_spread_over_the_workers_and_come_back_in_job_order(tmp_path):
    seeds = [5, 3, 8]
    with Engine(2) as engine:
        engine.load(open(F.mlp(tmp_path / "m.onnx"), "rb").read(), task="lunarlander")
        scored = engine.evaluate(seeds)
        arrived = []
        infos = engine.record_many([(s, str(tmp_path / f"v{s}.mp4")) for s in seeds],
                                   on_video=lambda k, info: arrived.append(k))
    assert sorted(arrived) == [0, 1, 2]
    assert [i["return"] for i in infos] == [scored[s][0] for s in seeds]
    assert [i["length"] for i in infos] == [scored[s][1] for s in seeds]
    assert all((tmp_path / f"v{s}.mp4").read_bytes()[4:8] == b"ftyp" for s in seeds)


def test_videos_made_before_a_failure_are_kept_and_the_missing_ones_named(tmp_path, monkeypatch):
    from grader.api import grade
    from grader.runtime.engine import Engine as E

    def record_many(self, jobs, *, on_video):
        info = self.record_many_real(jobs[:1])[0]
        on_video(0, info)
        raise EngineFailure("the video re-run took longer than its budget")

    monkeypatch.setattr(E, "record_many_real", E.record_many, raising=False)
    monkeypatch.setattr(E, "record_many", record_many)
    result = grade(F.mlp(tmp_path / "m.onnx"), seeds=[0, 1, 2], out=tmp_path / "o", video=True, report=False)
    assert result.status == "graded"
    assert [v.label for v in result.videos] == ["best"] and (tmp_path / "o" / result.videos[0].path).is_file()
    assert any("could not record the median, worst episode video(s)" in w for w in result.warnings), result.warnings
    assert sorted(p.name for p in (tmp_path / "o").iterdir() if p.suffix == ".mp4") == [result.videos[0].path]


def test_without_bubblewrap_the_fallback_is_said_in_the_result(tmp_path):
    from grader.api import grade

    with Engine(1, sandbox="fallback") as engine:
        assert engine.sandbox_mode == "fallback"
        assert engine.warnings and "without bubblewrap" in engine.warnings[0]
        info = engine.info()[0]
        assert info["cwd_entries"] == [] and info["cwd"] != os.getcwd()
        result = grade(F.mlp(tmp_path / "m.onnx"), episodes=2, out=tmp_path / "o", video=False, report=False, engine=engine)
    assert result.status == "graded"
    # said to the instructor (operator notes), never in the student's warnings
    assert any("without bubblewrap" in w for w in result.operator_notes)
    assert not any("bubblewrap" in w for w in result.warnings)


# --- the channel: plain data, validated; never a pickle -----------------------------------------
class _Creates:
    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_a_pickle_is_refused_by_the_decoder_and_never_run(tmp_path):
    marker = tmp_path / "pwned"
    for protocol in (0, 2, 5):
        with pytest.raises(MalformedMessage):
            decode(pickle.dumps(_Creates(str(marker)), protocol=protocol), max_bytes=LIMIT)
    assert not marker.exists()


def test_a_forged_pickle_reply_from_the_worker_fails_the_model_and_runs_nothing(tmp_path):
    marker = tmp_path / "pwned"
    with faulty_engine(1) as engine:
        inject_fault(engine, "pickle", marker=str(marker))
        with pytest.raises(EngineFailure, match="malformed reply, which was refused"):
            engine.info()
        engine.load(None, task="lunarlander")  # a fresh worker took over
        assert len(engine.evaluate([0])) == 1
    assert not marker.exists()


def test_messages_round_trip_and_malformed_ones_are_refused():
    value = {"a": [1, 2.5, "x", None, True], "arr": np.arange(6, dtype=np.float32).reshape(2, 3),
             "ints": np.array([1, 2], np.int64), "blob": b"\x00\x01"}
    kind, back = decode(encode("ok", value), max_bytes=LIMIT)
    assert kind == "ok" and back["a"] == value["a"] and back["blob"] == b"\x00\x01"
    assert back["arr"].dtype == np.float32 and (back["arr"] == value["arr"]).all()
    good = encode("ok", {"arr": np.zeros(4, np.float32)})
    hlen = int.from_bytes(good[4:8], "little")
    header = good[8 : 8 + hlen]
    forged = [
        b"",
        b"XXXX" + good[4:],  # bad magic
        good[:-1],  # a blob shorter than its shape
        good + b"\x00",  # trailing bytes
        MAGIC + (2**31).to_bytes(4, "little") + header,  # header length beyond the message
        MAGIC + len(b"[1]").to_bytes(4, "little") + b"[1]",  # not a header object
        MAGIC + len(header.replace(b"<f4", b"|O8")).to_bytes(4, "little") + header.replace(b"<f4", b"|O8") + good[8 + hlen :],
        MAGIC + (n := b'{"kind":"ok","value":' + b"[" * 100_000 + b"]" * 100_000 + b',"blobs":[]}', len(n))[1].to_bytes(4, "little") + n,
    ]
    for data in forged:
        with pytest.raises(MalformedMessage):
            decode(data, max_bytes=LIMIT)
    with pytest.raises(MalformedMessage):
        decode(good, max_bytes=len(good) - 1)


# --- whose fault: the grader's own failures are bugs ------------------------------------------------
def test_a_failing_probe_of_the_grader_is_an_engine_bug_not_the_models_fault(tmp_path):
    with faulty_engine(1) as engine:
        engine.load(open(F.mlp(tmp_path / "m.onnx"), "rb").read(), task="lunarlander")
        inject_fault(engine, "probe")
        with pytest.raises(EngineBug) as err:
            engine.probe()
        assert not isinstance(err.value, EngineFailure)
        assert "injected fault: the grader's probe failed" in str(err.value)
        assert "Traceback" in err.value.traceback and "RuntimeError" in err.value.traceback
        engine.load(open(F.mlp(tmp_path / "m.onnx"), "rb").read(), task="lunarlander")  # recovers
        assert engine.probe()["singles"]


def test_a_failing_environment_factory_is_an_engine_bug(tmp_path):
    with faulty_engine(1) as engine:
        engine.load(open(F.mlp(tmp_path / "m.onnx"), "rb").read(), task="lunarlander")
        inject_fault(engine, "env")
        with pytest.raises(EngineBug, match="the environment factory failed"):
            engine.evaluate([0, 1])


def test_the_models_own_runtime_failure_stays_the_models_fault(tmp_path):
    with Engine(1) as engine:
        engine.load(open(F.nan_output(tmp_path / "nan.onnx"), "rb").read(), task="lunarlander")
        with pytest.raises(EngineFailure, match="NaN or infinity"):
            engine.evaluate([0])
        with pytest.raises(EngineFailure):
            engine.load(b"not a model", task="lunarlander")


def test_a_stream_of_heartbeats_does_not_push_back_the_budget(tmp_path):
    from grader.scoring.rubric import Budgets

    with faulty_engine(1) as engine:
        engine.load(open(F.mlp(tmp_path / "m.onnx"), "rb").read(), task="lunarlander", budgets=Budgets(probe_s=2))
        inject_fault(engine, "spam")
        with pytest.raises(EngineFailure, match="longer than their 2 s budget"):  # the budget's cap was hit
            engine.probe()


def test_resize_fits_the_workers_before_a_model_is_loaded(tmp_path):
    with Engine(2) as engine:
        engine.resize(1)
        assert engine.n_workers == 1 and len(engine.info()) == 1
        engine.resize(3)
        assert engine.n_workers == 3 and len(engine.info()) == 3
        engine.load(None, task="lunarlander")
        assert sorted(engine.evaluate([0, 1, 2, 3])) == [0, 1, 2, 3]
        with pytest.raises(RuntimeError, match="without a model"):
            engine.resize(1)
        with pytest.raises(ValueError):
            Engine(1).resize(0)


def test_the_engine_module_imports_neither_numpy_nor_the_tasks():
    """`grade` starts its workers before numpy and the task registry are imported."""
    import subprocess
    import sys

    code = ("import sys, grader.runtime.engine as e; w = e.Engine(1); w.close(); "
            "print(sorted(m for m in ('numpy', 'grader.tasks', 'grader.runtime.worker', 'pydantic') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True).stdout
    assert out.strip() == "[]"


def test_a_large_command_reaches_every_worker_while_one_of_them_is_busy():
    """A model bigger than a socket's buffer blocks its sender until the worker reads it: sent one
    worker after the other, a busy first worker would hold up the second one's model."""
    import socket
    import threading
    from multiprocessing.connection import Connection

    class Fake:
        def __init__(self):
            mine, theirs = socket.socketpair()
            self.conn, self.peer = Connection(mine.detach()), Connection(theirs.detach())

        def send_encoded(self, payload: bytes) -> None:
            self.conn.send_bytes(payload)

    busy, free = Fake(), Fake()
    model = os.urandom(8 * 2**20)  # far more than a socket buffer holds
    sender = threading.Thread(target=Engine._broadcast, args=([busy, free], "load", {"model": model}), daemon=True)
    sender.start()
    assert free.peer.poll(30), "the second worker got nothing while the first was not reading"
    assert decode(free.peer.recv_bytes(), max_bytes=2**30) == ("load", {"model": model})
    sender.join(30)
    assert not sender.is_alive()  # the broadcast itself does not wait for the busy worker
    assert decode(busy.peer.recv_bytes(), max_bytes=2**30) == ("load", {"model": model})  # which gets it when it reads
