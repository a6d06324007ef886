"""The Python API: :func:`grade` and :func:`check` on a path (a file or a student's folder).

Both gather the bundle with the one rule (:func:`grader.submission.bundle.gather`), read it, and hand it to
the one pipeline (:func:`grader.pipeline.grade_submission`). Neither raises for a bad submission:
it comes back as a :class:`~grader.result.GradeResult` with status ``invalid``. They raise
:class:`~grader.errors.SetupError` (e.g. :class:`~grader.scoring.rubric.RubricError`) for the
instructor's set-up only.
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from grader.limits import DEFAULT_WORKERS
from grader.pipeline import Options, Progress, grade_submission, no_progress, reproduce_command
from grader.result import GradeResult, Late
from grader.scoring.rubric import Rubric, load_rubric
from grader.submission.bundle import gather, read_bundle

if TYPE_CHECKING:
    from grader.runtime.engine import Engine


def default_out_dir(submission: Path) -> Path:
    """``model.onnx.grading/`` beside a file; ``alice.grading/`` beside a folder."""
    submission = Path(submission)
    if submission.is_dir():
        resolved = submission.resolve()
        return resolved.with_name(resolved.name + ".grading")
    return submission.with_name(submission.name + ".grading")


def grade(
    submission: str | Path,
    *,
    task: str | None = None,
    rubric: Rubric | str | Path | None = None,
    episodes: int | None = None,
    seeds: Sequence[int] | None = None,
    out: str | Path | None = None,
    workers: int = DEFAULT_WORKERS,
    video: bool = True,
    report: bool = True,
    device: str = "cpu",
    selfcheck: bool = False,
    write: bool = True,
    sandbox: str | None = None,
    engine: Engine | None = None,
    progress: Progress = no_progress,
    display_name: str | None = None,
    submitted: _dt.datetime | str | None = None,
    student: str | None = None,
) -> GradeResult:
    """Grade a model, a notebook or a student's folder; write ``result.json``, the report and the
    videos into ``out`` (default ``SUBMISSION.grading/`` beside it; nothing with ``write=False``).

    ``submitted`` (an aware datetime or an ISO 8601 text) is when the work was handed in: with a
    rubric ``[deadline]`` the score gets its ``late`` part (``student`` finds an extension)."""
    path = Path(submission)
    if isinstance(rubric, (str, Path)):
        rubric = load_rubric(rubric, selfcheck=selfcheck)
    bundle, problems = gather(path)
    sub = read_bundle(bundle)
    if display_name:
        sub = replace(sub, label=display_name)
    options = Options(seeds=tuple(seeds) if seeds is not None else None, episodes=episodes, selfcheck=selfcheck,
                      video=video and write, report=report and write, workers=workers, device=device, sandbox=sandbox,
                      task=task, command=reproduce_command(path, selfcheck=selfcheck, task=task,
                                                           rubric_path=rubric.path if rubric is not None else None,
                                                           seeds=seeds, episodes=episodes),
                      late=_late(rubric, submitted, student))
    if out is None and write:
        out = default_out_dir(path)
    return grade_submission(sub, rubric=rubric, options=options, out=out if write else None, engine=engine,
                            progress=progress, warnings=[str(m) for m in problems])


def _late(rubric: Rubric | None, submitted: _dt.datetime | str | None, student: str | None) -> Late | None:
    """The submission's lateness, when the rubric has a deadline and the hand-in time is known."""
    if rubric is None or rubric.deadline is None or submitted is None:
        return None
    from grader.scoring.deadline import deadlines_of, parse_iso

    deadlines = deadlines_of(rubric)
    if deadlines is None:
        return None

    if isinstance(submitted, str):
        submitted = parse_iso(submitted, where="--submitted", default_tz=rubric.deadline.local_tz())
    return deadlines.late(student or "", submitted, source="given")


def check(submission: str | Path, *, rubric: Rubric | str | Path | None = None, task: str | None = None,
          out: str | Path | None = None, **kwargs: Any) -> GradeResult:
    """The student's self-check: the same checks, a few episodes on the public seeds.

    Writes nothing unless ``out`` is given (then ``result.json`` and the report, no videos).
    """
    kwargs.setdefault("video", False)
    return grade(submission, rubric=rubric, task=task, selfcheck=True, out=out, write=out is not None, **kwargs)
