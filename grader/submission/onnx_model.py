"""Reading an untrusted ONNX file: parse from bytes, never resolve external data, describe it.

Nothing here runs the model. Parsing is pure protobuf deserialisation of a size-capped byte
string (``onnx.load_from_string`` does not touch the file system), so a hostile file can at
worst be rejected. Running happens only in a limited child process (:mod:`grader.runtime.worker`).
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from grader import limits as L
from grader.errors import ModelLoadError
from grader.limits import MAX_FILE_BYTES, MAX_NODES, MAX_TENSOR_ELEMENTS  # noqa: F401 - re-exported
from grader.result import ModelInfo, TensorInfo


@dataclass
class ParsedModel:
    data: bytes
    proto: Any  # onnx.ModelProto (onnx ships no type information)
    sha256: str


def parse_model(data: bytes) -> ParsedModel:
    """Parse ONNX bytes; raises :class:`ModelLoadError` for anything that is not a model."""
    import onnx
    from google.protobuf.message import DecodeError

    if not data:
        raise ModelLoadError("the file is empty", "export the model again; the upload may have failed")
    cap = MAX_FILE_BYTES  # this module's name: tests patch it
    if len(data) > cap:
        raise ModelLoadError(
            f"the file is {len(data) / 2**20:.1f} MB, over the {cap // 2**20} MB limit",
            "a policy network for this task needs far less; check you exported only the network",
        )
    scan_structure(data)  # before protobuf builds anything: a node flood is refused here, cheaply
    try:
        proto = onnx.load_from_string(data)
    except (DecodeError, RuntimeError, ValueError, TypeError) as exc:
        raise ModelLoadError(
            f"the file is not a valid ONNX model (protobuf parse failed: {type(exc).__name__})", _NOT_ONNX_HINT,
        ) from None
    if not proto.HasField("graph") or len(proto.graph.node) == 0:
        raise ModelLoadError(
            "the file parses but holds no ONNX graph (no nodes)",
            "this is not an exported network; export the model again",
        )
    return ParsedModel(data=data, proto=proto, sha256=hashlib.sha256(data).hexdigest())


# --- the pre-parse scan ----------------------------------------------------------------------------
# Protobuf wire format: each field is a varint key (field number << 3 | wire type) then a varint
# (type 0), 8 bytes (1), a varint length and that many bytes (2), or 4 bytes (5). ONNX uses no
# groups (3, 4). Field numbers from onnx.proto3:
_MODEL_GRAPH = 7  # ModelProto.graph
_GRAPH_NODE = 1  # GraphProto.node
_NODE_ATTRIBUTE = 5  # NodeProto.attribute
_ATTR_G, _ATTR_GRAPHS = 6, 11  # AttributeProto.g, AttributeProto.graphs

_NOT_ONNX_HINT = ("hand in the .onnx file written by torch.onnx.export or keras Model.export(format='onnx'); "
                  "it may be truncated or another kind of file")


class _Malformed(Exception):
    pass


class _Counts:
    __slots__ = ("nodes", "entries")

    def __init__(self) -> None:
        self.nodes = 0
        self.entries = 0


def _varint(buf, i: int, end: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if i >= end:
            raise _Malformed
        b = buf[i]
        i += 1
        result |= (b & 0x7F) << shift
        if b < 0x80:
            return result, i
        shift += 7
        if shift > 63:
            raise _Malformed


def _fields(buf, start: int, end: int, counts: _Counts):
    """Yield (field number, wire type, value start, value end) of one message, counting entries."""
    i = start
    while i < end:
        counts.entries += 1
        if counts.entries > L.MAX_PROTO_ENTRIES:
            raise ModelLoadError(
                f"the model has over {L.MAX_PROTO_ENTRIES} protobuf entries (nodes, attributes, names, ...)",
                "a policy network is far smaller; check the export",
            )
        key, i = _varint(buf, i, end)
        number, wire = key >> 3, key & 7
        if number == 0:
            raise _Malformed
        if wire == 0:
            _, j = _varint(buf, i, end)
        elif wire == 1:
            j = i + 8
        elif wire == 2:
            length, i = _varint(buf, i, end)
            j = i + length
        elif wire == 5:
            j = i + 4
        else:
            raise _Malformed
        if j > end:
            raise _Malformed
        yield number, wire, i, j
        i = j


def _scan_graph(buf, start: int, end: int, counts: _Counts, depth: int) -> None:
    if depth > L.MAX_SUBGRAPH_DEPTH:
        raise ModelLoadError(f"the model nests subgraphs more than {L.MAX_SUBGRAPH_DEPTH} deep",
                             "a policy network has no control flow; export plain layers")
    for number, wire, s, e in _fields(buf, start, end, counts):
        if number != _GRAPH_NODE or wire != 2:
            continue
        counts.nodes += 1
        if counts.nodes > L.MAX_NODES:
            raise ModelLoadError(f"the graph has over {L.MAX_NODES} nodes (the limit is {L.MAX_NODES})",
                                 "a policy network needs a few dozen; check you exported only the network")
        for n_number, n_wire, ns, ne in _fields(buf, s, e, counts):
            if n_number != _NODE_ATTRIBUTE or n_wire != 2:
                continue
            for a_number, a_wire, a_s, a_e in _fields(buf, ns, ne, counts):
                if a_number in (_ATTR_G, _ATTR_GRAPHS) and a_wire == 2:
                    _scan_graph(buf, a_s, a_e, counts, depth + 1)


def scan_structure(data: bytes) -> int:
    """Count the graph nodes in ONNX bytes from the protobuf wire format, building nothing.

    Raises :class:`ModelLoadError` as soon as the nodes (in all graphs), the protobuf entries or the
    nesting of subgraphs exceed :mod:`grader.limits`, or when the bytes are not a protobuf message;
    so a file of millions of nodes is refused after reading a few thousand, in milliseconds and
    without memory beyond the bytes themselves. Returns the number of nodes.
    """
    buf = memoryview(data)
    counts = _Counts()
    try:
        for number, wire, s, e in _fields(buf, 0, len(buf), counts):
            if number == _MODEL_GRAPH and wire == 2:
                _scan_graph(buf, s, e, counts, 0)
    except (_Malformed, IndexError):
        raise ModelLoadError("the file is not a valid ONNX model (protobuf parse failed: malformed wire format)",
                             _NOT_ONNX_HINT) from None
    return counts.nodes


# For input_dims: ValueInfoProto.name/type, TypeProto.tensor_type, TypeProto.Tensor.shape,
# TensorShapeProto.dim, Dimension.dim_value; GraphProto.initializer/input, TensorProto.name.
_GRAPH_INITIALIZER, _GRAPH_INPUT, _TENSOR_NAME = 5, 11, 8
_VI_NAME, _VI_TYPE, _TYPE_TENSOR, _TENSOR_SHAPE, _SHAPE_DIM, _DIM_VALUE = 1, 2, 1, 2, 1, 1


def _field(buf, bounds: tuple[int, int] | None, counts: _Counts, number: int) -> tuple[int, int] | None:
    """The value bounds of the last length-delimited field ``number`` of the message at
    ``bounds`` (None: no such message), or None."""
    found = None
    for n, wire, s, e in _fields(buf, bounds[0], bounds[1], counts) if bounds else ():
        if n == number and wire == 2:
            found = (s, e)
    return found


def _dims(buf, vi: tuple[int, int], counts: _Counts) -> tuple[int | None, ...] | None:
    """The shape of one ValueInfoProto's tensor (None for a symbolic or unknown dimension)."""
    tensor = _field(buf, _field(buf, vi, counts, _VI_TYPE), counts, _TYPE_TENSOR)
    shape = _field(buf, tensor, counts, _TENSOR_SHAPE)
    if shape is None:
        return None
    dims: list[int | None] = []
    for n, wire, s, e in _fields(buf, shape[0], shape[1], counts):
        if n == _SHAPE_DIM and wire == 2:
            values = [_varint(buf, ds, de)[0] for dn, dw, ds, de in _fields(buf, s, e, counts)
                      if dn == _DIM_VALUE and dw == 0]
            dims.append(values[-1] if values else None)
    return tuple(dims)


def input_dims(data: bytes) -> tuple[int | None, ...] | None:
    """The shape of the model's one real input (symbolic dimensions as None), read from the
    protobuf wire format without importing onnx or building the model: what the pipeline needs to
    know the homework early (the workers build its environments while the model is parsed and
    checked). None when there is not exactly one real input with a tensor shape, or when the bytes
    are not such a model (parsing then says what is wrong). A hint only: :func:`parse_model` and
    the checks decide."""
    buf = memoryview(data)
    counts = _Counts()
    try:
        graph = _field(buf, (0, len(buf)), counts, _MODEL_GRAPH)
        if graph is None:
            return None
        inputs: list[tuple[str, tuple[int, int]]] = []
        initializers: set[str] = set()
        nodes = 0
        for n, wire, s, e in _fields(buf, graph[0], graph[1], counts):
            nodes += n == _GRAPH_NODE
            if nodes > L.MAX_NODES:  # a flood of nodes: the wire scan refuses it, with its message
                return None
            if wire != 2 or n not in (_GRAPH_INPUT, _GRAPH_INITIALIZER):
                continue
            name = _field(buf, (s, e), counts, _VI_NAME if n == _GRAPH_INPUT else _TENSOR_NAME)
            text = bytes(buf[name[0]:name[1]]).decode("utf-8", "replace") if name else ""
            if n == _GRAPH_INPUT:
                inputs.append((text, (s, e)))
            else:
                initializers.add(text)
        real = [vi for name, vi in inputs if name not in initializers]
        return _dims(buf, real[0], counts) if len(real) == 1 else None
    except (_Malformed, IndexError, ModelLoadError):
        return None


def iter_graphs(graph) -> Iterator:
    """The graph and every subgraph held in node attributes, depth first."""
    yield graph
    for node in graph.node:
        for attr in node.attribute:
            if attr.HasField("g"):
                yield from iter_graphs(attr.g)
            for g in attr.graphs:
                yield from iter_graphs(g)


def iter_tensors(proto) -> Iterator:
    """Every TensorProto in the model: initializers, sparse ones, and constants in attributes."""
    for graph in iter_graphs(proto.graph):
        yield from graph.initializer
        for sparse in graph.sparse_initializer:
            yield sparse.values
            yield sparse.indices
        for node in graph.node:
            for attr in node.attribute:
                if attr.HasField("t"):
                    yield attr.t
                yield from attr.tensors
                if attr.HasField("sparse_tensor"):
                    yield attr.sparse_tensor.values
    for function in proto.functions:
        for node in function.node:
            for attr in node.attribute:
                if attr.HasField("t"):
                    yield attr.t


def is_external(tensor) -> bool:
    """True when a tensor's bytes live in another file (which ONNX would open)."""
    return tensor.data_location == 1 or len(tensor.external_data) > 0  # TensorProto.EXTERNAL


def count_operators(proto) -> Counter:
    counts: Counter = Counter()
    for graph in iter_graphs(proto.graph):
        for node in graph.node:
            counts[f"{node.domain}::{node.op_type}" if node.domain not in ("", "ai.onnx") else node.op_type] += 1
    return counts


def default_opset(proto) -> int | None:
    for imp in proto.opset_import:
        if imp.domain in ("", "ai.onnx"):
            return int(imp.version)
    return None


def _value_info(vi) -> TensorInfo:
    import onnx

    t = vi.type
    if t.HasField("tensor_type"):
        tt = t.tensor_type
        dtype = onnx.helper.tensor_dtype_to_np_dtype(tt.elem_type).name if tt.elem_type else "undefined"
        if tt.HasField("shape"):
            shape: list = []
            for d in tt.shape.dim:
                if d.HasField("dim_value"):
                    shape.append(int(d.dim_value))
                elif d.HasField("dim_param"):
                    shape.append(d.dim_param[:64] or None)
                else:
                    shape.append(None)
        else:
            shape = []
        return TensorInfo(name=vi.name[:200], dtype=dtype, shape=shape)
    return TensorInfo(name=vi.name[:200], dtype="non-tensor", shape=[])


def graph_inputs(proto) -> list:
    """Real inputs: graph inputs that are not initializers (old exporters list both)."""
    init_names = {t.name for t in proto.graph.initializer}
    return [vi for vi in proto.graph.input if vi.name not in init_names]


def tensor_elements(tensor) -> int:
    n = 1
    for d in tensor.dims:
        n *= int(d)
    return n


def describe(parsed: ParsedModel) -> ModelInfo:
    proto = parsed.proto
    params = sum(tensor_elements(t) for t in proto.graph.initializer)
    return ModelInfo(
        sha256=parsed.sha256,
        size_bytes=len(parsed.data),
        opset=default_opset(proto),
        ir_version=int(proto.ir_version) if proto.ir_version else None,
        producer=f"{proto.producer_name} {proto.producer_version}".strip()[:100],
        inputs=[_value_info(vi) for vi in graph_inputs(proto)],
        outputs=[_value_info(vi) for vi in proto.graph.output],
        parameters=int(params),
        operators=dict(sorted(count_operators(proto).items())),
    )


def constant_values(proto) -> dict[str, np.ndarray]:
    """Small integer constants (initializers and Constant nodes) by name, for shape-bomb checks."""
    from onnx import numpy_helper

    values: dict[str, np.ndarray] = {}
    for t in proto.graph.initializer:
        if is_external(t):
            continue
        if t.data_type in (6, 7) and tensor_elements(t) <= 16:  # int32, int64
            values[t.name] = numpy_helper.to_array(t)
    for node in proto.graph.node:
        if node.op_type == "Constant" and node.output:
            for attr in node.attribute:
                if attr.name == "value" and attr.HasField("t") and attr.t.data_type in (6, 7, 1) and not is_external(attr.t):
                    if tensor_elements(attr.t) <= 16:
                        values[node.output[0]] = numpy_helper.to_array(attr.t)
    return values
