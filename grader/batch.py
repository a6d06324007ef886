"""``grade batch CLASS_DIR``: grade a whole class in parallel, resumably, into a gradebook.

    grade batch CLASS_DIR --rubric rubrics/lunarlander.toml [--roster roster.csv] [--out DIR]
                [--workers N] [--force] [--retry-errors] [--backend local|ray] [--address HOST:PORT]
                [--no-video] [--episodes N] [--reference DIR] [--behaviour-threshold F] [--no-progress]

Design (see ``docs/batch.md``):

* :mod:`grader.classdir` finds the submissions (folder-per-student or flat files) and the layout
  problems; the roster adds "no submission" and "not on the roster" students.
* Every file becomes an attempt in the gradebook (:mod:`grader.gradebook`, ``DIR/gradebook.sqlite``)
  keyed by (student, sha256, rubric key); finished attempts are reused unless ``--force``.
* ``--workers N`` grading slots run at once. A slot is a thread of this process holding a persistent
  one-worker :class:`~grader.engine.Engine`; the model runs in the engine's sandboxed child process,
  so a hostile or hanging model only costs its own row (the engine kills and replaces the worker).
  With ``--backend ray`` the slots are Ray actors (:mod:`grader.batch_ray`); the driver still writes
  the gradebook and the reports.
* Each submission's report is written into ``DIR/reports/.tmp-*`` and renamed to
  ``DIR/reports/<student>/<kind>-<sha12>/`` only when complete (``result.json`` written last); the
  gradebook row is then finished in one transaction. A killed run leaves at most ``running`` rows
  (requeued on the next run) and ``.tmp-*`` folders (deleted on the next run).
* At the end: duplicate detection (:mod:`grader.duplicates`) and the exports (:mod:`grader.exports`):
  ``grades.csv``, ``duplicates.csv``, ``problems.csv``, ``class.html`` and a Gradescope
  ``results.json`` in every report folder.
"""

from __future__ import annotations

import argparse
import fcntl
import hashlib
import os
import queue
import shutil
import signal
import socket
import sys
import threading
import time
import traceback
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from grader.classdir import MAX_NOTEBOOK_BYTES, ClassFolder, Entry, Problem, Roster, RosterError, read_roster, scan_class
from grader.gradebook import Attempt, Gradebook
from grader.onnx_model import MAX_FILE_BYTES
from grader.result import GradeResult
from grader.rubric import Rubric, RubricError, load_rubric

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_REFERENCE_DIR = REPO_ROOT / "reference" / "models"
EXIT_OK, EXIT_ERROR, EXIT_INTERRUPTED = 0, 1, 130


# --- what is graded, with which settings -----------------------------------------------------------
@dataclass(frozen=True)
class RubricKey:
    """The rubric identity stored in the gradebook: the rubric file's id and sha256, extended with
    any command-line override (``--episodes``) so that a different grading is a different attempt."""

    id: str
    sha256: str


def rubric_key(rubric: Rubric, episodes: int | None) -> RubricKey:
    if episodes is None:
        return RubricKey(rubric.id, rubric.sha256)
    return RubricKey(rubric.id, hashlib.sha256(f"{rubric.sha256}\nepisodes={episodes}".encode()).hexdigest())


def materialize(rubric: Rubric) -> Rubric:
    """A copy of the rubric that needs no other file: thresholds as numbers, grading seeds inline.
    Remote graders (Ray) get this; local slots use it too, so both give identical results."""
    zero, full = rubric.thresholds()
    scoring = rubric.scoring.model_copy(update={"zero": zero, "full": full})
    seeds = rubric.seeds.model_copy(update={"grading": rubric.all_grading_seeds(), "grading_file": None})
    out = rubric.model_copy(update={"scoring": scoring, "seeds": seeds, "baselines": None})
    out.path, out.sha256 = rubric.path, rubric.sha256
    return out


@dataclass
class JobOptions:
    """Everything a grading slot needs besides the file; picklable (sent to Ray actors)."""

    rubric: Rubric
    episodes: int | None
    video: bool
    probe_states: np.ndarray | None


@dataclass
class Job:
    attempt_id: int
    student: str
    kind: str
    rel: str
    sha256: str
    path: Path


def read_capped(path: Path, kind: str) -> bytes:
    from grader.grading import read_capped as read

    return read(path, MAX_FILE_BYTES if kind == "model" else MAX_NOTEBOOK_BYTES)


def run_job(name: str, data: bytes, *, kind: str, rel: str, opts: JobOptions, engine: Any, workdir: Path
            ) -> tuple[GradeResult, np.ndarray | None]:
    """Grade one submission's bytes (staged as ``workdir/src/name``) into ``workdir/report``.

    Never raises: a grader failure becomes a result with status ``error``. Returns the result and,
    for a graded model, its actions on the probe states (duplicate detection)."""
    from grader.engine import EngineFailure
    from grader.grading import grade

    src = workdir / "src"
    report_dir = workdir / "report"
    src.mkdir(parents=True, exist_ok=True)
    staged = src / name
    staged.write_bytes(data)
    actions = None
    try:
        result = grade(staged, task=opts.rubric.task, rubric=opts.rubric, episodes=opts.episodes, out=report_dir,
                       workers=1, video=opts.video, report=True, engine=engine, display_name=rel)
        if kind == "notebook":
            result.submission = rel
        if kind == "model" and result.status == "graded" and opts.probe_states is not None and engine is not None:
            try:
                actions = np.asarray(engine.actions(opts.probe_states), dtype=np.uint8)
            except EngineFailure as exc:
                result.warnings.append(f"duplicate check: the model failed on the probe states ({exc})")
    except Exception as exc:  # noqa: BLE001 - a grader bug or a missing optional part: this row only
        detail = f"{type(exc).__name__}: {exc}"
        if isinstance(exc, ImportError) and kind == "notebook":
            detail = f"notebook grading is not available in this installation ({exc})"
        result = GradeResult(submission=rel, task=opts.rubric.task, status="error",
                             error=f"internal grader error ({detail})")
        if os.environ.get("GRADER_DEBUG"):
            result.warnings.append(traceback.format_exc()[-2000:])
    finally:
        staged.unlink(missing_ok=True)
    return result, actions


# --- the runner ------------------------------------------------------------------------------------
@dataclass
class Outcome:
    attempt: Attempt
    reused: bool


@dataclass
class BatchRun:
    class_dir: Path
    out: Path
    rubric: Rubric
    roster: Roster | None = None
    workers: int = max(1, os.cpu_count() or 1)
    force: bool = False
    retry_errors: bool = False
    video: bool = True
    episodes: int | None = None
    backend: str = "local"
    address: str | None = None
    reference_dir: Path | None = DEFAULT_REFERENCE_DIR
    behaviour_threshold: float = 0.95
    show_progress: bool = True
    log: Any = None  # callable(str) for per-submission lines; default: print to stderr

    # filled in by run()
    folder: ClassFolder | None = None
    key: RubricKey | None = None
    gradebook: Gradebook | None = None
    attempts: dict[Entry, Attempt] = field(default_factory=dict)
    failures: int = 0
    interrupted: bool = False
    probe_states: np.ndarray | None = None  # the duplicate-detection probe set (models only)
    probe_id: str = ""
    elapsed: float = 0.0
    summary: dict = field(default_factory=dict)  # set by the exports
    duplicates: Any = None  # a grader.duplicates.DuplicateReport, set by the exports
    bar: Any = None
    _stop: threading.Event = field(default_factory=threading.Event)

    # -- set-up ---------------------------------------------------------------------------------
    @property
    def reports_dir(self) -> Path:
        return self.out / "reports"

    def _say(self, text: str) -> None:
        (self.log or (lambda s: print(s, file=sys.stderr, flush=True)))(text)

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
            raise RuntimeError(f"another `grade batch` is writing to {self.out}; wait for it or use another --out")
        return f

    def prepare(self) -> list[Job]:
        """Scan, enqueue every current file, return the jobs still to grade."""
        self.folder = scan_class(self.class_dir, exclude=self.out)
        self.key = rubric_key(self.rubric, self.episodes)
        self.gradebook = Gradebook(self.out / "gradebook.sqlite")
        self._cleanup_temp()
        self.gradebook.requeue_running()  # left by a killed run (we hold the folder's lock)
        jobs: list[Job] = []
        for entry in list(self.folder.entries):
            try:
                data = read_capped(entry.path, entry.kind)
            except OSError as exc:
                self.folder.problems.append(Problem(entry.rel, f"cannot read it ({exc.strerror})"))
                self.folder.entries.remove(entry)
                continue
            sha = hashlib.sha256(data).hexdigest()
            aid = self.gradebook.enqueue(entry.student, entry.rel, sha, self.key, force=self.force)
            attempt = self.gradebook.get(aid)
            if attempt.status == "error" and self.retry_errors:
                self.gradebook.enqueue(entry.student, entry.rel, sha, self.key, force=True)
                attempt = self.gradebook.get(aid)
            self.attempts[entry] = attempt
            if attempt.status == "queued":
                jobs.append(Job(aid, entry.student, entry.kind, entry.rel, sha, entry.path))
        return jobs

    def job_options(self, probe_states: np.ndarray | None) -> JobOptions:
        return JobOptions(rubric=materialize(self.rubric), episodes=self.episodes, video=self.video,
                          probe_states=probe_states)

    # -- per submission -------------------------------------------------------------------------
    def new_workdir(self, attempt_id: int) -> Path:
        self.reports_dir.mkdir(parents=True, exist_ok=True)
        d = self.reports_dir / f".tmp-{attempt_id}-{uuid.uuid4().hex[:8]}"
        d.mkdir()
        return d

    def final_dir(self, job: Job) -> Path:
        return self.reports_dir / job.student / f"{job.kind}-{job.sha256[:12]}"

    def finalize(self, job: Job, result: GradeResult, actions: np.ndarray | None, workdir: Path, wall_s: float,
                 weights: str | None, probe_id: str) -> None:
        """Complete the report folder, move it into place, then finish the gradebook row."""
        from grader.duplicates import extra_for
        from grader.exports import write_gradescope

        report_dir = workdir / "report"
        report_dir.mkdir(parents=True, exist_ok=True)
        write_gradescope(result, report_dir / "results.json", points=self.rubric.scoring.points)  # 0 / points when invalid
        tmp = report_dir / ".result.json.part"
        tmp.write_text(result.to_json())
        os.replace(tmp, report_dir / "result.json")  # last: a folder with result.json is complete
        final = self.final_dir(job)
        final.parent.mkdir(parents=True, exist_ok=True)
        if final.exists():
            trash = self.reports_dir / f".trash-{uuid.uuid4().hex[:8]}"
            os.rename(final, trash)
            shutil.rmtree(trash, ignore_errors=True)
        os.rename(report_dir, final)
        self.gradebook.finish(job.attempt_id, result, final, extra=extra_for(weights, actions, probe_id), wall_s=wall_s)
        shutil.rmtree(workdir, ignore_errors=True)

    def check_bytes(self, job: Job) -> tuple[bytes | None, str]:
        try:
            data = read_capped(job.path, job.kind)
        except OSError as exc:
            return None, f"cannot read the file any more ({exc.strerror})"
        if hashlib.sha256(data).hexdigest() != job.sha256:
            return None, "the file changed while the class was being graded; run `grade batch` again"
        return data, ""

    # -- the whole run ----------------------------------------------------------------------------
    def run(self) -> int:
        from grader.duplicates import probe_set

        lock = self._lock()
        try:
            jobs = self.prepare()
            total = len(self.attempts)
            reused = total - len(jobs)
            has_models = any(e.kind == "model" for e in self.attempts)
            self.probe_states, self.probe_id = probe_set(self.rubric.task) if has_models else (None, "")
            opts = self.job_options(self.probe_states)
            self._say(f"{total} submission files from {len(self.folder.students)} students in {self.class_dir}"
                      f" ({reused} already graded, {len(jobs)} to grade; {len(self.folder.problems)} layout problems)")
            t0 = time.perf_counter()
            with _Bar(total, reused, enabled=self.show_progress) as bar:
                self.bar = bar
                if self.backend == "ray":
                    from grader.batch_ray import run_ray

                    run_ray(self, jobs, opts)
                else:
                    self._run_local(jobs, opts)
            self.elapsed = time.perf_counter() - t0
            if self.interrupted:
                self._say("interrupted: finished rows are saved; run the same command again to continue")
                return EXIT_INTERRUPTED
            from grader.exports import write_exports

            write_exports(self)
            return EXIT_OK
        finally:
            if self.gradebook is not None:
                self.gradebook.close()
            lock.close()

    def record(self, job: Job, result: GradeResult, actions, workdir: Path, wall_s: float) -> None:
        """Driver side of a finished grading (both backends): finalize and report progress."""
        from grader.duplicates import weights_fingerprint

        weights = None
        if job.kind == "model":
            try:
                weights = weights_fingerprint(read_capped(job.path, job.kind))
            except OSError:
                weights = None
        self.finalize(job, result, actions, workdir, wall_s, weights, self.probe_id)
        if result.status != "graded":
            self.failures += 1
        score = f"{result.score:g}/{result.max_score:g}" if result.status == "graded" else (result.error or "")[:100]
        self.bar.advance(self.failures, f"{job.rel}: {result.status} {score} ({wall_s:.1f} s)")

    def _run_local(self, jobs: list[Job], opts: JobOptions) -> None:
        todo: queue.Queue[Job] = queue.Queue()
        for j in jobs:
            todo.put(j)
        n = max(1, min(self.workers, len(jobs)))
        host = f"{socket.gethostname()}:{os.getpid()}"
        errors: list[BaseException] = []

        engines = _spawn_engines(n) if any(j.kind == "model" for j in jobs) else [None] * n

        def slot(i: int) -> None:
            from grader.engine import Engine

            engine = engines[i]
            try:
                while not self._stop.is_set():
                    try:
                        job = todo.get_nowait()
                    except queue.Empty:
                        return
                    if self.gradebook.claim(job.attempt_id, worker=f"{host}:slot{i}") is None:
                        continue
                    t = time.perf_counter()
                    workdir = self.new_workdir(job.attempt_id)
                    data, problem = self.check_bytes(job)
                    if data is None:
                        result, actions = GradeResult(submission=job.rel, task=self.rubric.task, status="error", error=problem), None
                    else:
                        if engine is None and job.kind == "model":
                            engine = Engine(1)
                        result, actions = run_job(job.path.name, data, kind=job.kind, rel=job.rel, opts=opts,
                                                  engine=engine, workdir=workdir)
                    if self._stop.is_set():
                        return  # interrupted mid-grading: leave the row running, it is requeued next time
                    self.record(job, result, actions, workdir, time.perf_counter() - t)
            except BaseException as exc:  # noqa: BLE001 - surfaced by the main thread
                errors.append(exc)
                self._stop.set()
            finally:
                if engine is not None:
                    engine.close()

        threads = [threading.Thread(target=slot, args=(i,), name=f"grading-slot-{i}", daemon=True) for i in range(n)]
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


def _spawn_engines(n: int) -> list:
    """One single-worker engine per slot, started with SIGINT ignored (from the main thread), so a
    Ctrl-C stops the batch cleanly instead of killing the sandboxed workers mid-episode."""
    from grader.engine import Engine

    if threading.current_thread() is not threading.main_thread():
        return [Engine(1) for _ in range(n)]
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        return [Engine(1) for _ in range(n)]
    finally:
        signal.signal(signal.SIGINT, previous)


class _Bar:
    """A rich progress bar on stderr (done/total, failures, ETA); plain lines when not a terminal."""

    def __init__(self, total: int, done: int, *, enabled: bool):
        from grader.console import stderr

        self.console = stderr
        self.total, self.done = total, done
        self.live = enabled and (stderr.is_terminal or bool(os.environ.get("GRADER_FORCE_PROGRESS")))
        self._lock = threading.Lock()

    def __enter__(self) -> "_Bar":
        if self.live:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

            self.progress = Progress(TextColumn("grading"), BarColumn(), MofNCompleteColumn(),
                                     TextColumn("failures: {task.fields[failures]}"), TimeElapsedColumn(),
                                     TextColumn("eta"), TimeRemainingColumn(), console=self.console)
            self.progress.__enter__()
            self.task = self.progress.add_task("grading", total=self.total, completed=self.done, failures=0)
        return self

    def advance(self, failures: int, line: str) -> None:
        from rich.markup import escape

        with self._lock:
            self.done += 1
            if self.live:
                self.progress.update(self.task, completed=self.done, failures=failures)
                self.progress.console.print(escape(line), highlight=False)
            else:
                print(f"[{self.done}/{self.total}] {line}", file=sys.stderr, flush=True)

    def __exit__(self, *exc: object) -> None:
        if self.live:
            self.progress.__exit__(*exc)


# --- command line --------------------------------------------------------------------------------------
def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("class_dir", type=Path, help="folder with one sub-folder or file per student")
    p.add_argument("--rubric", type=Path, required=True, help="rubric TOML, e.g. rubrics/lunarlander.toml")
    p.add_argument("--roster", type=Path, help="CSV of id,name,email (header optional)")
    p.add_argument("--out", type=Path, help="output folder (default: CLASS_DIR.grading beside it)")
    p.add_argument("--workers", type=int, default=max(1, os.cpu_count() or 1),
                   help="submissions graded at once (default: all cores)")
    p.add_argument("--force", action="store_true", help="regrade submissions already in the gradebook")
    p.add_argument("--retry-errors", action="store_true",
                   help="regrade only the submissions whose last grading was a grader error (status error)")
    p.add_argument("--backend", choices=("local", "ray"), default="local", help="where to grade (default local)")
    p.add_argument("--address", help="Ray cluster address HOST:PORT (with --backend ray)")
    p.add_argument("--no-video", action="store_true", help="skip the MP4 videos")
    p.add_argument("--episodes", type=int, help="override the rubric's number of episodes (a separate gradebook key)")
    p.add_argument("--reference", type=Path, default=DEFAULT_REFERENCE_DIR,
                   help="folder of reference models compared for duplicates (default reference/models)")
    p.add_argument("--behaviour-threshold", type=float, default=0.95,
                   help="flag two policies whose actions agree on at least this fraction of the probe states (default 0.95)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    from grader import console

    if not args.class_dir.is_dir():
        console.fail(f"no such folder: {args.class_dir}")
        return EXIT_ERROR
    if args.workers < 1 or (args.episodes is not None and args.episodes < 1):
        console.fail("--workers and --episodes must be at least 1")
        return EXIT_ERROR
    if not 0.5 <= args.behaviour_threshold <= 1.0:
        console.fail("--behaviour-threshold must be between 0.5 and 1")
        return EXIT_ERROR
    try:
        rubric = load_rubric(args.rubric)
        materialize(rubric)  # fail now on a bad baselines/seeds file, not in every row
        roster = read_roster(args.roster) if args.roster else None
    except (RubricError, RosterError) as exc:
        console.fail(str(exc))
        return EXIT_ERROR
    if args.backend == "ray" and not args.address:
        console.fail("--backend ray needs --address HOST:PORT of the Ray head")
        return EXIT_ERROR
    out = args.out or args.class_dir.resolve().with_name(args.class_dir.resolve().name + ".grading")
    runner = BatchRun(class_dir=args.class_dir, out=out, rubric=rubric, roster=roster, workers=args.workers,
                      force=args.force, retry_errors=args.retry_errors, video=not args.no_video, episodes=args.episodes, backend=args.backend,
                      address=args.address, reference_dir=args.reference, behaviour_threshold=args.behaviour_threshold,
                      show_progress=not args.no_progress)
    try:
        code = runner.run()
    except RuntimeError as exc:
        console.fail(str(exc))
        return EXIT_ERROR
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
    if runner.folder.problems or (runner.roster and runner.roster.problems):
        c.print("[bold yellow]entries that do not fit the layout:[/bold yellow]")
        for p in runner.folder.problems + (runner.roster.problems if runner.roster else []):
            c.print(f"  {escape(p.entry)}: {escape(p.reason)}")
    dup = runner.duplicates
    if dup.flags:
        c.print(f"[bold yellow]{len(dup.flags)} duplicate flags[/bold yellow] (see duplicates.csv):")
        for f in dup.flags[:20]:
            c.print(f"  {f.kind}: {escape(f.a.label)} ~ {escape(f.b.label)}" + (f" ({100 * f.agreement:.1f}%)" if f.agreement is not None else ""))
        if len(dup.flags) > 20:
            c.print(f"  ... and {len(dup.flags) - 20} more")
        n_behaviour = sum(f.kind == "behaviour" for f in dup.flags)
        if n_behaviour > max(5, len(runner.attempts) // 2):
            c.print(f"[yellow]{n_behaviour} behaviour flags: policies of this class agree a lot anyway (similar training "
                    f"converges); look at the highest agreements first or raise --behaviour-threshold[/yellow]")
    for name in ("grades.csv", "duplicates.csv", "problems.csv", "class.html", "gradebook.sqlite"):
        c.print(f"  {escape(str(runner.out / name))}")
