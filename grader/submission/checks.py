"""Checks on a submitted ONNX policy, before any episode is played.

Each ``check_*`` function returns a :class:`~grader.result.CheckResult` whose message says what
was found and whose hint says how to fix it. Static checks read the parsed protobuf; runtime
checks read a :class:`Probe`, the raw outputs the sandboxed worker computed on contract states.
The order of :func:`static_checks` matters: later checks assume earlier ones passed.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import numpy as np

from grader.errors import TaskDetectionError
from grader.limits import MAX_NODES, MAX_TENSOR_ELEMENTS
from grader.resources import user_cache_dir
from grader.result import CheckResult
from grader.submission.onnx_model import (
    ParsedModel,
    constant_values,
    count_operators,
    default_opset,
    graph_inputs,
    is_external,
    iter_graphs,
    iter_tensors,
)
from grader.tasks import Task, all_contracts

# Operators a policy network needs, and a preprocessing inside the model (MsPacman's raw-frame
# contract: reductions, slicing, padding, casts, arithmetic, and Resize, whose output size must be
# fixed in the model: :func:`check_resize`). Control flow (Loop, If, Scan), random generators, Range
# and Tile are left out: they are never needed here and are how hostile models hang or allocate
# tens of GB.
ALLOWED_OPERATORS = frozenset(
    """
    Abs Add And ArgMax ArgMin AveragePool BatchNormalization Cast CastLike Ceil Celu Clip Concat
    Constant ConstantOfShape Conv ConvTranspose Div Dropout Einsum Elu Equal Erf Exp Expand
    Flatten Floor Gather GatherElements Gelu Gemm GlobalAveragePool GlobalMaxPool Greater
    GreaterOrEqual HardSigmoid HardSwish Identity InstanceNormalization LayerNormalization
    LeakyRelu Less LessOrEqual Log LogSoftmax MatMul Max MaxPool Mean Min Mish Mul Neg Not Or
    Pad Pow PRelu Reciprocal ReduceL2 ReduceLogSumExp ReduceMax ReduceMean ReduceMin ReduceProd
    ReduceSum ReduceSumSquare Relu Reshape Round Selu Shape Sigmoid Sign Sin Cos Size Slice
    Softmax Softplus Softsign Split Sqrt Squeeze Sub Sum Tanh Transpose Unsqueeze Where Xor
    Resize Mod
    """.split()
)
MAX_RESIZE_PIXELS = 1 << 20  # Resize: the product of the sizes fixed in the model (a 1024x1024 image)
MAX_RESIZE_SCALE = 8.0  # Resize by scales: at most this factor per axis
# Nodes through which Resize's output sizes may come from the input's own shape (batch, frames).
_SHAPE_PATH = frozenset({"Shape", "Slice", "Gather", "Squeeze", "Unsqueeze", "Cast", "Concat", "Identity"})
STANDARD_DOMAINS = ("", "ai.onnx")
MIN_IR, MIN_OPSET = 3, 7
# Operators whose output size is set by a constant input: checked against MAX_TENSOR_ELEMENTS.
_SHAPE_INPUT = {"ConstantOfShape": 0, "Expand": 1, "Reshape": 1}


def _ok(name: str, message: str, severity: str = "error") -> CheckResult:
    return CheckResult(name=name, passed=True, message=message, severity=severity)


def _fail(name: str, message: str, hint: str, severity: str = "error") -> CheckResult:
    return CheckResult(name=name, passed=False, message=message, hint=hint, severity=severity)


@lru_cache(maxsize=1)
def supported_versions() -> tuple[int, int]:
    """Highest IR version and default-domain opset that the installed onnxruntime runs.

    onnx usually knows newer versions than onnxruntime runs, so this asks onnxruntime: it loads
    a one-node model of our own at decreasing versions. The answer is a fact about the installed
    onnx and onnxruntime, so it is kept in a small cache file keyed by both versions (importing
    onnxruntime in the grading process costs ~60 ms; the models only ever run in the workers).
    """
    import json
    from importlib import metadata

    try:
        key = f"onnx-{metadata.version('onnx')}_ort-{metadata.version('onnxruntime')}"
    except metadata.PackageNotFoundError:
        return _probe_supported_versions()
    folder = user_cache_dir("probes")
    if folder is None:
        return _probe_supported_versions()
    path = folder / f"supported-versions-{key}.json"
    try:
        ir, opset = json.loads(path.read_text())
        if type(ir) is int and type(opset) is int:
            return ir, opset
    except (OSError, ValueError, TypeError):
        pass
    found = _probe_supported_versions()
    try:
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(list(found)))
        os.replace(tmp, path)
    except OSError:
        pass  # a read-only home: probe again next time
    return found


def _probe_supported_versions() -> tuple[int, int]:
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper

    def loads(ir: int, opset: int) -> bool:
        graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "v",
                                  [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
                                  [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
        model.ir_version = ir
        try:
            ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
            return True
        except Exception:  # noqa: BLE001 - "unsupported" comes as several exception types
            return False

    max_ir = next((ir for ir in range(onnx.IR_VERSION, MIN_IR - 1, -1) if loads(ir, 13)), 8)
    max_opset = next((v for v in range(onnx.defs.onnx_opset_version(), 13, -1) if loads(max_ir, v)), 13)
    return max_ir, max_opset


# --- static checks ----------------------------------------------------------------------------
def framework_of(parsed: ParsedModel) -> str | None:
    """``torch`` or ``keras`` from the exporter that wrote the model (ONNX's producer name), else None:
    hints then speak the student's framework."""
    producer = (getattr(parsed.proto, "producer_name", "") or "").lower()
    if "pytorch" in producer or "torch" in producer:
        return "torch"
    if any(k in producer for k in ("keras", "tf2onnx", "tensorflow", "tf")):
        return "keras"
    return None


def _in_framework(parsed: ParsedModel, *, torch: str, keras: str) -> str:
    """The hint for the student's framework; both (torch first) when it cannot be told."""
    framework = framework_of(parsed)
    return {"torch": torch, "keras": keras}.get(framework or "", f"{torch}; in Keras: {keras}")


def check_no_external_data(parsed: ParsedModel) -> CheckResult:
    name = "no_external_data"
    for tensor in iter_tensors(parsed.proto):
        if is_external(tensor):
            where = next((e.value for e in tensor.external_data if e.key == "location"), "?")
            return _fail(
                name,
                f"tensor {tensor.name[:80]!r} keeps its weights in another file ({where[:80]!r}); "
                "the grader never opens files named by a model",
                "export everything into one file (torch.onnx.export(..., external_data=False), or "
                "onnx.save_model(model, path, save_as_external_data=False))",
            )
    return _ok(name, "all weights are inside the file")


def check_versions(parsed: ParsedModel) -> CheckResult:
    name = "onnx_versions"
    proto = parsed.proto
    max_ir, max_opset = supported_versions()
    opset = default_opset(proto)
    others = sorted({imp.domain for imp in proto.opset_import if imp.domain not in STANDARD_DOMAINS})
    if others:
        return _fail(
            name,
            f"the model imports non-standard operator domains: {', '.join(d[:40] for d in others)}",
            "use only standard ONNX operators (no custom ops, no contrib/ML domains)",
        )
    if not MIN_IR <= proto.ir_version <= max_ir:
        return _fail(
            name,
            f"ONNX IR version {proto.ir_version} is outside the supported {MIN_IR}..{max_ir}",
            _in_framework(parsed, torch="export again with torch.onnx.export from the course's torch version",
                          keras="export again with Model.export(format='onnx') or tf2onnx")
            + f"; a model built with onnx.helper can set model.ir_version = {max_ir} before saving",
        )
    if opset is None or not MIN_OPSET <= opset <= max_opset:
        return _fail(
            name,
            f"opset {opset} is outside the supported {MIN_OPSET}..{max_opset}",
            f"export with opset_version between 13 and {max_opset} (torch.onnx.export(..., opset_version=17))",
        )
    return _ok(name, f"IR {proto.ir_version}, opset {opset}")


def check_operators(parsed: ParsedModel) -> CheckResult:
    name = "operators"
    proto = parsed.proto
    if proto.functions:
        return _fail(name, "the model defines its own ONNX functions", "export plain standard operators")
    nodes = sum(len(g.node) for g in iter_graphs(proto.graph))
    if nodes > MAX_NODES:
        return _fail(name, f"the graph has {nodes} nodes, over the {MAX_NODES} limit", "a policy network needs a few dozen")
    counts = count_operators(proto)
    bad = sorted(op for op in counts if op not in ALLOWED_OPERATORS)
    if bad:
        return _fail(
            name,
            f"operators not allowed in a policy network: {', '.join(op[:40] for op in bad[:8])}",
            "use plain layers (Gemm/MatMul, Conv, activations, Softmax) and, for a preprocessing inside the model, "
            "slicing, reductions, padding, casts, arithmetic and Resize; control flow (Loop, If, Scan), Range, Tile "
            "and random ops are refused",
        )
    return _ok(name, f"{nodes} nodes, {len(counts)} operator types, all allowed")


def check_tensor_sizes(parsed: ParsedModel) -> CheckResult:
    """Reject constant shapes that would make the runtime allocate a huge tensor."""
    name = "tensor_sizes"
    consts = constant_values(parsed.proto)
    for node in parsed.proto.graph.node:
        idx = _SHAPE_INPUT.get(node.op_type)
        if idx is None or len(node.input) <= idx or node.input[idx] not in consts:
            continue
        shape = consts[node.input[idx]].astype(np.float64).ravel()
        elements = float(np.prod(np.abs(shape))) if shape.size else 1.0
        if elements > MAX_TENSOR_ELEMENTS:
            return _fail(
                name,
                f"{node.op_type} node {node.name[:60]!r} would create a tensor of {elements:.3g} elements "
                f"(limit {MAX_TENSOR_ELEMENTS:.0e})",
                "a policy network has no such tensor; check the export",
            )
    for tensor in iter_tensors(parsed.proto):
        n = 1
        for d in tensor.dims:
            n *= max(int(d), 0)
        if n > MAX_TENSOR_ELEMENTS:
            return _fail(name, f"tensor {tensor.name[:60]!r} declares {n:.3g} elements", "export the model again")
    for node in parsed.proto.graph.node:
        if node.op_type == "Resize":
            problem = check_resize(node, parsed.proto)
            if problem:
                return _fail(name, f"Resize node {node.name[:60]!r}: {problem}",
                             "resize to a fixed size (F.interpolate(x, size=(84, 84))) or by a constant scale; "
                             f"at most {MAX_RESIZE_PIXELS} pixels, a factor of {MAX_RESIZE_SCALE:g} per axis")
    return _ok(name, "no oversized tensors")


def _small_constants(proto) -> dict[str, np.ndarray]:
    """Constants of at most 16 elements, any numeric type (initializers and Constant nodes)."""
    from onnx import numpy_helper

    values: dict[str, np.ndarray] = {}
    tensors = [(t.name, t) for t in proto.graph.initializer]
    tensors += [(n.output[0], a.t) for n in proto.graph.node if n.op_type == "Constant" and n.output
                for a in n.attribute if a.name == "value" and a.HasField("t")]
    for key, t in tensors:
        if not is_external(t) and 0 < len(t.dims) <= 1 and (not t.dims or t.dims[0] <= 16):
            try:
                values[key] = numpy_helper.to_array(t)
            except Exception:  # noqa: BLE001 - a malformed constant is not a size
                continue
    return values


def check_resize(node: Any, proto: Any) -> str:
    """What is wrong with a Resize's output size ("" when it is bounded).

    The size must be fixed in the model: constant ``scales`` of at most :data:`MAX_RESIZE_SCALE`,
    or ``sizes`` whose constant entries multiply to at most :data:`MAX_RESIZE_PIXELS`, any other
    entry taken from the input's own shape (Shape, then slices, gathers, casts, concatenations)."""
    consts = _small_constants(proto)
    producers = {out: n for n in proto.graph.node for out in n.output}
    inputs = list(node.input) + [""] * 4
    scales, sizes = inputs[2], inputs[3]
    if sizes:
        fixed = _fixed_sizes(sizes, consts, producers, depth=0)
        if fixed is None:
            return "its output size is computed by the model; it must be fixed in the model"
        pixels = float(np.prod(np.abs(np.asarray(fixed, dtype=np.float64)))) if fixed else 1.0
        if pixels > MAX_RESIZE_PIXELS:
            return f"it resizes to {pixels:.3g} pixels (limit {MAX_RESIZE_PIXELS})"
        return ""
    if scales:
        if scales not in consts:
            return "its scales are computed by the model; they must be constants"
        if not np.all(np.abs(consts[scales].astype(np.float64)) <= MAX_RESIZE_SCALE):
            return f"it scales by up to {float(np.abs(consts[scales]).max()):.3g} (limit {MAX_RESIZE_SCALE:g})"
        return ""
    return "it has neither sizes nor scales"


def _fixed_sizes(name: str, consts: dict, producers: dict, *, depth: int) -> list[float] | None:
    """The constant entries that make up ``name`` (a Resize's sizes), or None when some entry is
    neither a constant nor taken from a Shape."""
    if name in consts:
        return [float(v) for v in np.ravel(consts[name])]
    node = producers.get(name)
    if node is None or depth > 8 or node.op_type not in _SHAPE_PATH:
        return None
    if node.op_type == "Shape":
        return []
    if node.op_type == "Concat":
        values: list[float] = []
        for i in node.input:
            part = _fixed_sizes(i, consts, producers, depth=depth + 1)
            if part is None:
                return None
            values += part
        return values
    first = _fixed_sizes(node.input[0], consts, producers, depth=depth + 1) if node.input else None
    return None if first is None else first


def check_input_signature(parsed: ParsedModel, spec: Task) -> CheckResult:
    name = "input_signature"
    inputs = graph_inputs(parsed.proto)
    dtype = spec.input_dtype
    expected = f"one {dtype} input {spec.input_signature.removesuffix(' ' + dtype)}"
    if len(inputs) != 1:
        return _fail(
            name,
            f"the model has {len(inputs)} inputs ({', '.join(i.name[:40] for i in inputs[:5])}); expected {expected}",
            "export the policy network alone, taking only the state",
        )
    info = _tensor_info(inputs[0])
    if info.dtype != dtype:
        return _fail(name, f"input {info.name!r} is {info.dtype}; expected {expected}",
                     f"feed {dtype} states: build the dummy export input with torch.zeros(..., dtype=torch.{dtype})"
                     + (" (raw frames are bytes: cast to float inside forward)" if dtype == "uint8" else ""))
    dims = info.shape
    if len(dims) != 1 + len(spec.state_shape) or tuple(dims[1:]) != spec.state_shape:
        return _fail(name, f"input {info.name!r} has shape {_fmt(dims)}; expected {expected}",
                     _shape_hint(spec))
    if isinstance(dims[0], int) and dims[0] != 1:
        return _fail(name, f"input {info.name!r} has a fixed batch of {dims[0]}; expected a symbolic batch or 1",
                     "export with dynamic_axes={'input': {0: 'batch'}} (or a batch of 1)")
    return _ok(name, f"input {info.name!r}: {dtype} {_fmt(dims)}" + (
        f" ({spec.description.split(', ', 1)[-1]})" if spec.homework_name != spec.name else ""))


def check_output_signature(parsed: ParsedModel, spec: Task) -> CheckResult:
    name = "output_signature"
    outputs = list(parsed.proto.graph.output)
    expected = f"one output [batch, {spec.n_actions}] (float) or an int64 action [batch]"
    if len(outputs) != 1:
        return _fail(name, f"the model has {len(outputs)} outputs; expected {expected}",
                     "export only the actor (or Q-network): drop the critic/value head from the exported model")
    info = _tensor_info(outputs[0])
    dims = info.shape
    if info.dtype in ("float32", "float16", "float64"):
        if len(dims) == 2 and dims[1] in (spec.n_actions, None) or (len(dims) == 2 and isinstance(dims[1], str)):
            return _ok(name, f"output {info.name!r}: {info.dtype} {_fmt(dims)}")
        if not dims:  # shape unknown statically: the probe decides
            return _ok(name, f"output {info.name!r}: {info.dtype}, shape decided at run time", severity="note")
        if len(dims) == 2 and dims[1] == 1:  # one number per state: the value head
            return _fail(name, f"output {info.name!r} has shape {_fmt(dims)}: one value per state, which is the "
                               f"critic (the value estimate), not the policy; expected {expected}",
                         f"export the actor, whose last layer has {spec.n_actions} units (one per action): "
                         + _in_framework(parsed, torch="torch.onnx.export the policy network (or a module returning "
                                                       "only the action scores), not the critic",
                                         keras="keras.Model(inputs, action) / actor_model.export(...)"))
        return _fail(name, f"output {info.name!r} has shape {_fmt(dims)}; expected {expected}",
                     f"the last layer must have {spec.n_actions} units, one per action")
    if info.dtype in ("int64", "int32"):
        if len(dims) in (0, 1) or (len(dims) == 2 and dims[1] in (1, None)):
            return _ok(name, f"output {info.name!r}: {info.dtype} action {_fmt(dims)}")
        return _fail(name, f"action output {info.name!r} has shape {_fmt(dims)}; expected [batch] or [batch, 1]",
                     "return argmax over the action axis, or return the scores and let the grader take it")
    return _fail(name, f"output {info.name!r} is {info.dtype}; expected {expected}", "return float scores")


def _tensor_info(vi):
    from grader.submission.onnx_model import _value_info

    return _value_info(vi)


def _fmt(dims) -> str:
    return "[" + ", ".join("?" if d is None else str(d) for d in dims) + "]"


def _shape_hint(spec: Task) -> str:
    return spec.input_hint


def static_checks(parsed: ParsedModel, spec: Task) -> list[CheckResult]:
    """Run the static checks in order, stopping after the first failure."""
    results: list[CheckResult] = []
    for check in (check_no_external_data, check_versions, check_operators, check_tensor_sizes):
        results.append(check(parsed))
        if results[-1].blocking:
            return results
    for check_task in (check_input_signature, check_output_signature):
        results.append(check_task(parsed, spec))
        if results[-1].blocking:
            return results
    return results


# --- task recognition ---------------------------------------------------------------------------
def expected_signatures() -> str:
    from grader.tasks import signatures

    return signatures()


def detect_task(parsed: ParsedModel) -> Task:
    """The task whose input signature the model has; raises :class:`TaskDetectionError`."""
    inputs = graph_inputs(parsed.proto)
    if len(inputs) != 1:
        raise TaskDetectionError(
            f"cannot tell the task: the model has {len(inputs)} inputs; expected one input, "
            f"{expected_signatures()} (or pass --task)"
        )
    dims = _tensor_info(inputs[0]).shape
    matches = [t for t in all_contracts() if len(dims) == 1 + len(t.state_shape)
               and all(d == s or not isinstance(d, int) for d, s in zip(dims[1:], t.state_shape))]
    exact = [t for t in matches if tuple(dims[1:]) == t.state_shape]
    if len(exact) == 1:
        return exact[0]
    if len(matches) > 1 and len({t.family_signature for t in matches}) == 1:
        raise TaskDetectionError(f"the input shape {_fmt(dims)} leaves the number of frames open; expected "
                                 f"{matches[0].family_signature} with K fixed: export with an example input of "
                                 "K frames and only the batch axis dynamic")
    if len(matches) > 1:
        raise TaskDetectionError(f"the input shape {_fmt(dims)} fits several tasks; pass --task (expected {expected_signatures()})")
    raise TaskDetectionError(
        f"cannot tell the task from the input shape {_fmt(dims)}; expected {expected_signatures()} "
        "(or pass --task to see what is wrong for that task)"
    )


# --- runtime checks -------------------------------------------------------------------------------
@dataclass
class Probe:
    """What the worker computed on ``n`` contract states (see :func:`grader.runtime.policy.probe`).

    ``batches`` holds ``[b, output or None, error]`` for every batch size ``b`` the episodes use
    (1..pool_size) and a few more; the batch of ``b`` holds the first ``b`` probe states (cycled),
    so its row ``i`` must equal ``singles[i % n]``."""

    singles: list[np.ndarray] = field(default_factory=list)  # one output per state, batch of 1
    batches: list[list] = field(default_factory=list)
    fixed_batch_one: bool = False
    output_name: str = ""
    pool_size: int = 0

    @property
    def batch(self) -> np.ndarray | None:
        """The output for all ``n`` states in one call (None when that call failed)."""
        return next((out for b, out, _ in self.batches if b == len(self.singles)), None)


def check_output_values(probe: Probe, spec: Task) -> CheckResult:
    name = "output_values"
    first = probe.singles[0]
    if np.issubdtype(first.dtype, np.floating):
        if first.ndim != 2 or first.shape != (1, spec.n_actions):
            return _fail(name, f"for one state the model returned shape {list(first.shape)}; expected [1, {spec.n_actions}]",
                         f"the last layer must output {spec.n_actions} scores per state")
        bad = sum(int(not np.isfinite(o).all()) for o in probe.singles)
        if bad:
            return _fail(name, f"the output holds NaN or infinity for {bad} of {len(probe.singles)} test states",
                         "the weights are probably NaN (training diverged); lower the learning rate, clip gradients, "
                         "and check the loss before exporting")
        return _ok(name, f"finite {spec.n_actions} scores per state on {len(probe.singles)} test states")
    if np.issubdtype(first.dtype, np.integer):
        acts = np.concatenate([o.reshape(-1) for o in probe.singles])
        if first.size != 1:
            return _fail(name, f"the action output for one state has {first.size} values", "return one action per state")
        if acts.min() < 0 or acts.max() >= spec.n_actions:
            return _fail(name, f"the model returned action {int(acts.max() if acts.max() >= spec.n_actions else acts.min())}; "
                         f"actions are 0..{spec.n_actions - 1}", f"the policy must choose among {spec.n_actions} actions")
        return _ok(name, f"valid actions on {len(probe.singles)} test states")
    return _fail(name, f"the output dtype is {first.dtype}", "return float scores")


def check_probabilities(probe: Probe, spec: Task) -> CheckResult:
    """A note: outputs in [0, 1] should sum to 1 if they are meant as probabilities."""
    name = "probabilities"
    outs = np.concatenate(probe.singles)
    if not np.issubdtype(outs.dtype, np.floating):
        return _ok(name, "the model returns actions, not scores", severity="note")
    if outs.min() >= 0 and outs.max() <= 1:
        sums = outs.sum(axis=1)
        if np.allclose(sums, 1.0, atol=1e-3):
            return _ok(name, "outputs are probabilities (they sum to 1)", severity="note")
        return _fail(name, f"outputs lie in [0, 1] but sum to {sums.min():.3f}..{sums.max():.3f}, not 1",
                     "if they are meant as probabilities, end the network with a softmax; Q-values need not sum to 1; "
                     "grading takes the argmax either way",
                     severity="note")
    return _ok(name, "outputs are scores (logits or Q-values); the action is their argmax", severity="note")


def _batch_gap(alone: np.ndarray, batch: np.ndarray, spec: Task) -> tuple[int, float]:
    """(actions that change, largest relative difference of the outputs) between two stacks of rows."""
    from grader.tasks.contract import actions_from_output

    differ = int(np.sum(actions_from_output(alone, spec.n_actions) != actions_from_output(batch, spec.n_actions)))
    if np.issubdtype(alone.dtype, np.floating):
        scale = max(1.0, float(np.abs(alone).max()))
        return differ, float(np.abs(alone - batch).max()) / scale
    return differ, float(differ)


def check_batch_independence(probe: Probe, spec: Task) -> CheckResult:
    """Every batch size the engine uses (1..pool size, and a few others) gives each state the
    output it gets alone: the episodes run at the pool size and shrink to 1, the videos and
    re-runs at 1, so an output that depends on the batch would make the returns unreproducible."""
    name = "batch_independence"
    if probe.fixed_batch_one:
        return _ok(name, "the model takes one state at a time (fixed batch 1); it is evaluated state by state",
                   severity="note")
    n = len(probe.singles)
    alone = np.concatenate(probe.singles)
    pool = probe.pool_size or spec.pool_size

    def which(b: int) -> str:
        return f"a batch of {b}" + (" (the episodes' pool size)" if b == pool else "")

    for b, out, error in sorted(probe.batches, key=lambda item: item[0]):
        if out is None:
            return _fail(name, f"the model runs on one state but fails on {which(b)}: {error}",
                         "export with a dynamic batch axis (dynamic_axes={'input': {0: 'batch'}, 'output': {0: 'batch'}}), "
                         "or a fixed batch of exactly 1")
        expected = alone[np.arange(b) % n]
        if out.shape != expected.shape:
            return _fail(name, f"{which(b)} gave shape {list(out.shape)}; expected {list(expected.shape)}",
                         "the output must have one row per state")
        differ, gap = _batch_gap(expected, out, spec)
        if differ or gap > 1e-3:
            return _fail(
                name,
                f"at {which(b)} a state's output depends on the other states in its batch or on the batch size "
                f"({differ} of {b} actions change, relative difference up to {gap:.3g})",
                "this is BatchNorm exported in training mode (call model.eval() before torch.onnx.export), "
                "or an operation on the batch axis (a mean, a sum or the batch size over states)",
            )
    sizes = sorted(b for b, _, _ in probe.batches)
    shown = ", ".join(map(str, sizes))
    return _ok(name, f"the same outputs alone and in batches of {shown}" if sizes else "the same outputs alone")


Outcome = tuple[float, int | None]  # an episode's return and, when known, its length


def check_rerun(scored: Mapping[int, Outcome], rerun: Mapping[int, Outcome], *,
                label: Callable[[int], str] = lambda seed: f"seed {seed}") -> CheckResult:
    """A re-run with a batch of 1 (``Engine.rerun`` or a video) must give exactly the scored returns.

    ``label`` names an episode in the message (hidden grading seeds: "episode 3")."""
    name = "reproducible"
    bad = [s for s in rerun if s in scored and tuple(rerun[s]) != tuple(scored[s])]
    if bad:
        s = bad[0]

        def said(outcome: Outcome) -> str:
            return f"{outcome[0]}" + (f" in {outcome[1]} steps" if outcome[1] is not None else "")

        return _fail(name, f"re-run alone, {label(s)} returned {said(rerun[s])} instead of the scored "
                           f"{said(scored[s])} ({len(bad)} of {len(rerun)} re-runs differ): "
                           "the model's actions depend on the other states of its batch",
                     "a state's output must depend on that state only: call model.eval() before exporting, and do not "
                     "compute across the batch axis")
    return _ok(name, f"{len(rerun)} episodes re-run one state at a time gave exactly the scored returns")


def check_recheck(recheck: dict[str, Any], *, label: Callable[[int], str] = lambda seed: f"seed {seed}") -> CheckResult:
    """The decisions of one scored episode, computed again one state per call (``Engine.evaluate(
    recheck=True)``), must be the ones of the batched play.

    The environment is deterministic given its seed and the actions, so equal decisions mean the
    episode re-run alone would follow the same states and give exactly its scored return."""
    name = "reproducible"
    seed, differs = recheck["seed"], recheck["differs"]
    if differs:
        decision, batched, alone = differs
        return _fail(name, f"re-run alone, {label(seed)} would not be the scored one: at its decision {decision + 1} the "
                           f"model chose action {alone} for the state alone but {batched} in the scored batch: "
                           "the model's actions depend on the other states of its batch",
                     "a state's output must depend on that state only: call model.eval() before exporting, and do not "
                     "compute across the batch axis")
    return _ok(name, f"the {recheck['decisions']} decisions of {label(seed)}, computed again one state at a time, are the "
                     "scored ones: re-run alone, it gives exactly its scored return")


def runtime_checks(probe: Probe, spec: Task) -> list[CheckResult]:
    results = [check_output_values(probe, spec)]
    if results[-1].blocking:
        return results
    results.append(check_batch_independence(probe, spec))
    results.append(check_probabilities(probe, spec))
    return results
