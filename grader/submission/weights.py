"""The weights a model's graph actually uses, compared tensor by tensor (duplicate detection).

:func:`weight_prints` walks the graph back from its outputs and keeps the float tensors that are
evidence of copying (at least :data:`MIN_TENSOR_ELEMENTS` elements, not one repeated value): the
initializers and Constant values consumed, transitively, by the nodes that compute an output,
inside used subgraphs too. Each tensor's print is the sha256 of its sorted shape and its values
rounded to :data:`ROUND_DECIMALS` decimals and sorted, so names, the order of tensors, opset/IR
versions, transposed matrices and permuted hidden units do not change it; unused extra tensors are
not among the prints. :func:`compare_weights` counts the prints two models share (a multiset):
"the same weights" is at least :data:`SAME_WEIGHTS_SHARE` of the smaller model's used elements in
identical tensors, so tensors added around a copy (a lookup branch, a padded layer) do not hide
it. Weights perturbed by noise get other prints: the behaviour comparison catches those
(:mod:`grader.classroom.duplicates`).

Used by every grading (a copy of one of the rubric's reference models, :mod:`grader.pipeline`),
by the rubric (the references' prints, :meth:`grader.scoring.rubric.Rubric.read_reference_weights`)
and by the class comparison.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from dataclasses import dataclass
from typing import Any

import numpy as np

from grader.limits import MAX_TENSOR_ELEMENTS

MIN_TENSOR_ELEMENTS = 16
ROUND_DECIMALS = 4
SAME_WEIGHTS_SHARE = 0.9  # of the smaller model's used elements, in identical tensors
FLOAT_TYPES = (1, 10, 11, 16)  # float, float16, double, bfloat16
PRINTS_VERSION = 2  # how prints are made: stored prints (gradebooks, the cache) of another version are recomputed


def used_tensors(graph: Any) -> list:
    """The TensorProtos that ``graph``'s outputs depend on: initializers read by a node on a path
    to an output, Constant nodes' values on such paths, and the same inside used subgraphs (whose
    names may also read the outer graph's initializers)."""
    wanted = [o.name for o in graph.output]
    return _used_in(graph, wanted, {})


def _used_in(graph: Any, wanted: list[str], outer: dict[str, Any]) -> list:
    inits = {**outer, **{t.name: t for t in graph.initializer}}
    producer = {out: node for node in graph.node for out in node.output if out}
    seen: set[str] = set()
    done: set[int] = set()
    tensors: list = []
    stack = list(wanted)
    while stack:
        name = stack.pop()
        if name in seen:
            continue
        seen.add(name)
        node = producer.get(name)
        if node is None:
            if name in inits:
                tensors.append(inits[name])
            continue
        if id(node) in done:
            continue
        done.add(id(node))
        stack.extend(i for i in node.input if i)
        for attr in node.attribute:
            if attr.HasField("t"):
                tensors.append(attr.t)
            tensors.extend(attr.tensors)
            for sub in ([attr.g] if attr.HasField("g") else []) + list(attr.graphs):
                tensors += _used_in(sub, [o.name for o in sub.output], inits)
                stack.extend(i for n in sub.node for i in n.input if i)  # outer names read inside
    return tensors


def tensor_print(tensor: Any) -> tuple[str, int] | None:
    """``(print, elements)`` of one weight tensor, or None when it is no evidence of copying
    (not float, small, one repeated value such as zero biases, external or malformed)."""
    from onnx import numpy_helper

    from grader.submission.onnx_model import is_external, tensor_elements

    n = tensor_elements(tensor)
    if is_external(tensor) or tensor.data_type not in FLOAT_TYPES or not MIN_TENSOR_ELEMENTS <= n <= MAX_TENSOR_ELEMENTS:
        return None
    try:
        values: np.ndarray = numpy_helper.to_array(tensor).astype(np.float64).ravel()
    except Exception:  # noqa: BLE001 - a malformed tensor is simply not compared
        return None
    values = np.sort(np.round(values, ROUND_DECIMALS) + 0.0).astype(np.float32)  # +0.0: no -0.0
    if values.size != n or values[0] == values[-1] or not np.isfinite(values).all():
        return None
    digest = hashlib.sha256(f"{sorted(int(d) for d in tensor.dims)}:".encode() + values.tobytes()).hexdigest()
    return digest[:24], n


def weight_prints(data: bytes) -> list[list] | None:
    """The prints ``[[print, elements], ...]`` (sorted) of the tensors ONNX bytes use, or None
    (unparsable, no such tensors)."""
    from grader.submission.onnx_model import ModelLoadError, parse_model

    try:
        parsed = parse_model(data)
    except ModelLoadError:
        return None
    return weight_prints_of(parsed.proto)


def cached_weight_prints(data: bytes, sha256: str) -> list[list] | None:
    """:func:`weight_prints` of a file the grader trusts (a rubric's reference model), kept in the
    user's cache folder under the bytes' sha256 and :data:`PRINTS_VERSION`: parsing and hashing
    the strong MsPacman reference (7 MB) cost every grading a sixth of a second of the parent's CPU.
    An entry is only ever the prints of exactly those bytes; a missing, unreadable or malformed
    entry is a miss, computed again."""
    import json

    from grader.resources import user_cache_dir

    folder = user_cache_dir("weight-prints")
    path = folder / f"v{PRINTS_VERSION}-{sha256}.json" if folder is not None else None
    if path is not None:
        try:
            cached = json.loads(path.read_text(encoding="utf-8"))
            if _valid_prints(cached):
                return cached
        except (OSError, ValueError):
            pass
    prints = weight_prints(data)
    if path is not None:
        _write_entry(path, prints)
    return prints


def weight_prints_of(proto: Any) -> list[list] | None:
    """:func:`weight_prints` of a parsed ModelProto."""
    prints = [p for p in map(tensor_print, used_tensors(proto.graph)) if p is not None]
    return sorted([list(p) for p in prints]) or None


RACY_NS = 2_000_000_000  # a file changed this close before its cache entry was written is read again


def file_prints(path: Any) -> tuple[str, list[list] | None] | None:
    """``(sha256, prints)`` of a model file the grader trusts (a rubric's reference), without
    reading it when it has not changed: the user's cache keeps them per path with the file's
    identity (its size, inode and modification and change times, as git's index does: a rewrite
    or a replacement changes the change time, which no one can set), so a grading does not read and
    hash the references every time (the two MsPacman models: 11 MB, ~20 ms of the parent's CPU
    before the workers can be told the seeds). As in git, an entry written within
    :data:`RACY_NS` of the file's last change is not trusted (file times are coarser than a
    rewrite). A miss reads the file (prints from :func:`cached_weight_prints`). None when the file
    cannot be read."""
    import json
    import os
    import time

    from grader.resources import user_cache_dir

    try:
        st = os.stat(path)
    except OSError:
        return None
    where = os.path.abspath(path)
    identity = [where, st.st_size, st.st_ino, st.st_dev, st.st_mtime_ns, st.st_ctime_ns]
    folder = user_cache_dir("weight-prints")  # one entry per path, rewritten when the file changes
    entry = (folder / f"v{PRINTS_VERSION}-file-{hashlib.sha256(where.encode()).hexdigest()[:40]}.json"
             if folder is not None else None)
    if entry is not None:
        try:
            cached = json.loads(entry.read_text(encoding="utf-8"))
            sha256, written = cached["sha256"], cached["written_ns"]
            settled = type(written) is int and max(st.st_mtime_ns, st.st_ctime_ns) + RACY_NS < written
            if (settled and cached["identity"] == identity and isinstance(sha256, str) and len(sha256) == 64
                    and _valid_prints(cached["prints"])):
                return sha256, cached["prints"]
        except (OSError, ValueError, KeyError, TypeError):
            pass
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError:
        return None
    sha256 = hashlib.sha256(data).hexdigest()
    prints = cached_weight_prints(data, sha256)
    if entry is not None:
        _write_entry(entry, {"identity": identity, "sha256": sha256, "prints": prints, "written_ns": time.time_ns()})
    return sha256, prints


def _valid_prints(value: Any) -> bool:
    return value is None or (isinstance(value, list) and all(
        isinstance(p, list) and len(p) == 2 and isinstance(p[0], str) and type(p[1]) is int for p in value))


def _write_entry(path: Any, value: Any) -> None:
    """Write one cache entry atomically; a cache that cannot be written is only a miss next time."""
    import json
    import os

    try:
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(value), encoding="utf-8")
        os.replace(tmp, path)
    except OSError:
        pass


@dataclass(frozen=True)
class WeightMatch:
    """How much of two models' used weights is the same, tensor by tensor."""

    shared: int  # elements in tensors both use
    total_a: int
    total_b: int
    tensors: int  # shared tensors

    @property
    def share(self) -> float:
        smaller = min(self.total_a, self.total_b)
        return self.shared / smaller if smaller else 0.0

    @property
    def same(self) -> bool:
        return self.shared >= MIN_TENSOR_ELEMENTS and self.share >= SAME_WEIGHTS_SHARE

    def detail(self) -> str:
        return (f"{self.tensors} identical weight tensors: {self.shared} of {min(self.total_a, self.total_b)} used "
                f"parameters ({100 * self.share:.0f}%) of the smaller model")


def compare_weights(a: list[list] | None, b: list[list] | None) -> WeightMatch | None:
    """The tensors two lists of :func:`weight_prints` share (as a multiset), or None without prints."""
    if not a or not b:
        return None
    ca, cb = Counter(p for p, _ in a), Counter(p for p, _ in b)
    size = {p: int(n) for p, n in (*a, *b)}
    common = ca & cb
    return WeightMatch(shared=sum(size[p] * k for p, k in common.items()), total_a=sum(int(n) for _, n in a),
                       total_b=sum(int(n) for _, n in b), tensors=sum(common.values()))
