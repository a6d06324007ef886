"""Shared by test_report.py and test_report_browser.py: small LunarLander models, a rubric, a grading."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

EVIL_OUTPUT = "<script>alert(1)</script>"
EVIL_INPUT = '"><img src=x onerror=alert(2)>'
EVIL_PRODUCER = "<script>alert(3)</script>"
EVIL_NAME = "<img src=x onerror=alert(4)>&<b>bold</b>.onnx"
GRADING_SEEDS = list(range(913572460, 913572466))  # distinctive: easy to spot if they leak
PUBLIC_SEEDS = [0, 1, 2]


def lunarlander_model(path: Path, *, outputs: int = 4, seed: int = 0, input_name: str = EVIL_INPUT,
                      output_name: str = EVIL_OUTPUT, producer: str = EVIL_PRODUCER) -> Path:
    """An 8-32-outputs tanh MLP with a softmax head and random weights, built with onnx.helper."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    w1 = rng.normal(0, 0.5, (8, 32)).astype(np.float32)
    b1 = np.zeros(32, np.float32)
    w2 = rng.normal(0, 0.5, (32, outputs)).astype(np.float32)
    b2 = np.zeros(outputs, np.float32)
    nodes = [
        helper.make_node("Gemm", [input_name, "w1", "b1"], ["h"]),
        helper.make_node("Tanh", ["h"], ["t"]),
        helper.make_node("Gemm", ["t", "w2", "b2"], ["logits"]),
        helper.make_node("Softmax", ["logits"], [output_name], axis=1),
    ]
    graph = helper.make_graph(
        nodes, "policy",
        [helper.make_tensor_value_info(input_name, TensorProto.FLOAT, ["batch", 8])],
        [helper.make_tensor_value_info(output_name, TensorProto.FLOAT, ["batch", outputs])],
        initializer=[numpy_helper.from_array(a, n) for a, n in ((w1, "w1"), (b1, "b1"), (w2, "w2"), (b2, "b2"))],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name=producer)
    model.ir_version = 8
    onnx.checker.check_model(model)
    path.write_bytes(model.SerializeToString())
    return path


def write_rubric(folder: Path, *, with_baselines: bool = True) -> Path:
    """A LunarLander rubric on 6 distinctive grading seeds, with a baselines file."""
    from grader.scoring.stats import summarize

    folder.mkdir(parents=True, exist_ok=True)
    lines = [
        'id = "test-ll"', 'task = "lunarlander"', 'title = "test"',
        f"episodes = {len(GRADING_SEEDS)}", f"selfcheck_episodes = {len(PUBLIC_SEEDS)}",
    ]
    if with_baselines:
        lines.append('baselines = "baselines.json"')
    lines += [
        "[seeds]", f'public = "{PUBLIC_SEEDS[0]}-{PUBLIC_SEEDS[-1]}"', f'grading = "{GRADING_SEEDS[0]}-{GRADING_SEEDS[-1]}"',
        "[scoring]", 'statistic = "mean"', "zero = -400.0", "full = 200.0", "points = 10",
        "[[bands]]", 'name = "solved"', "min_fraction = 1.0",
        "[[bands]]", 'name = "learning"', "min_fraction = 0.0",
    ]
    path = folder / "test-ll.toml"
    path.write_text("\n".join(lines) + "\n")
    if with_baselines:
        entries = {}
        for name, returns in (("random", [-180.0, -150.5, -210.0]), ("reference", [250.0, 240.5, 262.0])):
            entries[name] = {"policy": name, "summary": json.loads(summarize(returns, success_threshold=200.0).model_dump_json()),
                             "returns": returns}
        (folder / "baselines.json").write_text(json.dumps({
            "task": "lunarlander", "rubric_id": "test-ll", "seed_set": "grading", "n_seeds": 3,
            "created": "2026-01-01T00:00:00+00:00", "versions": {}, "entries": entries}))
    return path
