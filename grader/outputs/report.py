"""The HTML report of one grading: a self-contained ``report.html`` beside ``result.json`` and the videos.

:func:`write_report` renders the full page (checks, episode statistics with a plot of the returns,
the three videos, the model card and what is needed to reproduce the result) and writes it
atomically; :func:`render_inline_html` renders a compact fragment for Jupyter
(registered for ``GradeResult`` by ``grader.check``).

The page opens offline: CSS is inline, the plot is an inline SVG drawn from the numbers as plain SVG elements,
there is no JavaScript and nothing is fetched; the videos are MP4 files referenced by relative
path. Everything a student controls (the submission's name, tensor names, operator names, the
producer string, check messages that quote them) goes through Jinja2's autoescaping; nothing from
the result is ever marked ``|safe``. When the episodes were played on the hidden grading seeds,
the report shows episode numbers instead of seeds and removes those seeds from any text it prints.
"""

from __future__ import annotations

import math
import os
import shutil
from pathlib import Path
from typing import Any

from grader.outputs.fsutil import atomic_write
from grader.result import GradeResult

REPORT_NAME = "report.html"

SEED_SET_TEXT = {
    "grading": "the rubric's grading seeds (kept private: the report shows episode numbers, not seeds)",
    "public": "the rubric's public self-check seeds",
    "explicit": "seeds given on the command line",
}


def _environment():
    """The shared Jinja environment (:func:`grader.outputs.templating.jinja_env`) with the report's filters."""
    from grader.outputs.templating import jinja_env

    env = jinja_env()
    env.filters.setdefault("num", _num)
    env.filters.setdefault("pct", lambda v: "—" if v is None else f"{100 * v:.0f}%")
    env.filters.setdefault("kb", lambda b: f"{b / 1024:,.1f} kB" if b < 1024**2 else f"{b / 1024**2:,.2f} MB")
    return env


def _num(value: Any, digits: int = 1) -> str:
    if value is None:
        return "—"
    value = float(value)
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "∞" if value > 0 else "−∞"
    text = f"{value:,.{digits}f}"
    return text.replace("-", "−")


from grader.outputs.seedpolicy import SeedPolicy  # noqa: E402,F401  (the report's naming rule)


# --- baselines ---------------------------------------------------------------------------------------
def baseline_values(result: GradeResult) -> dict[str, float]:
    """The rubric statistic of each baseline (``random``, ``reference``, ...), or ``{}``.

    They travel in the result (``rubric.baselines``, filled from the materialised rubric), so a
    report of any rubric, shipped or not, shows them without looking for files.
    """
    info = result.rubric
    if info is None:
        return {}
    return {name: float(v) for name, v in info.baselines.items() if v is not None and math.isfinite(v)}


# --- the plot ----------------------------------------------------------------------------------------
def returns_plot_svg(returns: list[float], *, zero: float | None = None, full: float | None = None,
                     statistic: tuple[str, float] | None = None, baselines: dict[str, float] | None = None,
                     success: float | None = None) -> str:
    """A histogram of the returns with a strip of the individual episodes, as an inline ``<svg>``
    (:mod:`grader.outputs.svgplot`: plain SVG elements, every label escaped).

    Vertical lines mark the rubric's zero and full-marks thresholds, the scored statistic and the
    baselines; the successful region (returns at or above ``success``) is shaded.
    """
    from grader.outputs.svgplot import Canvas, Scale, jitter, nice_ticks

    values = sorted(float(r) for r in returns if math.isfinite(r))
    if not values:
        return ""
    marks: list[tuple[float, str, str, str]] = []  # x, label, colour, dash
    if zero is not None:
        marks.append((zero, "0 pts at", "#c0392b", ""))
    if full is not None:
        marks.append((full, "full pts at", "#1e8449", ""))
    palette = {"random": "#7f8c8d", "reference": "#2471a3"}
    for name, value in sorted((baselines or {}).items()):
        marks.append((float(value), name, palette.get(name, "#8e44ad"), "5,3"))

    h_top, h_bottom, s_top, s_bottom = 14, 190, 204, 248  # histogram area, strip of episodes
    x = Scale.over(values + [m[0] for m in marks], 52, 744)
    bins = int(min(30, max(8, math.sqrt(len(values)) * 2)))
    width = (x.hi - x.lo) / bins
    counts = [0] * bins
    for v in values:
        counts[min(bins - 1, max(0, int((v - x.lo) / width)))] += 1
    y = Scale(0, max(counts) * 1.32, h_bottom, h_top)
    c = Canvas(760, 290, label="distribution of the episode returns")
    if success is not None and success < x.hi:
        x0 = x(max(x.lo, success))
        c.rect(x0, h_top, x.b - x0, h_bottom - h_top, fill="#1e8449", fill_opacity=0.06)
    for k, n in enumerate(counts):
        if n:
            c.rect(x(x.lo + k * width), y(n), (x.b - x.a) / bins, y(0) - y(n), fill="#5d6d7e", fill_opacity=0.85,
                   stroke="white", stroke_width=0.6)
    c.y_axis(y, x.a, title="episodes", ticks=[t for t in nice_ticks(0, max(counts), 4) if t == int(t)],
             fmt=lambda t: str(int(t)))
    c.line(x.a, h_bottom, x.b, h_bottom)
    c.x_axis(x, s_bottom + 4, title="episode return")
    mid, half = (s_top + s_bottom) / 2, (s_bottom - s_top) / 2 / 0.6
    for v, j in zip(values, jitter(len(values), 0.7)):  # one dot per episode
        c.circle(x(v), mid + j * half, 1.8, fill="#34495e", fill_opacity=0.6)
    # Labels are staggered in height so that close lines stay readable.
    for n, (value, label, colour, dash) in enumerate(sorted(marks, key=lambda m: m[0])):
        px = x(value)
        for y1, y2 in ((h_top, h_bottom), (s_top, s_bottom)):
            c.line(px, y1, px, y2, stroke=colour, stroke_width=1.3, stroke_dasharray=dash)
        start = value < x.lo + 0.75 * (x.hi - x.lo)
        c.text(px + (3 if start else -3), h_top + 10 + 12 * (n % 3), f"{label} {value:,.0f}",
               anchor="start" if start else "end", fill=colour, font_size=10)
    if statistic is not None:
        name, value = statistic
        px = x(value)
        for y1, y2 in ((h_top, h_bottom), (s_top, s_bottom)):
            c.line(px, y1, px, y2, stroke="#d35400", stroke_width=2.2)
        start = value < x.lo + 0.75 * (x.hi - x.lo)
        c.text(px + (3 if start else -3), s_top - 3, f"{name} {value:,.1f}", anchor="start" if start else "end",
               fill="#d35400", font_size=10, font_weight="bold")
    return c.svg()


# --- the context -------------------------------------------------------------------------------------
def _check_mark(check, *, scored: bool = False) -> tuple[str, str]:
    """✓ passed; ✗ failed and blocking, or failed and costing points; ! a warning (as the terminal)."""
    if check.passed:
        return "✓", "pass"
    if check.severity == "error" or scored:
        return "✗", "fail"
    return "!", "warn"


def build_context(result: GradeResult, *, baselines: dict[str, float] | None = None, plot: bool = True,
                  video_paths: dict[str, str] | None = None) -> dict[str, Any]:
    """Everything the templates show, computed in Python (the templates only lay it out)."""
    seeds = SeedPolicy(result)
    scrub = seeds.scrub
    rubric = result.rubric
    checks = []
    parts = {p.name: p for p in result.parts if p.kind == "notebook"}  # the one score (grader.scoring.points)
    for c in result.checks:
        part = parts.get(c.name)
        mark, cls = _check_mark(c, scored=part is not None)
        checks.append({"name": c.name, "mark": mark, "cls": cls, "message": scrub(c.message),
                       "hint": scrub(c.hint), "severity": c.severity, "passed": c.passed,
                       "points": part.points if part else None, "max_points": part.max_points if part else None})
    from grader.outputs.console import missing_parts
    from grader.scoring.points import NOT_HANDED_IN

    for name, part in missing_parts(result.parts).items():  # one row per part not handed in
        checks.append({"name": name, "mark": "✗", "cls": "fail", "message": NOT_HANDED_IN, "hint": "",
                       "severity": "error", "passed": False, "points": part.points, "max_points": part.max_points})
    failed = [c for c in checks if c["cls"] == "fail" and (c["severity"] == "error" or result.status != "graded")]
    n_pass = sum(bool(c["passed"]) for c in checks)

    # Episodes, ranked labels for the videos.
    video_by_seed = {v.seed: v.label for v in result.videos}
    episodes = [{"key": seeds.key(e.seed), "ret": e.return_, "length": e.length,
                 "label": video_by_seed.get(e.seed, "")} for e in result.episodes]
    stat_value = getattr(result.summary, rubric.statistic, None) if (result.summary and rubric) else None

    plot_svg = ""
    if plot and result.episodes:
        plot_svg = returns_plot_svg(
            [e.return_ for e in result.episodes],
            zero=rubric.zero_at if rubric else None, full=rubric.full_at if rubric else None,
            statistic=(rubric.statistic, stat_value) if rubric and stat_value is not None else None,
            baselines=baselines, success=_success_threshold(result.task) if result.summary and result.summary.success_rate is not None else None,
        )

    from grader.tasks.diagnostics import outcome_of

    diag = _diagnostics_context(result, plot=plot)
    if diag and result.diagnostics is not None:
        for e, d in zip(episodes, result.diagnostics.episodes):
            e["outcome"] = diag["labels"].get(d.outcome, d.outcome)
    video_paths = video_paths or {}
    videos = []
    for v in result.videos:
        videos.append({"label": v.label, "who": seeds.label(v.seed), "scored": v.scored_return, "rerun": v.rerun_return,
                       "outcome": outcome_of(result, v.seed),
                       "matches": v.matches, "src": video_paths.get(v.path, v.path), "frames": v.frames,
                       "length": next((e.length for e in result.episodes if e.seed == v.seed), None)})

    model = result.model
    operators = []
    if model is not None and model.operators:
        biggest = max(model.operators.values()) or 1
        for name, count in sorted(model.operators.items(), key=lambda kv: (-kv[1], kv[0])):
            operators.append({"name": name, "count": count, "width": max(2.0, 100.0 * count / biggest)})

    if rubric is not None:
        seed_text = f"{rubric.n_seeds} episodes on {SEED_SET_TEXT.get(rubric.seed_set, rubric.seed_set)}"
    elif result.episodes:
        seed_text = f"{len(result.episodes)} episodes"
    else:
        seed_text = "no episodes were played"
    fraction = (result.score / result.max_score) if result.max_score else 0.0
    baseline_rows = sorted((baselines or {}).items())
    return {
        "r": result,
        "title": f"{result.submission} — {result.task or 'unknown task'}",
        "status": result.status,
        "error": scrub(result.error),
        "checks": checks,
        "failed": failed,
        "n_pass": n_pass,
        "summary": result.summary,
        "rubric": rubric,
        "stat_value": stat_value,
        "fraction": max(0.0, min(1.0, fraction)),
        "episodes": episodes,
        "episodes_open": len(episodes) <= 12,
        "hidden": seeds.hidden,
        "seed_column": "episode" if seeds.hidden else "seed",
        "plot_svg": plot_svg,
        "diag": diag,
        "videos": videos,
        "pixelated": _pixelated(result.task),
        "model": model,
        "operators": operators,
        "baselines": baseline_rows,
        "warnings": [scrub(w) for w in result.warnings],
        "next_step": scrub(result.next_step),
        "flags": [scrub(f.text) for f in result.flags],
        "command": scrub(result.command),
        "seed_text": seed_text,
        "versions": sorted(result.versions.items()),
        "timings": result.timings,
    }


def _diagnostics_context(result: GradeResult, *, plot: bool) -> dict[str, Any] | None:
    """The "what the episodes did" section: texts, the outcome table and the plots (None without diagnostics)."""
    d = result.diagnostics
    if d is None or not result.episodes:
        return None
    from grader.outputs import diagplots as P

    # The texts are the task's, built from counts and numbered episodes: no seed is ever in them (and
    # scrubbing would turn a count that happens to equal a hidden seed into an episode number).
    median = P.median_episode(d)
    length = result.episodes[median.episode - 1].length if median and median.episode <= len(result.episodes) else None
    plots = []
    if plot:
        plots = [(title, svg) for title, svg in (
            ("How the episodes ended", P.outcomes_svg(d)),
            ("Return by outcome", P.returns_by_outcome_svg(d)),
            ("Actions chosen", P.actions_svg(d)),
            ("Lives over the median episode", P.lives_svg(d, length)),
        ) if svg]
    return {"summary": list(d.summary), "hint": d.hint, "collapse": d.collapse,
            "collapsed": d.collapsed, "confidence": d.confidence.text if d.confidence else "", "notes": list(d.notes),
            "outcomes": [o for o in d.outcomes if o.count],
            "labels": {o.key: o.label for o in d.outcomes}, "plots": plots}


def _task(name: str | None):
    from grader.tasks import UnknownTask, get_task

    try:
        return get_task(name) if name else None
    except UnknownTask:
        return None


def _success_threshold(task: str | None) -> float | None:
    t = _task(task)
    return t.success_threshold if t else None


def _pixelated(task: str | None) -> bool:
    t = _task(task)
    return bool(t and t.video_pixelated)


# --- rendering ---------------------------------------------------------------------------------------
def render_html(result: GradeResult, *, baselines: dict[str, float] | None = None,
                video_paths: dict[str, str] | None = None) -> str:
    """The full, self-contained report page as a string."""
    ctx = build_context(result, baselines=baselines, video_paths=video_paths)
    return _environment().get_template("report.html.j2").render(**ctx)


def preload() -> None:
    """Load what :func:`render_html` needs on first use (Jinja and the compiled report templates),
    e.g. while the last episodes run."""
    _environment().get_template("report.html.j2")


def render_inline_html(result: GradeResult) -> str:
    """A compact fragment for Jupyter: score, checks with hints, statistics (no plot, no videos)."""
    ctx = build_context(result, plot=False)
    return _environment().get_template("inline.html.j2").render(**ctx)


def _safe_video_paths(result: GradeResult, out_dir: Path) -> dict[str, str]:
    """Video paths to link; a file whose name reveals a hidden seed is linked under a neutral name."""
    seeds = SeedPolicy(result)
    mapping: dict[str, str] = {}
    for v in result.videos:
        if not seeds.leaks(v.path):
            continue
        safe = f"{v.label}.mp4"
        src = out_dir / v.path
        if src.is_file():
            dst = out_dir / safe
            try:
                dst.unlink(missing_ok=True)
                os.link(src, dst)
            except OSError:
                shutil.copyfile(src, dst)
        mapping[v.path] = safe
    return mapping


def write_report(result: GradeResult, out_dir: str | Path, *, baselines: dict[str, float] | None = None) -> Path:
    """Write ``out_dir/report.html`` atomically (never through a link) and return its path.

    ``baselines`` maps baseline names to their value of the rubric's statistic; by default they
    are the ones the result carries (``result.rubric.baselines``).
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if baselines is None:
        baselines = baseline_values(result)
    html = render_html(result, baselines=baselines, video_paths=_safe_video_paths(result, out_dir))
    target = out_dir / REPORT_NAME
    atomic_write(target, html)
    return target
