"""The report's charts as plain SVG elements: a canvas, linear scales with round ticks, and marks.

Every grading writes a report whose five charts (the returns, and the diagnostics' outcomes,
returns by outcome, actions and lives) are bars, dots, steps and lines on linear axes, written here
as SVG elements: importing and drawing with matplotlib would cost a large share of a grading's
time (figures: ``docs/benchmarks.md``).
matplotlib stays where a plot is drawn once, off the grading path (the class page of
:mod:`grader.classroom.exports`, the training curves of ``reference/``).

Coordinates are pixels of a ``viewBox``; the page scales the chart to its width. Every text
goes through :func:`html.escape`, and :meth:`Canvas.svg` refuses (returns ``""``) a chart that
would contain anything script-like: the labels come from task plug-ins and numbers, but a chart
is HTML, and HTML from a grading is never trusted by construction alone.
"""

from __future__ import annotations

import html
import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

# Inside a tag only: every text is escaped, so a "<" in the output always opens one of our tags.
FORBIDDEN = re.compile(r"<\s*script|<\s*foreignObject|<[^>]*\son[a-z]+\s*=|<[^>]*javascript:", re.IGNORECASE)
INK, GOOD, BAD = "#333", "#1e8449", "#c0392b"
PALETTE = ("#5d6d7e", "#d35400", "#2471a3", "#8e44ad", "#16a085", "#b7950b")


def nice_ticks(lo: float, hi: float, target: int = 6) -> list[float]:
    """Round tick values (steps of 1, 2, 2.5 or 5 times a power of ten) from ``lo`` to ``hi``."""
    raw = (hi - lo) / max(1, target)
    mag = 10 ** math.floor(math.log10(raw)) if raw > 0 else 1.0
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    first = math.ceil(lo / step - 1e-9) * step
    return [round(first + k * step, 12) for k in range(int((hi - first) / step + 1e-9) + 1)]


def number(v: float) -> str:
    """A tick label: thousands separated, at most 6 significant digits, no trailing zeros."""
    return f"{v:,.6g}"


@dataclass(frozen=True)
class Scale:
    """A linear map from data values ``lo..hi`` to pixels ``a..b`` (``b < a`` for a y axis)."""

    lo: float
    hi: float
    a: float
    b: float

    @classmethod
    def over(cls, values: Sequence[float], a: float, b: float, *, pad: float = 0.04) -> Scale:
        """The scale of ``values``, widened by ``pad`` of the span on both sides; a single value gets
        a span of 1 around it."""
        vals = [float(v) for v in values if math.isfinite(v)]
        lo, hi = (min(vals), max(vals)) if vals else (0.0, 1.0)
        if hi - lo < 1e-12:
            lo, hi = lo - 0.5, hi + 0.5
        span = hi - lo
        lo, hi = lo - pad * span, hi + pad * span
        return cls(lo, hi, a, b)

    def __call__(self, v: float) -> float:
        return self.a + (v - self.lo) / (self.hi - self.lo) * (self.b - self.a)

    def ticks(self, target: int = 6) -> list[float]:
        return nice_ticks(self.lo, self.hi, target)


class Canvas:
    """An SVG chart of ``width`` x ``height`` pixels; marks are appended in drawing order."""

    def __init__(self, width: float, height: float, *, label: str, font_size: int = 11):
        self.width, self.height = width, height
        self._parts = [f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width:g} {height:g}" width="100%" '
                       f'role="img" aria-label="{html.escape(label)}" class="plot" font-family="sans-serif" '
                       f'font-size="{font_size}">']

    @staticmethod
    def _style(**attrs: object) -> str:
        out = []
        for key, value in attrs.items():
            if value is None or value == "":
                continue
            value = f"{value:g}" if isinstance(value, float) else str(value)
            out.append(f' {key.replace("_", "-")}="{html.escape(value)}"')
        return "".join(out)

    def rect(self, x: float, y: float, w: float, h: float, *, fill: str, **attrs: object) -> None:
        self._parts.append(f'<rect x="{x:.1f}" y="{y:.1f}" width="{max(0.0, w):.1f}" height="{max(0.0, h):.1f}"'
                           f'{self._style(fill=fill, **attrs)}/>')

    def line(self, x1: float, y1: float, x2: float, y2: float, *, stroke: str = INK, **attrs: object) -> None:
        self._parts.append(f'<line x1="{x1:.1f}" y1="{y1:.1f}" x2="{x2:.1f}" y2="{y2:.1f}"{self._style(stroke=stroke, **attrs)}/>')

    def circle(self, cx: float, cy: float, r: float, *, fill: str, **attrs: object) -> None:
        self._parts.append(f'<circle cx="{cx:.1f}" cy="{cy:.1f}" r="{r:g}"{self._style(fill=fill, **attrs)}/>')

    def path(self, points: Sequence[tuple[float, float]], *, close: bool = False, **attrs: object) -> None:
        """A polyline through ``points`` (a filled polygon with ``close``)."""
        if not points:
            return
        d = "M" + " L".join(f"{x:.1f},{y:.1f}" for x, y in points) + (" Z" if close else "")
        attrs.setdefault("fill", "none")
        self._parts.append(f'<path d="{d}"{self._style(**attrs)}/>')

    def text(self, x: float, y: float, s: object, *, anchor: str = "start", rotate: float | None = None,
             **attrs: object) -> None:
        turn = f' transform="rotate({rotate:g} {x:.1f} {y:.1f})"' if rotate is not None else ""
        self._parts.append(f'<text x="{x:.1f}" y="{y:.1f}" text-anchor="{anchor}"{turn}{self._style(**attrs)}>'
                           f"{html.escape(str(s))}</text>")

    def x_axis(self, scale: Scale, y: float, *, title: str = "", ticks: Sequence[float] | None = None,
               fmt: Callable[[float], str] = number) -> None:
        """A horizontal axis at pixel row ``y``: its line, ticks with labels below, and a title."""
        self.line(min(scale.a, scale.b), y, max(scale.a, scale.b), y)
        for t in scale.ticks() if ticks is None else ticks:
            x = scale(t)
            self.line(x, y, x, y + 4)
            self.text(x, y + 15, fmt(t), anchor="middle")
        if title:
            self.text((scale.a + scale.b) / 2, y + 30, title, anchor="middle")

    def y_axis(self, scale: Scale, x: float, *, title: str = "", ticks: Sequence[float] | None = None,
               fmt: Callable[[float], str] = number) -> None:
        """A vertical axis at pixel column ``x``: its line, ticks with labels at the left, and a title."""
        self.line(x, min(scale.a, scale.b), x, max(scale.a, scale.b))
        for t in scale.ticks(4) if ticks is None else ticks:
            y = scale(t)
            self.line(x - 4, y, x, y)
            self.text(x - 7, y + 4, fmt(t), anchor="end")
        if title:
            mid = (scale.a + scale.b) / 2
            self.text(12, mid, title, anchor="middle", rotate=-90)

    def categories(self, names: Sequence[str], rows: Sequence[float], x: float) -> None:
        """Row labels, right-aligned at pixel column ``x`` (a bar chart's categories)."""
        for name, y in zip(names, rows):
            self.text(x, y + 4, name, anchor="end")

    def legend(self, items: Sequence[tuple[str, str]], x: float, y: float) -> None:
        """Coloured squares with their names, in a row from (x, y), each as wide as its name needs."""
        for name, colour in items:
            self.rect(x, y - 9, 10, 10, fill=colour)
            self.text(x + 14, y, name, font_size=10)
            x += max(70.0, 34 + 5.8 * len(name))

    def svg(self) -> str:
        """The finished chart, or ``""`` if anything script-like got into it."""
        out = "".join(self._parts) + "</svg>"
        return "" if FORBIDDEN.search(out) else out


def jitter(n: int, spread: float) -> list[float]:
    """``n`` fixed offsets in ``[-spread/2, spread/2)``, spread evenly (the golden-ratio sequence):
    the same chart every time, without a random generator."""
    return [((i * 0.6180339887) % 1.0 - 0.5) * spread for i in range(n)]
