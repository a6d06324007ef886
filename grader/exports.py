"""Exports of a batch run: ``grades.csv`` (LMS import), ``duplicates.csv``, ``problems.csv``,
``class.html`` (leaderboard, score distribution, check pass rates, layout problems, duplicate
flags) and a Gradescope ``results.json`` per submission.

``grades.csv`` has one row per roster student (roster order), or per found student (sorted) when
there is no roster. Each student's *primary* file gives ``points``/``max_points``/``status``: the
ONNX model when there is one, else the notebook; when a student handed in both, the notebook's
status and points are in the ``notebook_status``/``notebook_points`` columns.
"""

from __future__ import annotations

import csv
import io
import os
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel, ConfigDict

from grader.result import GradeResult

if TYPE_CHECKING:
    from grader.batch import BatchRun

GRADES_COLUMNS = ["student_id", "name", "points", "max_points", "status", "notebook_status", "notebook_points", "files", "note"]
DUPLICATES_COLUMNS = ["kind", "student_a", "file_a", "student_b", "file_b", "agreement", "detail"]
PROBLEMS_COLUMNS = ["entry", "student", "reason"]


# --- Gradescope ------------------------------------------------------------------------------------
# The one builder of Gradescope's results.json (https://gradescope-autograders.readthedocs.io/en/latest/specs/):
# `grade batch`, `grade --gradescope FILE` and the autograder zip of `grade gradescope` all use it.
Visibility = Literal["visible", "hidden", "after_due_date", "after_published"]
TextFormat = Literal["text", "html", "simple_format", "md", "ansi"]
EPISODE_TABLE_CHOICES = ("after_published", "after_due_date", "none")  # never "visible": see gradescope_results


class _GS(BaseModel):
    model_config = ConfigDict(extra="forbid")


class GradescopeTest(_GS):
    name: str
    score: float | None = None
    max_score: float | None = None
    output: str = ""
    status: Literal["passed", "failed"] | None = None
    visibility: Visibility = "visible"
    output_format: TextFormat | None = None
    name_format: TextFormat | None = None
    number: str | None = None
    tags: list[str] | None = None
    extra_data: dict | None = None


class GradescopeLeaderboardEntry(_GS):
    name: str
    value: float | str
    order: Literal["asc", "desc"] | None = None


class GradescopeResults(_GS):
    """The Gradescope autograder ``results.json`` format (every top-level field of the spec)."""

    score: float
    output: str = ""
    output_format: TextFormat | None = None
    test_output_format: TextFormat | None = None
    test_name_format: TextFormat | None = None
    execution_time: float | None = None
    visibility: Visibility = "visible"
    stdout_visibility: Visibility | None = None
    extra_data: dict | None = None
    tests: list[GradescopeTest] = []
    leaderboard: list[GradescopeLeaderboardEntry] = []


def _md_literal(text: str) -> str:
    """Text shown verbatim in Markdown (an indented code block): student-controlled text is never markup."""
    return "\n".join("    " + line for line in (text or "").splitlines() or [""])


def gradescope_results(result: GradeResult, *, points: float | None = None, episode_table: str = "after_published",
                       report_note: str = "") -> GradescopeResults:
    """Gradescope's ``results.json`` for ``result``. Students see it: texts that could name a hidden
    grading seed are scrubbed, and nothing in it names one.

    * one test per check (``passed``/``failed``, its message and hint; the points of scored notebook checks);
    * ``episode score``: the points from the episodes; ``max_score`` is ``points`` (the rubric's
      ``scoring.points``; default: from the result), so an invalid submission shows 0 out of the
      rubric's points, never 0 / 0;
    * ``returns by episode``: the return of each episode, numbered, never by seed, with visibility
      ``episode_table`` (``after_published`` or ``after_due_date``; ``none`` leaves it out). Per the spec,
      students do not see their total score while a test is not visible to them;
    * the top-level ``score`` is the grader's score (0 unless graded) and equals the sum of the tests';
      ``output`` (Markdown) is the summary and ``report_note``; ``stdout`` is for instructors only.
    """
    from grader.report import SeedPolicy

    if episode_table not in EPISODE_TABLE_CHOICES:
        raise ValueError(f"episode_table must be one of {', '.join(EPISODE_TABLE_CHOICES)}, not {episode_table!r}")
    policy = SeedPolicy(result)
    scrub = policy.scrub
    graded = result.status == "graded"
    check_max = sum(c.max_points or 0.0 for c in result.checks)
    check_points = sum(c.points or 0.0 for c in result.checks if c.passed and c.points)
    if points is None:
        points = result.max_score - check_max if result.max_score > check_max else result.max_score
    tests = []
    for c in result.checks:
        output = scrub(c.message + (f"\nHow to fix: {c.hint}" if not c.passed and c.hint else ""))
        score = None if c.max_points is None else ((c.points or 0.0) if graded and c.passed else 0.0)
        if c.max_points is not None and c.passed and not graded:
            output += "\n(no points: the submission is invalid)"
        tests.append(GradescopeTest(name=c.name, score=score, max_score=c.max_points, output=output,
                                    status="passed" if c.passed else "failed"))
    s = result.summary
    detail = ""
    if graded and result.episodes and episode_table != "none":
        rows = [f"{policy.label(e.seed)}: return {e.return_:.2f} in {e.length} steps" for e in result.episodes]
        tests.append(GradescopeTest(name="returns by episode", output="\n".join(rows), status="passed",
                                    visibility="visible" if not policy.hidden else episode_table))
    episode_points = round(max(0.0, result.score - check_points), 4) if graded else 0.0
    if graded:
        detail = (f"{s.n} episodes: mean return {s.mean:.1f} ± {s.std:.1f}, median {s.median:.1f}, "
                  f"95% CI [{s.ci_low:.1f}, {s.ci_high:.1f}]" if s else "")
        if s is not None and s.success_rate is not None:
            detail += f", success rate {100 * s.success_rate:.0f}%"
        if result.rubric:
            detail += f"; points from the {result.rubric.statistic} ({result.rubric.zero_at:g} earns 0, " \
                      f"{result.rubric.full_at:g} earns full marks)"
            if policy.hidden:
                detail += f"; the {result.rubric.n_seeds} grading seeds are not shown"
        tests.append(GradescopeTest(name="episode score", score=episode_points, max_score=points, output=detail,
                                    status="passed" if episode_points > 0 else "failed"))
    else:
        first_failed = next((c for c in result.checks if c.blocking), None)
        why = scrub(result.error or (first_failed.message if first_failed else "")) or (
            "a check failed" if result.status == "invalid" else "the grader failed")
        lead = "Not graded: the submission is invalid: " if result.status == "invalid" else "Not graded: grader error: "
        tests.append(GradescopeTest(name="episode score", score=0.0, max_score=points, output=lead + why, status="failed"))
    stat_name = result.rubric.statistic if result.rubric else "mean"
    board = [GradescopeLeaderboardEntry(name="Score", value=result.score if graded else 0.0, order="desc")]
    if s is not None:
        stat = getattr(s, stat_name, None)
        label = {"mean": "Mean return", "median": "Median return", "iqm": "IQM return", "ci_low": "CI low (return)",
                 "success_rate": "Success rate"}.get(stat_name, stat_name)
        if stat is not None and stat_name != "success_rate":
            board.append(GradescopeLeaderboardEntry(name=label, value=round(stat, 2), order="desc"))
        if stat_name != "mean":
            board.append(GradescopeLeaderboardEntry(name="Mean return", value=round(s.mean, 2), order="desc"))
        if s.success_rate is not None:
            board.append(GradescopeLeaderboardEntry(name="Success rate", value=round(s.success_rate, 4), order="desc"))
    total = result.score if graded else 0.0
    max_total = round(points + check_max, 4)
    if graded:
        head = f"**Score {total:g} / {max_total:g}**" + (f" ({result.band})" if result.band else "")
    elif result.status == "invalid":
        head = f"**Invalid submission: 0 / {max_total:g}**\n\n{_md_literal(why)}"
    else:
        head = f"**Grader error: 0 / {max_total:g}** (not your fault; the course staff can see the log)\n\n" \
               f"{_md_literal(why)}"
    parts = [head]
    failed = [c.name for c in result.checks if not c.passed]
    parts.append(f"{len(result.checks) - len(failed)} of {len(result.checks)} checks passed"
                 + (f"; failed: {', '.join(failed)}" if failed else "") + ".")
    if detail:
        parts.append(detail + ".")
    if result.warnings:
        parts.append("Warnings:\n\n" + _md_literal("\n".join(scrub(w) for w in result.warnings)))
    if report_note:
        parts.append(report_note)
    execution = result.timings.get("total")
    return GradescopeResults(
        score=total, output="\n\n".join(parts), output_format="md", test_output_format="text", test_name_format="text",
        execution_time=None if execution is None else max(1, round(execution)), stdout_visibility="hidden",
        extra_data={"status": result.status, "rubric": result.rubric.id if result.rubric else None,
                    "rubric_sha256": result.rubric.sha256 if result.rubric else None,
                    "model_sha256": result.model.sha256 if result.model else None,
                    "grader": result.versions.get("rl-grader")},
        tests=tests, leaderboard=board)


def write_gradescope(result: GradeResult, path: Path, **options) -> GradescopeResults:
    """Write :func:`gradescope_results` (``options`` go to it) to ``path`` atomically."""
    from grader.fsutil import atomic_write

    gs = gradescope_results(result, **options)
    atomic_write(path, gs.model_dump_json(indent=2, exclude_none=True) + "\n")
    return gs


# --- the class view ----------------------------------------------------------------------------------
@dataclass
class Item:
    kind: str
    rel: str
    sha256: str
    status: str
    result: GradeResult | None
    report: str | None  # link, relative to the output folder


@dataclass
class StudentRow:
    id: str
    name: str = ""
    pseudonym: str = ""
    on_roster: bool | None = None  # None: no roster
    items: list[Item] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    flags: list[str] = field(default_factory=list)

    @property
    def primary(self) -> Item | None:
        return next((i for i in self.items if i.kind == "model"), self.items[0] if self.items else None)

    @property
    def notebook(self) -> Item | None:
        nb = next((i for i in self.items if i.kind == "notebook"), None)
        return nb if nb is not None and nb is not self.primary else None

    @property
    def status(self) -> str:
        if self.primary is not None:
            return self.primary.status
        return "layout problem" if self.problems else "no submission"

    @property
    def points(self) -> float:
        p = self.primary
        return p.result.score if p and p.result and p.status == "graded" else 0.0

    @property
    def mean_return(self) -> float | None:
        p = self.primary
        return p.result.summary.mean if p and p.result and p.result.summary else None


def _report_link(out: Path, report_path: str | None) -> str | None:
    if not report_path:
        return None
    base = out / report_path
    for name in ("report.html", "result.json"):
        if (base / name).is_file():
            return f"{report_path}/{name}"
    return None


def collect(run: "BatchRun") -> list[StudentRow]:
    """One row per student: roster students (roster order) then found students not on it."""
    gb = run.gradebook
    rows: dict[str, StudentRow] = {}
    if run.roster is not None:
        for s in run.roster.students:
            rows[s.id] = StudentRow(id=s.id, name=s.name, on_roster=True)
    found = sorted({e.student for e in run.attempts} | {p.student for p in run.folder.problems if p.student})
    for sid in found:
        if sid not in rows:
            rows[sid] = StudentRow(id=sid, on_roster=False if run.roster is not None else None)
    for entry, attempt in sorted(run.attempts.items(), key=lambda kv: (kv[0].student, kv[0].kind)):
        a = gb.get(attempt.id)
        rows[entry.student].items.append(Item(kind=entry.kind, rel=entry.rel, sha256=a.sha256, status=a.status,
                                               result=a.result(), report=_report_link(run.out, a.report_path)))
    for p in run.folder.problems:
        if p.student and p.student in rows:
            rows[p.student].problems.append(f"{p.entry}: {p.reason}")
    for r in rows.values():
        r.pseudonym = gb.pseudonym(r.id)
    return list(rows.values())


def reference_candidates(run: "BatchRun", probe_states) -> list:
    """Reference models of the rubric's task in ``run.reference_dir``, with weights and actions."""
    from grader import checks as C
    from grader.duplicates import Candidate, weights_fingerprint
    from grader.engine import Engine, EngineFailure
    from grader.onnx_model import ModelLoadError, parse_model

    ref_dir = run.reference_dir
    if ref_dir is None or not Path(ref_dir).is_dir():
        return []
    out = []
    files = sorted(Path(ref_dir).glob("*.onnx"))
    engine = None
    try:
        for f in files:
            try:
                data = f.read_bytes()
                parsed = parse_model(data)
                if C.detect_task(parsed).name != run.rubric.task:
                    continue
            except (OSError, ModelLoadError, C.TaskDetectionError):
                continue
            cand = Candidate(label=f"reference:{f.name}", file=str(f), sha256=parsed.sha256,
                             weights=weights_fingerprint(data), is_reference=True)
            if probe_states is not None:
                try:
                    engine = engine or Engine(1)
                    engine.load(data, task=run.rubric.task)
                    import numpy as np

                    cand.actions = np.asarray(engine.actions(probe_states), dtype=np.uint8)
                except EngineFailure:
                    pass
            out.append(cand)
    finally:
        if engine is not None:
            engine.close()
    return out


def _score_svg(scores: list[float], max_score: float) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 2.6), dpi=100)
    bins = 20
    ax.hist(scores, bins=bins, range=(0, max_score or 1), color="#4a78b5", edgecolor="white")
    ax.set_xlabel("points")
    ax.set_ylabel("students")
    ax.set_xlim(0, max_score or 1)
    ax.spines[["top", "right"]].set_visible(False)
    fig.tight_layout()
    buf = io.StringIO()
    fig.savefig(buf, format="svg")
    plt.close(fig)
    text = buf.getvalue()
    return text[text.find("<svg"):]


def check_pass_rates(rows: list[StudentRow]) -> list[dict]:
    passed: Counter = Counter()
    seen: Counter = Counter()
    order: list[str] = []
    for r in rows:
        for item in r.items:
            if item.result is None:
                continue
            for c in item.result.checks:
                if c.name not in seen:
                    order.append(c.name)
                seen[c.name] += 1
                passed[c.name] += c.passed
    return [{"name": n, "passed": passed[n], "total": seen[n], "rate": passed[n] / seen[n]} for n in order]


def write_exports(run: "BatchRun") -> None:
    from grader.duplicates import Candidate, actions_from_extra, find_duplicates

    rows = collect(run)
    # duplicates
    gb = run.gradebook
    candidates = []
    for entry, attempt in run.attempts.items():
        a = gb.get(attempt.id)
        candidates.append(Candidate(label=entry.student, file=entry.rel, sha256=a.sha256,
                                    weights=a.extra.get("weights_fingerprint"),
                                    actions=actions_from_extra(a.extra, run.probe_id)))
    candidates += reference_candidates(run, run.probe_states)
    dup = find_duplicates(candidates, threshold=run.behaviour_threshold)
    run.duplicates = dup
    by_student = defaultdict(list)
    for f in dup.flags:
        for me, other in ((f.a, f.b), (f.b, f.a)):
            by_student[me.label].append(f"{f.kind} with {other.label}" + (f" ({100 * f.agreement:.1f}%)" if f.agreement else ""))
    for r in rows:
        r.flags = by_student.get(r.id, [])
    max_points = run.rubric.scoring.points
    # grades.csv
    with_names = run.roster is not None
    cols = [c for c in GRADES_COLUMNS if with_names or c != "name"]
    grade_rows = [r for r in rows if r.on_roster is not False]
    _write_csv(run.out / "grades.csv", cols, [
        {"student_id": r.id, "name": r.name, "points": f"{r.points:g}", "max_points": f"{max_points:g}", "status": r.status,
         "notebook_status": r.notebook.status if r.notebook else "",
         "notebook_points": f"{r.notebook.result.score:g}" if r.notebook and r.notebook.result and r.notebook.status == "graded" else "",
         "files": " ".join(i.rel for i in r.items),
         "note": "; ".join(([(r.primary.result.error or "")[:300]] if r.primary and r.primary.result and r.primary.status != "graded" else [])
                           + r.problems)}
        for r in grade_rows
    ])
    _write_csv(run.out / "duplicates.csv", DUPLICATES_COLUMNS, [f.row() for f in dup.flags])
    problems = run.folder.problems + (run.roster.problems if run.roster else [])
    _write_csv(run.out / "problems.csv", PROBLEMS_COLUMNS,
               [{"entry": p.entry, "student": p.student or "", "reason": p.reason} for p in problems])
    # class.html
    board = sorted([r for r in rows if r.items], key=lambda r: (-r.points, -(r.mean_return if r.mean_return is not None else -1e9), r.id))
    scores = [r.points for r in board if r.status in ("graded", "invalid")]
    counts = Counter(r.status for r in rows)
    run.summary = {
        "students": len(rows), "graded": counts["graded"], "invalid": counts["invalid"], "error": counts["error"],
        "no_submission": counts["no submission"] + counts["layout problem"],
        "not_on_roster": sum(1 for r in rows if r.on_roster is False),
        "graded_now": sum(1 for a in run.attempts.values() if a.status == "queued"), "reused": sum(1 for a in run.attempts.values() if a.status != "queued"),
    }
    from jinja2 import Environment, FileSystemLoader, select_autoescape

    env = Environment(loader=FileSystemLoader(Path(__file__).parent / "templates"), autoescape=select_autoescape(["html"]))
    html = env.get_template("class.html").render(
        rubric=run.rubric, key=run.key, rows=rows, board=board, max_points=max_points,
        svg=_score_svg(scores, max_points) if scores else "", checks=check_pass_rates(rows),
        problems=problems, dup=dup, summary=run.summary, roster=run.roster is not None,
        not_on_roster=[r for r in rows if r.on_roster is False],
        missing=[r for r in rows if r.on_roster and not r.items],
        show_names=run.rubric.show_names, class_dir=str(run.class_dir),
    )
    tmp = run.out / ".class.html.part"
    tmp.write_text(html)
    os.replace(tmp, run.out / "class.html")


def _write_csv(path: Path, columns: list[str], rows: list[dict]) -> None:
    tmp = path.with_name("." + path.name + ".part")
    with open(tmp, "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=columns, extrasaction="ignore")
        w.writeheader()
        for r in rows:
            w.writerow({k: (v if k == "student_id" else _csv_safe(v)) for k, v in r.items()})
    os.replace(tmp, path)


def _csv_safe(value):
    """Defuse spreadsheet formulas in text cells (CSV injection): untrusted text never starts with = + - @."""
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r"):
        try:
            float(value)
            return value
        except ValueError:
            return "'" + value
    return value
