"""``grade final OUT --rubric R``: the final evaluation, after the deadline.

    grade final OUT --rubric rubrics/lunarlander.toml [--gradebook DB] [--roster FILE] [--overrides FILE]
                [--workers N] [--no-video] [--reference DIR] [--no-progress]

Each student's chosen submission -- their last, or their best, as the rubric's ``[final] choose``
says -- is graded again on the rubric's fresh private ``[final]`` seeds, none of them a public or a
term grading seed. The chosen submission comes from the term's gradebook: ``OUT/gradebook.sqlite``
of ``grade batch`` (which keeps every graded submission's bytes in ``OUT/submissions/``), or the
site's ``--gradebook`` (its uploads). The grades go into the same gradebook under the rubric id
``<id>.final`` (term and final side by side), the exports into ``OUT/final/``: ``grades.csv``,
the LMS's import file, ``class.html`` (the final leaderboard, beside the term's), the feedback zips
and a report per student. A submission's lateness is the term's (the final grade keeps its penalty);
overrides of the final grade use ``--overrides`` as in ``grade batch``.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from grader.classroom.archive import load_archived
from grader.classroom.gradebook import Attempt, Gradebook
from grader.errors import EXIT_ERROR, GraderBug, SetupError
from grader.limits import DEFAULT_BATCH_SLOTS, MAX_MODEL_BYTES
from grader.resources import reference_models_dir
from grader.submission.bundle import Bundle, Submission, read_capped, submission_from_bytes

FINAL_DIR = "final"


# --- which submission -------------------------------------------------------------------------------------
def choose(attempts: list[Attempt], how: str) -> dict[str, Attempt]:
    """Each student's submission for the final evaluation, from their finished term attempts (grader
    errors never count): ``last``, the most recently handed-in bytes (the first row of each bytes is
    when they were handed in); ``best``, the highest score among graded ones (graded before invalid)."""
    by_student: dict[str, list[Attempt]] = {}
    for a in attempts:
        if a.is_finished and a.status != "error":
            by_student.setdefault(a.student, []).append(a)
    chosen = {}
    for student, mine in sorted(by_student.items()):
        if how == "best":
            rank = {"graded": 0, "invalid": 1}
            chosen[student] = min(mine, key=lambda a: (rank[a.status], -(a.score or 0.0), a.id))
        else:
            first_seen: dict[str, int] = {}
            for a in mine:
                first_seen[a.sha256] = min(first_seen.get(a.sha256, a.id), a.id)
            last_sha = max(first_seen, key=lambda sha: first_seen[sha])
            chosen[student] = max((a for a in mine if a.sha256 == last_sha), key=lambda a: a.id)
    return chosen


# --- the run ---------------------------------------------------------------------------------------------
def _final_run_class():
    from grader.classroom.batch import BatchRun, Job

    @dataclass
    class FinalRun(BatchRun):
        """A batch run over the term's chosen submissions, graded under the final rubric."""

        term_out: Path = Path(".")
        gradebook_path: Path | None = None
        term_rubric: Any = None
        subs: dict[str, Submission] = field(default_factory=dict)

        def prepare(self) -> list:
            from grader.classroom.classdir import ClassFolder
            from grader.classroom.roster import Problem
            from grader.scoring.rubric import rubric_key

            self.key = rubric_key(self.rubric)
            self.gradebook = Gradebook(self.gradebook_path or self.term_out / "gradebook.sqlite")
            self._cleanup_temp()
            self.gradebook.requeue_running()
            term = [a for a in self.gradebook.attempts(rubric_id=self.term_rubric.id)]
            if not term:
                raise SetupError(f"the gradebook {self.gradebook.path} has no graded submission under rubric "
                                 f"{self.term_rubric.id!r}; grade the term first (grade batch / grade serve)")
            chosen = choose(term, self.term_rubric.final.choose)
            self.folder = ClassFolder(root=self.term_out, layout="final")
            jobs = []
            for student, a in chosen.items():
                sub = self._bytes_of(a)
                if sub is None:
                    self.folder.problems.append(Problem(f"{a.file}", "the bytes of this submission were not kept "
                                                        "(graded before the archive existed); run grade batch on it "
                                                        "again, then grade final", student))
                    continue
                self.subs[student] = sub
                previous = a.result()
                late = previous.late if previous is not None else None
                bundle = Bundle(student=student, label=sub.label)
                self.folder.bundles.append(bundle)
                aid = self.gradebook.enqueue(student, a.file, a.sha256, self.key, force=self.force)
                attempt = self.gradebook.get(aid)
                if attempt is None:  # enqueue returned the id it wrote: only a vanished database gets here
                    raise GraderBug(f"attempt {aid} of {student} vanished from the gradebook")
                self.attempts[student], self.bundles[student] = attempt, bundle
                if attempt.status == "queued":
                    jobs.append(Job(aid, student, sub.label, a.sha256, bundle, late=late))
            return jobs

        def _bytes_of(self, a: Attempt) -> Submission | None:
            sub = load_archived(self.term_out, a.student, a.sha256)
            if sub is not None:
                return sub
            path = Path(a.file)  # the site keeps the upload itself
            if path.is_absolute() and path.is_file():
                import hashlib

                data = read_capped(path, MAX_MODEL_BYTES)
                if hashlib.sha256(data).hexdigest() == a.sha256:
                    return submission_from_bytes("model.onnx", data, student=a.student, label=f"{path.name}")
            return None

        def read_job(self, job) -> tuple[Submission | None, str]:
            return self.subs[job.student], ""

        def final_dir(self, job) -> Path:
            return self.reports_dir / job.student / job.digest[:12]

    return FinalRun


# --- command line ------------------------------------------------------------------------------------------
def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("out", type=Path, help="the term's output folder of `grade batch` (final results go to OUT/final)")
    p.add_argument("--rubric", type=Path, required=True, help="the term's rubric, with a [final] table of fresh seeds")
    p.add_argument("--gradebook", type=Path, help="the term's gradebook (default: OUT/gradebook.sqlite; the site's --db)")
    p.add_argument("--roster", type=Path, help="roster / Moodle worksheet / Canvas gradebook, as for `grade batch`")
    p.add_argument("--overrides", type=Path, metavar="FILE", help="CSV of student_id,points,comment for the final grades")
    p.add_argument("--workers", type=int, default=DEFAULT_BATCH_SLOTS, help="submissions graded at once")
    p.add_argument("--force", action="store_true", help="grade the final evaluation again")
    p.add_argument("--no-video", action="store_true", help="skip the MP4 videos")
    p.add_argument("--reference", type=Path, default=reference_models_dir(),
                   help="folder of reference models compared for duplicates (default: the shipped ones)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--lms-points", choices=("scaled", "raw"), default="scaled",
                   help="LMS import file: points scaled to the LMS's maximum (default) or the rubric's raw points")
    p.add_argument("--canvas-column", metavar="HEADER", help="the Canvas gradebook column to fill (as for `grade batch`)")


def run(args: argparse.Namespace) -> int:
    from grader.classroom import lms
    from grader.classroom.batch import run_and_summarise
    from grader.outputs import console
    from grader.scoring.rubric import load_rubric

    if args.workers < 1:
        console.fail("--workers must be at least 1")
        return EXIT_ERROR
    loaded = load_rubric(args.rubric, materialize=False)
    term_rubric = loaded.materialize()
    # fresh seeds, checked against the public and term seeds; thresholds from baselines on those seeds
    final_rubric = loaded.final_rubric().materialize()
    final_rubric.check_baselines_follow_seeds(command="grade final")
    if args.overrides is not None:
        from grader.classroom.overrides import read_overrides

        read_overrides(args.overrides, max_points=final_rubric.max_points)
    gradebook = args.gradebook or args.out / "gradebook.sqlite"
    if not gradebook.is_file():
        raise SetupError(f"no gradebook at {gradebook}: give the term's output folder of `grade batch`, or the "
                         "site's gradebook with --gradebook")
    roster = None
    if args.roster:
        from grader.classroom.roster import read_roster

        kind, students = lms.read_lms_roster(args.roster)
        roster = read_roster(args.roster) if kind == "generic" else lms.to_roster(students)
    runner = _final_run_class()(
        class_dir=args.out, out=args.out / FINAL_DIR, rubric=final_rubric, roster=roster, workers=args.workers,
        force=args.force, video=not args.no_video, reference_dir=args.reference, show_progress=not args.no_progress,
        roster_file=args.roster, overrides_file=args.overrides, final=True, term_out=args.out,
        lms_points=args.lms_points, canvas_column=args.canvas_column,
        gradebook_path=gradebook, term_rubric=term_rubric)
    return run_and_summarise(runner)
