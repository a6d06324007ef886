"""``python -m grader.notebook NOTEBOOK [--task T] [--sandbox MODE] [--weights W ...] [--json]``.

Prints the evidence of one notebook (checks without points, produced models, log sizes): a
debugging aid. Grading and scoring are the pipeline's (``grade NOTEBOOK``).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from grader.errors import EXIT_ERROR, GraderError, SubmissionError
from grader.notebook.common import common_checks, detect_notebook_task, parse_notebook
from grader.notebook.sandbox import Limits
from grader.tasks import all_tasks


def _notebook_tasks() -> dict:
    """The tasks whose plug-in grades notebooks, and their notebook modules."""
    return {t.name: t.notebook_module() for t in all_tasks() if t.notebook}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m grader.notebook", description="Show a notebook's evidence (no training is run).")
    ap.add_argument("notebook", type=Path)
    tasks = _notebook_tasks()
    ap.add_argument("--task", choices=sorted(tasks), help="override the task recognised from the notebook")
    ap.add_argument("--sandbox", choices=["auto", "bwrap", "fallback"], default=None)
    ap.add_argument("--weights", type=Path, nargs="*", default=[], help="*.pt / *.pth files handed in with it")
    ap.add_argument("--json", action="store_true", help="print the checks as JSON")
    args = ap.parse_args(argv)
    try:
        nb = parse_notebook(args.notebook)
        task = args.task or detect_notebook_task(nb.text, {name: mod.MARKERS for name, mod in tasks.items()})[0]
        if task is None:
            raise SubmissionError("cannot tell the notebook's task", hint="pass --task", check="task_detected")
        ev = tasks[task].collect(nb, limits=Limits(), sandbox=args.sandbox, weights=args.weights)
    except GraderError as exc:
        print(f"{args.notebook}: {type(exc).__name__}: {exc}", file=sys.stderr)
        return exc.exit_code
    checks = common_checks(nb) + ev.checks
    if args.json:
        print(json.dumps([c.model_dump() for c in checks], indent=2))
    else:
        print(f"{args.notebook}: {task}")
        for c in checks:
            print(f"  {'ok  ' if c.passed else c.severity:7s} {c.name}: {c.message}")
        for m in ev.models:
            print(f"  model {m.role}: {m.label}, {len(m.data)} bytes")
        for name, data in ev.logs.items():
            print(f"  log {name}: {len(data)} bytes")
    if ev.not_run:  # no bubblewrap: a set-up problem, as in `grade`
        print(f"{args.notebook}: {ev.not_run}", file=sys.stderr)
        return EXIT_ERROR
    return 0


if __name__ == "__main__":
    sys.exit(main())
