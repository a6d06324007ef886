"""Making untrusted strings safe for the places they are shown: terminals, logs and spreadsheets.

Strings from a submission (operator, input and output names, file names, notebook output) may
hold control characters: an escape sequence can clear a terminal and print a fake score. HTML is
handled by Jinja2's autoescape; this module covers the rest.
"""

from __future__ import annotations

import re
import unicodedata

_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u200b-\u200f\u2028-\u202e\u2066-\u2069]")


def clean_text(value: object, *, max_len: int | None = None, keep_newlines: bool = False) -> str:
    """``value`` as text without control characters (ESC, BEL, CR, bidi overrides, ...).

    Each removed character becomes ``?`` so that the result still shows something was there.
    Newlines (and tabs) are kept only with ``keep_newlines``; otherwise they become spaces.
    """
    text = str(value)
    if not keep_newlines:
        text = text.replace("\n", " ").replace("\t", " ")
    text = _CONTROL.sub("?", text)
    text = "".join("?" if unicodedata.category(ch) in ("Cc", "Cs") and ch not in "\n\t" else ch for ch in text)
    if max_len is not None and len(text) > max_len:
        text = text[: max_len - 1] + "…"
    return text


_FORMULA_START = ("=", "+", "-", "@", "\t", "\r", "|", "%")


def csv_cell(value: object) -> object:
    """A value safe to put in a CSV cell that a spreadsheet will open.

    Numbers (int/float) pass through. Text is stripped of control characters, and text that a
    spreadsheet would evaluate as a formula (starting with ``= + - @``, a tab, ``|`` or ``%``) is
    prefixed with an apostrophe -- including text that merely looks numeric, such as ``-1-1``.
    A plain negative number written as text (``-3.5``) is kept as it is.
    """
    if value is None or isinstance(value, bool) or isinstance(value, (int, float)):
        return value
    text = clean_text(value, keep_newlines=True) if isinstance(value, str) else clean_text(str(value))
    if text[:1] in _FORMULA_START:
        if re.fullmatch(r"-?\d+(\.\d+)?([eE][-+]?\d+)?", text):
            return text
        return "'" + text
    return text
