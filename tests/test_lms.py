"""grader.classroom.lms: Moodle and Canvas download names, their rosters, and the grade files they import.

The fixtures are written here byte for byte in the shapes the LMSs produce (BOM, CRLF, quoting,
Cyrillic names, a name with a comma, the Canvas Points Possible and Manual Posting rows).
"""

from __future__ import annotations

import csv
import io
import random
from pathlib import Path

import pytest

from grader.classroom.lms import detect_layout, detect_roster_kind, parse_entry, read_lms_roster, to_roster
from grader.classroom.lms.canvas import read_canvas_gradebook, write_canvas_gradebook
from grader.classroom.lms.moodle import read_moodle_worksheet, write_moodle_worksheet
from grader.classroom.lms.table import LmsFormatError, format_points
from grader.classroom.roster import valid_student_id
from grader.errors import SetupError

BOM = b"\xef\xbb\xbf"

# Moodle 4.x "Download grading worksheet": BOM, CRLF, quoted where needed, a multi-line feedback.
MOODLE_HEADER = ('Identifier,"Full name","Email address",Status,Grade,"Maximum Grade","Grade can be changed",'
                 '"Last modified (submission)","Last modified (grade)","Feedback comments"')
MOODLE_ROWS = [
    '"Participant 1234567","Иван Петров",ivan@example.org,"Submitted for grading - Not graded",,100.00,Yes,'
    '"Monday, 1 December 2025, 10:00 AM",-,',
    '"Participant 1234568","Doe, Jane",jane@example.org,"Submitted for grading - Graded",80.00,100.00,Yes,'
    '"Monday, 1 December 2025, 9:00 AM","Tuesday, 2 December 2025, 9:30 AM","Good work,\r\nsee the notes"',
    '"Participant 1234569","=HYPERLINK(""http://evil"")",evil@example.org,"No submission",,100.00,Yes,-,-,',
]


def moodle_bytes(*, bom: bool = True, newline: str = "\r\n", rows=MOODLE_ROWS, header=MOODLE_HEADER) -> bytes:
    text = newline.join([header, *rows]) + newline
    return (BOM if bom else b"") + text.encode("utf-8")


@pytest.fixture
def worksheet(tmp_path: Path) -> Path:
    p = tmp_path / "Grades-RL-HW3-42.csv"
    p.write_bytes(moodle_bytes())
    return p


def parse_csv(data: bytes) -> list[list[str]]:
    text = data.decode("utf-8-sig")
    return list(csv.reader(io.StringIO(text, newline="")))


# Canvas "Export Entire Gradebook": a custom column, a Manual Posting row, Points Possible with
# read-only totals, a name with a comma, a Cyrillic name, a formula-protected name, the test student.
CANVAS_LINES = [
    "Student,ID,SIS User ID,SIS Login ID,Section,Notes,HW 1 (101),RL Homework (202),Current Score,"
    "Unposted Current Score,Final Score,Unposted Final Score",
    ",,,,,,,Manual Posting,,,,",
    "    Points Possible,,,,,(read only),10.00,100.00,(read only),(read only),(read only),(read only)",
    '"Петров, Иван",1234,S001,ivan@example.org,Section A,,9.00,,90.00,90.00,90.00,90.00',
    '"O\'Brien, Pat",1235,S002,pbrien,"Section A and Section B",likes RL,8.00,55.00,80.00,80.00,63.00,63.00',
    '"=""=cmd|\' /C calc\'!A0, Eve""",1236,S003,eve@example.org,Section A,,,,,,,',
    '"Student, Test",1299,,,Section A,,,,,,,',
]


def canvas_bytes(*, bom: bool = False, newline: str = "\n", sep: str = ",", lines=CANVAS_LINES) -> bytes:
    if sep != ",":
        rows = [list(csv.reader([ln]))[0] for ln in lines]
        buf = io.StringIO(newline="")
        csv.writer(buf, delimiter=sep, lineterminator=newline).writerows(rows)
        text = buf.getvalue()
    else:
        text = newline.join(lines) + newline
    return (BOM if bom else b"") + text.encode("utf-8")


@pytest.fixture
def gradebook(tmp_path: Path) -> Path:
    p = tmp_path / "2025-12-01T1000_Grades-RL101.csv"
    p.write_bytes(canvas_bytes())
    return p


# --- submission names ----------------------------------------------------------------------------
@pytest.mark.parametrize("name, key, display, file_name, plugin", [
    ("Иван Петров_1234567_assignsubmission_file", "moodle-1234567", "Иван Петров", None, "file"),   # Moodle >= 4.1
    ("Full Name_1234567_assignsubmission_file_", "moodle-1234567", "Full Name", None, "file"),      # 3.1 - 4.0
    ("Full Name_1234567_assignsubmission_onlinetext_", "moodle-1234567", "Full Name", None, "onlinetext"),
    ("Full Name_1234567_assignsubmission_file_model.onnx", "moodle-1234567", "Full Name", "model.onnx", "file"),
    ("Anna Maria de la Cruz_42_assignsubmission_file_my model_v2.onnx", "moodle-42", "Anna Maria de la Cruz",
     "my model_v2.onnx", "file"),
    ("Participant_7_assignsubmission_file", "moodle-7", "Participant", None, "file"),                 # blind marking
    ("Jo_0099_assignsubmission_file_hw.ipynb", "moodle-99", "Jo", "hw.ipynb", "file"),
])
def test_moodle_names(name, key, display, file_name, plugin):
    e = parse_entry(name, "moodle")
    assert e is not None
    assert (e.student_key, e.display_name, e.file_name, e.plugin, e.late) == (key, display, file_name, plugin, False)
    assert e.lms_id == key.removeprefix("moodle-")
    assert e.is_folder is (file_name is None)
    assert valid_student_id(e.student_key)


def test_moodle_is_dir_hint():
    assert parse_entry("A B_1_assignsubmission_file_", "moodle", is_dir=True).file_name is None
    assert parse_entry("A B_1_assignsubmission_file_", "moodle", is_dir=False) is None   # a folder name, not a file
    assert parse_entry("A B_1_assignsubmission_file_x.onnx", "moodle", is_dir=True) is None
    assert parse_entry("A B_1_assignsubmission_file_x.onnx", "moodle", is_dir=False).file_name == "x.onnx"


@pytest.mark.parametrize("name, key, display, late, file_name, plugin", [
    ("lastfirst_1234_567_model.onnx", "canvas-1234", "lastfirst", False, "model.onnx", "upload"),
    ("lastfirst_LATE_1234_567_model.onnx", "canvas-1234", "lastfirst", True, "model.onnx", "upload"),
    ("петровиван_1234_567_model.onnx", "canvas-1234", "петровиван", False, "model.onnx", "upload"),
    ("o_brienpat_1235_568_policy net.onnx", "canvas-1235", "o_brienpat", False, "policy net.onnx", "upload"),
    ("lastfirst_1234_567_my_model_v2.ipynb", "canvas-1234", "lastfirst", False, "my_model_v2.ipynb", "upload"),
    ("lastfirst_1234_text.html", "canvas-1234", "lastfirst", False, "text.html", "text"),
    ("lastfirst_LATE_1234_link.html", "canvas-1234", "lastfirst", True, "link.html", "link"),
    ("anon_Ab3x9_567_model.onnx", "canvas-anon-Ab3x9", "", False, "model.onnx", "upload"),
    ("LATE_anon_12345_567_model.onnx", "canvas-anon-12345", "", True, "model.onnx", "upload"),
])
def test_canvas_names(name, key, display, late, file_name, plugin):
    e = parse_entry(name, "canvas")
    assert e is not None
    assert (e.student_key, e.display_name, e.late, e.file_name, e.plugin) == (key, display, late, file_name, plugin)
    assert valid_student_id(e.student_key)


def test_canvas_ids_and_resubmission_suffix():
    e = parse_entry("lastfirst_LATE_1234_567_model-1.onnx", "canvas")
    assert (e.lms_id, e.attachment_id, e.file_name, e.canonical_file_name) == ("1234", "567", "model-1.onnx", "model.onnx")
    assert parse_entry("lastfirst_1234_567_model.onnx", "canvas").canonical_file_name == "model.onnx"
    assert parse_entry("lastfirst_1234_567_run-2024.onnx", "canvas").canonical_file_name == "run.onnx"
    assert parse_entry("lastfirst_1234_567_model.onnx", "canvas", is_dir=True) is None  # Canvas zips have no folders
    assert parse_entry("anon_12345_567_model.onnx", "canvas").lms_id == "anon_12345"


HOSTILE = [
    "../x_1_assignsubmission_file_", "..", ".", "", ".hidden", ".x_1_assignsubmission_file_",
    "a/b_1_assignsubmission_file_", "a\\b_1_assignsubmission_file_", "x_1_assignsubmission_file_..",
    "x_1_assignsubmission_file_.", "_1_assignsubmission_file_", "  _1_assignsubmission_file_",
    "x_١٢_assignsubmission_file_", "x\n_1_assignsubmission_file_", "x_1_assignsubmission_file_a\x00b",
    "x_1_assignsubmission_FILE_", "x_assignsubmission_file_", "x_1_assignsubmission_",
    "x_" + "9" * 40 + "_assignsubmission_file_",
    ".lastfirst_1_2_model.onnx", "lastfirst_1_2_..", "lastfirst_1_2_", "lastfirst_1_2", "1234_567_model.onnx",
    "lastfirst_abc_567_model.onnx", "lastfirst_1234_x_model.onnx", "lastfirst_1234_567_a/b.onnx",
    "lastfirst_1234_567_\x1b[2Jscore.onnx", "LATE_1234_567_model.onnx", "anon_!!_567_m.onnx", "anon__567_m.onnx",
    "lastfirst_1234_text.htm", "lastfirst_٣_567_model.onnx",
]


@pytest.mark.parametrize("name", HOSTILE)
def test_hostile_names_are_not_parsed(name):
    assert parse_entry(name, "moodle") is None
    assert parse_entry(name, "canvas") is None


def test_fuzzed_names_never_give_an_unsafe_key():
    """LMS-shaped names with hostile parts in every slot: whatever parses has a safe key and file name."""
    rng = random.Random(1234)
    names = ["Иван Петров", "lastfirst", "..", ".", "../x", "a/b", "a\\b", "", " ", "LATE", "anon", "x\n", "_", "0"]
    ids = ["1", "0042", "1234567", "٣", "12a", "", "..", "9" * 30, "-1", "1/2"]
    tails = ["_assignsubmission_file", "_assignsubmission_file_", "_assignsubmission_onlinetext_", "_", "_567_",
             "_567_LATE_", "_text.html", "_link.html", "_assignsubmission_file_/"]
    files = ["model.onnx", "", ".", "..", "../../etc/passwd", ".hidden", "a\x00b", "model-1.onnx", "x_1_2_y", "\x1b[2J"]
    parsed = 0
    for _ in range(3000):
        parts = [rng.choice(names), rng.choice(["_", "_LATE_", "_anon_", "__"]), rng.choice(ids),
                 rng.choice(tails), rng.choice(files)]
        if rng.random() < 0.3:
            parts.insert(0, rng.choice([".", "..", "/", "LATE_"]))
        name = "".join(parts)
        for layout in ("moodle", "canvas"):
            e = parse_entry(name, layout)
            if e is None:
                continue
            parsed += 1
            assert valid_student_id(e.student_key), (name, e)
            assert "/" not in e.student_key and ".." not in e.student_key and not e.student_key.startswith(".")
            assert e.file_name is None or ("/" not in e.file_name and e.file_name not in (".", ".."))
            assert "\x00" not in (e.file_name or "") and "\x1b" not in (e.file_name or "")
            assert not name.startswith(".") and "/" not in name
    assert parsed > 100  # the fuzzer does reach the parsers


def test_plain_layout_is_left_to_classdir_and_unknown_layout_raises():
    assert parse_entry("s1234.onnx", "plain") is None
    with pytest.raises(ValueError):
        parse_entry("x", "blackboard")  # type: ignore[arg-type]


def test_detect_layout():
    moodle = ["Иван Петров_1234567_assignsubmission_file", "Doe Jane_1234568_assignsubmission_file_",
              "Eve_1234569_assignsubmission_onlinetext_", ".DS_Store", "worksheet.csv"]
    canvas = ["petrovivan_1234_567_model.onnx", "doejane_LATE_1235_568_model.onnx", "doejane_1235_569_hw.ipynb",
              "._petrov", "Grades.csv"]
    assert detect_layout(moodle) == "moodle"
    assert detect_layout(canvas) == "canvas"
    assert detect_layout(["s1", "s2.onnx", "s3.ipynb", "README.txt"]) == "plain"
    assert detect_layout([]) == "plain"
    assert detect_layout([".hidden", ".."]) == "plain"
    # one LMS-looking name among plain student folders: still plain
    assert detect_layout(["s1", "s2", "s3", "x_1_2_model.onnx"]) == "plain"
    # flat Moodle files (no folders)
    assert detect_layout(["A B_1_assignsubmission_file_model.onnx", "C D_2_assignsubmission_file_hw.ipynb"]) == "moodle"


# --- Moodle worksheet --------------------------------------------------------------------------------
def test_read_moodle_worksheet(worksheet):
    students = read_moodle_worksheet(worksheet)
    assert [s.student_key for s in students] == ["moodle-1234567", "moodle-1234568", "moodle-1234569"]
    ivan, jane, evil = students
    assert (ivan.lms_id, ivan.name, ivan.email) == ("1234567", "Иван Петров", "ivan@example.org")
    assert jane.name == "Doe, Jane"
    assert jane.row["Feedback comments"] == "Good work,\r\nsee the notes"
    assert jane.row["Grade"] == "80.00"
    assert list(ivan.row) == list(csv.reader([MOODLE_HEADER]))[0]
    assert (ivan.line, jane.line, evil.line) == (2, 3, 5)  # Jane's feedback spans two lines
    assert evil.name.startswith("=HYPERLINK")  # the raw name; the exports defuse it
    assert all(valid_student_id(s.student_key) for s in students)


@pytest.mark.parametrize("bom, newline", [(False, "\n"), (True, "\n"), (False, "\r\n")])
def test_read_moodle_worksheet_encodings(tmp_path, bom, newline):
    p = tmp_path / "w.csv"
    p.write_bytes(moodle_bytes(bom=bom, newline=newline))
    students = read_moodle_worksheet(p)
    assert [s.name for s in students[:2]] == ["Иван Петров", "Doe, Jane"]
    assert students[0].row["Identifier"] == "Participant 1234567"  # no BOM glued to the first column


def test_moodle_identifier_in_another_language(tmp_path):
    p = tmp_path / "w.csv"
    p.write_bytes(moodle_bytes(rows=[MOODLE_ROWS[0].replace("Participant 1234567", "Участник 1234567")]))
    assert read_moodle_worksheet(p)[0].student_key == "moodle-1234567"


def test_moodle_round_trip(worksheet, tmp_path):
    out = tmp_path / "moodle_grades.csv"
    summary = write_moodle_worksheet(worksheet, {
        "1234567": (87.456, "Mean return 212.3 < 250 target\n-1 point: late"),
        1234568: (None, ""),
        "1234569": (0.0, "=HYPERLINK(\"http://evil\")"),
        "9999999": (50.0, "not in the worksheet"),
    }, out)
    assert summary.written == ["1234567", "1234568", "1234569"] and summary.missing == ["9999999"]
    data = out.read_bytes()
    assert data.startswith(BOM) and b"\r\n" in data and data.count(b"\r\n") == moodle_bytes().count(b"\r\n")
    before, after = parse_csv(moodle_bytes()), parse_csv(data)
    assert after[0] == before[0]                     # same columns, same order
    assert len(after) == len(before) and all(len(r) == len(before[0]) for r in after)
    g, fb = before[0].index("Grade"), before[0].index("Feedback comments")
    assert after[1][g] == "87.46"
    assert after[1][fb] == "Mean return 212.3 &lt; 250 target<br>\n-1 point: late"
    assert after[2][g] == "" and after[2][fb] == "Good work,\r\nsee the notes"   # None: empty; no feedback: kept
    assert after[3][g] == "0.00" and after[3][fb].startswith("'=")               # untrusted feedback defused
    for i in range(1, 4):                            # everything else as it was (the hostile name defused)
        for j, (a, b) in enumerate(zip(before[i], after[i])):
            if j in (g, fb):
                continue
            assert a == b or (a.startswith("=") and b == "'" + a), (i, before[0][j], a, b)
    reread = read_moodle_worksheet(out)
    assert [(s.lms_id, s.row["Grade"]) for s in reread] == [("1234567", "87.46"), ("1234568", ""), ("1234569", "0.00")]
    assert reread[0].name == "Иван Петров" and reread[1].name == "Doe, Jane"
    assert reread[0].row["Last modified (grade)"] == "-"   # Moodle reads this one: verbatim


def test_moodle_keeps_template_format_without_bom(tmp_path):
    src = tmp_path / "w.csv"
    src.write_bytes(moodle_bytes(bom=False, newline="\n"))
    out = tmp_path / "o.csv"
    write_moodle_worksheet(src, {"1234567": (10, "")}, out)
    data = out.read_bytes()
    assert not data.startswith(BOM) and b"\r\n" not in data.replace(b"Good work,\r\n", b"")


def test_moodle_write_from_rows_writes_a_bom(worksheet, tmp_path):
    out = tmp_path / "o.csv"
    write_moodle_worksheet(read_moodle_worksheet(worksheet), {"1234568": (99.5, "ok")}, out)
    assert out.read_bytes().startswith(BOM)
    rows = parse_csv(out.read_bytes())
    assert rows[0] == parse_csv(moodle_bytes())[0]
    assert rows[2][4] == "99.50" and rows[2][9] == "ok"
    with pytest.raises(LmsFormatError):
        write_moodle_worksheet([], {}, out)


def test_moodle_grade_above_maximum_is_refused(worksheet, tmp_path):
    with pytest.raises(LmsFormatError, match=r"line 2: 120.00 points but the assignment's Maximum Grade is 100.00"):
        write_moodle_worksheet(worksheet, {"1234567": (120, "")}, tmp_path / "o.csv")
    assert not (tmp_path / "o.csv").exists()


@pytest.mark.parametrize("points", [float("nan"), float("inf"), -1.0, "10", True])
def test_bad_points_are_refused(worksheet, tmp_path, points):
    with pytest.raises(LmsFormatError):
        write_moodle_worksheet(worksheet, {"1234567": (points, "")}, tmp_path / "o.csv")


def test_format_points():
    assert [format_points(x) for x in (0, 7, 87.456, 1234567.5)] == ["0.00", "7.00", "87.46", "1234567.50"]


def test_moodle_scale_assignment_is_refused(tmp_path):
    p = tmp_path / "w.csv"
    p.write_bytes(moodle_bytes(header=MOODLE_HEADER.replace('"Maximum Grade"', "Scale")))
    with pytest.raises(LmsFormatError, match="scale"):
        write_moodle_worksheet(p, {"1234567": (1, "")}, tmp_path / "o.csv")


@pytest.mark.parametrize("rows, message", [
    ([MOODLE_ROWS[0], '"Participant 1234568","Doe, Jane",jane@example.org'], r"line 3: 3 fields but the header has 10"),
    ([MOODLE_ROWS[0], MOODLE_ROWS[2].replace("Participant 1234569", "Student ?")], r"line 3: Identifier 'Student \?'"),
    ([MOODLE_ROWS[0], MOODLE_ROWS[0]], r"line 3: participant 1234567 is already on line 2"),
    ([MOODLE_ROWS[0], '"Participant 1234568,"unterminated'], r"broken CSV quoting|fields but the header"),
])
def test_moodle_bad_rows_name_file_and_line(tmp_path, rows, message):
    p = tmp_path / "worksheet.csv"
    p.write_bytes(moodle_bytes(rows=rows))
    with pytest.raises(LmsFormatError, match=message) as err:
        read_moodle_worksheet(p)
    assert "worksheet.csv" in str(err.value)
    assert isinstance(err.value, SetupError)


def test_moodle_missing_columns(tmp_path):
    p = tmp_path / "w.csv"
    p.write_bytes(moodle_bytes(header=MOODLE_HEADER.replace("Identifier", "Who")))
    with pytest.raises(LmsFormatError, match=r"w.csv, line 1: no 'Identifier' column.*English"):
        read_moodle_worksheet(p)
    p.write_bytes(moodle_bytes(header=MOODLE_HEADER.replace('"Last modified (grade)"', "Changed")))
    read_moodle_worksheet(p)  # readable as a roster ...
    with pytest.raises(LmsFormatError, match="Last modified \\(grade\\)"):
        write_moodle_worksheet(p, {"1234567": (1, "")}, tmp_path / "o.csv")  # ... but Moodle would not import it
    p.write_bytes(moodle_bytes(header=MOODLE_HEADER.replace("Status", "Grade")))
    with pytest.raises(LmsFormatError, match="appears twice"):
        read_moodle_worksheet(p)


def test_unreadable_files(tmp_path):
    p = tmp_path / "w.csv"
    p.write_bytes(moodle_bytes(bom=False).decode("utf-8").encode("cp1251"))
    with pytest.raises(LmsFormatError, match=r"w.csv, line 2: not UTF-8.*CSV UTF-8"):
        read_moodle_worksheet(p)
    p.write_bytes(b"")
    with pytest.raises(LmsFormatError, match="empty"):
        read_moodle_worksheet(p)
    with pytest.raises(LmsFormatError, match="cannot read"):
        read_moodle_worksheet(tmp_path / "missing.csv")


def test_output_through_a_planted_symlink_is_replaced(worksheet, tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("keep")
    out = tmp_path / "moodle_grades.csv"
    out.symlink_to(victim)
    write_moodle_worksheet(worksheet, {"1234567": (1, "")}, out)
    assert victim.read_text() == "keep" and not out.is_symlink()


# --- Canvas gradebook ----------------------------------------------------------------------------------
def test_read_canvas_gradebook(gradebook):
    students = read_canvas_gradebook(gradebook)
    assert [s.student_key for s in students] == ["canvas-1234", "canvas-1235", "canvas-1236", "canvas-1299"]
    ivan, pat, eve, test = students
    assert (ivan.name, ivan.email, ivan.row["Section"]) == ("Петров, Иван", "ivan@example.org", "Section A")
    assert (pat.name, pat.email, pat.row["RL Homework (202)"]) == ("O'Brien, Pat", "", "55.00")
    assert eve.name.startswith("=cmd")  # Canvas's ="..." wrapper removed
    assert test.lms_id == "1299"
    assert (ivan.line, pat.line) == (4, 5)


@pytest.mark.parametrize("bom, newline, sep", [(True, "\r\n", ";"), (True, "\n", ","), (False, "\r\n", ",")])
def test_read_canvas_variants(tmp_path, bom, newline, sep):
    p = tmp_path / "g.csv"
    p.write_bytes(canvas_bytes(bom=bom, newline=newline, sep=sep))
    students = read_canvas_gradebook(p)
    assert [s.lms_id for s in students] == ["1234", "1235", "1236", "1299"]
    assert students[0].name == "Петров, Иван" and students[0].row["Student"] == "Петров, Иван"


def test_read_canvas_first_last_and_minimal_headers(tmp_path):
    p = tmp_path / "g.csv"
    p.write_text("LastName,FirstName,ID,SIS Login ID,Section,HW (9)\n    Points Possible,,,,,5.00\n"
                 "Петров,Иван,77,ivan@example.org,A,4.00\n", encoding="utf-8")
    (s,) = read_canvas_gradebook(p)
    assert (s.student_key, s.name, s.email) == ("canvas-77", "Иван Петров", "ivan@example.org")
    p.write_text("Student,ID,Section,HW (9)\n    Points Possible,,,5.00\n\"Doe, Jane\",78,A,\n", encoding="utf-8")
    assert read_canvas_gradebook(p)[0].student_key == "canvas-78"


def test_canvas_bad_files(tmp_path):
    p = tmp_path / "g.csv"
    p.write_text("Name,Number,Section\nx,1,A\n")
    with pytest.raises(LmsFormatError, match=r"g.csv, line 1: .*not a Canvas gradebook"):
        read_canvas_gradebook(p)
    p.write_text("Student,ID,SIS Login ID,HW (1)\n\"Doe, J\",5,j,1\n")
    with pytest.raises(LmsFormatError, match="Section"):
        read_canvas_gradebook(p)
    p.write_text("Student,ID,Section\n    Points Possible,,\n\"Doe, J\",five,A\n")
    with pytest.raises(LmsFormatError, match=r"line 3: ID 'five'"):
        read_canvas_gradebook(p)
    p.write_text("Student,ID,Section\n\"Doe, J\",5,A\n\"Doe, J\",5,A\n")
    with pytest.raises(LmsFormatError, match=r"line 3: user 5 is already on line 2"):
        read_canvas_gradebook(p)


def canvas_import_check(data: bytes) -> list[list[str]]:
    """The header and row rules of Canvas's GradebookImporter (app/models/gradebook_importer.rb)."""
    rows = parse_csv(data)
    h = rows[0]
    assert len(h) > 3 and "Student" in h[0] and "ID" in h[1]
    assert h[h.index("Section")] == "Section" and h.index("Section") == len(h) - 2  # one assignment column
    assert "Points Possible" in rows[1][0]
    assert all(len(r) == len(h) for r in rows)
    return rows


def test_canvas_existing_column(gradebook, tmp_path):
    out = tmp_path / "canvas_grades.csv"
    summary = write_canvas_gradebook(gradebook, "RL Homework", {
        "1234": (87.456, "feedback is not imported by Canvas"), "1235": (None, ""), "1236": (100, ""),
        "4242": (1, "")}, out)
    assert summary.written == ["1234", "1235", "1236"] and summary.missing == ["4242"]
    rows = canvas_import_check(out.read_bytes())
    assert rows[0] == ["Student", "ID", "SIS User ID", "SIS Login ID", "Section", "RL Homework (202)"]
    assert rows[1] == ["    Points Possible", "", "", "", "", "100.00"]
    assert rows[2] == ["Петров, Иван", "1234", "S001", "ivan@example.org", "Section A", "87.46"]
    assert rows[3] == ["O'Brien, Pat", "1235", "S002", "pbrien", "Section A and Section B", "55.00"]  # None: kept
    assert rows[4][0].startswith("'=") and rows[4][1:] == ["1236", "S003", "eve@example.org", "Section A", "100.00"]
    assert rows[5] == ["Student, Test", "1299", "", "", "Section A", ""]
    assert len(rows) == 6  # the Manual Posting row is dropped; Canvas skips it anyway
    again = read_canvas_gradebook(out)  # the output is itself a readable gradebook
    assert [(s.lms_id, s.row["RL Homework (202)"]) for s in again] == [
        ("1234", "87.46"), ("1235", "55.00"), ("1236", "100.00"), ("1299", "")]
    assert write_canvas_gradebook(gradebook, "RL Homework (202)", {}, out).written == []  # exact header works too


def test_canvas_new_column_keeps_template_format(tmp_path):
    src = tmp_path / "g.csv"
    src.write_bytes(canvas_bytes(bom=True, newline="\r\n", sep=";"))
    out = tmp_path / "canvas_grades.csv"
    write_canvas_gradebook(src, "RL HW 4: LunarLander", {"1234": (50, "")}, out, points_possible=100)
    data = out.read_bytes()
    assert data.startswith(BOM) and data.count(b"\r\n") == 6
    rows = [r for r in csv.reader(io.StringIO(data.decode("utf-8-sig"), newline=""), delimiter=";")]
    assert rows[0][-1] == "RL HW 4: LunarLander" and rows[1][-1] == "100.00"
    assert rows[2][-1] == "50.00" and rows[3][-1] == ""


@pytest.mark.parametrize("column, message", [
    ("HW 9 (999)", "assignment id"), ("Current Score", "Canvas's own column"), ("Section", "Canvas's own column"),
    ("", "empty"), (" padded", "surrounding spaces"), ("bell\x07", "control characters"),
])
def test_canvas_bad_new_columns(gradebook, tmp_path, column, message):
    with pytest.raises(LmsFormatError, match=message):
        write_canvas_gradebook(gradebook, column, {"1234": (1, "")}, tmp_path / "o.csv")


def test_canvas_ambiguous_title(tmp_path):
    p = tmp_path / "g.csv"
    p.write_text("Student,ID,Section,HW (1),HW (2)\n    Points Possible,,,1,1\n\"D, J\",5,A,,\n")
    with pytest.raises(LmsFormatError, match="2 assignments are titled 'HW'"):
        write_canvas_gradebook(p, "HW", {}, tmp_path / "o.csv")


# --- rosters ---------------------------------------------------------------------------------------------
def test_detect_roster_kind_and_read_any(worksheet, gradebook, tmp_path):
    generic = tmp_path / "roster.csv"
    generic.write_text("student_id,name,email\ns1,Иван Петров,ivan@example.org\ns2,\"Doe, Jane\",\n", encoding="utf-8")
    assert [detect_roster_kind(p) for p in (worksheet, gradebook, generic)] == ["moodle", "canvas", "generic"]
    kind, students = read_lms_roster(generic)
    assert kind == "generic" and [(s.student_key, s.name) for s in students] == [("s1", "Иван Петров"), ("s2", "Doe, Jane")]
    kind, students = read_lms_roster(worksheet)
    roster = to_roster(students)
    assert kind == "moodle" and roster.ids() == ["moodle-1234567", "moodle-1234568", "moodle-1234569"]
    assert roster.get("moodle-1234568").name == "Doe, Jane"
    kind, students = read_lms_roster(gradebook)
    assert kind == "canvas" and to_roster(students).get("canvas-1234").email == "ivan@example.org"
    generic.write_text("student_id,name\n../etc,x\n")
    with pytest.raises(LmsFormatError, match="not a valid student id"):
        read_lms_roster(generic)


def test_canvas_points_row_is_written_even_when_the_template_lacks_it(tmp_path):
    p = tmp_path / "g.csv"
    p.write_text("Student,ID,SIS Login ID,Section\n\"Doe, Jane\",5,jd,A\n")
    out = tmp_path / "o.csv"
    write_canvas_gradebook(p, "RL HW", {"5": (3.5, "")}, out, points_possible=10)
    assert canvas_import_check(out.read_bytes()) == [
        ["Student", "ID", "SIS Login ID", "Section", "RL HW"], ["    Points Possible", "", "", "", "10.00"],
        ["Doe, Jane", "5", "jd", "A", "3.50"]]


# --- the whole round trip through `grade batch` ----------------------------------------------------
def test_moodle_download_and_worksheet_round_trip_through_grade_batch(tmp_path, worksheet):
    """Moodle's folders in, the worksheet filled in out: grades land in the right rows, BOM kept."""
    import shutil

    from grader.cli import main

    reference = Path(__file__).resolve().parent.parent / "reference" / "models" / "lunarlander_improved.onnx"
    d = tmp_path / "download"
    (d / "Иван Петров_1234567_assignsubmission_file").mkdir(parents=True)
    shutil.copyfile(reference, d / "Иван Петров_1234567_assignsubmission_file" / "model.onnx")
    (d / "Doe, Jane_1234568_assignsubmission_file_model.onnx").write_bytes(b"not a model")  # flat file, broken
    out = tmp_path / "out"
    rubric = Path(__file__).resolve().parent.parent / "rubrics" / "lunarlander.toml"
    assert main(["batch", str(d), "--rubric", str(rubric), "--roster", str(worksheet), "--out", str(out),
                 "--episodes", "3", "--no-video", "--no-progress", "--reference", str(tmp_path)]) == 0
    written = (out / "moodle_grades.csv").read_bytes()
    assert written.startswith(BOM)
    rows = {r[0]: r for r in parse_csv(written)[1:]}
    header = parse_csv(written)[0]
    grade_col, feedback_col = header.index("Grade"), header.index("Feedback comments")
    assert float(rows["Participant 1234567"][grade_col]) == 100.0  # the reference: all points, scaled to Maximum Grade 100
    assert rows["Participant 1234568"][grade_col] == "0.00" and "invalid" in rows["Participant 1234568"][feedback_col]
    assert rows["Participant 1234569"][grade_col] == ""  # no submission: left for the instructor
    generic = list(csv.DictReader(io.StringIO((out / "grades.csv").read_text(encoding="utf-8"))))
    by_id = {r["student_id"]: r for r in generic}
    assert by_id["moodle-1234567"]["email"] == "ivan@example.org" and by_id["moodle-1234567"]["name"] == "Иван Петров"


def test_canvas_download_and_gradebook_round_trip_through_grade_batch(tmp_path, gradebook):
    import shutil

    from grader.cli import main

    reference = Path(__file__).resolve().parent.parent / "reference" / "models" / "lunarlander_improved.onnx"
    d = tmp_path / "submissions"
    d.mkdir()
    shutil.copyfile(reference, d / "petrovivan_1234_5550001_model.onnx")
    shutil.copyfile(reference, d / "obrienpat_LATE_1235_5550002_model-1.onnx")  # late, re-uploaded
    out = tmp_path / "out"
    rubric = Path(__file__).resolve().parent.parent / "rubrics" / "lunarlander.toml"
    assert main(["batch", str(d), "--rubric", str(rubric), "--roster", str(gradebook), "--out", str(out),
                 "--episodes", "3", "--no-video", "--no-progress", "--reference", str(tmp_path)]) == 0
    table = parse_csv((out / "canvas_grades.csv").read_bytes())
    header = table[0]
    assert header[:5] == ["Student", "ID", "SIS User ID", "SIS Login ID", "Section"]
    column = header.index(next(h for h in header[5:] if h.startswith("LunarLander") or h.startswith("lunarlander")))
    assert table[1][0].strip() == "Points Possible" and float(table[1][column]) == 10
    by_id = {r[1]: r for r in table[2:]}
    assert float(by_id["1234"][column]) == 10.0 and float(by_id["1235"][column]) == 10.0
