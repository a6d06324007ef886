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
from typing import TYPE_CHECKING, NoReturn

from grader.errors import EXIT_ERROR, EXIT_INTERRUPTED, STATUS_EXIT

if TYPE_CHECKING:
    pass

# Sub-commands: name -> (module, help). Each module has add_arguments(parser) and run(args) -> int.
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "baselines": ("grader.baseline_run", "Evaluate the random policy and the rubric's reference models on its grading seeds."),
    "batch": ("grader.classroom.batch", "Grade a whole class folder in parallel into a resumable gradebook, with class exports."),
    "doctor": ("grader.doctor", "Check this machine before grading: versions against the lock and the baselines, the "
                                "sandbox, onnxruntime, and the dynamics replayed against the baselines files."),
    "final": ("grader.classroom.final", "After the deadline: grade each student's last (or best) submission again on the rubric's "
                                        "fresh private [final] seeds, into OUT/final (grades, LMS files, final leaderboard)."),
    "gradescope": ("grader.gradescope.autograder", "Build a Gradescope autograder zip (setup.sh, run_autograder, rubric, the grader's wheel)."),
    "serve": ("grader.site.server", "Run the course leaderboard website (uploads, grading queue, leaderboard)."),
    "tokens": ("grader.site.tokens", "Create login tokens for the students of a roster CSV (and the instructor)."),
}


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:  # usage errors are the caller's, exit 1 not 2
        self.print_usage(sys.stderr)
        self.exit(EXIT_ERROR, f"{self.prog}: error: {message}\n")


def _seeds_arg(text: str) -> list[int]:
    from grader.scoring.rubric import RubricError, parse_seeds

    try:
        return parse_seeds(text, where="--seeds")
    except RubricError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def add_grade_arguments(p: argparse.ArgumentParser) -> None:
    from grader.limits import DEFAULT_WORKERS
    from grader.tasks import task_names

    p.add_argument("submission", type=Path, help="model.onnx, homework.ipynb, or a student's folder")
    p.add_argument("--task", choices=task_names(), help="override the task recognised from the input signature")
    p.add_argument("--rubric", type=Path, help="rubric TOML (default: rubrics/<task>.toml)")
    p.add_argument("--episodes", type=int, help="number of episodes (the rubric's first N seeds)")
    p.add_argument("--seeds", type=_seeds_arg, help="exactly these seeds, one episode each: A-B or A,B,C")
    p.add_argument("--out", type=Path, help="output folder (default: SUBMISSION.grading/ beside it; "
                                             "`grade check` writes nothing unless given)")
    p.add_argument("--json", action="store_true", help="print the result as JSON on stdout")
    p.add_argument("--no-video", action="store_true", help="skip the MP4 videos")
    p.add_argument("--workers", type=int, default=DEFAULT_WORKERS, help=f"worker processes (default {DEFAULT_WORKERS})")
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu", help="onnxruntime device (default cpu)")
    p.add_argument("--debug", action="store_true", help="show tracebacks of grader errors")


def _early_engine():
    """The sandboxed workers, started before anything else is read or imported (the engine's
    module imports neither numpy nor the task registry): their interpreters boot while this one
    builds the command line, imports the grader, reads and checks the submission. The default
    number is started; :func:`_size_engine` fits it to the command line. None when the engine
    cannot start (e.g. a bad $GRADER_SANDBOX): the pipeline's own engine then reports why."""
    from grader.limits import DEFAULT_WORKERS
    from grader.runtime.engine import Engine

    try:
        return Engine(DEFAULT_WORKERS)
    except ValueError:
        return None


def _size_engine(engine, args: argparse.Namespace):
    """``engine`` with as many workers as the command needs (no more than it has seeds)."""
    from grader.runtime.dispatch import worker_count

    if engine is not None:
        engine.resize(worker_count(args.workers, len(args.seeds) if args.seeds is not None else args.episodes))
    return engine


def _run_grade(args: argparse.Namespace, *, selfcheck: bool, engine=None) -> int:
    """Grade (or self-check) one submission with ``engine`` (see :func:`_early_engine`), which is
    closed on every way out."""
    try:
        return _grade_with(args, selfcheck=selfcheck, engine=engine)
    finally:
        if engine is not None:
            engine.close()


def _grade_with(args: argparse.Namespace, *, selfcheck: bool, engine) -> int:
    from grader.errors import SetupError
    from grader.outputs import console

    if args.episodes is not None and args.episodes < 1:
        console.fail("--episodes must be at least 1")
        return EXIT_ERROR
    if args.workers < 1:
        console.fail("--workers must be at least 1")
        return EXIT_ERROR
    path: Path = args.submission
    if not path.exists():
        console.fail(f"no such file or folder: {path}" + _did_you_mean(str(path)))
        return EXIT_ERROR
    if path.is_dir() and getattr(args, "gradescope", None) is None:
        from grader.classroom.classdir import class_folder_evidence

        why = class_folder_evidence(path)
        if why:
            console.fail(f"{path} looks like a class folder, not one student's hand-in: {why}. `grade` grades one "
                         f"student; did you mean `grade batch {path}`?")
            return EXIT_ERROR
    kwargs = dict(task=args.task, rubric=args.rubric, episodes=args.episodes, seeds=args.seeds, out=args.out,
                  workers=args.workers, device=args.device)
    try:
        engine = _size_engine(engine, args)
        from grader.api import check, grade

        with console.progress_bar(enabled=True) as progress:
            if selfcheck:
                result = check(path, progress=progress, engine=engine, **kwargs)
            else:
                result = grade(path, video=not args.no_video, progress=progress, engine=engine,
                               submitted=getattr(args, "submitted", None), student=getattr(args, "student", None),
                               **kwargs)
    except SetupError as exc:
        console.fail(str(exc))
        return EXIT_ERROR
    except KeyboardInterrupt:
        console.fail("interrupted")
        return EXIT_INTERRUPTED
    if args.debug and result.status == "error":
        print(result.error, file=sys.stderr)
    if getattr(args, "gradescope", None) is not None:  # grade --gradescope FILE
        from grader.gradescope.autograder import write_results

        try:
            write_results(result, args.gradescope)
        except Exception as exc:  # noqa: BLE001 - the grading stands; say why the file is missing
            console.fail(f"cannot write {args.gradescope}: {exc}")
            return EXIT_ERROR
    if args.json:
        print(result.to_json())
    else:
        console.print_result(result, operator=not selfcheck)
    return STATUS_EXIT[result.status]


def _commands() -> list[str]:
    return ["check", *SUBCOMMANDS]


def _did_you_mean(word: str) -> str:
    """``; did you mean `grade check`?`` for a mistyped sub-command (empty when nothing is close)."""
    import difflib

    if "/" in word or "." in word:
        return ""
    close = difflib.get_close_matches(word, _commands(), n=1, cutoff=0.6)
    return f"; did you mean `grade {close[0]}`? (commands: {', '.join(_commands())})" if close else ""


def _make_main_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="grade", description="Grade an RL homework submission (ONNX model, notebook, or a student's folder).",
                epilog="sub-commands: check" + "".join(f", {n}" for n in SUBCOMMANDS) + " (grade SUBCOMMAND --help)")
    add_grade_arguments(p)
    p.add_argument("--version", action="version", version=f"rl-grader {_version()}")
    p.add_argument("--gradescope", type=Path, metavar="FILE", help="also write Gradescope's results.json to FILE")
    p.add_argument("--submitted", metavar="TIME", help="when the work was handed in (ISO 8601): with a rubric "
                                                         "[deadline], the score gets its late part")
    p.add_argument("--student", metavar="ID", help="the student's id, to find an extension (with --submitted)")
    return p


def _version() -> str:
    from grader import __version__

    return __version__


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    os.environ.setdefault("PYTHONWARNINGS", "ignore")
    if argv and argv[0] == "check":
        p = _Parser(prog="grade check", description="Self-check: the grader's checks and a few episodes on the public seeds.")
        return _parse_and_grade(p, argv[1:], selfcheck=True)
    if argv and argv[0] in SUBCOMMANDS:
        import importlib

        module_name, help_text = SUBCOMMANDS[argv[0]]
        module = importlib.import_module(module_name)
        p = _Parser(prog=f"grade {argv[0]}", description=help_text)
        module.add_arguments(p)
        p.add_argument("--debug", action="store_true", help="show tracebacks of errors")
        args = p.parse_args(argv[1:])
        from grader.errors import SetupError
        from grader.outputs import console

        try:
            return int(module.run(args))
        except KeyboardInterrupt:
            return EXIT_INTERRUPTED
        except SetupError as exc:  # the instructor's set-up: say what to change
            console.fail(str(exc))
            return EXIT_ERROR
        except Exception as exc:  # noqa: BLE001 - the grader's bug: a message, the traceback on request
            if args.debug:
                traceback.print_exc()
            console.fail(f"internal grader error in `grade {argv[0]}` ({type(exc).__name__}: {exc}); "
                         "rerun with --debug and report it")
            return EXIT_ERROR
    if argv and not argv[0].startswith("-") and not Path(argv[0]).exists():
        hint = _did_you_mean(argv[0])
        if hint:
            from grader.outputs import console

            console.fail(f"{argv[0]!r} is neither a command nor a file{hint}")
            return EXIT_ERROR
    return _parse_and_grade(None, argv, selfcheck=False)


def _parse_and_grade(parser: argparse.ArgumentParser | None, argv: list[str], *, selfcheck: bool) -> int:
    """Start the workers, then build the parser and read the command line (its usage errors exit
    here, the workers stopped), then grade."""
    engine = _early_engine()
    try:
        if parser is None:
            parser = _make_main_parser()
        else:
            add_grade_arguments(parser)
        args = parser.parse_args(argv)
    except BaseException:
        if engine is not None:
            engine.close()
        raise
    return _run_grade(args, selfcheck=selfcheck, engine=engine)


def console_main() -> None:
    """The ``grade`` executable: :func:`main`, then a quick exit.

    Once ``main`` has returned, every output is written and closed; what is left is the
    interpreter tearing down the modules it imported (numpy, onnx, matplotlib, pydantic...), which
    costs a tenth of a second or more and serves nothing. So the exit handlers run
    (``atexit``: logging, temporary folders, multiprocessing), the standard streams are flushed,
    and the process ends with ``os._exit``. When a thread that is not a daemon is still running
    (it would be waited for), the exit is the ordinary one.
    """
    import atexit
    import threading

    rc = main()
    if any(t.is_alive() and not t.daemon for t in threading.enumerate() if t is not threading.main_thread()):
        sys.exit(rc)
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe (e.g. `grade ... | head`): nothing left to say
            pass
    os._exit(rc)


if __name__ == "__main__":
    console_main()
