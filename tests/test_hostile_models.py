"""Bad and hostile ONNX files: each is refused with exit code 2 and a specific message,
quickly, without a traceback and with the grader's memory bounded."""

import json
import os
import re
import resource
import time

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import onnx_fixtures as F
from conftest import run_cli

MEMORY_BOUND_KB = 5 * 1024 * 1024  # RSS of the grader and its workers, in kB


def _grade(path, *extra):
    t0 = time.monotonic()
    proc = run_cli(path, "--json", "--no-video", "--episodes", "3", *extra, timeout=60)
    elapsed = time.monotonic() - t0
    assert "Traceback" not in proc.stderr + proc.stdout
    assert elapsed < 30, f"took {elapsed:.1f} s"
    assert resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss < MEMORY_BOUND_KB
    return proc, json.loads(proc.stdout)


def _build(name, tmp_path):
    path = tmp_path / "model.onnx"
    if name == "truncated":
        F.mlp(tmp_path / "full.onnx")
        data = (tmp_path / "full.onnx").read_bytes()
        path.write_bytes(data[: len(data) // 2])
    elif name == "random":
        path.write_bytes(np.random.default_rng(0).integers(0, 256, 5000, dtype=np.uint8).tobytes())
    elif name == "empty":
        path.write_bytes(b"")
    elif name == "external_absolute":
        F.external_data(path, "/etc/passwd")
    elif name == "external_relative":
        F.external_data(path, "../../secret_seeds.txt")
    elif name == "external_sibling_link":
        (tmp_path / "weights.bin").symlink_to("/etc/passwd")
        F.external_data(path, "weights.bin")
    elif name == "external_missing":
        F.external_data(path, "weights.bin")
    elif name == "loop":
        F.loop_bomb(path)
    elif name == "constant_of_shape":
        F.constant_of_shape_bomb(path)
    elif name == "resize":
        F.resize_bomb(path)
    elif name == "custom_domain":
        F.custom_domain(path)
    elif name == "opset999":
        F.opset(path, 999)
    elif name == "two_inputs":
        F.two_inputs(path)
    elif name == "int64_input":
        F.int64_input(path)
    elif name == "wrong_actions":
        F.mlp(path, n_out=3)
    elif name == "nan":
        F.nan_output(path)
    elif name == "batchnorm_training":
        F.conv_policy(path, train_mode_bn=True)
    return path


CASES = {
    "truncated": "not a valid ONNX model",
    "random": "not a valid ONNX model|no ONNX graph",
    "empty": "the file is empty",
    "external_absolute": "not a file name beside the model",
    "external_relative": "not a file name beside the model",
    "external_sibling_link": "not beside it \\(or is a link\\)",
    "external_missing": "not beside it",
    "loop": "not allowed in a policy network: Loop",
    "constant_of_shape": "ConstantOfShape node .* would create a tensor",
    "resize": "not allowed in a policy network: Resize",
    "custom_domain": "non-standard operator domains: com.attacker",
    "opset999": "opset 999 is outside the supported",
    "two_inputs": "2 inputs",
    "int64_input": "is int64; expected one float32 input",
    "wrong_actions": "shape \\[batch, 3\\]; expected one output \\[batch, 4\\]",
    "nan": "NaN or infinity",
    "batchnorm_training": "depends on the other states in its batch",
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_bad_submission_is_invalid_with_a_specific_message(name, tmp_path):
    path = _build(name, tmp_path)
    task = ["--task", "lunarlander"] if name in ("truncated", "random", "empty", "two_inputs", "int64_input") else []
    proc, result = _grade(path, *task)
    assert proc.returncode == 2, proc.stderr
    assert result["status"] == "invalid"
    failed = [c for c in result["checks"] if not c["passed"] and c["severity"] == "error"]
    assert failed and failed[0]["hint"], result["checks"]
    assert re.search(CASES[name], failed[0]["message"]), failed[0]["message"]
    assert result["episodes"] == []


def test_a_sidecar_named_by_the_model_is_read_and_inlined(tmp_path):
    """torch's layout: model.onnx + the file it names beside it. Read only as a regular file, inlined in memory."""
    path = F.external_data(tmp_path / "model.onnx", "model.onnx.data")
    weights = np.random.default_rng(3).standard_normal((8, 4)).astype(np.float32)
    (tmp_path / "model.onnx.data").write_bytes(weights.tobytes())
    proc, result = _grade(path)
    assert result["status"] == "graded", result["error"]
    assert next(c for c in result["checks"] if c["name"] == "no_external_data")["passed"]
    # the same bytes through a link are refused, whatever the link points to
    (tmp_path / "model.onnx.data").unlink()
    (tmp_path / "real.data").write_bytes(weights.tobytes())
    (tmp_path / "model.onnx.data").symlink_to(tmp_path / "real.data")
    proc, result = _grade(path)
    assert result["status"] == "invalid" and "or is a link" in result["error"]


def test_an_offset_outside_the_sidecar_is_refused(tmp_path):
    path = F.external_data(tmp_path / "model.onnx", "model.onnx.data")
    (tmp_path / "model.onnx.data").write_bytes(b"\0" * 64)  # the tensor says 128 bytes
    proc, result = _grade(path)
    assert result["status"] == "invalid" and "points outside model.onnx.data" in result["error"]


def test_runtime_memory_bomb_is_stopped_by_the_worker_limit(tmp_path):
    """A shape computed from the input passes the static checks; the worker's memory limit stops it."""
    nodes = [
        helper.make_node("ReduceSum", ["x"], ["s"], keepdims=0),  # [batch]
        helper.make_node("Abs", ["s"], ["a"]),
        helper.make_node("Add", ["a", "big"], ["n"]),
        helper.make_node("Cast", ["n"], ["n64"], to=TensorProto.INT64),
        helper.make_node("ReduceMax", ["n64"], ["m0"], keepdims=0),
        helper.make_node("Unsqueeze", ["m0", "axis0"], ["m"]),
        helper.make_node("ConstantOfShape", ["m"], ["huge"]),
        helper.make_node("ReduceSum", ["huge"], ["t"], keepdims=0),
        helper.make_node("MatMul", ["x", "w"], ["h"]),
        helper.make_node("Add", ["h", "t"], ["y"]),
    ]
    inits = [numpy_helper.from_array(np.array(5e9, np.float32), "big"), numpy_helper.from_array(np.array([0], np.int64), "axis0"),
             numpy_helper.from_array(np.zeros((8, 4), np.float32), "w")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["b", 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["b", 4])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path = tmp_path / "bomb.onnx"
    path.write_bytes(model.SerializeToString())
    proc, result = _grade(path)
    assert proc.returncode == 2
    assert re.search("memory|crashed", result["error"]), result["error"]


def test_oversized_file_is_refused_before_parsing(tmp_path, monkeypatch):
    from grader import onnx_model
    from grader.grading import grade

    monkeypatch.setattr(onnx_model, "MAX_FILE_BYTES", 1000)
    path = tmp_path / "model.onnx"
    F.mlp(path, hidden=64)
    result = grade(path, out=tmp_path / "out", video=False, report=False)
    assert result.status == "invalid" and "over the 0 MB limit" in result.error
