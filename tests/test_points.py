"""Unit tests of the score composition (grader.scoring.points) against values worked out by hand.

The rubric below: episodes worth 10 points, 0 at a mean return of 0 and full marks at 200; three
notebook checks worth 1, 1 and 2 points; bands at 100%, 50% and 1% of the episodes' points. A
submission's parts are the notebook checks, then the episodes, then (when the hand-in time is
known) the late part, whose maximum is 0 and which never takes the total below 0.
"""

from __future__ import annotations

import pytest

from grader.result import CheckResult, Late, Summary
from grader.scoring.points import (
    EPISODES_PART,
    NOT_HANDED_IN,
    band,
    band_of_parts,
    compose,
    fmt_points,
    total,
)
from grader.scoring.rubric import load_rubric

RUBRIC = """
id = "hand-made"
task = "lunarlander"
title = "a rubric for the unit tests"
episodes = 4
selfcheck_episodes = 2

[seeds]
public = "0-9"
grading = "100-109"

[scoring]
statistic = "mean"
zero = 0.0
full = 200.0
points = 10

[parts]
model = "required"
notebook = "{notebook}"
bands = "{bands}"

[[bands]]
name = "solved"
min_fraction = 1.0
[[bands]]
name = "lands often"
min_fraction = 0.5
[[bands]]
name = "learning"
min_fraction = 0.01
[[bands]]
name = "not yet"
min_fraction = 0.0

[notebook.points]
cells_parse = 1
actor_input = 1
actor_output = 2
"""


@pytest.fixture
def rubric_for(tmp_path):
    def make(*, notebook: str = "optional", bands: str = "model"):
        path = tmp_path / f"rubric-{notebook}-{bands}.toml"
        path.write_text(RUBRIC.format(notebook=notebook, bands=bands))
        return load_rubric(path)

    return make


def summary(mean: float) -> Summary:
    return Summary(n=4, mean=mean, std=0.0, median=mean, iqm=mean, ci_low=mean, ci_high=mean, success_rate=None,
                   min=mean, max=mean)


def checks(**passed: bool) -> list[CheckResult]:
    return [CheckResult(name=name, passed=ok, message="ok" if ok else "failed") for name, ok in passed.items()]


def by_name(parts):
    return {p.name: p for p in parts}


# --- the parts -------------------------------------------------------------------------------------
@pytest.mark.parametrize("mean, expected", [
    (0.0, 0.0),  # at zero: nothing
    (50.0, 2.5),  # a quarter of the way from 0 to 200: a quarter of 10
    (150.0, 7.5),
    (200.0, 10.0),  # at full: everything
    (350.0, 10.0),  # above full: clipped
    (-80.0, 0.0),  # below zero: clipped
])
def test_the_episodes_earn_their_share_of_the_way_from_zero_to_full(rubric_for, mean, expected):
    parts = by_name(compose(rubric_for(), checks=[], summary=summary(mean), invalid=False))
    assert parts[EPISODES_PART].points == pytest.approx(expected)
    assert parts[EPISODES_PART].max_points == 10.0


def test_each_notebook_check_earns_its_points_when_it_passed(rubric_for):
    parts = compose(rubric_for(), checks=checks(cells_parse=True, actor_input=False), summary=summary(100.0),
                    invalid=False)
    got = by_name(parts)
    assert [p.name for p in parts] == ["cells_parse", "actor_input", "actor_output", EPISODES_PART]  # rubric order
    assert (got["cells_parse"].points, got["cells_parse"].detail) == (1.0, "passed")
    assert (got["actor_input"].points, got["actor_input"].detail) == (0.0, "failed")
    assert (got["actor_output"].points, got["actor_output"].detail) == (0.0, "not run")  # never ran: 0
    assert total(parts) == (1.0 + 5.0, 1 + 1 + 2 + 10)  # 1 notebook point + half the episodes, out of 14


def test_an_invalid_submission_earns_nothing_of_the_same_maximum(rubric_for):
    parts = compose(rubric_for(), checks=checks(cells_parse=True, actor_input=True, actor_output=True),
                    summary=summary(200.0), invalid=True)
    assert total(parts) == (0.0, 14.0)


def test_a_part_not_handed_in_earns_nothing_and_says_so(rubric_for):
    parts = by_name(compose(rubric_for(), checks=[], summary=summary(200.0), invalid=False, handed_in={"model"}))
    assert parts["cells_parse"].detail == NOT_HANDED_IN and parts["cells_parse"].points == 0.0
    assert parts[EPISODES_PART].points == 10.0
    no_model = by_name(compose(rubric_for(), checks=[], summary=None, invalid=False, handed_in={"notebook"}))
    assert (no_model[EPISODES_PART].points, no_model[EPISODES_PART].detail) == (0.0, NOT_HANDED_IN)


def test_extra_credit_adds_to_the_points_not_to_the_maximum(rubric_for):
    parts = compose(rubric_for(notebook="extra"), checks=checks(cells_parse=True, actor_input=True, actor_output=True),
                    summary=summary(100.0), invalid=False)
    assert total(parts) == (4.0 + 5.0, 10.0)


# --- the late part -----------------------------------------------------------------------------------
def late(*, days: int, fraction: float, over_limit: bool = False) -> Late:
    return Late(submitted="2026-01-03T10:00:00+00:00", due="2026-01-01T23:59:00+00:00", source="test",
                days_late=days, fraction=fraction, over_limit=over_limit, max_days=7)


@pytest.mark.parametrize("the_late, expected", [
    (late(days=0, fraction=0.0), 0.0),  # on time: nothing lost
    (late(days=2, fraction=0.2), -2.8),  # 20% of the maximum 14
    (late(days=5, fraction=0.5), -6.0),  # 50% of 14 is 7, but only 6 were earned: the total stays at 0
    (late(days=9, fraction=0.9, over_limit=True), -6.0),  # past late_max_days: everything earned
])
def test_the_late_part_takes_a_share_of_the_maximum_never_more_than_was_earned(rubric_for, the_late, expected):
    # earned: cells_parse (1) + half the episodes (5) = 6 of 14
    parts = compose(rubric_for(), checks=checks(cells_parse=True), summary=summary(100.0), invalid=False,
                    late=the_late)
    late_part = parts[-1]
    assert (late_part.kind, late_part.max_points) == ("late", 0.0)
    assert late_part.points == pytest.approx(expected)
    points, maximum = total(parts)
    assert maximum == 14.0 and points == pytest.approx(6.0 + expected) and points >= 0


# --- bands ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("points, expected", [
    (10.0, "solved"), (5.0, "lands often"), (4.99, "learning"), (0.1, "learning"), (0.09, "not yet"), (0.0, "not yet"),
])
def test_a_band_is_the_highest_whose_fraction_is_reached(rubric_for, points, expected):
    assert band(rubric_for(), points, 10.0) == expected


def test_bands_describe_the_episodes_or_the_total_as_the_rubric_says(rubric_for):
    all_checks = checks(cells_parse=True, actor_input=True, actor_output=True)
    on_model = rubric_for(bands="model")
    parts = compose(on_model, checks=all_checks, summary=summary(80.0), invalid=False)  # 4 of 10 episode points
    assert band_of_parts(on_model, parts) == "learning"  # 40% of the episodes, whatever the notebook earned
    on_total = rubric_for(bands="total")
    parts = compose(on_total, checks=all_checks, summary=summary(80.0), invalid=False)  # (4 + 4) / 14 = 57%
    assert band_of_parts(on_total, parts) == "lands often"


@pytest.mark.parametrize("points, maximum, text", [
    (7.25, 10.0, "7.25 / 10"), (7.0, 14.0, "7 / 14"), (2.8049, 14.0, "2.8 / 14"), (None, 10.0, "— / 10"),
])
def test_points_are_shown_with_two_decimals_at_most(points, maximum, text):
    assert fmt_points(points, maximum) == text
