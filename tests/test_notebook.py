"""Notebook grader: reading, the ast filter, the checks, the preprocessing diagnosis, LunarLander."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import nbformat
import numpy as np
import pytest

import notebook_fixtures as F
from grader.notebook import grade_notebook
from grader.notebook.astfilter import plan_cell
from grader.notebook.diagnose import diagnose
from grader.notebook.reader import CodeCell, _strip_magics
from grader.tasks.mspacman import preprocess_frames
from grader.rubric import load_rubric, default_rubric_path

BOUND_S = 30.0


def few_episodes(task: str, n: int = 3):
    """The shipped rubric, playing only ``n`` episodes (and ``n`` public seeds)."""
    return load_rubric(default_rubric_path(task)).model_copy(update={"episodes": n, "selfcheck_episodes": n})


def checks(result):
    return {c.name: c for c in result.checks}


def grade(tmp_path: Path, cells, *, name="hw", task=None, extra=None, **kw):
    folder = tmp_path / name
    nb = F.write_notebook(folder / "homework.ipynb", cells)
    for fname, data in (extra or {}).items():
        (folder / fname).write_bytes(data)
    t = time.monotonic()
    r = grade_notebook(nb, rubric=kw.pop("rubric", None), out_dir=tmp_path / f"{name}-out", task=task, **kw)
    elapsed = time.monotonic() - t
    assert elapsed < BOUND_S, f"grading took {elapsed:.1f} s"
    json.loads(r.model_dump_json())  # always serialisable
    return r


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
    with np.load(Path(__file__).resolve().parent.parent / "grader" / "data" / "mspacman_frames.npz") as d:
        frames = d["frames"]
    assert frames.shape == (8, 210, 160, 3) and frames.dtype == np.uint8
    d = diagnose(frames, list(preprocess_frames(frames)))
    assert d.matches and d.max_abs_diff == 0


# --- corrupt / old notebooks ---------------------------------------------------------------------
def test_not_json_is_invalid(tmp_path):
    p = tmp_path / "hw.ipynb"
    p.write_text('{"cells": [ this is not json')
    r = grade_notebook(p, rubric=None, out_dir=tmp_path / "out")
    c = checks(r)["notebook_format"]
    assert r.status == "invalid" and not c.passed and "not valid JSON" in c.message and c.hint


def test_v3_notebook_is_invalid(tmp_path):
    p = tmp_path / "old.ipynb"
    p.write_text(json.dumps({"nbformat": 3, "nbformat_minor": 0, "metadata": {}, "worksheets": [{"cells": []}]}))
    r = grade_notebook(p, rubric=None, out_dir=tmp_path / "out")
    c = checks(r)["notebook_format"]
    assert r.status == "invalid" and "version 3" in c.message and "nbconvert" in c.hint


def test_unknown_task_is_invalid(tmp_path):
    p = F.write_notebook(tmp_path / "x.ipynb", ["print('hello')"], markdown="# notes")
    r = grade_notebook(p, rubric=None, out_dir=tmp_path / "out")
    assert r.status == "invalid" and "--task" in checks(r)["task_detected"].hint


# --- MsPacman, sandboxed --------------------------------------------------------------------------
def test_correct_notebook_gets_full_notebook_points(tmp_path):
    rubric = load_rubric(default_rubric_path("mspacman"))
    r = grade(tmp_path, F.mspacman_cells(), rubric=rubric)
    c = checks(r)
    assert r.status == "graded", [x for x in r.checks if not x.passed]
    for name in ("cells_parse", "definitions_run", "preprocess_shape", "preprocess_range", "preprocess_values",
                 "network_constructs", "network_forward", "network_batch_independent", "network_onnx_export"):
        assert c[name].passed, (name, c[name].message)
    assert r.task == "mspacman" and r.score == r.max_score > 0
    assert "gym.make" in c["skipped_statements"].message and "while True" in c["skipped_statements"].message
    assert not c["network_weights"].passed and "untrained" in c["network_weights"].message
    assert (tmp_path / "hw-out" / "network.onnx").is_file()
    assert "onnx_grading" not in c  # nothing to play: the random-weight export is checked for shapes only


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
    r = grade(tmp_path, F.mspacman_cells(preprocess=F.PREPROCESS_VARIANTS[variant]))
    c = checks(r)
    assert r.status == "graded"
    assert not c["preprocess_values"].passed
    assert expected in c["preprocess_values"].message, c["preprocess_values"].message
    assert c["preprocess_values"].hint
    assert c["network_forward"].passed  # the rest is still graded
    if variant in ("no_crop", "no_border"):
        assert not c["preprocess_shape"].passed and "instead of (44, 40)" in c["preprocess_shape"].message
    if variant == "div255":
        assert not c["preprocess_range"].passed and "0..1" in c["preprocess_range"].message


def test_missing_parenthesis_cell_is_reported_and_rest_graded(tmp_path):
    r = grade(tmp_path, F.mspacman_cells(optimize=F.OPTIMIZE_BROKEN))
    c = checks(r)
    assert not c["cells_parse"].passed
    assert "cell 8 does not parse" in c["cells_parse"].message and "at line 5" in c["cells_parse"].message
    assert "parenthesis" in c["cells_parse"].hint
    assert c["preprocess_values"].passed and c["network_forward"].passed
    assert r.status == "graded" and r.score == r.max_score - c["cells_parse"].max_points


def test_cuda_only_network_is_explained(tmp_path):
    r = grade(tmp_path, F.mspacman_cells(network=F.CUDA_NETWORK))
    c = checks(r)
    assert not c["network_constructs"].passed
    assert "only on a GPU (CUDA)" in c["network_constructs"].message
    assert "torch.cuda.is_available()" in c["network_constructs"].hint
    assert c["preprocess_values"].passed


def test_missing_pieces_say_what_was_expected(tmp_path):
    cells = F.mspacman_cells(network="x = 1\n", preprocess="y = 2\n")
    r = grade(tmp_path, cells, task="mspacman")
    c = checks(r)
    assert "expected class DQN(nn.Module)" in c["network_forward"].message
    assert "preprocess_observation" in c["preprocess_shape"].message and not c["preprocess_values"].passed


def test_free_function_preprocessing_and_trained_weights(tmp_path):
    import torch

    pre = F.PREPROCESS.replace("self, observation", "observation").replace("Agent.preprocess_observation = preprocess_observation", "")
    # weights of the fixture's DQN, saved as a state_dict beside the notebook
    ns: dict = {}
    exec(F.IMPORTS.replace("%matplotlib inline", "").replace("from IPython import display", "").replace("plt.ion()", ""), ns)
    exec(F.NETWORK, ns)
    torch.manual_seed(0)
    net = ns["DQN"](5, 5)
    folder = tmp_path / "hw"
    folder.mkdir()
    torch.save(net.state_dict(), folder / "policy.pt")
    r = grade(tmp_path, F.mspacman_cells(preprocess=pre), rubric=few_episodes("mspacman", 2))
    c = checks(r)
    assert c["preprocess_values"].passed and "preprocess_observation(observation)" in c["preprocess_shape"].message
    assert c["network_weights"].passed and "policy.pt" in c["network_weights"].message
    assert (tmp_path / "hw-out" / "trained.onnx").is_file()
    # The trained weights went through the ONNX path: its checks, and episodes played.
    assert r.model is not None and len(r.episodes) == 2
    assert any(x.name == "batch_independence" and x.passed for x in r.checks)


def test_fallback_sandbox_is_flagged(tmp_path):
    r = grade(tmp_path, F.mspacman_cells(), sandbox="fallback")
    c = checks(r)
    assert c["preprocess_values"].passed and c["network_forward"].passed
    assert not c["sandbox_isolation"].passed and c["sandbox_isolation"].severity == "warning"
    assert "weaker sandbox" in c["sandbox_isolation"].message and "bubblewrap" in c["sandbox_isolation"].hint


# --- LunarLander ---------------------------------------------------------------------------------
def test_lunarlander_without_model_onnx(tmp_path):
    r = grade(tmp_path, F.LUNAR_CELLS, name="lunar")
    c = checks(r)
    assert r.task == "lunarlander" and r.status == "invalid"
    assert c["actor_input"].passed and c["actor_output"].passed
    assert "64" in c["actor_hidden"].message
    assert not c["model_onnx_present"].passed
    assert "actor_model.export('model.onnx', format='onnx')" in c["model_onnx_present"].hint


def _lunar_onnx() -> bytes:
    import onnx
    from onnx import TensorProto, helper

    w = helper.make_tensor("w", TensorProto.FLOAT, [8, 4], np.zeros(32, dtype=np.float32).tolist())
    g = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["m"]), helper.make_node("Softmax", ["m"], ["y"])],
                          "actor", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 8])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 4])], [w])
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8  # onnx's newest IR can be ahead of onnxruntime's
    return model.SerializeToString()


def test_lunarlander_with_model_onnx(tmp_path):
    r = grade(tmp_path, F.LUNAR_CELLS, name="lunar", extra={"model.onnx": _lunar_onnx()}, rubric=few_episodes("lunarlander"))
    c = checks(r)
    assert c["model_onnx_present"].passed
    assert r.status == "graded" and len(r.episodes) == 3  # the ONNX path played it
    assert r.max_score == sum(x.max_points or 0 for x in r.checks) + 10  # notebook points + the ONNX rubric's


def test_lunarlander_wrong_output_layer(tmp_path):
    cells = list(F.LUNAR_CELLS)
    cells[2] = cells[2].replace('layers.Dense(num_actions, activation="softmax")', 'layers.Dense(2)')
    r = grade(tmp_path, cells, name="lunar")
    c = checks(r)
    assert not c["actor_output"].passed
    assert "2 units instead of 4" in c["actor_output"].message and "softmax" in c["actor_output"].message


def test_lesson_layout_free_method_not_attached_and_other_network_name(tmp_path, capsys):
    """The lesson writes Agent's methods as free functions `def f(self, ...)`; the network may be renamed."""
    from grader.notebook.__main__ import main

    pre = F.PREPROCESS.replace("Agent.preprocess_observation = preprocess_observation", "")
    nb = F.write_notebook(tmp_path / "hw" / "homework.ipynb",
                          F.mspacman_cells(preprocess=pre, network=F.NETWORK.replace("class DQN", "class QNet")))
    t = time.monotonic()
    rc = main([str(nb), "--out", str(tmp_path / "out")])
    assert time.monotonic() - t < BOUND_S
    out = capsys.readouterr().out
    assert rc == 0 and "mspacman graded" in out
    assert "preprocess_observation(self, observation) returns" in out and "QNet(5, 5) builds" in out
    assert (tmp_path / "out" / "notebook_result.json").is_file()


def test_rubric_of_the_other_task_is_refused(tmp_path):
    nb = F.write_notebook(tmp_path / "l" / "homework.ipynb", F.LUNAR_CELLS)
    r = grade_notebook(nb, rubric=load_rubric(default_rubric_path("mspacman")), out_dir=tmp_path / "out")
    names = [c.name for c in r.checks]
    assert r.status == "invalid" and names.count("task_detected") == 1
    assert "is for mspacman" in checks(r)["task_detected"].message


def test_selfcheck_of_a_notebook_plays_only_public_seeds(tmp_path):
    """`grade check homework.ipynb`: the model beside it is played on the public seeds, no videos,
    and a rubric whose grading seeds live in a private file the student lacks still works."""
    from grader.grading import check

    rubric_path = tmp_path / "r.toml"
    rubric_path.write_text('id = "x"\ntask = "lunarlander"\nepisodes = 100\nselfcheck_episodes = 3\n[seeds]\n'
                           'public = "0-2"\ngrading_file = "private/missing.seeds"\n[scoring]\nzero = 0\nfull = 200\n')
    folder = tmp_path / "lunar"
    nb = F.write_notebook(folder / "homework.ipynb", F.LUNAR_CELLS)
    (folder / "model.onnx").write_bytes(_lunar_onnx())
    result = check(nb, rubric=rubric_path, out=tmp_path / "out")
    assert result.status == "graded", result.error
    assert result.rubric.seed_set == "public" and [e.seed for e in result.episodes] == [0, 1, 2]
    assert result.videos == [] and not list((tmp_path / "out").glob("*.mp4"))
