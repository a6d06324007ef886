"""Gradescope: the autograder zip, run_autograder in a Gradescope-like folder, and results.json.

The layout follows Gradescope's specification (gradescope-autograders.readthedocs.io/en/latest/specs/):
``ROOT/source`` holds the zip's contents, ``ROOT/submission`` the student's files and
run_autograder writes ``ROOT/results/results.json``. setup.sh's apt/pip steps are not run here:
``GRADESCOPE_GRADE`` points run_autograder at this checkout's grader in the current venv.
"""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import onnx_fixtures as F
import pytest

from grader.classroom.exports import GradescopeResults, gradescope_results
from grader.errors import SetupError
from grader.gradescope.autograder import build_autograder, bundle_rubric, toml_dumps, write_results
from grader.result import CheckResult, EpisodeResult, GradeResult, RubricInfo, Summary
from grader.scoring.rubric import load_rubric

REPO = Path(__file__).resolve().parent.parent
RUBRIC = REPO / "rubrics" / "lunarlander.toml"
REFERENCE = REPO / "reference" / "models" / "lunarlander_improved.onnx"
EPISODES = 5
GRADING_SEEDS = load_rubric(RUBRIC).all_grading_seeds()

# The fields of Gradescope's results.json (top level, tests[], leaderboard[]).
TOP_FIELDS = {"score", "execution_time", "output", "output_format", "test_output_format", "test_name_format",
              "visibility", "stdout_visibility", "extra_data", "tests", "leaderboard"}
TEST_FIELDS = {"score", "max_score", "status", "name", "name_format", "number", "output", "output_format", "tags",
               "visibility", "extra_data"}
VISIBILITIES = {"hidden", "after_due_date", "after_published", "visible"}
FORMATS = {"text", "html", "simple_format", "md", "ansi"}
EXPECTED_ENTRIES = ["baselines/lunarlander.json", "lunarlander.toml", "reference_prints.json", "requirements.lock",
                    "rl_grader-0.1.0-py3-none-any.whl", "run_autograder", "setup.sh"]


@pytest.fixture(scope="module")
def autograder_zip(tmp_path_factory) -> Path:
    return build_autograder(rubric=RUBRIC, out=tmp_path_factory.mktemp("zip") / "autograder.zip")


def validate_results(data: dict) -> GradescopeResults:
    """results.json against the spec: known fields only, valid enums, score = sum of the tests' scores."""
    assert set(data) <= TOP_FIELDS, set(data) - TOP_FIELDS
    assert isinstance(data["score"], (int, float))
    for key in ("visibility", "stdout_visibility"):
        assert data.get(key, "visible") in VISIBILITIES
    for key in ("output_format", "test_output_format", "test_name_format"):
        assert data.get(key, "text") in FORMATS
    assert isinstance(data.get("execution_time", 0), (int, float))
    for t in data["tests"]:
        assert set(t) <= TEST_FIELDS, set(t) - TEST_FIELDS
        assert isinstance(t["name"], str) and t["name"]
        assert t.get("visibility", "visible") in VISIBILITIES
        assert t.get("status", "passed") in ("passed", "failed")
        assert isinstance(t.get("output", ""), str)
        if "score" in t:
            assert t["score"] <= t["max_score"] + 1e-9
    for entry in data.get("leaderboard", []):
        assert set(entry) <= {"name", "value", "order"} and entry.get("order", "desc") in ("asc", "desc")
    assert data["score"] == pytest.approx(sum(t.get("score", 0.0) for t in data["tests"]))
    return GradescopeResults.model_validate(data)


def gradescope_root(tmp_path: Path, zip_path: Path, submission: dict[str, bytes], *, episodes: int = EPISODES) -> Path:
    """A folder laid out like Gradescope's /autograder, the rubric cut to a few episodes."""
    root = tmp_path / "autograder"
    (root / "source").mkdir(parents=True)
    (root / "submission").mkdir()
    (root / "results").mkdir()
    with zipfile.ZipFile(zip_path) as z:
        z.extractall(root / "source")
    rubric = root / "source" / "lunarlander.toml"
    text, n = re.subn(r"(?m)^episodes = \d+$", f"episodes = {episodes}", rubric.read_text())
    assert n == 1
    rubric.write_text(text)
    for rel, data in submission.items():
        (root / "submission" / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / "submission" / rel).write_bytes(data)
    return root


def run_autograder(root: Path, timeout: float = 120) -> tuple[dict, str]:
    env = dict(os.environ, GRADESCOPE_ROOT=str(root), GRADESCOPE_GRADE=f"{sys.executable} -m grader",
               PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run([sys.executable, str(root / "source" / "run_autograder")], env=env, cwd=root,
                          capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return json.loads((root / "results" / "results.json").read_text()), proc.stdout + proc.stderr


def by_name(data: dict) -> dict[str, dict]:
    return {t["name"]: t for t in data["tests"]}


# --- the zip ------------------------------------------------------------------------------------------
def test_zip_holds_exactly_the_autograder(autograder_zip, tmp_path):
    with zipfile.ZipFile(autograder_zip) as z:
        infos = z.infolist()
        names = [i.filename for i in infos]
        assert names == EXPECTED_ENTRIES  # sorted, nothing else at all
        assert {i.date_time for i in infos} == {(1980, 1, 1, 0, 0, 0)}
        modes = {i.filename: (i.external_attr >> 16) & 0o777 for i in infos}
        assert modes["run_autograder"] == modes["setup.sh"] == 0o755 and modes["lunarlander.toml"] == 0o600
        assert modes["baselines/lunarlander.json"] == 0o600  # the rubric and its files: the grader's user only
        assert z.read("run_autograder").startswith(b"#!/usr/bin/env python3\n")
        assert z.read("setup.sh").startswith(b"#!/usr/bin/env bash\n")
        setup = z.read("setup.sh").decode()
        assert "rl_grader-*.whl" in setup and "--require-hashes --no-deps -r \"$LOCK\"" in setup
        # LunarLander's notebook checks read the notebook without running it: the lock without torch
        assert z.read("requirements.lock") == (REPO / "lock" / "grader.txt").read_bytes()
        wheel = zipfile.ZipFile(io.BytesIO(z.read("rl_grader-0.1.0-py3-none-any.whl")))
        z.extractall(tmp_path / "x")
    wheel_names = wheel.namelist()
    assert "grader/gradescope/autograder.py" in wheel_names and "grader/data/mspacman_frames.npz" in wheel_names
    assert all(n.startswith(("grader/", "rl_grader-0.1.0.dist-info/")) for n in wheel_names), \
        [n for n in wheel_names if not n.startswith("grader/")][:5]  # no reference agents, no tests
    metadata = wheel.read("rl_grader-0.1.0.dist-info/METADATA").decode()
    assert "Requires-Dist: onnxruntime" in metadata and "Requires-Dist: torch" not in metadata.split("Provides-Extra")[0]
    bundled = load_rubric(tmp_path / "x" / "lunarlander.toml", materialize=False)
    original = load_rubric(RUBRIC, materialize=False)
    assert bundled.all_grading_seeds() == GRADING_SEEDS and bundled.thresholds() == original.thresholds()
    assert bundled.references == {} and bundled.baselines == "baselines/lunarlander.json"
    assert (tmp_path / "x" / "baselines" / "lunarlander.json").read_bytes() == (REPO / "rubrics/baselines/lunarlander.json").read_bytes()


def test_zip_is_reproducible(autograder_zip, tmp_path):
    again = build_autograder(rubric=RUBRIC, out=tmp_path / "again.zip")
    assert again.read_bytes() == autograder_zip.read_bytes()


def test_cli_builds_with_a_private_seeds_file(cli, tmp_path):
    seeds = tmp_path / "private.seeds"
    seeds.write_text("# private\n777000-777149\n")
    out = tmp_path / "ag" / "autograder.zip"
    r = cli("gradescope", "--rubric", RUBRIC, "--out", out, "--seeds-file", seeds)
    assert r.returncode == 0, r.stderr
    assert "wrote" in r.stdout and "next:" in r.stdout and "Gradescope" in r.stdout
    with zipfile.ZipFile(out) as z:
        assert "lunarlander.seeds" in z.namelist()
        toml = z.read("lunarlander.toml").decode()
        assert 'grading_file = "lunarlander.seeds"' in toml and "1000000" not in toml
        z.extractall(tmp_path / "x")
    assert load_rubric(tmp_path / "x" / "lunarlander.toml").grading_seeds() == list(range(777000, 777100))
    # a bad seeds file is the instructor's error, said in one line
    seeds.write_text("1-2-3\n")
    r = cli("gradescope", "--rubric", RUBRIC, "--out", tmp_path / "bad.zip", "--seeds-file", seeds)
    assert r.returncode == 1 and "private.seeds" in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "bad.zip").exists()


def test_build_errors_say_what_to_do(tmp_path):
    with pytest.raises(SetupError, match="--source"):
        build_autograder(rubric=RUBRIC, out=tmp_path / "a.zip", source=tmp_path)
    broken = tmp_path / "broken"
    (broken / "grader").mkdir(parents=True)
    (broken / "grader" / "__init__.py").write_text("")
    (broken / "pyproject.toml").write_text('[build-system]\nrequires = []\nbuild-backend = "no_such_backend"\n'
                                           '[project]\nname = "rl-grader"\nversion = "0.1.0"\n')
    with pytest.raises(SetupError, match="install"):
        build_autograder(rubric=RUBRIC, out=tmp_path / "b.zip", source=broken)
    assert not (tmp_path / "b.zip").exists()


def test_toml_writer_round_trips_the_rubrics_and_pyproject():
    import tomllib

    for path in [*sorted((REPO / "rubrics").glob("*.toml")), REPO / "pyproject.toml"]:
        data = tomllib.loads(path.read_text())
        assert tomllib.loads(toml_dumps(data)) == data


def test_bundle_keeps_the_mspacman_rubric_and_its_named_baseline():
    bundle = bundle_rubric(REPO / "rubrics" / "mspacman.toml")
    assert set(bundle.files) == {"mspacman.toml", "baselines/mspacman.json", "reference_prints.json"}
    # the bundled rubric resolves its named baseline from the bundled file: zero = the random policy's mean
    assert bundle.rubric.scoring.zero == bundle.rubric.baseline_marks["random"] and bundle.rubric.episodes == 10
    assert 'zero = "random"' in bundle.files["mspacman.toml"].decode()


# --- run_autograder ------------------------------------------------------------------------------------
def test_run_autograder_grades_the_reference_model(autograder_zip, tmp_path):
    root = gradescope_root(tmp_path, autograder_zip, {"model.onnx": REFERENCE.read_bytes()})
    data, log = run_autograder(root)
    gs = validate_results(data)
    graded = GradeResult.from_json((root / "results" / "report" / "result.json").read_text())
    assert graded.status == "graded" and graded.rubric.n_seeds == EPISODES
    assert data["score"] == pytest.approx(graded.score) and data["score"] > 9
    tests = by_name(data)
    assert tests["episode score"]["max_score"] == 10 and tests["episode score"]["score"] == pytest.approx(graded.score)
    # the LunarLander assignment is the model: no notebook test, and no operator note reaches the student
    assert "cells_parse" not in tests and "notebook" not in tests and "bubblewrap" not in json.dumps(data)
    assert tests["episode score"]["visibility"] == "visible"
    assert all(tests[c.name]["status"] == "passed" and tests[c.name]["visibility"] == "visible"
               for c in graded.checks if c.passed)
    # per-episode returns on the hidden seeds: numbered, shown only once the grades are published
    episodes = tests["returns by episode"]
    assert episodes["visibility"] == "after_published" and "episode 5:" in episodes["output"]
    text = json.dumps(data)
    assert not any(str(s) in text for s in GRADING_SEEDS[:EPISODES])
    assert data["stdout_visibility"] == "hidden" and data["output_format"] == "md"
    assert data["output"].startswith(f"**Score {graded.score:g} / 10**") and "report" in data["output"]
    assert [e.name for e in gs.leaderboard][:2] == ["Score", "Mean return"]
    # the instructor's log (stdout, hidden from students) has the returns by seed
    assert f"seed {GRADING_SEEDS[0]}:" in log
    assert (root / "results" / "report" / "report.html").is_file()
    # the shipped reference handed in unchanged: graded as usual (the rubric's [duplicates] default), flagged
    # where the instructor looks, although the zip ships no reference model, only its weight prints
    assert [(f.kind, f.other) for f in graded.flags] == [("identical", "reference:lunarlander_improved.onnx")]
    assert "lunarlander_improved.onnx" in tests["duplicate check"]["output"]
    assert tests["duplicate check"]["status"] == "failed" and tests["duplicate check"].get("score") is None


def test_run_autograder_random_bytes_score_zero_out_of_the_rubric(autograder_zip, tmp_path):
    root = gradescope_root(tmp_path, autograder_zip, {"sub/model.onnx": os.urandom(4096)})
    data, _ = run_autograder(root)
    validate_results(data)
    assert data["score"] == 0
    tests = by_name(data)
    assert tests["episode score"]["score"] == 0 and tests["episode score"]["max_score"] == 10
    assert tests["parses"]["status"] == "failed" and "ONNX" in tests["parses"]["output"]
    assert "How to fix" in tests["parses"]["output"] and "returns by episode" not in tests
    assert data["output"].startswith("**Invalid submission: 0 / 10**")


@pytest.mark.parametrize("files, expected", [
    ({}, "no .onnx model"),
    ({"a.onnx": b"x", "b.onnx": b"y"}, "2 .onnx files"),
    ({"model.onnx.data": b"x"}, "only an external-data file"),
])
def test_run_autograder_without_one_model(autograder_zip, tmp_path, files, expected):
    root = gradescope_root(tmp_path, autograder_zip, files)
    data, _ = run_autograder(root)
    validate_results(data)
    assert data["score"] == 0 and expected in data["output"]
    failed = [t for t in data["tests"] if expected in t.get("output", "")]
    assert failed and failed[0]["status"] == "failed"
    assert sum(t.get("max_score", 0) for t in data["tests"]) == 10  # 0 out of the rubric's maximum


def test_run_autograder_refuses_links(autograder_zip, tmp_path):
    root = gradescope_root(tmp_path, autograder_zip, {})
    (root / "submission" / "model.onnx").symlink_to(root / "source" / "lunarlander.toml")
    data, _ = run_autograder(root)
    assert data["score"] == 0 and any("link" in t.get("output", "") for t in data["tests"])


def test_run_autograder_picks_model_onnx_and_survives_a_broken_grader(autograder_zip, tmp_path):
    root = gradescope_root(tmp_path, autograder_zip, {"model.onnx": b"junk", "old/other.onnx": b"junk"})
    env = dict(os.environ, GRADESCOPE_ROOT=str(root), GRADESCOPE_GRADE=f"{sys.executable} -c 'raise SystemExit(3)'")
    proc = subprocess.run([sys.executable, str(root / "source" / "run_autograder")], env=env, capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0 and "grading" in proc.stdout
    data = json.loads((root / "results" / "results.json").read_text())
    validate_results(data)
    assert data["score"] == 0 and data["tests"][0]["max_score"] == 10 and "exit status 3" in data["output"]


# --- grade --gradescope FILE and the builder ------------------------------------------------------------
def test_grade_writes_gradescope_results(cli, tmp_path):
    model = F.mlp(tmp_path / "model.onnx")
    out = tmp_path / "results.json"
    r = cli(model, "--rubric", RUBRIC, "--episodes", "3", "--no-video", "--out", tmp_path / "g", "--gradescope", out)
    assert r.returncode == 0, r.stderr
    data = json.loads(out.read_text())
    validate_results(data)
    graded = GradeResult.from_json((tmp_path / "g" / "result.json").read_text())
    assert data["score"] == pytest.approx(graded.score)
    assert by_name(data)["episode score"]["max_score"] == 10
    # an invalid file: 0 out of the rubric's points, and the file says why
    (tmp_path / "bad.onnx").write_bytes(b"\x00" * 100)
    r = cli(tmp_path / "bad.onnx", "--rubric", RUBRIC, "--no-video", "--gradescope", out)
    assert r.returncode == 2
    data = json.loads(out.read_text())
    validate_results(data)
    assert data["score"] == 0 and by_name(data)["episode score"]["max_score"] == 10
    assert by_name(data)["parses"]["status"] == "failed"


def _notebook_result(status: str) -> GradeResult:
    from grader.result import ScorePart

    seeds = [7301955, 7301956]
    graded = status == "graded"
    return GradeResult(
        submission="hw.ipynb", task="lunarlander", status=status, score=7.5 if graded else 0.0, max_score=14,
        episodes=[EpisodeResult(seed=s, return_=100.0, length=10) for s in seeds],
        summary=Summary(n=2, mean=100, std=0, median=100, iqm=100, ci_low=100, ci_high=100, success_rate=0, min=100, max=100),
        rubric=RubricInfo(id="r", path="r.toml", sha256="x", seed_set="grading", n_seeds=2, statistic="mean",
                          zero_at=0, full_at=200),
        checks=[CheckResult(name="cells_parse", passed=True, message="ok", severity="warning"),
                CheckResult(name="actor_input", passed=True, message="ok", severity="warning"),
                CheckResult(name="actor_output", passed=False, message=f"bad on seed {seeds[0]}", hint="fix it",
                            severity="warning")],
        parts=[ScorePart(name="cells_parse", kind="notebook", points=1.0 if graded else 0.0, max_points=1),
               ScorePart(name="actor_input", kind="notebook", points=1.0 if graded else 0.0, max_points=1),
               ScorePart(name="actor_output", kind="notebook", points=0.0, max_points=2),
               ScorePart(name="done", kind="notebook", points=0.0, max_points=0),
               ScorePart(name="episodes", kind="episodes", points=5.5 if graded else 0.0, max_points=10)],
        error=None if graded else "the model is missing")


def test_builder_takes_every_part_from_the_one_score():
    gs = gradescope_results(_notebook_result("graded"))
    data = json.loads(gs.model_dump_json(exclude_none=True))
    validate_results(data)
    tests = by_name(data)
    assert data["score"] == 7.5 and tests["episode score"]["score"] == 5.5 and tests["episode score"]["max_score"] == 10
    assert tests["actor_output"]["status"] == "failed" and tests["actor_output"]["score"] == 0
    assert "7301955" not in gs.model_dump_json() and "**Score 7.5 / 14**" in data["output"]
    invalid = json.loads(gradescope_results(_notebook_result("invalid")).model_dump_json(exclude_none=True))
    validate_results(invalid)
    assert invalid["score"] == 0 and all(t.get("score", 0) == 0 for t in invalid["tests"])
    assert by_name(invalid)["episode score"]["max_score"] == 10 and "the model is missing" in invalid["output"]
    assert sum(t.get("max_score", 0) for t in invalid["tests"]) == 14


def test_episode_table_visibility_and_markdown_safety(tmp_path, monkeypatch):
    result = _notebook_result("graded")
    result.warnings = ["**bold** <script>alert(1)</script>"]
    monkeypatch.setenv("RL_GRADER_GRADESCOPE_EPISODES", "none")
    gs = write_results(result, tmp_path / "r.json")
    assert "returns by episode" not in by_name(json.loads((tmp_path / "r.json").read_text()))
    gs = write_results(result, tmp_path / "r.json", episode_table="after_due_date")
    assert by_name(json.loads(gs.model_dump_json()))["returns by episode"]["visibility"] == "after_due_date"
    # student-controlled text sits in an indented code block: Markdown shows it, never renders it
    assert "\n    **bold** <script>" in gs.output
    with pytest.raises(SetupError):
        write_results(result, tmp_path / "r.json", episode_table="visible")


def test_run_autograder_grades_a_notebook_with_its_model(tmp_path):
    from notebook_fixtures import LUNAR_CELLS, write_notebook
    from site_helpers import lunar_rubric_with_notebook

    zip_path = build_autograder(rubric=lunar_rubric_with_notebook(tmp_path / "rubric"), out=tmp_path / "nb.zip")
    write_notebook(tmp_path / "hw.ipynb", LUNAR_CELLS, markdown="# LunarLander actor-critic")
    root = gradescope_root(tmp_path, zip_path, {"hw.ipynb": (tmp_path / "hw.ipynb").read_bytes(),
                                                "model.onnx": REFERENCE.read_bytes()})
    data, log = run_autograder(root)
    validate_results(data)
    tests = by_name(data)
    assert tests["cells_parse"]["score"] == 1 and tests["actor_output"]["max_score"] == 2
    assert tests["episode score"]["score"] == 10 and tests["episode score"]["max_score"] == 10
    assert data["score"] == 14 and data["output"].startswith("**Score 14 / 14**")


def test_run_autograder_gives_a_checkpoint_alone_the_export_instructions(autograder_zip, tmp_path):
    """A .pt handed in alone is graded as the model the student meant: invalid, with how to export it."""
    torch = pytest.importorskip("torch")
    buf = io.BytesIO()
    torch.save({"actor.weight": torch.zeros(4, 8)}, buf)
    root = gradescope_root(tmp_path, autograder_zip, {"policy.pt": buf.getvalue()})
    data, _ = run_autograder(root)
    validate_results(data)
    assert data["score"] == 0 and data["output"].startswith("**Invalid submission: 0 / 10**")
    parses = by_name(data)["parses"]
    assert parses["status"] == "failed" and "PyTorch checkpoint" in parses["output"]
    assert "torch.onnx.export(model.eval(), torch.zeros(1, 8), 'model.onnx', external_data=False)" in parses["output"]
