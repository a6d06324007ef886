"""The report's diagnostics plots, as inline SVG (matplotlib, Agg), drawn from numbers only.

* :func:`outcomes_svg` -- one bar per outcome (episodes that ended that way);
* :func:`actions_svg` -- how often each action was chosen, overall and per episode;
* :func:`returns_by_outcome_svg` -- the return of every episode, grouped by its outcome;
* :func:`lives_svg` -- the score over the median episode, with the moments its lives were lost
  and its stretches without scoring (tasks with lives only).

Episodes are numbered (their place in ``result.episodes``), never named by seed. All text in the
plots is ours: outcome and action labels come from the task plug-ins, numbers from the result.
"""

from __future__ import annotations

import io
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from grader.result import Diagnostics

_RC = {"svg.fonttype": "none", "svg.hashsalt": "rl-grader", "font.family": "sans-serif", "font.size": 9,
       "axes.spines.top": False, "axes.spines.right": False}
GOOD, BAD, GREY = "#1e8449", "#c0392b", "#7f8c8d"


# As grader.report's check of its returns plot (not imported from there: report imports this module).
_SVG_FORBIDDEN = re.compile(r"<\s*script|<\s*foreignObject|\son[a-z]+\s*=|javascript:", re.IGNORECASE)


def _svg(fig, label: str) -> str:
    buf = io.StringIO()
    fig.savefig(buf, format="svg", metadata={"Date": None, "Creator": None})
    svg = buf.getvalue()
    svg = svg[svg.index("<svg"):]
    svg = re.sub(r"\s*<metadata>.*?</metadata>", "", svg, count=1, flags=re.DOTALL)
    svg = svg.replace("<style type=\"text/css\">*{", "<style type=\"text/css\">svg.plot *{", 1)
    svg = re.sub(r'<svg([^>]*?)\swidth="[^"]*"\s+height="[^"]*"', r'<svg\1 width="100%"', svg, count=1)
    svg = svg.replace("<svg", f'<svg role="img" aria-label="{label}" class="plot"', 1)
    return "" if _SVG_FORBIDDEN.search(svg) else svg


_WARM: list[bool] = []
_LOCK = threading.RLock()


@contextmanager
def _style() -> Iterator[None]:
    """The plots' style, one plot at a time: ``rc_context`` changes matplotlib's global rcParams,
    which the grading slots' threads (``grade batch``, the site) and the report's warm-up share,
    and matplotlib is not thread-safe."""
    from matplotlib import rc_context

    with _LOCK, rc_context(_RC):
        yield


def warm_up() -> None:
    """Import matplotlib's figure and SVG backend and draw a figure with text once (it loads the
    font), off the path of the first real plot; later calls do nothing."""
    if _WARM:
        return
    with _style():
        fig = _figure(1.0)
        ax = fig.subplots()
        ax.barh([0], [1], color=GOOD)
        ax.set_yticks([0], ["warm-up"])
        _svg(fig, "warm-up")
    _WARM.append(True)


def _figure(height: float, *, left: float = 0.34, bottom: float = 0.5):
    """A figure with fixed margins (in inches at the bottom): constrained layout costs more than the plot."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7.6, height))
    fig.subplots_adjust(left=left, right=0.97, top=1 - 0.12 / height, bottom=bottom / height, hspace=0.9 / height)
    return fig


def outcomes_svg(diag: Diagnostics) -> str:
    rows = [o for o in diag.outcomes if o.count] or diag.outcomes
    if not rows:
        return ""
    with _style():
        fig = _figure(0.45 + 0.32 * len(rows))
        ax = fig.subplots()
        y = list(range(len(rows)))[::-1]
        ax.barh(y, [o.count for o in rows], color=[GOOD if o.success else BAD for o in rows], height=0.6)
        ax.set_yticks(y, [o.label for o in rows])
        top = max(o.count for o in rows) or 1
        for yi, o in zip(y, rows):
            ax.text(o.count + 0.01 * top, yi, f" {o.count} ({100 * o.share:.0f}%)", va="center", fontsize=8)
        ax.set_xlim(0, top * 1.18)
        ax.set_xlabel("episodes")
        return _svg(fig, "how the episodes ended")


def actions_svg(diag: Diagnostics) -> str:
    names, shares = diag.actions.names, diag.actions.shares
    if not sum(diag.actions.counts):
        return ""
    eps = diag.episodes
    palette = ["#5d6d7e", "#d35400", "#2471a3", "#8e44ad", "#16a085", "#b7950b"]
    with _style():
        fig = _figure(0.9 + 0.25 * len(names) + (1.9 if len(eps) > 1 else 0), left=0.2, bottom=0.9 if len(eps) > 1 else 0.5)
        axes = fig.subplots(2 if len(eps) > 1 else 1, 1, squeeze=False,
                            height_ratios=[0.25 * len(names) + 0.3, 1.3][: 2 if len(eps) > 1 else 1])
        fig.subplots_adjust(hspace=0.75)
        ax = axes[0][0]
        y = list(range(len(names)))[::-1]
        ax.barh(y, [100 * s for s in shares], color=[palette[i % len(palette)] for i in range(len(names))], height=0.6)
        ax.set_yticks(y, names)
        for yi, s in zip(y, shares):
            ax.text(100 * s + 1, yi, f"{100 * s:.0f}%", va="center", fontsize=8)
        ax.set_xlim(0, 112)
        ax.set_xlabel("share of all decisions (%)")
        if len(eps) > 1:
            from matplotlib.ticker import MaxNLocator

            ax2 = axes[1][0]
            edges = [i + 0.5 for i in range(len(eps) + 1)]  # episodes 1..n, each one unit wide
            bottom = [0.0] * len(eps)
            for a, name in enumerate(names):  # one filled staircase per action: a few artists, whatever the episodes
                part = [100 * e.actions[a] / e.decisions if e.decisions else 0.0 for e in eps]
                top = [b + q for b, q in zip(bottom, part)]
                ax2.stairs(top, edges, baseline=bottom, fill=True, color=palette[a % len(palette)], linewidth=0, label=name)
                bottom = top
            ax2.xaxis.set_major_locator(MaxNLocator(integer=True))
            ax2.set_xlim(edges[0], edges[-1])
            ax2.set_ylim(0, 100)
            ax2.set_ylabel("% per episode")
            ax2.set_xlabel("episode")
            ax2.legend(loc="upper center", bbox_to_anchor=(0.5, -0.45), ncol=len(names), fontsize=7, frameon=False)
        return _svg(fig, "how often each action was chosen")


def returns_by_outcome_svg(diag: Diagnostics) -> str:
    import numpy as np
    rows = [o for o in diag.outcomes if o.count]
    if not rows:
        return ""
    rng = np.random.default_rng(0)
    with _style():
        fig = _figure(0.55 + 0.36 * len(rows))
        ax = fig.subplots()
        for yi, o in zip(list(range(len(rows)))[::-1], rows):
            values = [e.return_ for e in diag.episodes if e.outcome == o.key]
            ax.scatter(values, yi + rng.uniform(-0.18, 0.18, len(values)), s=10, alpha=0.7, linewidths=0,
                       color=GOOD if o.success else BAD)
            if o.mean_return is not None:
                ax.plot([o.mean_return] * 2, [yi - 0.3, yi + 0.3], color="#34495e", linewidth=2)
        ax.set_yticks(list(range(len(rows)))[::-1], [f"{o.label} (mean {o.mean_return:,.0f})" for o in rows])
        ax.set_ylim(-0.6, len(rows) - 0.4)
        ax.set_xlabel("episode return (bar: the mean)")
        return _svg(fig, "episode returns by outcome")


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
    with _style():
        fig = _figure(2.4, left=0.1, bottom=0.55)
        ax = fig.subplots()
        for first, last, _n in e.droughts:
            ax.axvspan(first, last, color="#f5b041", alpha=0.25, linewidth=0)
        ax.plot(xs, ys, color="#2471a3", linewidth=1.6)
        top = max(ys) or 1.0
        for k, x in enumerate(e.lives, 1):
            ax.axvline(x.step, color=BAD, linewidth=1, linestyle="--")
            gained = e.life_scores[k - 1] if k - 1 < len(e.life_scores) else None
            ax.text(x.step, top * 1.02, f"life {k} lost" + (f"\n+{gained:,.0f}" if gained is not None else ""),
                    color=BAD, fontsize=7, ha="right", va="bottom")
        ax.set_ylim(0, top * 1.3)
        ax.set_xlim(0, end or 1)
        ax.set_xlabel(f"env steps of episode {e.episode} (median return {e.return_:,.0f}); shaded: "
                      "stretches of 100+ decisions without scoring")
        ax.set_ylabel("score")
        return _svg(fig, "score and lives over the median episode")
