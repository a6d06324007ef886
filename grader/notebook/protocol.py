"""The sandbox's report channel, validated: every line is untrusted input.

The child (``_runner.py``) writes JSON lines on one pipe and exported model files on another.
Both are read size-capped by ``sandbox.py``; this module turns them into typed, bounded values
or refuses them. Anything the notebook's code could have written is treated as such: a message
that does not match its schema exactly (unknown event or field, wrong type, oversize string,
array whose bytes do not fit its shape) is garbage; a message out of the runner's order, or
repeated, marks the report as *forged* and its probe results are not used.

What passes is raw evidence only: the outputs of the student's functions (arrays), names,
error texts. No field says that anything passed; the collectors judge.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
from dataclasses import dataclass, field
from typing import Annotated, Literal, TypeVar, get_args

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictFloat, StrictInt, StrictStr, ValidationError

MAX_TEXT = 2000
MAX_ARRAY_ELEMENTS = 40_000  # one preprocessed frame is 1760, a whole (210, 160) one 33600; one forward output 20
MAX_DIMS = 6
MAX_STMT_EVENTS = 10_000
MODEL_NAMES = ("network.onnx", "trained.onnx")

Text = Annotated[StrictStr, Field(max_length=MAX_TEXT)]
Name = Annotated[StrictStr, Field(max_length=200)]
Count = Annotated[StrictInt, Field(ge=0, le=1 << 40)]
Line = Annotated[StrictInt, Field(ge=0, le=10_000_000)]
Scalar = StrictBool | StrictInt | StrictFloat | Annotated[StrictStr, Field(max_length=200)]


class _Msg(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ArrayMsg(_Msg):
    """An output converted to float32 in the child; ``data`` absent when it was not numeric or too big."""

    type: Name  # e.g. torch.Tensor, numpy.ndarray
    dtype: Name  # the output's own dtype, before the conversion
    shape: Annotated[list[Annotated[StrictInt, Field(ge=0, le=1 << 30)]], Field(max_length=MAX_DIMS)]
    data: Annotated[StrictStr, Field(max_length=4 * MAX_ARRAY_ELEMENTS * 4 // 3 + 8)] | None = None

    def array(self) -> np.ndarray | None:
        """The float32 array, or None when ``data`` is absent or does not fit ``shape`` exactly."""
        if self.data is None:
            return None
        n = math.prod(self.shape)
        if n > MAX_ARRAY_ELEMENTS:
            return None
        try:
            raw = base64.b64decode(self.data, validate=True)
        except (binascii.Error, ValueError):
            return None
        if len(raw) != 4 * n:
            return None
        return np.frombuffer(raw, dtype="<f4").reshape(self.shape).astype(np.float64)


class Start(_Msg):
    ev: Literal["start"]
    pid: Count


class Stmt(_Msg):
    ev: Literal["stmt"]
    cell: Line
    line: Line


class StmtError(_Msg):
    ev: Literal["stmt_error"]
    cell: Line
    line: Line
    error: Text
    kind: Literal["exit"] | None = None


class StmtTimeout(_Msg):
    ev: Literal["stmt_timeout"]
    cell: Line
    line: Line
    seconds: StrictInt | StrictFloat


class Stubbed(_Msg):
    ev: Literal["stubbed"]
    modules: Annotated[list[Name], Field(max_length=100)]


class Tampered(_Msg):
    ev: Literal["tampered"]
    names: Annotated[list[Name], Field(max_length=100)]


class DefinitionsDone(_Msg):
    ev: Literal["definitions_done"]
    params: Annotated[dict[Name, Scalar], Field(max_length=200)] | None = None


class Phase(_Msg):
    ev: Literal["phase"]
    phase: Literal["preprocess", "network"]


class Preprocess(_Msg):
    ev: Literal["preprocess"]
    found: StrictBool
    name: Name | None = None
    function: Name | None = None  # the function's own name (for the static cross-check)
    owner: Name | None = None  # its class, for a method
    error: Text | None = None
    cuda: StrictBool = False
    timeout: StrictBool = False
    cell: Name | None = None
    line: Line | None = None
    outputs: Annotated[list[ArrayMsg], Field(max_length=64)] = []


class Network(_Msg):
    ev: Literal["network"]
    found: StrictBool
    name: Name | None = None
    constructed: StrictBool = False
    args: Annotated[list[StrictInt], Field(max_length=4)] = []
    error: Text | None = None
    cuda: StrictBool = False
    line: Line | None = None
    parameters: Count | None = None
    forward_error: Text | None = None
    forward_cuda: StrictBool = False
    forward_line: Line | None = None  # the notebook line the forward pass failed at (the runner has always sent it)
    out_batch: ArrayMsg | None = None  # forward of the whole batch
    out_single: Annotated[list[ArrayMsg], Field(max_length=8)] = []  # forward of each sample alone
    export_error: Text | None = None
    # the same on states built by the notebook's own preprocessing (job "own_states")
    own_shape: Annotated[list[StrictInt], Field(max_length=6)] = []
    own_batch: ArrayMsg | None = None
    own_single: Annotated[list[ArrayMsg], Field(max_length=8)] = []
    own_error: Text | None = None
    # the notebook's own state [1, ...] the network was exported with (job "own_states", when it takes them)
    export_input: ArrayMsg | None = None


class Weights(_Msg):
    ev: Literal["weights"]
    file: Name
    loaded: StrictBool
    error: Text | None = None
    export_error: Text | None = None


class Done(_Msg):
    ev: Literal["done"]


class Crash(_Msg):
    ev: Literal["crash"]
    error: Text


class Oversize(_Msg):
    ev: Literal["oversize"]
    of: Name | None = None


Message = (Start | Stmt | StmtError | StmtTimeout | Stubbed | Tampered | DefinitionsDone | Phase | Preprocess | Network
           | Weights | Done | Crash | Oversize)  # one line of the channel
MESSAGES: dict[str, type[Message]] = {get_args(m.model_fields["ev"].annotation)[0]: m for m in get_args(Message)}
M = TypeVar("M", bound=_Msg)

# The runner's order: each stage may only follow the stages before it; singletons come once.
_STAGE = {"start": 0, "stmt": 1, "stmt_error": 1, "stmt_timeout": 1, "stubbed": 2, "tampered": 3,
          "definitions_done": 4, "phase": 5, "preprocess": 6, "network": 7, "weights": 8, "done": 9}
_REPEATABLE = {"stmt", "stmt_error", "stmt_timeout", "phase", "weights", "oversize"}


@dataclass
class Report:
    """The validated report of one sandbox run."""

    messages: list[Message] = field(default_factory=list)
    garbage: int = 0  # lines that were not a valid message
    forged: list[str] = field(default_factory=list)  # why the report cannot be the runner's own

    def last(self, kind: type[M]) -> M | None:
        for m in reversed(self.messages):
            if isinstance(m, kind):
                return m
        return None

    def all(self, kind: type[M]) -> list[M]:
        return [m for m in self.messages if isinstance(m, kind)]

    @property
    def trusted(self) -> bool:
        """False when anything on the channel cannot be the runner's: its probe results are not used."""
        return not self.forged and not self.garbage


    def expect_statements(self, expected: list[tuple[int, int]]) -> None:
        """The runner announces every statement of the job, in order: anything else is forged."""
        actual = [(m.cell, m.line) for m in self.messages if isinstance(m, Stmt)]
        complete = self.last(DefinitionsDone) is not None
        if actual != expected if complete else actual != expected[:len(actual)]:
            self.forged.append(f"a report of {len(actual)} statements that are not the notebook's {len(expected)}")


def _parse_line(line: bytes) -> Message | None:
    try:
        obj = json.loads(line)
    except (ValueError, RecursionError):
        return None
    if not isinstance(obj, dict) or not isinstance(obj.get("ev"), str) or obj["ev"] not in MESSAGES:
        return None
    try:
        return MESSAGES[obj["ev"]].model_validate(obj)
    except (ValidationError, RecursionError, ValueError):
        return None


def parse_report(raw: bytes) -> Report:
    """Validate the channel's bytes line by line; see the module docstring."""
    report = Report()
    stage, seen, stmts = -1, set(), 0
    for line in raw.split(b"\n"):
        if not line.strip():
            continue
        msg = _parse_line(line)
        if msg is None:
            report.garbage += 1
            continue
        ev = msg.ev
        if ev in ("crash", "oversize"):
            report.messages.append(msg)
            continue
        if ev not in _REPEATABLE and ev in seen:
            report.forged.append(f"a second '{ev}' message")
        if _STAGE[ev] < stage:
            report.forged.append(f"a '{ev}' message after the '{_stage_name(stage)}' stage")
        stmts += ev.startswith("stmt")
        if stmts > MAX_STMT_EVENTS:
            report.forged.append("more statement messages than the notebook has statements")
            break
        seen.add(ev)
        stage = max(stage, _STAGE[ev])
        if isinstance(msg, Tampered) and any(n.startswith("runner.") for n in msg.names):
            report.forged.append("the notebook's code replaced the grader's own functions ("
                                 + ", ".join(n for n in msg.names if n.startswith("runner.")) + ")")
        report.messages.append(msg)
    return report


def _stage_name(stage: int) -> str:
    return next(k for k, v in _STAGE.items() if v == stage)


# --- the model channel ---------------------------------------------------------------------------
@dataclass
class Blobs:
    files: dict[str, bytes] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)


def parse_blobs(raw: bytes, *, max_bytes: int) -> Blobs:
    """Frames ``{"name": N, "size": S}\\n`` + S bytes; only :data:`MODEL_NAMES`, each once, each <= max_bytes."""
    out = Blobs()
    pos = 0
    while pos < len(raw):
        nl = raw.find(b"\n", pos, pos + 200)
        if nl < 0:
            out.problems.append("a malformed model frame")
            break
        try:
            head = json.loads(raw[pos:nl])
            name, size = head["name"], head["size"]
        except (ValueError, TypeError, KeyError):
            out.problems.append("a malformed model frame")
            break
        if (not isinstance(head, dict) or set(head) != {"name", "size"} or name not in MODEL_NAMES
                or type(size) is not int or not 0 < size <= max_bytes or name in out.files):
            out.problems.append(f"an unexpected model frame ({str(name)[:40]!r}, {str(size)[:20]} bytes)")
            break
        data = raw[nl + 1:nl + 1 + size]
        if len(data) != size:
            out.problems.append(f"{name} was cut short ({len(data)} of {size} bytes)")
            break
        out.files[name] = data
        pos = nl + 1 + size
    return out
