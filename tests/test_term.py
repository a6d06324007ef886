"""A whole term: deadlines and late work, extensions, overrides, the feedback zips, ranking, the final evaluation."""

from __future__ import annotations

import csv
import datetime as _dt
import io
import json
import shutil
import zipfile
from pathlib import Path

import pytest

from benchmarks import classgen as g
from grader.classroom.gradebook import Gradebook
from grader.cli import main
from grader.result import GradeResult
from grader.scoring import deadline as D

REPO = Path(__file__).resolve().parent.parent
REFERENCE = REPO / "reference" / "models" / "lunarlander_improved.onnx"
BOM = b"\xef\xbb\xbf"
MSK = _dt.timezone(_dt.timedelta(hours=3))

DEADLINE = """
[deadline]
due = "2025-12-01T23:59:00+03:00"
late_penalty_per_day = 0.1
late_max_days = 5
timezone = "Europe/Moscow"
extensions_file = "extensions.csv"
"""

# Moodle 4.x grading worksheet: "Last modified (submission)" in the site's zone, without an offset.
WORKSHEET = [
    ('Identifier,"Full name","Email address",Status,Grade,"Maximum Grade","Grade can be changed",'
     '"Last modified (submission)","Last modified (grade)","Feedback comments"'),
    ('"Participant 1234567","Иван Петров",ivan@example.org,"Submitted for grading - Not graded",,10.00,Yes,'
     '"Monday, 1 December 2025, 10:00 PM",-,'),
    ('"Participant 1234568","Doe_Jane",jane@example.org,"Submitted for grading - Not graded",,10.00,Yes,'
     '"Wednesday, 3 December 2025, 10:00 AM",-,'),
    ('"Participant 1234569","Eve Adams",eve@example.org,"Submitted for grading - Not graded",,10.00,Yes,'
     '"Tuesday, 2 December 2025, 11:00 AM",-,'),
    ('"Participant 1234570","Max Mustermann",max@example.org,"Submitted for grading - Not graded",,10.00,Yes,'
     '"Friday, 12 December 2025, 9:00 AM",-,'),
]
FOLDERS = {"1234567": "Иван Петров", "1234568": "Doe Jane", "1234569": "Eve Adams", "1234570": "Max Mustermann"}


def rubric_with_deadline(root: Path, extra: str = DEADLINE, *, rubric_id: str = "ll-term") -> Path:
    path = g.lunarlander_rubric(root / "term.toml", episodes=3, rubric_id=rubric_id)
    path.write_text(path.read_text().replace("full = 200.0", "full = 100.0") + extra)  # both models earn 10
    (root / "extensions.csv").write_text("student_id,extension\nmoodle-1234569,2\n")
    return path


def read_csv_bytes(data: bytes) -> list[list[str]]:
    return list(csv.reader(io.StringIO(data.decode("utf-8-sig"), newline="")))


def grades(out: Path) -> dict[str, dict]:
    with open(out / "grades.csv", newline="", encoding="utf-8") as f:
        return {r["student_id"]: r for r in csv.DictReader(f)}


def batch(*args) -> int:
    return main(["batch", *map(str, args), "--no-video", "--no-progress"])


# --- lateness, unit by unit ---------------------------------------------------------------------------
def deadline(**kw) -> D.Deadline:
    return D.Deadline(**({"due": "2025-12-01T23:59:00+03:00", "late_penalty_per_day": 0.1, "late_max_days": 5} | kw))


@pytest.mark.parametrize("submitted, days", [
    ("2025-12-01T23:59:00+03:00", 0),       # at the deadline: on time
    ("2025-12-02T00:00:00+03:00", 1),       # a minute late: one started day
    ("2025-12-02T23:59:00+03:00", 1),       # exactly a day late
    ("2025-12-03T00:00:00+03:00", 2),
    ("2025-12-01T21:30:00+00:00", 1),       # another zone: 00:30 in Moscow
])
def test_started_days_late(submitted, days):
    late = D.lateness(deadline(), D.parse_iso(submitted, where="t", default_tz=None), source="test")
    assert late.days_late == days
    assert D.late_points(late, earned=10, maximum=10) == pytest.approx(-days * 1.0)


def test_past_the_limit_earns_nothing_and_says_why():
    late = D.lateness(deadline(), _dt.datetime(2025, 12, 12, 9, 0, tzinfo=MSK), source="test")
    assert late.over_limit and late.days_late == 11
    assert D.late_points(late, earned=7.5, maximum=10) == -7.5
    assert "earns 0 points" in late.describe() and "5 days" in late.describe()


def test_penalty_never_takes_the_total_below_zero():
    late = D.lateness(deadline(late_penalty_per_day=0.5), _dt.datetime(2025, 12, 3, tzinfo=MSK), source="t")
    assert D.late_points(late, earned=3.0, maximum=10) == -3.0


def test_extensions_in_days_or_as_a_new_deadline(tmp_path):
    f = tmp_path / "ext.csv"
    f.write_text("# granted by email\nstudent_id,extension\nalice,2\nbob,2025-12-10T12:00:00\n")
    ext = D.read_extensions(f, tz=MSK)
    sub = _dt.datetime(2025, 12, 3, 12, 0, tzinfo=MSK)
    assert D.lateness(deadline(), sub, source="t", extension=ext["alice"]).days_late == 0
    assert D.lateness(deadline(), sub, source="t", extension=ext["bob"]).days_late == 0
    assert D.lateness(deadline(), sub, source="t").days_late == 2
    f.write_text("alice,2\nalice,3\n")
    with pytest.raises(D.DeadlineError, match="two extensions"):
        D.read_extensions(f, tz=MSK)


def test_moodle_time_format_is_read_in_the_sites_zone():
    from zoneinfo import ZoneInfo

    t = D.parse_time("Monday, 2 December 2026, 10:15 AM", where="w", tz=ZoneInfo("Europe/Moscow"))
    assert t == _dt.datetime(2026, 12, 2, 10, 15, tzinfo=ZoneInfo("Europe/Moscow"))
    assert D.parse_time("-", where="w", tz=MSK) is None
    with pytest.raises(D.DeadlineError, match="English"):
        D.parse_time("понедельник, 2 декабря 2026, 10:15", where="w", tz=MSK)


def test_a_due_time_without_offset_is_refused(tmp_path):
    from grader.scoring.rubric import RubricError, load_rubric

    path = g.lunarlander_rubric(tmp_path / "r.toml")
    path.write_text(path.read_text() + '\n[deadline]\ndue = "2025-12-01T23:59:00"\n')
    with pytest.raises(RubricError, match="offset"):
        load_rubric(path)


def test_the_deadline_is_not_in_the_fingerprint(tmp_path):
    from grader.scoring.rubric import load_rubric

    with_deadline = load_rubric(rubric_with_deadline(tmp_path, rubric_id="ll-test"))
    (tmp_path / "plain.toml").write_text(with_deadline.path.read_text().split("[deadline]")[0])
    plain = load_rubric(tmp_path / "plain.toml")
    assert plain.fingerprint() == with_deadline.fingerprint()


# --- a Moodle class with late work and an extension, through `grade batch` ------------------------------
@pytest.fixture(scope="module")
def moodle_term(tmp_path_factory):
    root = tmp_path_factory.mktemp("moodle-term")
    d = root / "download"
    models = {"1234567": REFERENCE.read_bytes(), "1234568": g.heuristic_model(0), "1234569": g.heuristic_model(0),
              "1234570": REFERENCE.read_bytes()}
    for pid, name in FOLDERS.items():
        g.write(d / f"{name}_{pid}_assignsubmission_file" / "model.onnx", models[pid])
    worksheet = root / "Grades-RL-HW3.csv"
    worksheet.write_bytes(BOM + ("\r\n".join(WORKSHEET) + "\r\n").encode())
    rubric = rubric_with_deadline(root)
    out = root / "out"
    assert batch(d, "--rubric", rubric, "--roster", worksheet, "--out", out, "--reference", root) == 0
    return root, d, worksheet, rubric, out


def test_moodle_late_penalties_are_exact_on_every_export(moodle_term):
    out = moodle_term[-1]
    by = grades(out)
    ivan, jane, eve, mx = (by[f"moodle-{p}"] for p in ("1234567", "1234568", "1234569", "1234570"))
    assert float(ivan["graded_points"]) == 10 and ivan["late_penalty"] == "0" and ivan["days_late"] == "0"
    assert jane["late_penalty"] == "-2" and jane["days_late"] == "2" and float(jane["points"]) == 8
    assert eve["late_penalty"] == "0" and eve["days_late"] == "0" and float(eve["points"]) == 10  # extension
    assert mx["points"] == "0" and mx["days_late"] == "11" and mx["late_penalty"] == "-10"
    assert "late" in jane["note"] and jane["submitted"].startswith("2025-12-03T10:00")
    # the LMS file: the grade with the penalty, the feedback saying why
    table = read_csv_bytes((out / "moodle_grades.csv").read_bytes())
    header = table[0]
    rows = {r[0]: r for r in table[1:]}
    grade, fb = header.index("Grade"), header.index("Feedback comments")
    assert rows["Participant 1234568"][grade] == "8.00"
    assert "2 days late" in rows["Participant 1234568"][fb] and "late -2" in rows["Participant 1234568"][fb]
    assert rows["Participant 1234570"][grade] == "0.00" and "earns 0 points" in rows["Participant 1234570"][fb]
    assert "extension" in rows["Participant 1234569"][fb]
    # the report folder: result.json and Gradescope's results.json carry the late part
    gb = Gradebook(out / "gradebook.sqlite")
    a = gb.best_by_student("ll-term")["moodle-1234568"]
    result = a.result()
    late = next(p for p in result.parts if p.kind == "late")
    assert late.points == -2 and result.score == 8 and result.late.days_late == 2
    gs = json.loads((out / a.report_path / "results.json").read_text())
    assert gs["score"] == 8 and any(t["name"] == "late penalty" and t["score"] == -2 for t in gs["tests"])
    assert sum(t.get("score") or 0 for t in gs["tests"]) == pytest.approx(gs["score"])
    report = (out / a.report_path / "report.html").read_text()
    assert "late −2.00" in report and "2 days late" in report
    html = (out / "class.html").read_text()
    assert "2 d late" in html


def test_an_extension_granted_later_recomposes_the_grade(moodle_term, tmp_path):
    root, d, worksheet, rubric, out = moodle_term
    copy = tmp_path / "out"
    shutil.copytree(out, copy)
    (root / "extensions.csv").write_text("student_id,extension\nmoodle-1234569,2\nmoodle-1234568,1\n")
    try:
        assert batch(d, "--rubric", rubric, "--roster", worksheet, "--out", copy, "--reference", root) == 0
    finally:
        (root / "extensions.csv").write_text("student_id,extension\nmoodle-1234569,2\n")
    jane = grades(copy)["moodle-1234568"]
    assert jane["days_late"] == "1" and jane["late_penalty"] == "-1" and float(jane["points"]) == 9


def test_ties_on_points_break_on_the_statistic(moodle_term):
    out = moodle_term[-1]
    gb = Gradebook(out / "gradebook.sqlite")
    best = gb.best_by_student("ll-term")
    ivan, eve = best["moodle-1234567"].result(), best["moodle-1234569"].result()
    assert ivan.score == eve.score == 10 and ivan.summary.mean != eve.summary.mean
    html = (out / "class.html").read_text()
    board = html[html.index("<h2>Leaderboard</h2>"):html.index("</table>", html.index("<h2>Leaderboard</h2>"))]
    first, second = ("moodle-1234567", "moodle-1234569") if ivan.summary.mean > eve.summary.mean else \
        ("moodle-1234569", "moodle-1234567")
    assert board.index(first) < board.index(second)
    assert f"[{ivan.summary.ci_low:.1f}, {ivan.summary.ci_high:.1f}]" in board  # the 95% interval is shown


def test_feedback_zip_in_moodles_layout(moodle_term):
    out = moodle_term[-1]
    with zipfile.ZipFile(out / "feedback_moodle.zip") as z:
        names = sorted(z.namelist())
        assert names == sorted(f"{n.replace('_', ' ')}_{p}_assignsubmission_file_/{f}"
                               for p, n in FOLDERS.items() for f in ("feedback.txt", "report.html"))
        for name in names:
            # Moodle >= 4.1: each path part split on "_" into at most 5: fullname, participant id, plugin
            # type and name; the participant id must be one of the assignment's
            info = name.split("/")[0].split("_", 4)
            assert len(info) >= 4 and info[1] in FOLDERS and (info[2], info[3]) == ("assignsubmission", "file")
            # Moodle 3.1 - 4.0: the whole path split on "_" into 5, the file name after the fourth "_"
            old = ("/import/" + name).split("_", 4)
            assert len(old) == 5 and old[1] in FOLDERS and old[3] == "file" and old[4].lstrip("/") in (
                "feedback.txt", "report.html")
        text = z.read("Doe Jane_1234568_assignsubmission_file_/feedback.txt").decode()
        assert "8 / 10" in text and "2 days late" in text
        report = z.read("Doe Jane_1234568_assignsubmission_file_/report.html").decode()
    seeds = [e.seed for e in Gradebook(out / "gradebook.sqlite").best_by_student("ll-term")["moodle-1234568"].result().episodes]
    assert not any(f"seed {s}" in report for s in seeds) and "<video" not in report  # the hidden-seed policy
    with zipfile.ZipFile(out / "feedback_reports.zip") as z:
        assert "moodle-1234568/report.html" in z.namelist() and "moodle-1234568/feedback.txt" in z.namelist()
        assert not any(n.endswith("result.json") for n in z.namelist())


# --- overrides ----------------------------------------------------------------------------------------
def test_an_override_survives_a_regrade_and_reaches_the_lms(moodle_term, tmp_path):
    root, d, worksheet, rubric, out = moodle_term
    copy = tmp_path / "out"
    shutil.copytree(out, copy)
    overrides = tmp_path / "overrides.csv"
    overrides.write_text("student_id,points,comment\nmoodle-1234570,5,\"Medical certificate, half marks\"\n")
    assert batch(d, "--rubric", rubric, "--roster", worksheet, "--out", copy, "--reference", root,
                 "--overrides", overrides) == 0
    assert batch(d, "--rubric", rubric, "--roster", worksheet, "--out", copy, "--reference", root, "--force") == 0
    mx = grades(copy)["moodle-1234570"]
    assert mx["points"] == "5" and mx["graded_points"] == "0" and mx["override_comment"] == "Medical certificate, half marks"
    assert "(overrides file overrides.csv)" in mx["override_by"]
    table = read_csv_bytes((copy / "moodle_grades.csv").read_bytes())
    row = next(r for r in table if r[0] == "Participant 1234570")
    assert row[table[0].index("Grade")] == "5.00" and "Medical certificate" in row[table[0].index("Feedback comments")]
    assert "Medical certificate" in (copy / "class.html").read_text()
    with zipfile.ZipFile(copy / "feedback_moodle.zip") as z:
        assert "Medical certificate" in z.read("Max Mustermann_1234570_assignsubmission_file_/feedback.txt").decode()


def test_an_override_is_flagged_when_the_grade_under_it_changes(tmp_path):
    gb = Gradebook(tmp_path / "gb.sqlite")
    o = gb.set_override("s1", "r", 7.0, "regrade request", set_by="me", graded_points=4.0)
    assert o.drift(4.0) == "" and "changed from 4.00 to 6.00" in o.drift(6.0)
    again = gb.set_override("s1", "r", 7.0, "regrade request", set_by="someone else", graded_points=6.0)
    assert again.set_by == "me" and again.set_at == o.set_at  # the same override: its author and date kept
    assert gb.clear_override("s1", "r") and gb.overrides("r") == {}


def test_bad_overrides_file_stops_the_run_before_grading(tmp_path, capsys):
    d = tmp_path / "class"
    g.write(d / "s1.onnx", g.random_mlp(1))
    rubric = g.lunarlander_rubric(tmp_path / "r.toml")
    bad = tmp_path / "o.csv"
    for text, why in (("s1,11,too much\n", "outside 0..10"), ("s1,5,\n", "needs a comment"), ("s1,five,x\n", "not a number")):
        bad.write_text(text)
        assert batch(d, "--rubric", rubric, "--out", tmp_path / "out", "--overrides", bad) == 1
        assert why in capsys.readouterr().err
    assert not (tmp_path / "out" / "gradebook.sqlite").exists()


# --- Canvas: the _LATE_ flag ---------------------------------------------------------------------------
CANVAS = [
    "Student,ID,SIS User ID,SIS Login ID,Section,RL Homework (202)",
    "    Points Possible,,,,,10.00",
    '"Petrov, Ivan",1234,S001,ivan@example.org,Section A,',
    '"O\'Brien, Pat",1235,S002,pbrien,Section A,',
]


def test_canvas_late_flag_costs_one_started_day(tmp_path):
    d = tmp_path / "submissions"
    g.write(d / "petrovivan_1234_5550001_model.onnx", REFERENCE.read_bytes())
    g.write(d / "obrienpat_LATE_1235_5550002_model-1.onnx", REFERENCE.read_bytes())
    gradebook = tmp_path / "canvas.csv"
    gradebook.write_text("\n".join(CANVAS) + "\n")
    rubric = rubric_with_deadline(tmp_path)
    out = tmp_path / "out"
    assert batch(d, "--rubric", rubric, "--roster", gradebook, "--out", out, "--reference", tmp_path) == 0
    by = grades(out)
    assert by["canvas-1234"]["late_penalty"] == "0" and float(by["canvas-1234"]["points"]) == 10
    assert by["canvas-1234"]["days_late"] == "0" and by["canvas-1235"]["days_late"] == "1"
    assert by["canvas-1235"]["late_penalty"] == "-1" and float(by["canvas-1235"]["points"]) == 9
    table = read_csv_bytes((out / "canvas_grades.csv").read_bytes())
    col = table[0].index("RL Homework (202)") if "RL Homework (202)" in table[0] else len(table[0]) - 1
    assert {r[1]: r[col] for r in table[2:]} == {"1234": "10.00", "1235": "9.00"}
    assert not (out / "feedback_moodle.zip").exists() and (out / "feedback_reports.zip").exists()


def test_file_time_is_the_last_resort(tmp_path):
    import os

    d = tmp_path / "class"
    g.write(d / "s1.onnx", REFERENCE.read_bytes())
    late = _dt.datetime(2025, 12, 2, 12, 0, tzinfo=MSK).timestamp()
    os.utime(d / "s1.onnx", (late, late))
    rubric = rubric_with_deadline(tmp_path)
    out = tmp_path / "out"
    assert batch(d, "--rubric", rubric, "--out", out, "--reference", tmp_path) == 0
    s1 = grades(out)["s1"]
    assert s1["days_late"] == "1" and s1["late_penalty"] == "-1"
    assert "file time" in GradeResult.from_json(
        (out / Gradebook(out / "gradebook.sqlite").best_by_student("ll-term")["s1"].report_path / "result.json").read_text()
    ).late.source


# --- the final evaluation ------------------------------------------------------------------------------
def final_rubric(root: Path, choose: str) -> Path:
    path = g.lunarlander_rubric(root / "term.toml", episodes=3, rubric_id="ll-term")
    path.write_text(path.read_text() + f'\n[final]\nseeds = "5000-5099"\nepisodes = 3\nchoose = "{choose}"\n')
    return path


@pytest.fixture(scope="module")
def term_with_two_downloads(tmp_path_factory):
    root = tmp_path_factory.mktemp("final")
    d = root / "class"
    g.write(d / "s1.onnx", g.heuristic_model(0))
    g.write(d / "s2.onnx", REFERENCE.read_bytes())
    rubric = final_rubric(root, "last")
    out = root / "out"
    assert batch(d, "--rubric", rubric, "--out", out, "--reference", root) == 0
    g.write(d / "s1.onnx", g.random_mlp(3))  # the second download: s1 handed in a worse model later
    assert batch(d, "--rubric", rubric, "--out", out, "--reference", root) == 0
    shutil.rmtree(d)  # the class folder is gone by the end of the term: the final evaluation needs none
    return root, rubric, out


def final(*args) -> int:
    return main(["final", *map(str, args), "--no-video", "--no-progress"])


def test_final_evaluation_on_fresh_seeds_of_the_last_submission(term_with_two_downloads):
    root, rubric, out = term_with_two_downloads
    term = grades(out)
    assert final(out, "--rubric", rubric, "--reference", root) == 0
    gb = Gradebook(out / "gradebook.sqlite")
    finals = gb.best_by_student("ll-term.final")
    terms = gb.best_by_student("ll-term")
    assert set(finals) == {"s1", "s2"}
    for sid in ("s1", "s2"):
        r = finals[sid].result()
        assert [e.seed for e in r.episodes] == [5000, 5001, 5002] and r.rubric.n_seeds == 3
    # s1's last upload (the random policy), not its best: the same bytes as its latest term attempt
    last = max((a for a in gb.attempts("s1", rubric_id="ll-term")), key=lambda a: a.id)
    assert finals["s1"].sha256 == last.sha256 != terms["s1"].sha256
    s2_term, s2_final = terms["s2"].result(), finals["s2"].result()
    assert [e.return_ for e in s2_final.episodes] != [e.return_ for e in s2_term.episodes]  # new returns
    by = grades(out / "final")
    assert set(by) == {"s1", "s2"} and float(by["s1"]["points"]) == pytest.approx(finals["s1"].score, abs=0.005)
    assert grades(out) == term  # the term's exports are left as they were
    html = (out / "final" / "class.html").read_text()
    assert "final evaluation" in html and 'href="../class.html"' in html
    assert (out / "final" / "feedback_reports.zip").is_file()
    assert final(out, "--rubric", rubric, "--reference", root) == 0  # again: nothing to grade, the same grades
    assert grades(out / "final") == by


def test_final_evaluation_of_the_best_submission(term_with_two_downloads, tmp_path):
    root, _, out = term_with_two_downloads
    copy = tmp_path / "out"
    shutil.copytree(out, copy)
    rubric = final_rubric(tmp_path, "best")
    assert final(copy, "--rubric", rubric, "--reference", root, "--force") == 0
    gb = Gradebook(copy / "gradebook.sqlite")
    assert gb.best_by_student("ll-term.final")["s1"].sha256 == gb.best_by_student("ll-term")["s1"].sha256


def test_final_thresholds_follow_the_final_seeds(term_with_two_downloads, tmp_path, capsys):
    """A threshold naming a baseline (zero = "random"): the term's baselines were computed on the
    term's seeds, so `grade final` refuses until `grade baselines --final` computes them on the final
    seeds; then the final's zero is the random policy's mean on those seeds."""
    root, _, out = term_with_two_downloads
    copy = tmp_path / "out"
    shutil.copytree(out, copy)
    rubric = final_rubric(tmp_path, "last")
    text = rubric.read_text().replace("zero = -400.0", 'zero = "random"')
    rubric.write_text(text.replace("[seeds]", 'baselines = "baselines/term.json"\n[seeds]', 1))
    assert main(["baselines", "--rubric", str(rubric), "--workers", "1"]) == 0  # on the term's 3 seeds
    capsys.readouterr()
    assert final(copy, "--rubric", rubric, "--reference", root) == 1
    assert "grade baselines --rubric term.toml --final" in " ".join(capsys.readouterr().err.split())
    rubric.write_text(rubric.read_text() + 'baselines = "baselines/final.json"\n')  # in the [final] table
    assert main(["baselines", "--rubric", str(rubric), "--final", "--workers", "1"]) == 0
    final_file = json.loads((tmp_path / "baselines" / "final.json").read_text())
    term_file = json.loads((tmp_path / "baselines" / "term.json").read_text())
    assert final_file["seeds_sha256"] != term_file["seeds_sha256"]
    assert final(copy, "--rubric", rubric, "--reference", root, "--force") == 0
    latest = max(Gradebook(copy / "gradebook.sqlite").attempts("s2", rubric_id="ll-term.final"), key=lambda a: a.id)
    r = latest.result()
    assert r.rubric.zero_at == pytest.approx(final_file["entries"]["random"]["summary"]["mean"])
    assert r.rubric.zero_at != pytest.approx(term_file["entries"]["random"]["summary"]["mean"])


def test_final_seeds_must_be_fresh(tmp_path, capsys):
    path = g.lunarlander_rubric(tmp_path / "r.toml")
    path.write_text(path.read_text() + '\n[final]\nseeds = "1050-1060"\n')
    (tmp_path / "out").mkdir()
    assert final(tmp_path / "out", "--rubric", path) == 1
    assert "fresh seeds" in capsys.readouterr().err


# --- the other channels: `grade --submitted`, Gradescope's metadata --------------------------------------
def test_grade_with_a_submission_time_shows_the_late_part_on_every_output(tmp_path, capsys):
    model = tmp_path / "model.onnx"
    model.write_bytes(REFERENCE.read_bytes())
    rubric = rubric_with_deadline(tmp_path)
    gs = tmp_path / "results.json"
    code = main([str(model), "--rubric", str(rubric), "--episodes", "3", "--no-video", "--out", str(tmp_path / "o"),
                 "--submitted", "2025-12-02T12:00:00+03:00", "--gradescope", str(gs)])
    assert code == 0
    terminal = capsys.readouterr().out
    assert "late: -1" in terminal and "1 day late" in terminal
    result = GradeResult.from_json((tmp_path / "o" / "result.json").read_text())
    assert result.score == 9 and result.late.days_late == 1 and result.late.source == "given"
    data = json.loads(gs.read_text())
    assert data["score"] == 9 and any(t["name"] == "late penalty" and t["score"] == -1 for t in data["tests"])
    # an extension found by the student's id
    code = main([str(model), "--rubric", str(rubric), "--episodes", "3", "--no-video", "--out", str(tmp_path / "p"),
                 "--submitted", "2025-12-02T12:00:00+03:00", "--student", "moodle-1234569"])
    assert code == 0 and GradeResult.from_json((tmp_path / "p" / "result.json").read_text()).score == 10


def test_run_autograder_passes_gradescopes_submission_time(tmp_path, monkeypatch):
    import importlib.util

    monkeypatch.setenv("GRADESCOPE_ROOT", str(tmp_path))
    path = REPO / "grader" / "gradescope" / "templates" / "gradescope_run_autograder.py"
    spec = importlib.util.spec_from_file_location("run_autograder_under_test", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.hand_in_args() == []  # no metadata: no time
    meta = {"id": 1, "created_at": "2018-07-01T14:22:32.365935-07:00",
            "assignment": {"due_date": "2018-07-31T23:00:00.000000-07:00", "late_due_date": None},
            "users": [{"email": "student@example.com", "id": 1234, "name": "Student User"}], "previous_submissions": []}
    (tmp_path / "submission_metadata.json").write_text(json.dumps(meta))
    assert module.hand_in_args() == ["--submitted", meta["created_at"], "--student", "student@example.com"]
    (tmp_path / "submission_metadata.json").write_text(json.dumps(meta | {"created_at": "--rubric=/etc/passwd"}))
    assert module.hand_in_args() == []


# --- the site: upload time, overrides, ranking, the final board ---------------------------------------
def _site_env(root: Path, extra: str = ""):
    import sys as _sys

    pytest.importorskip("fastapi")
    pytest.importorskip("httpx")
    _sys.path.insert(0, str(Path(__file__).parent))
    from site_helpers import make_tokens, write_rubric

    from grader.scoring.rubric import load_rubric
    from grader.site.app import SiteConfig

    db = root / "class.sqlite"
    tokens, admin = make_tokens(db, [("alice", "Alice"), ("bob", "Bob")])
    path = write_rubric(root / "rubric.toml")
    path.write_text(path.read_text() + extra)
    rubric = load_rubric(path)
    config = SiteConfig(db=db, rubric=rubric, data_dir=root / "data", workers=0, video=False, uploads_per_hour=100,
                        poll_s=0.2)
    return db, tokens, admin, rubric, config


def _client(app):
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from fastapi.testclient import TestClient
    return TestClient(app)


def _graded(db: Path, student: str, rubric_id: str, score: float, mean: float, sha: str) -> int:
    from grader.result import Summary

    class Key:
        id, sha256 = rubric_id, f"key-{rubric_id}"

    gb = Gradebook(db)
    aid = gb.enqueue(student, f"/nowhere/{sha}.onnx", sha, Key)
    assert gb.claim(aid) is not None
    summary = Summary(n=3, mean=mean, std=5.0, median=mean, iqm=mean, ci_low=mean - 4, ci_high=mean + 4,
                      success_rate=None, min=mean - 9, max=mean + 9)
    gb.finish(aid, GradeResult(submission="m.onnx", task="lunarlander", status="graded", score=score, max_score=10.0,
                               summary=summary), None)
    return aid


def test_site_ranks_ties_overrides_and_shows_the_final_board(tmp_path):
    import sys as _sys

    from grader.site.app import create_app

    db, _, admin_token, rubric, config = _site_env(tmp_path)
    _graded(db, "alice", rubric.id, 10.0, 250.0, "a1")
    _graded(db, "bob", rubric.id, 10.0, 300.5, "b1")
    _sys.path.insert(0, str(Path(__file__).parent))
    from site_helpers import csrf_from

    with _client(create_app(config)) as client:
        board = client.get("/").text
        assert board.index("300.5") < board.index("250.0") and "[296.5, 304.5]" in board  # tie broken, CI shown
        assert 'id="boards"' not in board  # no final evaluation yet
        page = client.get("/login")
        r = client.post("/login", data={"token": admin_token, "csrf": csrf_from(page.text)})
        csrf = csrf_from(r.text)
        r = client.post("/admin/override", data={"csrf": csrf, "student": "alice", "points": "7.5",
                                                 "comment": "regrade request accepted"}, follow_redirects=False)
        assert r.status_code == 303
        assert client.post("/admin/override", data={"csrf": csrf, "student": "alice", "points": "75",
                                                    "comment": "x"}).status_code == 400
        assert client.post("/admin/override", data={"csrf": "wrong", "student": "alice", "points": "5",
                                                    "comment": "x"}).status_code == 403
        admin = client.get("/admin").text
        assert "regrade request accepted" in admin and "instructor (site)" in admin
        by_stat = client.get("/admin?sort=stat").text
        standing = by_stat[by_stat.index('id="standing-table"'):]
        assert standing.index("standing-bob") < standing.index("standing-alice")
        rows = list(csv.DictReader(io.StringIO(client.get("/admin/export.csv?best=1").text)))
        alice = next(r for r in rows if r["student"] == "alice")
        assert alice["override_points"] == "7.5" and alice["override_comment"] == "regrade request accepted"
        _graded(db, "alice", f"{rubric.id}.final", 8.0, 190.0, "a1")
        _graded(db, "bob", f"{rubric.id}.final", 10.0, 280.0, "b1")
        final = client.get("/?board=final").text
        assert "Final leaderboard" in final and final.index("280.0") < final.index("190.0")
        assert 'href="/?board=term"' in final and 'href="/?board=final"' in client.get("/").text
    assert Gradebook(db).overrides(rubric.id)["alice"].points == 7.5


def test_site_upload_after_the_deadline_gets_its_late_part(tmp_path):
    import sys as _sys

    from grader.site.pool import GradingPool

    db, tokens, _, rubric, config = _site_env(
        tmp_path, '\n[deadline]\ndue = "2025-12-01T23:59:00+03:00"\nlate_penalty_per_day = 0.1\nlate_max_days = 3\n')
    _sys.path.insert(0, str(Path(__file__).parent))
    from site_helpers import lunarlander_model_bytes

    class Key:
        id, sha256 = rubric.id, "k"

    gb = Gradebook(db)
    upload = tmp_path / "upload.onnx"
    upload.write_bytes(lunarlander_model_bytes(1))
    aid = gb.enqueue("alice", str(upload), "sha", Key)
    pool = GradingPool(gradebook=gb, rubric=rubric, data_dir=tmp_path / "data", workers=1, video=False)
    late = pool.late_for(gb.get(aid))
    assert late.source == "upload time" and late.over_limit and "earns 0 points" in late.describe()
    # through the site: an upload now is long past the deadline
    from dataclasses import replace as _replace

    from grader.site.app import create_app

    with _client(create_app(_replace(config, workers=1))) as client:
        r = client.post("/upload", headers={"Authorization": f"Bearer {tokens['bob']}"},
                        files={"file": ("model.onnx", REFERENCE.read_bytes(), "application/octet-stream")})
        assert r.status_code == 202, r.text
        bob = r.json()["attempt_id"]
        from site_helpers import csrf_from, wait_for

        a = wait_for(lambda: (x := Gradebook(db).get(bob)).is_finished and x, timeout=120, what="the grading")
        result = a.result()
        assert result.status == "graded" and result.score == 0 and result.late.over_limit
        page = client.get("/login")
        client.post("/login", data={"token": tokens["bob"], "csrf": csrf_from(page.text)})
        shown = client.get(f"/attempts/{bob}").text
        assert 'id="late"' in shown and "earns 0 points" in shown


def test_an_override_whose_grade_changed_is_flagged_for_review(moodle_term, tmp_path):
    root, d, worksheet, rubric, out = moodle_term
    copy = tmp_path / "out"
    shutil.copytree(out, copy)
    overrides = tmp_path / "overrides.csv"
    overrides.write_text("moodle-1234570,5,Medical certificate\n")
    assert batch(d, "--rubric", rubric, "--roster", worksheet, "--out", copy, "--reference", root,
                 "--overrides", overrides) == 0
    assert "REVIEW" not in grades(copy)["moodle-1234570"]["note"]
    on_time = tmp_path / "worksheet.csv"  # Moodle's worksheet corrected: Max handed in on time after all
    on_time.write_bytes(worksheet.read_bytes().replace(b"Friday, 12 December 2025, 9:00 AM", b"Monday, 1 December 2025, 9:00 AM"))
    assert batch(d, "--rubric", rubric, "--roster", on_time, "--out", copy, "--reference", root) == 0
    mx = grades(copy)["moodle-1234570"]
    assert mx["points"] == "5" and mx["graded_points"] == "10"  # the override stands ...
    assert "REVIEW" in mx["note"] and "changed from 0.00 to 10.00" in mx["note"]  # ... flagged for a look
    assert "review: the graded points under this override changed" in (copy / "class.html").read_text()


def test_a_roster_with_submission_times_and_extensions(tmp_path):
    d = tmp_path / "class"
    for sid in ("ann", "ben", "cy"):
        g.write(d / f"{sid}.onnx", REFERENCE.read_bytes())
    roster = tmp_path / "roster.csv"
    roster.write_text("student_id,name,email,submitted,extension\n"
                      "ann,Ann,ann@x.org,2025-12-01T20:00:00+03:00,\n"
                      "ben,Ben,ben@x.org,2025-12-03 12:00,\n"                      # no offset: the rubric's zone
                      "cy,Cy,cy@x.org,2025-12-03T12:00:00+03:00,2025-12-04T00:00:00+03:00\n")
    rubric = rubric_with_deadline(tmp_path)
    out = tmp_path / "out"
    assert batch(d, "--rubric", rubric, "--roster", roster, "--out", out, "--reference", tmp_path) == 0
    by = grades(out)
    assert [by[s]["days_late"] for s in ("ann", "ben", "cy")] == ["0", "2", "0"]
    assert by["ben"]["late_penalty"] == "-2" and by["ben"]["submitted"] == "2025-12-03T12:00+03:00"


def test_final_evaluation_from_the_sites_gradebook(tmp_path):
    from grader.scoring.rubric import load_rubric, rubric_key

    rubric_path = final_rubric(tmp_path, "last")
    key = rubric_key(load_rubric(rubric_path))
    upload = tmp_path / "data" / "uploads"
    upload.mkdir(parents=True)
    data = REFERENCE.read_bytes()
    import hashlib

    sha = hashlib.sha256(data).hexdigest()
    (upload / f"{sha}.onnx").write_bytes(data)
    db = tmp_path / "class.sqlite"
    gb = Gradebook(db)
    aid = gb.enqueue("alice", str(upload / f"{sha}.onnx"), sha, key)  # as the site enqueues an upload
    gb.claim(aid)
    gb.finish(aid, GradeResult(submission="model.onnx", task="lunarlander", status="graded", score=10.0,
                               max_score=10.0), None)
    out = tmp_path / "out"
    assert final(out, "--rubric", rubric_path, "--gradebook", db, "--reference", tmp_path) == 0
    r = Gradebook(db).best_by_student("ll-term.final")["alice"].result()
    assert r.status == "graded" and [e.seed for e in r.episodes] == [5000, 5001, 5002]
    assert grades(out / "final")["alice"]["status"] == "graded"
