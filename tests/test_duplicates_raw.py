"""Duplicate detection across MsPacman's two input contracts (issues 23 and 25).

The hidden probe set is rolled out once as raw frames; each model gets it in its own contract's
form (the lesson's preprocessed stacks, or its last K raw frames), so a copy handed in under the
other contract is compared on the same underlying frames.
"""

from __future__ import annotations

import csv
import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from benchmarks.classgen import perturbed
from grader.classroom import duplicates as D
from grader.scoring.rubric import load_rubric
from grader.tasks import get_task
from grader.tasks.mspacman import preprocess_frames
from reference import frames as RF

REPO = Path(__file__).resolve().parent.parent
RUBRIC = REPO / "rubrics" / "mspacman.toml"
STRONG = REPO / "reference" / "models" / "mspacman_strong.onnx"


def states_of(batches) -> list[np.ndarray]:
    """Each batch's states: ``frames[index]`` of a compact one."""
    return [states if index is None else states[index] for states, index in batches]


@pytest.fixture(scope="module")
def probe() -> D.ProbeSet:
    return D.hidden_probe_set(load_rubric(RUBRIC))


def test_the_hidden_probe_set_keeps_the_frames_and_the_lessons_states_of_a_lesson_rollout():
    """The lesson's states come from the raw rollout's frames, and equal the lesson's own rollout
    (so the set's id, and the actions a gradebook keeps, are unchanged)."""
    rubric = load_rubric(RUBRIC)
    small = D.hidden_probe_set(rubric, 60)
    seeds = list(rubric.all_grading_seeds())
    key = int.from_bytes(hashlib.sha256(json.dumps(seeds).encode()).digest()[:8], "little")
    lesson = np.stack(D._rollout_states(get_task("mspacman"), seeds, 60, first=3, rng_seed=key)).astype(np.float32)
    np.testing.assert_array_equal(small.states, lesson)
    assert small.id == hashlib.sha256(lesson.tobytes()).hexdigest()[:16]
    assert small.frames is not None and small.frames.dtype == np.uint8 and small.index is not None
    assert small.index.shape == (60, 8) and len(small.frames) < 60 * 8
    # each raw contract takes the last K frames; 5 of them preprocessed are the lesson's states
    for k in (1, 5, 8):
        raw = np.concatenate(states_of(small.batches(get_task(f"mspacman_raw{k}"))))
        assert raw.shape == (60, k, 210, 160, 3) and raw.dtype == np.uint8
        if k == 5:
            np.testing.assert_array_equal(preprocess_frames(raw), small.states)
    # sent in batches under a byte cap, compactly (each frame of a batch once): the same states, in order
    spec = get_task("mspacman_raw8")
    batches = list(small.batches(spec, max_bytes=7 * 8 * 210 * 160 * 3))
    assert [len(index) for _, index in batches] == [7] * 8 + [4]
    assert all(len(frames) == len(np.unique(index)) < index.size for frames, index in batches)
    np.testing.assert_array_equal(np.concatenate(states_of(batches)), spec.states_from_frames(small.frames, small.index))
    lesson = list(small.batches(get_task("mspacman")))  # the homework's own states, as they are
    assert [index for _, index in lesson] == [None]
    np.testing.assert_array_equal(lesson[0][0], small.states)
    # another homework's contract has no form here
    assert small.batches(get_task("lunarlander")) is None


def test_a_lunarlander_probe_set_has_no_frames_and_one_batch():
    probe = D.hidden_probe_set(load_rubric(REPO / "rubrics" / "lunarlander.toml"), 64)
    assert probe.frames is None and probe.index is None
    ((batch, index),) = list(probe.batches(get_task("lunarlander")))
    assert index is None and np.array_equal(batch, probe.states)


def test_a_raw_frame_copy_of_a_lesson_model_acts_the_same_on_the_hidden_frames(probe, tmp_path):
    """The strong reference (the lesson's contract) and a noisy copy of it with the lesson's
    preprocessing inside (raw frames): other weights, the same behaviour, flagged; an untouched copy
    agrees on every state."""
    from grader.runtime.engine import Engine

    strong = STRONG.read_bytes()
    with Engine(1) as engine:
        engine.load(strong, task="mspacman")
        assert engine.loaded_task == "mspacman"
        lesson = D.probe_actions(engine, probe, "mspacman")
        engine.load(RF.lesson_inside(strong), task="mspacman_raw5")
        exact = D.probe_actions(engine, probe, "mspacman_raw5")
        engine.load(RF.lesson_inside(perturbed(strong)), task="mspacman_raw5")
        noisy = D.probe_actions(engine, probe, "mspacman_raw5")
        engine.load(RF.scaled_inside(), task="mspacman_raw4")
        other = D.probe_actions(engine, probe, "mspacman_raw4")
    assert lesson is not None and exact is not None and noisy is not None and other is not None
    assert len(lesson) == len(noisy) == len(other) == 512
    np.testing.assert_array_equal(lesson, exact)
    from grader.submission.weights import compare_weights, weight_prints

    copy = RF.lesson_inside(perturbed(strong))
    assert not compare_weights(weight_prints(strong), weight_prints(copy)).same  # the weights do not give it away
    cands = [D.Candidate("alice", "alice.onnx", "a", weights=weight_prints(strong), actions=lesson),
             D.Candidate("mallory", "mallory.onnx", "m", weights=weight_prints(copy), actions=noisy),
             D.Candidate("bob", "bob.onnx", "b", weights=None, actions=other)]
    report = D.find_duplicates(cands)
    pairs = {(f.kind, f.a.label, f.b.label) for f in report.flags}
    assert pairs == {("behaviour", "alice", "mallory")}, [f.row() for f in report.flags]
    assert report.flags[0].agreement >= 0.95


def test_reference_candidates_of_both_contracts_get_actions(probe, tmp_path):
    """References are the homework's, whatever their contract: a raw-frame reference is loaded under
    its own contract and gets its actions on the probe frames."""
    refs = tmp_path / "refs"
    refs.mkdir()
    (refs / "strong.onnx").write_bytes(STRONG.read_bytes())
    (refs / "strong_frames.onnx").write_bytes(RF.lesson_inside())
    (refs / "lander.onnx").write_bytes((REPO / "reference" / "models" / "lunarlander_improved.onnx").read_bytes())
    cands = {c.label: c for c in D.reference_candidates(refs, "mspacman", probe)}
    assert set(cands) == {"reference:strong.onnx", "reference:strong_frames.onnx"}
    a, b = cands["reference:strong.onnx"].actions, cands["reference:strong_frames.onnx"].actions
    assert a is not None and b is not None and len(a) == 512
    np.testing.assert_array_equal(a, b)


def _rubric(path: Path) -> Path:
    """A MsPacman rubric of 1 episode on the shipped rubric's first grading seed."""
    path.write_text("""
id = "pac-dup"
task = "mspacman"
title = "MsPacman, 1 episode"
episodes = 1
selfcheck_episodes = 1
[seeds]
public = "0-1"
grading = "2000000-2000009"
[scoring]
statistic = "mean"
zero = 279.0
full = 1500.0
points = 10
[[bands]]
name = "strong"
min_fraction = 1.0
[[bands]]
name = "random-like"
min_fraction = 0.0
""")
    return path


def test_batch_flags_a_raw_frame_copy_of_a_lesson_model(tmp_path):
    """``grade batch`` on a class where one student hands in the lesson's contract and another a
    noisy copy with the preprocessing inside: one behaviour flag, in duplicates.csv and both results."""
    from grader.cli import main

    d = tmp_path / "class"
    for student, data in (("alice", STRONG.read_bytes()), ("mallory", RF.lesson_inside(perturbed(STRONG.read_bytes()))),
                          ("bob", RF.scaled_inside(perturbed(STRONG.read_bytes(), seed=1)))):
        (d / student).mkdir(parents=True)
        (d / student / "model.onnx").write_bytes(data)
    (tmp_path / "norefs").mkdir()
    assert main(["batch", str(d), "--rubric", str(_rubric(tmp_path / "r.toml")), "--out", str(tmp_path / "out"),
                 "--workers", "1", "--no-video", "--no-progress", "--reference", str(tmp_path / "norefs")]) == 0
    with open(tmp_path / "out" / "duplicates.csv", newline="") as f:
        flags = list(csv.DictReader(f))
    assert [(f["kind"], {f["student_a"], f["student_b"]}) for f in flags] == [("behaviour", {"alice", "mallory"})]
    assert float(flags[0]["agreement"]) >= 0.95
    for student, other in (("alice", "mallory"), ("mallory", "alice")):
        folder = next((tmp_path / "out" / "reports" / student).iterdir())
        result = json.loads((folder / "result.json").read_text())
        assert [(f["kind"], f["other"]) for f in result["flags"]] == [("behaviour", other)]
