"""Notebook evidence: reading, the ast filter, the report protocol, the checks, the preprocessing
diagnosis, LunarLander. Sandboxed tests call ``parse_notebook`` + ``mspacman.collect`` directly
and assert on the evidence (checks without points, produced models, logs)."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import notebook_fixtures as F
import numpy as np
import pytest

from grader.errors import MissingDependency, SubmissionError
from grader.notebook import lunarlander, mspacman
from grader.notebook.astfilter import plan_cell
from grader.notebook.common import common_checks, detect_notebook_task, parse_notebook
from grader.notebook.diagnose import diagnose_preprocessing
from grader.notebook.protocol import parse_blobs, parse_report
from grader.notebook.reader import CodeCell, _strip_magics
from grader.notebook.sandbox import Limits
from grader.tasks.mspacman import preprocess_frames

MARKERS = {"mspacman": mspacman.MARKERS, "lunarlander": lunarlander.MARKERS}
SCORED = ("definitions_run", "preprocess_shape", "preprocess_range", "preprocess_values",
          "network_constructs", "network_forward", "network_batch_independent")


def collect(tmp_path: Path, cells, *, name="hw", weights=(), task=mspacman, limits=None, **kw):
    """(evidence, {check name: check}) of a notebook written from ``cells``; common checks included."""
    nb = parse_notebook(F.write_notebook(tmp_path / name / "homework.ipynb", cells))
    ev = task.collect(nb, limits=limits or Limits(), sandbox=kw.pop("sandbox", None), weights=list(weights))
    checks = common_checks(nb) + ev.checks
    assert all(c.points is None and c.max_points is None for c in checks)  # points are the pipeline's
    assert len({c.name for c in checks}) == len(checks), [c.name for c in checks]
    json.dumps([c.model_dump() for c in checks])
    return ev, {c.name: c for c in checks}


# --- pure units (no sandbox) -------------------------------------------------------------------
def test_magics_are_stripped_and_line_numbers_kept():
    src, removed, magic = _strip_magics("%matplotlib inline\n!pip install x\nimport torch\nfiles = !ls\n")
    assert src.split("\n") == ["", "", "import torch", ""]
    assert len(removed) == 3 and magic is None
    assert _strip_magics("%%time\nwhile True: pass\n")[2] == "%%time"


def test_ast_filter_keeps_definitions_and_skips_training():
    cell = CodeCell(3, 2, F.TRAIN + "\n" + F.PARAMS + "\nAgent.preprocess_observation = preprocess_observation\n"
                    "device = torch.device('cuda' if torch.cuda.is_available() else 'cpu')\n"
                    "model.fit(x)\nenv.reset()\nagent.run_episode()\nfor i in range(3):\n    pass\n", "")
    plan = plan_cell(cell)
    kept = [s.source.split("\n")[0] for s in plan.run]
    assert any(k.startswith("params = {") for k in kept)
    assert "Agent.preprocess_observation = preprocess_observation" in kept
    assert any(k.startswith("device = torch.device(") for k in kept)
    skipped = " | ".join(first for _, first in plan.skipped)
    for s in ("gym.make", "while True", "model.fit", "env.reset", "agent.run_episode()", "for i in range(3)", "policy = DQN"):
        assert s in skipped


def test_ast_filter_reports_syntax_error_line():
    plan = plan_cell(CodeCell(7, 5, F.OPTIMIZE_BROKEN, F.OPTIMIZE_BROKEN))
    assert plan.syntax_error and plan.syntax_line == 5 and not plan.run


def test_diagnosis_of_reference_is_a_match():
    with np.load(mspacman.FRAMES_FILE) as d:
        frames = d["frames"]
    assert frames.shape == (8, 210, 160, 3) and frames.dtype == np.uint8
    d = diagnose_preprocessing(frames, list(preprocess_frames(frames)))
    assert d.matches and d.max_abs_diff == 0


def test_diagnosis_of_noise_names_no_variant():
    frames, _ = mspacman.probe_inputs()
    noise = list(np.random.default_rng(0).uniform(0, 255, (len(frames), 44, 40)))
    d = diagnose_preprocessing(frames, noise)
    assert not d.matches and d.variant is None and "no combination" in d.steps[0]


def test_the_sandbox_inputs_hold_no_answer():
    """What the sandbox gets: raw frames, and network states made of OTHER frames' preprocessing."""
    frames, states = mspacman.probe_inputs()
    answers = preprocess_frames(frames)
    assert frames.dtype == np.uint8 and frames.shape[1:] == (210, 160, 3)
    assert states.shape == (4, 5, 44, 40)
    for state in states:
        for plane in state:
            assert min(np.abs(plane - a).max() for a in answers) > 10
    assert len({s.tobytes() for s in states}) == 4  # distinct samples for the batch check
    assert not set(mspacman.PREPROCESS_FRAMES) & set(mspacman.NETWORK_FRAMES)


def test_detect_task_is_generic():
    assert detect_notebook_task("env = gym.make('ALE/MsPacman-v5')\nclass DQN(nn.Module): ...", MARKERS)[0] == "mspacman"
    assert detect_notebook_task("import keras\nactor_model = keras.Model(...)  # LunarLander-v3", MARKERS)[0] == "lunarlander"
    assert detect_notebook_task("print('hello')", MARKERS)[0] is None
    assert detect_notebook_task("MsPacman LunarLander", MARKERS)[0] is None  # both environments: a tie
    assert detect_notebook_task("alpha beta", {"a": [r"alpha", r"beta"], "b": [r"gamma", r"beta"]}) == ("a", {"a": 7, "b": 1})


# --- the report protocol -------------------------------------------------------------------------
def _line(**msg) -> bytes:
    return json.dumps(msg).encode() + b"\n"


def test_report_messages_are_validated_strictly():
    good = _line(ev="start", pid=1) + _line(ev="definitions_done", params={"n_actions": 5})
    bad = [_line(ev="preprocess", found=True, passed=True),  # no such field
           _line(ev="network", found="yes"),  # wrong type
           _line(ev="stmt_error", cell=1, line=1, error="x" * 10_000),  # oversize text
           _line(ev="verdict", check="preprocess_values", passed=True),  # unknown event
           b"[" * 100_000 + b"\n", b"not json\n"]
    r = parse_report(good + b"".join(bad))
    assert [m.ev for m in r.messages] == ["start", "definitions_done"]
    assert r.garbage == len(bad) and not r.trusted


def test_report_order_and_repeats_mark_forgery():
    honest = _line(ev="start", pid=1) + _line(ev="stmt", cell=2, line=1) + _line(ev="definitions_done", params=None)
    assert parse_report(honest + _line(ev="done")).trusted
    twice = parse_report(honest + _line(ev="definitions_done", params=None) + _line(ev="done"))
    assert not twice.trusted and "a second 'definitions_done'" in twice.forged[0]
    early = parse_report(_line(ev="start", pid=1) + _line(ev="preprocess", found=False) + _line(ev="stmt", cell=2, line=1))
    assert not early.trusted and "after the 'preprocess' stage" in early.forged[0]
    rebound = parse_report(honest + _line(ev="tampered", names=["runner.send"]))
    assert not rebound.trusted


def test_array_bytes_must_fit_the_shape():
    from grader.notebook.protocol import ArrayMsg

    data = base64.b64encode(np.ones((44, 40), "<f4").tobytes()).decode()
    assert ArrayMsg(type="t", dtype="float32", shape=[44, 40], data=data).array().shape == (44, 40)
    assert ArrayMsg(type="t", dtype="float32", shape=[44, 41], data=data).array() is None
    assert ArrayMsg(type="t", dtype="float32", shape=[44, 40], data=data[:-4] + "!!!!").array() is None


def test_model_frames_are_validated():
    frame = b'{"name": "network.onnx", "size": 3}\nabc'
    assert parse_blobs(frame, max_bytes=10).files == {"network.onnx": b"abc"}
    assert parse_blobs(b'{"name": "../../x.onnx", "size": 3}\nabc', max_bytes=10).problems
    assert parse_blobs(b'{"name": "network.onnx", "size": 30}\nabc', max_bytes=100).problems  # cut short
    assert parse_blobs(b'{"name": "network.onnx", "size": 30}\n' + b"a" * 30, max_bytes=10).problems  # over the cap
    assert parse_blobs(frame + frame, max_bytes=10).problems  # twice


# --- corrupt / old notebooks ---------------------------------------------------------------------
def _invalid(path: Path) -> SubmissionError:
    with pytest.raises(SubmissionError) as info:
        parse_notebook(path)
    assert info.value.check == "notebook_format" and info.value.hint
    return info.value


def test_not_json_is_invalid(tmp_path):
    p = tmp_path / "hw.ipynb"
    p.write_text('{"cells": [ this is not json')
    assert "not valid JSON" in _invalid(p).message


def test_not_utf8_is_invalid(tmp_path):
    p = tmp_path / "hw.ipynb"
    p.write_bytes(b'{"cells": [], "nbformat": 4, "x": "\xff\xfe"}')
    assert "not UTF-8" in _invalid(p).message


def test_huge_notebook_is_invalid(tmp_path, monkeypatch):
    from grader.notebook import reader

    monkeypatch.setattr(reader, "MAX_NOTEBOOK_BYTES", 1000)
    p = F.write_notebook(tmp_path / "hw.ipynb", ["x = 1\n" * 500])
    assert "MB accepted" in _invalid(p).message


def test_v3_notebook_is_invalid(tmp_path):
    p = tmp_path / "old.ipynb"
    p.write_text(json.dumps({"nbformat": 3, "nbformat_minor": 0, "metadata": {}, "worksheets": [{"cells": []}]}))
    e = _invalid(p)
    assert "version 3" in e.message and "nbconvert" in e.hint


# --- MsPacman, sandboxed --------------------------------------------------------------------------
def test_correct_notebook_passes_every_notebook_check(tmp_path):
    ev, c = collect(tmp_path, F.mspacman_cells())
    for name in ("notebook_format", "cells_parse", "sandbox", *SCORED, "network_exported"):
        assert c[name].passed, (name, c[name].message)
    assert c["sandbox"].severity == "error" and c["preprocess_values"].severity == "warning"
    assert "gym.make" in c["skipped_statements"].message and "while True" in c["skipped_statements"].message
    assert not c["network_weights"].passed and "untrained" in c["network_weights"].message
    assert [(m.role, m.label) for m in ev.models] == [("network", "DQN with fresh weights")]
    import onnx

    assert len(onnx.load_from_string(ev.models[0].data).graph.node) > 0  # ONNX bytes, for the pipeline to grade
    assert "network_onnx_export" not in c  # the pipeline's, from the model


@pytest.mark.parametrize("variant,expected", [
    ("no_crop", "no crop"),
    ("wrong_crop", "crop: rows [0:170]"),
    ("no_border", "border: none"),
    ("border_zero", "border: value 0"),
    ("stride_offset", "stride: [::4, ::4]"),
    ("luminance", "weighted luminance"),
    ("rounding", "ROUNDED"),
    ("div255", "divided by 255"),
])
def test_preprocessing_mistakes_are_diagnosed(tmp_path, variant, expected):
    ev, c = collect(tmp_path, F.mspacman_cells(preprocess=F.PREPROCESS_VARIANTS[variant]))
    assert not c["preprocess_values"].passed
    assert expected in c["preprocess_values"].message, c["preprocess_values"].message
    assert c["preprocess_values"].hint
    assert c["network_forward"].passed  # the rest is still graded
    if variant in ("no_crop", "no_border"):
        assert not c["preprocess_shape"].passed and "instead of (44, 40)" in c["preprocess_shape"].message
    else:
        assert c["preprocess_shape"].passed, c["preprocess_shape"].message
    if variant == "div255":
        assert not c["preprocess_range"].passed and "0..1" in c["preprocess_range"].message
    else:
        assert c["preprocess_range"].passed, c["preprocess_range"].message


def test_missing_parenthesis_cell_is_reported_and_rest_graded(tmp_path):
    ev, c = collect(tmp_path, F.mspacman_cells(optimize=F.OPTIMIZE_BROKEN))
    assert not c["cells_parse"].passed
    assert "cell 8 does not parse" in c["cells_parse"].message and "at line 5" in c["cells_parse"].message
    assert "parenthesis" in c["cells_parse"].hint
    assert all(c[name].passed for name in SCORED)


def test_cuda_only_network_is_explained(tmp_path):
    ev, c = collect(tmp_path, F.mspacman_cells(network=F.CUDA_NETWORK))
    assert not c["network_constructs"].passed
    assert "only on a GPU (CUDA)" in c["network_constructs"].message
    assert "torch.cuda.is_available()" in c["network_constructs"].hint
    assert c["preprocess_values"].passed and ev.models == []


def test_missing_pieces_say_what_was_expected(tmp_path):
    ev, c = collect(tmp_path, F.mspacman_cells(network="x = 1\n", preprocess="y = 2\n"))
    assert "expected class DQN(nn.Module)" in c["network_forward"].message
    assert "preprocess_observation" in c["preprocess_shape"].message and not c["preprocess_values"].passed
    assert ev.models == []


def test_free_function_preprocessing_and_trained_weights(tmp_path):
    import onnx
    import torch

    pre = F.PREPROCESS.replace("self, observation", "observation").replace("Agent.preprocess_observation = preprocess_observation", "")
    ns: dict = {}
    exec(F.IMPORTS.replace("%matplotlib inline", "").replace("from IPython import display", "").replace("plt.ion()", ""), ns)
    exec(F.NETWORK, ns)
    torch.manual_seed(0)
    net = ns["DQN"](5, 5)
    weights = tmp_path / "handed-in" / "policy.pt"
    weights.parent.mkdir()
    torch.save(net.state_dict(), weights)
    ev, c = collect(tmp_path, F.mspacman_cells(preprocess=pre), weights=[weights])
    assert c["preprocess_values"].passed and "preprocess_observation(observation)" in c["preprocess_shape"].message
    assert c["network_weights"].passed and "policy.pt" in c["network_weights"].message
    models = {m.role: m for m in ev.models}
    assert models["trained"].label == "DQN with policy.pt"
    trained = onnx.load_from_string(models["trained"].data)  # bytes only: the pipeline grades it
    assert [i.name for i in trained.graph.input] == ["observation"]
    # the exported weights are the handed-in ones
    init = {t.name: onnx.numpy_helper.to_array(t) for t in trained.graph.initializer}
    assert any(np.allclose(v, net.fc_b.weight.detach().numpy()) for v in init.values() if v.shape == (5, 256))


def test_weights_that_do_not_fit_are_noted(tmp_path):
    bad = tmp_path / "w" / "policy.pt"
    bad.parent.mkdir()
    bad.write_bytes(b"not a torch file")
    ev, c = collect(tmp_path, F.mspacman_cells(), weights=[bad])
    assert not c["network_weights"].passed and "policy.pt" in c["network_weights"].message
    assert [m.role for m in ev.models] == ["network"]


def test_models_over_the_cap_are_not_sent(tmp_path):
    ev, c = collect(tmp_path, F.mspacman_cells(), limits=Limits(model_bytes=100_000))
    assert ev.models == [] and c["sandbox"].passed and c["network_forward"].passed
    assert not c["network_exported"].passed and "larger than" in c["network_exported"].message


def test_fallback_sandbox_is_flagged(tmp_path):
    ev, c = collect(tmp_path, F.mspacman_cells(), sandbox="fallback")
    assert c["preprocess_values"].passed and c["network_forward"].passed
    assert not c["sandbox_isolation"].passed and c["sandbox_isolation"].severity == "warning"
    assert "weaker sandbox" in c["sandbox_isolation"].message and "bubblewrap" in c["sandbox_isolation"].hint
    assert "measured on the host" in c["sandbox_isolation"].message


def test_missing_torch_is_the_graders_problem(tmp_path, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "torch" else real(name, *a))
    nb = parse_notebook(F.write_notebook(tmp_path / "hw.ipynb", F.mspacman_cells()))
    with pytest.raises(MissingDependency) as info:
        mspacman.collect(nb, limits=Limits(), sandbox=None, weights=[])
    assert "torch==2.13.0" in info.value.install


def test_lesson_layout_free_method_not_attached_and_other_network_name(tmp_path):
    """The lesson writes Agent's methods as free functions `def f(self, ...)`; the network may be renamed."""
    pre = F.PREPROCESS.replace("Agent.preprocess_observation = preprocess_observation", "")
    ev, c = collect(tmp_path, F.mspacman_cells(preprocess=pre, network=F.NETWORK.replace("class DQN", "class QNet")))
    assert "preprocess_observation(self, observation) returns" in c["preprocess_shape"].message
    assert "QNet(5, 5) builds" in c["network_constructs"].message
    assert ev.models[0].label == "QNet with fresh weights"


def test_cli_prints_the_evidence(tmp_path, capsys):
    from grader.notebook.__main__ import main

    nb = F.write_notebook(tmp_path / "l" / "homework.ipynb", F.LUNAR_CELLS)
    assert main([str(nb)]) == 0
    out = capsys.readouterr().out
    assert "lunarlander" in out and "actor_output" in out
    bad = tmp_path / "bad.ipynb"
    bad.write_text("{")
    assert main([str(bad)]) == 2


# --- LunarLander ---------------------------------------------------------------------------------
def test_lunarlander_is_read_statically(tmp_path):
    ev, c = collect(tmp_path, F.LUNAR_CELLS, name="lunar", task=lunarlander)
    assert c["actor_input"].passed and c["actor_output"].passed
    assert "64" in c["actor_hidden"].message and c["actor_hidden"].severity == "note"
    assert ev.models == [] and ev.logs == {}
    assert "model_onnx_present" not in c  # the pipeline's bundle rule decides which model.onnx is the student's


def test_lunarlander_wrong_output_layer(tmp_path):
    cells = list(F.LUNAR_CELLS)
    cells[2] = cells[2].replace('layers.Dense(num_actions, activation="softmax")', 'layers.Dense(2)')
    ev, c = collect(tmp_path, cells, name="lunar", task=lunarlander)
    assert not c["actor_output"].passed
    assert "2 units instead of 4" in c["actor_output"].message and "softmax" in c["actor_output"].message


# The end-to-end notebook gradings (with their model, another task's rubric, a self-check, trained
# weights) are the pipeline's: tests/test_pipeline.py.

