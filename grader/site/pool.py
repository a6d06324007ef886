"""The grading pool: a few slots, each driving one persistent sandboxed ``Engine(1)``.

The gradebook is the queue (one source of truth). Each slot runs the grader's one claim -> grade
-> record loop (:func:`grader.classroom.slots.run_slot`): it claims the oldest queued attempt of this rubric
(``claim_next``, atomically queued -> running), grades the upload through ``grade batch``'s job
(:func:`grader.classroom.jobs.grade_job`: the one pipeline, the course's late part from the upload
time) into ``<data>/reports/<id>/`` and records the result (``finish``, with the probe actions the
duplicate flags compare). The untrusted model only ever runs in the engine's child processes,
which are killed and replaced when they hang, crash or exceed their limits; any exception in the
server-side part becomes an ``error`` result, and the slot carries on.

On shutdown the threads stop claiming; an attempt interrupted mid-grading stays ``running``
and is requeued (``requeue_running``) when the site starts again.
"""

from __future__ import annotations

import logging
import os
import shutil
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from grader.outputs.seedpolicy import SeedPolicy

if TYPE_CHECKING:
    from grader.classroom.duplicates import ProbeSet
    from grader.classroom.gradebook import Attempt
    from grader.classroom.slots import JobOutcome
    from grader.result import Late
    from grader.runtime.engine import Engine

log = logging.getLogger("grader.site")


def scrub_texts(result, engine=None) -> None:
    """The site's last word before the outputs are written (``grade_job``'s ``decide``): no grading
    seed in any message. The per-episode seeds stay in ``result.json`` and the gradebook (for the
    instructor); the site never renders them. (Videos are named by label by the pipeline itself:
    ``Options.video_names``.)"""
    scrub = SeedPolicy(result).scrub  # the report's own rule: hidden seeds become episode numbers
    result.warnings = [scrub(w) for w in result.warnings]
    result.error = scrub(result.error) or result.error
    for c in result.checks:
        c.message, c.hint = scrub(c.message), scrub(c.hint)


class GradingPool:
    """A few grading slots over the site's gradebook, each running the shared loop (:func:`grader.classroom.slots.run_slot`)."""

    def __init__(
        self,
        *,
        gradebook,
        rubric,
        data_dir: Path,
        workers: int = 1,
        video: bool = True,
        on_finish: Callable[[int], None] = lambda attempt_id: None,
        poll_s: float = 1.0,
    ):
        from grader.scoring.rubric import rubric_key

        self.gradebook = gradebook
        self.rubric = rubric
        self.key = rubric_key(rubric)
        self.data_dir = Path(data_dir)
        self.n_workers = workers
        self.video = video
        self.on_finish = on_finish
        self.poll_s = poll_s
        self._stop = threading.Event()
        self._wake = threading.Condition()
        self._pending_wakes = 0
        self._threads: list[threading.Thread] = []
        self._probe: ProbeSet | None = None
        self._probe_lock = threading.Lock()
        self.busy: dict[int, int] = {}  # slot index -> attempt id being graded
        from grader.scoring.deadline import deadlines_of

        self.deadlines = deadlines_of(rubric)  # the rubric's [deadline] and extensions file (None: no deadline)

    def late_for(self, attempt: Attempt) -> Late | None:
        """The upload's lateness: its upload time against the student's deadline (None: no deadline)."""
        if self.deadlines is None:
            return None
        return self.deadlines.late(attempt.student, attempt.created_at, source="upload time")

    # -- lifecycle -----------------------------------------------------------------------------
    def start(self) -> None:
        from grader.classroom.slots import run_slot

        for i in range(self.n_workers):
            t = threading.Thread(target=run_slot, args=(_SiteSource(self, i), _SiteGrader(self, i)),
                                 kwargs={"stop": self._stop, "name": f"site-{os.getpid()}-{i}", "task": self.rubric.task},
                                 name=f"grading-{i}", daemon=True)
            t.start()
            self._threads.append(t)

    def wake(self) -> None:
        with self._wake:
            self._pending_wakes += 1
            self._wake.notify_all()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop claiming attempts; wait a little for the threads (an unfinished grading is requeued at the next start)."""
        self._stop.set()
        with self._wake:
            self._wake.notify_all()
        deadline = time.monotonic() + timeout
        for t in self._threads:
            t.join(timeout=max(0.0, deadline - time.monotonic()))

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def idle(self) -> None:
        with self._wake:
            if self._pending_wakes == 0 and not self._stop.is_set():
                self._wake.wait(self.poll_s)
            self._pending_wakes = max(0, self._pending_wakes - 1)

    def probe(self) -> ProbeSet:
        """The hidden probe set of the rubric (:func:`grader.classroom.duplicates.hidden_probe_set`, computed once)."""
        from grader.classroom.duplicates import hidden_probe_set

        with self._probe_lock:
            if self._probe is None:
                self._probe = hidden_probe_set(self.rubric)
            return self._probe


class _SiteSource:
    """Work from the site's gradebook: the oldest queued attempt of this rubric."""

    def __init__(self, pool: GradingPool, index: int):
        self.pool, self.index = pool, index

    def claim(self, slot: str):
        try:
            # Only this rubric's attempts (the same key ``grade batch`` uses): they may share the database.
            attempt = self.pool.gradebook.claim_next(rubric_sha256=self.pool.key.sha256, worker=slot)
        except Exception:  # noqa: BLE001 - a locked or busy database: try again later
            log.exception("claim_next failed")
            return None
        if attempt is not None:
            self.pool.busy[self.index] = attempt.id
        return attempt

    def idle(self) -> bool:
        self.pool.idle()
        return not self.pool.stopping

    def record(self, attempt: Attempt, outcome: JobOutcome) -> None:
        aid = attempt.id
        try:
            for n in range(5):
                try:
                    self.pool.gradebook.finish(aid, outcome.result, outcome.report_dir, extra=outcome.extra,
                                               wall_s=outcome.wall_s)
                    break
                except Exception:  # noqa: BLE001 - database busy: retry, the result is on disk anyway
                    log.exception("finish(%s) failed (try %d)", aid, n + 1)
                    self.pool._stop.wait(1 + n)
            self.pool.on_finish(aid)
        finally:
            self.pool.busy.pop(self.index, None)


class _SiteGrader:
    """One slot's grader: a persistent sandboxed engine, the one pipeline, then the site's safe naming."""

    def __init__(self, pool: GradingPool, index: int):
        self.pool, self.index = pool, index
        self.engine: Engine | None = None

    def grade(self, attempt: Attempt) -> JobOutcome:
        """Grade one attempt with ``grade batch``'s job (:func:`grader.classroom.jobs.grade_job`): the one
        pipeline (with the course's late part), the duplicate evidence, then the site's wording, written once."""
        from grader.classroom.jobs import JobOptions, grade_job
        from grader.limits import MAX_MODEL_BYTES
        from grader.pipeline import Options
        from grader.runtime.engine import Engine
        from grader.submission.bundle import read_capped, submission_from_bytes

        t0 = time.monotonic()
        aid = attempt.id
        out_dir = self.pool.data_dir / "reports" / str(aid)
        if out_dir.exists():  # a grading interrupted by a restart
            shutil.rmtree(out_dir, ignore_errors=True)
        data = read_capped(Path(attempt.file), MAX_MODEL_BYTES)
        sub = submission_from_bytes("model.onnx", data, student=attempt.student, label=f"attempt {aid}")
        probe = self.pool.probe()
        opts = JobOptions(rubric=self.pool.rubric, options=Options(video=self.pool.video, report=True, workers=1,
                                                                   video_names="label", late=self.pool.late_for(attempt)),
                          probe=probe)
        if self.engine is None:
            self.engine = Engine(1)
        try:
            outcome = grade_job(sub, opts, engine=self.engine, out=out_dir, decide=scrub_texts)
        except Exception:
            self.close()  # the engine may be in any state: start a fresh one next time
            raise
        outcome.wall_s = time.monotonic() - t0
        return outcome

    def close(self) -> None:
        if self.engine is not None:
            _close_quietly(self.engine)
            self.engine = None


def _close_quietly(engine) -> None:
    try:
        engine.close()
    except Exception:  # noqa: BLE001
        log.exception("closing an engine failed")
