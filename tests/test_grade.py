"""Grading valid submissions end to end: task recognition, checks, episodes, result.json, exit codes."""

import json

import numpy as np
import onnx
import onnx_fixtures as F
import pytest
import torch_fixtures as T
from conftest import run_cli

from grader.api import check, grade
from grader.result import GradeResult
from grader.scoring.rubric import RubricError, load_rubric

REQUIRED_SUMMARY = {"mean", "std", "median", "iqm", "ci_low", "ci_high", "success_rate"}
REQUIRED_VERSIONS = {"python", "gymnasium", "ale-py", "onnxruntime", "numpy", "rl-grader"}
REQUIRED_MODEL = {"sha256", "opset", "ir_version", "inputs", "outputs", "parameters"}


def assert_graded(result: GradeResult, task: str, n: int):
    assert result.status == "graded", result.error
    assert result.task == task
    assert [e.seed for e in result.episodes] == sorted(e.seed for e in result.episodes)
    assert len(result.episodes) == n
    assert all(c.passed or c.severity != "error" for c in result.checks)


@pytest.mark.parametrize("dynamic", [True, False], ids=["dynamic_batch", "batch_of_1"])
def test_torch_exported_lunarlander(tmp_path, dynamic):
    path = T.export(T.actor_mlp(), tmp_path / "m.onnx", state_shape=(8,), dynamic=dynamic)
    result = grade(path, seeds=[0, 1, 2, 3], out=tmp_path / "out", video=False, report=False)
    assert_graded(result, "lunarlander", 4)
    batch_check = next(c for c in result.checks if c.name == "batch_independence")
    assert ("fixed batch 1" in batch_check.message) == (not dynamic)


@pytest.mark.parametrize("dynamic", [True, False], ids=["dynamic_batch", "batch_of_1"])
def test_torch_exported_lesson_dqn(tmp_path, dynamic):
    path = T.export(T.LessonDQN(), tmp_path / "dqn.onnx", state_shape=(5, 44, 40), dynamic=dynamic)
    result = grade(path, seeds=[0, 1], out=tmp_path / "out", video=False, report=False)
    assert_graded(result, "mspacman", 2)
    assert result.model.parameters > 1_800_000
    assert all(e.length > 81 for e in result.episodes)  # the opening protocol counts


def test_dqn_exported_in_training_mode_is_explained(tmp_path):
    path = T.export(T.LessonDQN(), tmp_path / "dqn.onnx", state_shape=(5, 44, 40), dynamic=True, train_mode=True)
    result = grade(path, seeds=[0], out=tmp_path / "out", video=False, report=False)
    assert result.status == "invalid"
    assert "model.eval()" in result.failed_checks[0].hint


def test_keras_style_export_grades_unchanged(tmp_path):
    path = F.mlp(tmp_path / "model.onnx", keras_style=True, ir_version=9, opset=20, input_name="keras_tensor",
                 output_name="23", batch="batch_size")
    model = onnx.load(path)
    assert model.ir_version == 9 and any(n.op_type == "Cast" for n in model.graph.node)
    result = grade(path, seeds=range(5), out=tmp_path / "out", video=False, report=False)
    assert_graded(result, "lunarlander", 5)
    assert result.model.inputs[0].name == "keras_tensor" and result.model.outputs[0].name == "23"


def test_int64_action_output(tmp_path):
    from onnx import TensorProto, helper, numpy_helper

    w = numpy_helper.from_array(np.random.default_rng(0).standard_normal((8, 4)).astype(np.float32), "w")
    nodes = [helper.make_node("MatMul", ["x", "w"], ["s"]), helper.make_node("ArgMax", ["s"], ["a"], axis=1, keepdims=0)]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["b", 8])],
                              [helper.make_tensor_value_info("a", TensorProto.INT64, ["b"])], [w])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path = tmp_path / "argmax.onnx"
    path.write_bytes(model.SerializeToString())
    result = grade(path, seeds=[0, 1], out=tmp_path / "out", video=False, report=False)
    assert_graded(result, "lunarlander", 2)


def test_cli_json_fields_and_result_file(tmp_path):
    path = F.mlp(tmp_path / "model.onnx")
    proc = run_cli(path, "--json", "--no-video", "--seeds", "10-14", "--out", tmp_path / "out")
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert data == json.loads((tmp_path / "out" / "result.json").read_text())
    assert data["task"] == "lunarlander" and data["status"] == "graded"
    assert [e["seed"] for e in data["episodes"]] == [10, 11, 12, 13, 14]
    assert set(data["episodes"][0]) == {"seed", "return", "length"}
    assert REQUIRED_SUMMARY <= set(data["summary"])
    assert {"name", "passed", "message"} <= set(data["checks"][0])
    assert REQUIRED_VERSIONS <= set(data["versions"])
    assert REQUIRED_MODEL <= set(data["model"])
    assert data["max_score"] == 10 and 0 <= data["score"] <= 10  # the LunarLander assignment is the model: 10 episode points
    assert data["rubric"]["seed_set"] == "explicit"
    returns = np.array([e["return"] for e in data["episodes"]])
    assert data["summary"]["mean"] == pytest.approx(returns.mean())


def test_quick_exit_keeps_output_exit_code_and_exit_handlers(tmp_path):
    """The executable ends with os._exit after main(): what it printed to a pipe is whole, the exit
    code is main's, the exit handlers ran, and no temporary folder is left behind."""
    import os
    import subprocess
    import sys

    tmp = tmp_path / "tmp"
    tmp.mkdir()
    mark = tmp_path / "atexit-ran"
    boot = ("import atexit, pathlib, sys; atexit.register(pathlib.Path(sys.argv.pop(1)).write_text, 'ran'); "
            "from grader.cli import console_main; console_main()")
    env = dict(os.environ, TMPDIR=str(tmp), GRADER_SANDBOX="fallback")
    good, bad = F.mlp(tmp_path / "model.onnx"), tmp_path / "bad.onnx"
    bad.write_bytes(b"not a model")
    for path, code in ((good, 0), (bad, 2)):
        mark.unlink(missing_ok=True)
        proc = subprocess.run([sys.executable, "-c", boot, str(mark), str(path), "--json", "--no-video", "--seeds", "1-2",
                               "--out", str(tmp_path / f"out-{code}")], capture_output=True, text=True, env=env, timeout=120)
        assert proc.returncode == code, proc.stderr
        assert json.loads(proc.stdout)["status"] == ("graded" if code == 0 else "invalid")
        assert mark.read_text() == "ran"
        assert list(tmp.iterdir()) == []


def test_cli_terminal_summary(tmp_path):
    path = F.mlp(tmp_path / "model.onnx")
    proc = run_cli(path, "--no-video", "--episodes", "3", "--out", tmp_path / "out")
    assert proc.returncode == 0
    assert "✓" in proc.stdout and "score:" in proc.stdout and "mean" in proc.stdout


def test_default_out_dir_is_beside_the_submission(tmp_path):
    path = F.mlp(tmp_path / "model.onnx")
    assert run_cli(path, "--no-video", "--episodes", "2").returncode == 0
    assert (tmp_path / "model.onnx.grading" / "result.json").is_file()


def test_unknown_signature_names_the_expected_ones(tmp_path):
    path = F.mlp(tmp_path / "model.onnx", n_in=6)
    proc = run_cli(path, "--json", "--no-video")
    assert proc.returncode == 2
    error = json.loads(proc.stdout)["error"]
    assert "[batch, 8] for lunarlander" in error and "[batch, 5, 44, 40] for mspacman" in error


def test_task_override_reports_mismatch(tmp_path):
    path = F.mlp(tmp_path / "model.onnx")
    proc = run_cli(path, "--task", "mspacman", "--json", "--no-video")
    assert proc.returncode == 2
    error = json.loads(proc.stdout)["error"]
    assert "a lunarlander policy, but this is the mspacman homework" in error and "[batch, 5, 44, 40]" in error


def test_missing_file_and_bad_rubric_exit_1(tmp_path):
    assert run_cli(tmp_path / "nope.onnx").returncode == 1
    bad = tmp_path / "bad.toml"
    bad.write_text('id = "x"\ntask = "lunarlander"\nepisodes = 5\nepisdoes = 3\n[seeds]\npublic = "0-1"\ngrading = "5-9"\n'
                   '[scoring]\nzero = 0\nfull = 200\n')
    path = F.mlp(tmp_path / "model.onnx")
    proc = run_cli(path, "--rubric", bad)
    assert proc.returncode == 1
    assert "episdoes: unknown key" in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.parametrize("text, where", [
    ('zero = 0\nfull = "nosuchbaseline"\n', "nosuchbaseline"),
    ('zero = 0\nfull = 200\nstatistic = "average"\n', "scoring.statistic"),
    ('zero = 100\nfull = 50\n', "must be above zero"),
])
def test_rubric_errors_point_at_the_key(tmp_path, text, where):
    write_baselines(tmp_path / "b.json", random=-150.0)
    path = tmp_path / "r.toml"
    path.write_text('id = "x"\ntask = "lunarlander"\nepisodes = 5\nbaselines = "b.json"\n[seeds]\npublic = "0-1"\n'
                    'grading = "5-9"\n[scoring]\n' + text)
    with pytest.raises(RubricError, match=where):
        rubric = load_rubric(path)
        rubric.thresholds()


def write_baselines(path, **means):
    from grader.scoring.baselines import BaselineEntry, BaselinesFile
    from grader.scoring.stats import summarize

    entries = {name: BaselineEntry(policy=name, summary=summarize([m, m], success_threshold=200), returns=[m, m])
               for name, m in means.items()}
    path.write_text(BaselinesFile(task="lunarlander", rubric_id="x", seed_set="grading", n_seeds=2, created="today",
                                  versions={}, entries=entries).model_dump_json())


def test_thresholds_by_baseline_name_give_a_normalised_score(tmp_path):
    write_baselines(tmp_path / "b.json", random=-200.0, reference=250.0)
    path = tmp_path / "r.toml"
    path.write_text('id = "x"\ntask = "lunarlander"\nepisodes = 5\nbaselines = "b.json"\n[seeds]\npublic = "0-1"\n'
                    'grading = "5-9"\n[scoring]\nzero = "random"\nfull = "reference"\npoints = 100\n')
    rubric = load_rubric(path)
    assert rubric.thresholds() == (-200.0, 250.0)
    assert rubric.points_for(25.0) == pytest.approx(50.0)  # (25 - random) / (reference - random)
    assert rubric.points_for(1000.0) == 100.0 and rubric.points_for(-1000.0) == 0.0


def test_private_grading_seeds_file(tmp_path):
    (tmp_path / "private.seeds").write_text("# hidden\n500-502, 900\n")
    path = tmp_path / "r.toml"
    path.write_text('id = "x"\ntask = "lunarlander"\nepisodes = 4\n[seeds]\npublic = "0-1"\ngrading_file = "private.seeds"\n'
                    '[scoring]\nzero = 0\nfull = 200\n')
    result = grade(F.mlp(tmp_path / "m.onnx"), rubric=path, out=tmp_path / "out", video=False, report=False)
    assert [e.seed for e in result.episodes] == [500, 501, 502, 900]
    assert result.rubric.seed_set == "grading" and "500" not in result.command


def test_selfcheck_uses_public_seeds_and_says_what_grading_runs(tmp_path):
    path = F.mlp(tmp_path / "model.onnx")
    result = check(path, out=tmp_path / "out")
    assert result.rubric.seed_set == "public"
    assert [e.seed for e in result.episodes] == list(range(10))
    proc = run_cli("check", path, "--out", tmp_path / "out2")
    assert proc.returncode == 0
    assert "100 episodes on seeds you do not see" in " ".join(proc.stdout.split())


def test_cuda_request_without_cuda_falls_back_with_a_warning(tmp_path):
    result = grade(F.mlp(tmp_path / "m.onnx"), seeds=[0], device="cuda", out=tmp_path / "o", video=False, report=False)
    assert result.status == "graded" and result.device == "cpu"
    assert any("CUDA" in w for w in result.warnings)


def test_videos_with_relative_paths(tmp_path):
    """Paths given relative to the caller's directory reach the worker, which runs elsewhere."""
    F.mlp(tmp_path / "model.onnx")
    proc = run_cli("model.onnx", "--seeds", "0-2", "--json", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["warnings"] == [] and len(result["videos"]) == 3
    for video in result["videos"]:
        assert video["matches"] and (tmp_path / "model.onnx.grading" / video["path"]).stat().st_size > 1000


def test_model_of_the_other_task_is_invalid_not_a_grader_error(tmp_path):
    path = F.mlp(tmp_path / "model.onnx")  # a LunarLander policy handed in for MsPacman
    proc = run_cli(path, "--rubric", "rubrics/mspacman.toml", "--json", "--no-video")
    assert proc.returncode == 2
    assert "but this is the mspacman homework" in json.loads(proc.stdout)["error"]


def test_subcommands_report_bad_input_without_a_traceback(tmp_path):
    roster = tmp_path / "roster.csv"
    roster.write_bytes(b"id,name\n\xff\xfe broken\n")
    proc = run_cli("tokens", roster, "--db", tmp_path / "no" / "such" / "folder" / "class.sqlite")
    assert proc.returncode == 1 and "Traceback" not in proc.stderr and proc.stderr.strip()
    proc = run_cli("baselines", "--rubric", "rubrics/lunarlander.toml", "--episodes", "0")
    assert proc.returncode == 1 and "--episodes must be at least 1" in proc.stderr


def test_torch_default_export_with_its_data_file_is_graded(tmp_path):
    """torch 2.13's plain `torch.onnx.export(model, (x,), "model.onnx")` writes model.onnx + model.onnx.data."""
    torch = pytest.importorskip("torch")
    net = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 4))
    torch.onnx.export(net, (torch.zeros(1, 8),), str(tmp_path / "model.onnx"))
    assert (tmp_path / "model.onnx.data").is_file()  # the pair this test is about
    result = grade(tmp_path / "model.onnx", seeds=[0, 1], write=False)
    assert_graded(result, "lunarlander", 2)
    assert any("model.onnx.data" in w or "names beside it" in w for w in result.warnings)
    batch_dir = tmp_path / "class" / "alice"
    batch_dir.mkdir(parents=True)
    for name in ("model.onnx", "model.onnx.data"):
        (batch_dir / name).write_bytes((tmp_path / name).read_bytes())
    again = grade(batch_dir, seeds=[0, 1], write=False)
    assert [e.return_ for e in again.episodes] == [e.return_ for e in result.episodes]


def test_the_self_check_says_what_the_final_grading_of_its_rubric_runs(tmp_path):
    """The note after `grade check` comes from the rubric the self-check was scored under."""
    rubric = tmp_path / "r.toml"
    rubric.write_text('id = "note"\ntask = "lunarlander"\nepisodes = 37\nselfcheck_episodes = 2\n'
                      '[seeds]\npublic = "0-1"\ngrading = "500-536"\n'
                      '[scoring]\nstatistic = "median"\nzero = -50.0\nfull = 120.0\npoints = 6\n')
    proc = run_cli("check", F.mlp(tmp_path / "model.onnx"), "--rubric", rubric)
    text = " ".join(proc.stdout.split())  # the terminal wraps lines
    assert proc.returncode == 0, proc.stderr
    assert "self-check on 2 public seeds" in text and "37 episodes on seeds you do not see" in text
    assert "up to 6 points from the median return (-50 earns 0, 120 earns them all)" in text
