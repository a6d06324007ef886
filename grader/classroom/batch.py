"""``grade batch CLASS_DIR``: grade a whole class in parallel, resumably, into a gradebook.

    grade batch CLASS_DIR --rubric rubrics/lunarlander.toml [--roster roster.csv] [--out DIR]
                [--workers N] [--force] [--retry-errors] [--backend local|ray] [--address HOST:PORT]
                [--no-video] [--episodes N] [--reference DIR] [--behaviour-threshold F] [--no-progress]

Design (see ``docs/batch.md``):

* :mod:`grader.classroom.classdir` finds the submissions (folder-per-student or flat files) and the layout
  problems; the roster adds "no submission" and "not on the roster" students.
* Every file becomes an attempt in the gradebook (:mod:`grader.classroom.gradebook`, ``DIR/gradebook.sqlite``)
  keyed by (student, sha256, rubric key); finished attempts are reused unless ``--force``.
* ``--workers N`` grading slots run at once. A slot is a thread of this process holding a persistent
  one-worker :class:`~grader.runtime.engine.Engine`; the model runs in the engine's sandboxed child process,
  so a hostile or hanging model only costs its own row (the engine kills and replaces the worker).
  With ``--backend ray`` the slots are Ray actors (:mod:`grader.classroom.batch_ray`); the driver still writes
  the gradebook and the reports.
* Each submission's report is written into ``DIR/reports/.tmp-*`` and renamed to
  ``DIR/reports/<student>/<kind>-<sha12>/`` only when complete (``result.json`` written last); the
  gradebook row is then finished in one transaction. A killed run leaves at most ``running`` rows
  (requeued on the next run) and ``.tmp-*`` folders (deleted on the next run).
* At the end: duplicate detection (:mod:`grader.classroom.duplicates`) and the exports (:mod:`grader.classroom.exports`):
  ``grades.csv``, ``duplicates.csv``, ``problems.csv``, ``class.html`` and a Gradescope
  ``results.json`` in every report folder.
"""

from __future__ import annotations

import argparse
import fcntl
import os
import queue
import shutil
import signal
import socket
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from grader.classroom.archive import archive_submission
from grader.classroom.classdir import ClassFolder, scan_class
from grader.classroom.duplicates import ProbeSet
from grader.classroom.gradebook import Attempt, Gradebook
from grader.classroom.jobs import JobOptions, grade_job
from grader.classroom.roster import Roster
from grader.classroom.slots import JobOutcome, SlotGrader, run_slot
from grader.errors import EXIT_ERROR, EXIT_INTERRUPTED, GraderBug, SetupError
from grader.errors import EXIT_GRADED as EXIT_OK
from grader.limits import DEFAULT_BATCH_SLOTS
from grader.outputs.console import CountBar
from grader.pipeline import Options
from grader.resources import reference_models_dir
from grader.result import GradeResult
from grader.scoring.rubric import Rubric, RubricKey, load_rubric, rubric_key
from grader.submission.bundle import Bundle, Submission, read_bundle

if TYPE_CHECKING:
    from collections.abc import Callable

    from grader.classroom.duplicates import DuplicateReport
    from grader.classroom.lms.table import ExportSummary
    from grader.result import Late
    from grader.runtime.engine import Engine


# --- what is graded, with which settings -----------------------------------------------------------
@dataclass
class Job:
    attempt_id: int
    student: str
    label: str
    digest: str
    bundle: Bundle
    late: Late | None = None  # when the rubric has a deadline


# --- the runner ------------------------------------------------------------------------------------
@dataclass
class BatchRun:
    class_dir: Path
    out: Path
    rubric: Rubric
    roster: Roster | None = None
    workers: int = DEFAULT_BATCH_SLOTS
    force: bool = False
    retry_errors: bool = False
    video: bool = True
    episodes: int | None = None
    backend: str = "local"
    address: str | None = None
    layout: str = "auto"
    reference_dir: Path | None = field(default_factory=reference_models_dir)
    behaviour_threshold: float = 0.95
    show_progress: bool = True
    roster_file: Path | None = None  # an LMS worksheet / gradebook: grades are also written in its format
    lms_points: str = "scaled"  # scaled: to the LMS's maximum (Maximum Grade, Points Possible); raw: the rubric's
    canvas_column: str | None = None  # the Canvas gradebook column to fill (default: detected, else a new one)
    lms_export: ExportSummary | None = None  # what the LMS import file holds, set by the exports
    overrides_file: Path | None = None  # student_id,points,comment: recorded in the gradebook before the exports
    final: bool = False  # `grade final`: the final evaluation (exports into out/final, the final leaderboard)
    log: Callable[[str], None] | None = None  # per-submission lines; default: print to stderr

    # filled in by run()
    folder: ClassFolder | None = None
    key: RubricKey | None = None
    gradebook: Gradebook | None = None
    attempts: dict[str, Attempt] = field(default_factory=dict)  # student -> attempt
    bundles: dict[str, Bundle] = field(default_factory=dict)
    failures: int = 0
    interrupted: bool = False
    probe: ProbeSet | None = None  # the duplicate-detection probe set
    probe_id: str = ""
    elapsed: float = 0.0
    summary: dict = field(default_factory=dict)  # set by the exports
    duplicates: DuplicateReport | None = None  # set by the exports
    late: dict[str, Late] = field(default_factory=dict)  # student -> lateness
    base_opts: JobOptions | None = None  # the options every job shares (a late job gets its own copy)
    bar: CountBar | None = None
    _stop: threading.Event = field(default_factory=threading.Event)

    # -- set-up ---------------------------------------------------------------------------------
    @property
    def class_folder(self) -> ClassFolder:
        """The scanned class folder (set by :meth:`prepare`)."""
        if self.folder is None:
            raise GraderBug("the class folder was asked for before it was scanned")
        return self.folder

    @property
    def book(self) -> Gradebook:
        """The open gradebook (set by :meth:`prepare`)."""
        if self.gradebook is None:
            raise GraderBug("the gradebook was asked for before it was opened")
        return self.gradebook

    @property
    def reports_dir(self) -> Path:
        return self.out / "reports"

    def _say(self, text: str) -> None:
        from grader.outputs.textsafe import clean_text

        (self.log or (lambda s: print(s, file=sys.stderr, flush=True)))(clean_text(text))

    def _cleanup_temp(self) -> None:
        if self.reports_dir.is_dir():
            for p in self.reports_dir.iterdir():
                if p.name.startswith((".tmp-", ".trash-")):
                    shutil.rmtree(p, ignore_errors=True)

    def _lock(self):
        self.out.mkdir(parents=True, exist_ok=True)
        f = open(self.out / ".batch.lock", "w")
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.close()
            raise SetupError(f"another `grade batch` is writing to {self.out}; wait for it or use another --out") from None
        return f

    def prepare(self) -> list[Job]:
        """Scan, enqueue every student's bundle, return the jobs still to grade."""
        self.folder = scan_class(self.class_dir, exclude=self.out, layout=self.layout)
        self.hand_ins()
        self.key = rubric_key(self.rubric, self.episodes)
        self.gradebook = Gradebook(self.out / "gradebook.sqlite")
        self._cleanup_temp()
        self.book.requeue_running()  # left by a killed run (we hold the folder's lock)
        jobs: list[Job] = []
        for bundle in self.class_folder.bundles:
            sub = read_bundle(bundle)
            digest = sub.digest()
            archive_submission(self.out, sub, digest)  # kept for `grade final` (a later download replaces the folder)
            aid = self.book.enqueue(bundle.student, bundle.label, digest, self.key, force=self.force)
            attempt = self.book.recorded(aid)
            late = self.late.get(bundle.student)
            if attempt.is_finished and _late_changed(attempt, late):  # an extension or a new time: regrade
                self.book.enqueue(bundle.student, bundle.label, digest, self.key, force=True)
                attempt = self.book.recorded(aid)
            if attempt.status == "error" and self.retry_errors:
                self.book.enqueue(bundle.student, bundle.label, digest, self.key, force=True)
                attempt = self.book.recorded(aid)
            self.attempts[bundle.student] = attempt
            self.bundles[bundle.student] = bundle
            if attempt.status == "queued":
                jobs.append(Job(aid, bundle.student, bundle.label, digest, bundle, late=late))
        return jobs

    def hand_ins(self) -> None:
        """Each student's lateness (``self.late``) when the rubric has a deadline: the submission time
        from the roster (Moodle's worksheet, a ``submitted`` column), else Canvas's late flag, else
        the files' modification time; extensions from the rubric's file and the roster."""
        from grader.classroom import handins as H
        from grader.scoring import deadline as D

        times: dict[str, H.HandIn] = {}
        roster_ext: dict[str, D.Extension] = {}
        if self.rubric.deadline is None:
            return
        tz = self.rubric.deadline.local_tz()
        if self.roster_file is not None:
            from grader.classroom import lms

            times, roster_ext = H.roster_times(self.roster_file, lms.detect_roster_kind(self.roster_file), tz=tz)
        deadlines = D.deadlines_of(self.rubric, roster_extensions=roster_ext)
        if deadlines is None:  # checked above: the rubric has a deadline
            return
        for bundle in self.class_folder.bundles:
            known = times.get(bundle.student)
            if known is not None and known.submitted is not None:
                hand_in = known
            elif self.class_folder.layout == "canvas":
                late = bundle.student in self.class_folder.late_flags
                hand_in = H.HandIn(None, "Canvas's late flag", late_flag=late)
            else:
                files = [p for p in (bundle.model, bundle.notebook, *bundle.weights) if p is not None]
                hand_in = H.HandIn(H.file_time(files), "file time")
            self.late[bundle.student] = deadlines.late(bundle.student, hand_in.submitted, source=hand_in.source,
                                                       late_flag=hand_in.late_flag)

    def options_for(self, job: Job) -> JobOptions:
        """The job's options: the shared ones, with the job's lateness when it has one."""
        from dataclasses import replace

        opts = self.base_opts
        if opts is None:
            raise GraderBug("a job's options were asked for before the run set the shared ones")
        if job.late is None:
            return opts
        return replace(opts, options=replace(opts.options, late=job.late))

    def job_options(self, probe: ProbeSet | None) -> JobOptions:
        options = Options(episodes=self.episodes, video=self.video, report=True, workers=1)
        return JobOptions(rubric=self.rubric, options=options, probe=probe, gradescope=True)

    # -- per submission -------------------------------------------------------------------------
    def new_workdir(self, attempt_id: int) -> Path:
        self.reports_dir.mkdir(parents=True, exist_ok=True)
        d = self.reports_dir / f".tmp-{attempt_id}-{uuid.uuid4().hex[:8]}"
        d.mkdir()
        return d

    def final_dir(self, job: Job) -> Path:
        return self.reports_dir / job.student / f"{job.digest[:12]}"

    def read_job(self, job: Job) -> tuple[Submission | None, str]:
        """The bundle's bytes now; None and why when they changed since the run started."""
        sub = read_bundle(job.bundle)
        if sub.digest() != job.digest:
            return None, "the files changed while the class was being graded; run `grade batch` again"
        return sub, ""

    def record(self, job: Job, outcome: JobOutcome) -> None:
        """Driver side of a finished grading (every backend): move its complete report folder (the
        grading wrote it once, :func:`grader.pipeline.write_outputs`) into place, then finish the
        gradebook row in one transaction."""
        result = outcome.result
        report_dir = outcome.report_dir
        if report_dir is None or not (report_dir / "result.json").is_file():  # never graded (files changed, a bug)
            from grader.classroom.exports import gradescope_json
            from grader.outputs.fsutil import OutputDir
            from grader.pipeline import write_outputs

            report_dir = self.new_workdir(job.attempt_id) / "report"
            write_outputs(result, OutputDir(report_dir), report=False, also_write={"results.json": gradescope_json})
        final = self.final_dir(job)
        final.parent.mkdir(parents=True, exist_ok=True)
        if final.exists():
            trash = self.reports_dir / f".trash-{uuid.uuid4().hex[:8]}"
            os.rename(final, trash)
            shutil.rmtree(trash, ignore_errors=True)
        os.rename(report_dir, final)
        self.book.finish(job.attempt_id, result, final, extra=outcome.extra, wall_s=outcome.wall_s)
        if report_dir.parent.name.startswith(".tmp-"):
            shutil.rmtree(report_dir.parent, ignore_errors=True)
        if result.status != "graded":
            self.failures += 1
        from grader.scoring.points import fmt_points

        detail = fmt_points(result.score, result.max_score) if result.status == "graded" else (result.error or "")[:100]
        if self.bar is not None:
            self.bar.advance(self.failures, f"{job.label}: {result.status} {detail} ({outcome.wall_s:.1f} s)")

    # -- the whole run ----------------------------------------------------------------------------
    def run(self) -> int:
        from grader.classroom.duplicates import hidden_probe_set

        lock = self._lock()
        try:
            jobs = self.prepare()
            total = len(self.attempts)
            reused = total - len(jobs)
            has_models = bool(self.attempts)
            self.probe = hidden_probe_set(self.rubric) if has_models else None
            self.probe_id = self.probe.id if self.probe is not None else ""
            opts = self.base_opts = self.job_options(self.probe)
            self._say(f"{total} submissions from {len(self.class_folder.students)} students in {self.class_dir}"
                      f" ({self.class_folder.layout} layout; {reused} already graded, {len(jobs)} to grade; "
                      f"{len(self.class_folder.problems)} layout problems)")
            t0 = time.perf_counter()
            with CountBar(total, reused, label="grading", enabled=self.show_progress) as bar:
                self.bar = bar
                graders: list[SlotGrader[Job]]
                if self.backend == "ray":
                    from grader.classroom.batch_ray import ray_graders

                    graders = list(ray_graders(self, opts, n=min(self.workers, len(jobs))))
                else:
                    graders = [_LocalGrader(self, opts, engine) for engine in _spawn_engines(min(self.workers, len(jobs)))]
                try:
                    self._run_slots(jobs, graders)
                finally:
                    if self.backend == "ray":
                        from grader.classroom.batch_ray import shutdown

                        shutdown()
            self.elapsed = time.perf_counter() - t0
            if self.interrupted:
                self._say("interrupted: finished rows are saved; run the same command again to continue")
                return EXIT_INTERRUPTED
            from grader.classroom.exports import write_exports

            write_exports(self)
            return EXIT_OK
        finally:
            if self.gradebook is not None:
                self.book.close()
            lock.close()

    def _run_slots(self, jobs: list[Job], graders: list[SlotGrader[Job]]) -> None:
        """One thread per grader, each running the shared claim -> grade -> record loop."""
        source = _QueueSource(self, jobs)
        host = f"{socket.gethostname()}:{os.getpid()}"
        errors: list[BaseException] = []

        def slot(i: int, grader) -> None:
            try:
                run_slot(source, grader, stop=self._stop, name=f"{host}:slot{i}", task=self.rubric.task)
            except BaseException as exc:  # noqa: BLE001 - surfaced by the main thread
                errors.append(exc)
                self._stop.set()

        threads = [threading.Thread(target=slot, args=(i, g), name=f"grading-slot-{i}", daemon=True)
                   for i, g in enumerate(graders)]
        previous = None
        if threading.current_thread() is threading.main_thread():
            def on_sigint(signum, frame):  # stop first, so that no slot records a grading the Ctrl-C broke
                self._stop.set()
                raise KeyboardInterrupt

            previous = signal.signal(signal.SIGINT, on_sigint)
        for t in threads:
            t.start()
        try:
            for t in threads:
                while t.is_alive():
                    t.join(timeout=0.5)
        except KeyboardInterrupt:
            self.interrupted = True
            self._stop.set()
            for t in threads:
                t.join(timeout=10)
        finally:
            if previous is not None:
                signal.signal(signal.SIGINT, previous)
        if errors:
            raise errors[0]


class _QueueSource:
    """Jobs of one batch run: claimed in the gradebook, recorded by the run."""

    def __init__(self, run: BatchRun, jobs: list[Job]):
        self.run = run
        self.todo: queue.Queue[Job] = queue.Queue()
        for j in jobs:
            self.todo.put(j)

    def claim(self, slot: str) -> Job | None:
        while True:
            try:
                job = self.todo.get_nowait()
            except queue.Empty:
                return None
            if self.run.book.claim(job.attempt_id, worker=slot) is not None:
                return job

    def idle(self) -> bool:
        return False  # a batch knows all its jobs up front

    def record(self, job: Job, outcome: JobOutcome) -> None:
        self.run.record(job, outcome)


class _LocalGrader:
    """A local slot: grades in this process's thread, the model in the slot's persistent engine."""

    def __init__(self, run: BatchRun, opts: JobOptions, engine: Engine):
        self.run, self.opts, self.engine = run, opts, engine

    def grade(self, job: Job) -> JobOutcome:
        t = time.perf_counter()
        sub, problem = self.run.read_job(job)
        if sub is None:
            return JobOutcome(GradeResult(submission=job.label, task=self.run.rubric.task, status="error", error=problem))
        outcome = grade_job(sub, self.run.options_for(job), engine=self.engine, workdir=self.run.new_workdir(job.attempt_id))
        outcome.wall_s = time.perf_counter() - t
        return outcome

    def close(self) -> None:
        if self.engine is not None:
            self.engine.close()


def _late_changed(attempt: Attempt, late: Late | None) -> bool:
    """Whether a finished attempt's recorded lateness differs from the one known now (an extension
    granted, a deadline moved, a new worksheet): its score must be composed again."""
    try:
        result = attempt.result()
    except ValueError:
        return False
    if result is None or result.status == "error":
        return False
    if result.late is None or late is None:
        return (result.late is None) != (late is None)
    return not result.late.same_penalty(late)


def _spawn_engines(n: int) -> list:
    """One single-worker engine per slot, started with SIGINT ignored (from the main thread), so a
    Ctrl-C stops the batch cleanly instead of killing the sandboxed workers mid-episode."""
    from grader.runtime.engine import Engine

    if threading.current_thread() is not threading.main_thread():
        return [Engine(1) for _ in range(n)]
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        return [Engine(1) for _ in range(n)]
    finally:
        signal.signal(signal.SIGINT, previous)


# --- command line --------------------------------------------------------------------------------------
def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("class_dir", type=Path, help="folder with one sub-folder or file per student (or an LMS download)")
    p.add_argument("--rubric", type=Path, required=True, help="rubric TOML, e.g. rubrics/lunarlander.toml")
    p.add_argument("--roster", type=Path, help="roster: id,name,email CSV, Moodle's grading worksheet or Canvas's "
                                               "gradebook export (grades are written back in its format too)")
    p.add_argument("--lms", choices=("auto", "plain", "moodle", "canvas"), default="auto",
                   help="layout of CLASS_DIR: plain ids, Moodle's or Canvas's download names (default: detected)")
    p.add_argument("--out", type=Path, help="output folder (default: CLASS_DIR.grading beside it)")
    p.add_argument("--workers", type=int, default=DEFAULT_BATCH_SLOTS,
                   help=f"submissions graded at once (default: {DEFAULT_BATCH_SLOTS}, the cores)")
    p.add_argument("--force", action="store_true", help="regrade submissions already in the gradebook")
    p.add_argument("--retry-errors", action="store_true",
                   help="regrade only the submissions whose last grading was a grader error (status error)")
    p.add_argument("--backend", choices=("local", "ray"), default="local", help="where to grade (default local)")
    p.add_argument("--address", help="Ray cluster address HOST:PORT (with --backend ray; without it a local Ray "
                                     "of its own is started on this machine and stopped at the end)")
    p.add_argument("--no-video", action="store_true", help="skip the MP4 videos")
    p.add_argument("--episodes", type=int, help="override the rubric's number of episodes (a separate gradebook key)")
    p.add_argument("--reference", type=Path, default=reference_models_dir(),
                   help="folder of reference models compared for duplicates (default: the shipped ones)")
    p.add_argument("--behaviour-threshold", type=float, default=0.95,
                   help="in a class of fewer than 8 policies, flag two whose actions agree on at least this fraction "
                        "of the probe states (default 0.95); a larger class flags what stands out from its own "
                        "distribution of agreement (docs/batch.md)")
    p.add_argument("--overrides", type=Path, metavar="FILE",
                   help="CSV of student_id,points,comment: the instructor's points, recorded in the gradebook "
                        "(they survive regrades; empty points remove one)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--lms-points", choices=("scaled", "raw"), default="scaled",
                   help="LMS import file: scale points to the LMS's maximum (Moodle's Maximum Grade, Canvas's Points "
                        "Possible; the default) or write the rubric's raw points")
    p.add_argument("--canvas-column", metavar="HEADER",
                   help="the Canvas gradebook column to fill, e.g. 'HW 3 (12345)' (default: the column titled like "
                        "the rubric's title or id, else a new column)")


def _warn_versions(rubric_path: Path) -> None:
    """Say at start when this machine's packages differ from those that made the rubric's baselines."""
    from grader.scoring.versions import baselines_version_warning

    warning = baselines_version_warning(rubric_path)
    if warning:
        print(f"warning: {warning}", file=sys.stderr, flush=True)


def run(args: argparse.Namespace) -> int:
    from grader.classroom import lms
    from grader.outputs import console

    if not args.class_dir.is_dir():
        console.fail(f"no such folder: {args.class_dir}")
        return EXIT_ERROR
    if args.workers < 1 or (args.episodes is not None and args.episodes < 1):
        console.fail("--workers and --episodes must be at least 1")
        return EXIT_ERROR
    if not 0.5 <= args.behaviour_threshold <= 1.0:
        console.fail("--behaviour-threshold must be between 0.5 and 1")
        return EXIT_ERROR
    rubric = load_rubric(args.rubric)  # validated as a whole, seeds and baselines read: before any submission
    rubric.check_baselines_follow_seeds(command="grade batch")
    _warn_versions(args.rubric)
    if args.overrides is not None:
        from grader.classroom.overrides import read_overrides

        read_overrides(args.overrides, max_points=rubric.max_points)  # a bad row stops the run before grading
    if args.episodes is not None and args.episodes > len(rubric.all_grading_seeds()):
        raise SetupError(f"--episodes {args.episodes}: rubric {rubric.id!r} has only {len(rubric.all_grading_seeds())} grading seeds")
    roster = None
    if args.roster:
        from grader.classroom.roster import read_roster

        kind, students = lms.read_lms_roster(args.roster)
        roster = read_roster(args.roster) if kind == "generic" else lms.to_roster(students)
    out = args.out or args.class_dir.resolve().with_name(args.class_dir.resolve().name + ".grading")
    runner = BatchRun(class_dir=args.class_dir, out=out, rubric=rubric, roster=roster, workers=args.workers,
                      force=args.force, retry_errors=args.retry_errors, video=not args.no_video, episodes=args.episodes,
                      backend=args.backend, address=args.address, layout=args.lms, reference_dir=args.reference,
                      behaviour_threshold=args.behaviour_threshold, show_progress=not args.no_progress,
                      roster_file=args.roster, overrides_file=args.overrides, lms_points=args.lms_points,
                      canvas_column=args.canvas_column)
    return run_and_summarise(runner)


def run_and_summarise(runner: BatchRun) -> int:
    """Run a class grading (``grade batch``, ``grade final``); an interrupt keeps the finished rows."""
    from grader.outputs import console

    try:
        code = runner.run()
    except KeyboardInterrupt:
        console.fail("interrupted: finished rows are saved; run the same command again to continue")
        return EXIT_INTERRUPTED
    if code == EXIT_OK:
        _print_summary(runner)
    return code


def _print_summary(runner: BatchRun) -> None:
    from rich.console import Console
    from rich.markup import escape

    c = Console(highlight=False, soft_wrap=True)
    s = runner.summary
    c.print(f"[bold]{s['students']} students[/bold]: {s['graded']} graded, {s['invalid']} invalid, {s['error']} errors, "
            f"{s['no_submission']} without a submission, {s['not_on_roster']} not on the roster "
            f"(graded now: {s['graded_now']}, reused: {s['reused']}, {runner.elapsed:.0f} s)")
    if runner.class_folder.problems or (runner.roster and runner.roster.problems):
        c.print("[bold yellow]entries that do not fit the layout:[/bold yellow]")
        for p in runner.class_folder.problems + (runner.roster.problems if runner.roster else []):
            c.print(f"  {escape(p.entry)}: {escape(p.reason)}")
    for note in s.get("operator_notes", []):
        c.print(f"[yellow]for the instructor:[/yellow] {escape(note)}")
    if runner.class_folder.texts:
        c.print(f"online text / link entries (read, not graded: the assignment grades files): "
                f"{escape(', '.join(p.entry for p in runner.class_folder.texts[:5]))}"
                + (f" ... and {len(runner.class_folder.texts) - 5} more" if len(runner.class_folder.texts) > 5 else ""))
    dup = runner.duplicates
    if dup is not None and dup.flags:
        c.print(f"[bold yellow]{len(dup.clusters)} duplicate clusters[/bold yellow] ({len(dup.flags)} flagged pairs; "
                "see duplicates.csv), strongest evidence first:")
        for cl in dup.clusters[:20]:
            c.print(f"  #{cl.number} {escape(', '.join(cl.members))}: {', '.join(cl.kinds)}")
        if len(dup.clusters) > 20:
            c.print(f"  ... and {len(dup.clusters) - 20} more")
    for name in ("grades.csv", "duplicates.csv", "problems.csv", "class.html", "feedback_reports.zip",
                 *(["feedback_moodle.zip"] if (runner.out / "feedback_moodle.zip").is_file() else []), "gradebook.sqlite"):
        c.print(f"  {escape(str(runner.out / name))}")
    _print_lms_export(c, runner)


def _print_lms_export(c, runner: BatchRun) -> None:
    """The LMS import file, the one the instructor needs next: where, what was scaled, which column."""
    from rich.markup import escape

    export = runner.lms_export
    if export is None:
        return
    c.print(f"[bold]import into the LMS:[/bold] {escape(str(export.path))} ({len(export.written)} students)")
    if export.scale:
        c.print(f"  {escape(export.scale)}")
    if export.column:
        if export.new_column:
            c.print(f"  [yellow]a new column {escape(repr(export.column))}: the gradebook has no assignment titled "
                    f"like the rubric; to fill the existing assignment, pass --canvas-column 'NAME (ID)' with its "
                    f"header[/yellow]")
        else:
            c.print(f"  filled the existing assignment column {escape(repr(export.column))}")
    if export.missing:
        c.print(f"  [yellow]{len(export.missing)} graded students are not in the roster file and cannot be "
                f"imported: {escape(', '.join(export.missing[:5]))}[/yellow]")
