"""The report's diagnostics plots, as inline SVG (:mod:`grader.outputs.svgplot`), drawn from numbers only.

* :func:`outcomes_svg` -- one bar per outcome (episodes that ended that way);
* :func:`actions_svg` -- how often each action was chosen, overall and per episode;
* :func:`returns_by_outcome_svg` -- the return of every episode, grouped by its outcome;
* :func:`lives_svg` -- the score over the median episode, with the moments its lives were lost
  and its stretches without scoring (tasks with lives only).

Episodes are numbered (their place in ``result.episodes``), never named by seed. All text in the
plots is ours: outcome and action labels come from the task plug-ins, numbers from the result;
:mod:`grader.outputs.svgplot` escapes it all the same. Each function returns ``""`` when it has nothing
to show.
"""

from __future__ import annotations

from grader.outputs.svgplot import BAD, GOOD, PALETTE, Canvas, Scale, jitter, nice_ticks, number
from grader.result import Diagnostics

WIDTH = 760
RIGHT = WIDTH - 24
ROW = 26  # pixels per category row


def _left(labels: list[str]) -> float:
    """The left margin that fits the longest category label (about 6.3 px a character at 11 px)."""
    return min(340.0, 24 + 6.3 * max((len(s) for s in labels), default=4))


def _integers(scale: Scale) -> list[float]:
    return [t for t in scale.ticks() if t == int(t) and t >= 0]


def outcomes_svg(diag: Diagnostics) -> str:
    rows = [o for o in diag.outcomes if o.count] or diag.outcomes
    if not rows:
        return ""
    labels = [o.label for o in rows]
    left, top = _left(labels), 10
    bottom = top + ROW * len(rows)
    c = Canvas(WIDTH, bottom + 40, label="how the episodes ended")
    most = max(o.count for o in rows) or 1
    x = Scale(0, most * 1.18, left, RIGHT)
    ys = [top + ROW * (k + 0.5) for k in range(len(rows))]
    for o, y in zip(rows, ys):
        c.rect(x(0), y - 8, x(o.count) - x(0), 16, fill=GOOD if o.success else BAD)
        c.text(x(o.count) + 4, y + 4, f"{o.count} ({100 * o.share:.0f}%)", font_size=10)
    c.categories(labels, ys, left - 6)
    c.x_axis(x, bottom, title="episodes", ticks=_integers(x))
    return c.svg()


def actions_svg(diag: Diagnostics) -> str:
    names, shares = diag.actions.names, diag.actions.shares
    if not sum(diag.actions.counts):
        return ""
    eps = diag.episodes
    colours = [PALETTE[i % len(PALETTE)] for i in range(len(names))]
    left, top = max(_left(names), 90.0), 10
    bottom = top + ROW * len(names)
    per_episode = len(eps) > 1
    c = Canvas(WIDTH, bottom + (250 if per_episode else 40), label="how often each action was chosen")
    x = Scale(0, 112, left, RIGHT)
    ys = [top + ROW * (k + 0.5) for k in range(len(names))]
    for share, y, colour in zip(shares, ys, colours):
        c.rect(x(0), y - 8, x(100 * share) - x(0), 16, fill=colour)
        c.text(x(100 * share) + 4, y + 4, f"{100 * share:.0f}%", font_size=10)
    c.categories(names, ys, left - 6)
    c.x_axis(x, bottom, title="share of all decisions (%)", ticks=[t for t in x.ticks() if t <= 100])
    if per_episode:  # one filled staircase per action, stacked to 100% per episode (numbered 1..n)
        top2 = bottom + 52
        ex = Scale(0.5, len(eps) + 0.5, left, RIGHT)
        ey = Scale(0, 100, top2 + 130, top2)
        base = [0.0] * len(eps)
        for a, colour in enumerate(colours):
            part = [100 * e.actions[a] / e.decisions if e.decisions and a < len(e.actions) else 0.0 for e in eps]
            high = [b + q for b, q in zip(base, part)]
            upper = [(ex(k + 0.5 + side), ey(h)) for k, h in enumerate(high) for side in (0, 1)]
            lower = [(ex(k + 0.5 + side), ey(b)) for k, b in reversed(list(enumerate(base))) for side in (1, 0)]
            c.path(upper + lower, close=True, fill=colour)
            base = high
        c.x_axis(ex, ey.a, title="episode", ticks=[t for t in nice_ticks(1, len(eps)) if t == int(t)])
        c.y_axis(ey, ex.a, title="% per episode", ticks=[0, 50, 100])
        c.legend(list(zip(names, colours)), ex.a, ey.a + 56)
    return c.svg()


def returns_by_outcome_svg(diag: Diagnostics) -> str:
    rows = [o for o in diag.outcomes if o.count]
    if not rows:
        return ""
    labels = [o.label + (f" (mean {o.mean_return:,.0f})" if o.mean_return is not None else "") for o in rows]
    left, top = _left(labels), 10
    bottom = top + 34 * len(rows)
    c = Canvas(WIDTH, bottom + 40, label="episode returns by outcome")
    x = Scale.over([e.return_ for e in diag.episodes], left, RIGHT)
    ys = [top + 34 * (k + 0.5) for k in range(len(rows))]
    for o, y in zip(rows, ys):
        values = [e.return_ for e in diag.episodes if e.outcome == o.key]
        for v, j in zip(values, jitter(len(values), 20)):
            c.circle(x(v), y + j, 2.2, fill=GOOD if o.success else BAD, fill_opacity=0.7)
        if o.mean_return is not None:
            c.line(x(o.mean_return), y - 11, x(o.mean_return), y + 11, stroke="#34495e", stroke_width=2.5)
    c.categories(labels, ys, left - 6)
    c.x_axis(x, bottom, title="episode return (bar: the mean)")
    return c.svg()


def median_episode(diag: Diagnostics):
    """The episode of median return among those with lives (ties: the lower number), or None."""
    eps = sorted((e for e in diag.episodes if e.lives), key=lambda e: (e.return_, e.episode))
    return eps[len(eps) // 2] if eps else None


def lives_svg(diag: Diagnostics, length: int | None) -> str:
    e = median_episode(diag)
    if e is None:
        return ""
    end = max(length or 0, e.lives[-1].step)
    xs = [0] + [x.step for x in e.lives] + ([end] if end > e.lives[-1].step else [])
    ys = [0.0] + [x.score for x in e.lives] + ([e.return_] if end > e.lives[-1].step else [])
    left, top, bottom = 64.0, 34.0, 190.0
    c = Canvas(WIDTH, bottom + 44, label="score and lives over the median episode")
    x = Scale(0, end or 1, left, RIGHT)
    y = Scale(0, (max(ys) or 1.0) * 1.05, bottom, top)
    for first, last, _n in e.droughts:
        c.rect(x(first), top, x(last) - x(first), bottom - top, fill="#f5b041", fill_opacity=0.25)
    c.path([(x(a), y(b)) for a, b in zip(xs, ys)], stroke="#2471a3", stroke_width=1.6)
    for k, loss in enumerate(e.lives, 1):
        c.line(x(loss.step), top, x(loss.step), bottom, stroke=BAD, stroke_dasharray="4,3")
        gained = e.life_scores[k - 1] if k - 1 < len(e.life_scores) else None
        c.text(x(loss.step) - 3, top - 16, f"life {k} lost", anchor="end", fill=BAD, font_size=10)
        if gained is not None:
            c.text(x(loss.step) - 3, top - 4, f"+{gained:,.0f}", anchor="end", fill=BAD, font_size=10)
    c.y_axis(y, left, title="score")
    c.x_axis(x, bottom, fmt=lambda t: number(int(t)) if t == int(t) else number(t),
             title=f"env steps of episode {e.episode} (median return {e.return_:,.0f}); shaded: "
                   "stretches of 100+ decisions without scoring")
    return c.svg()
