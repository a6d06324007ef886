"""One score: how a submission's points are composed from the rubric.

:func:`compose` is the only place points are added up. A submission earns

* for each notebook check the rubric scores (``[notebook.points]``): its points when the check
  passed, else 0 (a check that never ran earns 0);
* for the episodes: ``scoring.points * clip((statistic - zero) / (full - zero), 0, 1)``, 0 when
  no model was played;
* when the channel knows when the work was handed in and the rubric has a ``[deadline]``: the
  ``late`` part, ``-late_penalty_per_day * started days late * maximum`` (0 when on time; all the
  points earned when later than ``late_max_days``; never below 0 in total). Its maximum is 0.

The maximum is always the rubric's maximum (:attr:`Rubric.max_points`), whatever happened, and an
invalid submission earns 0 of it. Every output (terminal, result.json, report, grades.csv,
Gradescope, class page, site) shows these numbers: 2 decimals for people, full precision in JSON.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from grader.result import CheckResult, ScorePart, Summary

if TYPE_CHECKING:
    from grader.result import Late
    from grader.scoring.rubric import Rubric

EPISODES_PART = "episodes"
LATE_PART = "late"


def compose(rubric: Rubric, *, checks: Sequence[CheckResult], summary: Summary | None, invalid: bool,
            late: Late | None = None) -> list[ScorePart]:
    """The scored parts of a submission, in the rubric's order: notebook checks, then episodes, then
    the late penalty when ``late`` is given (:func:`grader.scoring.deadline.lateness`)."""
    by_name = {c.name: c for c in checks}
    parts = []
    for name, points in rubric.notebook.points.items():
        check = by_name.get(name)
        earned = float(points) if (check is not None and check.passed and not invalid) else 0.0
        detail = "not run" if check is None else ("passed" if check.passed else "failed")
        parts.append(ScorePart(name=name, kind="notebook", points=earned, max_points=float(points), detail=detail))
    episode_points, detail = 0.0, "no model was played"
    if summary is not None:
        value = getattr(summary, rubric.scoring.statistic)
        if value is not None:
            zero, full = rubric.thresholds()
            episode_points = 0.0 if invalid else rubric.points_for(value)
            detail = f"{rubric.scoring.statistic} {value:.2f} (0 points at {zero:g}, full at {full:g})"
    parts.append(ScorePart(name=EPISODES_PART, kind="episodes", points=episode_points,
                           max_points=float(rubric.scoring.points), detail=detail))
    if late is not None:
        from grader.scoring.deadline import late_points

        earned, maximum = total(parts)
        parts.append(ScorePart(name=LATE_PART, kind="late", points=late_points(late, earned=earned, maximum=maximum),
                               max_points=0.0, detail=late.describe()))
    return parts


def late_part(parts: Sequence[ScorePart]) -> ScorePart | None:
    """The late part of a composed score, if any."""
    return next((p for p in parts if p.kind == "late"), None)


def total(parts: Sequence[ScorePart]) -> tuple[float, float]:
    """(points, maximum) of the parts."""
    return sum(p.points for p in parts), sum(p.max_points for p in parts)


def band(rubric: Rubric, points: float, maximum: float) -> str | None:
    """The rubric's band for a fraction ``points / maximum`` of the marks."""
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
