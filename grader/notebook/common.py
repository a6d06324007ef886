"""What every notebook task shares: parsing a notebook, the common checks, task detection.

Nothing here names a task: the task plug-ins (``mspacman.py``, ``lunarlander.py``) bring their
markers and their own checks. Checks are built without points; the pipeline assigns them.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from grader.notebook.astfilter import CellPlan, plan_notebook
from grader.notebook.reader import CodeCell, notebook_text, read_notebook
from grader.result import CheckResult, Severity

MAX_SKIPPED_LISTED = 30
DECISIVE_BONUS = 5  # a task's first marker (its environment id) alone decides


@dataclass
class ParsedNotebook:
    path: Path
    cells: list[CodeCell]
    plans: list[CellPlan]  # one per code cell: what runs, what is skipped, syntax errors
    text: str  # all code cells' original text (task detection)


def check(name: str, passed: bool, message: str, hint: str = "", *, severity: Severity = "warning") -> CheckResult:
    """A judged check without points; ``hint`` is dropped when it passed."""
    return CheckResult(name=name, passed=bool(passed), message=message, hint="" if passed else hint, severity=severity)


def first_line(text: str, width: int = 80) -> str:
    for ln in text.splitlines():
        if ln.strip():
            return ln.strip()[:width]
    return ""


def parse_notebook(path: Path) -> ParsedNotebook:
    """Read and plan ``path``; raises :class:`grader.errors.SubmissionError` (``notebook_format``)."""
    path = Path(path)
    cells = read_notebook(path)
    return ParsedNotebook(path=path, cells=cells, plans=plan_notebook(cells), text=notebook_text(cells))


def common_checks(nb: ParsedNotebook) -> list[CheckResult]:
    """``notebook_format`` (passed: it parsed), ``cells_parse``, ``skipped_statements``."""
    return [
        check("notebook_format", True, f"notebook format 4, {len(nb.cells)} code cells", severity="error"),
        _cells_parse(nb.plans),
        _skipped(nb.plans),
    ]


def _cells_parse(plans: list[CellPlan]) -> CheckResult:
    bad = [p for p in plans if p.syntax_error]
    if not bad:
        return check("cells_parse", True, f"all {len(plans)} code cells parse")
    parts = [f"cell {p.cell.number} does not parse: {p.syntax_error}"
             + (f" at line {p.syntax_line}" if p.syntax_line else "")
             + f" (the cell starts with `{first_line(p.cell.original)}`)" for p in bad]
    return check("cells_parse", False,
                 "; ".join(parts) + ". The rest of the notebook was analysed without "
                 + ("this cell" if len(bad) == 1 else "these cells"),
                 "fix the syntax error (often a missing closing parenthesis, e.g. `torch.cat(batch.action)` in "
                 "optimize_model) and run the cell again before handing in")


def _skipped(plans: list[CellPlan]) -> CheckResult:
    skipped = [(p.cell.number, line, first) for p in plans for line, first in p.skipped]
    if not skipped:
        return check("skipped_statements", True, "no top-level statement was skipped", severity="note")
    listed = "; ".join(f"cell {c} line {ln}: {first}" for c, ln, first in skipped[:MAX_SKIPPED_LISTED])
    more = f"; and {len(skipped) - MAX_SKIPPED_LISTED} more" if len(skipped) > MAX_SKIPPED_LISTED else ""
    return check("skipped_statements", True,
                 f"{len(skipped)} top-level statements were not run (training, environments, output; only definitions run): "
                 f"{listed}{more}", severity="note")


def detect_notebook_task(text: str, markers: Mapping[str, Sequence[str]]) -> tuple[str | None, dict[str, int]]:
    """The task whose marker regexes match ``text`` best, and every task's score.

    Each task scores one point per matching marker; its FIRST marker (the environment id) is
    decisive: when it is the only task's first marker found, that task gets a bonus. A tie or
    no match at all gives ``None``.
    """
    scores = {task: sum(1 for pat in pats if re.search(pat, text)) for task, pats in markers.items()}
    decisive = [task for task, pats in markers.items() if pats and re.search(pats[0], text)]
    if len(decisive) == 1:
        scores[decisive[0]] += DECISIVE_BONUS
    if not scores:
        return None, scores
    best = max(scores, key=lambda task: scores[task])
    if scores[best] == 0 or list(scores.values()).count(scores[best]) > 1:
        return None, scores
    return best, scores
