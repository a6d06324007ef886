"""Reading a notebook: nbformat v4 only, code cells with IPython magics and shell lines removed.

Nothing here executes code. Errors are returned as :class:`NotebookError` with a message meant
for the student (the caller turns it into a failed check).
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass
from pathlib import Path

MAX_NOTEBOOK_BYTES = 50 * 1024 * 1024  # a notebook with embedded videos is large; beyond this, refuse


class NotebookError(Exception):
    """The file is not a notebook we can read; ``hint`` says how to fix it."""

    def __init__(self, message: str, hint: str):
        super().__init__(message)
        self.message = message
        self.hint = hint


@dataclass(frozen=True)
class CodeCell:
    number: int  # 1-based position among ALL cells of the notebook (what Jupyter users count)
    code_number: int  # 1-based position among code cells
    source: str  # magics/shell lines replaced by blank lines (line numbers are kept)
    original: str
    stripped: tuple[str, ...] = ()  # the magic/shell lines that were removed
    skipped_magic: str | None = None  # a %% cell magic: the whole cell is not Python


def _strip_magics(source: str) -> tuple[str, tuple[str, ...], str | None]:
    lines = source.splitlines()
    first = next((ln.strip() for ln in lines if ln.strip()), "")
    if first.startswith("%%"):
        return "", (first,), first.split()[0]
    out, removed = [], []
    continuation = False
    for ln in lines:
        s = ln.lstrip()
        if continuation or s.startswith(("%", "!")) or (s.endswith("?") and not s.startswith("#") and s[:-1].isidentifier()):
            removed.append(ln)
            out.append("")
            continuation = ln.rstrip().endswith("\\")
            continue
        # `x = !ls` and `x = %time f()` assign a magic's value: drop the line too.
        if "=" in s and not s.startswith("#"):
            rhs = s.split("=", 1)[1].lstrip()
            if rhs.startswith(("!", "%")) and not s.split("=", 1)[0].rstrip().endswith(("!", "<", ">", "=")):
                removed.append(ln)
                out.append("")
                continue
        out.append(ln)
    return "\n".join(out), tuple(removed), None


def read_notebook(path: Path) -> list[CodeCell]:
    """The code cells of the notebook at ``path``; raises :class:`NotebookError`."""
    import nbformat

    try:
        size = path.stat().st_size
    except OSError as exc:
        raise NotebookError(f"cannot read {path.name}: {exc.strerror}", "hand in the .ipynb file saved by Jupyter") from None
    if size > MAX_NOTEBOOK_BYTES:
        raise NotebookError(
            f"{path.name} is {size / 2**20:.0f} MB, more than the {MAX_NOTEBOOK_BYTES >> 20} MB accepted",
            "clear the outputs (Kernel > Restart & Clear Output, or `jupyter nbconvert --clear-output`) and save again",
        )
    raw = path.read_bytes()
    try:
        data = json.loads(raw.decode("utf-8-sig"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        where = f" (line {exc.lineno}, column {exc.colno})" if isinstance(exc, json.JSONDecodeError) else ""
        raise NotebookError(
            f"{path.name} is not a Jupyter notebook: it is not valid JSON{where}",
            "open the notebook in Jupyter and save it again (File > Save); do not edit the .ipynb by hand or rename a .py file",
        ) from None
    if not isinstance(data, dict) or "cells" not in data and "worksheets" not in data:
        raise NotebookError(
            f"{path.name} is JSON but not a Jupyter notebook (no 'cells')",
            "hand in the .ipynb file saved by Jupyter",
        )
    major = data.get("nbformat")
    if major != 4:
        raise NotebookError(
            f"{path.name} uses notebook format version {major}; only version 4 (Jupyter 4+, 2015 and later) is read",
            "open it in a current Jupyter or Colab and save it again, or run `jupyter nbconvert --to notebook --nbformat 4`",
        )
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            nb = nbformat.reads(raw.decode("utf-8-sig"), as_version=4)
    except Exception as exc:  # nbformat raises several types for broken files
        raise NotebookError(
            f"{path.name} could not be read as a notebook: {str(exc).splitlines()[0][:200]}",
            "open the notebook in Jupyter and save it again",
        ) from None
    cells: list[CodeCell] = []
    code_no = 0
    for i, cell in enumerate(nb.get("cells", []), start=1):
        if cell.get("cell_type") != "code":
            continue
        code_no += 1
        src = cell.get("source", "")
        if isinstance(src, list):
            src = "".join(src)
        source, removed, magic = _strip_magics(src)
        cells.append(CodeCell(i, code_no, source, src, removed, magic))
    return cells


def notebook_text(cells: list[CodeCell]) -> str:
    return "\n".join(c.original for c in cells)
