"""Outputs that stay inert: CSV cells a spreadsheet would run, and terminal text that would drive the terminal.

Ids, paths and names come from other people's files, so every CSV goes through `csv_text`, every line `terminal_safe`.
"""

from __future__ import annotations

import unicodedata
from typing import Any

import pandas as pd

# Ids, paths and names come from other people's files (a manifest, a plugin's configuration), so every CSV the tool
# writes passes through `csv_text`, and every line it prints through `terminal_safe`:
# - a text cell starting with `=`, `+`, `-`, `@`, a tab or a carriage return (a formula to Excel, LibreOffice and
#   Google Sheets; OWASP's "CSV injection") is written with a leading `'`, which those programs show as text;
#   numbers stay numbers (a negative difference is not text);
# - control and format characters (ANSI escapes, newlines inside an id, bidirectional overrides) are printed as
#   Python escapes (`\x1b`, `\n`, `\u202e`), so an id can neither recolour, rewrite nor reorder the terminal.

FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def spreadsheet_safe(value: Any) -> Any:
    """A CSV cell that no spreadsheet runs as a formula: text starting like one gets a leading `'`; else unchanged."""
    if isinstance(value, str) and value.startswith(FORMULA_STARTS):
        return "'" + value
    return value


def spreadsheet_safe_frame(frame: pd.DataFrame) -> pd.DataFrame:
    """A copy of `frame` whose text cells and column names are spreadsheet-safe; numeric columns untouched."""
    safe = frame.copy()
    for column in safe.columns:
        if safe[column].dtype == object or pd.api.types.is_string_dtype(safe[column]):
            safe[column] = safe[column].map(spreadsheet_safe)
    safe.columns = [spreadsheet_safe(str(c)) for c in safe.columns]
    return safe


def csv_text(frame: pd.DataFrame, **to_csv: Any) -> bytes:
    """The frame as UTF-8 CSV bytes with every cell spreadsheet-safe (the one way this tool writes a CSV)."""
    return spreadsheet_safe_frame(frame).to_csv(index=False, **to_csv).encode("utf-8")


def terminal_safe(text: str, *, keep_newlines: bool = True) -> str:
    """`text` with control and format characters written as escapes (newlines kept when `keep_newlines`)."""
    return "".join(c if (c == "\n" and keep_newlines) or not unicodedata.category(c).startswith("C")
                   else c.encode("unicode_escape").decode("ascii") for c in text)


def terminal_safe_data(value: Any) -> Any:
    """Every string inside `value` (dicts, lists, tuples) made terminal-safe, newlines included."""
    if isinstance(value, str):
        return terminal_safe(value, keep_newlines=False)
    if isinstance(value, dict):
        return {terminal_safe_data(k): terminal_safe_data(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(terminal_safe_data(v) for v in value)
    return value
