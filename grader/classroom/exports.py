"""Exports of a batch run: ``grades.csv`` (LMS import), ``duplicates.csv``, ``problems.csv``,
``class.html`` (leaderboard, score distribution, check pass rates, layout problems, duplicate
flags) and a Gradescope ``results.json`` per submission.

``grades.csv`` has one row per roster student (roster order), or per found student (sorted) when
there is no roster: the points of the student's one graded bundle (notebook, model and weights
together, composed by :func:`grader.scoring.points.compose`) out of the rubric's maximum. With an LMS's
own roster (Moodle's grading worksheet, Canvas's gradebook), the LMS's import file is written
too: ``moodle_grades.csv`` / ``canvas_grades.csv`` (:mod:`grader.classroom.lms.moodle`, :mod:`grader.classroom.lms.canvas`).
"""

from __future__ import annotations

import csv
import io
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict

from grader.result import GradeResult

if TYPE_CHECKING:
    from grader.classroom.batch import BatchRun

GRADES_COLUMNS = ["student_id", "name", "email", "points", "max_points", "status", "files", "note",
                  "graded_points", "late_penalty", "submitted", "days_late", "override_comment", "override_by"]
DUPLICATES_COLUMNS = ["cluster", "kind", "student_a", "file_a", "student_b", "file_b", "agreement", "z", "evidence",
                      "detail"]
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


def gradescope_results(result: GradeResult, *, episode_table: str = "after_published",
                       report_note: str = "") -> GradescopeResults:
    """Gradescope's ``results.json`` for ``result``. Students see it: texts that could name a hidden
    grading seed are scrubbed, and nothing in it names one.

    * one test per check (``passed``/``failed``, its message and hint); a scored notebook check
      carries its points from ``result.parts`` (the one score, :mod:`grader.scoring.points`);
    * ``episode score``: the episodes' part, out of its maximum even when the submission is invalid;
    * ``returns by episode``: the return of each episode, numbered, never by seed, with visibility
      ``episode_table`` (``after_published`` or ``after_due_date``; ``none`` leaves it out). Per the spec,
      students do not see their total score while a test is not visible to them;
    * the top-level ``score`` is ``result.score`` and equals the sum of the tests' scores, out of
      ``result.max_score``; ``output`` (Markdown) is the summary and ``report_note``.
    """
    from grader.outputs.seedpolicy import SeedPolicy
    from grader.scoring.points import EPISODES_PART

    if episode_table not in EPISODE_TABLE_CHOICES:
        raise ValueError(f"episode_table must be one of {', '.join(EPISODE_TABLE_CHOICES)}, not {episode_table!r}")
    policy = SeedPolicy(result)
    graded = result.status == "graded"
    tests = _check_tests(result, policy.scrub, graded=graded) + _unchecked_part_tests(result)
    if graded and result.episodes and episode_table != "none":
        rows = [f"{policy.label(e.seed)}: return {e.return_:.2f} in {e.length} steps" for e in result.episodes]
        tests.append(GradescopeTest(name="returns by episode", output="\n".join(rows), status="passed",
                                    visibility="visible" if not policy.hidden else episode_table))
    tests += _flag_tests(result)
    board = _leaderboard(result)
    detail, why = _episodes_detail(result, policy.hidden) if graded else ("", _why_not_graded(result, policy.scrub))
    episodes = {p.name: p for p in result.parts}.get(EPISODES_PART)
    if episodes is not None:
        output = detail or (("Not graded: the submission is invalid: " if result.status == "invalid"
                             else "Not graded: grader error: ") + why if not graded else episodes.detail)
        tests.append(GradescopeTest(name="episode score", score=episodes.points, max_score=episodes.max_points,
                                    output=output, status="passed" if episodes.points > 0 else "failed"))
    for part in result.parts:  # the late penalty: a part like the others, its points negative or 0
        if part.kind == "late":
            tests.append(GradescopeTest(name="late penalty", score=part.points, max_score=0.0, output=part.detail,
                                        status="failed" if part.points < 0 else "passed"))
    lines = _summary_lines(result, tests, detail=detail, why=why, scrub=policy.scrub)
    if report_note:
        lines.append(report_note)
    execution = result.timings.get("total")
    return GradescopeResults(
        score=result.score, output="\n\n".join(lines), output_format="md", test_output_format="text",
        test_name_format="text", execution_time=None if execution is None else max(1, round(execution)),
        stdout_visibility="hidden",
        extra_data={"status": result.status, "max_score": result.max_score,
                    "rubric": result.rubric.id if result.rubric else None,
                    "rubric_sha256": result.rubric.sha256 if result.rubric else None,
                    "model_sha256": result.model.sha256 if result.model else None,
                    "flags": [f.model_dump(mode="json") for f in result.flags if f.scope == "reference"],
                    "grader": result.versions.get("rl-grader")},
        tests=tests, leaderboard=board)


def _check_tests(result: GradeResult, scrub: Callable[[str], str], *, graded: bool) -> list[GradescopeTest]:
    """One test per check; a scored notebook check carries its part's points."""
    from grader.scoring.points import EPISODES_PART

    parts = {p.name: p for p in result.parts}
    tests = []
    for c in result.checks:
        part = parts.get(c.name) if c.name != EPISODES_PART else None
        failed = not c.passed and (c.severity == "error" or part is not None)  # a warning is not a failed test
        prefix = "" if c.passed or failed else f"{c.severity}: "
        output = scrub(prefix + c.message + (f"\nHow to fix: {c.hint}" if not c.passed and c.hint else ""))
        if part is not None and c.passed and not graded:
            output += "\n(no points: the submission is invalid)"
        tests.append(GradescopeTest(name=c.name, score=part.points if part else None,
                                    max_score=part.max_points if part else None, output=output,
                                    status="failed" if failed else "passed"))
    return tests


def _unchecked_part_tests(result: GradeResult) -> list[GradescopeTest]:
    """A failed test for the notebook not handed in, and for each scored check that never ran."""
    from grader.outputs.console import missing_parts
    from grader.scoring.points import NOT_HANDED_IN

    checked = {c.name for c in result.checks}
    tests = []
    missing = missing_parts(result.parts)
    if "notebook" in missing:  # one test for the part, not one per check it would have had
        part = missing["notebook"]
        tests.append(GradescopeTest(name="notebook", score=0.0, max_score=part.max_points, status="failed",
                                    output=f"{NOT_HANDED_IN}: hand in the notebook (.ipynb) to earn these points"))
    for part in result.parts:  # scored checks that never ran (the notebook stopped early, say)
        if part.kind == "notebook" and part.name not in checked and part.detail != NOT_HANDED_IN:
            tests.append(GradescopeTest(name=part.name, score=0.0, max_score=part.max_points, status="failed",
                                        output="not checked: " + (part.detail or "the notebook did not get this far")))
    return tests


def _episodes_detail(result: GradeResult, hidden: bool) -> tuple[str, str]:
    """What the episodes of a graded submission gave (statistics, and how they became points)."""
    s = result.summary
    if s is None:
        return "", ""
    detail = (f"{s.n} episodes: mean return {s.mean:.1f} ± {s.std:.1f}, median {s.median:.1f}, "
              f"95% CI [{s.ci_low:.1f}, {s.ci_high:.1f}]")
    if s.success_rate is not None:
        detail += f", success rate {100 * s.success_rate:.0f}%"
    if result.rubric:
        detail += f"; points from the {result.rubric.statistic} ({result.rubric.zero_at:g} earns 0, " \
                  f"{result.rubric.full_at:g} earns full marks)"
        if hidden:
            detail += f"; the {result.rubric.n_seeds} grading seeds are not shown"
    return detail, ""


def _why_not_graded(result: GradeResult, scrub: Callable[[str], str]) -> str:
    first_failed = next((c for c in result.checks if c.blocking), None)
    return scrub(result.error or (first_failed.message if first_failed else "")) or (
        "a check failed" if result.status == "invalid" else "the grader failed")


def _summary_lines(result: GradeResult, tests: list[GradescopeTest], *, detail: str, why: str,
                   scrub: Callable[[str], str]) -> list[str]:
    """The Markdown summary: the score (or why there is none), the checks passed, the episodes, warnings."""
    from grader.scoring.points import fmt_points

    checked = {c.name for c in result.checks}
    total = fmt_points(result.score, result.max_score)
    if result.status == "graded":
        head = f"**Score {total}**" + (f" ({result.band})" if result.band else "")
    elif result.status == "invalid":
        head = f"**Invalid submission: {total}**\n\n{_md_literal(why)}"
    else:
        head = f"**Grader error: {total}** (not your fault; the course staff can see the log)\n\n{_md_literal(why)}"
    lines = [head]
    failed_names = [t.name for t in tests if t.status == "failed" and t.name in checked]
    lines.append(f"{len(result.checks) - len(failed_names)} of {len(result.checks)} checks passed"
                 + (f"; failed: {', '.join(failed_names)}" if failed_names else "") + ".")
    if detail:
        lines.append(detail + ".")
    if result.warnings:  # the student's warnings; operator notes (the sandbox's strength) never reach them
        lines.append("Warnings:\n\n" + _md_literal("\n".join(scrub(w) for w in result.warnings)))
    return lines


def _flag_tests(result: GradeResult) -> list[GradescopeTest]:
    """A ``duplicate check`` test per flag, worth nothing: a copy of a reference model is visible
    (it names a file every student has); a flag against another student (``grade batch``) is
    hidden from students, visible to the instructor."""
    return [GradescopeTest(name="duplicate check", status="failed", output=f.text,
                           visibility="visible" if f.scope == "reference" else "hidden") for f in result.flags]


def _leaderboard(result: GradeResult) -> list[GradescopeLeaderboardEntry]:
    s = result.summary
    board = [GradescopeLeaderboardEntry(name="Score", value=result.score, order="desc")]
    if s is None:
        return board
    stat_name = result.rubric.statistic if result.rubric else "mean"
    stat = getattr(s, stat_name, None)
    label = {"mean": "Mean return", "median": "Median return", "iqm": "IQM return", "ci_low": "CI low (return)",
             "success_rate": "Success rate"}.get(stat_name, stat_name)
    if stat is not None and stat_name != "success_rate":
        board.append(GradescopeLeaderboardEntry(name=label, value=round(stat, 2), order="desc"))
    if stat_name != "mean":
        board.append(GradescopeLeaderboardEntry(name="Mean return", value=round(s.mean, 2), order="desc"))
    if s.success_rate is not None:
        board.append(GradescopeLeaderboardEntry(name="Success rate", value=round(s.success_rate, 4), order="desc"))
    return board


def gradescope_json(result: GradeResult) -> str:
    """:func:`gradescope_results` with the defaults, as the text of a ``results.json``."""
    return gradescope_results(result).model_dump_json(indent=2, exclude_none=True) + "\n"


def write_gradescope(result: GradeResult, path: Path, **options) -> GradescopeResults:
    """Write :func:`gradescope_results` (``options`` go to it) to ``path`` atomically."""
    from grader.outputs.fsutil import atomic_write

    gs = gradescope_results(result, **options)
    atomic_write(path, gs.model_dump_json(indent=2, exclude_none=True) + "\n")
    return gs


# --- the class view ----------------------------------------------------------------------------------
@dataclass
class StudentRow:
    """One student of the class: their graded bundle (at most one attempt), problems and flags."""

    id: str
    name: str = ""
    email: str = ""
    pseudonym: str = ""
    on_roster: bool | None = None  # None: no roster
    label: str = ""  # the files graded, as shown
    attempt_status: str | None = None
    result: GradeResult | None = None
    report: str | None = None  # link, relative to the output folder
    problems: list[str] = field(default_factory=list)
    flags: list[str] = field(default_factory=list)
    texts: list[str] = field(default_factory=list)  # LMS online text / link entries: read, not graded
    override: Any = None  # grader.classroom.gradebook.Override: the instructor's points, which win
    override_drift: str = ""  # why the override needs a look: the grade under it changed

    @property
    def status(self) -> str:
        if self.attempt_status is not None:
            return self.attempt_status
        return "layout problem" if self.problems else "no submission"

    @property
    def graded_points(self) -> float | None:
        """What the grading gave (None: nothing was graded)."""
        return self.result.score if self.result is not None else None

    @property
    def points(self) -> float:
        """The student's points: the instructor's override when there is one, else the graded points."""
        if self.override is not None:
            return self.override.points
        return self.result.score if self.result is not None else 0.0

    @property
    def late(self):
        """The late part of the score, if the rubric has a deadline."""
        return next((p for p in self.result.parts if p.kind == "late"), None) if self.result is not None else None

    def rank_key(self, statistic: str) -> tuple:
        """Leaderboard order: points, then the rubric's episode statistic, then the mean return (ties broken)."""
        s = self.result.summary if self.result is not None else None
        stat = getattr(s, statistic, None) if s is not None else None
        return (-self.points, -(stat if stat is not None else -1e18),
                -(self.mean_return if self.mean_return is not None else -1e18), self.id)

    @property
    def max_points(self) -> float | None:
        return self.result.max_score if self.result is not None else None

    @property
    def mean_return(self) -> float | None:
        return self.result.summary.mean if self.result is not None and self.result.summary else None


def _report_link(out: Path, report_path: str | None) -> str | None:
    if not report_path:
        return None
    base = out / report_path
    for name in ("report.html", "result.json"):
        if (base / name).is_file():
            return f"{report_path}/{name}"
    return None


def collect(run: BatchRun) -> list[StudentRow]:
    """One row per student: roster students (roster order) then found students not on it."""
    gb = run.book
    rows: dict[str, StudentRow] = {}
    if run.roster is not None:
        for s in run.roster.students:
            rows[s.id] = StudentRow(id=s.id, name=s.name, email=s.email, on_roster=True)
    found = sorted(set(run.attempts) | {p.student for p in [*run.class_folder.problems, *run.class_folder.texts]
                                         if p.student})
    for sid in found:
        if sid not in rows:
            rows[sid] = StudentRow(id=sid, name=run.class_folder.names.get(sid, ""),
                                   on_roster=False if run.roster is not None else None)
    for sid, attempt in run.attempts.items():
        a = gb.recorded(attempt.id)
        row = rows[sid]
        row.label, row.attempt_status = a.file, a.status
        row.result, row.report = a.result(), _report_link(run.out, a.report_path)
    for p in run.class_folder.problems:
        if p.student and p.student in rows:
            rows[p.student].problems.append(f"{p.entry}: {p.reason}")
    for p in run.class_folder.texts:
        if p.student and p.student in rows:
            rows[p.student].texts.append(p.reason.split(":")[0] + " handed in (not graded)")
    overrides = gb.overrides(run.rubric.id)
    for sid, o in overrides.items():
        if sid in rows:
            rows[sid].override = o
            rows[sid].override_drift = o.drift(rows[sid].graded_points)
    for r in rows.values():
        r.pseudonym = gb.pseudonym(r.id)
    return list(rows.values())


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
        if r.result is not None:
            for c in r.result.checks:
                if c.name not in seen:
                    order.append(c.name)
                seen[c.name] += 1
                passed[c.name] += c.passed
    return [{"name": n, "passed": passed[n], "total": seen[n], "rate": passed[n] / seen[n]} for n in order]


def _apply_overrides_file(run: BatchRun) -> None:
    """Record ``--overrides FILE`` in the gradebook (with the graded points under each override now)."""
    from grader.classroom.overrides import apply_overrides, read_overrides

    if run.overrides_file is None:
        return
    rows = read_overrides(run.overrides_file, max_points=run.rubric.max_points)
    graded = {}
    for sid, attempt in run.attempts.items():
        a = run.book.recorded(attempt.id)
        graded[sid] = a.score if a is not None and a.is_finished and a.status != "error" else None
    apply_overrides(run.book, rows, rubric_id=run.rubric.id, graded=graded,
                    source=f"overrides file {Path(run.overrides_file).name}")


def write_exports(run: BatchRun) -> None:
    _apply_overrides_file(run)
    rows = collect(run)
    run.duplicates = _flag_duplicates(run, rows)
    rewrite_flagged_outputs(run, rows)
    max_points = run.rubric.max_points
    _write_grades(run, rows, max_points)
    _write_csv(run.out / "duplicates.csv", DUPLICATES_COLUMNS, [f.row() for f in run.duplicates.flags])
    problems = run.class_folder.problems + (run.roster.problems if run.roster else [])
    _write_csv(run.out / "problems.csv", PROBLEMS_COLUMNS,
               [{"entry": p.entry, "student": p.student or "", "reason": p.reason} for p in problems])
    _write_class_html(run, rows, problems, max_points)
    from grader.classroom.feedback import write_feedback_zips

    write_feedback_zips(run.out, rows, max_points=max_points, moodle_names=_moodle_names(run))


def _moodle_names(run: BatchRun) -> dict[str, str]:
    """Full names of Moodle participants: the worksheet's, else the download's folder names."""
    names = {k: v for k, v in run.class_folder.names.items() if k.startswith("moodle-")}
    if run.roster is not None:
        names.update({s.id: s.name for s in run.roster.students if s.id.startswith("moodle-") and s.name})
    return names


def _flag_duplicates(run: BatchRun, rows: list[StudentRow]):
    from grader.classroom.duplicates import Candidate, actions_from_extra, find_duplicates, reference_candidates

    candidates = []
    for sid, attempt in run.attempts.items():
        a = run.book.recorded(attempt.id)
        result = a.result()
        # "identical" compares the graded model's bytes (the attempt's digest covers the whole bundle)
        sha = result.model.sha256 if result is not None and result.model is not None else a.sha256
        candidates.append(Candidate(label=sid, file=a.file, sha256=sha, weights=_prints(run, sid, a.extra),
                                    actions=actions_from_extra(a.extra, run.probe_id)))
    candidates += reference_candidates(run.reference_dir, run.rubric.task, run.probe)
    dup = find_duplicates(candidates, threshold=run.behaviour_threshold)
    by_student = defaultdict(list)
    for f in dup.flags:
        for me, other in ((f.a, f.b), (f.b, f.a)):
            by_student[me.label].append(f"#{f.cluster} {f.kind} with {other.label}" +
                                        (f" ({100 * f.agreement:.1f}%)" if f.agreement else ""))
    for r in rows:
        r.flags = by_student.get(r.id, [])
    return dup


def _prints(run: BatchRun, student: str, extra: dict) -> list | None:
    """The stored weight prints of a student's model, or computed now from the bundle when they
    were stored by an older version."""
    from grader.classroom.duplicates import PRINTS_VERSION, prints_from_extra
    from grader.submission.bundle import read_bundle
    from grader.submission.weights import weight_prints

    prints = prints_from_extra(extra)
    # Only an older version's evidence is recomputed (grade final's bundles name no files: its
    # evidence is always this version's).
    if prints is None and extra and extra.get("prints_version") != PRINTS_VERSION and student in run.bundles:
        sub = read_bundle(run.bundles[student])
        prints = weight_prints(sub.model.data) if sub.model is not None else None
    return prints


def class_flags(dup, student: str) -> list:
    """The class-level flags of ``student`` as the result carries them (``scope`` class)."""
    from grader.result import DuplicateFlag

    out = []
    for f in dup.for_student(student):
        other = f.b if f.a.label == student else f.a
        out.append(DuplicateFlag(kind=f.kind, other=other.label, detail=f.detail, scope="class", cluster=f.cluster))
    return out


def rewrite_flagged_outputs(run: BatchRun, rows: list[StudentRow]) -> None:
    """Class-level flags into each student's result and report, through the one writer.

    They can only be decided when the whole class is graded, so each grading's outputs are
    written once when it finishes (a killed run keeps them) and, at the end, the outputs of a
    student whose class flags changed are written again, once, with them (also when a resumed
    run clears a flag). Scores never change."""
    from grader.outputs.fsutil import OutputDir, OutputDirError
    from grader.pipeline import write_outputs

    for r in rows:
        if r.result is None or r.id not in run.attempts:
            continue
        a = run.book.recorded(run.attempts[r.id].id)
        folder = run.out / a.report_path if a.report_path else None
        if folder is None or not (folder / "result.json").is_file():
            continue
        try:
            written = GradeResult.from_json((folder / "result.json").read_bytes())
        except (OSError, ValueError):
            continue
        own = [f for f in r.result.flags if f.scope != "class"]  # the grading's own (a reference copy)
        wanted = own + [f for f in class_flags(run.duplicates, r.id) if f.other not in {o.other for o in own}]
        if written.flags == wanted:
            r.result = written
            continue
        result = r.result.model_copy(update={"flags": wanted})
        try:
            write_outputs(result, OutputDir(folder, fresh=False), report=True, also_write={"results.json": gradescope_json})
        except OutputDirError as exc:  # a folder not written by the grader: the flags stay in the class outputs
            run._say(f"{r.id}: the class flags could not be added to the report: {exc}")
            continue
        r.result = result


def _note(r: StudentRow) -> str:
    notes = []
    if r.result is not None and r.status != "graded":
        notes.append((r.result.error or "")[:300])
    late = r.late
    if late is not None and late.points < 0:
        notes.append(f"late: {late.detail}")
    if r.override is not None:
        notes.append(f"override: {r.override.comment}" + (f" (REVIEW: {r.override_drift})" if r.override_drift else ""))
    return "; ".join(notes + r.problems + r.texts)


def _late_cells(r: StudentRow) -> dict[str, str]:
    late = r.result.late if r.result is not None else None
    part = r.late
    return {"late_penalty": _num(part.points) if part is not None else "",
            "submitted": (late.submitted or "") if late is not None else "",
            "days_late": str(late.days_late) if late is not None and late.submitted is not None else ""}


def _override_cells(r: StudentRow) -> dict[str, str]:
    o = r.override
    return {"override_comment": o.comment if o is not None else "",
            "override_by": f"{o.set_by} at {o.set_at}" if o is not None else ""}


def _write_grades(run: BatchRun, rows: list[StudentRow], max_points: float) -> None:
    """grades.csv (generic, keeps the roster's email), and the LMS's own import file when the
    roster was its worksheet / gradebook."""
    with_roster = run.roster is not None
    cols = [c for c in GRADES_COLUMNS if with_roster or c not in ("name", "email")]
    graded = [r for r in rows if r.on_roster is not False]
    _write_csv(run.out / "grades.csv", cols, [
        {"student_id": r.id, "name": r.name, "email": r.email,
         "points": _num(r.points) if (r.result is not None or r.override is not None) else "0",
         "max_points": _num(max_points), "status": r.status, "files": r.label, "note": _note(r),
         "graded_points": _num(r.graded_points), **_late_cells(r), **_override_cells(r)}
        for r in graded])
    if run.roster_file is None:
        return
    _write_lms_import(run, rows, max_points)


def lms_feedback(r: StudentRow, max_points: float) -> str:
    """The feedback comment an LMS gets for one student: :func:`grader.classroom.feedback.feedback_text`
    (the points with the band, the parts, lateness, an override), then the episode statistic, each
    failed check with how to fix it, the parts not handed in, what did not fit the layout, and the
    report's file name. Hidden grading seeds are scrubbed, as in every student output."""
    from grader.classroom.feedback import feedback_text
    from grader.outputs.seedpolicy import SeedPolicy
    from grader.scoring.points import NOT_HANDED_IN

    result = r.result
    if result is None and r.override is None:
        return "not graded: " + "; ".join(r.problems + r.texts) if r.problems or r.texts else ""
    lines = [feedback_text(r, max_points)]
    if result is not None:
        scrub = SeedPolicy(result).scrub
        s, info = result.summary, result.rubric
        value = getattr(s, info.statistic, None) if s is not None and info is not None else None
        if value is not None and s is not None and info is not None:
            lines.append(f"{info.statistic} return {value:.1f} over {s.n} episodes ({info.zero_at:g} earns 0 points, "
                         f"{info.full_at:g} full marks)")
        scored = {p.name for p in result.parts if p.kind == "notebook"}
        for c in result.checks:
            if not c.passed and (c.blocking or c.name in scored):
                lines.append(scrub(f"failed {c.name}: {c.message}" + (f" How to fix: {c.hint}" if c.hint else "")))
        missing = sorted({"notebook" if p.kind == "notebook" else "model"
                          for p in result.parts if p.detail == NOT_HANDED_IN})
        if missing:
            lines.append(f"{NOT_HANDED_IN}: " + ", ".join(missing))
    lines += r.problems + r.texts
    if r.report:
        lines.append(f"report: {r.report}")
    return "\n".join(lines)


def _write_lms_import(run: BatchRun, rows: list[StudentRow], max_points: float) -> None:
    """moodle_grades.csv / canvas_grades.csv from the LMS's own roster file; what was written (the
    file, the scaling, the Canvas column) goes into ``run.lms_export`` for the summary."""
    from grader.classroom import lms
    from grader.classroom.lms import canvas, moodle

    roster_file = run.roster_file
    if roster_file is None:
        return
    kind = lms.detect_roster_kind(roster_file)
    if kind == "generic":
        return
    students = {s.student_key: s for s in lms.read_lms_roster(roster_file)[1]}
    grades = {}
    for r in rows:
        s = students.get(r.id)
        if s is not None and (r.result is not None or r.override is not None or r.problems or r.texts):
            # an error row (the grader's problem, e.g. a notebook not run without bubblewrap) gets no grade in
            # the LMS: its partial points are not the student's grade; the feedback says what happened
            graded = (r.result is not None and r.result.status != "error") or r.override is not None
            grades[s.lms_id] = (round(r.points, 2) if graded else None, lms_feedback(r, max_points))
    scale_from = max_points if run.lms_points == "scaled" else None
    if kind == "moodle":
        summary = moodle.write_moodle_worksheet(roster_file, grades, run.out / "moodle_grades.csv",
                                             scale_from=scale_from)
    else:
        column = run.canvas_column or canvas.existing_canvas_column(
            roster_file, [run.rubric.title, run.rubric.id]) or run.rubric.title or run.rubric.id
        summary = canvas.write_canvas_gradebook(roster_file, column, grades, run.out / "canvas_grades.csv",
                                             points_possible=max_points, scale_from=scale_from)
    run.lms_export = summary


def _num(value: float | None) -> str:
    """Points as people read them: 2 decimals at most."""
    return "" if value is None else f"{value:.2f}".rstrip("0").rstrip(".")


def _write_class_html(run: BatchRun, rows: list[StudentRow], problems: list, max_points: float) -> None:
    from grader.outputs.fsutil import atomic_write
    from grader.outputs.templating import jinja_env

    board = sorted([r for r in rows if r.result is not None or r.override is not None],
                   key=lambda r: r.rank_key(run.rubric.scoring.statistic))
    scores = [r.points for r in board if r.status in ("graded", "invalid")]
    counts = Counter(r.status for r in rows)
    run.summary = {
        "students": len(rows), "graded": counts["graded"], "invalid": counts["invalid"], "error": counts["error"],
        "no_submission": counts["no submission"] + counts["layout problem"],
        "not_on_roster": sum(1 for r in rows if r.on_roster is False),
        "graded_now": sum(1 for a in run.attempts.values() if a.status == "queued"),
        "reused": sum(1 for a in run.attempts.values() if a.status != "queued"),
        # the instructor's notes (the sandbox's strength), once each: never in a student's output
        "operator_notes": sorted({n for r in rows if r.result is not None for n in r.result.operator_notes}),
    }
    from grader.tasks.diagnostics import class_summary

    diag = class_summary([(r.id, r.result) for r in rows])  # the class's outcomes and collapsed policies
    by_id = {r.id: r for r in rows}
    diag["collapsed"] = [by_id[i] for i in diag["collapsed"]]
    html = jinja_env().get_template("class.html").render(diag=diag,
        rubric=run.rubric, key=run.key, rows=rows, board=board, max_points=max_points, num=_num,
        svg=_score_svg(scores, max_points) if scores else "", checks=check_pass_rates(rows),
        problems=problems, dup=run.duplicates, summary=run.summary, roster=run.roster is not None,
        not_on_roster=[r for r in rows if r.on_roster is False],
        missing=[r for r in rows if r.on_roster and r.result is None],
        show_names=run.rubric.show_names, class_dir=str(run.class_dir), other_board=_other_board(run),
    )
    atomic_write(run.out / "class.html", html)


def _other_board(run: BatchRun) -> tuple[str, str] | None:
    """The leaderboard beside this one: the term's from the final evaluation, the final one from the term."""
    if run.final:
        return "the term's leaderboard", "../class.html"
    if (run.out / "final" / "class.html").is_file():
        return "the final evaluation", "final/class.html"
    return None


def _write_csv(path: Path, columns: list[str], rows: list[dict]) -> None:
    """A CSV whose every cell is spreadsheet-safe (:func:`grader.outputs.textsafe.csv_cell`), written atomically."""
    from grader.outputs.fsutil import atomic_write
    from grader.outputs.textsafe import csv_cell

    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=columns, extrasaction="ignore", lineterminator="\r\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: csv_cell(v) for k, v in r.items()})
    atomic_write(path, buf.getvalue())
