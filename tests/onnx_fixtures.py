"""ONNX models built for the tests with onnx.helper: valid policies and hostile files."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

RNG_SEED = 7


def _save(model: onnx.ModelProto, path, *, check: bool = True) -> str:
    if check:
        onnx.checker.check_model(model)
    path.write_bytes(model.SerializeToString())
    return str(path)


def mlp(
    path,
    *,
    n_in: int = 8,
    n_out: int = 4,
    hidden: int = 16,
    batch: int | str = "batch",
    softmax: bool = True,
    opset: int = 17,
    ir_version: int = 8,
    input_name: str = "state",
    output_name: str = "probs",
    keras_style: bool = False,
    seed: int = RNG_SEED,
    scale: float = 1.0,
    initializers_as_inputs: bool = False,
) -> str:
    """A 2-layer MLP policy. ``keras_style`` mimics keras' torch-backend export: Cast nodes,
    MatMul+Add instead of Gemm, odd tensor names. ``initializers_as_inputs`` also lists the
    weights among the graph's inputs, as exporters for IR 3 did."""
    rng = np.random.default_rng(seed)
    w1 = (rng.standard_normal((n_in, hidden)) * scale).astype(np.float32)
    b1 = (rng.standard_normal(hidden) * 0.1).astype(np.float32)
    w2 = (rng.standard_normal((hidden, n_out)) * scale).astype(np.float32)
    b2 = (rng.standard_normal(n_out) * 0.1).astype(np.float32)
    inits = [numpy_helper.from_array(a, n) for a, n in ((w1, "w1"), (b1, "b1"), (w2, "w2"), (b2, "b2"))]
    nodes = []
    x = input_name
    if keras_style:
        nodes.append(helper.make_node("Cast", [x], ["cast_in"], to=TensorProto.FLOAT))
        x = "cast_in"
        nodes += [
            helper.make_node("MatMul", [x, "w1"], ["mm1"]),
            helper.make_node("Add", ["mm1", "b1"], ["a1"]),
            helper.make_node("Relu", ["a1"], ["h1"]),
            helper.make_node("MatMul", ["h1", "w2"], ["mm2"]),
            helper.make_node("Add", ["mm2", "b2"], ["logits"]),
        ]
    else:
        nodes += [
            helper.make_node("Gemm", [x, "w1", "b1"], ["a1"]),
            helper.make_node("Tanh", ["a1"], ["h1"]),
            helper.make_node("Gemm", ["h1", "w2", "b2"], ["logits"]),
        ]
    last = "logits"
    if softmax:
        nodes.append(helper.make_node("Softmax", [last], ["sm"], axis=-1))
        last = "sm"
    if keras_style:
        nodes.append(helper.make_node("Cast", [last], [output_name], to=TensorProto.FLOAT))
    else:
        nodes.append(helper.make_node("Identity", [last], [output_name]))
    graph = helper.make_graph(
        nodes, "policy",
        [helper.make_tensor_value_info(input_name, TensorProto.FLOAT, [batch, n_in])],
        [helper.make_tensor_value_info(output_name, TensorProto.FLOAT, [batch, n_out])],
        inits,
    )
    if initializers_as_inputs:
        graph.input.extend(helper.make_tensor_value_info(t.name, t.data_type, list(t.dims)) for t in inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], producer_name="tests")
    model.ir_version = ir_version
    return _save(model, path)


def conv_policy(path, *, batch: int | str = "batch", n_out: int = 5, seed: int = RNG_SEED, train_mode_bn: bool = False) -> str:
    """A small MsPacman net: Conv(5->8, k4, s4) + ReLU + Flatten + Gemm -> 5 Q-values.

    ``train_mode_bn`` inserts a batch-statistics normalisation (ReduceMean over the batch),
    which is what BatchNorm exported in training mode amounts to."""
    rng = np.random.default_rng(seed)
    w = (rng.standard_normal((8, 5, 4, 4)) * 0.05).astype(np.float32)
    b = np.zeros(8, np.float32)
    wf = (rng.standard_normal((8 * 11 * 10, n_out)) * 0.05).astype(np.float32)
    bf = np.zeros(n_out, np.float32)
    inits = [numpy_helper.from_array(w, "w"), numpy_helper.from_array(b, "b"),
             numpy_helper.from_array(wf, "wf"), numpy_helper.from_array(bf, "bf")]
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c"], kernel_shape=[4, 4], strides=[4, 4])]
    src = "c"
    if train_mode_bn:
        nodes += [
            helper.make_node("ReduceMean", ["c"], ["mu"], axes=[0, 2, 3], keepdims=1),
            helper.make_node("Sub", ["c", "mu"], ["centered"]),
        ]
        src = "centered"
    nodes += [
        helper.make_node("Relu", [src], ["r"]),
        helper.make_node("Flatten", ["r"], ["f"], axis=1),
        helper.make_node("Gemm", ["f", "wf", "bf"], ["q"]),
    ]
    graph = helper.make_graph(
        nodes, "dqn",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, 5, 44, 40])],
        [helper.make_tensor_value_info("q", TensorProto.FLOAT, [batch, n_out])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return _save(model, path)


def _single_input_model(nodes, inits, out_shape=("batch", 4), extra_opsets=(), opset=17, in_type=TensorProto.FLOAT,
                        in_shape=("batch", 8), out_type=TensorProto.FLOAT, inputs=None):
    graph = helper.make_graph(
        nodes, "hostile",
        inputs or [helper.make_tensor_value_info("x", in_type, list(in_shape))],
        [helper.make_tensor_value_info("y", out_type, list(out_shape))],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset), *extra_opsets])
    model.ir_version = 8
    return model


def external_data(path, location: str) -> str:
    """A weight tensor whose bytes are said to live in ``location``."""
    w = numpy_helper.from_array(np.zeros((8, 4), np.float32), "w")
    w.ClearField("raw_data")
    w.data_location = TensorProto.EXTERNAL
    for k, v in (("location", location), ("offset", "0"), ("length", "128")):
        entry = w.external_data.add()
        entry.key, entry.value = k, v
    model = _single_input_model([helper.make_node("MatMul", ["x", "w"], ["y"])], [w])
    return _save(model, path, check=False)


def loop_bomb(path) -> str:
    """A Loop with a huge trip count around the output."""
    body = helper.make_graph(
        [helper.make_node("Identity", ["cond_in"], ["cond_out"]), helper.make_node("Identity", ["v_in"], ["v_out"])],
        "body",
        [helper.make_tensor_value_info("i", TensorProto.INT64, []),
         helper.make_tensor_value_info("cond_in", TensorProto.BOOL, []),
         helper.make_tensor_value_info("v_in", TensorProto.FLOAT, ["batch", 4])],
        [helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []),
         helper.make_tensor_value_info("v_out", TensorProto.FLOAT, ["batch", 4])],
    )
    inits = [numpy_helper.from_array(np.array(2**62, np.int64), "trip"), numpy_helper.from_array(np.array(True), "cond"),
             numpy_helper.from_array(np.zeros((8, 4), np.float32), "w")]
    nodes = [helper.make_node("MatMul", ["x", "w"], ["h"]), helper.make_node("Loop", ["trip", "cond", "h"], ["y"], body=body)]
    return _save(_single_input_model(nodes, inits), path)


def constant_of_shape_bomb(path) -> str:
    inits = [numpy_helper.from_array(np.array([1 << 20, 1 << 20], np.int64), "shape"),
             numpy_helper.from_array(np.zeros((8, 4), np.float32), "w")]
    nodes = [helper.make_node("ConstantOfShape", ["shape"], ["big"]),
             helper.make_node("MatMul", ["x", "w"], ["h"]),
             helper.make_node("ReduceSum", ["big"], ["s"], keepdims=0),
             helper.make_node("Add", ["h", "s"], ["y"])]
    return _save(_single_input_model(nodes, inits), path, check=False)


def resize_bomb(path) -> str:
    inits = [numpy_helper.from_array(np.array([1.0, 1.0, 1e5, 1e5], np.float32), "scales"),
             numpy_helper.from_array(np.zeros((8, 4), np.float32), "w")]
    nodes = [helper.make_node("MatMul", ["x", "w"], ["h"]),
             helper.make_node("Reshape", ["h", "shape4"], ["h4"]),
             helper.make_node("Resize", ["h4", "", "scales"], ["big"], mode="nearest"),
             helper.make_node("ReduceMean", ["big"], ["y"], axes=[2, 3], keepdims=0)]
    inits.append(numpy_helper.from_array(np.array([-1, 4, 1, 1], np.int64), "shape4"))
    return _save(_single_input_model(nodes, inits), path, check=False)


def custom_domain(path) -> str:
    nodes = [helper.make_node("Evil", ["x"], ["y"], domain="com.attacker")]
    model = _single_input_model(nodes, [], extra_opsets=[helper.make_opsetid("com.attacker", 1)])
    return _save(model, path, check=False)


def opset(path, version: int) -> str:
    w = numpy_helper.from_array(np.zeros((8, 4), np.float32), "w")
    return _save(_single_input_model([helper.make_node("MatMul", ["x", "w"], ["y"])], [w], opset=version), path, check=False)


def two_inputs(path) -> str:
    nodes = [helper.make_node("Add", ["x", "x2"], ["s"]), helper.make_node("MatMul", ["s", "w"], ["y"])]
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 8]),
              helper.make_tensor_value_info("x2", TensorProto.FLOAT, ["batch", 8])]
    w = numpy_helper.from_array(np.zeros((8, 4), np.float32), "w")
    return _save(_single_input_model(nodes, [w], inputs=inputs), path)


def int64_input(path) -> str:
    nodes = [helper.make_node("Cast", ["x"], ["xf"], to=TensorProto.FLOAT), helper.make_node("MatMul", ["xf", "w"], ["y"])]
    w = numpy_helper.from_array(np.zeros((8, 4), np.float32), "w")
    return _save(_single_input_model(nodes, [w], in_type=TensorProto.INT64), path)


def nan_output(path) -> str:
    w = numpy_helper.from_array(np.full((8, 4), np.nan, np.float32), "w")
    return _save(_single_input_model([helper.make_node("MatMul", ["x", "w"], ["y"])], [w]), path)


def slow_model_bytes(n_matmuls: int = 20, size: int = 1024) -> bytes:
    """A LunarLander policy taking ~0.3 s per call on one core: chained 1024x1024 products with a
    Sin between them (so that onnxruntime cannot fold them into constants)."""
    big = np.full((size, size), 1e-3, np.float32)
    nodes = [helper.make_node("ReduceSum", ["x"], ["s"], keepdims=0),
             helper.make_node("Mul", ["c", "s"], ["cs"]), helper.make_node("MatMul", ["cs", "w"], ["h0"])]
    for i in range(n_matmuls - 1):
        nodes += [helper.make_node("Sin", [f"h{i}"], [f"t{i}"]), helper.make_node("MatMul", [f"t{i}", "w"], [f"h{i + 1}"])]
    nodes += [helper.make_node("ReduceMean", [f"h{n_matmuls - 1}"], ["m"], keepdims=0),
              helper.make_node("MatMul", ["x", "w8"], ["p"]), helper.make_node("Add", ["p", "m"], ["y"])]
    inits = [numpy_helper.from_array(big, "c"), numpy_helper.from_array(big, "w"),
             numpy_helper.from_array(np.ones((8, 4), np.float32), "w8")]
    graph = helper.make_graph(nodes, "slow", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["b", 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["b", 4])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model.SerializeToString()
