"""``python -m grader.notebook NOTEBOOK [--task T] [--rubric R] [--out DIR] [--sandbox MODE] [--json]``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from grader.notebook.grade import grade_notebook


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m grader.notebook", description="Grade a homework notebook (no training is run).")
    ap.add_argument("notebook", type=Path)
    ap.add_argument("--task", choices=["mspacman", "lunarlander"], help="override the task recognised from the notebook")
    ap.add_argument("--rubric", type=Path, help="rubric TOML (default: rubrics/<task>.toml)")
    ap.add_argument("--out", type=Path, default=None, help="output folder (default: <notebook>.grading/)")
    ap.add_argument("--sandbox", choices=["auto", "bwrap", "fallback"], default=None)
    ap.add_argument("--json", action="store_true", help="print the result as JSON")
    args = ap.parse_args(argv)
    from grader.rubric import RubricError, default_rubric_path, load_rubric
    from grader.notebook.detect import detect_task
    from grader.notebook.reader import NotebookError, notebook_text, read_notebook

    rubric = None
    try:
        if args.rubric:
            rubric = load_rubric(args.rubric)
        else:
            task = args.task
            if task is None:
                try:
                    task, _ = detect_task(notebook_text(read_notebook(args.notebook)))
                except NotebookError:
                    task = None
            if task:
                rubric = load_rubric(default_rubric_path(task))
    except RubricError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    out = args.out or args.notebook.with_name(args.notebook.name + ".grading")
    result = grade_notebook(args.notebook, rubric=rubric, out_dir=out, task=args.task, sandbox=args.sandbox)
    (out / "notebook_result.json").write_text(result.model_dump_json(indent=2, by_alias=True))
    if args.json:
        print(result.model_dump_json(indent=2, by_alias=True))
    else:
        print(f"{args.notebook}: {result.task or '?'} {result.status}, {result.score:g} / {result.max_score:g} points")
        for c in result.checks:
            mark = "ok  " if c.passed else {"error": "FAIL", "warning": "warn", "note": "note"}[c.severity]
            pts = f" [{c.points:g}/{c.max_points:g}]" if c.max_points is not None else ""
            print(f"  {mark} {c.name}{pts}: {c.message}")
            if c.hint:
                print(f"       -> {c.hint}")
    return 0 if result.status == "graded" else 1


if __name__ == "__main__":
    sys.exit(main())
