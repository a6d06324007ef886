"""MsPacman's second input contract: raw frames, the preprocessing inside the model (issue 25).

The same agent under both contracts plays the same episodes; a changed preprocessing is graded on
its own states; the notebook's preprocessing is judged against the model handed in; every front
end recognises both contracts. The models are built here from the shipped strong reference
(:mod:`reference.frames`): the lesson's preprocessing in front of its network, and a 0..1,
stack-of-4 preprocessing in front of the same network without its own division by 255.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from grader.submission import checks as C
from grader.submission import probestates
from grader.submission.onnx_model import parse_model
from grader.tasks import all_contracts, get_task, signatures, task_names
from grader.tasks.mspacman import preprocess_frames
from reference import frames as RF

REPO = Path(__file__).resolve().parent.parent
RUBRIC = REPO / "rubrics" / "mspacman.toml"
STRONG = REPO / "reference" / "models" / "mspacman_strong.onnx"
SEEDS = [2000000, 2000001]  # the first grading seeds of the shipped rubric
RANDOM_MEAN = 279.0  # the random policy on the rubric's grading seeds (rubrics/baselines/mspacman.json)


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, Path]:
    """The strong reference, it with the lesson's preprocessing inside, the scaled agent and its network alone."""
    tmp = tmp_path_factory.mktemp("raw")
    built = {"lesson_inside": RF.lesson_inside(), "scaled": RF.scaled_inside(),
             "unit_network": RF.unit_network(STRONG.read_bytes())}
    paths = {"strong": STRONG}
    for name, data in built.items():
        paths[name] = tmp / f"{name}.onnx"
        paths[name].write_bytes(data)
    return paths


def _evaluate(path: Path, task: str, seeds=SEEDS) -> list[float]:
    from grader.runtime.engine import Engine

    with Engine(2) as engine:
        engine.load(path.read_bytes(), task=task)
        result = engine.evaluate(seeds)
    return [result[s][0] for s in seeds]


def tiny_model(shape: list, *, dtype=TensorProto.UINT8) -> bytes:
    """A model taking ``shape`` (first axis the batch): the mean of each state times 5 weights."""
    rank = len(shape)
    nodes = [helper.make_node("Cast", ["x"], ["f"], to=TensorProto.FLOAT),
             helper.make_node("ReduceMean", ["f"], ["m"], axes=list(range(1, rank)), keepdims=0),
             helper.make_node("Unsqueeze", ["m", "ax"], ["m1"]),
             helper.make_node("Mul", ["m1", "w"], ["y"])]
    graph = helper.make_graph(nodes, "tiny", [helper.make_tensor_value_info("x", dtype, shape)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 5])],
                              [numpy_helper.from_array(np.arange(1, 6, dtype=np.float32)[None], "w"),
                               numpy_helper.from_array(np.array([1], np.int64), "ax")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model.SerializeToString()


# --- recognition ------------------------------------------------------------------------------------
@pytest.mark.parametrize("k", range(1, 9))
def test_a_raw_frame_model_is_recognised_with_its_stack_from_the_input_shape(k):
    task = C.detect_task(parse_model(tiny_model(["batch", k, 210, 160, 3])))
    assert task.name == f"mspacman_raw{k}" and task.homework_name == "mspacman"
    assert task.state_shape == (k, 210, 160, 3) and task.input_dtype == "uint8"
    static = C.static_checks(parse_model(tiny_model(["batch", k, 210, 160, 3])), task)
    assert all(c.passed for c in static), [c.message for c in static if not c.passed]
    assert "raw RGB frames" in static[-2].message


def test_the_lessons_contract_is_still_recognised_and_the_homeworks_are_unchanged():
    assert C.detect_task(parse_model(tiny_model(["batch", 5, 44, 40], dtype=TensorProto.FLOAT))).name == "mspacman"
    assert task_names() == ("lunarlander", "mspacman", "cartpole")
    assert {t.homework_name for t in all_contracts()} == set(task_names())
    assert "[batch, K, 210, 160, 3] uint8 (K = 1..8 raw frames) for mspacman" in signatures()
    assert signatures().count("mspacman") == 2  # the two contracts, not eight raw ones


def test_a_stack_left_open_or_too_deep_or_float_frames_say_what_to_fix():
    with pytest.raises(C.TaskDetectionError, match="leaves the number of frames open"):
        C.detect_task(parse_model(tiny_model(["batch", "K", 210, 160, 3])))
    with pytest.raises(C.TaskDetectionError, match="K = 1..8"):
        C.detect_task(parse_model(tiny_model(["batch", 9, 210, 160, 3])))
    parsed = parse_model(tiny_model(["batch", 4, 210, 160, 3], dtype=TensorProto.FLOAT))
    check = C.check_input_signature(parsed, C.detect_task(parsed))
    assert not check.passed and "is float32; expected one uint8 input [batch, 4, 210, 160, 3]" in check.message
    assert "dtype=torch.uint8" in check.hint


def test_a_rubric_names_the_homework_not_one_of_its_contracts(tmp_path):
    from grader.scoring.rubric import RubricError, load_rubric

    bad = tmp_path / "r.toml"
    bad.write_text(RUBRIC.read_text().replace('task = "mspacman"', 'task = "mspacman_raw4"')
                   .replace('"../', f'"{REPO}/').replace('"baselines/', f'"{REPO}/rubrics/baselines/'))
    with pytest.raises(RubricError, match="input contract of the mspacman homework"):
        load_rubric(bad)


# --- the preprocessing inside the model ---------------------------------------------------------------
def _identity_network() -> bytes:
    graph = helper.make_graph([helper.make_node("Identity", ["state"], ["out"])], "id",
                              [helper.make_tensor_value_info("state", TensorProto.FLOAT, ["batch", 5, 44, 40])],
                              [helper.make_tensor_value_info("out", TensorProto.FLOAT, ["batch", 5, 44, 40])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model.SerializeToString()


def test_the_lessons_preprocessing_as_an_onnx_graph_is_the_graders_bit_for_bit():
    import onnxruntime as ort

    session = ort.InferenceSession(RF.with_preprocessing(_identity_network(), RF.lesson_nodes, 5))
    raw = probestates.probe_states(get_task("mspacman_raw5"))
    noise = np.random.default_rng(0).integers(0, 256, (4, 5, 210, 160, 3), dtype=np.uint8)  # every remainder of /3
    for stacks in (raw, noise):
        np.testing.assert_array_equal(session.run(None, {"frames": stacks})[0], preprocess_frames(stacks))


def test_the_raw_probe_states_are_the_frames_of_the_lessons_probe_states():
    for k in range(1, 9):
        raw = probestates.probe_states(get_task(f"mspacman_raw{k}"))
        assert raw.shape == (16, k, 210, 160, 3) and raw.dtype == np.uint8
    lesson = probestates.probe_states(get_task("mspacman"))
    np.testing.assert_array_equal(preprocess_frames(probestates.probe_states(get_task("mspacman_raw5"))), lesson)


def test_the_shipped_raw_probe_frames_are_a_fresh_rollout():
    spec = get_task("mspacman_raw8")
    np.testing.assert_array_equal(probestates.shipped(spec), probestates.rollout(spec),
                                  err_msg="run python -m grader.submission.probestates mspacman_raw8")
    frames, index = probestates.probe_frames(get_task("mspacman_raw3"))
    np.testing.assert_array_equal(frames[index], probestates.shipped(get_task("mspacman_raw3")))


def test_a_frame_stack_is_the_lessons_stack_of_raw_frames():
    """First frame repeated at the start, the NOOP frames after a lost life not pushed: the raw
    stack preprocessed is the lesson's state at every decision of a whole episode."""
    from grader.tasks.contract import make_env, play_episode

    lesson, raw = get_task("mspacman"), get_task("mspacman_raw5")
    env_a, env_b = make_env(lesson), make_env(raw)
    a, b = play_episode(lesson, env_a, 7), play_episode(raw, env_b, 7)
    ta, tb = next(a), next(b)
    rng, lost, n = np.random.default_rng(1), 0, 0
    while not ta.done:
        stacked = raw.stack_states([tb.state])
        np.testing.assert_array_equal(preprocess_frames(stacked[0]), ta.state)
        assert (tb.reward, tb.life_lost, tb.episode_return) == (ta.reward, ta.life_lost, ta.episode_return)
        lost += ta.life_lost
        action = int(rng.integers(5))
        ta, tb = a.send(action), b.send(action)
        n += 1
    assert tb.done and lost >= 2 and n > 100


def test_the_same_agent_under_both_contracts_gives_identical_returns(models):
    assert _evaluate(models["lesson_inside"], "mspacman_raw5") == _evaluate(models["strong"], "mspacman")


def test_a_changed_preprocessing_is_graded_on_its_own_states(models):
    """The 0..1, 4-frame agent plays well on its own states; its network alone, fed the lesson's
    0..255 states, plays worse than random."""
    own = _evaluate(models["scaled"], "mspacman_raw4")
    assert min(own) > 4 * RANDOM_MEAN, own
    lesson = _evaluate(models["unit_network"], "mspacman")
    assert max(lesson) < RANDOM_MEAN, lesson


@pytest.mark.slow
def test_the_strong_reference_with_the_lessons_preprocessing_inside_scores_todays_returns(models):
    """Per-seed returns on the rubric's 10 grading seeds equal the baselines file's (today's grading)."""
    from grader.scoring.rubric import load_rubric

    seeds = load_rubric(RUBRIC).grading_seeds()
    assert len(seeds) == 10
    baselines = json.loads((REPO / "rubrics" / "baselines" / "mspacman.json").read_text())["entries"]["reference"]
    assert _evaluate(models["lesson_inside"], "mspacman_raw5", seeds) == baselines["returns"]


# --- the pipeline: every front end -------------------------------------------------------------------------
def test_grade_gives_the_same_grade_under_both_contracts_with_videos(models, tmp_path):
    from grader.api import grade

    lesson = grade(models["strong"], rubric=RUBRIC, seeds=SEEDS, out=tmp_path / "a", video=True)
    raw = grade(models["lesson_inside"], rubric=RUBRIC, seeds=SEEDS, out=tmp_path / "b", video=True)
    assert raw.status == lesson.status == "graded", raw.error
    assert raw.task == lesson.task == "mspacman"
    assert [(e.seed, e.return_) for e in raw.episodes] == [(e.seed, e.return_) for e in lesson.episodes]
    assert (raw.score, raw.max_score, raw.band) == (lesson.score, lesson.max_score, lesson.band)
    signature = next(c for c in raw.checks if c.name == "input_signature")
    assert "uint8 [batch, 5, 210, 160, 3]" in signature.message and "raw RGB frames" in signature.message
    assert raw.videos and all(v.matches for v in raw.videos)
    assert raw.diagnostics is not None and raw.diagnostics.outcomes
    assert (tmp_path / "b" / "report.html").is_file()


NOTEBOOK_PART = """
[parts]
model = "required"
notebook = "optional"
bands = "model"
[notebook]
lesson_preprocessing = {lesson}
[notebook.points]
preprocess_shape = 1
preprocess_range = 1
preprocess_values = 2
network_forward = 1
network_onnx_export = 1
"""


def _rubric(path: Path, *, notebook: bool = False, lesson: bool = False) -> Path:
    """A MsPacman rubric of 2 episodes on the shipped rubric's first 2 grading seeds; with
    ``notebook``, an optional notebook part (``lesson``: the lesson's preprocessing required)."""
    path.write_text(_RUBRIC + (NOTEBOOK_PART.format(lesson=str(lesson).lower()) if notebook else ""))
    return path


_RUBRIC = f"""
id = "pac-test"
task = "mspacman"
title = "MsPacman, 2 episodes"
episodes = 2
selfcheck_episodes = 2
[seeds]
public = "0-1"
grading = "{SEEDS[0]}-{SEEDS[-1]}"
[scoring]
statistic = "mean"
zero = {RANDOM_MEAN}
full = 1500.0
points = 10
[[bands]]
name = "strong"
min_fraction = 1.0
[[bands]]
name = "random-like"
min_fraction = 0.0
"""


def _via_cli(model: Path, rubric: Path, tmp: Path):
    from grader.cli import main
    from grader.result import GradeResult

    assert main([str(model), "--rubric", str(rubric), "--out", str(tmp / "cli"), "--no-video", "--json"]) == 0
    return GradeResult.from_json((tmp / "cli" / "result.json").read_text())


def _via_check(model: Path, rubric: Path, tmp: Path):
    from grader.api import check

    return check(model, rubric=rubric, seeds=SEEDS)


def _via_batch(model: Path, rubric: Path, tmp: Path):
    from grader.cli import main
    from grader.result import GradeResult

    folder = tmp / "class" / "alice"
    folder.mkdir(parents=True)
    (folder / "model.onnx").write_bytes(model.read_bytes())
    assert main(["batch", str(folder.parent), "--rubric", str(rubric), "--out", str(tmp / "batch"), "--workers", "1",
                 "--no-video", "--no-progress", "--reference", str(tmp)]) == 0
    (report,) = (tmp / "batch" / "reports" / "alice").iterdir()
    return GradeResult.from_json((report / "result.json").read_text())


def _via_site(model: Path, rubric: Path, tmp: Path):
    import site_helpers as S

    result = S.grade_on_the_site(rubric, tmp, "model.onnx", model.read_bytes())
    assert not isinstance(result, tuple), result
    return result


@pytest.mark.parametrize("front_end", [_via_cli, _via_check, _via_batch, _via_site], ids=["cli", "check", "batch", "site"])
def test_every_front_end_grades_a_raw_frame_model_as_the_same_agent_under_the_lessons_contract(front_end, models, tmp_path):
    from grader.api import grade

    rubric = _rubric(tmp_path / "rubric.toml")
    expected = grade(models["strong"], rubric=rubric, write=False, video=False)
    result = front_end(models["lesson_inside"], rubric, tmp_path)
    assert result.status == "graded" and result.task == "mspacman", result.error
    assert [(e.seed, e.return_) for e in result.episodes] == [(e.seed, e.return_) for e in expected.episodes]
    assert (result.score, result.max_score, result.band) == (expected.score, expected.max_score, expected.band)
    assert [(c.name, c.passed) for c in result.checks] == [(c.name, c.passed) for c in expected.checks]


# --- Resize in a preprocessing: sizes fixed in the model --------------------------------------------------
def _resize_model(sizes_nodes: list, sizes: str, inits: list) -> bytes:
    nodes = [helper.make_node("Cast", ["x"], ["f"], to=TensorProto.FLOAT),
             helper.make_node("ReduceMean", ["f"], ["g"], axes=[4], keepdims=0),
             *sizes_nodes,
             helper.make_node("Resize", ["g", "", "", sizes], ["r"], mode="linear"),
             helper.make_node("ReduceMean", ["r"], ["m"], axes=[1, 2, 3], keepdims=0),
             helper.make_node("Unsqueeze", ["m", "ax"], ["m1"]),
             helper.make_node("Mul", ["m1", "w"], ["y"])]
    inits = inits + [numpy_helper.from_array(np.ones((1, 5), np.float32), "w"),
                     numpy_helper.from_array(np.array([1], np.int64), "ax")]
    graph = helper.make_graph(nodes, "resize", [helper.make_tensor_value_info("x", TensorProto.UINT8, ["batch", 4, 210, 160, 3])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 5])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model.SerializeToString()


def _shape_then(const: list[int]) -> tuple[list, list]:
    nodes = [helper.make_node("Shape", ["g"], ["shape"]),
             helper.make_node("Slice", ["shape", "zero", "two"], ["lead"]),
             helper.make_node("Concat", ["lead", "hw"], ["sizes"], axis=0)]
    inits = [numpy_helper.from_array(np.array([0], np.int64), "zero"), numpy_helper.from_array(np.array([2], np.int64), "two"),
             numpy_helper.from_array(np.array(const, np.int64), "hw")]
    return nodes, inits


def test_a_resize_to_a_fixed_size_is_allowed_and_a_computed_or_huge_one_is_not():
    nodes, inits = _shape_then([84, 84])
    parsed = parse_model(_resize_model(nodes, "sizes", inits))
    assert all(c.passed for c in C.static_checks(parsed, C.detect_task(parsed)))
    nodes, inits = _shape_then([100_000, 100_000])
    check = C.check_tensor_sizes(parse_model(_resize_model(nodes, "sizes", inits)))
    assert not check.passed and "resizes to 1e+10 pixels" in check.message
    computed = [helper.make_node("Cast", ["g"], ["gi"], to=TensorProto.INT64),
                helper.make_node("ReduceMax", ["gi"], ["top"], keepdims=1, axes=[0, 1, 2, 3]),
                helper.make_node("Reshape", ["top", "one"], ["top1"]),
                helper.make_node("Concat", ["lead4", "top1"], ["sizes"], axis=0)]
    inits = [numpy_helper.from_array(np.array([1, 4, 84], np.int64), "lead4"), numpy_helper.from_array(np.array([1], np.int64), "one")]
    check = C.check_tensor_sizes(parse_model(_resize_model(computed, "sizes", inits)))
    assert not check.passed and "computed by the model" in check.message


def test_a_torch_module_that_preprocesses_then_calls_the_network_exports_to_the_raw_contract(tmp_path):
    """What docs/mspacman.md tells students: torch.onnx.export(..., dynamo=True) of a module whose
    forward preprocesses (crop, 0..1, 84x84 by interpolation), then calls the network."""
    torch = pytest.importorskip("torch")
    nn, F = torch.nn, torch.nn.functional

    class Preprocess(nn.Module):
        def forward(self, frames):  # [batch, K, 210, 160, 3] uint8
            x = frames.float().mean(dim=-1)[:, :, 34:194] / 255.0
            return F.interpolate(x, size=(84, 84), mode="bilinear", align_corners=False)

    class Exported(nn.Module):
        def __init__(self):
            super().__init__()
            self.preprocess = Preprocess()
            self.network = nn.Sequential(nn.Conv2d(4, 8, 8, stride=4), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 20 * 20, 5))

        def forward(self, frames):
            return self.network(self.preprocess(frames))

    torch.manual_seed(0)
    path = tmp_path / "model.onnx"
    example = torch.zeros(1, 4, 210, 160, 3, dtype=torch.uint8)
    torch.onnx.export(Exported().eval(), (example,), str(path), input_names=["frames"], dynamo=True,
                      external_data=False, dynamic_shapes={"frames": {0: torch.export.Dim("batch")}})
    parsed = parse_model(path.read_bytes())
    task = C.detect_task(parsed)
    assert task.name == "mspacman_raw4"
    static = C.static_checks(parsed, task)
    assert all(c.passed for c in static), [c.message for c in static if not c.passed]
    assert any(n.op_type == "Resize" for n in onnx.load(str(path)).graph.node)


# --- the notebook's preprocessing judged against the model handed in --------------------------------------
SCALED_PREPROCESS = '''# my own preprocessing: the channel mean, not truncated, scaled to 0..1
def preprocess_observation(self, observation):
    frame = torch.tensor(observation, dtype=torch.uint8)
    frame = frame.float().mean(dim=2)[1:171]
    edge = torch.full((2, 160), 150.0)
    return torch.cat([edge, frame, edge])[1::4, 1::4] / 255.0

Agent.preprocess_observation = preprocess_observation
'''


def _scaled(frame: np.ndarray) -> np.ndarray:
    """SCALED_PREPROCESS in numpy (what reference.frames.scaled_nodes computes on each frame)."""
    gray = frame.astype(np.float32).mean(axis=2)[4:169:4, 1::4] / np.float32(255.0)
    return np.pad(gray, ((1, 1), (0, 0)), constant_values=np.float32(150.0 / 255.0))


def _pending(fn, *, lesson_required: bool = False):
    from grader.notebook import mspacman as NB
    from grader.notebook.diagnose import diagnose_preprocessing as diagnose

    with np.load(NB.FRAMES_FILE) as d:
        frames = d["frames"][list(NB.PREPROCESS_FRAMES)]
    outputs = [fn(f) for f in frames]
    diag = diagnose(frames, outputs)
    provisional = NB.check("preprocess_values", True, "provisional")
    return NB.PendingPreprocess("preprocess_observation", frames, outputs, diag, NB.describe_change(outputs, diag),
                                provisional, lesson_required)


@pytest.fixture(scope="module")
def engine():
    from grader.runtime.engine import Engine

    with Engine(1) as e:
        yield e


def _resolve(pending, task: str, model: Path | None, engine):
    from grader.notebook.mspacman import resolve

    data = model.read_bytes() if model is not None else b""
    return resolve(pending, task=get_task(task), tensors=lambda states, size: engine.tensors(data, states, size=size))


def test_a_consistent_change_of_the_preprocessing_is_described_and_passes(models, engine):
    judged = _resolve(_pending(_scaled), "mspacman_raw4", models["scaled"], engine)
    assert judged.passed, judged.message
    assert "computes what the model's own preprocessing computes on 4 real MsPacman frames" in judged.message
    assert "a deliberate change: the channel mean not truncated, scales to 0..1; a stack of 4" in judged.message
    lesson = _resolve(_pending(lambda f: preprocess_frames(f)), "mspacman_raw5", models["lesson_inside"], engine)
    assert lesson.passed and "(the lesson's; a stack of 5)" in lesson.message
    assert _resolve(_pending(lambda f: preprocess_frames(f)), "mspacman", models["strong"], engine) is None  # as today


def test_a_notebook_that_disagrees_with_its_model_is_caught(models, engine):
    judged = _resolve(_pending(lambda f: preprocess_frames(f)), "mspacman_raw4", models["scaled"], engine)
    assert not judged.passed and "preprocesses its frames differently from preprocess_observation" in judged.message
    assert "same preprocessing" in judged.hint
    # the changed preprocessing, but the model handed in takes the lesson's states
    judged = _resolve(_pending(_scaled), "mspacman", models["unit_network"], engine)
    assert not judged.passed and "the grader feeds it the lesson's preprocessing" in judged.message
    assert "scaling: values divided by 255" in judged.message and "docs/mspacman.md" in judged.hint
    # a rubric that requires the lesson's preprocessing keeps its verdict
    assert _resolve(_pending(_scaled, lesson_required=True), "mspacman_raw4", models["scaled"], engine) is None


def test_a_changed_preprocessing_in_a_notebook_is_graded_with_its_model_through_the_pipeline(models, tmp_path):
    """The notebook and the model it hands in agree: every notebook check passes; the same notebook
    handed in with a model that preprocesses as the lesson does loses preprocess_values."""
    pytest.importorskip("torch")
    import notebook_fixtures as NF

    from grader.api import grade

    rubric = _rubric(tmp_path / "rubric.toml", notebook=True)
    results = {}
    for name, model in (("consistent", models["scaled"]), ("inconsistent", models["lesson_inside"])):
        folder = tmp_path / name
        folder.mkdir()
        NF.write_notebook(folder / "homework.ipynb", NF.mspacman_cells(preprocess=SCALED_PREPROCESS))
        (folder / "model.onnx").write_bytes(model.read_bytes())
        results[name] = grade(folder, rubric=rubric, write=False, video=False)
    checks = {c.name: c for c in results["consistent"].checks}
    assert results["consistent"].status == "graded", results["consistent"].error
    assert checks["preprocess_values"].passed, checks["preprocess_values"].message
    assert "scales to 0..1" in checks["preprocess_values"].message
    assert checks["preprocess_shape"].passed and checks["preprocess_range"].passed
    assert "scaled to 0..1" in checks["preprocess_range"].message
    bad = {c.name: c for c in results["inconsistent"].checks}["preprocess_values"]
    assert not bad.passed and bad.severity == "warning" and "differently" in bad.message
    assert results["inconsistent"].status == "graded"  # notebook checks cost their points, never invalidate


def test_a_stack_of_another_depth_in_params_is_a_note_when_the_preprocessing_is_the_students():
    from grader.notebook import mspacman as NB
    from grader.notebook.protocol import DefinitionsDone

    done = DefinitionsDone(ev="definitions_done", params={"sequence_size": 4, "n_actions": 5})
    (own,) = NB._params_check(done, lesson_required=False)
    assert own.passed and own.severity == "note" and "the last 4 raw frames" in own.message
    (lesson,) = NB._params_check(done, lesson_required=True)
    assert not lesson.passed and lesson.severity == "warning"


def test_gradescope_grades_a_raw_frame_model_with_the_homeworks_rubric(models, tmp_path):
    """The MsPacman autograder zip grades the strong reference with the lesson's preprocessing
    inside: the reference's returns on the first grading seeds (the baselines file's)."""
    import re
    import zipfile

    from test_gradescope import run_autograder, validate_results

    from grader.gradescope.autograder import build_autograder
    from grader.result import GradeResult

    zip_path = build_autograder(rubric=RUBRIC, out=tmp_path / "autograder.zip")
    root = tmp_path / "autograder"
    for sub in ("source", "submission", "results"):
        (root / sub).mkdir(parents=True)
    with zipfile.ZipFile(zip_path) as z:
        z.extractall(root / "source")
    rubric = root / "source" / "mspacman.toml"
    rubric.write_text(re.sub(r"(?m)^episodes = \d+$", "episodes = 2", rubric.read_text()))
    (root / "submission" / "model.onnx").write_bytes(models["lesson_inside"].read_bytes())
    data, _ = run_autograder(root, timeout=300)
    validate_results(data)
    graded = GradeResult.from_json((root / "results" / "report" / "result.json").read_text())
    assert graded.status == "graded" and graded.task == "mspacman", graded.error
    reference = json.loads((REPO / "rubrics" / "baselines" / "mspacman.json").read_text())["entries"]["reference"]
    assert [e.return_ for e in graded.episodes] == reference["returns"][:2]
    assert data["score"] == pytest.approx(graded.score)


DQN_PREPROCESS = '''# the DQN paper's preprocessing: crop, 84x84, 0..1
def preprocess_observation(self, observation):
    frame = torch.tensor(observation, dtype=torch.uint8).float().mean(dim=2)[34:194] / 255.0
    return F.interpolate(frame[None, None], size=(84, 84), mode="bilinear", align_corners=False)[0, 0]

Agent.preprocess_observation = preprocess_observation
'''

DQN_NETWORK = '''class DQN(nn.Module):
    def __init__(self, n_observations, n_actions):
        super().__init__()
        self.conv = nn.Conv2d(n_observations, 16, kernel_size=8, stride=4)
        self.fc = nn.Linear(16 * 20 * 20, n_actions)

    def forward(self, x):
        return self.fc(torch.flatten(F.relu(self.conv(x)), start_dim=1))
'''


def test_a_notebook_network_is_probed_on_the_notebooks_own_states(tmp_path):
    """Following the homework (84x84, 0..1, its own network) passes the network checks on its own
    states; the lesson's network cannot take those states, and that is caught and said."""
    pytest.importorskip("torch")
    import notebook_fixtures as NF

    from grader.notebook import mspacman as NB
    from grader.notebook.common import parse_notebook
    from grader.notebook.sandbox import Limits

    def checks(name: str, **cells: str) -> dict:
        nb = parse_notebook(NF.write_notebook(tmp_path / name / "hw.ipynb", NF.mspacman_cells(**cells)))
        ev = NB.collect(nb, limits=Limits(), sandbox=None, weights=[], lesson_preprocessing=False)
        return {c.name: c for c in ev.checks}

    own = checks("own", preprocess=DQN_PREPROCESS, network=DQN_NETWORK)
    assert own["preprocess_shape"].passed and "(84, 84) (the lesson's: (44, 40))" in own["preprocess_shape"].message
    assert own["preprocess_values"].passed, own["preprocess_values"].message
    assert "84x84" in own["preprocess_values"].message and "scales to 0..1" in own["preprocess_values"].message
    assert own["network_forward"].passed and "own states [4, 5, 84, 84]" in own["network_forward"].message
    assert own["network_batch_independent"].passed, own["network_batch_independent"].message
    lesson_net = checks("lesson_net", preprocess=DQN_PREPROCESS)
    assert not lesson_net["network_forward"].passed
    assert "cannot take the notebook's own states [4, 5, 84, 84]" in lesson_net["network_forward"].message
    assert "flatten size" in lesson_net["network_forward"].hint


def test_a_notebook_network_is_exported_on_its_own_states_when_the_preprocessing_is_the_students(models, tmp_path):
    """network_onnx_export: a network that takes the notebook's own states (84x84, a stack of 5) is
    exported on them and passes the model checks on them; with the lesson's preprocessing required,
    the same network is exported on the lesson's states, which it cannot take, and loses the point;
    the lesson's own network still exports on the lesson's states."""
    pytest.importorskip("torch")
    import notebook_fixtures as NF

    from grader.api import grade
    from grader.notebook import mspacman as NB
    from grader.notebook.common import parse_notebook
    from grader.notebook.sandbox import Limits

    nb = parse_notebook(NF.write_notebook(tmp_path / "nb" / "hw.ipynb",
                                          NF.mspacman_cells(preprocess=DQN_PREPROCESS, network=DQN_NETWORK)))
    (network,) = [m for m in NB.collect(nb, limits=Limits(), sandbox=None, weights=[],
                                        lesson_preprocessing=False).models if m.role == "network"]
    assert network.own_state is not None and network.own_state.shape == (1, 5, 84, 84)
    assert 0.0 <= network.own_state.min() and network.own_state.max() <= 1.0  # the notebook's preprocessing of a frame
    lesson_required = NB.collect(nb, limits=Limits(), sandbox=None, weights=[], lesson_preprocessing=True)
    assert not [m for m in lesson_required.models if m.role == "network"]  # it cannot take [1, 5, 44, 40]

    rubric = _rubric(tmp_path / "rubric.toml", notebook=True)
    strict = _rubric(tmp_path / "strict.toml", notebook=True, lesson=True)
    results = {}
    for name, cells, rub in (("own", {"preprocess": DQN_PREPROCESS, "network": DQN_NETWORK}, rubric),
                             ("strict", {"preprocess": DQN_PREPROCESS, "network": DQN_NETWORK}, strict),
                             ("lesson", {}, rubric)):
        folder = tmp_path / name
        folder.mkdir()
        NF.write_notebook(folder / "homework.ipynb", NF.mspacman_cells(**cells))
        (folder / "model.onnx").write_bytes(models["scaled"].read_bytes())
        result = grade(folder, rubric=rub, write=False, video=False, episodes=1)
        assert result.status == "graded", result.error
        results[name] = {c.name: c for c in result.checks}
    own = results["own"]["network_onnx_export"]
    assert own.passed and "own states [batch, 5, 84, 84]" in own.message, own.message
    assert "network_onnx_export" not in results["strict"] or not results["strict"]["network_onnx_export"].passed
    assert not results["strict"]["network_exported"].passed
    lesson = results["lesson"]["network_onnx_export"]
    assert lesson.passed and "passes every model check the graded file must pass" in lesson.message


def test_grade_check_says_a_changed_preprocessing_belongs_inside_the_model_when_a_lesson_model_plays_at_random(
        models, capsys):
    """The scaled agent's network alone, fed the lesson's states, plays below the random policy:
    `grade check` warns and points to the raw-frame contract; the same agent with its preprocessing
    inside plays well, without the warning."""
    from grader.cli import main

    main(["check", str(models["unit_network"]), "--rubric", str(RUBRIC), "--json"])
    checks = {c["name"]: c for c in json.loads(capsys.readouterr().out)["checks"]}
    warning = checks["random_level"]
    assert not warning["passed"] and warning["severity"] == "warning" and "random policy's level" in warning["message"]
    assert "inside the model" in warning["hint"] and "docs/mspacman.md" in warning["hint"]
    main(["check", str(models["scaled"]), "--rubric", str(RUBRIC), "--json"])
    result = json.loads(capsys.readouterr().out)
    assert result["status"] == "graded" and "random_level" not in {c["name"] for c in result["checks"]}


def test_the_random_level_warning_needs_a_hint_of_the_contract_and_a_score_near_random():
    from types import SimpleNamespace

    from grader.pipeline import _random_level_check
    from grader.result import RubricInfo

    def run(task: str, mean: float) -> list[str]:
        info = RubricInfo(id="r", path="", sha256="", seed_set="public", n_seeds=2, statistic="mean", zero_at=279.0,
                          full_at=1500.0, baselines={"random": 279.0})
        result = SimpleNamespace(rubric=info, summary=SimpleNamespace(mean=mean), checks=[])
        _random_level_check(SimpleNamespace(result=result, task=get_task(task)))
        return [c.name for c in result.checks]

    assert run("mspacman", 60.0) == ["random_level"] and run("mspacman", 400.0) == ["random_level"]
    assert run("mspacman", 420.0) == []  # more than a tenth of the way to full marks
    assert run("mspacman_raw4", 60.0) == []  # its preprocessing is inside already: nothing to add
    assert run("lunarlander", -500.0) == []
