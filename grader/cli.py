"""The ``grade`` command: a thin argparse layer over the keyword-only functions of the package.

    grade SUBMISSION [--task T] [--rubric FILE] [--episodes N] [--seeds A-B] [--out DIR]
                     [--json] [--no-video] [--workers N] [--device cpu|cuda]
    grade check SUBMISSION [...]        the student's self-check on the public seeds

Exit codes: 0 graded, 2 the submission is invalid, 1 an error of the grader or of its inputs
(a bad rubric, a bad command line).
"""

from __future__ import annotations

import argparse
import os
import sys
import traceback
from collections.abc import Sequence
from pathlib import Path

EXIT_GRADED, EXIT_ERROR, EXIT_INVALID = 0, 1, 2
STATUS_EXIT = {"graded": EXIT_GRADED, "invalid": EXIT_INVALID, "error": EXIT_ERROR}

# Sub-commands: name -> (module, help). Each module has add_arguments(parser) and run(args) -> int.
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "baselines": ("grader.baselines", "Evaluate the random policy and the rubric's reference models on its grading seeds."),
    "batch": ("grader.batch", "Grade a whole class folder in parallel into a resumable gradebook, with class exports."),
    "gradescope": ("grader.gradescope", "Build a Gradescope autograder zip (setup.sh, run_autograder, rubric, the grader's wheel)."),
    "serve": ("grader.site.server", "Run the course leaderboard website (uploads, grading queue, leaderboard)."),
    "tokens": ("grader.site.tokens", "Create login tokens for the students of a roster CSV (and the instructor)."),
}


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # usage errors are the caller's, exit 1 not 2
        self.print_usage(sys.stderr)
        self.exit(EXIT_ERROR, f"{self.prog}: error: {message}\n")


def _seeds_arg(text: str) -> list[int]:
    from grader.rubric import RubricError, parse_seeds

    try:
        return parse_seeds(text, where="--seeds")
    except RubricError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def add_grade_arguments(p: argparse.ArgumentParser) -> None:
    from grader.contract import TASK_NAMES
    from grader.grading import DEFAULTS

    p.add_argument("submission", type=Path, help="model.onnx or homework.ipynb")
    p.add_argument("--task", choices=TASK_NAMES, help="override the task recognised from the input signature")
    p.add_argument("--rubric", type=Path, help="rubric TOML (default: rubrics/<task>.toml)")
    p.add_argument("--episodes", type=int, help="number of episodes (the rubric's first N seeds)")
    p.add_argument("--seeds", type=_seeds_arg, help="exactly these seeds, one episode each: A-B or A,B,C")
    p.add_argument("--out", type=Path, help="output folder (default: SUBMISSION.grading/ beside it)")
    p.add_argument("--json", action="store_true", help="print the result as JSON on stdout")
    p.add_argument("--no-video", action="store_true", help="skip the MP4 videos")
    p.add_argument("--workers", type=int, default=DEFAULTS.workers, help=f"worker processes (default {DEFAULTS.workers})")
    p.add_argument("--device", choices=("cpu", "cuda"), default=DEFAULTS.device, help="onnxruntime device (default cpu)")
    p.add_argument("--debug", action="store_true", help="show tracebacks of grader errors")


def _run_grade(args: argparse.Namespace, *, selfcheck: bool) -> int:
    from grader import console
    from grader.grading import check, grade
    from grader.result import GradeResult
    from grader.rubric import RubricError

    if args.episodes is not None and args.episodes < 1:
        console.fail("--episodes must be at least 1")
        return EXIT_ERROR
    if args.workers < 1:
        console.fail("--workers must be at least 1")
        return EXIT_ERROR
    if not args.submission.is_file():
        console.fail(f"no such file: {args.submission}")
        return EXIT_ERROR
    kwargs = dict(task=args.task, rubric=args.rubric, episodes=args.episodes, seeds=args.seeds, out=args.out,
                  workers=args.workers, device=args.device)
    try:
        with console.progress_bar(enabled=True) as progress:
            if selfcheck:
                result = check(args.submission, progress=progress, **kwargs)
            else:
                result = grade(args.submission, video=not args.no_video, progress=progress, **kwargs)
    except RubricError as exc:
        console.fail(str(exc))
        return EXIT_ERROR
    except KeyboardInterrupt:
        console.fail("interrupted")
        return 130
    except Exception as exc:  # noqa: BLE001 - a grader bug: report it, don't dump a traceback
        if args.debug:
            traceback.print_exc()
        result = GradeResult(submission=args.submission.name, task=args.task, status="error",
                             error=f"internal grader error ({type(exc).__name__}: {exc}); rerun with --debug and report it")
    if getattr(args, "gradescope", None) is not None:  # grade --gradescope FILE
        from grader.gradescope import write_results

        try:
            write_results(result, args.gradescope, rubric=args.rubric)
        except Exception as exc:  # noqa: BLE001 - the grading stands; say why the file is missing
            console.fail(f"cannot write {args.gradescope}: {exc}")
            return EXIT_ERROR
    if args.json:
        print(result.to_json())
    else:
        console.print_result(result, selfcheck_note=_selfcheck_note(result) if selfcheck else "")
    return STATUS_EXIT[result.status]


def _selfcheck_note(result) -> str:
    from grader.rubric import RubricError, default_rubric_path, load_rubric

    if result.task is None:
        return ""
    try:
        rubric = load_rubric(default_rubric_path(result.task))
    except RubricError:
        return ""
    return (f"This was a self-check on {result.rubric.n_seeds if result.rubric else 'a few'} public seeds. "
            f"The final grading runs the same checks and {rubric.episodes} episodes on seeds you do not see; "
            f"points come from the {rubric.scoring.statistic} return ({rubric.scoring.zero} earns 0, "
            f"{rubric.scoring.full} earns {rubric.scoring.points:g}).")


def _make_main_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="grade", description="Grade an RL homework submission (ONNX model or notebook).",
                epilog="sub-commands: check" + "".join(f", {n}" for n in SUBCOMMANDS) + " (grade SUBCOMMAND --help)")
    add_grade_arguments(p)
    p.add_argument("--gradescope", type=Path, metavar="FILE", help="also write Gradescope's results.json to FILE")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    os.environ.setdefault("PYTHONWARNINGS", "ignore")
    if argv and argv[0] == "check":
        p = _Parser(prog="grade check", description="Self-check: the grader's checks and a few episodes on the public seeds.")
        add_grade_arguments(p)
        return _run_grade(p.parse_args(argv[1:]), selfcheck=True)
    if argv and argv[0] in SUBCOMMANDS:
        import importlib

        module_name, help_text = SUBCOMMANDS[argv[0]]
        module = importlib.import_module(module_name)
        p = _Parser(prog=f"grade {argv[0]}", description=help_text)
        module.add_arguments(p)
        p.add_argument("--debug", action="store_true", help="show tracebacks of errors")
        args = p.parse_args(argv[1:])
        try:
            return int(module.run(args))
        except KeyboardInterrupt:
            return 130
        except Exception as exc:  # noqa: BLE001 - the last net: a message, never a traceback
            if args.debug:
                traceback.print_exc()
            from grader import console

            console.fail(f"{type(exc).__name__}: {exc} (rerun with --debug for details)")
            return EXIT_ERROR
    return _run_grade(_make_main_parser().parse_args(argv), selfcheck=False)


if __name__ == "__main__":
    sys.exit(main())
