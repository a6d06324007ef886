"""Diagnostics: what each scored episode did, measured during the one play, named per failure mode.

One small ONNX policy per failure mode, built here with onnx.helper: a LunarLander hover that runs
out of time, a crash (always NOOP), a constant action (a collapsed policy), a MsPacman agent that
never moves (NOOP only), a CartPole that lets the pole fall; the shipped reference lands.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import onnx
import onnx_fixtures as F
import pytest
from onnx import TensorProto, helper, numpy_helper

from grader.api import grade
from grader.runtime.engine import Engine

REPO = Path(__file__).resolve().parent.parent
REFERENCE = REPO / "reference" / "models" / "lunarlander_improved.onnx"


def _model(nodes, inits, *, n_in, n_out, in_shape=None) -> bytes:
    graph = helper.make_graph(nodes, "policy",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", *(in_shape or [n_in])])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", n_out])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="tests")
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model.SerializeToString()


def constant_policy(path, action: int, *, n_in: int = 8, n_out: int = 4, in_shape=None) -> str:
    """Scores that ignore the state: ``action`` always wins."""
    flat = int(np.prod(in_shape)) if in_shape else n_in
    bias = np.zeros(n_out, np.float32)
    bias[action] = 1.0
    nodes = ([helper.make_node("Flatten", ["x"], ["f"], axis=1)] if in_shape else []) + [
        helper.make_node("Gemm", ["f" if in_shape else "x", "w", "b"], ["y"])]
    inits = [numpy_helper.from_array(np.zeros((flat, n_out), np.float32), "w"), numpy_helper.from_array(bias, "b")]
    path.write_bytes(_model(nodes, inits, n_in=n_in, n_out=n_out, in_shape=in_shape))
    return str(path)


def hover_policy(path, height: float = 0.6) -> str:
    """Gymnasium's landing heuristic with a fixed hover height: it holds y = ``height`` and keeps
    upright and centred, so every episode runs into the 1000-step limit still flying.

    Scores [0.05, g, h, -g] (NOOP, left, main, right) with g the angle to correct and h the height
    to gain: argmax is the heuristic's choice."""
    def col(weights: dict[int, float]) -> np.ndarray:
        w = np.zeros((8, 1), np.float32)
        for i, v in weights.items():
            w[i, 0] = v
        return w

    inits = [numpy_helper.from_array(a, n) for a, n in (
        (col({0: 0.5, 2: 1.0}), "wa"), (np.zeros(1, np.float32), "z"), (np.array(-0.4, np.float32), "lo"),
        (np.array(0.4, np.float32), "hi"), (np.array([0.5], np.float32), "half"),
        (col({4: -0.5, 5: -1.0}), "wg"), (col({1: -0.5, 3: -0.5}), "wh"), (np.array([0.5 * height], np.float32), "bh"),
        (np.zeros((8, 1), np.float32), "w0"), (np.array([0.05], np.float32), "b0"))]
    nodes = [
        helper.make_node("Gemm", ["x", "wa", "z"], ["t"]),
        helper.make_node("Clip", ["t", "lo", "hi"], ["tc"]),
        helper.make_node("Mul", ["tc", "half"], ["t2"]),
        helper.make_node("Gemm", ["x", "wg", "z"], ["gs"]),
        helper.make_node("Add", ["t2", "gs"], ["g"]),
        helper.make_node("Neg", ["g"], ["ng"]),
        helper.make_node("Gemm", ["x", "wh", "bh"], ["h"]),
        helper.make_node("Gemm", ["x", "w0", "b0"], ["c"]),
        helper.make_node("Concat", ["c", "g", "h", "ng"], ["y"], axis=1),
    ]
    path.write_bytes(_model(nodes, inits, n_in=8, n_out=4))
    return str(path)


def _diag(path, seeds, **kw):
    result = grade(path, seeds=seeds, video=False, report=False, out=None, workers=kw.pop("workers", 2), **kw)
    assert result.status == "graded", result.error
    assert result.diagnostics is not None
    return result, result.diagnostics


def _count(diag, key: str) -> int:
    return next(o.count for o in diag.outcomes if o.key == key)


# --- LunarLander ---------------------------------------------------------------------------------------
def test_a_hover_runs_out_of_time_and_is_told_so(tmp_path):
    result, d = _diag(hover_policy(tmp_path / "hover.onnx"), [0, 1, 2])
    assert [e.length for e in result.episodes] == [1000, 1000, 1000]
    assert _count(d, "timeout_flying") == 3
    assert [e.outcome for e in d.episodes] == ["timeout_flying"] * 3
    assert "3 of 3 episodes ran out of time still flying" in d.hint and "hovers" in d.hint
    assert d.summary[0] == "outcomes: 3 still flying at the limit"
    assert all(e.end["legs"] == 0 and 0.3 < e.end["y"] < 0.9 for e in d.episodes)
    assert not d.collapsed and d.confidence.measure == "gap"  # logits: the gap between the two best


def test_always_noop_crashes_and_is_a_collapsed_policy(tmp_path):
    result, d = _diag(constant_policy(tmp_path / "noop.onnx", 0), [0, 1, 2, 3])
    assert _count(d, "crashed") >= 3
    assert "crashed" in d.hint and "of 4 episodes" in d.hint
    crashed = next(o for o in d.outcomes if o.key == "crashed")
    assert crashed.mean_return is not None and crashed.mean_return < 0 and "speed" in crashed.end
    assert d.collapsed and "'do nothing'" in d.collapse and "100%" in d.collapse
    assert d.actions.shares[0] == 1.0 and d.episodes[0].actions[1:] == [0, 0, 0]
    assert "COLLAPSED" in d.summary[1]


def test_a_constant_action_is_named(tmp_path):
    _, d = _diag(constant_policy(tmp_path / "right.onnx", 3), [0, 1])
    assert d.collapsed and "'fire right engine'" in d.collapse
    assert d.summary[1].startswith("actions: fire right engine 100%")
    assert d.confidence.measure == "entropy" and d.confidence.mean == 0.0  # one-hot rows: probabilities


def test_the_reference_lands_in_most_episodes():
    result, d = _diag(REFERENCE, list(range(10)))
    landed = _count(d, "landed") + _count(d, "landed_outside")
    assert landed >= 8, d.summary
    assert d.summary[0].startswith(f"outcomes: {landed} landed")
    assert not d.collapsed and d.confidence.measure == "entropy"
    assert sum(d.actions.counts) == sum(e.decisions for e in d.episodes) == sum(e.length for e in result.episodes)


# --- MsPacman and CartPole -------------------------------------------------------------------------------
def test_a_mspacman_agent_that_never_moves(tmp_path):
    path = constant_policy(tmp_path / "still.onnx", 0, n_in=0, n_out=5, in_shape=[5, 44, 40])
    result, d = _diag(path, [0], workers=1)
    e = d.episodes[0]
    assert d.collapsed and "never moves" in d.collapse and "NOOP" in d.collapse
    assert e.outcome == "game_over" and len(e.lives) == 3
    assert [x.step for x in e.lives] == sorted(x.step for x in e.lives) and e.lives[-1].step == result.episodes[0].length
    assert len(e.life_scores) == 3 and sum(e.life_scores) == pytest.approx(result.episodes[0].return_)
    assert e.droughts and e.droughts[0][2] >= 100 and "without scoring" in d.hint
    assert any("level" in n for n in d.notes)


def test_cartpole_that_always_pushes_left_lets_the_pole_fall(tmp_path):
    _, d = _diag(constant_policy(tmp_path / "left.onnx", 0, n_in=4, n_out=2), [0, 1, 2])
    assert _count(d, "fell") + _count(d, "off_track") == 3 and _count(d, "balanced") == 0
    assert d.collapsed and "'push left'" in d.collapse


# --- the engine: same returns, plain bounded data -------------------------------------------------------
def test_diagnostics_on_or_off_give_the_same_returns(tmp_path):
    path = F.mlp(tmp_path / "m.onnx", hidden=32, scale=2.0)
    seeds = list(range(12))
    with Engine(2) as engine:
        engine.load(open(path, "rb").read(), task="lunarlander")
        off = engine.evaluate(seeds, diagnostics=False)
        assert engine.facts == {}
        on = engine.evaluate(seeds, diagnostics=True)
        facts = dict(engine.facts)
        alone = engine.evaluate(seeds, pool_size=1, diagnostics=True)
    assert off == on == alone  # to the last bit
    assert set(facts) == set(seeds) and all(sum(f["actions"]) == on[s][1] for s, f in facts.items())
    assert all(len(json.dumps(f)) < 2000 for f in facts.values())


def test_forged_facts_are_refused_or_ignored():
    from grader.errors import MalformedMessage
    from grader.runtime.replies import check_facts
    from grader.tasks import get_task

    for bad in ([1, 2], {"a": np.zeros(3)}, {"a": b"x"}, {"a": "x" * 20_000}, {"a": [[[[[[[1]]]]]]]}):
        with pytest.raises(MalformedMessage):
            check_facts(bad)
    task = get_task("lunarlander")
    d = task.diagnose([{"actions": "no", "task": {"outcome": "<script>", "end": {"x": "1"}}}, None], [1.0, 2.0])
    assert [e.outcome for e in d.episodes] == ["unknown", "unknown"] and d.episodes[0].end == {}
    assert task.diagnose([None, None], [1.0, 2.0]) is None


# --- where it shows ---------------------------------------------------------------------------------------
def test_report_terminal_and_json_show_the_diagnostics_without_hidden_seeds(tmp_path):
    from rich.console import Console

    from grader.outputs.console import print_result
    from grader.outputs.report import render_html
    from grader.result import GradeResult, VideoInfo

    result = grade(hover_policy(tmp_path / "hover.onnx"), episodes=2, video=False, report=True, out=tmp_path / "out")
    assert result.rubric.seed_set == "grading"
    again = GradeResult.from_json((tmp_path / "out" / "result.json").read_text())
    assert again.diagnostics == result.diagnostics
    html = (tmp_path / "out" / "report.html").read_text()
    assert 'id="diagnostics"' in html and "ran out of time still flying" in html
    assert 'aria-label="how the episodes ended"' in html and 'aria-label="how often each action was chosen"' in html
    assert 'aria-label="episode returns by outcome"' in html
    for e in result.episodes:
        assert str(e.seed) not in html
    ep = result.episodes[0]
    result.videos = [VideoInfo(label="best", seed=ep.seed, scored_return=ep.return_, rerun_return=ep.return_, matches=True,
                               path="best_episode1.mp4", frames=1001)]
    assert '<span class="outcome">still flying at the limit</span>' in render_html(result)
    buf = io.StringIO()
    print_result(result, Console(file=buf, width=200, highlight=False))
    out = buf.getvalue()
    assert "outcomes: 2 still flying at the limit" in out and "actions: fire main engine" in out
    assert str(ep.seed) not in out


def test_the_lives_timeline_plot(tmp_path):
    from grader.outputs import diagplots
    from grader.tasks import get_task

    facts = [{"actions": [10, 50, 20, 20, 0], "decisions": 100, "measure": "gap", "confidence": 0.5,
              "task": {"outcome": "game_over", "lives": [[30, 200, 120.0], [60, 400, 300.0], [100, 700, 450.0]],
                       "droughts": [[210, 390, 28]], "end": {"still_share": 0.1}}} for _ in range(3)]
    d = get_task("mspacman").diagnose(facts, [450.0, 450.0, 450.0])
    assert d.episodes[0].life_scores == [120.0, 180.0, 150.0] and not d.collapsed
    svg = diagplots.lives_svg(d, 700)
    assert svg.startswith("<svg") and "life 3 lost" in svg


def test_class_summary_names_the_common_failure(tmp_path):
    from grader.tasks.diagnostics import class_summary

    hover, _ = _diag(hover_policy(tmp_path / "h.onnx"), [0, 1])
    noop, _ = _diag(constant_policy(tmp_path / "n.onnx", 0), [0, 1])
    summary = class_summary([("alice", hover), ("bob", noop), ("carol", noop), ("dave", None)])
    assert summary["students"] == 3 and summary["collapsed"] == ["bob", "carol"]
    assert summary["common_failure"]["key"] == "crashed" and summary["common_failure"]["students"] == 2


def test_plots_escape_their_labels_and_are_the_same_every_time():
    """The charts are plain SVG built from numbers and the task's labels: a label is text, never
    markup, and the same diagnostics give byte-identical charts."""
    import re

    from grader.outputs import diagplots
    from grader.result import ActionUsage, Diagnostics, EpisodeDiagnostics, LifeLoss, OutcomeStat

    evil = '<script>alert(1)</script>" onload="x'
    outcomes = [OutcomeStat(key="a", label=evil, success=True, count=2, share=0.5, mean_return=3.0),
                OutcomeStat(key="b", label="crashed", success=False, count=2, share=0.5, mean_return=-1.0)]
    episodes = [EpisodeDiagnostics(episode=i + 1, outcome="ab"[i % 2], decisions=10, actions=[3, 7], droughts=[[1, 5, 4]],
                                   lives=[LifeLoss(decision=4, step=8, score=1.0 + i)], life_scores=[1.0], **{"return": 1.0 + i})
                for i in range(4)]
    d = Diagnostics(outcomes=outcomes, actions=ActionUsage(names=[evil, "UP"], counts=[12, 28], shares=[0.3, 0.7]),
                    collapsed=False, episodes=episodes)
    draw = [diagplots.outcomes_svg, diagplots.actions_svg, diagplots.returns_by_outcome_svg, lambda d: diagplots.lives_svg(d, 10)]
    charts = [f(d) for f in draw]
    assert all(svg.startswith("<svg") and svg.endswith("</svg>") for svg in charts)
    assert all("<script" not in svg and not re.search(r"<[^>]*\sonload", svg) for svg in charts)  # text, not a tag or attribute
    assert "&lt;script&gt;" in charts[0] and "&lt;script&gt;" in charts[2]
    assert charts == [f(d) for f in draw]



def test_the_confidence_is_computed_from_the_exact_outputs():
    """The rows an episode keeps are views of each batch's float32 output: the confidence is the
    same as from the outputs converted value by value (what the facts were before), for
    probabilities (entropy) and for Q-values (the gap between the two best)."""
    from grader.runtime.episodes import _Diag, _facts
    from grader.tasks.base import Tracker, Turn

    class Plain(Tracker):
        def finish(self, turn):
            return {}

    rng = np.random.default_rng(5)
    q = rng.normal(size=(40, 5)).astype(np.float32)
    p = np.exp(q) / np.exp(q).sum(axis=1, keepdims=True)
    turn = Turn(state=np.zeros(2), reward=0.0, life_lost=False, done=True, episode_return=1.0, length=40)
    for out, measure in ((q, "gap"), (p.astype(np.float32), "entropy")):
        diag = _Diag(Plain(), 5)
        for batch in np.array_split(out, 7):  # rows kept from several batches
            diag.rows.extend(batch[k] for k in range(len(batch)))
        rows = np.array(out.tolist(), dtype=np.float64)
        if measure == "gap":
            top = np.partition(rows, -2, axis=1)
            expected = float((top[:, -1] - top[:, -2]).mean())
        else:
            expected = float(-(rows * np.log(np.clip(rows, 1e-12, 1.0))).sum(axis=1).mean())
        facts = _facts(diag, turn)
        assert facts["measure"] == measure and facts["confidence"] == round(expected, 6)
