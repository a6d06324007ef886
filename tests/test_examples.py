"""The shipped example class (examples/class, built by examples/make_class.py) grades as documented."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

from grader.cli import main

REPO = Path(__file__).resolve().parent.parent
EXAMPLES = REPO / "examples"


def test_the_example_class_is_what_make_class_writes(tmp_path, monkeypatch):
    import importlib.util

    spec = importlib.util.spec_from_file_location("make_class", EXAMPLES / "make_class.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    monkeypatch.setattr(module, "CLASS", tmp_path / "class")
    monkeypatch.setattr(module, "HERE", tmp_path)
    module.main()
    shipped = sorted(p.relative_to(EXAMPLES / "class") for p in (EXAMPLES / "class").rglob("*") if p.is_file())
    made = sorted(p.relative_to(tmp_path / "class") for p in (tmp_path / "class").rglob("*") if p.is_file())
    assert shipped == made
    for rel in made:
        assert (EXAMPLES / "class" / rel).read_bytes() == (tmp_path / "class" / rel).read_bytes(), rel


def test_grade_batch_on_the_example_class(tmp_path):
    class_dir = tmp_path / "class"
    shutil.copytree(EXAMPLES / "class", class_dir)
    out = tmp_path / "out"
    assert main(["batch", str(class_dir), "--rubric", str(REPO / "rubrics" / "lunarlander.toml"), "--roster",
                 str(EXAMPLES / "roster.csv"), "--out", str(out), "--episodes", "10", "--no-video", "--no-progress"]) == 0
    with open(out / "grades.csv", newline="", encoding="utf-8") as f:
        rows = {r["student_id"]: r for r in csv.DictReader(f)}
    assert {sid: r["status"] for sid, r in rows.items()} == {
        "ada": "graded", "boris": "graded", "chen": "invalid", "dana": "graded", "emil": "graded",
        "fatima": "invalid", "gleb": "graded", "hana": "invalid", "ivan": "no submission"}
    # the LunarLander assignment is the ONNX model: 10 points; a notebook is not graded, and a notebook
    # without a model lacks the required part
    assert rows["boris"]["name"] == "Борис Петров" and all(r["max_points"] == "10" for r in rows.values())
    assert float(rows["ada"]["points"]) == 10 and 0 < float(rows["emil"]["points"]) < 10
    assert "trained model (model.onnx) is not handed in" in rows["fatima"]["note"]
    assert "PyTorch checkpoint" in rows["hana"]["note"] and "protobuf" in rows["chen"]["note"]
    assert rows["gleb"]["points"] == rows["ada"]["points"]  # the sidecar export is the same model
    with open(out / "duplicates.csv", newline="") as f:
        pairs = {frozenset((d["student_a"], d["student_b"])) for d in csv.DictReader(f)}
    assert frozenset({"ada", "dana"}) in pairs and frozenset({"ada", "gleb"}) in pairs
    html = (out / "class.html").read_text()
    assert "Борис Петров" in html and "identical" in html
