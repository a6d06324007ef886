"""Terminal output with rich: the check list, the episode statistics, the score, progress bars.

rich is imported only when something is printed with it: ``grade --json`` with stderr not a
terminal (a script, a grading server) never loads it. ``Console``, ``stderr`` and ``escape`` are
still attributes of this module (loaded on first use).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from grader.outputs.seedpolicy import SeedPolicy
from grader.outputs.textsafe import clean_text

if TYPE_CHECKING:
    from types import TracebackType

    from rich.console import Console
    from rich.progress import TaskID

    from grader.result import GradeResult

PHASE_LABELS = {"loading": "loading the model", "episodes": "playing episodes", "videos": "recording videos"}
# Environment variables with which rich treats a stream that is not a TTY as a terminal.
_RICH_TERMINAL_ENV = ("FORCE_COLOR", "TTY_INTERACTIVE", "TTY_COMPATIBLE", "JUPYTER_COLUMNS", "JUPYTER_LINES")


def __getattr__(name: str) -> Any:
    if name == "Console":
        from rich.console import Console

        return Console
    if name == "escape":
        from rich.markup import escape

        return escape
    if name == "stderr":
        return _stderr()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


_STDERR: list = []


def _stderr() -> Console:
    if not _STDERR:
        from rich.console import Console

        _STDERR.append(Console(stderr=True, highlight=False))
    return _STDERR[0]


def _stderr_is_terminal() -> bool:
    """rich's answer, without importing rich when stderr is plainly not a terminal."""
    try:
        tty = sys.stderr.isatty()
    except (AttributeError, ValueError):
        tty = False
    if not tty and not any(os.environ.get(k) for k in _RICH_TERMINAL_ENV):
        return False
    return _stderr().is_terminal


@contextmanager
def progress_bar(enabled: bool = True) -> Iterator:
    """A rich progress bar on stderr, fed by grading's ``progress(phase, done, total)`` callback."""
    if not enabled or not _forced() and not _stderr_is_terminal():
        yield lambda phase, done, total: None
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    stderr = _stderr()
    bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                   TextColumn("eta"), TimeRemainingColumn(), console=stderr, transient=True)
    tasks: dict[str, TaskID] = {}
    with bar:
        def update(phase: str, done: int, total: int) -> None:
            if phase not in tasks:
                tasks[phase] = bar.add_task(PHASE_LABELS.get(phase, phase), total=total)
            bar.update(tasks[phase], completed=done, total=total)
        yield update


def _forced() -> bool:
    return bool(os.environ.get("GRADER_FORCE_PROGRESS"))


def _safe(text: object) -> str:
    """Student-controlled text for the terminal: no control characters, no rich markup."""
    from rich.markup import escape

    return escape(clean_text(text, keep_newlines=True))


def print_result(result: GradeResult, console: Console | None = None, *, selfcheck_note: str = "") -> None:
    """The terminal summary: checks, episode statistics, videos, warnings and the composed score.

    Every string that came from the submission goes through :func:`grader.outputs.textsafe.clean_text`,
    and hidden grading seeds are named by episode number (:class:`grader.outputs.seedpolicy.SeedPolicy`).
    """
    from rich.console import Console
    from rich.table import Table

    console = console or Console(highlight=False)
    seeds = SeedPolicy(result)

    def safe(text: object) -> str:
        return _safe(seeds.scrub(str(text)))

    console.print(f"[bold]{safe(result.submission)}[/bold]  task: {safe(result.task or '?')}")
    if result.checks:
        table = Table(show_header=False, box=None, padding=(0, 1))
        for c in result.checks:
            mark = "[green]✓[/green]" if c.passed else ("[red]✗[/red]" if c.severity == "error" else "[yellow]![/yellow]")
            text = safe(c.message)
            if not c.passed and c.hint:
                text += f"\n[dim]how to fix: {safe(c.hint)}[/dim]"
            table.add_row(mark, f"[bold]{safe(c.name)}[/bold]", text)
        console.print(table)
    s = result.summary
    if s is not None:
        line = (f"episodes: {s.n}  mean {s.mean:.1f} ± {s.std:.1f}  median {s.median:.1f}  IQM {s.iqm:.1f}  "
                f"95% CI [{s.ci_low:.1f}, {s.ci_high:.1f}]")
        if s.success_rate is not None:
            line += f"  success {100 * s.success_rate:.0f}%"
        console.print(line)
    if result.diagnostics is not None:  # the task's two lines (counts only, no seeds): outcomes, then actions
        for text in result.diagnostics.summary[:2]:
            console.print(_safe(text))
    for v in result.videos:
        ok = "[green]re-run matches[/green]" if v.matches else f"[red]re-run gave {v.rerun_return:.1f}[/red]"
        console.print(f"video {v.label}: {seeds.label(v.seed)}, return {v.scored_return:.1f}, {ok}  ({safe(v.path)})")
    for w in result.warnings:
        console.print(f"[yellow]warning:[/yellow] {safe(w)}")
    for f in result.flags:
        console.print(f"[bold red]flagged for the instructor:[/bold red] {safe(f.text)}")
    _print_score(console, result, safe)
    if selfcheck_note:
        console.print(selfcheck_note)


def _print_score(console: Console, result: GradeResult, safe) -> None:
    from grader.scoring.points import fmt_points

    points = fmt_points(result.score, result.max_score) if result.max_score else "—"
    parts = [p for p in result.parts if p.max_points > 0]
    notebook = [p for p in parts if p.kind == "notebook"]
    breakdown = ""
    if notebook:
        nb = fmt_points(sum(p.points for p in notebook), sum(p.max_points for p in notebook))
        ep = next((fmt_points(p.points, p.max_points) for p in parts if p.kind == "episodes"), "")
        breakdown = f"  (notebook {nb}, episodes {ep})"
    late = next((p for p in result.parts if p.kind == "late"), None)
    if late is not None and late.points:
        breakdown += f"  (late: {late.points:g})"
    if result.status == "graded":
        band = f"  [{safe(result.band)}]" if result.band else ""
        stat = f" on the {result.rubric.statistic} over {result.rubric.n_seeds} {result.rubric.seed_set} seeds" if result.rubric else ""
        console.print(f"[bold green]score: {points}[/bold green]{breakdown}{band}{stat}")
    elif result.status == "invalid":
        console.print(f"[bold red]invalid submission ({points}):[/bold red] {safe(result.error or 'a check failed')}")
    else:
        console.print(f"[bold red]grader error:[/bold red] {safe(result.error or 'unknown')}")
    if late is not None:
        console.print(f"{'[yellow]' if late.points else ''}late: {safe(late.detail)}{'[/yellow]' if late.points else ''}")


class CountBar:
    """A progress bar over many items (done/total, failures, ETA) with one line per finished item;
    plain ``[n/total] line`` output when stderr is not a terminal. Thread-safe."""

    def __init__(self, total: int, done: int = 0, *, label: str = "grading", enabled: bool = True):
        import threading

        self.console = _stderr()
        self.total, self.done, self.label = total, done, label
        self.live = enabled and (self.console.is_terminal or _forced())
        self._lock = threading.Lock()

    def __enter__(self) -> CountBar:
        if self.live:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

            self.progress = Progress(TextColumn(self.label), BarColumn(), MofNCompleteColumn(),
                                     TextColumn("failures: {task.fields[failures]}"), TimeElapsedColumn(),
                                     TextColumn("eta"), TimeRemainingColumn(), console=self.console)
            self.progress.__enter__()
            self.task = self.progress.add_task(self.label, total=self.total, completed=self.done, failures=0)
        return self

    def advance(self, failures: int, line: str) -> None:
        with self._lock:
            self.done += 1
            if self.live:
                self.progress.update(self.task, completed=self.done, failures=failures)
                self.progress.console.print(_safe(line), highlight=False)
            else:
                print(f"[{self.done}/{self.total}] {clean_text(line)}", file=sys.stderr, flush=True)

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self.live:
            self.progress.__exit__(exc_type, exc, tb)


def fail(message: str) -> None:
    _stderr().print(f"[bold red]error:[/bold red] {_safe(message)}")

