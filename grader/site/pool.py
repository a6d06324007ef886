"""The grading pool: a few threads, each driving one persistent sandboxed ``Engine(1)``.

The gradebook is the queue (one source of truth): a thread claims the oldest queued attempt
(``claim_next``, atomically queued -> running), grades it into ``<data>/reports/<id>/`` and
records the result (``finish``). The untrusted model only ever runs in the engine's child
processes, which are killed and replaced when they hang, crash or exceed their limits; any
exception in the server-side part becomes an ``error`` result, and the thread carries on.

On shutdown the threads stop claiming; an attempt interrupted mid-grading stays ``running``
and is requeued (``requeue_running``) when the site starts again.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import threading
import time
from collections.abc import Callable
from pathlib import Path

from grader.site import attempts as A

from grader.seedpolicy import SeedPolicy

log = logging.getLogger("grader.site")

SAFE_LABEL = re.compile(r"^[a-z]{1,16}$")


def postprocess(result, out_dir: Path) -> None:
    """Make a grading result safe to show: videos named by label only, no grading seed in messages.

    The per-episode seeds stay in ``result.json`` and the gradebook (for the instructor); the
    site never renders them.
    """
    for v in result.videos:
        if not SAFE_LABEL.match(v.label):
            continue
        src = out_dir / v.path
        dst = out_dir / f"{v.label}.mp4"
        if src.is_file() and src.resolve().parent == out_dir.resolve() and src != dst:
            os.replace(src, dst)
            v.path = dst.name
    scrub = SeedPolicy(result).scrub  # the report's own rule: hidden seeds become episode numbers
    result.warnings = [scrub(w) for w in result.warnings]
    result.error = scrub(result.error) or result.error
    for c in result.checks:
        c.message, c.hint = scrub(c.message), scrub(c.hint)


class GradingPool:
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
        self.gradebook = gradebook
        self.rubric = rubric
        self.data_dir = Path(data_dir)
        self.n_workers = workers
        self.video = video
        self.on_finish = on_finish
        self.poll_s = poll_s
        self._stop = threading.Event()
        self._wake = threading.Condition()
        self._pending_wakes = 0
        self._threads: list[threading.Thread] = []
        self.busy: dict[int, int] = {}  # thread index -> attempt id being graded

    # -- lifecycle -----------------------------------------------------------------------------
    def start(self) -> None:
        for i in range(self.n_workers):
            t = threading.Thread(target=self._run, args=(i,), name=f"grading-{i}", daemon=True)
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

    # -- the worker thread ---------------------------------------------------------------------
    def _idle(self) -> None:
        with self._wake:
            if self._pending_wakes == 0 and not self._stop.is_set():
                self._wake.wait(self.poll_s)
            self._pending_wakes = max(0, self._pending_wakes - 1)

    def _run(self, index: int) -> None:
        from grader.engine import Engine

        engine = None
        gradebook = self.gradebook
        try:
            while not self._stop.is_set():
                try:
                    # Only this rubric's attempts (exact file version): ``grade batch`` may share the database.
                    attempt = gradebook.claim_next(rubric_sha256=self.rubric.sha256, worker=f"site-{os.getpid()}-{index}")
                except Exception:  # noqa: BLE001 - a locked or busy database: try again later
                    log.exception("claim_next failed")
                    self._stop.wait(self.poll_s)
                    continue
                if attempt is None:
                    self._idle()
                    continue
                aid = A.attempt_id(attempt)
                self.busy[index] = aid
                try:
                    if engine is None:
                        engine = Engine(1)
                    result, report_path, engine_ok = self._grade(engine, attempt)
                    if not engine_ok:
                        _close_quietly(engine)
                        engine = None
                    if self._stop.is_set():
                        # The server is going down: the engine may have been killed under us, so the
                        # result may be wrong. Leave the attempt running; it is requeued at restart.
                        log.info("attempt %s interrupted by shutdown; it will be graded after restart", aid)
                        break
                    self._finish(gradebook, aid, result, report_path)
                except Exception:  # noqa: BLE001 - never let one attempt kill the thread
                    log.exception("grading attempt %s failed", aid)
                    if engine is not None:
                        _close_quietly(engine)
                        engine = None
                    time.sleep(0.5)
                finally:
                    self.busy.pop(index, None)
        finally:
            if engine is not None:
                _close_quietly(engine)

    def _finish(self, gradebook, aid: int, result, report_path) -> None:
        for attempt_n in range(5):
            try:
                gradebook.finish(aid, result, report_path)
                break
            except Exception:  # noqa: BLE001 - database busy: retry, the result is on disk anyway
                log.exception("finish(%s) failed (try %d)", aid, attempt_n + 1)
                time.sleep(1 + attempt_n)
        self.on_finish(aid)

    def _grade(self, engine, attempt):
        """Grade one attempt; returns (result, report path or None, whether the engine is still usable)."""
        from grader.grading import grade
        from grader.result import GradeResult

        aid = A.attempt_id(attempt)
        out_dir = self.data_dir / "reports" / str(aid)
        if out_dir.exists():  # a grading interrupted by a restart
            shutil.rmtree(out_dir, ignore_errors=True)
        out_dir.mkdir(parents=True, exist_ok=True)
        engine_ok = True
        rubric = self.rubric
        try:
            result = grade(
                A.file_path(attempt), task=rubric.task, rubric=rubric, out=out_dir, workers=1, video=self.video,
                report=False, engine=engine, display_name=f"attempt {aid}",
            )
        except Exception as exc:  # noqa: BLE001 - a grader bug or a bad rubric, not the student's fault
            log.exception("attempt %s: grading raised", aid)
            engine_ok = False
            result = GradeResult(submission=f"attempt {aid}", task=getattr(rubric, "task", None), status="error",
                                 error=f"internal grader error ({type(exc).__name__}); the instructor has been told")
        postprocess(result, out_dir)
        report_path = None
        try:
            from grader.report import write_report
        except ImportError:
            write_report = None
        if write_report is not None:
            try:
                write_report(result, out_dir, rubric=rubric)
                report_path = out_dir
            except Exception:  # noqa: BLE001 - the result still counts without its report
                log.exception("attempt %s: the report failed", aid)
        tmp = out_dir / ".result.json.part"
        tmp.write_text(result.to_json())
        os.replace(tmp, out_dir / "result.json")
        return result, (str(report_path) if report_path else None), engine_ok


def _close_quietly(engine) -> None:
    try:
        engine.close()
    except Exception:  # noqa: BLE001
        log.exception("closing an engine failed")
