"""CSV files people hand us and the ones we hand them.

Read: UTF-8 with or without the byte-order mark a spreadsheet's "CSV UTF-8" writes (else the header would be
read as a data row); any other encoding is an error naming the file and line, never a guess (a wrong guess
would silently change file names and class names). Write: a cell a spreadsheet would run as a formula gets a
leading ``'`` (:func:`formula_safe`), and our readers take it off again (:func:`formula_restore`), so an image
named ``=HYPERLINK(...).png`` survives the round trip. One key, one value: :func:`one_value_per_key`.
"""

from __future__ import annotations

import codecs
import csv
import io
import logging
import re
from collections.abc import Iterable
from pathlib import Path

log = logging.getLogger(__name__)

# Cell starts a spreadsheet treats as a formula (OWASP "CSV injection"): = + - @ tab CR.
_FORMULA = re.compile(r"[=+\-@\t\r]")
# ... also after quotes we added: a cell that already looks escaped is escaped once more, so that
# formula_restore(formula_safe(s)) == s for every string s.
_ESCAPED = re.compile(r"'+[=+\-@\t\r]")
# A number as we write them (-1, -0.25, 1e-05): a spreadsheet reads it as a number, not a formula.
_NUMBER = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")


def formula_safe(cell: object) -> object:
    """``cell`` as it goes into a CSV: a string a spreadsheet would run as a formula, prefixed with ``'``.

    Numbers (``int``/``float``, and strings that are plain numbers such as ``"-1"``) are left alone.
    """
    if not isinstance(cell, str) or _NUMBER.fullmatch(cell):
        return cell
    if _FORMULA.match(cell) or _ESCAPED.match(cell):
        return "'" + cell
    return cell


def formula_restore(cell: str) -> str:
    """Undo :func:`formula_safe` on a cell read back from a CSV."""
    return cell[1:] if _ESCAPED.match(cell) else cell


def read_user_text(path: str | Path) -> str:
    """The text of a file a person wrote: UTF-8, with or without a byte-order mark.

    Raises:
        ValueError: the file is not UTF-8 (saved as UTF-16 "Unicode Text", or in a legacy code page such
            as Windows-1252); the message names the file and the first bad line, and how to re-save it.
    """
    path = Path(path)
    data = path.read_bytes()
    if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        raise ValueError(
            f"{path} is UTF-16 text (a spreadsheet's 'Unicode Text'); save it as 'CSV UTF-8 (comma delimited)'"
        )
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        raise ValueError(
            f"{path}:{line}: not UTF-8 text (byte 0x{data[e.start]:02x}). Save the file as "
            f"'CSV UTF-8 (comma delimited)' in your spreadsheet, or convert it, e.g. "
            f"iconv -f windows-1252 -t utf-8 {path} > fixed.csv"
        ) from None


def read_csv_rows(path: str | Path) -> list[tuple[int, list[str]]]:
    """``(line number, cells)`` for every row of a CSV a person wrote (see :func:`read_user_text`), with
    :func:`formula_restore` applied to every cell. A row's number is the line it ends on."""
    reader = csv.reader(io.StringIO(read_user_text(path), newline=""))
    return [(reader.line_num, [formula_restore(c) for c in row]) for row in reader]


def one_value_per_key(
    entries: Iterable[tuple[int, str, str]], path: str | Path, key_name: str = "image"
) -> dict[str, tuple[int, str]]:
    """``key -> (first line, value)`` from ``(line, key, value)`` rows of ``path``, in first-seen order.

    A key repeated with the same value is kept once (logged); with another value it is an error, since
    either row may be the right one.

    Raises:
        ValueError: naming the file, the key and both lines.
    """
    out: dict[str, tuple[int, str]] = {}
    repeats: list[tuple[int, int]] = []
    for line, key, value in entries:
        if key not in out:
            out[key] = (line, value)
            continue
        first, seen = out[key]
        if seen != value:
            raise ValueError(
                f"{path}: {key_name} {key} has two different labels: {seen!r} on line {first} and {value!r} "
                f"on line {line}; keep one row per {key_name}"
            )
        repeats.append((line, first))
    if repeats:
        log.info(
            "%s: %d rows repeat an earlier row with the same label and are ignored (e.g. line %d repeats line %d)",
            path,
            len(repeats),
            *repeats[0],
        )
    return out
