"""MsPacman models that take raw frames: a preprocessing graph put in front of a network.

The grader's second MsPacman contract feeds the model the last K raw RGB frames,
``[batch, K, 210, 160, 3]`` uint8 (``grader/tasks/mspacman.py``), and the model preprocesses them
itself. A student exports a torch module whose ``forward`` preprocesses, then calls the network
(docs/mspacman.md). This module builds such models from a shipped network with ``onnx.helper``,
so that the preprocessing is exactly known:

* :func:`lesson_inside`: the lesson's preprocessing (the channel mean truncated to uint8, rows
  1..170, 2 rows of 150 above and below, every 4th pixel, a stack of 5), computed as the grader
  computes it (:func:`grader.tasks.contract.preprocess_frames`): the float32 mean as a sum divided by 3,
  cast to uint8. In front of the strong reference it plays exactly the reference's episodes.
* :func:`scaled_inside`: another preprocessing, as a student following the homework might write
  it: the mean of the channels *not* truncated and scaled to 0..1, borders of 150/255, a stack of
  4 frames (the oldest used twice, to fill the network's 5 inputs); the network is the strong
  reference with its own division by 255 removed (:func:`unit_network`). It plays well on its own
  states only: the network alone, fed the lesson's 0..255 states, sees inputs 255 times too large.

``python -m reference.frames lesson|scaled --out FILE`` writes either, built from
``reference/models/mspacman_strong.onnx`` (4 MB: not shipped twice; the tests build them).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

STRONG = Path(__file__).resolve().parent / "models" / "mspacman_strong.onnx"
BORDER = 150.0


def _const(name: str, values, dtype) -> object:
    from onnx import helper, numpy_helper

    return helper.make_node("Constant", [], [name], value=numpy_helper.from_array(np.asarray(values, dtype=dtype), name))


def _grid_nodes(src: str, out: str) -> list:
    """``src`` ``[B, K, 210, 160, 3]`` -> ``out`` ``[B, K, 42, 40, 3]``: frame rows 4, 8, .., 168 and
    columns 1, 5, .., 157, the pixels the lesson's 44x40 state keeps (its rows 1..42)."""
    from onnx import helper

    return [_const("pre_starts", [4, 1], np.int64), _const("pre_ends", [169, 160], np.int64),
            _const("pre_axes", [2, 3], np.int64), _const("pre_steps", [4, 4], np.int64),
            helper.make_node("Slice", [src, "pre_starts", "pre_ends", "pre_axes", "pre_steps"], [out])]


def lesson_nodes(src: str, out: str) -> list:
    """The lesson's preprocessing of a raw stack ``src`` into the 44x40 float32 states ``out``."""
    from onnx import TensorProto, helper

    return [*_grid_nodes(src, "pre_grid"),
            helper.make_node("Cast", ["pre_grid"], ["pre_f"], to=TensorProto.FLOAT),
            _const("pre_channel", [4], np.int64),
            helper.make_node("ReduceSum", ["pre_f", "pre_channel"], ["pre_sum"], keepdims=0),
            _const("pre_three", 3.0, np.float32),
            helper.make_node("Div", ["pre_sum", "pre_three"], ["pre_mean"]),
            helper.make_node("Cast", ["pre_mean"], ["pre_u8"], to=TensorProto.UINT8),  # truncation, as the lesson
            helper.make_node("Cast", ["pre_u8"], ["pre_gray"], to=TensorProto.FLOAT),
            _const("pre_pads", [0, 0, 1, 0, 0, 0, 1, 0], np.int64), _const("pre_border", BORDER, np.float32),
            helper.make_node("Pad", ["pre_gray", "pre_pads", "pre_border"], [out], mode="constant")]


def scaled_nodes(src: str, out: str) -> list:
    """Another preprocessing: the channel mean (not truncated) scaled to 0..1, borders 150/255,
    4 frames made 5 by using the oldest twice."""
    from onnx import TensorProto, helper

    return [*_grid_nodes(src, "pre_grid"),
            helper.make_node("Cast", ["pre_grid"], ["pre_f"], to=TensorProto.FLOAT),
            helper.make_node("ReduceMean", ["pre_f"], ["pre_mean"], axes=[4], keepdims=0),  # opset 17: an attribute
            _const("pre_scale", 255.0, np.float32),
            helper.make_node("Div", ["pre_mean", "pre_scale"], ["pre_unit"]),
            _const("pre_pads", [0, 0, 1, 0, 0, 0, 1, 0], np.int64), _const("pre_border", BORDER / 255.0, np.float32),
            helper.make_node("Pad", ["pre_unit", "pre_pads", "pre_border"], ["pre_four"], mode="constant"),
            _const("pre_s0", [0], np.int64), _const("pre_s1", [1], np.int64), _const("pre_ax", [1], np.int64),
            helper.make_node("Slice", ["pre_four", "pre_s0", "pre_s1", "pre_ax"], ["pre_oldest"]),
            helper.make_node("Concat", ["pre_oldest", "pre_four"], [out], axis=1)]


def with_preprocessing(network: bytes, nodes_of, frames: int) -> bytes:
    """``network`` (one input) behind the nodes ``nodes_of(src, out)``: the model's input is then
    ``frames`` uint8 ``[batch, frames, 210, 160, 3]`` named ``frames``."""
    import onnx
    from onnx import TensorProto, helper

    model = onnx.load_from_string(network)
    graph = model.graph
    state = graph.input[0].name
    nodes = nodes_of("frames", state)
    del graph.input[:]
    graph.input.append(helper.make_tensor_value_info("frames", TensorProto.UINT8, ["batch", frames, 210, 160, 3]))
    old = list(graph.node)
    del graph.node[:]
    graph.node.extend(nodes + old)
    onnx.checker.check_model(model)
    return model.SerializeToString()


def unit_network(network: bytes) -> bytes:
    """The strong reference's network for states in 0..1: its first node divides the input by 255;
    that constant becomes 1."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load_from_string(network)
    first, div = model.graph.node[0], model.graph.node[1]
    if first.op_type != "Constant" or div.op_type != "Div" or div.input[1] != first.output[0]:
        raise ValueError("expected the network to start by dividing its input by a constant")
    first.attribute[0].t.CopyFrom(numpy_helper.from_array(np.array(1.0, np.float32), first.attribute[0].t.name))
    return model.SerializeToString()


def lesson_inside(network: bytes | None = None) -> bytes:
    """The strong reference (or ``network``, taking the lesson's states) with the lesson's preprocessing inside."""
    return with_preprocessing(network if network is not None else STRONG.read_bytes(), lesson_nodes, 5)


def scaled_inside(network: bytes | None = None) -> bytes:
    """The 0..1, stack-of-4 agent: :func:`scaled_nodes` in front of :func:`unit_network`."""
    return with_preprocessing(unit_network(network if network is not None else STRONG.read_bytes()), scaled_nodes, 4)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m reference.frames", description=__doc__.split("\n\n")[0])
    parser.add_argument("which", choices=("lesson", "scaled", "unit-network"),
                        help="lesson: the lesson's preprocessing inside; scaled: 0..1, 4 frames; "
                             "unit-network: the scaled agent's network alone (input [batch, 5, 44, 40] in 0..1)")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    build = {"lesson": lesson_inside, "scaled": scaled_inside, "unit-network": lambda: unit_network(STRONG.read_bytes())}
    args.out.write_bytes(build[args.which]())
    print(f"{args.out}: {args.out.stat().st_size} bytes")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
