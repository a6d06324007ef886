"""`grade baselines` writes the file that rubric thresholds name."""

import hashlib
import json

import numpy as np
from conftest import run_cli
from onnx import TensorProto, helper, numpy_helper


def constant_action_model(path, action: int) -> str:
    bias = np.zeros(4, np.float32)
    bias[action] = 1.0
    nodes = [helper.make_node("Gemm", ["x", "w", "b"], ["y"])]
    inits = [numpy_helper.from_array(np.zeros((8, 4), np.float32), "w"), numpy_helper.from_array(bias, "b")]
    graph = helper.make_graph(nodes, "const", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["b", 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["b", 4])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path.write_bytes(model.SerializeToString())
    return str(path)


def test_baselines_file_and_thresholds_by_name(tmp_path):
    ref = constant_action_model(tmp_path / "noop.onnx", 0)  # never firing an engine: worse than random
    (tmp_path / "r.toml").write_text(
        'id = "t"\ntask = "lunarlander"\nepisodes = 12\nbaselines = "base/b.json"\n[references]\nnoop = "noop.onnx"\n'
        '[seeds]\npublic = "0-1"\ngrading = "300-399"\n[scoring]\nzero = "noop"\nfull = "random"\n')
    proc = run_cli("baselines", "--rubric", tmp_path / "r.toml")
    assert proc.returncode == 0, proc.stderr
    data = json.loads((tmp_path / "base" / "b.json").read_text())
    assert set(data["entries"]) == {"random", "noop"}
    assert data["n_seeds"] == 12 and len(data["entries"]["random"]["returns"]) == 12
    assert data["entries"]["noop"]["sha256"] == hashlib.sha256(open(ref, "rb").read()).hexdigest()
    assert {"python", "gymnasium", "onnxruntime"} <= set(data["versions"])
    means = {k: v["summary"]["mean"] for k, v in data["entries"].items()}
    assert means["noop"] < means["random"]
    # Grading the zero-point model itself earns nothing; the thresholds came from the file.
    proc = run_cli(ref, "--rubric", tmp_path / "r.toml", "--json", "--no-video", "--out", tmp_path / "o")
    result = json.loads(proc.stdout)
    assert result["rubric"]["zero_at"] == means["noop"] and result["rubric"]["full_at"] == means["random"]
    assert result["summary"]["mean"] == means["noop"] and result["score"] == 0


def test_baselines_refuses_a_bad_reference(tmp_path):
    (tmp_path / "bad.onnx").write_bytes(b"not onnx")
    (tmp_path / "r.toml").write_text(
        'id = "t"\ntask = "lunarlander"\nepisodes = 2\nbaselines = "b.json"\n[references]\nreference = "bad.onnx"\n'
        '[seeds]\npublic = "0-1"\ngrading = "3-9"\n[scoring]\nzero = 0\nfull = 200\n')
    proc = run_cli("baselines", "--rubric", tmp_path / "r.toml")
    assert proc.returncode == 1 and "reference 'reference' (bad.onnx)" in proc.stderr
