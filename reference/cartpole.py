"""The CartPole reference: a hand-written linear controller, exported to ONNX.

CartPole needs no training to be solved: pushing towards the side the pole falls to, weighted by
the angle and the angular velocity (plus a little of the cart's position and velocity, so that it
stays near the centre), balances it for the whole 500 steps on every seed tried. The policy is
one MatMul: ``scores = state @ W`` with ``W[:, 1] = w`` (push right) and ``W[:, 0] = -w``.

    python -m reference.cartpole --out reference/models/cartpole_heuristic.onnx
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

WEIGHTS = (0.1, 0.5, 1.0, 1.0)  # cart position, cart velocity, pole angle, pole angular velocity


def build(path: str | Path, weights: tuple[float, ...] = WEIGHTS) -> Path:
    """Write the controller as an ONNX model: float32 ``[batch, 4]`` -> ``[batch, 2]``."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    w = np.asarray(weights, dtype=np.float32)
    matrix = np.stack([-w, w], axis=1).astype(np.float32)  # [4, 2]
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["state", "W"], ["scores"])], "cartpole_heuristic",
        [helper.make_tensor_value_info("state", TensorProto.FLOAT, ["batch", 4])],
        [helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["batch", 2])],
        [numpy_helper.from_array(matrix, "W")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="rl-grader reference")
    model.ir_version = 8
    onnx.checker.check_model(model)
    path = Path(path)
    path.write_bytes(model.SerializeToString())
    return path


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m reference.cartpole", description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=Path("reference/models/cartpole_heuristic.onnx"))
    args = p.parse_args(argv)
    print(build(args.out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
