"""The one claim -> grade -> record loop, shared by every grading slot.

A *slot* grades one submission at a time. ``grade batch`` runs local slots (threads, each with a
persistent sandboxed engine) or one slot per Ray actor; the site runs a small pool of slots.
They differ only in where work comes from and where results go (a :class:`Source`) and in who
grades (a :class:`SlotGrader`); :func:`run_slot` is the loop they all run:

* ``claim`` a job (atomically, in the gradebook: two slots never take the same attempt);
* ``grade`` it: any exception of the grader becomes an ``error`` outcome for this job only;
* ``record`` the outcome, unless the run is stopping -- then the job is left ``running`` and
  requeued at the next start, so a Ctrl-C never records a grading it broke.
"""

from __future__ import annotations

import logging
import threading
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, TypeVar

from grader.result import GradeResult

log = logging.getLogger("grader")


@dataclass
class JobOutcome:
    """What grading one job produced."""

    result: GradeResult
    report_dir: Path | None = None  # the finished output folder, to be moved into place
    extra: dict | None = None  # analysis data for the gradebook (duplicate fingerprints, probe actions)
    wall_s: float = 0.0


J = TypeVar("J")  # a job, as its source hands it out (grade batch's Job, the site's Attempt)
J_in = TypeVar("J_in", contravariant=True)


class Source(Protocol[J]):
    def claim(self, slot: str) -> J | None:
        """The next job for ``slot``, or None when there is nothing to do right now."""

    def idle(self) -> bool:
        """Wait for more work; False when none will come (the loop then ends)."""

    def record(self, job: J, outcome: JobOutcome) -> None:
        """Store the outcome (gradebook row, report folder)."""


class SlotGrader(Protocol[J_in]):
    def grade(self, job: J_in) -> JobOutcome: ...

    def close(self) -> None: ...


def crashed(job: object, exc: BaseException, *, task: str | None) -> JobOutcome:
    """The outcome of a job whose grading raised: the grader's fault, never the student's."""
    log.error("grading %r failed:\n%s", getattr(job, "label", job), traceback.format_exc())
    return JobOutcome(GradeResult(submission=str(getattr(job, "label", "submission")), task=task, status="error",
                               error=f"internal grader error ({type(exc).__name__}: {str(exc)[:200]}); this is not a "
                                     "problem with the submission, the course staff can regrade it"))


def run_slot(source: Source[J], grader: SlotGrader[J], *, stop: threading.Event, name: str, task: str | None = None) -> None:
    """Claim, grade and record jobs until ``source`` runs dry or ``stop`` is set."""
    try:
        while not stop.is_set():
            job = source.claim(name)
            if job is None:
                if source.idle():
                    continue
                return
            try:
                outcome = grader.grade(job)
            except Exception as exc:  # noqa: BLE001 - this job only
                outcome = crashed(job, exc, task=task)
            if stop.is_set():
                return  # interrupted mid-grading: the job stays running and is requeued next time
            source.record(job, outcome)
    finally:
        grader.close()
