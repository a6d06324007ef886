"""Bad and hostile ONNX files: each is refused with exit code 2 and a specific message, by the cap
meant for it, without a traceback and with the grader's memory bounded. (How long the refusals take
is measured in benchmarks/bench_refusals.py, not asserted here.)"""

import json
import re
import resource

import numpy as np
import onnx
import onnx_fixtures as F
import pytest
from conftest import run_cli
from onnx import TensorProto, helper, numpy_helper

MEMORY_BOUND_KB = 5 * 1024 * 1024  # RSS of the grader and its workers, in kB


def _grade(path, *extra):
    proc = run_cli(path, "--json", "--no-video", "--episodes", "3", *extra, timeout=120)
    assert "Traceback" not in proc.stderr + proc.stdout
    assert resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss < MEMORY_BOUND_KB
    return proc, json.loads(proc.stdout)


def _truncated(path, tmp_path):
    F.mlp(tmp_path / "full.onnx")
    data = (tmp_path / "full.onnx").read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _sibling_link(path, tmp_path):
    (tmp_path / "weights.bin").symlink_to("/etc/passwd")
    F.external_data(path, "weights.bin")


# name -> builder(path of the model to write, its folder)
_BUILDERS = {
    "truncated": _truncated,
    "random": lambda path, _: path.write_bytes(np.random.default_rng(0).integers(0, 256, 5000, dtype=np.uint8).tobytes()),
    "empty": lambda path, _: path.write_bytes(b""),
    "external_absolute": lambda path, _: F.external_data(path, "/etc/passwd"),
    "external_relative": lambda path, _: F.external_data(path, "../../secret_seeds.txt"),
    "external_sibling_link": _sibling_link,
    "external_missing": lambda path, _: F.external_data(path, "weights.bin"),
    "loop": lambda path, _: F.loop_bomb(path),
    "constant_of_shape": lambda path, _: F.constant_of_shape_bomb(path),
    "resize": lambda path, _: F.resize_bomb(path),
    "custom_domain": lambda path, _: F.custom_domain(path),
    "opset999": lambda path, _: F.opset(path, 999),
    "two_inputs": lambda path, _: F.two_inputs(path),
    "int64_input": lambda path, _: F.int64_input(path),
    "wrong_actions": lambda path, _: F.mlp(path, n_out=3),
    "nan": lambda path, _: F.nan_output(path),
    "batchnorm_training": lambda path, _: F.conv_policy(path, train_mode_bn=True),
}


def _build(name, tmp_path):
    path = tmp_path / "model.onnx"
    if name in _BUILDERS:
        _BUILDERS[name](path, tmp_path)
    return path


CASES = {
    "truncated": "not a valid ONNX model",
    "random": "not a valid ONNX model|no ONNX graph",
    "empty": "the file is empty",
    "external_absolute": "not a file name beside the model",
    "external_relative": "not a file name beside the model",
    "external_sibling_link": "weights.bin, which is not one of this submission's files",
    "external_missing": "weights.bin, which is not one of this submission's files",
    "loop": "not allowed in a policy network: Loop",
    "constant_of_shape": "ConstantOfShape node .* would create a tensor",
    "resize": "Resize node .*scales by up to 1e\\+05 \\(limit 8\\)",
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
    assert result["status"] == "invalid" and "a link or not a regular file" in result["error"]


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
    from grader.api import grade
    from grader.submission import onnx_model

    monkeypatch.setattr(onnx_model, "MAX_FILE_BYTES", 1000)
    path = tmp_path / "model.onnx"
    F.mlp(path, hidden=64)
    result = grade(path, out=tmp_path / "out", video=False, report=False)
    assert result.status == "invalid" and "over the 0 MB limit" in result.error


# --- budgets: a slow model is stopped, fast, with how slow it was ------------------------------
def _budgets(**kw):
    from grader.scoring.rubric import Budgets

    return Budgets(**kw)


def test_a_slow_model_fails_fast_on_the_per_decision_budget():
    from grader.errors import EngineFailure
    from grader.runtime.engine import Engine

    with Engine(1) as engine:
        engine.load(F.slow_model_bytes(), task="lunarlander", budgets=_budgets(decision_s=0.01, decision_window=10))
        with pytest.raises(EngineFailure) as err:
            engine.evaluate([0, 1, 2])
    m = re.fullmatch(r"the model took \d+\.\d\d s per decision \(mean of (\d+) calls?\); the limit is 0\.01 s: "
                     r"use a smaller network", str(err.value))
    assert m, str(err.value)
    assert int(m[1]) <= 10  # stopped once its window of decisions was over budget, not after the episodes


def test_a_slow_model_graded_with_a_tiny_rubric_budget_is_invalid_in_seconds(tmp_path):
    from grader.api import grade
    from grader.scoring.rubric import default_rubric_path, load_rubric

    rubric = load_rubric(default_rubric_path("lunarlander"))
    rubric = rubric.model_copy(update={"budgets": _budgets(decision_s=0.01, decision_window=10)})
    path = tmp_path / "slow.onnx"
    path.write_bytes(F.slow_model_bytes())
    result = grade(path, rubric=rubric, episodes=3, out=tmp_path / "out", video=False, report=False, workers=1)
    assert result.status == "invalid"
    m = re.search(r"s per decision \(mean of (\d+) calls?\); the limit is 0\.01 s: use a smaller network", result.error)
    assert m and int(m[1]) <= 10, result.error  # the decision window's cap, not the episodes' end


def test_one_call_over_the_hard_cap_is_stopped():
    from grader.errors import EngineFailure
    from grader.runtime.engine import Engine

    with Engine(1) as engine:
        engine.load(F.slow_model_bytes(), task="lunarlander", budgets=_budgets(call_max_s=0.05, decision_s=10))
        with pytest.raises(EngineFailure, match=r"one call of the model took .* the limit is 0\.05 s per call"):
            engine.evaluate([0])
        engine.load(None, task="lunarlander")  # a fresh worker took over
        assert len(engine.evaluate([0])) == 1


def test_the_episodes_wall_budget_holds_whatever_the_heartbeats():
    """Each call is within the per-call budgets and heartbeats keep coming: the wall budget still stops it."""
    from grader.errors import EngineFailure
    from grader.runtime.engine import Engine

    with Engine(1) as engine:
        engine.load(F.slow_model_bytes(), task="lunarlander", budgets=_budgets(decision_s=10, call_max_s=30, episodes_wall_s=3))
        with pytest.raises(EngineFailure) as err:
            engine.evaluate(list(range(8)))
    # the wall budget's cap was hit before the episodes were done
    assert re.search(r"took longer than the 3 s wall-time budget \([0-7] of 8 episodes finished; the model took "
                     r"\d+\.\d\d s per decision \(mean of \d+ calls?\)\): use a smaller network", str(err.value)), str(err.value)


def test_the_episodes_cpu_budget_is_enforced_by_the_worker_rlimit():
    from grader.errors import EngineFailure
    from grader.runtime.engine import Engine

    with Engine(1) as engine:
        engine.load(F.slow_model_bytes(), task="lunarlander",
                    budgets=_budgets(decision_s=10, call_max_s=30, episodes_cpu_s=1, episodes_wall_s=120))
        with pytest.raises(EngineFailure, match=r"more CPU time than the grader allows \(its budget: 1 s\)"):
            engine.evaluate(list(range(8)))


def test_rubric_budgets_table_is_validated(tmp_path):
    from grader.scoring.rubric import RubricError, load_rubric

    text = Path_rubric = tmp_path / "r.toml"
    text.write_text('id = "x"\ntask = "lunarlander"\nepisodes = 1\n[seeds]\npublic = "0-1"\ngrading = "10-11"\n'
                    '[scoring]\nzero = 0\nfull = 1\n[budgets]\ndecision_s = 0.02\nepisodes_wall_s = 30\n')
    rubric = load_rubric(Path_rubric)
    assert rubric.budgets.decision_s == 0.02 and rubric.budgets.episodes_wall_s == 30
    text.write_text(text.read_text() + "decison_window = 3\n")
    with pytest.raises(RubricError, match="budgets.decison_window: unknown key"):
        load_rubric(Path_rubric)


# --- batch dependence: every batch size the engine uses -------------------------------------------
def batch_size_trap(path, trigger: int = 8) -> str:
    """An MLP whose action is 0 whenever the batch holds exactly ``trigger`` states (e.g.
    LunarLander's pool size), and its honest argmax otherwise: Shape -> Gather(0) -> Equal -> Where into the logits."""
    rng = np.random.default_rng(3)
    inits = [numpy_helper.from_array(rng.standard_normal((8, 4)).astype(np.float32), "w"),
             numpy_helper.from_array(np.array(trigger, np.int64), "trigger"),
             numpy_helper.from_array(np.array([1000.0, 0, 0, 0], np.float32), "bonus"),
             numpy_helper.from_array(np.zeros(4, np.float32), "none")]
    nodes = [helper.make_node("MatMul", ["x", "w"], ["logits"]),
             helper.make_node("Shape", ["x"], ["shape"]),
             helper.make_node("Gather", ["shape", "zero"], ["batch"], axis=0),
             helper.make_node("Equal", ["batch", "trigger"], ["hit"]),
             helper.make_node("Where", ["hit", "bonus", "none"], ["add"]),
             helper.make_node("Add", ["logits", "add"], ["y"])]
    inits.append(numpy_helper.from_array(np.array(0, np.int64), "zero"))
    graph = helper.make_graph(nodes, "trap", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 4])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    path.write_bytes(model.SerializeToString())
    return str(path)


def test_output_that_depends_on_the_batch_size_only_at_the_pool_size_fails(tmp_path):
    from grader.tasks.contract import get_task

    pool = get_task("lunarlander").pool_size
    path = batch_size_trap(tmp_path / "trap.onnx", trigger=pool)
    proc, result = _grade(path)
    assert proc.returncode == 2
    failed = [c for c in result["checks"] if not c["passed"] and c["severity"] == "error"]
    assert failed[0]["name"] == "batch_independence", failed
    assert f"at a batch of {pool} (the episodes' pool size) a state's output depends on" in failed[0]["message"]
    assert failed[0]["hint"]


@pytest.mark.parametrize("trigger", [3, 5])
def test_batch_sizes_of_a_shrinking_pool_are_checked(tmp_path, trigger):
    from grader.runtime.engine import Engine
    from grader.submission import checks as C
    from grader.tasks.contract import get_task

    with Engine(1) as engine:
        engine.load(open(batch_size_trap(tmp_path / "t.onnx", trigger), "rb").read(), task="lunarlander")
        check = C.check_batch_independence(C.Probe(**engine.probe()), get_task("lunarlander"))
    assert not check.passed and f"at a batch of {trigger} " in check.message


def test_duplicate_probe_actions_refuse_a_batch_size_dependent_model(tmp_path):
    from grader.classroom.duplicates import probe_set
    from grader.errors import EngineFailure
    from grader.runtime.engine import Engine

    states, _ = probe_set("lunarlander", 64)
    with Engine(1) as engine:
        engine.load(open(batch_size_trap(tmp_path / "t.onnx"), "rb").read(), task="lunarlander")
        with pytest.raises(EngineFailure, match="actions depend on the batch size"):
            engine.actions(states)
        engine.load(open(F.mlp(tmp_path / "ok.onnx"), "rb").read(), task="lunarlander")
        honest = engine.actions(states)
        assert honest.shape == (64,) and (honest == engine.actions(states, batch_sizes=[64])).all()


# --- a huge model is rejected before anything large is built ------------------------------------
def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b, n = n & 0x7F, n >> 7
        out.append(b | 0x80 if n else b)
        if not n:
            return bytes(out)


def node_flood_bytes(n_nodes: int = 2_000_000) -> bytes:
    """A LunarLander-shaped model of ``n_nodes`` Relu nodes (~13 bytes each), written by repeating
    one serialized NodeProto inside GraphProto field 1 (ModelProto field 7)."""
    node = helper.make_node("Relu", ["x"], ["x"]).SerializeToString()
    entry = b"\x0a" + _varint(len(node)) + node
    io = helper.make_graph([], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["b", 8])],
                           [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["b", 4])]).SerializeToString()
    graph = entry * n_nodes + io
    head = helper.make_model(helper.make_graph([], "g", [], []), opset_imports=[helper.make_opsetid("", 17)])
    head.ClearField("graph")
    head.ir_version = 8
    return head.SerializeToString() + b"\x3a" + _varint(len(graph)) + graph


def test_a_flood_of_two_million_nodes_is_refused_by_the_wire_scan_before_any_parse(tmp_path):
    import subprocess
    import sys

    path = tmp_path / "flood.onnx"
    path.write_bytes(node_flood_bytes())
    assert path.stat().st_size > 20 * 2**20
    code = (
        "import json, resource, sys, time\n"
        "import onnx\n"
        "parsed = []\n"
        "_load = onnx.load_from_string\n"
        # only the student's bytes count: loading the rubric parses its (small) reference models
        f"onnx.load_from_string = lambda b, *a, **k: (len(b) == {path.stat().st_size} and parsed.append(1)) or _load(b, *a, **k)\n"
        "from grader.api import grade\n"
        "t = time.perf_counter()\n"
        f"r = grade({str(path)!r}, task='lunarlander', out={str(tmp_path / 'out')!r}, video=False, report=False)\n"
        # VmHWM, this process's own peak: ru_maxrss would carry the forking pytest's peak across exec
        "hwm = next(int(l.split()[1]) for l in open('/proc/self/status') if l.startswith('VmHWM:'))\n"
        "print(json.dumps({'s': time.perf_counter() - t, 'rss_mb': hwm / 1024, 'status': r.status, 'error': r.error,\n"
        "                  'parsed': len(parsed)}))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["status"] == "invalid" and "over 5000 nodes" in out["error"], out
    assert out["rss_mb"] < 400, out  # the interpreter, its imports and the file's bytes: nothing parsed
    assert out["parsed"] == 0, out  # refused by the wire scan: onnx's protobuf parser never ran


def test_the_early_look_at_the_input_gives_up_on_a_flood_of_nodes(monkeypatch):
    """Reading the input's shape from the bytes (to start the workers early) stops after the node
    limit: the wire scan then refuses the file with its own message."""
    from grader.limits import MAX_NODES
    from grader.submission import onnx_model

    seen: list[onnx_model._Counts] = []

    class Counting(onnx_model._Counts):
        def __init__(self) -> None:
            super().__init__()
            seen.append(self)

    monkeypatch.setattr(onnx_model, "_Counts", Counting)
    assert onnx_model.input_dims(node_flood_bytes(50_000)) is None
    assert seen and seen[0].entries <= MAX_NODES + 10
    assert onnx_model.input_dims(node_flood_bytes(10)) == (None, 8)


def test_the_wire_scan_agrees_with_protobuf_on_real_models(tmp_path):
    from grader.submission.onnx_model import scan_structure

    for path in (F.mlp(tmp_path / "a.onnx"), F.conv_policy(tmp_path / "b.onnx"), F.loop_bomb(tmp_path / "c.onnx")):
        model = onnx.load(path)
        nodes = len(model.graph.node) + sum(len(a.g.node) for n in model.graph.node for a in n.attribute if a.HasField("g"))
        assert scan_structure(open(path, "rb").read()) == nodes


def _nested_if(depth: int):
    """A graph whose output comes from ``depth`` nested If nodes (subgraph in subgraph ...)."""
    leaf = helper.make_graph([helper.make_node("Identity", ["x"], ["o0"])], "g0", [],
                             [helper.make_tensor_value_info("o0", TensorProto.FLOAT, ["b", 4])])
    inner = leaf
    for d in range(1, depth + 1):
        node = helper.make_node("If", ["cond"], [f"o{d}"], then_branch=inner, else_branch=leaf)
        inner = helper.make_graph([node], f"g{d}", [], [helper.make_tensor_value_info(f"o{d}", TensorProto.FLOAT, ["b", 4])])
    return list(inner.node)


@pytest.mark.parametrize("bomb", ["nested_subgraphs", "value_info_flood"])
def test_structure_bombs_are_refused_by_the_wire_scan(bomb, tmp_path):
    from grader.errors import ModelLoadError
    from grader.submission.onnx_model import parse_model

    if bomb == "nested_subgraphs":
        nodes, expect = _nested_if(8), "nests subgraphs more than 4 deep"
    else:
        nodes, expect = [helper.make_node("Identity", ["x"], ["y"])], "over 200000 protobuf entries"
    graph = helper.make_graph(nodes, "bomb", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["b", 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["b", 4])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    data = model.SerializeToString()
    if bomb == "value_info_flood":  # a second ModelProto.graph field merges 250 000 value_info entries (field 13) in
        vi = helper.make_tensor_value_info("v", TensorProto.FLOAT, [1]).SerializeToString()
        flood = (b"\x6a" + _varint(len(vi)) + vi) * 250_000
        data += b"\x3a" + _varint(len(flood)) + flood
    with pytest.raises(ModelLoadError, match=expect):
        parse_model(data)
