"""``grade_notebook``: read, filter, run definitions in the sandbox, check, and build a GradeResult."""

from __future__ import annotations

import ast
import base64
import json
import os
import shutil
import stat
import tempfile
import time
from pathlib import Path

import numpy as np

from grader.tasks import task_names
from grader.tasks.mspacman import FRAME_STACK, TASK as MSPACMAN, preprocess_frames
TASK_NAMES = task_names()
from grader.notebook import keras_static
from grader.notebook.astfilter import CellPlan, plan_notebook
from grader.notebook.checks import CheckList
from grader.notebook.detect import detect_task
from grader.notebook.diagnose import diagnose
from grader.notebook.onnx_bridge import grade_onnx, merge
from grader.notebook.reader import NotebookError, notebook_text, read_notebook
from grader.notebook.sandbox import Limits, SandboxRun, run_in_sandbox
from grader.result import CheckResult, GradeResult

DATA = Path(__file__).resolve().parent.parent / "data"
FRAMES_FILE = DATA / "mspacman_frames.npz"
RUNNER = Path(__file__).resolve().parent / "_runner.py"
MAX_WEIGHT_BYTES = 200 << 20
MAX_SKIPPED_LISTED = 30
STMT_TIMEOUT_S = 10.0
IMPORT_TIMEOUT_S = 30.0


def _first_line(text: str) -> str:
    for ln in text.splitlines():
        if ln.strip():
            return ln.strip()[:80]
    return ""


def _finish(checks: CheckList, path: Path, task: str | None) -> GradeResult:
    items = checks.items
    status = "invalid" if any(c.blocking for c in items) else "graded"
    score = sum(c.points or 0.0 for c in items if c.passed)
    max_score = sum(c.max_points or 0.0 for c in items)
    return GradeResult(submission=str(path), task=task, status=status, checks=items,
                       score=round(score, 4), max_score=round(max_score, 4))


def grade_notebook(path: Path, *, rubric=None, out_dir: Path, task: str | None = None,
                   sandbox: str | None = None, onnx_options: dict | None = None) -> GradeResult:
    """Grade a student's notebook. Never raises for a bad notebook: every problem is a check.

    ``sandbox``: ``"auto"`` (bubblewrap when usable), ``"bwrap"`` (required) or ``"fallback"``
    (rlimits only); default from the ``GRADER_SANDBOX`` environment variable, else auto.
    ``onnx_options`` go to :func:`grader.grading.grade_onnx_file` for the model found beside the
    notebook (``episodes``, ``seeds``, ``workers``, ``video``, ``device``, ``selfcheck``, ...).
    Raises ``ValueError`` only for a wrong ``task`` or ``sandbox`` argument (a caller's error).
    """
    path = Path(path)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if task is not None and task not in TASK_NAMES:
        raise ValueError(f"unknown task {task!r}; known tasks: {', '.join(TASK_NAMES)}")
    from grader.notebook.sandbox import requested_mode

    requested_mode(sandbox)  # validate early
    try:
        return _grade_notebook(path, rubric=rubric, out_dir=out_dir, task=task, sandbox=sandbox,
                               onnx_options=onnx_options or {})
    except Exception as exc:  # a grader bug: report it as a result, not a traceback
        import traceback

        (out_dir / "notebook_grader_error.txt").write_text(traceback.format_exc())
        return GradeResult(submission=str(path), task=task, status="error", checks=[CheckResult(
            name="grader_error", passed=False, severity="error",
            message=f"the notebook grader failed: {type(exc).__name__}: {str(exc)[:300]} "
                    f"(details in {out_dir.name}/notebook_grader_error.txt)",
            hint="report this to the course staff with the notebook")])


def _grade_notebook(path: Path, *, rubric, out_dir: Path, task: str | None, sandbox: str | None,
                    onnx_options: dict) -> GradeResult:
    nb_rubric = rubric.notebook if rubric is not None else None
    try:
        cells = read_notebook(path)
    except NotebookError as exc:
        checks = CheckList(task, nb_rubric.points if nb_rubric else None)
        checks.add("notebook_format", False, exc.message, exc.hint)
        return _finish(checks, path, task)

    text = notebook_text(cells)
    if task is None:
        task, scores = detect_task(text)
        if rubric is not None and task is None:
            task = rubric.task
        checks = CheckList(task, nb_rubric.points if nb_rubric else None)
        checks.add("notebook_format", True, f"notebook format 4, {len(cells)} code cells")
        if task is None:
            checks.add("task_detected", False,
                       "cannot tell whether this notebook is the MsPacman DQN or the LunarLander actor-critic homework "
                       f"(markers found: mspacman {scores['mspacman']}, lunarlander {scores['lunarlander']})",
                       "pass --task mspacman or --task lunarlander")
            return _finish(checks, path, None)
        checks.add("task_detected", True, f"task {task} recognised from the notebook's content")
    else:
        checks = CheckList(task, nb_rubric.points if nb_rubric else None)
        checks.add("notebook_format", True, f"notebook format 4, {len(cells)} code cells")
        checks.add("task_detected", True, f"task {task} given explicitly")
    if rubric is not None and rubric.task != task:
        checks.items = [c for c in checks.items if c.name != "task_detected"]
        checks.add("task_detected", False, f"the rubric {rubric.id!r} is for {rubric.task}, the notebook is {task}",
                   "use the rubric of the notebook's task")
        return _finish(checks, path, task)

    plans = plan_notebook(cells)
    _check_parse(checks, plans)
    _note_skipped(checks, plans)
    if task == "lunarlander":
        result = _grade_lunarlander(checks, path, plans)
        return _attach_onnx_lunar(result, path, rubric, out_dir, onnx_options)
    limits = Limits()
    if nb_rubric is not None:
        limits.timeout_s = nb_rubric.timeout_s
        limits.memory_mb = nb_rubric.memory_mb
        limits.file_size_mb = getattr(nb_rubric, "file_size_mb", limits.file_size_mb)
        limits.processes = getattr(nb_rubric, "processes", limits.processes)
    return _grade_mspacman(checks, path, plans, limits, rubric, out_dir, sandbox, onnx_options)


# --- common -------------------------------------------------------------------------------------
def _check_parse(checks: CheckList, plans: list[CellPlan]) -> None:
    bad = [p for p in plans if p.syntax_error]
    if not bad:
        checks.add("cells_parse", True, f"all {len(plans)} code cells parse")
        return
    parts = [f"cell {p.cell.number} does not parse: {p.syntax_error} at line {p.syntax_line}"
             f" (the cell starts with `{_first_line(p.cell.original)}`)" for p in bad]
    checks.add("cells_parse", False, "; ".join(parts) + ". The rest of the notebook was analysed without "
               + ("this cell" if len(bad) == 1 else "these cells"),
               "fix the syntax error (often a missing closing parenthesis, e.g. `torch.cat(batch.action)` in "
               "optimize_model) and run the cell again before handing in")


def _note_skipped(checks: CheckList, plans: list[CellPlan]) -> None:
    skipped = [(p.cell.number, line, first) for p in plans for line, first in p.skipped]
    if not skipped:
        checks.add("skipped_statements", True, "no top-level statement was skipped")
        return
    listed = "; ".join(f"cell {c} line {ln}: {first}" for c, ln, first in skipped[:MAX_SKIPPED_LISTED])
    more = f"; and {len(skipped) - MAX_SKIPPED_LISTED} more" if len(skipped) > MAX_SKIPPED_LISTED else ""
    checks.add("skipped_statements", True,
               f"{len(skipped)} top-level statements were not run (training, environments, output; only definitions run): "
               f"{listed}{more}")


# --- LunarLander ----------------------------------------------------------------------------------
def _grade_lunarlander(checks: CheckList, path: Path, plans: list[CellPlan]) -> GradeResult:
    trees, sources = [], []
    for p in plans:
        if p.syntax_error or p.cell.skipped_magic:
            continue
        try:
            trees.append(ast.parse(p.cell.source))
            sources.append(p.cell.source)
        except SyntaxError:
            continue
    m = keras_static.analyse(trees, sources)
    shapes = [s for _, s in m.inputs if s is not None]
    if not m.inputs:
        checks.add("actor_input", False, "no keras Input layer found (expected layers.Input(shape=(8,)))",
                   "define the input as inputs = layers.Input(shape=(num_inputs,)) with num_inputs = 8 (the 8 numbers of a LunarLander observation)")
    elif any(s == (8,) for s in shapes):
        checks.add("actor_input", True, "input layer of shape (8,)")
    else:
        checks.add("actor_input", False, f"input shape {shapes[0] if shapes else 'unknown'} instead of (8,)",
                   "a LunarLander-v3 observation has 8 numbers: layers.Input(shape=(8,))")
    out = m.actor_output
    if out is None:
        checks.add("actor_output", False, "no actor output layer found (expected layers.Dense(4, activation='softmax'))",
                   "end the actor with action = layers.Dense(num_actions, activation='softmax')(common) with num_actions = 4, and build actor_model = keras.Model(inputs=inputs, outputs=action)")
    elif out.units == 4 and out.activation == "softmax":
        checks.add("actor_output", True, f"actor output Dense(4, softmax){' of ' + m.actor_name if m.actor_name else ''}")
    else:
        problems = []
        if out.units != 4:
            problems.append(f"{out.units} units instead of 4 (LunarLander has 4 actions)")
        if out.activation != "softmax":
            problems.append(f"activation {out.activation!r} instead of 'softmax' (the actor samples its action from probabilities)")
        checks.add("actor_output", False, f"actor output layer `{out.line}`: " + "; ".join(problems),
                   "the actor's last layer must be layers.Dense(4, activation='softmax')")
    hidden = keras_static.hidden_sizes(m)
    checks.add("actor_hidden", True, f"hidden Dense layers: {', '.join(str(h) for h in hidden) or 'none found'}"
               + (f"; critic output Dense({m.critic_output.units})" if m.critic_output else ""))
    return _finish(checks, path, "lunarlander")


def _beside(path: Path, patterns: tuple[str, ...]) -> list[Path]:
    found = []
    for pat in patterns:
        for p in sorted(path.parent.glob(pat)):
            try:
                st = p.lstat()
            except OSError:
                continue
            if stat.S_ISREG(st.st_mode) and st.st_size <= MAX_WEIGHT_BYTES:
                found.append(p)
    return found


def _pick_onnx(path: Path) -> Path | None:
    onnx = _beside(path, ("*.onnx",))
    for p in onnx:
        if p.name == "model.onnx":
            return p
    return onnx[0] if onnx else None


def _attach_onnx_lunar(result: GradeResult, path: Path, rubric, out_dir: Path, onnx_options: dict) -> GradeResult:
    model = _pick_onnx(path)
    if model is None:
        result.checks.append(CheckResult(
            name="model_onnx_present", passed=False, severity="error",
            message=f"no model.onnx beside the notebook in {path.parent.name}/",
            hint="export the actor with actor_model.export('model.onnx', format='onnx') and hand in model.onnx"))
        result.status = "invalid"
        return result
    result.checks.append(CheckResult(name="model_onnx_present", passed=True, severity="error",
                                     message=f"{model.name} found beside the notebook"))
    return _apply_onnx(result, model, rubric, out_dir, "lunarlander", label=model.name, onnx_options=onnx_options)


def _apply_onnx(result: GradeResult, model: Path, rubric, out_dir: Path, task: str, *, label: str,
                onnx_options: dict) -> GradeResult:
    graded = grade_onnx(model, rubric=rubric, out_dir=out_dir, task=task, **onnx_options)
    if isinstance(graded, CheckResult):
        result.checks.append(graded)
        if graded.blocking:
            result.status = "invalid"
        return result
    return merge(result, graded, label=label)


# --- MsPacman ------------------------------------------------------------------------------------
def _prepare_workdir(path: Path, plans: list[CellPlan], weights: list[Path]) -> Path:
    work = Path(tempfile.mkdtemp(prefix="nbgrade-"))
    shutil.copyfile(RUNNER, work / "runner.py")
    with np.load(FRAMES_FILE) as d:
        frames = d["frames"]
    ref = preprocess_frames(frames)
    n_states = len(frames) - FRAME_STACK + 1
    states = np.stack([ref[i:i + FRAME_STACK] for i in range(n_states)]).astype(np.float32)
    np.savez(work / "frames.npz", frames=frames, states=states)
    sub = work / "submission"
    sub.mkdir()
    shutil.copyfile(path, sub / "notebook.ipynb")
    for w in weights:
        shutil.copyfile(w, sub / w.name)
    job = {
        "cells": [{"cell": p.cell.number,
                   "stmts": [{"line": s.line, "src": s.source,
                              "timeout": IMPORT_TIMEOUT_S if s.is_import else STMT_TIMEOUT_S} for s in p.run]}
                  for p in plans if p.run],
        "call_timeout_s": 10,
        "export_timeout_s": 60,
        "no_stub": ["torch", "numpy", "gymnasium", "gym"],
        "probe_preprocess": True,
        "probe_network": True,
        "weights": [w.name for w in weights],
    }
    (work / "job.json").write_text(json.dumps(job))
    return work


def _read_regular(path: Path, limit: int) -> bytes | None:
    """The bytes of a regular file the sandbox wrote, refusing symlinks and oversize files."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError:
        return None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_size > limit:
            return None
        chunks, total = [], 0
        while True:
            b = os.read(fd, 1 << 20)
            if not b:
                break
            total += len(b)
            if total > limit:
                return None
            chunks.append(b)
        return b"".join(chunks)
    finally:
        os.close(fd)


def _grade_mspacman(checks: CheckList, path: Path, plans: list[CellPlan], limits: Limits, rubric,
                    out_dir: Path, sandbox: str | None, onnx_options: dict) -> GradeResult:
    weights = _beside(path, ("*.pt", "*.pth"))[:3]
    work = _prepare_workdir(path, plans, weights)
    try:
        run = run_in_sandbox(work, limits, mode=sandbox)
        _write_logs(run, out_dir)
        onnx_files = {}
        for name in ("network.onnx", "trained.onnx"):
            data = _read_regular(work / "out" / name, MAX_WEIGHT_BYTES)
            if data:
                (out_dir / name).write_bytes(data)
                onnx_files[name] = out_dir / name
    finally:
        shutil.rmtree(work, ignore_errors=True)
    _sandbox_checks(checks, run, limits)
    msgs = run.messages
    if run.launch_error:
        checks.fail_missing_scored(run.launch_error, "install bubblewrap (apt-get install -y bubblewrap) or use the fallback sandbox")
        return _finish(checks, path, "mspacman")
    _definitions_check(checks, msgs, run)
    _preprocess_checks(checks, msgs)
    _network_checks(checks, msgs, onnx_files)
    death = _death_reason(run, msgs)
    checks.fail_missing_scored(death or "the sandbox stopped before this check", "see the `sandbox` check")
    result = _finish(checks, path, "mspacman")
    # ONNX grade: a model handed in beside the notebook, else trained weights, else nothing
    model = _pick_onnx(path)
    if model is not None:
        return _apply_onnx(result, model, rubric, out_dir, "mspacman", label=model.name, onnx_options=onnx_options)
    if "trained.onnx" in onnx_files:
        return _apply_onnx(result, onnx_files["trained.onnx"], rubric, out_dir, "mspacman", label="trained weights",
                           onnx_options=onnx_options)
    return result


def _write_logs(run: SandboxRun, out_dir: Path) -> None:
    for name, data, total in (("notebook_stdout.txt", run.stdout, run.stdout_total),
                              ("notebook_stderr.txt", run.stderr, run.stderr_total)):
        (out_dir / name).unlink(missing_ok=True)
        if total:
            tail = b"" if total <= len(data) else f"\n[... {total - len(data)} more bytes not kept]\n".encode()
            (out_dir / name).write_bytes(data + tail)


def _last(msgs: list[dict], ev: str) -> dict | None:
    for m in reversed(msgs):
        if m.get("ev") == ev:
            return m
    return None


def _where(msgs: list[dict]) -> str:
    """Where the child was when it stopped: a statement of a cell, or a probe phase."""
    for m in reversed(msgs):
        if m.get("ev") == "stmt":
            return f"while running cell {m.get('cell')} line {m.get('line')}"
        if m.get("ev") == "phase":
            return {"preprocess": "while calling the preprocessing function on a frame",
                    "network": "while building / running / exporting the network"}.get(m.get("phase"), "")
    return "before running any cell"


def _death_reason(run: SandboxRun, msgs: list[dict]) -> str | None:
    if _last(msgs, "done"):
        return None
    where = _where(msgs)
    if run.launch_error:
        return run.launch_error
    if run.process_limit_hit and not _last(msgs, "done"):
        return (f"the notebook's code tried to start more than {run_limits_processes(run)} processes {where} "
                "(a fork bomb?); the sandbox was stopped")
    if run.flooded:
        return f"the notebook's code printed more than {run.stdout_total + run.stderr_total >> 20} MB of output {where}; it was stopped"
    if run.timed_out:
        return f"the notebook's code did not finish within {run.seconds:.0f} s {where} (an endless loop, or training started at import?)"
    sig = run.signal_name
    if sig == "SIGXFSZ":
        return f"the notebook's code tried to write a file larger than the limit {where}"
    if sig == "SIGXCPU":
        return f"the notebook's code used more CPU time than allowed {where}"
    if sig:
        return f"the sandboxed process was killed by {sig} {where} (memory or process limit?)"
    if not msgs:
        return "the sandbox produced no report (the interpreter could not start, or the code closed the report channel)"
    crash = _last(msgs, "crash")
    if crash:
        return f"the grader's probe failed after the notebook's code ran: {crash.get('error')} (did the notebook replace a builtin or a library function?)"
    return f"the process ended by itself {where} (exit code {run.returncode}): the notebook's code called os._exit() or closed the grader's channel"


def run_limits_processes(run: SandboxRun) -> int:
    return run.process_limit


def _sandbox_checks(checks: CheckList, run: SandboxRun, limits: Limits) -> None:
    if run.mode == "bwrap":
        checks.add("sandbox_isolation", True,
                   f"bubblewrap sandbox: no network, only this submission's copy visible, uid 65534; limits: memory "
                   f"{limits.memory_mb} MB, files {limits.file_size_mb} MB, {run.limits_note}, wall {limits.timeout_s:g} s",
                   severity="note")
    else:
        checks.add("sandbox_isolation", False, "weaker sandbox: " + "; ".join(run.warnings) + f"; {run.limits_note}",
                   "install bubblewrap (apt-get install -y bubblewrap) on the grading machine", severity="warning")
    msgs = run.messages
    problems = []
    if run.launch_error:
        problems.append(run.launch_error)
    death = _death_reason(run, msgs)
    if death and not run.launch_error:
        problems.append(death)
    out = run.stdout_total + run.stderr_total
    if out > limits.output_bytes and not run.flooded:
        problems.append(f"the notebook's code printed {out / 2**20:.1f} MB at definition time (more than "
                        f"{limits.output_bytes >> 20} MB); definitions should print nothing")
    if run.process_limit_hit and _last(msgs, "done"):
        problems.append(f"the notebook's code tried to start more than {limits.processes} processes (a fork bomb?); "
                        "the process limit stopped it")
    tampered = _last(msgs, "tampered")
    if tampered:
        problems.append("the notebook's code replaced built-in functions or library functions ("
                        + ", ".join(tampered.get("names", [])) + "); they were restored before the checks")
    if run.channel_garbage:
        problems.append("the grader's report channel received data that was not from the grader (the notebook wrote to an inherited file descriptor)")
    if problems:
        checks.add("sandbox", False, "; ".join(problems),
                   "remove training loops, os._exit / exit calls, huge prints and file writes from the top level: "
                   "the grader runs only imports, constants, functions and classes")
    else:
        checks.add("sandbox", True, f"the notebook's definitions ran in {run.seconds:.1f} s within the sandbox limits")


def _definitions_check(checks: CheckList, msgs: list[dict], run: SandboxRun) -> None:
    errors = [m for m in msgs if m.get("ev") in ("stmt_error", "stmt_timeout")]
    stub = _last(msgs, "stubbed")
    stub_note = f" (modules not installed in the grader were replaced by stand-ins: {', '.join(stub['modules'])})" if stub else ""
    if not _last(msgs, "definitions_done"):
        checks.add("definitions_run", False, "the definitions did not finish: " + (_death_reason(run, msgs) or "unknown reason"),
                   "make the notebook's imports, functions and classes run without side effects")
        return
    if not errors:
        checks.add("definitions_run", True, "imports, constants, functions and classes ran without error" + stub_note)
        return
    parts = []
    for m in errors[:5]:
        if m["ev"] == "stmt_timeout":
            parts.append(f"cell {m['cell']} line {m['line']}: did not finish within {m['seconds']:g} s (an endless loop at definition time?)")
        else:
            err = str(m.get("error"))
            if "File too large" in err:
                err += " (files written by the notebook are limited in size; the notebook must not write big files at import)"
            elif "Network is unreachable" in err or "Temporary failure in name resolution" in err:
                err += " (the grader has no network: download nothing at import time)"
            elif "No such file or directory" in err or "Permission denied" in err:
                err += " (the grader sees only a copy of this notebook and the weight files beside it)"
            parts.append(f"cell {m['cell']} line {m['line']}: {err}")
    checks.add("definitions_run", False, "; ".join(parts) + stub_note,
               "run the notebook top to bottom in a fresh kernel (Kernel > Restart & Run All) and fix the first error")


def _decode(entry: dict) -> np.ndarray | None:
    data = entry.get("data")
    if not isinstance(data, str):
        return None
    try:
        raw = base64.b64decode(data, validate=True)
        arr = np.frombuffer(raw, dtype=np.float32)
        shape = tuple(int(s) for s in entry["shape"])
        return arr.reshape(shape)
    except (ValueError, TypeError, KeyError):
        return None


_PRE_EXPECTED = ("expected a method preprocess_observation(self, observation) of the Agent class, or a function "
                 "preprocess_observation(observation), returning the (44, 40) frame")
_CUDA_HINT = ("create tensors on a device chosen at run time: device = torch.device('cuda' if torch.cuda.is_available() "
              "else 'cpu') and .to(device); do not hard-code 'cuda' or .cuda()")


def _preprocess_checks(checks: CheckList, msgs: list[dict]) -> None:
    pre = _last(msgs, "preprocess")
    if pre is None:
        return  # the sandbox died earlier; fail_missing_scored reports it
    if not pre.get("found"):
        for name in ("preprocess_shape", "preprocess_range", "preprocess_values"):
            checks.add(name, False, f"no preprocessing function found: {_PRE_EXPECTED}",
                       "define preprocess_observation as in the lesson (and attach it to Agent, or keep it as a function)")
        return
    fname = pre.get("name")
    if pre.get("error"):
        err = pre["error"]
        if pre.get("cuda"):
            msg = f"{fname} works only on a GPU (CUDA): {err}"
            hint = _CUDA_HINT
        elif pre.get("timeout"):
            msg, hint = f"{fname} {err} on one frame", "preprocessing one frame must take milliseconds"
        else:
            at = f" ({pre.get('cell')[1:-1]} line {pre.get('line')})" if pre.get("cell") and pre.get("line") else ""
            msg, hint = f"{fname} failed on a MsPacman frame (210, 160, 3) uint8{at}: {err}", \
                "call it on env.reset()[0] in your notebook and fix the error"
        for name in ("preprocess_shape", "preprocess_range", "preprocess_values"):
            checks.add(name, False, msg, hint)
        return
    frames_info = pre.get("frames") or []
    with np.load(FRAMES_FILE) as d:
        frames = d["frames"]
    if len(frames_info) != len(frames):
        for name in ("preprocess_shape", "preprocess_range", "preprocess_values"):
            checks.add(name, False, f"{fname}: the sandbox returned {len(frames_info)} outputs for {len(frames)} frames", "")
        return
    first = frames_info[0]
    shape, dtype = tuple(first.get("shape", ())), str(first.get("dtype"))
    kind = first.get("type", "")
    float_ok = dtype.startswith("float") and dtype != "float16"
    if shape == (44, 40) and float_ok:
        checks.add("preprocess_shape", True, f"{fname} returns {kind} of shape (44, 40), {dtype}")
    else:
        probs = []
        if shape != (44, 40):
            probs.append(f"shape {shape} instead of (44, 40)")
        if not float_ok:
            probs.append(f"dtype {dtype} instead of a float type (float32)")
        checks.add("preprocess_shape", False, f"{fname} returns {kind} with " + " and ".join(probs),
                   "the lesson's steps give (44, 40): crop [1:171] (170 rows), 2 border rows above and below (174), "
                   "then [1::4, 1::4]; end with .float()")
    lo = min((f.get("min") for f in frames_info if f.get("min") is not None), default=None)
    hi = max((f.get("max") for f in frames_info if f.get("max") is not None), default=None)
    finite = all(f.get("finite", False) for f in frames_info)
    if lo is None or not finite:
        checks.add("preprocess_range", False, f"{fname} returns non-numeric or non-finite values", "return numbers 0..255")
    elif lo >= 0 and hi <= 255 and hi > 1.0:
        checks.add("preprocess_range", True, f"values {lo:g}..{hi:g} (within 0..255)")
    elif hi <= 1.0:
        checks.add("preprocess_range", False, f"values {lo:g}..{hi:g}: scaled to 0..1, the lesson keeps 0..255",
                   "do not divide by 255: the graded ONNX model is fed raw 0..255 grayscale values")
    else:
        checks.add("preprocess_range", False, f"values {lo:g}..{hi:g} leave 0..255", "keep the grayscale values 0..255")
    outputs = [_decode(f) for f in frames_info]
    if any(o is None for o in outputs):
        checks.add("preprocess_values", False, f"{fname}: outputs of shape {shape} could not be compared with the reference",
                   "return one (44, 40) array per frame")
        return
    diag = diagnose(frames, outputs)
    if diag.matches:
        checks.add("preprocess_values", True, f"equal to the reference preprocessing on {len(frames)} real MsPacman frames "
                   f"(max difference {diag.max_abs_diff:g})")
        return
    stats = (f" ({diag.frac_equal:.1%} of pixels equal, max difference {diag.max_abs_diff:g})"
             if diag.frac_equal is not None else "")
    checks.add("preprocess_values", False,
               f"{fname} differs from the reference on real MsPacman frames{stats}; consistent with: " + "; ".join(diag.steps),
               " ".join(dict.fromkeys(diag.hints)) or "follow the lesson's steps: mean -> uint8, [1:171], border 150, [1::4, 1::4]")


def _network_checks(checks: CheckList, msgs: list[dict], onnx_files: dict[str, Path]) -> None:
    definitions = _last(msgs, "definitions_done")
    if definitions is not None:
        params = definitions.get("params")
        if params is None:
            checks.add("params", False, "no `params` dict found (the lesson keeps the hyper-parameters there)",
                       "keep the lesson's params dict", severity="note")
        else:
            seq, nact = params.get("sequence_size"), params.get("n_actions")
            ok = seq in (None, 5) and nact in (None, 5)
            checks.add("params", ok, f"params: sequence_size={seq}, n_actions={nact}" +
                       ("" if ok else "; the graded input is 5 stacked frames and the policy has 5 actions"),
                       "keep sequence_size = 5 and n_actions = 5 (the grader feeds [batch, 5, 44, 40] and reads 5 action values)",
                       severity="note" if ok else "warning")
    net = _last(msgs, "network")
    if net is None:
        return
    if not net.get("found"):
        msg = "no network class found: expected class DQN(nn.Module) with __init__(self, n_observations, n_actions)"
        for name in ("network_constructs", "network_forward", "network_batch_independent", "network_onnx_export"):
            checks.add(name, False, msg, "define the lesson's DQN(nn.Module) class")
        return
    name = net["name"]
    if not net.get("constructed"):
        if net.get("cuda"):
            msg, hint = f"{name}(5, 5) works only on a GPU (CUDA), and the grader has none: {net.get('error')}", _CUDA_HINT
        else:
            msg, hint = f"{name}(5, 5) could not be constructed: {net.get('error')}", \
                "DQN(n_observations, n_actions) must build with n_observations=5 stacked frames and n_actions=5"
        for n in ("network_constructs", "network_forward", "network_batch_independent", "network_onnx_export"):
            checks.add(n, False, msg, hint)
        return
    args = ", ".join(str(a) for a in net.get("args", []))
    n_params = net.get("parameters")
    checks.add("network_constructs", True, f"{name}({args}) builds on the CPU" + (f", {n_params:,} parameters" if n_params else ""))
    fwd = net.get("forward")
    if fwd is None:
        err = net.get("forward_error", "unknown error")
        cuda = net.get("forward_cuda")
        msg = (f"{name}.forward works only on a GPU (CUDA): {err}" if cuda else
               f"{name}.forward failed on a [4, 5, 44, 40] float32 batch of real frames: {err}")
        hint = _CUDA_HINT if cuda else "the input is 5 stacked (44, 40) frames; for the lesson's layers the flatten size is 32 * 11 * 10 = 3520"
        for n in ("network_forward", "network_batch_independent", "network_onnx_export"):
            checks.add(n, False, msg, hint)
        return
    shape = fwd.get("shape")
    if shape == [4, 5] and fwd.get("finite"):
        checks.add("network_forward", True, f"forward of [4, 5, 44, 40] gives finite [4, 5] ({fwd.get('dtype')})")
    else:
        what = f"shape {shape} instead of [4, 5]" if shape != [4, 5] else "NaN or infinite values"
        checks.add("network_forward", False, f"forward of [4, 5, 44, 40] gives {what}",
                   "the network maps [batch, 5, 44, 40] to [batch, 5] action values")
    if "batch_diff" in net:
        diff, scale = net["batch_diff"], net.get("batch_scale") or 1.0
        if diff is not None and diff <= 1e-4 * max(1.0, scale):
            checks.add("network_batch_independent", True, f"in eval mode, each sample's output does not depend on the batch (max difference {diff:.2g})")
        else:
            checks.add("network_batch_independent", False,
                       f"in eval mode, a sample's output changes with the other samples of the batch (max difference {diff})",
                       "do not mix samples in forward (no normalisation over the batch axis outside BatchNorm, no x.view(-1) "
                       "across the batch); flatten with torch.flatten(x, start_dim=1)")
    else:
        checks.add("network_batch_independent", False, "not checked: the forward output is not [batch, 5]",
                   "fix network_forward first")
    err = net.get("export_error")
    path = onnx_files.get("network.onnx")
    if err or path is None:
        checks.add("network_onnx_export", False, f"torch.onnx.export failed: {err or 'no file written'}",
                   "use only standard torch layers/ops in forward (no numpy, no Python-side conditionals on values)")
    else:
        ok, msg = _check_onnx_shapes(path)
        checks.add("network_onnx_export", ok, msg, "the exported model must accept [batch, 5, 44, 40] and return [batch, 5]")
    w = [m for m in msgs if m.get("ev") == "weights"]
    loaded = [m for m in w if m.get("loaded")]
    if loaded:
        checks.add("network_weights", True, f"trained weights {loaded[0]['file']} loaded into {name} and exported"
                   + ("" if not loaded[0].get("export_error") else f" (export failed: {loaded[0]['export_error']})"))
    elif w:
        checks.add("network_weights", False, "; ".join(f"{m['file']}: {m.get('error')}" for m in w) +
                   ": the network is untrained (random weights), it is checked for shapes only",
                   "save the trained policy with torch.save(policy.state_dict(), 'policy.pt') and hand it in beside the notebook",
                   severity="warning")
    else:
        checks.add("network_weights", False,
                   "no trained weights (*.pt / *.pth state_dict) or model.onnx beside the notebook: the network is untrained "
                   "(random weights) and is checked for shapes only, not scored by episodes",
                   "hand in torch.save(policy.state_dict(), 'policy.pt') or the exported model.onnx with the notebook")


def _check_onnx_shapes(path: Path) -> tuple[bool, str]:
    try:
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 1
        sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        inp = sess.get_inputs()[0]
        with np.load(FRAMES_FILE) as d:
            frames = d["frames"]
        ref = preprocess_frames(frames[:FRAME_STACK])
        x = np.stack([ref] * 3).astype(np.float32)
        shapes = []
        for b in (1, 3):
            out = sess.run(None, {inp.name: x[:b]})[0]
            shapes.append(list(out.shape))
        if shapes == [[1, MSPACMAN.n_actions], [3, MSPACMAN.n_actions]]:
            return True, f"exported to ONNX ({path.stat().st_size / 2**20:.1f} MB); batches of 1 and 3 give [1, 5] and [3, 5]"
        return False, f"the exported ONNX model gives shapes {shapes} for batches of 1 and 3 instead of [1, 5] and [3, 5]"
    except Exception as exc:  # onnxruntime errors have many types
        return False, f"the exported ONNX model does not run in onnxruntime: {type(exc).__name__}: {str(exc)[:300]}"
