"""Reading a notebook: nbformat v4 only, code cells with IPython magics and shell lines removed.

Nothing here executes code. Anything unreadable -- not UTF-8, not JSON, too large, nested too
deeply for the parser, not nbformat 4 -- raises :class:`grader.errors.SubmissionError` (check
``notebook_format``) with a message meant for the student: it is the submission's fault, never
the grader's.
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass
from pathlib import Path

from grader.errors import SubmissionError

MAX_NOTEBOOK_BYTES = 50 * 1024 * 1024  # a notebook with embedded videos is large; beyond this, refuse
CHECK = "notebook_format"
_RESAVE = "open the notebook in Jupyter and save it again (File > Save); do not edit the .ipynb by hand or rename a .py file"


def _invalid(message: str, hint: str) -> SubmissionError:
    return SubmissionError(message, hint=hint, check=CHECK)


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


def _read_capped(path: Path) -> bytes:
    try:
        with open(path, "rb") as f:
            raw = f.read(MAX_NOTEBOOK_BYTES + 1)
    except OSError as exc:
        raise _invalid(f"cannot read {path.name}: {exc.strerror}", "hand in the .ipynb file saved by Jupyter") from None
    if len(raw) > MAX_NOTEBOOK_BYTES:
        raise _invalid(
            f"{path.name} is more than the {MAX_NOTEBOOK_BYTES >> 20} MB accepted",
            "clear the outputs (Kernel > Restart & Clear Output, or `jupyter nbconvert --clear-output`) and save again",
        )
    return raw


def _load_json(path: Path, raw: bytes) -> dict:
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise _invalid(f"{path.name} is not a Jupyter notebook: it is not UTF-8 text (byte {exc.start})", _RESAVE) from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise _invalid(f"{path.name} is not a Jupyter notebook: it is not valid JSON (line {exc.lineno}, column {exc.colno})",
                       _RESAVE) from None
    except (RecursionError, MemoryError):
        raise _invalid(f"{path.name} is not a Jupyter notebook: its JSON is nested too deeply to be read", _RESAVE) from None
    if not isinstance(data, dict) or "cells" not in data and "worksheets" not in data:
        raise _invalid(f"{path.name} is JSON but not a Jupyter notebook (no 'cells')", "hand in the .ipynb file saved by Jupyter")
    major = data.get("nbformat")
    if major != 4:
        raise _invalid(
            f"{path.name} uses notebook format version {str(major)[:20]}; only version 4 (Jupyter 4+, 2015 and later) is read",
            "open it in a current Jupyter or Colab and save it again, or run `jupyter nbconvert --to notebook --nbformat 4`",
        )
    return data


def _validated(path: Path, raw: bytes):
    import nbformat

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return nbformat.reads(raw.decode("utf-8-sig"), as_version=4)
    except (RecursionError, MemoryError):
        raise _invalid(f"{path.name} could not be read as a notebook: it is nested too deeply", _RESAVE) from None
    except Exception as exc:  # nbformat raises several types for broken files
        first = (str(exc).splitlines() or [type(exc).__name__])[0][:200]
        raise _invalid(f"{path.name} could not be read as a notebook: {first}", "open the notebook in Jupyter and save it again") from None


def _code_cells(nb) -> list[CodeCell]:
    cells: list[CodeCell] = []
    code_no = 0
    for i, cell in enumerate(nb.get("cells", []), start=1):
        if cell.get("cell_type") != "code":
            continue
        code_no += 1
        src = cell.get("source", "")
        if isinstance(src, list):
            src = "".join(str(x) for x in src)
        if not isinstance(src, str):
            raise _invalid(f"cell {i} has no source text", _RESAVE)
        source, removed, magic = _strip_magics(src)
        cells.append(CodeCell(i, code_no, source, src, removed, magic))
    return cells


def read_notebook(path: Path) -> list[CodeCell]:
    """The code cells of the notebook at ``path``; raises :class:`SubmissionError` (``notebook_format``)."""
    raw = _read_capped(path)
    _load_json(path, raw)
    return _code_cells(_validated(path, raw))


def notebook_text(cells: list[CodeCell]) -> str:
    """All code cells' original text, for task detection."""
    return "\n".join(c.original for c in cells)
