"""`grade batch`: layout, roster, gradebook, parallel grading, resume after SIGKILL, exports, duplicates, Ray."""

from __future__ import annotations

import csv
import json
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest

from benchmarks import classgen as g
from grader.classroom.classdir import scan_class
from grader.classroom.exports import GRADES_COLUMNS, GradescopeResults
from grader.classroom.gradebook import Gradebook
from grader.classroom.roster import read_roster, valid_student_id
from grader.cli import main
from grader.result import GradeResult

REPO = Path(__file__).resolve().parent.parent
CLI = [sys.executable, "-c", "import sys; from grader.cli import main; sys.exit(main(sys.argv[1:]))"]
ROSTER = ["good1", "good2", "bad", "loopbomb", "extdata", "copy", "reser", "near", "nb", "missing", "twofiles"]


def make_class(root: Path) -> tuple[Path, Path, Path]:
    """~12 submissions: good, bad, hostile, duplicates, a notebook, layout problems; plus roster and rubric."""
    d = root / "class"
    g.write(d / "good1" / "model.onnx", g.random_mlp(1))
    g.write(d / "good2.onnx", g.random_mlp(2))
    g.write(d / "bad" / "policy.onnx", g.wrong_shape(3))                    # the one .onnx in the folder
    g.write(d / "loopbomb.onnx", g.loop_bomb())
    g.write(d / "extdata.onnx", g.external_data())
    g.write(d / "copy" / "model.onnx", g.random_mlp(1))                      # identical file to good1
    g.write(d / "reser.onnx", g.reserialised(2))                             # good2's weights, renamed, reordered
    g.write(d / "near.onnx", g.near_duplicate(4))                            # behaves like base4
    g.write(d / "base4" / "model.onnx", g.random_mlp(4))                     # not on the roster
    g.write(d / "nb" / "homework.ipynb", g.minimal_notebook())               # notebook only
    g.write(d / "twofiles" / "a.onnx", g.random_mlp(5))                      # layout problem: which file?
    g.write(d / "twofiles" / "b.onnx", g.random_mlp(6))
    g.write(d / "bad name!.onnx", g.random_mlp(7))                           # invalid id
    g.write(d / "README.txt", "hello")                                       # not a submission
    (d / "escape.onnx").symlink_to("/etc/hostname")                          # symlink out of the class folder
    roster = root / "roster.csv"
    roster.write_text("id,name,email\n" + "".join(f"{s},Name {s},{s}@example.org\n" for s in ROSTER))
    rubric = g.lunarlander_rubric(root / "test.toml", episodes=5)
    return d, roster, rubric


def batch(*args: str | Path) -> int:
    return main(["batch", *map(str, args), "--no-video", "--no-progress"])


def read_csv(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def rows(db: Path, sql: str, params=()) -> list[sqlite3.Row]:
    conn = sqlite3.connect(db)
    conn.row_factory = sqlite3.Row
    try:
        return conn.execute(sql, params).fetchall()
    finally:
        conn.close()


def assert_reports_complete(out: Path) -> None:
    reports = out / "reports"
    for student in reports.iterdir():
        if student.name.startswith("."):
            continue
        for d in student.iterdir():
            assert (d / "result.json").is_file(), f"{d} has no result.json"
            GradeResult.from_json((d / "result.json").read_text())
            GradescopeResults.model_validate_json((d / "results.json").read_text())


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    root = tmp_path_factory.mktemp("batch")
    class_dir, roster, rubric = make_class(root)
    out = root / "out"
    (root / "no-refs").mkdir()
    assert batch(class_dir, "--rubric", rubric, "--roster", roster, "--out", out, "--workers", "2",
                 "--reference", root / "no-refs") == 0
    return root, class_dir, roster, rubric, out


# --- layout and roster ------------------------------------------------------------------------------
def test_student_ids_are_validated():
    for ok in ("s123", "jane.doe@uni.edu", "A_b-9"):
        assert valid_student_id(ok)
    for bad in ("", "..", "a..b", ".hidden", "a/b", "a b", "x" * 65, "é", "a\nb"):
        assert not valid_student_id(bad)


def test_scan_reports_every_entry_that_does_not_fit(tmp_path):
    class_dir, _, _ = make_class(tmp_path)
    os.mkfifo(class_dir / "fifo.onnx")
    (class_dir / ".DS_Store").write_text("x")
    g.write(class_dir / "empty" / "notes.md", "nothing here")
    g.write(class_dir / "good2" / "model.onnx", g.random_mlp(2))  # good2 also has a flat file
    cf = scan_class(class_dir)
    found = {b.student: b for b in cf.bundles}
    assert found["good1"].model.name == "model.onnx" and found["good1"].notebook is None
    assert found["bad"].model.name == "policy.onnx"
    assert found["nb"].notebook.name == "homework.ipynb" and found["nb"].model is None
    assert found["good2"].model.parent.name == "good2"  # the folder wins over the flat file
    problems = {p.entry: p.reason for p in cf.problems}
    assert "symbolic link" in problems["escape.onnx"]
    assert "not a regular file" in problems["fifo.onnx"]
    assert "valid id" in problems["bad name!.onnx"]
    assert "README.txt" in problems and ".DS_Store" in problems
    assert "none is named model.onnx" in problems["twofiles/"]
    assert "no model (.onnx) or notebook (.ipynb)" in problems["empty/"]
    assert "also has a folder" in problems["good2.onnx"]
    assert not any(s in found for s in ("twofiles", "empty", "escape"))


def test_flat_folder_bundles_by_stem_only(tmp_path):
    """alice's notebook never takes bob's model or weights; case-only duplicates are listed."""
    d = tmp_path / "flat"
    g.write(d / "alice.ipynb", g.minimal_notebook())
    g.write(d / "alice.pt", "weights")
    g.write(d / "bob.onnx", g.random_mlp(1))
    g.write(d / "bob.pt", "other weights")
    g.write(d / "frank.onnx", g.random_mlp(2))
    g.write(d / "frank.ONNX", g.random_mlp(3))
    found = {b.student: b for b in scan_class(d).bundles}
    assert found["alice"].model is None and [w.name for w in found["alice"].weights] == ["alice.pt"]
    assert found["bob"].model.name == "bob.onnx" and found["bob"].notebook is None
    problems = {p.entry: p.reason for p in scan_class(d).problems}
    assert "only in case" in problems["frank.onnx"] and found["frank"].model.name == "frank.ONNX"


def test_roster_with_and_without_header(tmp_path):
    p = tmp_path / "r.csv"
    p.write_text("id,name,email\ns1,Ann,a@x\ns1,Dup,d@x\n../etc,Evil,e@x\n\ns2,Bo,b@x\n")
    r = read_roster(p)
    assert r.ids() == ["s1", "s2"] and r.get("s1").name == "Ann"
    assert len(r.problems) == 2
    p.write_text("s3,Cy,c@x\ns4\n")
    assert read_roster(p).ids() == ["s3", "s4"]


# --- gradebook ------------------------------------------------------------------------------------------
class _Rubric:
    id, sha256 = "r", "h" * 64


def _result(status="graded", score=1.0) -> GradeResult:
    return GradeResult(submission="x.onnx", task="lunarlander", status=status, score=score, max_score=10)


def test_gradebook_api(tmp_path):
    gb = Gradebook(tmp_path / "gb.sqlite")
    a = gb.enqueue("s1", "s1.onnx", "sha-a", _Rubric)
    assert gb.enqueue("s1", "s1.onnx", "sha-a", _Rubric) == a  # same key: same row
    b = gb.enqueue("s1", "s1.onnx", "sha-b", _Rubric)
    c = gb.enqueue("s2", "s2.onnx", "sha-a", _Rubric)
    assert len({a, b, c}) == 3
    first = gb.claim_next(worker="w")
    assert first.id == a and first.status == "running"
    assert gb.claim(a) is None  # already running
    assert gb.requeue_running(older_than_s=3600) == 0 and gb.get(a).status == "running"  # a live grading
    assert gb.requeue_running() == 1 and gb.get(a).status == "queued"
    claimed: list[int] = []

    def worker():
        while (att := gb.claim_next()) is not None:
            claimed.append(att.id)
            gb.finish(att.id, _result(score=float(att.id)), tmp_path / "reports" / str(att.id), extra={"k": 1})

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(claimed) == [a, b, c]  # each claimed exactly once
    got = gb.get(b)
    assert got.status == "graded" and got.score == float(b) and got.report_path == f"reports/{b}" and got.extra == {"k": 1}
    assert got.result().status == "graded"
    assert [x.id for x in gb.attempts("s1")] == [a, b]
    best = gb.best_by_student("r")
    assert best["s1"].id == b and best["s2"].id == c
    gb.enqueue("s1", "s1.onnx", "sha-a", _Rubric, force=True)
    assert gb.get(a).status == "queued" and gb.get(a).result_json is None
    assert len(gb.attempts()) == 3
    p1 = gb.pseudonym("s1")
    assert p1 == gb.pseudonym("s1") and p1 != gb.pseudonym("s2") and "s1" not in p1
    gb.close()
    other = Gradebook(tmp_path / "other.sqlite")
    assert other.pseudonym("s1") != p1  # per-class secret
    mode = rows(tmp_path / "gb.sqlite", "PRAGMA journal_mode")[0][0]
    assert mode == "wal"


# --- a whole class ------------------------------------------------------------------------------------
def test_grades_csv(graded):
    root, class_dir, roster, rubric, out = graded
    table = read_csv(out / "grades.csv")
    assert list(table[0]) == GRADES_COLUMNS
    assert [r["student_id"] for r in table] == ROSTER  # one row per roster student, roster order
    by = {r["student_id"]: r for r in table}
    for sid in ("good1", "good2", "copy", "reser", "near"):
        assert by[sid]["status"] == "graded", by[sid]
        assert 0 <= float(by[sid]["points"]) <= 10 and by[sid]["max_points"] == "10"
    for sid in ("bad", "loopbomb", "extdata"):
        assert by[sid]["status"] == "invalid" and float(by[sid]["points"]) == 0 and by[sid]["note"]
    # a notebook with no model, and the assignment is the model: invalid, 0 points, the note says what is missing
    assert by["nb"]["status"] == "invalid" and float(by["nb"]["points"]) == 0
    assert "trained model" in by["nb"]["note"] and "not handed in" in by["nb"]["note"]
    assert by["missing"]["status"] == "no submission"
    assert by["twofiles"]["status"] == "layout problem" and "model.onnx" in by["twofiles"]["note"]
    assert by["good1"]["points"] == by["copy"]["points"]


def test_duplicates_flagged(graded):
    out = graded[-1]
    flags = read_csv(out / "duplicates.csv")
    pairs = {(f["kind"], frozenset((f["student_a"], f["student_b"]))) for f in flags}
    assert ("identical", frozenset({"good1", "copy"})) in pairs
    assert ("same_weights", frozenset({"good2", "reser"})) in pairs
    assert ("behaviour", frozenset({"near", "base4"})) in pairs
    behaviour = [f for f in flags if f["kind"] == "behaviour"]
    assert all(float(f["agreement"]) >= 0.95 for f in behaviour)
    flagged = {s for _, p in pairs for s in p}
    assert not flagged & {"bad", "loopbomb", "extdata", "nb"}


def test_copy_of_a_reference_model_is_flagged(graded, tmp_path):
    root, class_dir, roster, rubric, out = graded
    refs = tmp_path / "refs"
    g.write(refs / "ll_ref.onnx", g.random_mlp(2))         # good2 handed in the reference itself
    g.write(refs / "pacman.onnx", g.wrong_shape(9))        # not this task: ignored
    work = tmp_path / "out"
    shutil.copytree(out, work)
    assert batch(class_dir, "--rubric", rubric, "--out", work, "--reference", refs) == 0
    flags = {(f["kind"], frozenset((f["student_a"], f["student_b"]))) for f in read_csv(work / "duplicates.csv")}
    assert ("identical", frozenset({"good2", "reference:ll_ref.onnx"})) in flags
    assert ("same_weights", frozenset({"reser", "reference:ll_ref.onnx"})) in flags
    assert not any("pacman" in "".join(p) for _, p in flags)
    assert "reference:ll_ref.onnx" in (work / "class.html").read_text()


def test_reports_and_gradescope(graded):
    out = graded[-1]
    assert_reports_complete(out)
    gs = GradescopeResults.model_validate_json(next((out / "reports" / "good1").iterdir()).joinpath("results.json").read_text())
    assert gs.tests[-1].name == "episode score" and gs.leaderboard[0].name == "Score"
    assert len(next((out / "reports" / "good1").iterdir()).joinpath("result.json").read_text()) > 100
    res = GradeResult.from_json(next((out / "reports" / "loopbomb").iterdir()).joinpath("result.json").read_text())
    assert res.status == "invalid" and "Loop" in res.error
    assert not (out / "reports" / "escape").exists() and not any(p.name.startswith(".tmp") for p in (out / "reports").iterdir())


def test_class_html(graded):
    out = graded[-1]
    html = (out / "class.html").read_text()
    gb = Gradebook(out / "gradebook.sqlite")
    assert gb.pseudonym("good1") in html and "good1" in html
    assert "<svg" in html and "pass rate" in html
    assert "bad name!.onnx" in html and "README.txt" in html and "escape.onnx" in html  # layout problems listed
    assert "base4" in html and "Not on the roster" in html
    assert "identical" in html and "same_weights" in html and "behaviour" in html
    assert "reports/good1/" in html
    # the instructor's page opens with names, report links and flags; pseudonyms are a toggle for projecting
    assert "<body>" in html and 'id="pseudo-toggle"' in html and 'id="pseudo-toggle" checked' not in html
    assert 'id="class-outcomes"' in html and 'id="class-collapsed"' in html  # the class's outcomes (diagnostics)
    assert "<script" not in html.replace("onchange", "")  # nothing but the toggle


def test_gradebook_rows(graded):
    out = graded[-1]
    db = out / "gradebook.sqlite"
    attempts = rows(db, "SELECT * FROM attempts")
    assert len(attempts) == 10  # 9 students with a model + 1 with a notebook
    assert {a["status"] for a in attempts} <= {"graded", "invalid", "error"}
    for a in attempts:
        assert a["finished"] and a["result_json"] and a["rubric_id"] == "ll-test" and len(a["rubric_sha256"]) == 64
        assert (out / a["report_path"] / "result.json").is_file()


def test_rerun_skips_and_force_regrades(graded):
    root, class_dir, roster, rubric, out = graded
    db = out / "gradebook.sqlite"
    before = {r["id"]: r["finished"] for r in rows(db, "SELECT id, finished FROM attempts")}
    assert batch(class_dir, "--rubric", rubric, "--roster", roster, "--out", out) == 0
    assert {r["id"]: r["finished"] for r in rows(db, "SELECT id, finished FROM attempts")} == before
    # --force on a copy (keeps the module fixture intact): same rows, all regraded
    forced = root / "forced"
    shutil.copytree(out, forced)
    assert batch(class_dir, "--rubric", rubric, "--out", forced, "--force", "--workers", "1") == 0
    after = {r["id"]: r["finished"] for r in rows(forced / "gradebook.sqlite", "SELECT id, finished FROM attempts")}
    assert after.keys() == before.keys() and all(after[k] > before[k] for k in before)
    assert_reports_complete(forced)
    # --retry-errors regrades only the error rows (the notebook, while its grader is missing)
    errors = {r["id"]: r["finished"] for r in rows(forced / "gradebook.sqlite", "SELECT * FROM attempts WHERE status = 'error'")}
    assert batch(class_dir, "--rubric", rubric, "--out", forced, "--retry-errors") == 0
    again = {r["id"]: r["finished"] for r in rows(forced / "gradebook.sqlite", "SELECT id, finished FROM attempts")}
    assert all((again[k] > after[k]) == (k in errors) for k in after)
    # grades without a roster: one row per found student
    assert [r["student_id"] for r in read_csv(forced / "grades.csv")] == sorted(
        {"good1", "good2", "bad", "loopbomb", "extdata", "copy", "reser", "near", "base4", "nb", "twofiles"})


def test_same_returns_with_any_number_of_workers(graded, tmp_path):
    root, class_dir, roster, rubric, out = graded
    small = tmp_path / "small"
    for name in ("good1/model.onnx", "good2.onnx", "near.onnx"):
        (small / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(class_dir / name, small / name)
    assert batch(small, "--rubric", rubric, "--out", tmp_path / "w1", "--workers", "1") == 0

    def returns(db):
        return {(a["student"], a["sha256"]): [e["return"] for e in json.loads(a["result_json"])["episodes"]]
                for a in rows(db, "SELECT * FROM attempts")}

    one = returns(tmp_path / "w1" / "gradebook.sqlite")
    two = returns(out / "gradebook.sqlite")
    assert len(one) == 3 and all(one[k] == two[k] for k in one) and all(len(v) == 5 for v in one.values())


def test_roster_that_does_not_match_the_folder(graded, tmp_path):
    root, class_dir, roster, rubric, out = graded
    other = tmp_path / "other.csv"
    other.write_text("zz1,Zed One,z1@x\nzz2,Zed Two,z2@x\ngood1,Good One,g@x\n")
    work = tmp_path / "out"
    shutil.copytree(out, work)  # reuse the grading: only the exports change
    assert batch(class_dir, "--rubric", rubric, "--roster", other, "--out", work) == 0
    table = read_csv(work / "grades.csv")
    assert [(r["student_id"], r["status"]) for r in table] == [("zz1", "no submission"), ("zz2", "no submission"), ("good1", "graded")]
    assert table[0]["name"] == "Zed One"
    html = (work / "class.html").read_text()
    assert "No submission</b> (2)" in html and "Not on the roster</b> (10)" in html


def test_bad_inputs(tmp_path, capsys):
    class_dir, roster, rubric = make_class(tmp_path)
    assert batch(tmp_path / "nope", "--rubric", rubric) == 1
    (tmp_path / "bad.toml").write_text("id = 'x'\n")
    assert batch(class_dir, "--rubric", tmp_path / "bad.toml") == 1


def test_csv_cells_are_defused(tmp_path):
    from grader.outputs.textsafe import csv_cell

    assert csv_cell("=HYPERLINK(1)") == "'=HYPERLINK(1)" and csv_cell("-1.5") == "-1.5" and csv_cell("ok") == "ok"
    # what a spreadsheet evaluates: arithmetic that looks numeric, and references
    assert csv_cell("-1-1") == "'-1-1" and csv_cell("@A1") == "'@A1" and csv_cell("+1") == "'+1"
    assert csv_cell("a\x1b[2Jb") == "a?[2Jb"  # no control characters either


def test_every_grades_csv_cell_is_escaped_the_student_id_too(tmp_path):
    """A flat file named -1-1.onnx is a valid id; its cell must not be evaluated by a spreadsheet."""
    d = tmp_path / "class"
    g.write(d / "-1-1.onnx", g.random_mlp(1))
    g.write(d / "@A1.onnx", g.random_mlp(2))
    rubric = g.lunarlander_rubric(tmp_path / "r.toml", episodes=2)
    assert batch(d, "--rubric", rubric, "--out", tmp_path / "out", "--reference", tmp_path) == 0
    text = (tmp_path / "out" / "grades.csv").read_bytes().decode()
    assert "\r\n'-1-1," in text and "\r\n'@A1," in text


# --- kill and resume ---------------------------------------------------------------------------------------
@pytest.mark.slow
def test_sigkill_and_resume(tmp_path):
    class_dir, roster, rubric = make_class(tmp_path)
    for i in range(6):  # more work, so that the kill lands mid-run
        g.write(class_dir / f"extra{i}.onnx", g.random_mlp(100 + i))
    rubric = g.lunarlander_rubric(tmp_path / "r20.toml", episodes=20)
    out = tmp_path / "out"
    db = out / "gradebook.sqlite"
    cmd = CLI + ["batch", str(class_dir), "--rubric", str(rubric), "--roster", str(roster), "--out", str(out),
                 "--workers", "1", "--no-video", "--no-progress"]
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        finished = 0
        while time.monotonic() < deadline and proc.poll() is None:
            if db.exists():
                try:
                    finished = rows(db, "SELECT COUNT(*) FROM attempts WHERE finished IS NOT NULL")[0][0]
                except sqlite3.OperationalError:  # schema not created yet
                    finished = 0
                if finished >= 1:
                    break
            time.sleep(0.05)
        assert finished >= 1, "no row finished before the deadline"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # the killed run's orphaned engine workers
        except ProcessLookupError:
            pass
    at_kill = {r["id"]: (r["status"], r["finished"], r["result_json"]) for r in rows(db, "SELECT * FROM attempts")}
    done_at_kill = {k: v for k, v in at_kill.items() if v[0] in ("graded", "invalid", "error")}
    assert len(done_at_kill) < len(at_kill), "the run finished before it was killed"
    # resume
    assert subprocess.run(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=300).returncode == 0
    final = rows(db, "SELECT * FROM attempts")
    keys = [(r["student"], r["sha256"], r["rubric_sha256"]) for r in final]
    assert len(keys) == len(set(keys)) == len(at_kill)  # nothing duplicated, nothing lost
    assert all(r["status"] in ("graded", "invalid", "error") and r["finished"] for r in final)
    for r in final:  # rows finished before the kill were kept, not regraded
        if r["id"] in done_at_kill:
            assert (r["status"], r["finished"], r["result_json"]) == done_at_kill[r["id"]]
    assert_reports_complete(out)
    assert not any(p.name.startswith((".tmp", ".trash")) for p in (out / "reports").iterdir())
    table = read_csv(out / "grades.csv")
    assert [r["student_id"] for r in table] == ROSTER


@pytest.mark.slow
def test_ctrl_c_records_nothing_wrong(tmp_path):
    """SIGINT to the whole process group (what a terminal sends): the sandboxed workers ignore it, the
    batch stops, exits 130, and records no grading the interrupt broke; a re-run finishes the class."""
    d = tmp_path / "class"
    for i in range(10):
        g.write(d / f"s{i}.onnx", g.heuristic_model(i, 0.8))
    rubric = g.lunarlander_rubric(tmp_path / "r.toml", episodes=20)
    out = tmp_path / "out"
    db = out / "gradebook.sqlite"
    cmd = CLI + ["batch", str(d), "--rubric", str(rubric), "--out", str(out), "--workers", "2", "--no-video", "--no-progress"]
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                if db.exists() and rows(db, "SELECT COUNT(*) FROM attempts WHERE finished IS NOT NULL")[0][0] >= 1:
                    break
            except sqlite3.OperationalError:
                pass
            time.sleep(0.05)
        os.killpg(proc.pid, signal.SIGINT)
        assert proc.wait(timeout=60) == 130
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    statuses = [r["status"] for r in rows(db, "SELECT status FROM attempts")]
    assert "invalid" not in statuses and "error" not in statuses and "graded" in statuses
    assert subprocess.run(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=300).returncode == 0
    assert [r["status"] for r in rows(db, "SELECT status FROM attempts")] == ["graded"] * 10


# --- Ray -------------------------------------------------------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ray_bin() -> str:
    pytest.importorskip("ray")
    ray_bin = shutil.which("ray") or str(Path(sys.executable).with_name("ray"))
    if not Path(ray_bin).exists():
        pytest.skip("the ray command is not installed")
    return ray_bin


@pytest.fixture
def private_ray_env(monkeypatch):
    """A Ray of the test's own: its temp and session folders under a fresh short folder (Ray's socket
    paths must stay short), its own token in the environment, its own HOME (so ~/.ray/auth_token is
    neither read nor written). Yields (folder, environment for `ray start`)."""
    import secrets

    root = Path(tempfile.mkdtemp(prefix="rgray-", dir="/tmp"))
    (root / "home").mkdir()
    env = {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32), "RAY_TMPDIR": str(root),
           "RAY_USAGE_STATS_ENABLED": "0"}
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.delenv("RAY_AUTH_TOKEN_PATH", raising=False)
    try:
        yield root, {**os.environ, **env, "HOME": str(root / "home")}
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _wait_for_port(port: int, proc: subprocess.Popen, *, timeout: float = 180) -> None:
    """Until the head's GCS accepts connections; fails if `ray start` exits first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"ray start exited with {proc.returncode}")
        with socket.socket() as s:
            s.settimeout(1)
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.2)  # polling a condition with a deadline, not standing in for it
    raise AssertionError(f"the Ray head did not listen on port {port} within {timeout:.0f} s")


def _stop_own(proc: subprocess.Popen) -> None:
    """Stop the head started by the test, by its own ids only: `ray start --block` cleans up its
    children on SIGTERM; whatever is left of its process group (the test made it a session leader)
    is killed. Never `ray stop`, which stops every Ray on the machine."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    proc.wait(timeout=30)


@pytest.fixture
def ray_head(private_ray_env):
    root, env = private_ray_env
    port = _free_port()
    start = [_ray_bin(), "start", "--head", "--block", f"--temp-dir={root / 't'}", "--node-ip-address=127.0.0.1",
             f"--port={port}", "--num-cpus=2", "--include-dashboard=false", "--disable-usage-stats",
             "--object-store-memory=200000000"]
    with open(root / "ray-start.log", "wb") as log:
        proc = subprocess.Popen(start, env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True)
    try:
        _wait_for_port(port, proc)
        yield f"127.0.0.1:{port}"
    finally:
        _stop_own(proc)


@pytest.mark.slow
def test_ray_backend(graded, ray_head, tmp_path):
    root, class_dir, roster, rubric, out = graded
    ray_out = tmp_path / "ray"
    assert batch(class_dir, "--rubric", rubric, "--roster", roster, "--out", ray_out, "--backend", "ray",
                 "--address", ray_head, "--workers", "2") == 0

    def summary(db):
        return {(a["student"], a["sha256"]): (a["status"], a["score"],
                                              [e["return"] for e in json.loads(a["result_json"])["episodes"]])
                for a in rows(db, "SELECT * FROM attempts")}

    local, remote = summary(out / "gradebook.sqlite"), summary(ray_out / "gradebook.sqlite")
    assert remote.keys() == local.keys()
    for k in local:
        if local[k][0] != "error":  # the notebook may be an error either way
            assert remote[k] == local[k], k
    assert_reports_complete(ray_out)
    assert read_csv(ray_out / "grades.csv") == read_csv(out / "grades.csv")
    assert read_csv(ray_out / "duplicates.csv") == read_csv(out / "duplicates.csv")
    # resume on the cluster: nothing to do, nothing duplicated
    assert batch(class_dir, "--rubric", rubric, "--out", ray_out, "--backend", "ray", "--address", ray_head) == 0
    assert len(rows(ray_out / "gradebook.sqlite", "SELECT id FROM attempts")) == len(local)


def test_gradescope_results_never_name_hidden_grading_seeds():
    from grader.classroom.exports import gradescope_results
    from grader.result import CheckResult, EpisodeResult, GradeResult, RubricInfo

    seeds = [7301955, 7301956]
    result = GradeResult(
        submission="m.onnx", task="lunarlander", status="graded", score=5, max_score=10,
        episodes=[EpisodeResult(seed=s, return_=1.0, length=10) for s in seeds],
        rubric=RubricInfo(id="r", path="r.toml", sha256="x", seed_set="grading", n_seeds=2, statistic="mean",
                          zero_at=0, full_at=200),
        checks=[CheckResult(name="episodes", passed=False, severity="warning", message=f"slow on seed {seeds[1]}")],
        warnings=[f"the re-run of seed {seeds[0]} differed"])
    text = gradescope_results(result).model_dump_json()
    assert not any(str(s) in text for s in seeds)
    assert "episode 1" in text and "episode 2" in text


def _children(pid: int) -> list[int]:
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            out.append(int(stat.parent.name))
    return out


@pytest.mark.slow
def test_the_workers_of_a_killed_batch_exit_quietly(tmp_path):
    """kill -9 of `grade batch`: its sandboxed workers notice and exit, printing nothing."""
    class_dir, roster, _ = make_class(tmp_path)
    rubric = g.lunarlander_rubric(tmp_path / "r50.toml", episodes=50)
    log = tmp_path / "stderr.txt"
    cmd = CLI + ["batch", str(class_dir), "--rubric", str(rubric), "--out", str(tmp_path / "out"), "--workers", "2",
                 "--no-video", "--no-progress"]
    with open(log, "wb") as err:
        proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=err)
        deadline = time.monotonic() + 120
        workers: list[int] = []
        while time.monotonic() < deadline and len(workers) < 2 and proc.poll() is None:
            workers = _children(proc.pid)
            time.sleep(0.05)
        assert workers, "no worker started"
        proc.kill()
        proc.wait(timeout=30)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and any(Path(f"/proc/{w}").exists() for w in workers):
            time.sleep(0.1)
    alive = [w for w in workers if Path(f"/proc/{w}").exists() and "Z" not in Path(f"/proc/{w}/stat").read_text().split()[2]]
    assert not alive, f"orphaned workers still running: {alive}"
    text = log.read_text(errors="replace")
    assert "Traceback" not in text and "BrokenPipeError" not in text, text[-2000:]


def _processes_mentioning(text: str) -> list[int]:
    """Ids of the live processes whose command line contains ``text``."""
    found = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                if text.encode() in (proc / "cmdline").read_bytes():
                    found.append(int(proc.name))
            except OSError:
                pass
    return found


@pytest.mark.slow
def test_ray_backend_without_address_starts_and_stops_a_private_local_ray(tmp_path, monkeypatch):
    """No --address: a local Ray of the batch's own, in RAY_TMPDIR, with a token that never touches
    ~/.ray/auth_token; stopped at the end; the grades are the local backend's."""
    _ray_bin()
    root = Path(tempfile.mkdtemp(prefix="rgray-", dir="/tmp"))
    try:
        (root / "home").mkdir()
        for key in ("RAY_ADDRESS", "RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH"):
            monkeypatch.delenv(key, raising=False)
        monkeypatch.setenv("RAY_TMPDIR", str(root))
        monkeypatch.setenv("HOME", str(root / "home"))
        monkeypatch.setenv("RAY_USAGE_STATS_ENABLED", "0")
        d = tmp_path / "class"
        g.write(d / "good1" / "model.onnx", g.random_mlp(1))
        g.write(d / "good2.onnx", g.random_mlp(2))
        rubric = g.lunarlander_rubric(tmp_path / "r.toml", episodes=3)
        assert batch(d, "--rubric", rubric, "--out", tmp_path / "local", "--workers", "2") == 0
        assert batch(d, "--rubric", rubric, "--out", tmp_path / "ray", "--backend", "ray", "--workers", "2") == 0
        assert read_csv(tmp_path / "ray" / "grades.csv") == read_csv(tmp_path / "local" / "grades.csv")
        assert any((root / "ray").glob("session_*")), "the local Ray did not use RAY_TMPDIR"
        assert not (root / "home" / ".ray" / "auth_token").exists(), "the shared token file was written"
        assert "RAY_AUTH_TOKEN" not in os.environ and "RAY_AUTH_MODE" not in os.environ  # restored
        assert _processes_mentioning(str(root)) == [], "the local Ray was left running"
    finally:
        for pid in _processes_mentioning(str(root)):
            try:
                os.kill(pid, signal.SIGKILL)  # only processes of this test's own Ray folder
            except ProcessLookupError:
                pass
        shutil.rmtree(root, ignore_errors=True)
