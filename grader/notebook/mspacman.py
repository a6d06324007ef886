"""MsPacman DQN notebooks: run the definitions in the sandbox, judge the evidence outside.

:func:`collect` ships the sandbox only *inputs*: raw frames for the preprocessing probe, and
network states built from OTHER frames (so no expected answer of the preprocessing probe is
anywhere inside), plus the handed-in weight files. The child returns the raw outputs of the
student's functions and the exported ONNX bytes; every check is judged here, against
:func:`grader.tasks.mspacman.preprocess_frames` computed in this process, and against the grader's own
static view of what the notebook defines (a report naming a function or class the notebook does
not define is not used). The exported models go back to the pipeline as
:class:`~grader.notebook.evidence.ProducedModel` (graded there like an uploaded file).
"""

from __future__ import annotations

import importlib.util
import json
import re
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from grader.errors import MissingDependency
from grader.notebook import runcheck
from grader.notebook.astfilter import CellPlan, defined_names
from grader.notebook.common import ParsedNotebook, check
from grader.notebook.diagnose import diagnose_preprocessing, follows_frames
from grader.notebook.evidence import NotebookEvidence, ProducedModel
from grader.notebook.protocol import DefinitionsDone, Network, Preprocess, Report, Weights
from grader.notebook.sandbox import Limits, SandboxRun, run_in_sandbox
from grader.resources import data_dir
from grader.result import CheckResult
from grader.runtime.bwrap import INSTALL_BWRAP
from grader.tasks.mspacman import FRAME_STACK, preprocess_frames
from grader.tasks.mspacman import TASK as MSPACMAN

MARKERS: list[str] = [r"MsPacman", r"\bDQN\b", r"preprocess_observation", r"ReplayMemory", r"nn\.Conv2d", r"ale_py",
                      r"sequence_size", r"\bnn\.Module\b"]

FRAMES_FILE = data_dir() / "mspacman_frames.npz"
RUNNER = Path(__file__).resolve().parent / "_runner.py"
PREPROCESS_FRAMES = (0, 2, 4, 6, 7)  # of the 8 shipped frames: what the preprocessing probe is asked about
NETWORK_FRAMES = (1, 3, 5)  # the network states are built from these only
NETWORK_BATCH = 4
NETWORK_ORDER = (0, 1, 2, 0, 0, 1, 1, 2)  # of NETWORK_FRAMES: the 4 sliding windows of 5 are distinct states
MAX_WEIGHT_FILES = 3
STMT_TIMEOUT_S = 10.0
IMPORT_TIMEOUT_S = 30.0
SHAPE = (44, 40)
PREPROCESS_CHECKS = ("preprocess_shape", "preprocess_range", "preprocess_values")
NETWORK_CHECKS = ("network_constructs", "network_forward", "network_batch_independent")
SCORED_CHECKS = ("cells_parse", "definitions_run", *PREPROCESS_CHECKS, *NETWORK_CHECKS)  # + the pipeline's network_onnx_export
TORCH_INSTALL = "pip install torch==2.13.0 (the CPU build)"

_PRE_EXPECTED = ("expected a method preprocess_observation(self, observation) of the Agent class, or a function "
                 "preprocess_observation(observation), returning the (44, 40) frame")
_CUDA_HINT = ("create tensors on a device chosen at run time: device = torch.device('cuda' if torch.cuda.is_available() "
              "else 'cpu') and .to(device); do not hard-code 'cuda' or .cuda()")


# --- inputs -----------------------------------------------------------------------------------
def probe_inputs() -> tuple[np.ndarray, np.ndarray]:
    """(raw frames for the preprocessing probe, network states from the other frames)."""
    with np.load(FRAMES_FILE) as d:
        frames = d["frames"]
    ref = preprocess_frames(frames[list(NETWORK_FRAMES)])
    order = NETWORK_ORDER
    states = np.stack([ref[list(order[i:i + FRAME_STACK])] for i in range(NETWORK_BATCH)]).astype(np.float32)
    return frames[list(PREPROCESS_FRAMES)], states


def _safe_name(i: int, path: Path) -> str:
    name = path.name
    return name if re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}", name) else f"weights{i}{path.suffix[:5] or '.pt'}"


def _job(plans: list[CellPlan], weight_names: list[str], limits: Limits, *, own_states: bool = False) -> dict:
    return {
        "cells": [{"cell": p.cell.number,
                   "stmts": [{"line": s.line, "src": s.source,
                              "timeout": IMPORT_TIMEOUT_S if s.is_import else STMT_TIMEOUT_S} for s in p.run]}
                  for p in plans if p.run],
        "call_timeout_s": 10,
        "export_timeout_s": 60,
        "no_stub": ["torch", "numpy", "gymnasium", "gym"],
        "probe_preprocess": True,
        "probe_network": True,
        "weights": weight_names,
        "max_model_bytes": limits.model_bytes,
        "own_states": own_states,  # the network also on states stacked from the notebook's own preprocessing
        "network_order": list(NETWORK_ORDER),
    }


def _prepare(plans: list[CellPlan], weights: Sequence[Path], limits: Limits, *,
             own_states: bool = False) -> tuple[Path, dict[str, str]]:
    """A fresh work folder with ``in/`` = runner, job, inputs and the weight copies; and sandbox name -> original name."""
    work = Path(tempfile.mkdtemp(prefix="nbgrade-"))
    inp = work / "in"
    (inp / "submission").mkdir(parents=True)
    shutil.copyfile(RUNNER, inp / "runner.py")
    frames, states = probe_inputs()
    with np.load(FRAMES_FILE) as d:
        net_frames = d["frames"][list(NETWORK_FRAMES)]  # raw, for the network's own states (no answer: other frames)
    np.savez(inp / "frames.npz", frames=frames, states=states, net_frames=net_frames)
    names: dict[str, str] = {}
    for i, w in enumerate(list(weights)[:MAX_WEIGHT_FILES]):
        name = _safe_name(i, Path(w))
        if name in names:
            name = f"weights{i}{Path(w).suffix[:5]}"
        shutil.copyfile(w, inp / "submission" / name)
        names[name] = Path(w).name
    (inp / "job.json").write_text(json.dumps(_job(plans, list(names), limits, own_states=own_states)))
    return work, names


# --- collect ------------------------------------------------------------------------------------
def collect(nb: ParsedNotebook, *, limits: Limits, sandbox: str | None, weights: Sequence[Path],
            lesson_preprocessing: bool = True) -> NotebookEvidence:
    """Run the notebook's definitions in the sandbox and judge what they produce (see the module docstring).

    ``lesson_preprocessing`` (the rubric's ``[notebook] lesson_preprocessing``, which the pipeline
    passes; the shipped rubric says false): the preprocessing must be the lesson's. Otherwise a
    deliberate change is described, and whether it agrees with the model handed in is judged once
    that model is known (:func:`resolve`).

    Raises :class:`MissingDependency` when torch is not installed for the grader (never the student's fault).
    """
    if importlib.util.find_spec("torch") is None:
        raise MissingDependency("grading a MsPacman notebook", install=TORCH_INSTALL)
    work, names = _prepare(nb.plans, weights, limits, own_states=not lesson_preprocessing)
    try:
        run = run_in_sandbox(work, limits, mode=sandbox)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    pending: list[PendingPreprocess] = []
    checks = judge(nb, run, limits, names, lesson_required=lesson_preprocessing, pending=pending)
    return NotebookEvidence(checks=checks, models=_models(run, names), logs=runcheck.logs(run),
                            pending=pending[0] if pending else None,
                            not_run=run.launch_error if run.refused else None)


def judge(nb: ParsedNotebook, run: SandboxRun, limits: Limits, names: dict[str, str], *,
          lesson_required: bool = True, pending: list | None = None) -> list[CheckResult]:
    """Every check of a MsPacman notebook from one sandbox run (points left to the pipeline).

    With ``lesson_required`` false, a preprocessing that differs from the lesson's is described
    and its ``preprocess_values`` verdict left to :func:`resolve` (appended to ``pending``)."""
    report = run.report
    report.expect_statements([(p.cell.number, st.line) for p in nb.plans for st in p.run])
    if run.refused:  # nothing ran: a set-up problem (the pipeline makes the result an error, not the student's)
        hint = f"the course staff installs bubblewrap ({INSTALL_BWRAP}) and grades again"
        refusal = run.launch_error or "the sandbox refused to start"
        checks = [check("sandbox_isolation", False, refusal, hint, severity="warning")]
        return checks + _not_checked(checks, refusal.split(". ")[0], hint)
    checks = [runcheck.isolation_check(run, limits), runcheck.sandbox_check(run, limits)]
    if run.launch_error:  # nothing ran
        return checks + _not_checked(checks, run.launch_error,
                                     f"install bubblewrap ({INSTALL_BWRAP}) on the grading machine")
    checks.append(runcheck.definitions_check(run, limits))
    if report.trusted:
        functions, classes = defined_names(nb.plans)
        checks += _preprocess_checks(report.last(Preprocess), functions, classes, lesson_required=lesson_required,
                                     pending=pending if pending is not None else [])
        checks += _params_check(report.last(DefinitionsDone), lesson_required=lesson_required)
        own = not lesson_required and pending is not None and bool(pending) and not pending[0].diag.matches
        checks += _network_checks(report.last(Network), classes, run, own_states=own)
        checks += _weights_check(report, names)
        reason = runcheck.death_reason(run, limits) or "the sandbox stopped before this check"
    else:
        reason = "the report channel was forged (see the `sandbox` check)"
    return checks + _not_checked(checks, reason, "see the `sandbox` check")


def _not_checked(done: list[CheckResult], reason: str, hint: str) -> list[CheckResult]:
    have = {c.name for c in done}
    return [check(name, False, f"not checked: {reason}", hint) for name in SCORED_CHECKS
            if name not in have and name != "cells_parse"]


def _models(run: SandboxRun, names: dict[str, str]) -> list[ProducedModel]:
    network = run.report.last(Network) if run.report.trusted else None
    cls = network.name if network is not None and network.name else "the notebook's network"
    loaded = [w for w in run.report.all(Weights) if w.loaded] if run.report.trusted else []
    weights = names.get(loaded[0].file, loaded[0].file) if loaded else "handed-in weights"
    models = []
    if "network.onnx" in run.blobs.files:
        own = network.export_input.array() if network is not None and network.export_input is not None else None
        models.append(ProducedModel("network", f"{cls} with fresh weights", run.blobs.files["network.onnx"],
                                    own_state=None if own is None else own.astype(np.float32)))
    if "trained.onnx" in run.blobs.files:
        models.append(ProducedModel("trained", f"{cls} with {weights}", run.blobs.files["trained.onnx"]))
    return models


# --- preprocessing ------------------------------------------------------------------------------
def _fail_all(names: Sequence[str], message: str, hint: str) -> list[CheckResult]:
    return [check(name, False, message, hint) for name in names]


def _preprocess_checks(pre: Preprocess | None, functions: set[str], classes: set[str], *, lesson_required: bool = True,
                       pending: list | None = None) -> list[CheckResult]:
    if pre is None:
        return []  # the sandbox died earlier: reported as "not checked"
    if not pre.found:
        return _fail_all(PREPROCESS_CHECKS, f"no preprocessing function found: {_PRE_EXPECTED}",
                         "define preprocess_observation as in the lesson (and attach it to Agent, or keep it as a function)")
    if pre.function not in functions or (pre.owner is not None and pre.owner not in classes):
        return _fail_all(PREPROCESS_CHECKS, f"the report names a preprocessing function ({pre.name}) that the notebook's "
                         "definitions do not define: not used", _PRE_EXPECTED)
    if pre.error:
        return _fail_all(PREPROCESS_CHECKS, *_preprocess_error(pre))
    with np.load(FRAMES_FILE) as d:
        frames = d["frames"][list(PREPROCESS_FRAMES)]
    name = pre.name or "the preprocessing"
    decoded = [o.array() for o in pre.outputs]
    outputs = [o for o in decoded if o is not None]
    if len(decoded) != len(frames):
        return _fail_all(PREPROCESS_CHECKS, f"{name}: {len(decoded)} outputs for {len(frames)} frames", "")
    if len(outputs) != len(decoded):
        first = pre.outputs[0]
        return _fail_all(PREPROCESS_CHECKS, f"{name} returns {first.type} of dtype {first.dtype} and shape "
                         f"{tuple(first.shape)}, which is not a numeric array of at most 60000 values",
                         "return the (44, 40) float32 frame (a torch tensor or a numpy array)")
    diag = diagnose_preprocessing(frames, outputs)
    genuine = follows_frames(frames, outputs, diag)
    if lesson_required or diag.matches:
        values = _values_check(name, frames, diag)
        if pending is not None and genuine and _usable(outputs):
            pending.append(PendingPreprocess(name, frames, outputs, diag, describe_change(outputs, diag), values,
                                             lesson_required))
        return [_shape_check(pre, genuine), _range_check(name, outputs, genuine), values]
    own = [_own_shape_check(pre, genuine), _own_range_check(name, outputs, genuine)]
    if not (genuine and _usable(outputs)):
        return own + [_values_check(name, frames, diag)]
    change = describe_change(outputs, diag)
    provisional = check("preprocess_values", True, f"{name} changes the lesson's preprocessing: {change} "
                        "(a deliberate change is not penalised; no model was graded to check it against)")
    if pending is not None:
        pending.append(PendingPreprocess(name, frames, outputs, diag, change, provisional, lesson_required))
    return own + [provisional]


def _preprocess_error(pre: Preprocess) -> tuple[str, str]:
    if pre.cuda:
        return f"{pre.name} works only on a GPU (CUDA): {pre.error}", _CUDA_HINT
    if pre.timeout:
        return f"{pre.name} {pre.error} on one frame", "preprocessing one frame must take milliseconds"
    at = f" ({pre.cell[1:-1]} line {pre.line})" if pre.cell and pre.line else ""
    return (f"{pre.name} failed on a MsPacman frame (210, 160, 3) uint8{at}: {pre.error}",
            "call it on env.reset()[0] in your notebook and fix the error")


_NOT_FRAMES = " -- but its outputs do not follow the frames it was given (not a preprocessing of them)"


def _shape_check(pre: Preprocess, genuine: bool) -> CheckResult:
    first = pre.outputs[0]
    shape, dtype = tuple(first.shape), first.dtype
    float_ok = dtype.startswith("float") and dtype != "float16"
    shapes_equal = all(tuple(o.shape) == shape for o in pre.outputs)
    if shape == SHAPE and float_ok and shapes_equal and genuine:
        return check("preprocess_shape", True, f"{pre.name} returns {first.type} of shape (44, 40), {dtype}")
    probs = []
    if shape != SHAPE or not shapes_equal:
        probs.append(f"shape {shape} instead of (44, 40)")
    if not float_ok:
        probs.append(f"dtype {dtype} instead of a float type (float32)")
    message = f"{pre.name} returns {first.type} with " + " and ".join(probs) if probs else f"{pre.name} returns (44, 40)"
    return check("preprocess_shape", False, message + ("" if genuine else _NOT_FRAMES),
                 "the lesson's steps give (44, 40): crop [1:171] (170 rows), 2 border rows above and below (174), "
                 "then [1::4, 1::4]; end with .float()")


def _range_check(name: str, outputs: list[np.ndarray], genuine: bool) -> CheckResult:
    values = np.concatenate([o.ravel() for o in outputs])
    if values.size == 0 or not np.isfinite(values).all():
        return check("preprocess_range", False, f"{name} returns empty or non-finite values", "return numbers 0..255")
    lo, hi = float(values.min()), float(values.max())
    if not genuine:
        return check("preprocess_range", False, f"values {lo:g}..{hi:g}{_NOT_FRAMES}",
                     "return the preprocessed frame itself, computed from the observation")
    if lo >= 0 and hi <= 255 and hi > 1.0:
        return check("preprocess_range", True, f"values {lo:g}..{hi:g} (within 0..255)")
    if hi <= 1.0:
        return check("preprocess_range", False, f"values {lo:g}..{hi:g}: scaled to 0..1, the lesson keeps 0..255",
                     "do not divide by 255: the graded ONNX model is fed raw 0..255 grayscale values")
    return check("preprocess_range", False, f"values {lo:g}..{hi:g} leave 0..255", "keep the grayscale values 0..255")


def _values_check(name: str, frames: np.ndarray, diag) -> CheckResult:
    if diag.matches:
        return check("preprocess_values", True, f"equal to the reference preprocessing on {len(frames)} real MsPacman frames "
                     f"(max difference {diag.max_abs_diff:g})")
    stats = (f" ({diag.frac_equal:.1%} of pixels equal, max difference {diag.max_abs_diff:g})"
             if diag.frac_equal is not None else "")
    return check("preprocess_values", False,
                 f"{name} differs from the reference on real MsPacman frames{stats}; consistent with: " + "; ".join(diag.steps),
                 " ".join(dict.fromkeys(diag.hints)) or "follow the lesson's steps: mean -> uint8, [1:171], border 150, [1::4, 1::4]")


def _usable(outputs: list[np.ndarray]) -> bool:
    """Outputs a model's tensors can be compared with: one shape, finite numbers."""
    return len({o.shape for o in outputs}) == 1 and all(np.isfinite(o).all() for o in outputs)


def _own_shape_check(pre: Preprocess, genuine: bool) -> CheckResult:
    """The shape of a preprocessing of the student's own: any, as long as it is one numeric array per frame."""
    first = pre.outputs[0]
    shape, dtype = tuple(first.shape), first.dtype
    same = all(tuple(o.shape) == shape for o in pre.outputs)
    numeric = dtype != "float16" and (dtype.startswith("float") or dtype.startswith("int") or dtype.startswith("uint"))
    if same and numeric and genuine and 1 <= len(shape) <= 3:
        lesson = "" if shape == SHAPE else " (the lesson's: (44, 40))"
        return check("preprocess_shape", True, f"{pre.name} returns {first.type} of shape {shape}{lesson}, {dtype}")
    probs = [p for p, bad in ((f"shapes that change from frame to frame ({shape}, ...)", not same),
                              (f"dtype {dtype}", not numeric), (f"{len(shape)} axes", not 1 <= len(shape) <= 3)) if bad]
    message = f"{pre.name} returns {first.type} with " + " and ".join(probs) if probs else f"{pre.name} returns {shape}"
    return check("preprocess_shape", False, message + ("" if genuine else _NOT_FRAMES),
                 "return one frame's preprocessed image: a float32 array (or tensor) of the same shape for every frame")


def _own_range_check(name: str, outputs: list[np.ndarray], genuine: bool) -> CheckResult:
    values = np.concatenate([o.ravel() for o in outputs])
    if values.size == 0 or not np.isfinite(values).all():
        return check("preprocess_range", False, f"{name} returns empty or non-finite values",
                     "return finite numbers (check divisions)")
    lo, hi = float(values.min()), float(values.max())
    if not genuine:
        return check("preprocess_range", False, f"values {lo:g}..{hi:g}{_NOT_FRAMES}",
                     "return the preprocessed frame itself, computed from the observation")
    scaled = " (scaled to 0..1; the lesson keeps 0..255)" if hi <= 1.0 else ""
    return check("preprocess_range", True, f"values {lo:g}..{hi:g}{scaled}")


_GRAY_WORDS = {"mean_round": "the channel mean rounded", "mean_float": "the channel mean not truncated",
               "lum_trunc": "luminance", "lum_round": "luminance (rounded)", "lum_float": "luminance", "red": "the red channel"}


def describe_change(outputs: list[np.ndarray], diag) -> str:
    """A deliberate change in words: "crops rows 34..193, scales to 0..1, 84x84"."""
    parts: list[str] = []
    v = diag.variant
    if v is not None:
        if v["gray"] != "mean_trunc":
            parts.append(_GRAY_WORDS.get(v["gray"], v["gray"]))
        if tuple(v["crop"]) != (1, 171):
            parts.append(f"crops rows {v['crop'][0]}..{v['crop'][1] - 1}" if tuple(v["crop"]) != (0, 210) else "no crop")
        if v["border"] != 150.0:
            parts.append("no border rows" if v["border"] is None else f"border rows of {v['border']:g}")
        if (v["r0"], v["c0"]) != (1, 1):
            parts.append(f"every 4th pixel from row {v['r0']}, column {v['c0']}")
    hi = max(float(np.max(o)) for o in outputs)
    if hi <= 1.0:
        parts.append("scales to 0..1")
    shape = tuple(outputs[0].shape)
    if shape != SHAPE:
        parts.append("x".join(map(str, shape)))
    return ", ".join(dict.fromkeys(parts)) or "the lesson's values in another form"


@dataclass
class PendingPreprocess:
    """The notebook's preprocessing, to be judged against the graded model (:func:`resolve`)."""

    name: str
    frames: np.ndarray  # the raw frames it was applied to
    outputs: list[np.ndarray]  # its output on each
    diag: Any  # the comparison with the lesson's (grader.notebook.diagnose.Diagnosis)
    change: str  # the change in words
    check: CheckResult  # the verdict without a model
    lesson_required: bool


def probe_stack(frames: np.ndarray, k: int) -> list[int]:
    """Which of the preprocessing probe's frames make a stack of ``k``, oldest first: the last ``k``,
    the first repeated at the start when there are fewer (as an episode's first stack)."""
    n = len(frames)
    return [0] * max(0, k - n) + list(range(max(0, n - k), n))


def resolve(pending: PendingPreprocess | None, *, task: Any, tensors: Any = None) -> CheckResult | None:
    """``preprocess_values`` judged against the graded model's contract (None: nothing to change).

    * the lesson's contract (the model takes ``[batch, 5, 44, 40]``): the grader feeds it the
      lesson's states, so the notebook's function must be the lesson's;
    * raw frames, the preprocessing inside the model: some tensor the model computes on a stack
      of the probe frames must equal the notebook's function applied to each of them (stacked,
      oldest first), whatever the preprocessing. ``tensors(stack, size)`` returns the model's
      intermediate tensors of that many elements (run in the sandboxed worker)."""
    if pending is None or task is None:
        return None
    if task.homework_name == task.name:  # the lesson's contract
        if pending.diag.matches or pending.lesson_required:
            return None
        return check("preprocess_values", False,
                     f"{pending.name} changes the lesson's preprocessing ({pending.change}), but the graded model takes the "
                     f"lesson's states {task.input_signature}: the grader feeds it the lesson's preprocessing, not "
                     f"{pending.name}'s, so it does not play on the states it was trained on; differences: "
                     + "; ".join(pending.diag.steps),
                     "export the preprocessing inside the model (a module whose forward preprocesses the last K raw frames, "
                     "then calls the network: docs/mspacman.md), or preprocess as the lesson does")
    if pending.lesson_required and not pending.diag.matches:
        return None  # the rubric requires the lesson's preprocessing: its failure stands
    k = int(task.state_shape[0])
    idx = probe_stack(pending.frames, k)
    expected = np.stack([pending.outputs[i] for i in idx]).astype(np.float64)
    try:
        found = tensors(pending.frames[idx][None], expected.size)
    except Exception as exc:  # noqa: BLE001 - the engine's failure: the model's, said in the message
        return check("preprocess_values", False, f"could not compare {pending.name} with the model's preprocessing: {exc}",
                     "run the exported model with onnxruntime on uint8 frames [1, K, 210, 160, 3]")
    scale = max(1.0, float(np.abs(expected).max()))
    for t in found:
        t = np.asarray(t, dtype=np.float64)
        for view in (t.reshape(k, -1), t.reshape(-1, k).T):
            if np.allclose(view, expected.reshape(k, -1), rtol=0, atol=1e-3 * scale):
                what = "the lesson's" if pending.diag.matches else f"a deliberate change: {pending.change}"
                return check("preprocess_values", True,
                             f"{pending.name} computes what the model's own preprocessing computes on {k} real MsPacman "
                             f"frames ({what}; a stack of {k})")
    return check("preprocess_values", False,
                 f"the graded model preprocesses its frames differently from {pending.name}: no tensor inside the model "
                 f"equals {pending.name}'s output on {k} real MsPacman frames, stacked ({k}, "
                 f"{', '.join(map(str, pending.outputs[0].shape))}); {pending.name}: {pending.change}",
                 f"export the module that trains and plays: its forward must call the same preprocessing as {pending.name} "
                 "(one function used by both), then the network")


# --- params and network -------------------------------------------------------------------------
def _params_check(done: DefinitionsDone | None, *, lesson_required: bool = True) -> list[CheckResult]:
    if done is None:
        return []
    params = done.params if done.params is not None else {}
    own_stack = done.params is not None and not lesson_required and params.get("n_actions") in (None, MSPACMAN.n_actions)
    if own_stack and params.get("sequence_size") not in (None, FRAME_STACK):
        seq = params.get("sequence_size")
        return [check("params", True, f"params: sequence_size={seq}, n_actions=5: a stack of {seq} frames; the graded "
                      f"model must then take the last {seq} raw frames, its preprocessing inside (docs/mspacman.md)",
                      "", severity="note")]
    if done.params is None:
        return [check("params", False, "no `params` dict found (the lesson keeps the hyper-parameters there)",
                      "keep the lesson's params dict", severity="note")]
    seq, nact = done.params.get("sequence_size"), done.params.get("n_actions")
    ok = seq in (None, FRAME_STACK) and nact in (None, MSPACMAN.n_actions)
    return [check("params", ok, f"params: sequence_size={seq}, n_actions={nact}"
                  + ("" if ok else "; the graded input is 5 stacked frames and the policy has 5 actions"),
                  "keep sequence_size = 5 and n_actions = 5 (the grader feeds [batch, 5, 44, 40] and reads 5 action values)",
                  severity="note" if ok else "warning")]


def _network_checks(net: Network | None, classes: set[str], run: SandboxRun, *,
                    own_states: bool = False) -> list[CheckResult]:
    if net is None:
        return []
    if not net.found:
        return _fail_all(NETWORK_CHECKS, "no network class found: expected class DQN(nn.Module) with "
                         "__init__(self, n_observations, n_actions)", "define the lesson's DQN(nn.Module) class")
    if net.name not in classes:
        return _fail_all(NETWORK_CHECKS, f"the report names a network class ({net.name}) that the notebook's definitions "
                         "do not define: not used", "define the lesson's DQN(nn.Module) class")
    if not net.constructed:
        if net.cuda:
            msg, hint = f"{net.name}(5, 5) works only on a GPU (CUDA), and the grader has none: {net.error}", _CUDA_HINT
        else:
            msg, hint = (f"{net.name}(5, 5) could not be constructed: {net.error}",
                         "DQN(n_observations, n_actions) must build with n_observations=5 stacked frames and n_actions=5")
        return _fail_all(NETWORK_CHECKS, msg, hint)
    args = ", ".join(str(a) for a in net.args)
    params = f", {net.parameters:,} parameters" if net.parameters else ""
    checks = [check("network_constructs", True, f"{net.name}({args}) builds on the CPU{params}")]
    if own_states and (net.own_batch is not None or net.own_error):
        return checks + _own_network_checks(net) + [_export_note(net, run)]
    batch = net.out_batch.array() if net.out_batch is not None else None
    if batch is None:
        checks += _fail_all(NETWORK_CHECKS[1:], *_forward_error(net))
    else:
        checks += [_forward_check(batch), _batch_check(batch, [o.array() for o in net.out_single])]
    return checks + [_export_note(net, run)]


def _own_network_checks(net: Network) -> list[CheckResult]:
    """``network_forward`` and ``network_batch_independent`` on the notebook's own states: its
    preprocessing of other real frames, stacked by its ``params['sequence_size']`` (a changed
    preprocessing is judged on what it produces, not on the lesson's states)."""
    shape = "[" + ", ".join(map(str, net.own_shape)) + "]" if net.own_shape else "its own states"
    batch = net.own_batch.array() if net.own_batch is not None else None
    if batch is None:
        what = net.own_error or (f"{net.own_batch.type} of shape {tuple(net.own_batch.shape)}" if net.own_batch else "no output")
        return _fail_all(NETWORK_CHECKS[1:], f"the network cannot take the notebook's own states {shape} (its "
                         f"preprocessing of real frames, stacked): {what}",
                         "the network's input must be what the preprocessing produces, stacked: check the first layer's "
                         "channels (the stack) and the flatten size for the preprocessed image's shape")
    want = (NETWORK_BATCH, MSPACMAN.n_actions)
    if batch.shape == want and np.isfinite(batch).all():
        forward = check("network_forward", True, f"forward of the notebook's own states {shape} gives finite [4, 5]")
    else:
        what = f"shape {list(batch.shape)} instead of [4, 5]" if batch.shape != want else "NaN or infinite values"
        forward = check("network_forward", False, f"forward of the notebook's own states {shape} gives {what}",
                        "the network maps [batch, *state] to [batch, 5] action values")
    return [forward, _batch_check(batch, [o.array() for o in net.own_single])]


def _forward_error(net: Network) -> tuple[str, str]:
    if net.out_batch is not None:  # an output that is not a small numeric array
        return (f"forward of [4, 5, 44, 40] gives {net.out_batch.type} of shape {tuple(net.out_batch.shape)}, "
                "not [4, 5] action values", "the network maps [batch, 5, 44, 40] to [batch, 5] action values")
    err = net.forward_error or "unknown error"
    if net.forward_cuda:
        return f"{net.name}.forward works only on a GPU (CUDA): {err}", _CUDA_HINT
    return (f"{net.name}.forward failed on a [4, 5, 44, 40] float32 batch of real frames: {err}",
            "the input is 5 stacked (44, 40) frames; for the lesson's layers the flatten size is 32 * 11 * 10 = 3520")


def _forward_check(batch: np.ndarray) -> CheckResult:
    want = (NETWORK_BATCH, MSPACMAN.n_actions)
    if batch.shape == want and np.isfinite(batch).all():
        return check("network_forward", True, "forward of [4, 5, 44, 40] gives finite [4, 5]")
    what = f"shape {list(batch.shape)} instead of [4, 5]" if batch.shape != want else "NaN or infinite values"
    return check("network_forward", False, f"forward of [4, 5, 44, 40] gives {what}",
                 "the network maps [batch, 5, 44, 40] to [batch, 5] action values")


def _batch_check(batch: np.ndarray, singles: list[np.ndarray | None]) -> CheckResult:
    one = (1, MSPACMAN.n_actions)
    alone = [s for s in singles if s is not None and s.shape == one]
    if batch.shape != (NETWORK_BATCH, MSPACMAN.n_actions) or len(singles) != NETWORK_BATCH or len(alone) != len(singles):
        return check("network_batch_independent", False, "not checked: the forward output is not [batch, 5]",
                     "fix network_forward first")
    diff = float(np.abs(batch - np.concatenate(alone)).max())
    scale = float(np.abs(batch).max()) if np.isfinite(batch).all() else float("inf")
    if np.isfinite(diff) and diff <= 1e-4 * max(1.0, scale):
        return check("network_batch_independent", True,
                     f"in eval mode, each sample's output does not depend on the batch (max difference {diff:.2g})")
    return check("network_batch_independent", False,
                 f"in eval mode, a sample's output changes with the other samples of the batch (max difference {diff:.3g})",
                 "do not mix samples in forward (no normalisation over the batch axis outside BatchNorm, no x.view(-1) "
                 "across the batch); flatten with torch.flatten(x, start_dim=1)")


def _export_note(net: Network, run: SandboxRun) -> CheckResult:
    """``network_exported`` (note): whether the export produced a file; the pipeline checks the model itself."""
    if "network.onnx" in run.blobs.files:
        return check("network_exported", True, f"{net.name} exported to ONNX "
                     f"({len(run.blobs.files['network.onnx']) / 2**20:.1f} MB)", severity="note")
    return check("network_exported", False, f"torch.onnx.export failed: {net.export_error or 'no model came back'}",
                 "use only standard torch layers/ops in forward (no numpy, no Python-side conditionals on values)",
                 severity="warning")


def _weights_check(report: Report, names: dict[str, str]) -> list[CheckResult]:
    if report.last(Network) is None:
        return []
    tried = report.all(Weights)
    loaded = [w for w in tried if w.loaded]
    if loaded:
        w = loaded[0]
        extra = f" (export failed: {w.export_error})" if w.export_error else ""
        return [check("network_weights", True, f"trained weights {names.get(w.file, w.file)} loaded and exported{extra}",
                      severity="note")]
    if tried:
        return [check("network_weights", False, "; ".join(f"{names.get(w.file, w.file)}: {w.error}" for w in tried)
                      + ": the network is untrained (random weights), it is checked for shapes only",
                      "save the trained policy with torch.save(policy.state_dict(), 'policy.pt') and hand it in with the notebook",
                      severity="warning")]
    return [check("network_weights", False,
                  "no trained weights (*.pt / *.pth state_dict) handed in: the network is untrained (random weights) "
                  "and is checked for shapes only, not scored by episodes",
                  "hand in torch.save(policy.state_dict(), 'policy.pt') or the exported model.onnx with the notebook",
                  severity="note")]
