"""One assignment, one grade on every channel (issue 20): the rubric's parts, the channels, the LMS files.

The parametrised test grades the same hand-ins through every channel (``grade`` and ``grade check``
on the file and on the folder, Jupyter's fragment, the terminal's text, ``grade batch`` with its
grades.csv and Moodle import file, Gradescope's results.json and the site) and asks for the same
points, maximum, band and per-check points everywhere.
"""

from __future__ import annotations

import csv
import io
import json
import shutil
import warnings
from pathlib import Path

import pytest
import site_helpers as S

from grader.cli import main
from grader.result import GradeResult
from grader.scoring.rubric import RubricError, load_rubric

REPO = Path(__file__).resolve().parent.parent
REFERENCE = REPO / "reference" / "models" / "lunarlander_improved.onnx"
EPISODES = 4
BOM = b"\xef\xbb\xbf"


# --- rubrics -----------------------------------------------------------------------------------------
def course_rubric(tmp_path: Path, *, notebook: str | None = None, episodes: int = EPISODES) -> Path:
    """The shipped LunarLander rubric (fewer episodes), optionally with its notebook graded too."""
    folder = tmp_path / "rubric"
    folder.mkdir(parents=True, exist_ok=True)
    path = S.lunar_rubric_with_notebook(folder, use=notebook) if notebook else None
    if path is None:
        (folder / "baselines").mkdir(exist_ok=True)
        shutil.copyfile(REPO / "rubrics" / "baselines" / "lunarlander.json", folder / "baselines" / "lunarlander.json")
        path = folder / "lunarlander.toml"
        path.write_text((REPO / "rubrics" / "lunarlander.toml").read_text().replace('"../reference/', f'"{REPO}/reference/'))
    path.write_text(path.read_text().replace("episodes = 100", f"episodes = {episodes}", 1))
    return path


def test_the_shipped_rubrics_declare_their_parts_and_the_reference_earns_full_marks():
    lunar = load_rubric(REPO / "rubrics" / "lunarlander.toml")
    assert (lunar.part_use("model"), lunar.part_use("notebook"), lunar.max_points) == ("required", None, 10)
    pacman = load_rubric(REPO / "rubrics" / "mspacman.toml")
    assert (pacman.part_use("model"), pacman.part_use("notebook"), pacman.max_points) == ("required", "optional", 21)
    assert pacman.parts.bands == lunar.parts.bands == "model"
    from grader.api import grade

    result = grade(REFERENCE, episodes=EPISODES, write=False)  # the README's first command, shorter
    assert (result.score, result.max_score, result.band) == (10, 10, "solved")


def test_bands_describe_the_episodes_not_the_notebook_points(tmp_path):
    from grader.result import CheckResult, Summary
    from grader.scoring.points import band_of_parts, compose, total

    rubric = load_rubric(course_rubric(tmp_path, notebook="optional"))
    checks = [CheckResult(name=n, passed=True, message="ok", severity="warning") for n in rubric.notebook.points]
    poor = Summary(n=4, mean=-100.0, std=1.0, median=-100.0, iqm=-100.0, ci_low=-101.0, ci_high=-99.0,
                   success_rate=0.0, min=-101.0, max=-99.0)
    parts = compose(rubric, checks=checks, summary=poor, invalid=False)
    assert total(parts) == (4.0, 14.0)  # all notebook points, no episode points
    assert band_of_parts(rubric, parts) == "not yet"  # 0% success is never "lands often"


def test_extra_credit_adds_to_the_score_never_to_the_maximum(tmp_path):
    from grader.result import CheckResult
    from grader.scoring.points import compose, total

    rubric = load_rubric(course_rubric(tmp_path, notebook="extra"))
    assert rubric.max_points == 10
    checks = [CheckResult(name="cells_parse", passed=True, message="ok")]
    parts = compose(rubric, checks=checks, summary=None, invalid=False, handed_in={"notebook"})
    assert total(parts) == (1.0, 10.0)
    assert next(p for p in parts if p.kind == "episodes").detail == "not handed in"


@pytest.mark.parametrize("parts, points, message", [
    ('model = "required"\nnotebook = "optional"', "", "scores no check"),
    ('model = "required"', "\n[notebook.points]\ncells_parse = 1\n", "parts.notebook is not set"),
    ('model = "required"\nnotebook = "sometimes"', "\n[notebook.points]\ncells_parse = 1\n", "parts.notebook"),
])
def test_a_rubric_whose_parts_do_not_add_up_is_refused(tmp_path, parts, points, message):
    path = course_rubric(tmp_path)
    text = path.read_text()
    assert '[parts]\nmodel = "required"\n' in text
    path.write_text(text.replace('[parts]\nmodel = "required"\n', f"[parts]\n{parts}\n") + points)
    with pytest.raises(RubricError, match=message):
        load_rubric(path)


def test_the_site_refuses_a_rubric_that_counts_a_notebook(tmp_path):
    from grader.site.app import SiteConfig, create_app

    for rubric in (REPO / "rubrics" / "mspacman.toml", course_rubric(tmp_path, notebook="optional")):
        config = SiteConfig(db=tmp_path / "s.sqlite", rubric=load_rubric(rubric), data_dir=tmp_path / "d")
        with pytest.raises(RubricError, match="ONNX uploads only"):
            create_app(config)


# --- hand-ins ----------------------------------------------------------------------------------------
def _checkpoint(path: Path) -> None:
    torch = pytest.importorskip("torch")
    torch.save({"actor.weight": torch.zeros(4, 8)}, path)


HANDINS = {
    "reference": lambda d: shutil.copyfile(REFERENCE, d / "model.onnx"),
    "notebook+model": lambda d: (S_notebook(d / "homework.ipynb"), shutil.copyfile(REFERENCE, d / "model.onnx")),
    "model only": lambda d: (d / "model.onnx").write_bytes(S.lunarlander_model_bytes(7)),
    "checkpoint only": lambda d: _checkpoint(d / "policy.pt"),
}


def S_notebook(path: Path) -> None:
    from notebook_fixtures import LUNAR_CELLS, write_notebook

    write_notebook(path, LUNAR_CELLS, markdown="# LunarLander actor-critic")


def _key(result: GradeResult) -> tuple:
    """What must agree on every channel: status, points, maximum, band, each part's points."""
    return (result.status, round(result.score, 6), result.max_score, result.band,
            sorted((p.name, round(p.points, 6), p.max_points) for p in result.parts))


def _named_file(folder: Path) -> Path:
    """The file a student names on the command line: the notebook when there is one, else the model."""
    files = sorted(folder.iterdir())
    return next((f for f in files if f.suffix == ".ipynb"), files[0])


def _cli_json(argv: list[str], capsys) -> GradeResult:
    capsys.readouterr()
    main(argv)
    return GradeResult.from_json(capsys.readouterr().out)


def _channels(folder: Path, rubric: Path, tmp: Path, capsys) -> dict[str, GradeResult]:
    seeds = ",".join(map(str, load_rubric(rubric).grading_seeds()))
    out: dict[str, GradeResult] = {}
    for what, target in (("file", _named_file(folder)), ("folder", folder)):
        out[f"grade {what}"] = _cli_json([str(target), "--rubric", str(rubric), "--no-video", "--json",
                                          "--out", str(tmp / f"g-{what}")], capsys)
        out[f"check {what}"] = _cli_json(["check", str(target), "--rubric", str(rubric), "--seeds", seeds, "--json"],
                                         capsys)
    gs_json = tmp / "results.json"
    main([str(folder), "--rubric", str(rubric), "--no-video", "--out", str(tmp / "gs"), "--gradescope", str(gs_json)])
    out["gradescope"] = GradeResult.from_json((tmp / "gs" / "result.json").read_text())
    out["gradescope results.json"] = json.loads(gs_json.read_text())
    return out


def _batch(folder: Path, rubric: Path, tmp: Path, worksheet: Path) -> tuple[GradeResult | None, dict, dict]:
    out = tmp / "batch"
    assert main(["batch", str(folder.parent), "--rubric", str(rubric), "--roster", str(worksheet), "--out", str(out),
                 "--no-video", "--no-progress", "--reference", str(tmp / "no-references")]) == 0
    reports = list((out / "reports" / folder.name).glob("*/result.json"))
    result = GradeResult.from_json(reports[0].read_text()) if reports else None
    grades = {r["student_id"]: r for r in csv.DictReader(io.StringIO((out / "grades.csv").read_text()))}
    moodle = list(csv.reader(io.StringIO((out / "moodle_grades.csv").read_bytes().decode("utf-8-sig"), newline="")))
    header = moodle[0]
    row = next(r for r in moodle[1:] if r[0] == "Participant 1234567")
    return result, grades[folder.name], dict(zip(header, row))


def _worksheet(path: Path, maximum: str = "100.00") -> Path:
    header = ('Identifier,"Full name","Email address",Status,Grade,"Maximum Grade","Grade can be changed",'
              '"Last modified (submission)","Last modified (grade)","Feedback comments"')
    row = f'"Participant 1234567","Ann Lee",ann@example.org,"Submitted for grading - Not graded",,{maximum},Yes,-,-,'
    path.write_bytes(BOM + "\r\n".join([header, row, ""]).encode())
    return path


def _site(folder: Path, rubric: Path, tmp: Path) -> GradeResult | tuple[int, str]:
    upload = next(f for f in sorted(folder.iterdir()) if f.suffix in (".onnx", ".pt"))
    result = S.grade_on_the_site(rubric, tmp, upload.name, upload.read_bytes())
    if isinstance(result, tuple):
        assert result[0] == 415, result  # refused as not ONNX: what the test compares; anything else is a failure
    return result


@pytest.mark.slow
@pytest.mark.parametrize("notebook", [None, "optional"], ids=["shipped", "with-notebook"])
@pytest.mark.parametrize("handin", list(HANDINS))
def test_every_channel_gives_the_same_points_maximum_band_and_check_points(handin, notebook, tmp_path, capsys):
    from grader.classroom.exports import gradescope_results
    from grader.outputs.console import print_result
    from grader.outputs.report import render_inline_html
    from grader.scoring.points import fmt_points

    rubric = course_rubric(tmp_path, notebook=notebook)
    folder = tmp_path / "class" / "moodle-1234567"
    folder.mkdir(parents=True)
    HANDINS[handin](folder)
    results = _channels(folder, rubric, tmp_path, capsys)
    gs = results.pop("gradescope results.json")
    batch_result, grades_row, moodle_row = _batch(folder, rubric, tmp_path, _worksheet(tmp_path / "worksheet.csv"))
    results["batch"] = batch_result
    expected = _key(results["grade folder"])
    for channel, result in results.items():
        assert _key(result) == expected, channel
    result = results["grade folder"]
    status, score, maximum, band, parts = expected
    # the course's expectations for each hand-in
    if handin in ("reference", "notebook+model"):  # the band says what the agent does: solved
        assert status == "graded" and band == "solved" and maximum == (14 if notebook else 10)
        assert score == (14 if notebook and handin == "notebook+model" else 10)
    if handin == "checkpoint only":
        assert status == "invalid" and "export" in result.error.lower() and "onnx" in result.error.lower()
    # the files of the other channels: grades.csv, Moodle's import (scaled to its maximum of 100), Gradescope
    assert float(grades_row["points"]) == pytest.approx(score, abs=0.005) and float(grades_row["max_points"]) == maximum
    assert float(moodle_row["Grade"]) == pytest.approx(round(score / maximum * 100, 2), abs=0.006)
    assert fmt_points(score, maximum) in moodle_row["Feedback comments"]
    assert gs["score"] == pytest.approx(score) and gs["extra_data"]["max_score"] == maximum
    assert sum(t.get("max_score") or 0 for t in gs["tests"]) == maximum
    assert gradescope_results(result).model_dump(mode="json")["score"] == gs["score"]
    scored = {p.name for p in result.parts if p.kind == "notebook"}
    tests = {t["name"]: t for t in gs["tests"]}
    for c in result.checks:  # a test fails only when its check failed (a warning is not a failure)
        failed = not c.passed and (c.severity == "error" or c.name in scored)
        assert tests[c.name]["status"] == ("failed" if failed else "passed"), c.name
    if notebook and handin != "notebook+model":  # one test for the missing part, not one per notebook check
        assert tests["notebook"]["output"].startswith("not handed in") and "cells_parse" not in tests
    # Jupyter and the terminal show the same numbers
    html = render_inline_html(results["check folder"])
    assert f"{score:.2f}" in html and f"/ {maximum:g} points" in html
    from rich.console import Console

    buf = io.StringIO()
    print_result(results["check folder"], Console(file=buf, width=200, highlight=False))
    text = buf.getvalue()
    assert ("score: " + fmt_points(score, maximum) if status == "graded" else f"({fmt_points(score, maximum)})") in text
    if band:
        assert f"[{band}]" in text
    assert "This was a self-check" in text and "This was a self-check" in html  # what the final grading runs
    # the site: it takes a model only; a rubric counting the notebook is refused; a checkpoint is refused
    if notebook:
        with pytest.raises(RubricError):
            _site(folder, rubric, tmp_path)
    else:
        site = _site(folder, rubric, tmp_path)
        if handin == "checkpoint only":
            code, body = site
            assert code == 415 and result.checks[0].message.split(".")[0] in json.loads(body)["error"]
        else:
            assert _key(site) == expected


# --- hand-ins as courses produce them ----------------------------------------------------------------
def test_grade_check_on_a_notebook_takes_the_model_beside_it(tmp_path, capsys):
    rubric = course_rubric(tmp_path, notebook="optional")
    folder = tmp_path / "hw"
    folder.mkdir()
    S_notebook(folder / "homework.ipynb")
    shutil.copyfile(REFERENCE, folder / "model.onnx")
    result = _cli_json(["check", str(folder / "homework.ipynb"), "--rubric", str(rubric), "--json"], capsys)
    assert result.model is not None and result.score == 14 and "no model.onnx" not in json.dumps(result.warnings)


def test_grade_on_a_class_folder_says_did_you_mean_batch(tmp_path, capsys):
    for name in ("alice", "bob"):
        (tmp_path / "class" / name).mkdir(parents=True)
        (tmp_path / "class" / name / "model.onnx").write_bytes(S.lunarlander_model_bytes(1))
    capsys.readouterr()
    assert main([str(tmp_path / "class")]) == 1
    err = capsys.readouterr().err
    assert "did you mean `grade batch" in " ".join(err.split()) and "2 folders" in err


def test_a_checkpoint_alone_gets_the_export_instructions_in_batch_and_in_the_lms_feedback(tmp_path):
    d = tmp_path / "download"
    folder = d / "Ann Lee_1234567_assignsubmission_file"
    folder.mkdir(parents=True)
    _checkpoint(folder / "policy.pt")
    (d / "Ann Lee_1234567_assignsubmission_onlinetext").mkdir()
    (d / "Ann Lee_1234567_assignsubmission_onlinetext" / "onlinetext.html").write_text("<p>see my file</p>")
    out = tmp_path / "out"
    assert main(["batch", str(d), "--rubric", str(course_rubric(tmp_path)), "--roster",
                 str(_worksheet(tmp_path / "w.csv")), "--out", str(out), "--no-video", "--no-progress",
                 "--reference", str(tmp_path / "none")]) == 0
    problems = (out / "problems.csv").read_text()
    assert "onlinetext" not in problems and "policy.pt" not in problems  # neither is a layout problem
    rows = list(csv.DictReader(io.StringIO((out / "moodle_grades.csv").read_bytes().decode("utf-8-sig"), newline="")))
    feedback = rows[0]["Feedback comments"]
    assert rows[0]["Grade"] == "0.00" and "invalid" in feedback and "torch.onnx.export" in feedback
    grades = list(csv.DictReader(io.StringIO((out / "grades.csv").read_text())))
    assert grades[0]["status"] == "invalid" and "online text handed in (not graded)" in grades[0]["note"]


# --- the LMS files -----------------------------------------------------------------------------------
def _moodle_class(tmp_path: Path) -> Path:
    d = tmp_path / "download"
    (d / "Ann Lee_1234567_assignsubmission_file").mkdir(parents=True)
    shutil.copyfile(REFERENCE, d / "Ann Lee_1234567_assignsubmission_file" / "model.onnx")
    return d


def _batch_lms(tmp_path: Path, d: Path, roster: Path, *extra: str) -> tuple[Path, str]:
    from grader.classroom import batch as B

    out = tmp_path / "out"
    lines: list[str] = []
    original = B._print_summary

    def capture(runner):
        from rich.console import Console

        buf = io.StringIO()
        console = Console(file=buf, width=300, highlight=False, soft_wrap=True)
        B._print_lms_export(console, runner)
        lines.append(buf.getvalue())
        original(runner)

    B._print_summary = capture
    try:
        assert main(["batch", str(d), "--rubric", str(course_rubric(tmp_path)), "--roster", str(roster), "--out",
                     str(out), "--no-video", "--no-progress", "--reference", str(tmp_path / "none"), *extra]) == 0
    finally:
        B._print_summary = original
    return out, "".join(lines)


@pytest.mark.parametrize("raw", [False, True])
def test_moodle_grades_are_scaled_to_the_maximum_grade_unless_raw(tmp_path, raw):
    out, summary = _batch_lms(tmp_path, _moodle_class(tmp_path), _worksheet(tmp_path / "w.csv"),
                              *(["--lms-points", "raw"] if raw else []))
    rows = list(csv.DictReader(io.StringIO((out / "moodle_grades.csv").read_bytes().decode("utf-8-sig"), newline="")))
    assert rows[0]["Grade"] == ("10.00" if raw else "100.00")
    assert "moodle_grades.csv" in summary  # the summary names the import file
    assert ("scaled from the rubric's maximum of 10 to Moodle's Maximum Grade 100" in summary) is not raw
    feedback = rows[0]["Feedback comments"]
    assert "graded: 10 / 10 (solved)" in feedback and "mean return" in feedback and "report: " in feedback


def test_a_long_online_text_cell_does_not_refuse_the_worksheet(tmp_path):
    header = ('Identifier,"Full name","Email address",Status,Grade,"Maximum Grade","Grade can be changed",'
              '"Last modified (submission)","Online text","Last modified (grade)","Feedback comments"')
    long_text = "<p>" + "my training log, " * 9000 + "</p>"  # ~152 KB, over csv's default field limit
    row = (f'"Participant 1234567","Ann Lee",ann@example.org,"Submitted for grading - Not graded",,100.00,Yes,-,'
           f'"{long_text}",-,')
    worksheet = tmp_path / "w.csv"
    worksheet.write_bytes(BOM + "\r\n".join([header, row, ""]).encode())
    out, _ = _batch_lms(tmp_path, _moodle_class(tmp_path), worksheet)
    rows = list(csv.DictReader(io.StringIO((out / "moodle_grades.csv").read_bytes().decode("utf-8-sig"), newline="")))
    assert rows[0]["Grade"] == "100.00" and rows[0]["Online text"] == long_text


def test_two_moodle_entries_of_one_participant_one_is_graded_and_the_other_listed(tmp_path):
    import os

    d = _moodle_class(tmp_path)
    old = d / "Ann Lee_1234567_assignsubmission_file_"  # the same participant from an older download
    old.mkdir()
    (old / "model.onnx").write_bytes(S.lunarlander_model_bytes(3))
    os.utime(old / "model.onnx", (1_000_000_000, 1_000_000_000))
    out, _ = _batch_lms(tmp_path, d, _worksheet(tmp_path / "w.csv"))
    problems = list(csv.DictReader(io.StringIO((out / "problems.csv").read_text())))
    assert any(p["entry"] == old.name + "/" and "only Ann Lee_1234567_assignsubmission_file/ is graded" in p["reason"]
               for p in problems)
    rows = list(csv.DictReader(io.StringIO((out / "moodle_grades.csv").read_bytes().decode("utf-8-sig"), newline="")))
    assert rows[0]["Grade"] == "100.00"  # the newer files: the reference


CANVAS = [
    "Student,ID,SIS User ID,SIS Login ID,Section,RL HW 1 (101),LunarLander-v3: actor-critic exported to ONNX (303),"
    "Current Score,Final Score",
    "    Points Possible,,,,,10.00,100.00,(read only),(read only)",
    '"Lee, Ann",1234,S001,ann@example.org,Section A,9.00,,90.00,90.00',
]


def test_canvas_fills_the_existing_assignment_column_scaled_to_its_points_possible(tmp_path):
    d = tmp_path / "submissions"
    d.mkdir()
    shutil.copyfile(REFERENCE, d / "leeann_1234_5550001_model.onnx")
    gradebook = tmp_path / "gradebook.csv"
    gradebook.write_text("\n".join(CANVAS) + "\n")
    out, summary = _batch_lms(tmp_path, d, gradebook)
    table = list(csv.reader(io.StringIO((out / "canvas_grades.csv").read_text())))
    assert table[0][-1] == "LunarLander-v3: actor-critic exported to ONNX (303)"  # the existing column, not a new one
    assert table[1][-1] == "100.00" and table[2][-1] == "100.00"
    assert "filled the existing assignment column" in summary and "Points Possible 100" in summary
    # named by the option: the first homework's column
    out2, _ = _batch_lms(tmp_path / "again", d, gradebook, "--canvas-column", "RL HW 1 (101)")
    table = list(csv.reader(io.StringIO((out2 / "canvas_grades.csv").read_text())))
    assert table[0][-1] == "RL HW 1 (101)" and table[2][-1] == "10.00"


# --- baselines follow the seeds ----------------------------------------------------------------------
def test_baselines_on_other_seeds_are_refused_where_thresholds_name_them(tmp_path):
    from grader.classroom.batch import run as batch_run  # noqa: F401  (the command refuses through it)

    rubric = tmp_path / "mspacman.toml"
    text = (REPO / "rubrics" / "mspacman.toml").read_text().replace('"../reference/', f'"{REPO}/reference/')
    text = text.replace('baselines = "baselines/', f'baselines = "{REPO}/rubrics/baselines/')
    (tmp_path / "private.seeds").write_text("5000000-5000009\n")
    rubric.write_text(text.replace('grading = "2000000-2000009"', 'grading_file = "private.seeds"'))
    loaded = load_rubric(rubric)
    assert loaded.baselines_match is False and "other seeds" in loaded.baselines_on
    (tmp_path / "class").mkdir()
    assert main(["batch", str(tmp_path / "class"), "--rubric", str(rubric), "--out", str(tmp_path / "o")]) == 1
    with pytest.raises(RubricError, match="grade baselines --rubric"):
        loaded.check_baselines_follow_seeds(command="grade serve")
    shipped = load_rubric(REPO / "rubrics" / "mspacman.toml")
    assert shipped.baselines_match is True and shipped.baselines_on == "the first 10 grading seeds of this rubric"


# --- students can start ------------------------------------------------------------------------------
def test_the_sites_selfcheck_page_gives_a_command_that_needs_no_rubrics_folder(tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from fastapi.testclient import TestClient
    from grader.site.app import SiteConfig, create_app

    pages = {}
    for name, rubric in (("shipped", REPO / "rubrics" / "lunarlander.toml"),
                         ("own", S.write_rubric(tmp_path / "own.toml"))):
        config = SiteConfig(db=tmp_path / f"{name}.sqlite", rubric=load_rubric(rubric), data_dir=tmp_path / name,
                            workers=0)
        with TestClient(create_app(config)) as client:
            pages[name] = client.get("/selfcheck").text
    assert '<pre id="selfcheck-command">grade check model.onnx</pre>' in pages["shipped"]
    assert "grade check model.onnx --task lunarlander --seeds 0-2" in pages["own"]
    for page in pages.values():
        assert "rubrics/" not in page and "wheel" in page and "Linux or macOS" in page


def test_gradescope_refuses_private_seeds_that_its_named_baselines_were_not_computed_on(tmp_path):
    from grader.gradescope.autograder import build_autograder

    (tmp_path / "private.seeds").write_text("5000000-5000009\n")
    with pytest.raises(RubricError, match="grade baselines --rubric"):
        build_autograder(rubric=REPO / "rubrics" / "mspacman.toml", out=tmp_path / "a.zip",
                         grading_seeds_file=tmp_path / "private.seeds")
    assert not (tmp_path / "a.zip").exists()


# --- messages that agree -----------------------------------------------------------------------------
def test_a_model_read_with_its_sidecar_says_so_in_its_check(tmp_path, capsys):
    import onnx

    folder = tmp_path / "alice"
    folder.mkdir()
    model = onnx.load_from_string(REFERENCE.read_bytes())
    onnx.save_model(model, folder / "model.onnx", save_as_external_data=True, all_tensors_to_one_file=True,
                    location="model.onnx.data", size_threshold=0)
    result = _cli_json([str(folder), "--episodes", "2", "--no-video", "--json", "--out", str(tmp_path / "o")], capsys)
    check = next(c for c in result.checks if c.name == "no_external_data")
    assert check.passed and "read from the external-data file beside the model" in check.message
    assert "all weights are inside the file" not in check.message


def test_operator_notes_reach_the_instructor_never_the_student(tmp_path, capsys):
    from rich.console import Console

    from grader.outputs.console import print_result
    from grader.outputs.report import render_html, render_inline_html

    result = _cli_json([str(REFERENCE), "--episodes", "2", "--no-video", "--json", "--out", str(tmp_path / "o")], capsys)
    result.operator_notes = ["the model ran without bubblewrap (test): the host's files visible"]
    student, instructor = io.StringIO(), io.StringIO()
    print_result(result, Console(file=student, width=200))
    print_result(result, Console(file=instructor, width=200), operator=True)
    assert "bubblewrap" not in student.getvalue() and "for the instructor: the model ran without bubblewrap" in instructor.getvalue()
    from grader.classroom.exports import gradescope_results

    for text in (render_inline_html(result), render_html(result), gradescope_results(result).model_dump_json()):
        assert "bubblewrap" not in text


def _two_file_export(folder: Path, model_name: str, data_name: str) -> None:
    """torch's default export (the weights in ``model.onnx.data``), saved under the LMS's names."""
    import onnx

    scratch = folder / ".export"
    scratch.mkdir()
    onnx.save_model(onnx.load_from_string(REFERENCE.read_bytes()), scratch / "model.onnx", save_as_external_data=True,
                    all_tensors_to_one_file=True, location="model.onnx.data", size_threshold=0)
    (scratch / "model.onnx").rename(folder / model_name)
    (scratch / "model.onnx.data").rename(folder / data_name)
    scratch.rmdir()


def test_lms_downloads_of_torchs_two_file_export_are_graded_as_one_model(tmp_path):
    moodle = tmp_path / "moodle"
    moodle.mkdir()
    _two_file_export(moodle, "Ann Lee_1234567_assignsubmission_file_model.onnx",
                     "Ann Lee_1234567_assignsubmission_file_model.onnx.data")
    out, _ = _batch_lms(tmp_path / "m", moodle, _worksheet(tmp_path / "w.csv"))
    rows = list(csv.DictReader(io.StringIO((out / "moodle_grades.csv").read_bytes().decode("utf-8-sig"), newline="")))
    assert rows[0]["Grade"] == "100.00", rows[0]["Feedback comments"]
    canvas = tmp_path / "canvas"
    canvas.mkdir()
    _two_file_export(canvas, "leeann_1234_5550001_model.onnx", "leeann_1234_5550002_model.onnx.data")
    gradebook = tmp_path / "gradebook.csv"
    gradebook.write_text("\n".join(CANVAS) + "\n")
    out, _ = _batch_lms(tmp_path / "c", canvas, gradebook)
    table = list(csv.reader(io.StringIO((out / "canvas_grades.csv").read_text())))
    assert table[2][-1] == "100.00"


def test_canvas_text_and_link_entries_are_read_as_what_they_are(tmp_path):
    from grader.classroom.classdir import scan_class

    d = tmp_path / "submissions"
    d.mkdir()
    shutil.copyfile(REFERENCE, d / "leeann_1234_5550001_model.onnx")
    (d / "leeann_1234_text.html").write_text("<p>my model is attached</p>")
    (d / "kimbo_1235_link.html").write_text('<a href="https://example.org">my repo</a>')
    folder = scan_class(d)
    assert folder.layout == "canvas" and not folder.problems
    assert [b.student for b in folder.bundles] == ["canvas-1234"]
    assert sorted((p.student, p.reason.split(":")[0]) for p in folder.texts) == [
        ("canvas-1234", "Canvas text entry"), ("canvas-1235", "Canvas website URL")]
