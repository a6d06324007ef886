"""Policies inside a worker: an onnxruntime session run on a whole batch per call, the random
policy, the meter holding every model call to the rubric's budgets, and the probe of a model on
contract states at every batch size the episodes use."""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from grader import limits as L
from grader.errors import BudgetExceeded, PolicyFailure
from grader.submission.probestates import probe_states
from grader.tasks.contract import Task, actions_from_output

PROBE_STATES = L.PROBE_STATES


# --- policies ---------------------------------------------------------------------------------------
class Policy(Protocol):
    """What the engine needs from a policy: actions for a batch of states."""

    def act(self, states: np.ndarray, seeds: np.ndarray, steps: np.ndarray) -> np.ndarray: ...


@dataclass(frozen=True)
class CallBudget:
    """How long policy calls may take (from the rubric's ``[budgets]``)."""

    decision_s: float = L.BUDGET_DECISION_S
    window: int = L.BUDGET_DECISION_WINDOW
    call_max_s: float = L.BUDGET_CALL_MAX_S


class CallMeter:
    """Times every model call; raises :class:`BudgetExceeded` when the budget is exceeded.

    The mean over a window of ``window`` consecutive calls must stay under ``decision_s``; it is
    checked after every call as "the window's total exceeds ``window * decision_s``", so a model
    far too slow fails after a few calls instead of a whole window. ``started`` is read by the
    watchdog thread, which stops a single call that runs past ``call_max_s``.
    """

    def __init__(self, budget: CallBudget):
        self.budget = budget
        self.window: deque[float] = deque()
        self.window_s = 0.0
        self.calls = 0
        self.total_s = 0.0
        self.started: float | None = None

    def run(self, fn: Callable[[], Any]) -> Any:
        self.started = time.monotonic()
        try:
            return fn()
        finally:
            elapsed = time.monotonic() - self.started
            self.started = None
            self._record(elapsed)

    def _record(self, elapsed: float) -> None:
        b = self.budget
        self.calls += 1
        self.total_s += elapsed
        self.window.append(elapsed)
        self.window_s += elapsed
        if len(self.window) > b.window:
            self.window_s -= self.window.popleft()
        if elapsed > b.call_max_s:
            raise BudgetExceeded(f"one call of the model took {elapsed:.2f} s; the limit is {b.call_max_s:g} s per call: "
                                 "use a smaller network")
        if self.window_s > b.window * b.decision_s:
            n = len(self.window)
            raise BudgetExceeded(f"the model took {self.window_s / n:.2f} s per decision (mean of {n} call{'s' * (n > 1)}); "
                                 f"the limit is {b.decision_s:g} s: use a smaller network")

    def snapshot(self) -> dict[str, float]:
        return {"calls": self.calls, "call_s": round(self.total_s, 6)}


class OnnxPolicy:
    """An onnxruntime session with one intra-op thread, run on a whole batch per call."""

    def __init__(self, model_bytes: bytes, spec: Task, *, device: str = "cpu", meter: CallMeter | None = None):
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.log_severity_level = 3
        options.enable_mem_pattern = False
        providers = ["CPUExecutionProvider"]
        if device == "cuda" and "CUDAExecutionProvider" in ort.get_available_providers():
            providers = ["CUDAExecutionProvider", "CPUExecutionProvider"]
        try:
            self.session = ort.InferenceSession(model_bytes, options, providers=providers)
        except MemoryError:
            raise PolicyFailure("the model tried to allocate more memory than the grader allows") from None
        except Exception as exc:  # noqa: BLE001 - onnxruntime raises many types for bad models: the model's
            raise PolicyFailure(short_reason(exc)) from None
        self.spec = spec
        self.meter = meter or CallMeter(CallBudget())
        inp = self.session.get_inputs()[0]
        self.input_name = inp.name
        self.output_name = self.session.get_outputs()[0].name
        self.fixed_batch_one = inp.shape[0] == 1
        self.input_dtype = np.dtype(spec.input_dtype)  # float32 states, or a raw-frame contract's uint8

    def _run(self, states: np.ndarray) -> np.ndarray:
        try:
            out = self.meter.run(lambda: self.session.run([self.output_name], {self.input_name: states})[0])
        except PolicyFailure:
            raise
        except MemoryError:
            raise PolicyFailure("the model tried to allocate more memory than the grader allows") from None
        except Exception as exc:  # noqa: BLE001 - an error of onnxruntime running the model: the model's
            raise PolicyFailure(short_reason(exc)) from None
        return np.asarray(out)

    def raw(self, states: np.ndarray) -> np.ndarray:
        """The model's output for a batch, run state by state if the batch is fixed at 1."""
        states = np.ascontiguousarray(states, dtype=self.input_dtype)
        if self.fixed_batch_one and len(states) != 1:
            return np.concatenate([self.raw(s[None]) for s in states])
        return self._run(states)

    def act(self, states: np.ndarray, seeds: np.ndarray, steps: np.ndarray) -> np.ndarray:
        out = self.raw(states)
        if np.issubdtype(out.dtype, np.floating) and not np.isfinite(out).all():
            raise PolicyFailure("the model output NaN or infinity during an episode")
        try:
            return actions_from_output(out, self.spec.n_actions)
        except ValueError as exc:
            raise PolicyFailure(f"unusable model output during an episode: {exc}") from None


class RandomPolicy:
    """Uniform random actions, a function of (episode seed, decision index) only."""

    def __init__(self, spec: Task):
        self.spec = spec
        self.n = spec.n_actions
        self.fixed_batch_one = False
        self.output_name = "random"

    def act(self, states: np.ndarray, seeds: np.ndarray, steps: np.ndarray) -> np.ndarray:
        return np.array([np.random.default_rng([int(s), int(t)]).integers(self.n) for s, t in zip(seeds, steps)])


# --- probing --------------------------------------------------------------------------------------
def probe_batch_sizes(pool_size: int, n_states: int = PROBE_STATES) -> list[int]:
    """Every batch size the episodes use (1..pool_size: a pool shrinks as its episodes end) and a few more."""
    return sorted(set(range(1, max(1, pool_size) + 1)) | set(L.EXTRA_PROBE_BATCH_SIZES) | {n_states})


def probe(policy: OnnxPolicy, env: Any = None, *, pool_size: int | None = None,
          states: np.ndarray | None = None) -> dict[str, Any]:
    """Raw outputs on the probe states: one by one, then at each batch size of :func:`probe_batch_sizes`.

    A batch of ``b`` holds the first ``b`` probe states (cycled when ``b`` exceeds them), so row ``i``
    of every batch can be compared with state ``i`` alone. A batch that fails is recorded as an
    error for the checks; a budget exceeded stops the probe.
    """
    states = probe_states(policy.spec, env=env) if states is None else states
    singles = [policy.raw(s[None]) for s in states]
    batches: list[list] = []
    if not policy.fixed_batch_one:
        for b in probe_batch_sizes(pool_size or policy.spec.pool_size, len(states)):
            if b == 1:
                continue
            try:
                batches.append([b, policy.raw(states[np.arange(b) % len(states)]), ""])
            except BudgetExceeded:
                raise
            except PolicyFailure as exc:
                batches.append([b, None, str(exc)[:400]])
    return {"singles": singles, "batches": batches, "fixed_batch_one": bool(policy.fixed_batch_one),
            "output_name": policy.output_name[:200], "pool_size": int(pool_size or policy.spec.pool_size)}


def actions_at_batch_sizes(policy: Policy, states: np.ndarray, batch_sizes: Sequence[int]) -> np.ndarray:
    """Argmax actions on ``states``, in consecutive chunks whose sizes cycle through ``batch_sizes``
    and then again through them reversed; both passes must agree on all but 2 % of the states (else
    :class:`PolicyFailure`)."""
    n = len(states)
    passes = []
    for sizes in (list(batch_sizes), list(batch_sizes)[::-1]):
        out = np.empty(n, np.int64)
        i = k = 0
        while i < n:
            b = max(1, int(sizes[k % len(sizes)]))
            chunk = states[i : i + b]
            out[i : i + len(chunk)] = np.asarray(policy.act(chunk, np.zeros(len(chunk), np.int64), np.zeros(len(chunk), np.int64)))
            i += len(chunk)
            k += 1
        passes.append(out)
    differ = int(np.sum(passes[0] != passes[1]))
    if differ > max(1, n // 50):  # a near-tie may flip in the last bit; a model that reads the batch flips many
        raise PolicyFailure(f"the model's actions depend on the batch size: {differ} of {n} probe states change "
                            f"between batches of {', '.join(map(str, batch_sizes))}")
    return passes[0]


MAX_TENSORS = 64  # intermediate tensors one "tensors" command returns at most
MAX_TENSOR_BYTES = L.CHANNEL_FROM_WORKER_BYTES // 2  # and their bytes together


def tensors(model_bytes: bytes, states: np.ndarray, *, size: int) -> list[np.ndarray]:
    """The numeric intermediate tensors of ``size`` elements that the model computes on ``states``
    (each node output exposed as a graph output; at most :data:`MAX_TENSORS`, :data:`MAX_TENSOR_BYTES`).
    How the notebook checks find the preprocessed state inside a model that preprocesses raw frames."""
    import onnx
    import onnxruntime as ort

    model = onnx.load_from_string(model_bytes)
    known = {o.name for o in model.graph.output}
    for node in model.graph.node:
        model.graph.output.extend(onnx.ValueInfoProto(name=out) for out in node.output if out and out not in known)
    options = ort.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = 1
    options.log_severity_level = 3
    try:
        session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
        names = [o.name for o in session.get_outputs()]
        outs = session.run(names, {session.get_inputs()[0].name: states})
    except MemoryError:
        raise PolicyFailure("the model tried to allocate more memory than the grader allows") from None
    except Exception as exc:  # noqa: BLE001 - onnxruntime's errors on a model are the model's
        raise PolicyFailure(short_reason(exc)) from None
    found: list[np.ndarray] = []
    nbytes = 0
    for o in outs:
        if isinstance(o, np.ndarray) and o.size == size and (np.issubdtype(o.dtype, np.floating)
                                                             or np.issubdtype(o.dtype, np.integer)):
            nbytes += o.nbytes
            if len(found) == MAX_TENSORS or nbytes > MAX_TENSOR_BYTES:
                break
            found.append(o)
    return found


def short_reason(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    line = text[-1] if text else type(exc).__name__
    if isinstance(exc, MemoryError) or "bad_alloc" in line or "Failed to allocate" in line:
        return "the model tried to allocate more memory than the grader allows"
    return f"{type(exc).__name__}: {line[:400]}"
