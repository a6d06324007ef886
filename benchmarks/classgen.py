"""Synthetic LunarLander submissions built with ``onnx.helper`` (no torch needed), for the batch
tests and ``bench_batch.py``: random MLPs, re-serialisations of the same weights, near-duplicates,
wrong shapes and hostile models."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def mlp_weights(seed: int, hidden: int = 64) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [
        (rng.standard_normal((8, hidden)) / np.sqrt(8)).astype(np.float32),
        (rng.standard_normal(hidden) * 0.1).astype(np.float32),
        (rng.standard_normal((hidden, 4)) / np.sqrt(hidden)).astype(np.float32),
        (rng.standard_normal(4) * 0.1).astype(np.float32),
    ]


def mlp_model(weights: list[np.ndarray], *, style: str = "gemm", prefix: str = "", opset: int = 17, ir: int = 8,
              in_dim: int = 8, softmax: bool = True) -> bytes:
    """An MLP policy [batch, in_dim] -> [batch, 4].

    ``style="gemm"``: Gemm nodes, initializers in order W1 b1 W2 b2.
    ``style="matmul"``: MatMul + Add with transposed weights held as Gemm(transB=1)... i.e. a different
    graph, other names (``prefix``) and the initializers in reverse order: the same weights
    re-serialised.
    """
    w1, b1, w2, b2 = weights
    if in_dim != w1.shape[0]:
        w1 = np.resize(w1, (in_dim, w1.shape[1])).astype(np.float32)
    p = prefix
    x = helper.make_tensor_value_info(f"{p}obs", TensorProto.FLOAT, ["batch", in_dim])
    y = helper.make_tensor_value_info(f"{p}probs", TensorProto.FLOAT, ["batch", 4])
    if style == "gemm":
        inits = [numpy_helper.from_array(w1, f"{p}W1"), numpy_helper.from_array(b1, f"{p}b1"),
                 numpy_helper.from_array(w2, f"{p}W2"), numpy_helper.from_array(b2, f"{p}b2")]
        nodes = [
            helper.make_node("Gemm", [f"{p}obs", f"{p}W1", f"{p}b1"], [f"{p}h"], name=f"{p}fc1"),
            helper.make_node("Tanh", [f"{p}h"], [f"{p}a"], name=f"{p}act"),
            helper.make_node("Gemm", [f"{p}a", f"{p}W2", f"{p}b2"], [f"{p}logits" if softmax else f"{p}probs"], name=f"{p}fc2"),
        ]
    else:  # transposed weights fed to Gemm(transB=1), reversed initializer order
        inits = [numpy_helper.from_array(b2, f"{p}bias_out"), numpy_helper.from_array(np.ascontiguousarray(w2.T), f"{p}kernel_out"),
                 numpy_helper.from_array(b1, f"{p}bias_in"), numpy_helper.from_array(np.ascontiguousarray(w1.T), f"{p}kernel_in")]
        nodes = [
            helper.make_node("Gemm", [f"{p}obs", f"{p}kernel_in", f"{p}bias_in"], [f"{p}z"], name=f"{p}dense_a", transB=1),
            helper.make_node("Tanh", [f"{p}z"], [f"{p}t"], name=f"{p}tanh_a"),
            helper.make_node("Gemm", [f"{p}t", f"{p}kernel_out", f"{p}bias_out"], [f"{p}logits" if softmax else f"{p}probs"],
                             name=f"{p}dense_b", transB=1),
        ]
    if softmax:
        nodes.append(helper.make_node("Softmax", [f"{p}logits"], [f"{p}probs"], axis=-1, name=f"{p}softmax"))
    graph = helper.make_graph(nodes, f"{p}policy", [x], [y], initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], producer_name=f"classgen{p}")
    model.ir_version = ir
    onnx.checker.check_model(model)
    return model.SerializeToString()


def random_mlp(seed: int, **kw) -> bytes:
    return mlp_model(mlp_weights(seed), **kw)


def reserialised(seed: int) -> bytes:
    """The weights of ``random_mlp(seed)`` in another graph: other names, order, opset and IR."""
    return mlp_model(mlp_weights(seed), style="matmul", prefix="student_", opset=13, ir=7)


def near_duplicate(seed: int, noise: float = 1e-3) -> bytes:
    """``random_mlp(seed)`` with every weight perturbed slightly: behaves the same, different bytes and weights."""
    rng = np.random.default_rng(seed + 10_000)
    ws = [(w + noise * rng.standard_normal(w.shape)).astype(np.float32) for w in mlp_weights(seed)]
    return mlp_model(ws)


def wrong_shape(seed: int) -> bytes:
    return mlp_model(mlp_weights(seed), in_dim=6)


def loop_bomb() -> bytes:
    """A Loop with 2**62 iterations: rejected by the static checks, and would hang if run."""
    x = helper.make_tensor_value_info("obs", TensorProto.FLOAT, ["batch", 8])
    y = helper.make_tensor_value_info("out", TensorProto.FLOAT, ["batch", 4])
    body = helper.make_graph(
        [helper.make_node("Identity", ["cond_in"], ["cond_out"]), helper.make_node("Identity", ["v_in"], ["v_out"])],
        "body",
        [helper.make_tensor_value_info("i", TensorProto.INT64, []), helper.make_tensor_value_info("cond_in", TensorProto.BOOL, []),
         helper.make_tensor_value_info("v_in", TensorProto.FLOAT, ["batch", 8])],
        [helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []), helper.make_tensor_value_info("v_out", TensorProto.FLOAT, ["batch", 8])],
    )
    inits = [numpy_helper.from_array(np.array(2**62, dtype=np.int64), "trip"), numpy_helper.from_array(np.array(True), "cond"),
             numpy_helper.from_array(np.ones((8, 4), np.float32), "W")]
    nodes = [helper.make_node("Loop", ["trip", "cond", "obs"], ["looped"], body=body),
             helper.make_node("MatMul", ["looped", "W"], ["out"])]
    model = helper.make_model(helper.make_graph(nodes, "bomb", [x], [y], initializer=inits),
                              opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model.SerializeToString()


def external_data() -> bytes:
    """A model whose weights point at /etc/passwd as external data: must never be opened."""
    x = helper.make_tensor_value_info("obs", TensorProto.FLOAT, ["batch", 8])
    y = helper.make_tensor_value_info("out", TensorProto.FLOAT, ["batch", 4])
    w = TensorProto(name="W", data_type=TensorProto.FLOAT, dims=[8, 4], data_location=TensorProto.EXTERNAL)
    for k, v in (("location", "../../../../etc/passwd"), ("offset", "0"), ("length", "128")):
        e = w.external_data.add()
        e.key, e.value = k, v
    model = helper.make_model(helper.make_graph([helper.make_node("MatMul", ["obs", "W"], ["out"])], "ext", [x], [y], initializer=[w]),
                              opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model.SerializeToString()


def minimal_notebook() -> str:
    return json.dumps({
        "cells": [{"cell_type": "code", "execution_count": None, "id": "c1", "metadata": {}, "outputs": [],
                   "source": ["print('hello')\n"]}],
        "metadata": {"kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"}},
        "nbformat": 4, "nbformat_minor": 5,
    })


def write(path: Path, data: bytes | str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(data, str):
        path.write_text(data)
    else:
        path.write_bytes(data)
    return path


def lunarlander_rubric(path: Path, *, episodes: int = 5, rubric_id: str = "ll-test") -> Path:
    path.write_text(f"""id = "{rubric_id}"
task = "lunarlander"
title = "LunarLander test rubric"
episodes = {episodes}
selfcheck_episodes = 2

[seeds]
public = "0-9"
grading = "1000-1099"

[scoring]
statistic = "mean"
zero = -400.0
full = 200.0
points = 10
""")
    return path


def heuristic_model(seed: int = 0, noise: float = 0.0, hover: float = 0.0) -> bytes:
    """Gymnasium's heuristic LunarLander controller as an ONNX graph, plus ``noise`` times the logits
    of a random MLP: ``noise=0`` lands (~250 steps, return ~240), larger noise gives hoverers and
    crashers -- a class whose episode lengths look like real students'. ``hover`` raises the
    controller's target altitude: ``hover=0.5`` hovers above the pad until the 1000-step limit."""
    def col(i: int, scale: float = 1.0) -> np.ndarray:
        m = np.zeros((8, 1), np.float32)
        m[i, 0] = scale
        return m

    c = {
        "sel_at": col(0, 0.5) + col(2, 1.0), "sel_s0": col(0), "sel_s1": col(1), "sel_s3": col(3), "sel_s4": col(4),
        "sel_s5": col(5), "sel_s6": col(6), "sel_s7": col(7),
        "lo": np.array(-0.4, np.float32), "hi": np.array(0.4, np.float32), "half": np.array(0.5, np.float32),
        "k055": np.array(0.55, np.float32), "hover": np.array(hover, np.float32), "one": np.array(1.0, np.float32), "zero": np.array(0.0, np.float32),
        "eps": np.array(0.05, np.float32), "neps": np.array(-0.05, np.float32), "two": np.array(2.0, np.float32),
        "three": np.array(3.0, np.float32), "base": np.array([[0.5]], np.float32),
    }
    w1, b1, w2, b2 = mlp_weights(seed)
    c |= {"W1": w1, "b1": b1, "W2": (w2 * noise).astype(np.float32), "b2": (b2 * noise).astype(np.float32)}
    N = helper.make_node
    nodes = [N("MatMul", ["obs", f"sel_{k}"], [k]) for k in ("at", "s0", "s1", "s3", "s4", "s5", "s6", "s7")]
    nodes += [
        N("Clip", ["at", "lo", "hi"], ["angle_targ"]),
        N("Abs", ["s0"], ["abs_s0"]), N("Mul", ["abs_s0", "k055"], ["hover_targ_0"]), N("Add", ["hover_targ_0", "hover"], ["hover_targ"]),
        N("Sub", ["angle_targ", "s4"], ["d_a"]), N("Mul", ["d_a", "half"], ["d_a2"]), N("Sub", ["d_a2", "s5"], ["angle_todo0"]),
        N("Sub", ["hover_targ", "s1"], ["d_h"]), N("Mul", ["d_h", "half"], ["d_h2"]), N("Mul", ["s3", "half"], ["s3h"]),
        N("Sub", ["d_h2", "s3h"], ["hover_todo0"]),
        N("Max", ["s6", "s7"], ["legs_max"]), N("Greater", ["legs_max", "zero"], ["legs_b"]),
        N("Neg", ["s3h"], ["neg_s3h"]),
        N("Where", ["legs_b", "zero", "angle_todo0"], ["angle_todo"]),
        N("Where", ["legs_b", "neg_s3h", "hover_todo0"], ["hover_todo"]),
        N("Abs", ["angle_todo"], ["abs_at"]),
        N("Greater", ["hover_todo", "abs_at"], ["g1"]), N("Greater", ["hover_todo", "eps"], ["g2"]), N("And", ["g1", "g2"], ["c2b"]),
        N("Less", ["angle_todo", "neps"], ["c3b"]), N("Greater", ["angle_todo", "eps"], ["c1b"]),
        N("Cast", ["c2b"], ["c2"], to=TensorProto.FLOAT), N("Cast", ["c3b"], ["c3"], to=TensorProto.FLOAT),
        N("Cast", ["c1b"], ["c1"], to=TensorProto.FLOAT),
        N("Mul", ["c2", "three"], ["sc2"]), N("Mul", ["c3", "two"], ["sc3"]),
        N("Mul", ["s0", "zero"], ["zcol"]), N("Add", ["zcol", "base"], ["sc0"]),
        N("Concat", ["sc0", "c1", "sc2", "sc3"], ["rule"], axis=1),
        N("Gemm", ["obs", "W1", "b1"], ["h"]), N("Tanh", ["h"], ["a"]), N("Gemm", ["a", "W2", "b2"], ["noise_logits"]),
        N("Add", ["rule", "noise_logits"], ["scores"]),
    ]
    graph = helper.make_graph(
        nodes, "heuristic", [helper.make_tensor_value_info("obs", TensorProto.FLOAT, ["batch", 8])],
        [helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["batch", 4])],
        initializer=[numpy_helper.from_array(v, k) for k, v in c.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="classgen-heuristic")
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model.SerializeToString()


def perturbed(data: bytes, *, noise: float = 1e-3, seed: int = 0) -> bytes:
    """``data`` with every float weight (16+ elements) moved by ``noise`` times a seeded normal draw:
    other weight prints, nearly the same play (a planted copy duplicate detection must still find)."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load_from_string(data)
    rng = np.random.default_rng(seed)
    for t in model.graph.initializer:
        a = numpy_helper.to_array(t)
        if a.dtype == np.float32 and a.size >= 16:
            t.CopyFrom(numpy_helper.from_array((a + noise * rng.standard_normal(a.shape)).astype(np.float32), t.name))
    return model.SerializeToString()
