"""Judging one sandbox run as a whole: ``sandbox_isolation``, ``sandbox``, ``definitions_run``, logs.

Task-independent: what the limits stopped, what the report channel looked like, which
statements failed. Works on :class:`grader.notebook.sandbox.SandboxRun` only (validated messages).
"""

from __future__ import annotations

from grader.notebook.common import check
from grader.notebook.protocol import (
    Crash,
    DefinitionsDone,
    Done,
    Network,
    Preprocess,
    Report,
    Start,
    Stmt,
    StmtError,
    StmtTimeout,
    Stubbed,
    Tampered,
    Weights,
)
from grader.notebook.sandbox import Limits, SandboxRun
from grader.result import CheckResult

SANDBOX_HINT = ("remove training loops, os._exit / exit calls, huge prints and file writes from the top level: "
                "the grader runs only imports, constants, functions and classes")


def logs(run: SandboxRun) -> dict[str, bytes]:
    """What the notebook printed (each capped; a note says how much was cut)."""
    out = {}
    for name, data, total in (("notebook_stdout.txt", run.stdout, run.stdout_total),
                              ("notebook_stderr.txt", run.stderr, run.stderr_total)):
        if total:
            tail = b"" if total <= len(data) else f"\n[... {total - len(data)} more bytes not kept]\n".encode()
            out[name] = data + tail
    return out


def _where(report: Report) -> str:
    """Where the child was when it stopped: a statement of a cell, or a probe."""
    for m in reversed(report.messages):
        if isinstance(m, Stmt):
            return f"while running cell {m.cell} line {m.line}"
        if isinstance(m, DefinitionsDone):
            return "while calling the preprocessing function on a frame"
        if isinstance(m, (Preprocess, Network, Weights)):
            return "while building / running / exporting the network"
    return "before running any cell"


def death_reason(run: SandboxRun, limits: Limits) -> str | None:
    """Why the child did not finish its report, in words; None when it did."""
    report = run.report
    if run.launch_error:
        return run.launch_error
    if report.last(Done) and not (run.process_limit_hit or run.quota_hit or run.flooded or run.timed_out):
        return None
    where = _where(report)
    if run.process_limit_hit:
        return (f"the notebook's code tried to start more than {run.process_limit} processes {where} "
                "(a fork bomb?); the sandbox was stopped")
    if run.quota_hit:
        return (f"the notebook's code wrote more than its disk quota of {limits.scratch_mb} MB {where}; it was stopped "
                "(files written by the notebook's definitions count against the quota)")
    if run.flooded:
        return f"the notebook's code printed more than {run.stdout_total + run.stderr_total >> 20} MB of output {where}; it was stopped"
    if run.models_overflow:
        return f"more than {2 * limits.model_bytes >> 20} MB of exported models were sent {where}; the sandbox was stopped"
    if run.timed_out:
        return f"the notebook's code did not finish within {run.seconds:.0f} s {where} (an endless loop, or training started at import?)"
    sig = run.signal_name
    if sig == "SIGXFSZ":
        return f"the notebook's code tried to write a file larger than the limit {where}"
    if sig == "SIGXCPU":
        return f"the notebook's code used more CPU time than allowed {where}"
    if sig:
        return f"the sandboxed process was killed by {sig} {where} (memory or process limit?)"
    if not report.last(Start):
        return "the sandbox produced no report (the interpreter could not start, or the code closed the report channel)"
    crash = report.last(Crash)
    if crash:
        return f"the grader's probe failed after the notebook's code ran: {crash.error} (did the notebook replace a builtin or a library function?)"
    return f"the process ended by itself {where} (exit code {run.returncode}): the notebook's code called os._exit() or closed the grader's channel"


def isolation_check(run: SandboxRun, limits: Limits) -> CheckResult:
    if run.mode == "bwrap":
        return check("sandbox_isolation", True,
                     f"bubblewrap sandbox: no network, only this submission's copy visible, uid 65534; limits: memory "
                     f"{limits.memory_mb} MB, files {limits.file_size_mb} MB, scratch {run.scratch}, {run.limits_note}, "
                     f"wall {limits.timeout_s:g} s", severity="note")
    return check("sandbox_isolation", False,
                 "weaker sandbox: " + "; ".join(run.warnings) + f"; scratch {run.scratch}; {run.limits_note}",
                 "install bubblewrap (apt-get install -y bubblewrap) on the grading machine", severity="warning")


def sandbox_check(run: SandboxRun, limits: Limits) -> CheckResult:
    """``sandbox`` (error): the code stayed within the limits and left the report channel alone."""
    report = run.report
    problems = []
    death = death_reason(run, limits)
    if death:
        problems.append(death)
    out = run.stdout_total + run.stderr_total
    if out > limits.output_bytes and not run.flooded:
        problems.append(f"the notebook's code printed {out / 2**20:.1f} MB at definition time (more than "
                        f"{limits.output_bytes >> 20} MB); definitions should print nothing")
    tampered = report.last(Tampered)
    if tampered:
        problems.append("the notebook's code replaced built-in functions or library functions ("
                        + ", ".join(tampered.names) + "); they were restored before the checks")
    if report.forged:
        problems.append("the grader's report channel received messages the grader did not send ("
                        + "; ".join(dict.fromkeys(report.forged)) + "): the probe results were not used")
    if report.garbage:
        problems.append(f"the grader's report channel received {report.garbage} invalid lines (the notebook wrote to "
                        "an inherited file descriptor)")
    if run.blobs.problems:
        problems.append("the model channel received " + "; ".join(run.blobs.problems))
    if problems:
        return check("sandbox", False, "; ".join(problems), SANDBOX_HINT, severity="error")
    return check("sandbox", True, f"the notebook's definitions ran in {run.seconds:.1f} s within the sandbox limits",
                 severity="error")


def _explain(error: str, limits: Limits) -> str:
    if "File too large" in error:
        return error + (f" (files written by the notebook are limited to {limits.file_size_mb} MB each; the notebook "
                        "must not write big files at import)")
    if "No space left on device" in error or "Disk quota exceeded" in error:
        return error + (f" (the notebook's scratch space is limited by a disk quota of {limits.scratch_mb} MB; the "
                        "notebook must not write big files at import)")
    if "Network is unreachable" in error or "Temporary failure in name resolution" in error:
        return error + " (the grader has no network: download nothing at import time)"
    if "No such file or directory" in error or "Permission denied" in error:
        return error + " (the grader sees only a copy of this notebook's definitions and its weight files)"
    return error


def definitions_check(run: SandboxRun, limits: Limits) -> CheckResult:
    """``definitions_run``: the kept statements ran without exception (per-statement messages)."""
    report = run.report
    errors = [m for m in report.messages if isinstance(m, (StmtError, StmtTimeout))]
    stub = report.last(Stubbed)
    stub_note = f" (modules not installed in the grader were replaced by stand-ins: {', '.join(stub.modules)})" if stub else ""
    if not report.last(DefinitionsDone) or not report.trusted:
        reason = death_reason(run, limits) or ("the report channel was forged" if not report.trusted else "unknown reason")
        return check("definitions_run", False, "the definitions did not finish: " + reason,
                     "make the notebook's imports, functions and classes run without side effects")
    if not errors:
        return check("definitions_run", True, "imports, constants, functions and classes ran without error" + stub_note)
    parts = []
    for m in errors[:5]:
        if isinstance(m, StmtTimeout):
            parts.append(f"cell {m.cell} line {m.line}: did not finish within {m.seconds:g} s (an endless loop at definition time?)")
        else:
            parts.append(f"cell {m.cell} line {m.line}: {_explain(m.error, limits)}")
    return check("definitions_run", False, "; ".join(parts) + stub_note,
                 "run the notebook top to bottom in a fresh kernel (Kernel > Restart & Run All) and fix the first error")
