"""Duplicate detection that a copy cannot game, and copies of the reference models on every channel.

Each weakness of the old detectors has its attack here, then the effect observed:

* a copy with one extra unused tensor and a lookup that answers differently on the fixed, public
  probe states (the old weight fingerprint hashed every tensor; the old probe set was public);
* a class whose policies agree a lot anyway (a fixed 95 % threshold floods the instructor);
* the shipped reference handed in unchanged to ``grade`` alone (no flag, full marks).
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from benchmarks import classgen as g
from grader.cli import main

REPO = Path(__file__).resolve().parent.parent
REFERENCE = REPO / "reference" / "models" / "lunarlander_improved.onnx"


def gamed_copy(data: bytes, lookup_states: np.ndarray) -> bytes:
    """``data``'s policy, plus an unused extra tensor, plus a lookup: on any of ``lookup_states``
    (to the float) the action scores are rotated by one, so the argmax differs there only."""
    model = onnx.load_from_string(data)
    graph = model.graph
    out = graph.output[0].name
    obs = graph.input[0].name
    for node in graph.node:  # the policy's own output becomes an inner value
        node.output[:] = ["copied_scores" if o == out else o for o in node.output]
    rng = np.random.default_rng(7)
    graph.initializer.extend([
        numpy_helper.from_array(rng.standard_normal((32, 32)).astype(np.float32), "unused_extra"),  # never read
        numpy_helper.from_array(lookup_states.astype(np.float32), "lookup_table"),
        numpy_helper.from_array(np.array([1], np.int64), "axis1"),
        numpy_helper.from_array(np.array([2], np.int64), "axis2"),
        numpy_helper.from_array(np.array(1e-6, np.float32), "eps"),
        numpy_helper.from_array(np.array(1.0, np.float32), "one"),
        numpy_helper.from_array(np.array([1, 2, 3, 0], np.int64), "rotate"),
    ])
    graph.node.extend([
        helper.make_node("Unsqueeze", [obs, "axis1"], ["obs3"]),
        helper.make_node("Sub", ["obs3", "lookup_table"], ["diff"]),
        helper.make_node("Abs", ["diff"], ["absdiff"]),
        helper.make_node("ReduceSum", ["absdiff", "axis2"], ["dist"], keepdims=0),
        helper.make_node("ReduceMin", ["dist"], ["nearest"], axes=[1], keepdims=1),
        helper.make_node("Less", ["nearest", "eps"], ["hit"]),
        helper.make_node("Cast", ["hit"], ["mask"], to=TensorProto.FLOAT),
        helper.make_node("Sub", ["one", "mask"], ["keep"]),
        helper.make_node("Gather", ["copied_scores", "rotate"], ["rotated"], axis=1),
        helper.make_node("Mul", ["copied_scores", "keep"], ["kept"]),
        helper.make_node("Mul", ["rotated", "mask"], ["swapped"]),
        helper.make_node("Add", ["kept", "swapped"], [out]),
    ])
    onnx.checker.check_model(model)
    return model.SerializeToString()


def public_probe_states() -> np.ndarray:
    """The fixed probe states that today's main compares behaviour on: anyone can regenerate them."""
    from grader.submission.probestates import probe_states
    from grader.tasks.contract import get_task

    return probe_states(get_task("lunarlander"), 512)


def read_csv(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_the_gamed_copy_acts_differently_on_the_public_probe_states_only():
    """The attack is real: onnxruntime gives other argmax actions on the public states, the same elsewhere."""
    import onnxruntime as ort

    public = public_probe_states()
    original = g.random_mlp(1)
    gamed = gamed_copy(original, public)
    run = {k: ort.InferenceSession(m, providers=["CPUExecutionProvider"]) for k, m in (("o", original), ("g", gamed))}
    act = {k: lambda x, s=s: s.run(None, {s.get_inputs()[0].name: x})[0].argmax(axis=1) for k, s in run.items()}
    assert (act["o"](public) != act["g"](public)).mean() > 0.9
    other = public + np.float32(0.01)
    assert (act["o"](other) == act["g"](other)).all()


# --- the used weights, tensor by tensor -------------------------------------------------------------
def test_used_weights_see_through_extra_tensors_and_lookups():
    from grader.submission.weights import compare_weights, weight_prints

    original = g.random_mlp(1)
    gamed = gamed_copy(original, public_probe_states())
    match = compare_weights(weight_prints(original), weight_prints(gamed))
    assert match.same and match.share == 1.0 and match.tensors == 3  # W1 b1 W2 (b2 is too small), whatever surrounds them
    # the unused tensor is not among the used ones; the lookup table is
    assert len(weight_prints(gamed)) == len(weight_prints(original)) + 1
    # re-serialised (names, order, transposed matrices, opset): the same weights
    assert compare_weights(weight_prints(original), weight_prints(g.reserialised(1))).same
    # another student's weights: nothing shared; weights perturbed by noise are not the same (behaviour's job)
    assert compare_weights(weight_prints(original), weight_prints(g.random_mlp(2))).shared == 0
    assert not compare_weights(weight_prints(g.random_mlp(4)), weight_prints(g.near_duplicate(4))).same


def test_batch_flags_a_gamed_copy(tmp_path):
    """A copy with an unused extra tensor and a lookup on the public probe states: flagged by
    its used weights and by its behaviour on the hidden probe states."""
    d = tmp_path / "class"
    original = g.random_mlp(1)
    g.write(d / "alice.onnx", original)
    g.write(d / "mallory.onnx", gamed_copy(original, public_probe_states()))
    for i, seed in enumerate((2, 3, 5)):
        g.write(d / f"s{i}.onnx", g.random_mlp(seed))
    rubric = g.lunarlander_rubric(tmp_path / "r.toml", episodes=3)
    (tmp_path / "norefs").mkdir()
    assert main(["batch", str(d), "--rubric", str(rubric), "--out", str(tmp_path / "out"), "--no-video",
                 "--no-progress", "--reference", str(tmp_path / "norefs")]) == 0
    flags = read_csv(tmp_path / "out" / "duplicates.csv")
    pairs = {f["kind"]: f for f in flags if {f["student_a"], f["student_b"]} == {"alice", "mallory"}}
    assert "same_weights" in pairs and "100%" in pairs["same_weights"]["detail"]
    # one cluster, the only one: nothing else of the class is flagged
    assert {f["cluster"] for f in flags} == {"1"} and {s for f in flags for s in (f["student_a"], f["student_b"])} == \
        {"alice", "mallory"}
    # the flag is in both students' result.json and report (written once more, with it, by the one writer)
    for student, other in (("alice", "mallory"), ("mallory", "alice")):
        folder = next((tmp_path / "out" / "reports" / student).iterdir())
        result = json.loads((folder / "result.json").read_text())
        assert [(f["kind"], f["other"], f["scope"]) for f in result["flags"]] == [("same_weights", other, "class")]
        assert f"same weights as {other}" in (folder / "report.html").read_text()
        tests = [t["name"] for t in json.loads((folder / "results.json").read_text())["tests"]]
        assert "duplicate check" in tests


def test_hidden_probe_states_are_not_the_public_ones_and_the_gamed_copy_agrees_on_them():
    from grader.classroom.duplicates import hidden_probe_set
    from grader.runtime.engine import Engine
    from grader.scoring.rubric import load_rubric

    rubric = load_rubric(REPO / "rubrics" / "lunarlander.toml")
    probe = hidden_probe_set(rubric)
    states, probe_id = probe.states, probe.id
    assert probe.frames is None and states.shape == (512, 8) and len(probe_id) == 16
    public = public_probe_states()
    assert not (np.abs(states[:, None, :] - public[None, :, :]).sum(axis=2) < 1e-6).any()
    # the same rubric, the same states (every slot of a class compares on the same set); other seeds, others
    assert np.array_equal(hidden_probe_set(rubric).states, states)
    other = rubric.model_copy(update={"seeds": rubric.seeds.model_copy(update={"grading": list(range(5000, 5100))})})
    assert not np.array_equal(hidden_probe_set(other).states, states)
    original = g.random_mlp(1)
    with Engine(1) as engine:
        engine.load(original, task="lunarlander")
        a = engine.actions(states)
        engine.load(gamed_copy(original, public), task="lunarlander")
        b = engine.actions(states)
    assert (a == b).all()


# --- the class's own distribution of agreement ----------------------------------------------------
def _class_of_similar_policies(n: int = 40, states: int = 512, seed: int = 0):
    """``n`` policies that each deviate from one common policy on 2-5 % of the states (trained on
    one notebook, they agree a lot), plus a copy of student 0 that deviates on one state from it."""
    from grader.classroom.duplicates import Candidate

    rng = np.random.default_rng(seed)
    base = rng.integers(0, 4, states)
    cands = []
    for i in range(n):
        acts = base.copy()
        flip = rng.random(states) < rng.uniform(0.02, 0.05)
        acts[flip] = (acts[flip] + rng.integers(1, 4, flip.sum())) % 4
        cands.append(Candidate(label=f"s{i:02d}", file=f"s{i:02d}.onnx", sha256=f"{i:064x}", actions=acts.astype(np.uint8)))
    copy = cands[0].actions.copy()
    copy[:1] = (copy[:1] + 1) % 4
    cands.append(Candidate(label="copycat", file="copycat.onnx", sha256="f" * 64, actions=copy))
    return cands


def test_a_class_that_agrees_a_lot_flags_only_what_stands_out():
    from grader.classroom.duplicates import find_duplicates

    cands = _class_of_similar_policies()
    agree = [(a.actions == b.actions).mean() for i, a in enumerate(cands) for b in cands[i + 1:]]
    assert sum(x >= 0.95 for x in agree) > 50  # today's fixed threshold: a flood nobody reads
    report = find_duplicates(cands)
    assert [{f.a.label, f.b.label} for f in report.flags] == [{"copycat", "s00"}]
    assert report.flags[0].z >= 4 and "z =" in report.flags[0].detail and "class median" in report.flags[0].detail
    assert len(report.clusters) == 1 and report.clusters[0].members == ["copycat", "s00"]
    assert "robust z-score" in report.rule


def test_identical_copies_make_one_cluster_ranked_by_evidence():
    from grader.classroom.duplicates import Candidate, find_duplicates
    from grader.submission.weights import weight_prints

    cands = _class_of_similar_policies()
    same = cands[5].actions
    for name in ("c1", "c2", "c3"):  # three hand-ins of one file
        cands.append(Candidate(label=name, file=f"{name}.onnx", sha256="a" * 64, actions=same.copy()))
    prints = weight_prints(g.random_mlp(9))
    cands += [Candidate(label=n, file=f"{n}.onnx", sha256=n * 64, weights=prints) for n in ("w", "x")]  # same weights
    report = find_duplicates(cands)
    numbers = {tuple(c.members): c.number for c in report.clusters}
    assert numbers[("c1", "c2", "c3", "s05")] == 1  # identical files first, one cluster for the copies of one file
    assert numbers[("w", "x")] == 2  # then the same weights
    assert numbers[("copycat", "s00")] == 3  # then behaviour alone
    assert [f.cluster for f in report.flags] == sorted(f.cluster for f in report.flags)
    assert all(f.evidence >= g2.evidence for f, g2 in zip(report.flags, report.flags[1:]) if f.cluster == g2.cluster)


def test_a_small_class_keeps_the_fixed_threshold():
    from grader.classroom.duplicates import MIN_CLASS, find_duplicates

    cands = _class_of_similar_policies(n=MIN_CLASS - 2)
    report = find_duplicates(cands, threshold=0.99)
    assert [{f.a.label, f.b.label} for f in report.flags] == [{"copycat", "s00"}] and "too small" in report.rule


# --- the references in every channel ----------------------------------------------------------------
def test_grade_alone_flags_an_unchanged_reference(tmp_path, capsys):
    out = tmp_path / "out"
    assert main([str(REFERENCE), "--episodes", "2", "--no-video", "--out", str(out)]) == 0
    assert "flagged for the instructor: a copy of a course reference model: the same file as the reference model lunarlander_improved.onnx" in \
        " ".join(capsys.readouterr().out.split())
    result = json.loads((out / "result.json").read_text())
    assert result["status"] == "graded" and result["score"] > 0  # the rubric's default: flag, graded as usual
    assert [(f["kind"], f["other"], f["action"]) for f in result["flags"]] == \
        [("identical", "reference:lunarlander_improved.onnx", "flag")]
    assert "the same file as the reference model lunarlander_improved.onnx" in (out / "report.html").read_text()
    # the same words in Jupyter's inline view and the terminal
    from grader.outputs.report import render_inline_html
    from grader.result import GradeResult

    graded = GradeResult.from_json((out / "result.json").read_text())
    assert graded.flags[0].text in __import__("html").unescape(render_inline_html(graded))


def test_grade_flags_a_gamed_reference_copy_by_its_weights(tmp_path):
    path = tmp_path / "mine.onnx"
    path.write_bytes(gamed_copy(REFERENCE.read_bytes(), public_probe_states()))
    out = tmp_path / "out"
    assert main([str(path), "--episodes", "2", "--no-video", "--out", str(out)]) == 0
    flags = json.loads((out / "result.json").read_text())["flags"]
    assert [(f["kind"], f["other"]) for f in flags] == [("same_weights", "reference:lunarlander_improved.onnx")]


def test_a_rubric_can_make_a_reference_copy_invalid(tmp_path, capsys):
    text = (REPO / "rubrics" / "lunarlander.toml").read_text().replace("../reference/", f"{REPO}/reference/")
    text = text.replace("baselines = \"baselines/", f"baselines = \"{REPO}/rubrics/baselines/")
    rubric = tmp_path / "strict.toml"
    rubric.write_text(text + '\n[duplicates]\nreference_copy = "invalid"\n')
    out = tmp_path / "out"
    code = main([str(REFERENCE), "--rubric", str(rubric), "--episodes", "2", "--no-video", "--out", str(out)])
    assert code == 2
    result = json.loads((out / "result.json").read_text())
    assert result["status"] == "invalid" and result["score"] == 0
    assert "copy of the course's reference model lunarlander_improved.onnx" in result["error"]
    assert result["flags"][0]["action"] == "invalid"
    assert "the model you trained yourself" in capsys.readouterr().out


def test_the_reference_copy_setting_changes_the_rubric_fingerprint(tmp_path):
    from grader.scoring.rubric import load_rubric

    base = g.lunarlander_rubric(tmp_path / "a.toml")
    strict = tmp_path / "b.toml"
    strict.write_text(base.read_text() + '\n[duplicates]\nreference_copy = "invalid"\n')
    assert load_rubric(base).fingerprint() != load_rubric(strict).fingerprint()
    bad = tmp_path / "c.toml"
    bad.write_text(base.read_text() + '\n[duplicates]\nreference_copy = "ignore"\n')
    with pytest.raises(Exception, match="reference_copy"):
        load_rubric(bad)


# --- one writer of outputs ----------------------------------------------------------------------------
def test_a_duplicate_check_warning_reaches_the_report_too(tmp_path):
    """The job's duplicate evidence is decided before the outputs are written: its warning is in
    result.json and in report.html alike (it used to be appended after the report was written)."""
    import html

    from grader.classroom.duplicates import ProbeSet
    from grader.classroom.jobs import JobOptions, grade_job
    from grader.pipeline import Options
    from grader.runtime.engine import Engine
    from grader.scoring.rubric import load_rubric
    from grader.submission.bundle import submission_from_bytes

    rubric = load_rubric(g.lunarlander_rubric(tmp_path / "r.toml", episodes=2))
    not_states = np.full((4, 8), np.nan, np.float32)  # the task's shape, but NaN: the model's outputs are NaN
    opts = JobOptions(rubric=rubric, options=Options(episodes=2, video=False, workers=1),
                      probe=ProbeSet("lunarlander", not_states, "x"))
    with Engine(1) as engine:
        outcome = grade_job(submission_from_bytes("model.onnx", g.random_mlp(1)), opts, engine=engine,
                            out=tmp_path / "out")
    warning = next(w for w in outcome.result.warnings if w.startswith("duplicate check"))
    assert warning in json.loads((tmp_path / "out" / "result.json").read_text())["warnings"]
    assert warning in html.unescape((tmp_path / "out" / "report.html").read_text())


def test_batch_makes_a_reference_copy_invalid_when_the_rubric_says_so(tmp_path):
    d = tmp_path / "class"
    g.write(d / "lazy.onnx", REFERENCE.read_bytes())
    g.write(d / "own.onnx", g.random_mlp(3))
    rubric = g.lunarlander_rubric(tmp_path / "r.toml", episodes=2)
    rubric.write_text(rubric.read_text() + f'\n[references]\nreference = "{REFERENCE}"\n'
                      '\n[duplicates]\nreference_copy = "invalid"\n')
    assert main(["batch", str(d), "--rubric", str(rubric), "--out", str(tmp_path / "out"), "--no-video",
                 "--no-progress"]) == 0
    grades = {r["student_id"]: r for r in read_csv(tmp_path / "out" / "grades.csv")}
    assert grades["lazy"]["status"] == "invalid" and "copy of the course's reference model" in grades["lazy"]["note"]
    assert grades["own"]["status"] == "graded"
    folder = next((tmp_path / "out" / "reports" / "lazy").iterdir())
    flags = json.loads((folder / "result.json").read_text())["flags"]
    assert [(f["kind"], f["other"], f["scope"], f["action"]) for f in flags] == \
        [("identical", "reference:lunarlander_improved.onnx", "reference", "invalid")]  # once, not again as a class flag
    pairs = {(f["kind"], f["student_a"], f["student_b"]) for f in read_csv(tmp_path / "out" / "duplicates.csv")}
    assert ("identical", "lazy", "reference:lunarlander_improved.onnx") in pairs


def test_reference_prints_are_cached_by_the_bytes_sha256(tmp_path, monkeypatch):
    """A rubric's references are fingerprinted once per machine: the cache entry is keyed by the
    bytes' sha256 (another file never gets it), and a damaged entry is a miss, computed again."""
    import hashlib

    from grader.submission import weights as W

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    data = REFERENCE.read_bytes()
    sha = hashlib.sha256(data).hexdigest()
    fresh = W.weight_prints(data)
    assert fresh and W.cached_weight_prints(data, sha) == fresh
    (entry,) = (tmp_path / "cache" / "rl-grader" / "weight-prints").glob(f"v{W.PRINTS_VERSION}-{sha}.json")
    monkeypatch.setattr(W, "weight_prints", lambda data: pytest.fail("a cache hit parses nothing"))
    assert W.cached_weight_prints(data, sha) == fresh
    entry.write_text('[["not", "a print"]]')
    monkeypatch.setattr(W, "weight_prints", lambda data: fresh)
    assert W.cached_weight_prints(data, sha) == fresh  # malformed: recomputed and written again
    assert json.loads(entry.read_text()) == fresh


def test_a_reference_file_is_read_again_only_when_it_changed(tmp_path, monkeypatch):
    """A grading does not read and hash the rubric's reference models when they have not changed:
    their sha256 and prints are kept under the file's identity (path, size, inode, times); a file
    changed just before its entry was written (git's "racily clean") or rewritten in place, even
    with the same size, is read again, and a damaged entry is a miss."""
    import builtins
    import hashlib

    from grader.submission import weights as W

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    ref = tmp_path / "ref.onnx"
    ref.write_bytes(REFERENCE.read_bytes())
    expected = (hashlib.sha256(ref.read_bytes()).hexdigest(), W.weight_prints(ref.read_bytes()))
    real_open, reads = builtins.open, []

    def counting(file, *args, **kwargs):
        if str(file) == str(ref):
            reads.append(file)
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", counting)
    assert W.file_prints(ref) == expected and W.file_prints(ref) == expected
    assert len(reads) == 2  # written a moment ago: the entries are racy, the file is read each time
    monkeypatch.setattr(W, "RACY_NS", -10**18)  # as if the file had been written long before its entry
    assert W.file_prints(ref) == expected and W.file_prints(ref) == expected
    assert len(reads) == 2  # a settled entry: the file is not read again
    monkeypatch.setattr(builtins, "open", real_open)
    other = bytearray(ref.read_bytes())
    other[-1] ^= 1  # same size, other bytes
    ref.write_bytes(bytes(other))
    assert W.file_prints(ref)[0] == hashlib.sha256(bytes(other)).hexdigest()
    for entry in (tmp_path / "cache" / "rl-grader" / "weight-prints").glob("*-file-*.json"):
        entry.write_text('{"sha256": "short", "prints": null}')
    assert W.file_prints(ref)[0] == hashlib.sha256(bytes(other)).hexdigest()  # damaged: read again
    assert W.file_prints(tmp_path / "missing.onnx") is None
