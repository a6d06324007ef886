"""One score: how a submission's points are composed from the rubric.

:func:`compose` is the only place points are added up. A submission earns

* for each notebook check the rubric scores (``[notebook.points]``): its points when the check
  passed, else 0 (a check that never ran earns 0);
* for the episodes: ``scoring.points * clip((statistic - zero) / (full - zero), 0, 1)``, 0 when
  no model was played;
* when the channel knows when the work was handed in and the rubric has a ``[deadline]``: the
  ``late`` part, ``-late_penalty_per_day * started days late * maximum`` (0 when on time; all the
  points earned when later than ``late_max_days``; never below 0 in total). Its maximum is 0.

Only the parts the rubric declares (``[parts]``: the model, the notebook) are scored; a part that
was not handed in earns 0 and says "not handed in". The maximum is always the rubric's maximum
(:attr:`Rubric.max_points`: required and optional parts; extra credit comes on top), whatever
happened, and an invalid submission earns 0 of it. The band describes the part the rubric names
(``parts.bands``: the model's episodes by default, so a band says what the agent does). Every
output (terminal, result.json, report, grades.csv, Gradescope, class page, site) shows these
numbers: 2 decimals for people, full precision in JSON.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import TYPE_CHECKING

from grader.result import CheckResult, ScorePart, Summary

if TYPE_CHECKING:
    from grader.result import Late
    from grader.scoring.rubric import Rubric

EPISODES_PART = "episodes"
LATE_PART = "late"
NOT_HANDED_IN = "not handed in"


def compose(rubric: Rubric, *, checks: Sequence[CheckResult], summary: Summary | None, invalid: bool,
            late: Late | None = None, handed_in: Collection[str] = ("model", "notebook")) -> list[ScorePart]:
    """The scored parts of a submission, in the rubric's order: notebook checks, then episodes, then
    the late penalty when ``late`` is given (:func:`grader.scoring.deadline.lateness`).

    ``handed_in`` names the parts the student handed in (``model``: a model file or trained
    weights; ``notebook``); a declared part that is missing earns 0, "not handed in".
    """
    parts = []
    if rubric.part_use("notebook") is not None:
        parts += _notebook_parts(rubric, checks, invalid=invalid, handed_in="notebook" in handed_in)
    if rubric.part_use("model") is not None:
        parts.append(_episodes_part(rubric, summary, invalid=invalid, handed_in="model" in handed_in))
    if late is not None:
        from grader.scoring.deadline import late_points

        earned, maximum = total(parts)
        parts.append(ScorePart(name=LATE_PART, kind="late", points=late_points(late, earned=earned, maximum=maximum),
                               max_points=0.0, detail=late.describe()))
    return parts


def _notebook_parts(rubric: Rubric, checks: Sequence[CheckResult], *, invalid: bool, handed_in: bool) -> list[ScorePart]:
    by_name = {c.name: c for c in checks}
    extra = rubric.part_use("notebook") == "extra"
    parts = []
    for name, points in rubric.notebook.points.items():
        check = by_name.get(name)
        earned = float(points) if (check is not None and check.passed and not invalid) else 0.0
        if not handed_in:
            detail = NOT_HANDED_IN
        else:
            detail = "not run" if check is None else ("passed" if check.passed else "failed")
        parts.append(ScorePart(name=name, kind="notebook", points=earned, max_points=float(points), detail=detail,
                               extra=extra))
    return parts


def _episodes_part(rubric: Rubric, summary: Summary | None, *, invalid: bool, handed_in: bool) -> ScorePart:
    episode_points, detail = 0.0, ("no model was played" if handed_in else NOT_HANDED_IN)
    if summary is not None:
        value = getattr(summary, rubric.scoring.statistic)
        if value is not None:
            zero, full = rubric.thresholds()
            episode_points = 0.0 if invalid else rubric.points_for(value)
            detail = f"{rubric.scoring.statistic} {value:.2f} (0 points at {zero:g}, full at {full:g})"
    return ScorePart(name=EPISODES_PART, kind="episodes", points=episode_points,
                     max_points=float(rubric.scoring.points), detail=detail,
                     extra=rubric.part_use("model") == "extra")


def total(parts: Sequence[ScorePart]) -> tuple[float, float]:
    """(points, maximum) of the parts; extra credit adds to the points, never to the maximum."""
    return sum(p.points for p in parts), sum(p.max_points for p in parts if not p.extra)


def band_of_parts(rubric: Rubric, parts: Sequence[ScorePart]) -> str | None:
    """The band of a graded submission: the fraction of the part the rubric's bands describe
    (``parts.bands``: the episodes by default, else the total)."""
    if rubric.part_use("model") is not None and (rubric.parts is None or rubric.parts.bands == "model"):
        described = [p for p in parts if p.kind == "episodes"]
        return band(rubric, sum(p.points for p in described), sum(p.max_points for p in described))
    points, maximum = total(parts)
    return band(rubric, points, maximum)


def band(rubric: Rubric, points: float, maximum: float) -> str | None:
    """The rubric's band for a fraction ``points / maximum`` of what the bands describe."""
    fraction = points / maximum if maximum > 0 else 0.0
    for b in sorted(rubric.bands, key=lambda b: -b.min_fraction):
        if fraction >= b.min_fraction - 1e-9:
            return b.name
    return None


def fmt_points(points: float | None, maximum: float | None) -> str:
    """``"7.25 / 10"``: what people see (2 decimals, trailing zeros dropped)."""
    def num(v: float | None) -> str:
        return "—" if v is None else f"{v:.2f}".rstrip("0").rstrip(".")

    return f"{num(points)} / {num(maximum)}"
