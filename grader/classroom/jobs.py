"""Grading one job of a class: the submission's bytes in, an :class:`~grader.classroom.slots.JobOutcome` out.

Shared by every kind of slot -- ``grade batch``'s local threads and Ray actors, and the site's
pool -- so that all of them grade with the same options, record the same duplicate evidence and
write their outputs the same way: once, by :func:`grader.pipeline.write_outputs`, after every
decision (the evidence's warnings, the caller's ``decide``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from grader.classroom.duplicates import ProbeSet
from grader.classroom.slots import JobOutcome
from grader.pipeline import Decide, Options
from grader.result import GradeResult
from grader.scoring.rubric import Rubric
from grader.submission.bundle import Submission

if TYPE_CHECKING:
    from grader.runtime.engine import Engine


@dataclass(frozen=True)
class JobOptions:
    """Everything a grading slot needs besides the submission; picklable (sent to Ray actors)."""

    rubric: Rubric  # materialised: needs no other file
    options: Options
    probe: ProbeSet | None  # the hidden probe set (grader.classroom.duplicates.hidden_probe_set)
    gradescope: bool = False  # also write Gradescope's results.json (grade batch)


def grade_job(sub: Submission, opts: JobOptions, *, engine: Engine | None, workdir: Path | None = None,
              out: Path | None = None, decide: Decide | None = None) -> JobOutcome:
    """Grade one submission into ``out`` (default ``workdir/report``): local slots, Ray actors and
    the site alike.

    The outcome's ``extra`` holds what duplicate detection compares: the used weights' prints of
    a handed-in model and, for a played model, its actions on the probe states, computed while
    the model is still loaded, before the outputs are written; then the caller's ``decide``."""
    from grader.classroom.exports import gradescope_json
    from grader.pipeline import grade_submission

    if out is not None:
        report = Path(out)
    elif workdir is not None:
        report = Path(workdir) / "report"
    else:
        raise TypeError("grade_job needs the output folder (out) or a work folder (workdir)")
    evidence: dict[str, Any] = {}

    def last_word(result: GradeResult, used_engine: Engine | None) -> None:
        evidence["extra"] = duplicate_evidence(result, sub, opts, used_engine)
        if decide is not None:
            decide(result, used_engine)

    result = grade_submission(sub, rubric=opts.rubric, options=opts.options, out=report, engine=engine,
                              decide=last_word, also_write={"results.json": gradescope_json} if opts.gradescope else None)
    return JobOutcome(result=result, report_dir=report, extra=evidence.get("extra"))


def duplicate_evidence(result: GradeResult, sub: Submission, opts: JobOptions, engine: Engine | None) -> dict | None:
    """The weights' prints and the probe actions of a graded submission (None otherwise); a
    model that fails on the probe states gets a warning in its result."""
    from grader.classroom.duplicates import extra_for, probe_actions
    from grader.errors import EngineFailure
    from grader.submission.weights import weight_prints

    if result.status != "graded":
        return None
    weights = weight_prints(sub.model.data) if sub.model is not None else None
    actions = None
    probe = opts.probe
    task = engine.loaded_task if engine is not None else None
    # every contract of the homework gets the probe states in its own form (MsPacman's raw frames: docs/mspacman.md)
    if result.summary is not None and probe is not None and task is not None:
        try:
            actions = probe_actions(engine, probe, task)
        except EngineFailure as exc:
            result.warnings.append(f"duplicate check: the model failed on the probe states ({exc})")
    return extra_for(weights, actions, probe.id if probe is not None else "")
