"""Validation of what a worker sends: every reply is checked for its shape, types and sizes
before the engine uses it; anything else is a :class:`~grader.errors.MalformedMessage` (a worker
taken over by a model can send only data, and only data of the expected shape)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, TypedDict

from grader import limits as L
from grader.errors import MalformedMessage

if TYPE_CHECKING:
    import numpy as np


class ProbeReply(TypedDict):
    """Raw outputs on the probe states (the keyword arguments of :class:`grader.submission.checks.Probe`)."""

    singles: list[np.ndarray]  # one output per state, a batch of 1
    batches: list[list[Any]]  # [batch size, output or None, error text]
    fixed_batch_one: bool
    output_name: str
    pool_size: int


class RecheckReply(TypedDict):
    """One episode's decisions computed again alone (:func:`grader.runtime.episodes.recheck`)."""

    seed: int
    decisions: int
    differs: list[int] | None  # [decision, batched action, alone] at the first difference


RecordedEpisode = TypedDict("RecordedEpisode", {"return": float, "length": int, "frames": int})
"""One episode replayed for its video: its return and length again, and the frames written."""

# Diagnostics of one episode: plain JSON data (validated by check_facts), read by the task's diagnose.
Facts = dict[str, Any]


def expect(cond: bool, what: str) -> None:
    if not cond:
        raise MalformedMessage(what)


def is_num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def check_output_array(a: Any, what: str, max_rows: int) -> None:
    import numpy as np

    expect(isinstance(a, np.ndarray) and a.ndim <= 3 and a.size <= max_rows * 4096, f"{what}: not a small array")


def check_probe(v: Any) -> ProbeReply:
    expect(isinstance(v, dict) and set(v) == {"singles", "batches", "fixed_batch_one", "output_name", "pool_size"},
           "probe: bad keys")
    expect(isinstance(v["singles"], list) and 0 < len(v["singles"]) <= 64, "probe: singles")
    for a in v["singles"]:
        check_output_array(a, "probe single", 1)
    expect(isinstance(v["batches"], list) and len(v["batches"]) <= 64, "probe: batches")
    for item in v["batches"]:
        expect(isinstance(item, list) and len(item) == 3 and type(item[0]) is int and 1 <= item[0] <= 1024
               and isinstance(item[2], str) and len(item[2]) <= 1000, "probe: batch entry")
        if item[1] is not None:
            check_output_array(item[1], "probe batch", item[0])
    expect(isinstance(v["fixed_batch_one"], bool) and isinstance(v["output_name"], str) and len(v["output_name"]) <= 200
           and type(v["pool_size"]) is int, "probe: fields")
    return v


def check_text(v: Any, what: str) -> str:
    expect(isinstance(v, str) and len(v) <= 4000, f"{what}: not a short text")
    return v


def check_recheck(value: Any, results: dict[int, tuple[float, int]]) -> RecheckReply | None:
    """A worker's ``recheck`` reply, validated (None: it had no episode to check)."""
    expect(isinstance(value, dict) and set(value) == {"seed", "decisions", "differs"}, "recheck: fields")
    if value["seed"] is None:
        return None
    differs = value["differs"]
    expect(type(value["seed"]) is int and value["seed"] in results and type(value["decisions"]) is int
           and value["decisions"] >= 1, "recheck: seed or decisions")
    expect(differs is None or (isinstance(differs, list) and len(differs) == 3 and all(type(x) is int for x in differs)),
           "recheck: differs")
    return {"seed": value["seed"], "decisions": value["decisions"], "differs": differs}


def check_facts(v: Any) -> Facts:
    """An episode's diagnostics: plain JSON data (no arrays, no bytes), small and shallow."""
    import json

    def plain(x: Any, depth: int) -> bool:
        if depth > L.FACTS_DEPTH:
            return False
        if isinstance(x, dict):
            return all(isinstance(k, str) and plain(y, depth + 1) for k, y in x.items())
        if isinstance(x, list):
            return all(plain(y, depth + 1) for y in x)
        return x is None or isinstance(x, (bool, int, float, str))

    expect(isinstance(v, dict) and plain(v, 0) and len(json.dumps(v)) <= L.FACTS_BYTES, "episode: facts")
    return v
