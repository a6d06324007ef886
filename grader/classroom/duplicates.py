"""Duplicate detection across a class: identical files, the same weights, the same behaviour.

Three levels, each reported as pairs (``duplicates.csv`` and ``class.html``):

* ``identical`` -- the same bytes (sha256);
* ``same_weights`` -- a canonical fingerprint of the weight tensors matches: for each float tensor
  of at least :data:`MIN_TENSOR_ELEMENTS` elements (initializers and constants) the sorted shape
  and the sha256 of its values rounded to :data:`ROUND_DECIMALS` decimals and sorted; the model's
  fingerprint is the sorted list of those. It ignores node and tensor names, the order of
  initializers, opset/IR version, producer strings and even transposed weight matrices
  (``Gemm(transB=1)`` vs ``MatMul``);
* ``behaviour`` -- the argmax actions of two policies agree on at least ``threshold`` (95 %) of a
  fixed probe set of states (:func:`probe_set`: 512 states of fixed-seed random rollouts under the
  task contract). The actions are computed in the sandboxed engine (``Engine.actions``), which
  feeds the states in chunks of every batch size the episodes use (1..pool size, and 7), twice in
  different orders, and refuses actions that change with the batch size: a model cannot act like
  a copy in the episodes and differently on the probe set (or the other way round). Pairs where
  both policies are degenerate (one action on >= :data:`DEGENERATE_FRACTION` of the states) are not
  flagged: two untrained constant policies agree without any copying.

Reference models (``reference/models/*.onnx`` for the task) take part, so a submitted copy of a
reference agent is flagged against it.
"""

from __future__ import annotations

import base64
import hashlib
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from grader.limits import MAX_TENSOR_ELEMENTS, PROBE_SET_SIZE

BEHAVIOUR_THRESHOLD = 0.95
DEGENERATE_FRACTION = 0.9
MIN_TENSOR_ELEMENTS = 16
ROUND_DECIMALS = 4


def weights_fingerprint(data: bytes) -> str | None:
    """The canonical weight fingerprint of ONNX bytes, or None (unparsable, no weights)."""
    from onnx import numpy_helper

    from grader.errors import ModelLoadError
    from grader.submission.onnx_model import is_external, iter_tensors, parse_model, tensor_elements

    try:
        parsed = parse_model(data)
    except ModelLoadError:
        return None
    parts = []
    for tensor in iter_tensors(parsed.proto):
        if is_external(tensor) or tensor.data_type not in (1, 10, 11, 16):  # float, float16, double, bfloat16
            continue
        if tensor_elements(tensor) < MIN_TENSOR_ELEMENTS or tensor_elements(tensor) > MAX_TENSOR_ELEMENTS:
            continue
        try:
            values = numpy_helper.to_array(tensor).astype(np.float64)
        except Exception:  # noqa: BLE001 - a malformed tensor is simply not fingerprinted
            continue
        values = np.sort(np.round(values.ravel(), ROUND_DECIMALS) + 0.0).astype(np.float32)  # +0.0: no -0.0
        parts.append(f"{sorted(int(d) for d in tensor.dims)}:{hashlib.sha256(values.tobytes()).hexdigest()}")
    if not parts:
        return None
    return hashlib.sha256("\n".join(sorted(parts)).encode()).hexdigest()


def probe_set(task: str, n: int = PROBE_SET_SIZE) -> tuple[np.ndarray, str]:
    """The fixed probe states for behavioural comparison and an id (sha256 of their bytes)."""
    from grader.submission.probestates import probe_states
    from grader.tasks.contract import get_task

    states = probe_states(get_task(task), n)
    return states, hashlib.sha256(states.tobytes()).hexdigest()[:16]


def encode_actions(actions: np.ndarray) -> str:
    return base64.b64encode(np.asarray(actions, dtype=np.uint8).tobytes()).decode()


def decode_actions(text: str) -> np.ndarray:
    return np.frombuffer(base64.b64decode(text), dtype=np.uint8)


@dataclass
class Candidate:
    """One file in the comparison: a student's current submission or a reference model."""

    label: str  # student id, or "reference:<file>"
    file: str
    sha256: str
    weights: str | None = None
    actions: np.ndarray | None = None
    is_reference: bool = False

    @property
    def degenerate(self) -> bool:
        if self.actions is None or len(self.actions) == 0:
            return True
        return np.bincount(self.actions).max() / len(self.actions) >= DEGENERATE_FRACTION


@dataclass
class Flag:
    kind: str  # identical | same_weights | behaviour
    a: Candidate
    b: Candidate
    agreement: float | None = None
    detail: str = ""

    def row(self) -> dict:
        return {
            "kind": self.kind, "student_a": self.a.label, "file_a": self.a.file, "student_b": self.b.label,
            "file_b": self.b.file, "agreement": "" if self.agreement is None else f"{self.agreement:.4f}",
            "detail": self.detail,
        }


@dataclass
class DuplicateReport:
    flags: list[Flag] = field(default_factory=list)
    compared: int = 0
    with_actions: int = 0
    threshold: float = BEHAVIOUR_THRESHOLD

    def students(self) -> set[str]:
        return {c.label for f in self.flags for c in (f.a, f.b) if not c.is_reference}


def find_duplicates(candidates: list[Candidate], *, threshold: float = BEHAVIOUR_THRESHOLD) -> DuplicateReport:
    """Flag pairs of candidates from different students (or a student and a reference)."""
    report = DuplicateReport(compared=len(candidates), threshold=threshold)
    flagged: set[tuple[int, int]] = set()

    def different(a: Candidate, b: Candidate) -> bool:
        return a.label != b.label and not (a.is_reference and b.is_reference)

    def groups(key) -> list[list[int]]:
        by: dict[str, list[int]] = defaultdict(list)
        for i, c in enumerate(candidates):
            k = key(c)
            if k:
                by[k].append(i)
        return [g for g in by.values() if len(g) > 1]

    for kind, key, detail in (("identical", lambda c: c.sha256, "same sha256"),
                              ("same_weights", lambda c: c.weights, "same weight tensors, different file")):
        for group in groups(key):
            for x in range(len(group)):
                for y in range(x + 1, len(group)):
                    i, j = group[x], group[y]
                    if (i, j) in flagged or not different(candidates[i], candidates[j]):
                        continue
                    flagged.add((i, j))
                    report.flags.append(Flag(kind, candidates[i], candidates[j], None, detail))
    idx = [i for i, c in enumerate(candidates) if c.actions is not None and len(c.actions)]
    report.with_actions = len(idx)
    if len(idx) > 1:
        n = min(len(candidates[i].actions) for i in idx)
        matrix = np.stack([candidates[i].actions[:n] for i in idx]).astype(np.int16)
        for x in range(len(idx)):
            agree = (matrix[x + 1:] == matrix[x]).mean(axis=1)
            for off in np.nonzero(agree >= threshold)[0]:
                i, j = idx[x], idx[x + 1 + int(off)]
                a, b = candidates[i], candidates[j]
                if (i, j) in flagged or not different(a, b) or (a.degenerate and b.degenerate):
                    continue
                flagged.add((i, j))
                report.flags.append(Flag("behaviour", a, b, float(agree[off]),
                                         f"argmax actions agree on {100 * agree[off]:.1f}% of {n} probe states"))
    order = {"identical": 0, "same_weights": 1, "behaviour": 2}
    report.flags.sort(key=lambda f: (order[f.kind], -(f.agreement or 1.0), f.a.label, f.b.label))
    return report


def extra_for(weights: str | None, actions: np.ndarray | None, probe_id: str) -> dict:
    """What the gradebook keeps per attempt (``extra_json``) so a resumed run need not recompute."""
    out: dict = {"weights_fingerprint": weights}
    if actions is not None:
        out["probe_id"] = probe_id
        out["actions"] = encode_actions(actions)
    return out


def actions_from_extra(extra: dict, probe_id: str) -> np.ndarray | None:
    if extra.get("probe_id") == probe_id and extra.get("actions"):
        return decode_actions(extra["actions"])
    return None


def reference_candidates(ref_dir: Path | None, task: str, probe_states) -> list:
    """The reference models of ``task`` in ``ref_dir`` as duplicate candidates: their sha256, their
    weights' fingerprint and, with ``probe_states``, their actions (batch and site alike)."""
    from grader.errors import EngineFailure, ModelLoadError, TaskDetectionError
    from grader.runtime.engine import Engine
    from grader.submission import checks as C
    from grader.submission.onnx_model import parse_model

    if ref_dir is None or not Path(ref_dir).is_dir():
        return []
    out = []
    files = sorted(Path(ref_dir).glob("*.onnx"))
    engine = None
    try:
        for f in files:
            try:
                data = f.read_bytes()
                parsed = parse_model(data)
                if C.detect_task(parsed).name != task:
                    continue
            except (OSError, ModelLoadError, TaskDetectionError):
                continue
            cand = Candidate(label=f"reference:{f.name}", file=str(f), sha256=parsed.sha256,
                             weights=weights_fingerprint(data), is_reference=True)
            if probe_states is not None:
                try:
                    engine = engine or Engine(1)
                    engine.load(data, task=task)
                    import numpy as np

                    cand.actions = np.asarray(engine.actions(probe_states), dtype=np.uint8)
                except EngineFailure:
                    pass
            out.append(cand)
    finally:
        if engine is not None:
            engine.close()
    return out
