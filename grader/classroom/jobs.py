"""Grading one job of a class: the submission's bytes in, an :class:`~grader.classroom.slots.JobOutcome` out.

Shared by every kind of slot -- ``grade batch``'s local threads and Ray actors, and the site's
pool -- so that all of them grade with the same options and record the same duplicate evidence.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from grader.classroom.slots import JobOutcome
from grader.pipeline import Options
from grader.result import GradeResult
from grader.scoring.rubric import Rubric
from grader.submission.bundle import Submission


@dataclass(frozen=True)
class JobOptions:
    """Everything a grading slot needs besides the submission; picklable (sent to Ray actors)."""

    rubric: Rubric  # materialised: needs no other file
    options: Options
    probe_states: np.ndarray | None
    probe_id: str = ""



def grade_job(sub: Submission, opts: JobOptions, *, engine: Any, workdir: Path) -> JobOutcome:
    """Grade one submission into ``workdir/report`` (local slots and Ray actors alike).

    The outcome's ``extra`` holds what duplicate detection compares: the weights' fingerprint of a
    handed-in model and, for a played model, its actions on the probe states."""
    from grader.pipeline import grade_submission

    report = workdir / "report"
    result = grade_submission(sub, rubric=opts.rubric, options=opts.options, out=report, engine=engine)
    return JobOutcome(result=result, report_dir=report, extra=duplicate_evidence(result, sub, opts, engine))


def duplicate_evidence(result: GradeResult, sub: Submission, opts: JobOptions, engine: Any) -> dict | None:
    from grader.classroom.duplicates import extra_for, weights_fingerprint
    from grader.errors import EngineFailure

    if result.status != "graded":
        return None
    weights = weights_fingerprint(sub.model.data) if sub.model is not None else None
    actions = None
    if result.summary is not None and opts.probe_states is not None and engine is not None:
        try:
            actions = np.asarray(engine.actions(opts.probe_states), dtype=np.uint8)
        except EngineFailure as exc:
            result.warnings.append(f"duplicate check: the model failed on the probe states ({exc})")
    return extra_for(weights, actions, opts.probe_id)


