"""The one pipeline: every front end gives the same checks and points, scores stay within the
rubric's maximum, grades follow their inputs, rubrics are validated at load, tasks are plug-ins,
and a grader bug is an error with a log, never the student's fault."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import site_helpers as S

from grader.api import check, grade
from grader.cli import main
from grader.errors import SetupError
from grader.result import GradeResult
from grader.scoring.rubric import RubricError, load_rubric

REPO = Path(__file__).resolve().parent.parent
SEEDS = ",".join(map(str, S.GRADING_SEEDS))


def _student(tmp_path: Path, name: str = "alice") -> Path:
    folder = tmp_path / "class" / name
    folder.mkdir(parents=True)
    (folder / "model.onnx").write_bytes(S.lunarlander_model_bytes(7))
    return folder


def _summary(result: GradeResult) -> tuple:
    return ([(c.name, c.passed) for c in result.checks], round(result.score, 9), result.max_score,
            [(e.seed, e.return_) for e in result.episodes])


# --- one pipeline behind every front end ------------------------------------------------------------
def _via_grade(folder: Path, rubric: Path, tmp: Path) -> GradeResult:
    return grade(folder, rubric=rubric, out=tmp / "g", video=False)


def _via_check(folder: Path, rubric: Path, tmp: Path) -> GradeResult:
    return check(folder, rubric=rubric, seeds=S.GRADING_SEEDS)  # the same seeds, so the same returns


def _via_cli(folder: Path, rubric: Path, tmp: Path) -> GradeResult:
    out = tmp / "cli"
    assert main([str(folder), "--rubric", str(rubric), "--out", str(out), "--no-video", "--json"]) == 0
    return GradeResult.from_json((out / "result.json").read_text())


def _via_batch(folder: Path, rubric: Path, tmp: Path) -> GradeResult:
    out = tmp / "batch"
    assert main(["batch", str(folder.parent), "--rubric", str(rubric), "--out", str(out), "--workers", "1",
                 "--no-video", "--no-progress", "--reference", str(tmp)]) == 0
    (report,) = (out / "reports" / folder.name).iterdir()
    return GradeResult.from_json((report / "result.json").read_text())


def _via_site(folder: Path, rubric: Path, tmp: Path) -> GradeResult:
    result = S.grade_on_the_site(rubric, tmp, "model.onnx", (folder / "model.onnx").read_bytes())
    assert isinstance(result, GradeResult), result
    return result


FRONT_ENDS = {"grade": _via_grade, "check": _via_check, "cli": _via_cli, "batch": _via_batch, "site": _via_site}


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ref")
    rubric = S.write_rubric(tmp / "rubric.toml")
    return _summary(grade(_student(tmp), rubric=rubric, write=False)), rubric


@pytest.mark.parametrize("front_end", list(FRONT_ENDS))
def test_every_front_end_gives_the_same_checks_and_points(front_end, reference, tmp_path):
    expected, rubric = reference
    result = FRONT_ENDS[front_end](_student(tmp_path), rubric, tmp_path)
    assert result.status == "graded", result.error
    checks, score, max_score, episodes = _summary(result)
    assert (checks, score, max_score, episodes) == expected


def test_a_notebook_and_its_model_are_one_submission_everywhere(tmp_path):
    """grade, grade check and grade batch grade the folder's notebook with its model: the same points."""
    from notebook_fixtures import LUNAR_CELLS, write_notebook

    rubric = S.lunar_rubric_with_notebook(tmp_path)
    folder = tmp_path / "class" / "alice"
    folder.mkdir(parents=True)
    write_notebook(folder / "homework.ipynb", LUNAR_CELLS, markdown="# LunarLander actor-critic")
    shutil.copyfile(REPO / "reference" / "models" / "lunarlander_improved.onnx", folder / "model.onnx")
    via_grade = grade(folder, rubric=rubric, episodes=5, write=False)
    out = tmp_path / "batch"
    assert main(["batch", str(folder.parent), "--rubric", str(rubric), "--out", str(out), "--episodes", "5",
                 "--no-video", "--no-progress", "--reference", str(tmp_path)]) == 0
    (report,) = (out / "reports" / "alice").iterdir()
    via_batch = GradeResult.from_json((report / "result.json").read_text())
    assert _summary(via_grade) == _summary(via_batch)
    assert via_grade.score == 14 and via_grade.max_score == 14  # 4 notebook points + 10 episode points
    rows = (out / "grades.csv").read_text().splitlines()
    assert rows[1].split(",")[1:3] == ["14", "14"]


def test_a_flat_file_never_takes_another_students_files(tmp_path):
    from notebook_fixtures import LUNAR_CELLS, write_notebook

    d = tmp_path / "class"
    d.mkdir()
    write_notebook(d / "alice.ipynb", LUNAR_CELLS, markdown="# LunarLander actor-critic")
    (d / "bob.onnx").write_bytes(S.lunarlander_model_bytes(1))
    result = grade(d / "alice.ipynb", rubric=REPO / "rubrics" / "lunarlander.toml", write=False)
    assert result.model is None and not result.episodes  # bob's model is not alice's
    assert any("bob.onnx" in w and "not part of this submission" in w for w in result.warnings)


# --- one score ---------------------------------------------------------------------------------------
def test_no_output_shows_more_than_the_maximum_and_invalid_is_zero_of_it(tmp_path):
    from grader.classroom.exports import gradescope_results

    rubric = REPO / "rubrics" / "mspacman.toml"  # 11 notebook points + 10 episode points
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"\x08\x07" + b"\x00" * 50)
    result = grade(bad, rubric=rubric, out=tmp_path / "out", video=False)
    assert result.status == "invalid" and result.score == 0 and result.max_score == 21
    assert sum(p.max_points for p in result.parts) == 21
    html = (tmp_path / "out" / "report.html").read_text()
    import re

    assert re.search(r"0\.00 <small>/ 21 points", html)
    gs = gradescope_results(result)
    assert gs.score == 0 and sum(t.max_score or 0 for t in gs.tests) == 21
    strong = grade(REPO / "reference" / "models" / "lunarlander_improved.onnx", episodes=5, write=False)
    assert strong.score <= strong.max_score == 10


# --- grades follow their inputs ---------------------------------------------------------------------
def test_changing_the_seeds_file_or_the_baselines_regrades(tmp_path):
    from grader.scoring.rubric import rubric_key

    (tmp_path / "private.seeds").write_text("500-509\n")
    (tmp_path / "baselines.json").write_text(json.dumps(_baselines(-300.0)))
    path = tmp_path / "r.toml"
    path.write_text('id = "x"\ntask = "lunarlander"\nepisodes = 3\nbaselines = "baselines.json"\n'
                    '[seeds]\npublic = "0-2"\ngrading_file = "private.seeds"\n'
                    '[scoring]\nzero = "random"\nfull = 200\n')
    first = rubric_key(load_rubric(path))
    assert rubric_key(load_rubric(path)) == first  # nothing changed: the same key
    (tmp_path / "private.seeds").write_text("# new seeds\n600-609\n")
    second = rubric_key(load_rubric(path))
    assert second != first
    (tmp_path / "baselines.json").write_text(json.dumps(_baselines(-250.0)))
    third = rubric_key(load_rubric(path))
    assert third not in (first, second)
    path.write_text('# a comment and a title change no grade\ntitle = "Homework 3"\n' + path.read_text())
    assert rubric_key(load_rubric(path)) == third


def _baselines(random_mean: float) -> dict:
    from grader.scoring.stats import summarize

    summary = json.loads(summarize([random_mean, random_mean], success_threshold=200).model_dump_json())
    return {"task": "lunarlander", "rubric_id": "x", "seed_set": "grading", "n_seeds": 2, "created": "now",
            "versions": {}, "entries": {"random": {"policy": "random", "summary": summary, "returns": [random_mean] * 2}}}


def test_batch_regrades_when_the_seeds_file_changes(tmp_path):
    folder = _student(tmp_path)
    (tmp_path / "private.seeds").write_text("500-509\n")
    rubric = tmp_path / "r.toml"
    rubric.write_text('id = "x"\ntask = "lunarlander"\nepisodes = 2\n[seeds]\npublic = "0-2"\n'
                      'grading_file = "private.seeds"\n[scoring]\nzero = -500\nfull = 200\n')
    out = tmp_path / "out"
    args = ["batch", str(folder.parent), "--rubric", str(rubric), "--out", str(out), "--no-video", "--no-progress",
            "--reference", str(tmp_path)]
    assert main(args) == 0
    first = GradeResult.from_json(next((out / "reports" / "alice").iterdir()).joinpath("result.json").read_text())
    (tmp_path / "private.seeds").write_text("700-709\n")
    assert main(args) == 0
    import sqlite3

    rows = sqlite3.connect(out / "gradebook.sqlite").execute("SELECT status, result_json FROM attempts").fetchall()
    assert len(rows) == 2 and all(r[0] == "graded" for r in rows)  # the new seeds were played, not reused
    seeds = {e["seed"] for _, text in rows for e in json.loads(text)["episodes"]}
    assert seeds == {500, 501, 700, 701} and first.episodes[0].seed == 500


@pytest.mark.parametrize("command", ["grade", "check", "batch", "baselines", "serve", "gradescope"])
def test_a_rubric_with_more_episodes_than_seeds_is_refused_by_every_command(command, tmp_path, capsys):
    rubric = tmp_path / "r.toml"
    rubric.write_text('id = "x"\ntask = "lunarlander"\nepisodes = 50\n[seeds]\npublic = "0-2"\n'
                      'grading = "100-109"\n[scoring]\nzero = 0\nfull = 200\n')
    folder = _student(tmp_path)
    argv = {"grade": [str(folder), "--rubric", str(rubric)],
            "check": ["check", str(folder), "--rubric", str(rubric)],
            "batch": ["batch", str(folder.parent), "--rubric", str(rubric), "--out", str(tmp_path / "o")],
            "baselines": ["baselines", "--rubric", str(rubric), "--out", str(tmp_path / "b.json")],
            "serve": ["serve", "--rubric", str(rubric), "--db", str(tmp_path / "s.sqlite"), "--port", "0"],
            "gradescope": ["gradescope", "--rubric", str(rubric), "--out", str(tmp_path / "a.zip")]}[command]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert "episodes = 50" in err and "10 seeds" in err and "Traceback" not in err
    assert not (tmp_path / "o").exists() and not (tmp_path / "a.zip").exists()


def test_overlapping_seed_sets_and_an_unknown_baseline_name_the_key(tmp_path):
    rubric = tmp_path / "r.toml"
    rubric.write_text('id = "x"\ntask = "lunarlander"\nepisodes = 2\n[seeds]\npublic = "0-9"\n'
                      'grading = "5-20"\n[scoring]\nzero = 0\nfull = 200\n')
    with pytest.raises(RubricError, match="seeds.grading and seeds.public share"):
        load_rubric(rubric)
    rubric.write_text('id = "x"\ntask = "lunarlander"\nepisodes = 2\n[seeds]\npublic = "0-9"\n'
                      'grading = "50-60"\n[scoring]\nzero = "random"\nfull = 200\n')
    with pytest.raises(RubricError, match="baseline 'random'.*`baselines`"):
        load_rubric(rubric)
    rubric.write_text('id = "x"\ntask = "tetris"\nepisodes = 2\n[seeds]\npublic = "0-9"\n'
                      'grading = "50-60"\n[scoring]\nzero = 0\nfull = 200\n')
    with pytest.raises(RubricError, match="unknown task 'tetris'; known tasks: lunarlander, mspacman, cartpole"):
        load_rubric(rubric)


# --- tasks as plug-ins --------------------------------------------------------------------------------
def test_cartpole_grades_end_to_end_with_its_own_rubric(tmp_path):
    model = REPO / "reference" / "models" / "cartpole_heuristic.onnx"
    result = grade(model, out=tmp_path / "out", episodes=5)  # the task is recognised from [batch, 4]
    assert result.status == "graded" and result.task == "cartpole" and result.rubric.id == "cartpole"
    assert [e.return_ for e in result.episodes] == [500.0] * 5 and result.score == result.max_score == 10
    assert result.rubric.baselines["random"] < 50 and result.videos  # baselines shown, videos recorded
    assert "random" in (tmp_path / "out" / "report.html").read_text()


def test_nothing_outside_a_task_module_names_a_task():
    """Task names appear only in grader/tasks/ and in the notebook grader's per-task modules."""
    import re

    from grader.tasks import task_names

    allowed = {"tasks", "notebook/mspacman.py", "notebook/lunarlander.py"}
    pattern = re.compile(r"""["'](""" + "|".join(task_names()) + r""")["']""")
    offenders = []
    for path in (REPO / "grader").rglob("*.py"):
        rel = path.relative_to(REPO / "grader").as_posix()
        if rel.split("/")[0] in allowed or rel in allowed:
            continue
        for n, line in enumerate(path.read_text().splitlines(), 1):
            if pattern.search(line):
                offenders.append(f"{rel}:{n}: {line.strip()}")
    assert not offenders, "\n".join(offenders)


# --- errors by whose fault they are -------------------------------------------------------------------
def test_a_grader_bug_is_an_error_with_a_log_not_invalid(tmp_path, monkeypatch):
    import grader.submission.checks

    def broken(*args, **kwargs):
        raise RuntimeError("a bug in the grader's own checks")

    monkeypatch.setattr(grader.submission.checks, "static_checks", broken)
    result = grade(REPO / "reference" / "models" / "lunarlander_improved.onnx", out=tmp_path / "out", episodes=2)
    assert result.status == "error" and "not a problem with the submission" in result.error
    log = (tmp_path / "out" / "grader_error.log").read_text()
    assert "RuntimeError: a bug in the grader's own checks" in log and "Traceback" in log
    assert main([str(REPO / "reference" / "models" / "lunarlander_improved.onnx"), "--out", str(tmp_path / "o2"),
                 "--episodes", "2", "--no-video"]) == 1


def test_a_missing_optional_dependency_is_the_instructors_error(tmp_path, monkeypatch):
    import importlib.util

    from notebook_fixtures import mspacman_cells, write_notebook

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "torch" else real(name, *a))
    write_notebook(tmp_path / "hw.ipynb", mspacman_cells())
    with pytest.raises(SetupError, match="pip install torch==2.13.0"):
        grade(tmp_path / "hw.ipynb", write=False)
    assert main([str(tmp_path / "hw.ipynb"), "--no-video"]) == 1


def test_version_and_did_you_mean(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0 and "rl-grader 0.1.0" in capsys.readouterr().out
    assert main(["chekc", "model.onnx"]) == 1
    assert "did you mean `grade check`" in capsys.readouterr().err


def test_a_self_check_writes_nothing_unless_asked(tmp_path):
    folder = _student(tmp_path)
    before = sorted(p.name for p in folder.parent.rglob("*"))
    assert main(["check", str(folder / "model.onnx")]) == 0
    assert sorted(p.name for p in folder.parent.rglob("*")) == before
    assert main(["check", str(folder / "model.onnx"), "--out", str(tmp_path / "mine")]) == 0
    assert (tmp_path / "mine" / "result.json").is_file()


def test_a_folder_is_graded_as_one_submission_and_says_which_files(tmp_path, capsys):
    folder = _student(tmp_path)
    assert main(["check", str(folder)]) == 0
    assert "alice/ (model.onnx)" in capsys.readouterr().out


# --- notebooks through the pipeline ---------------------------------------------------------------
def test_a_notebook_of_the_other_task_is_refused_by_the_rubric(tmp_path):
    from notebook_fixtures import LUNAR_CELLS, write_notebook

    write_notebook(tmp_path / "hw.ipynb", LUNAR_CELLS, markdown="# LunarLander actor-critic")
    result = grade(tmp_path / "hw.ipynb", rubric=REPO / "rubrics" / "mspacman.toml", write=False)
    assert result.status == "invalid" and result.failed_checks[0].name == "task_detected"
    assert "lunarlander homework" in result.error and result.score == 0 and result.max_score == 21


def test_a_self_check_of_a_notebook_plays_public_seeds_without_the_private_seeds_file(tmp_path):
    """The student has the course's rubric but not its private grading-seeds file."""
    from notebook_fixtures import LUNAR_CELLS, write_notebook

    rubric = tmp_path / "course.toml"
    text = (REPO / "rubrics" / "lunarlander.toml").read_text()
    text = text.replace('grading = "1000000-1000099"', 'grading_file = "private/lunarlander.seeds"')
    rubric.write_text(text.replace('baselines = "baselines/lunarlander.json"',
                                   f'baselines = "{REPO / "rubrics" / "baselines" / "lunarlander.json"}"'))
    folder = tmp_path / "mine"
    folder.mkdir()
    write_notebook(folder / "homework.ipynb", LUNAR_CELLS, markdown="# LunarLander actor-critic")
    shutil.copyfile(REPO / "reference" / "models" / "lunarlander_improved.onnx", folder / "model.onnx")
    result = check(folder, rubric=rubric)
    assert result.status == "graded" and result.rubric.seed_set == "public"
    assert [e.seed for e in result.episodes] == list(range(10)) and not result.videos
    with pytest.raises(RubricError, match="lunarlander.seeds"):  # the final grading needs the file
        grade(folder, rubric=rubric, write=False)


@pytest.mark.slow
def test_trained_weights_are_played_through_the_onnx_path(tmp_path):
    """A MsPacman notebook with its state_dict: the network is loaded with the weights in the
    sandbox, exported, and that model goes through every model check and plays episodes."""
    torch = pytest.importorskip("torch")
    from notebook_fixtures import mspacman_cells, write_notebook

    folder = tmp_path / "bob"
    folder.mkdir()
    write_notebook(folder / "homework.ipynb", mspacman_cells())
    namespace: dict = {}
    exec("import torch\nimport torch.nn as nn\nimport torch.nn.functional as F\n" + _network_source(), namespace)
    net = namespace["DQN"](5, 5)
    torch.save(net.state_dict(), folder / "policy.pt")
    result = grade(folder, seeds=[0], write=False)
    assert result.status == "graded", result.error
    names = {c.name: c for c in result.checks}
    assert names["network_weights"].passed and names["batch_independence"].passed
    assert names["network_onnx_export"].passed and len(result.episodes) == 1
    assert result.parts[-1].name == "episodes" and result.max_score == 21


def _network_source() -> str:
    from notebook_fixtures import NETWORK

    return NETWORK


# --- the workers' head start ---------------------------------------------------------------------------
def test_the_workers_start_on_the_homework_before_the_model_is_parsed(monkeypatch, tmp_path):
    """The workers are told the homework and the seeds before the model is parsed, and build the
    environments while this process parses and checks it: from ``--task`` (or a rubric), else from
    the input's shape read from the bytes; a model whose input says nothing clear is prepared for
    once it is parsed. The episodes are the same either way, a wrong guess is overruled by the parse,
    and the result says how much of the grading was the model's own compute."""
    import grader.pipeline as P
    from grader.runtime.engine import Engine

    events: list[tuple] = []
    real_prepare, real_parse, real_copy = Engine.prepare, P._parse, P._reference_copy

    def prepare(self, task, **kwargs):
        events.append(("prepare", task, tuple(kwargs.get("seeds") or ())))
        return real_prepare(self, task, **kwargs)

    def parse(run, data):
        events.append(("parse",))
        return real_parse(run, data)

    def copy(run, parsed, **kwargs):
        events.append(("reference",))
        return real_copy(run, parsed, **kwargs)

    monkeypatch.setattr(Engine, "prepare", prepare)
    monkeypatch.setattr(P, "_parse", parse)
    monkeypatch.setattr(P, "_reference_copy", copy)
    model = REPO / "reference" / "models" / "lunarlander_improved.onnx"
    given = grade(model, task="lunarlander", seeds=[3, 4, 5], write=False)
    assert events == [("prepare", "lunarlander", (3, 4, 5)), ("parse",), ("reference",)]
    events.clear()
    found = grade(model, seeds=[3, 4, 5], write=False)  # the homework read from the input's shape in the bytes
    assert events == [("prepare", "lunarlander", (3, 4, 5)), ("parse",), ("reference",)]
    assert [(e.seed, e.return_) for e in given.episodes] == [(e.seed, e.return_) for e in found.episodes]
    for result in (given, found):
        assert 0 < result.timings["inference"] < 2 * result.timings["episodes"]  # two workers' calls, summed
    written = grade(model, seeds=[3], out=tmp_path / "out", video=False)
    page = (tmp_path / "out" / "report.html").read_text()
    assert f"own compute</dt><dd>{written.timings['inference']:.2f} s, summed over the grading processes" in page
    events.clear()
    invalid = grade(model, task="mspacman", seeds=[3], write=False)  # prepared for MsPacman, then refused
    assert invalid.status == "invalid" and events[:2] == [("prepare", "mspacman", (3,)), ("parse",)]
    import onnx_fixtures as F

    events.clear()
    symbolic = grade(_symbolic_features(F.mlp(tmp_path / "n.onnx")), seeds=[3], write=False)  # [batch, features]
    assert symbolic.status == "invalid" and events == [("parse",)]
    events.clear()
    old_style = grade(F.mlp(tmp_path / "o.onnx", initializers_as_inputs=True), seeds=[3, 4, 5], write=False)
    assert events[:2] == [("prepare", "lunarlander", (3, 4, 5)), ("parse",)] and old_style.status == "graded"


def _symbolic_features(path: str) -> str:
    """The model at ``path`` with its input's second dimension made symbolic: [batch, features]."""
    import onnx

    model = onnx.load(path)
    model.graph.input[0].type.tensor_type.shape.dim[1].dim_param = "features"
    Path(path).write_bytes(model.SerializeToString())
    return path


def test_the_input_shape_is_read_from_the_bytes_as_onnx_reads_it(tmp_path):
    """``input_dims`` (the early hint) agrees with the parsed model on every shipped model and on
    the fixtures' shapes, and says nothing for what has no single clear input."""
    import onnx_fixtures as F

    from grader.submission.onnx_model import _value_info, graph_inputs, input_dims, parse_model

    files = [*sorted((REPO / "reference" / "models").glob("*.onnx")), F.mlp(tmp_path / "a.onnx", batch=1),
             F.mlp(tmp_path / "b.onnx", initializers_as_inputs=True), F.conv_policy(tmp_path / "c.onnx"),
             _symbolic_features(F.mlp(tmp_path / "d.onnx"))]
    for path in files:
        data = Path(path).read_bytes()
        (vi,) = graph_inputs(parse_model(data).proto)
        parsed = tuple(d if isinstance(d, int) else None for d in _value_info(vi).shape)
        assert input_dims(data) == parsed, path
    assert input_dims(Path(F.two_inputs(tmp_path / "two.onnx")).read_bytes()) is None
    assert input_dims(b"") is None and input_dims(b"\xff" * 64) is None and input_dims(b"PK\x03\x04 not onnx") is None


def test_the_recorded_versions_are_the_installed_ones(tmp_path, monkeypatch):
    """Every result records the versions that decide its returns; they are read from the
    distributions' folders in one pass, and must be what importlib.metadata says: also for a
    distribution installed twice (the first on the import path wins) under another spelling."""
    import sys
    from importlib import metadata

    from grader.pipeline import RECORDED_DISTRIBUTIONS, package_versions

    versions = package_versions()
    for dist in RECORDED_DISTRIBUTIONS:
        assert versions[dist] == metadata.version(dist), dist
    shadow = tmp_path / "Box2D-0.0.1.dist-info"
    shadow.mkdir()
    (shadow / "METADATA").write_text("Metadata-Version: 2.1\nName: Box2D\nVersion: 0.0.1\n")
    monkeypatch.setattr(sys, "path", [str(tmp_path), *sys.path])
    assert package_versions()["box2d"] == metadata.version("box2d") == "0.0.1"
    assert package_versions()["numpy"] == metadata.version("numpy")
