"""Writing the dashboard's CSVs byte for byte: JavaScript number text, RFC 4180 minimal quoting.

The files used to be written by a JavaScript producer and the dashboard's parser grew up on its
output, so numbers are written the way JavaScript's ``String(n)`` writes them (``12`` not ``12.0``,
``1e-7`` not ``1e-07``) and a field is quoted only when it must be.
"""

from __future__ import annotations

import csv
import itertools
import math
import re
import shutil
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any, TextIO

_MUST_QUOTE = frozenset('",\r\n')
_EXACT_INT = 2**53
# A lone UTF-16 surrogate (half an emoji, sent by Klaviyo as a ``"\ud83d"`` JSON escape) cannot be
# written as UTF-8; U+FFFD is what a UTF-8 decoder shows for it. NUL is dropped.
_NOT_TEXT = re.compile("[\ud800-\udfff]|\x00")


def js_number(value: float | int) -> str:
    """``String(value)`` as JavaScript computes it for the double nearest ``value``."""
    if type(value) is int and -_EXACT_INT < value < _EXACT_INT:
        return str(value)  # exactly representable: JavaScript prints the same digits
    number = float(value)
    if number == 0:
        return "0"  # JavaScript prints -0 as "0" too
    text = repr(number)
    if "e" not in text and "n" not in text:  # 1e-4 <= |x| < 1e16: Python's repr is JavaScript's text
        return text[:-2] if text.endswith(".0") else text
    if math.isnan(number):
        return "NaN"
    if math.isinf(number):
        return "Infinity" if number > 0 else "-Infinity"
    sign = "-" if number < 0 else ""
    # repr() gives the shortest digits that round-trip, as ECMAScript's Number::toString requires.
    _, digit_tuple, exponent = Decimal(repr(abs(number))).as_tuple()
    digits = "".join(map(str, digit_tuple)).rstrip("0")
    k = len(digits)
    n = len(digit_tuple) + int(exponent)  # the decimal point sits after n digits
    if k <= n <= 21:
        text = digits + "0" * (n - k)
    elif 0 < n <= 21:
        text = f"{digits[:n]}.{digits[n:]}"
    elif -6 < n <= 0:
        text = "0." + "0" * -n + digits
    else:
        mantissa = digits if k == 1 else f"{digits[0]}.{digits[1:]}"
        text = f"{mantissa}e{'+' if n - 1 >= 0 else '-'}{abs(n - 1)}"
    return sign + text


def field_text(value: Any) -> str:
    """One field's text before quoting: None → empty, numbers as JavaScript, the rest as str (no NUL)."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return js_number(value)
    return valid_text(str(value))


def valid_text(text: str) -> str:
    """``text`` as valid UTF-8 text (contracts/csv.md, "Common rules"): each lone surrogate becomes
    U+FFFD and NUL is dropped (common CSV readers cut a field there, and Postgres text cannot hold
    it). ASCII text, nearly every field, is returned as it is without a regex pass."""
    if text.isascii() and "\x00" not in text:
        return text
    return _NOT_TEXT.sub(lambda match: "" if match.group() == "\x00" else "\ufffd", text)


def quote(text: str) -> str:
    """RFC 4180 minimal quoting: wrap only fields holding ``"``, ``,``, CR or LF; double inner quotes."""
    if _MUST_QUOTE.isdisjoint(text):
        return text
    return '"' + text.replace('"', '""') + '"'


def csv_line(values: Iterable[Any]) -> str:
    return ",".join(quote(field_text(v)) for v in values)


PREVIEW_ROWS = 2
# Reading our files back (reconciliation, snapshot metrics): names and long custom values may exceed
# the csv module's 128 KiB field default.
READ_FIELD_SIZE_LIMIT = 16 * 1024 * 1024


def read_preview(path: Path) -> tuple[str, ...]:
    """The header and first ``PREVIEW_ROWS`` records of one of our files, as ``CsvWriter`` wrote them."""
    csv.field_size_limit(READ_FIELD_SIZE_LIMIT)
    with path.open(encoding="utf-8", newline="") as file:
        return tuple(csv_line(record) for record in itertools.islice(csv.reader(file), PREVIEW_ROWS + 1))


@dataclass(frozen=True)
class CsvSummary:
    """What a written file holds, for metadata and dry runs: data rows and a preview.

    ``preview`` is the header and the first two data records exactly as written (a quoted field may
    hold a newline, so a record is not always one physical line).
    """

    rows: int
    preview: tuple[str, ...]
    # What Klaviyo returned and what the file left out, by reason (contracts/csv.md, "Reconciliation").
    reconciliation: Mapping[str, object] = field(default_factory=dict)


class _RowWriter:
    """Writes each row as ``"\\n" + record`` to ``out``, counts them and keeps the first records
    until ``kept`` holds ``keep`` lines (the preview)."""

    def __init__(self, out: TextIO, kept: list[str], keep: int) -> None:
        self._out = out
        self._kept = kept
        self._keep = keep
        self.rows = 0
        self.tally: Counter[str] = (
            Counter()
        )  # what the rows' producer counted, e.g. profiles dropped by reason

    def write_row(self, values: Sequence[Any]) -> None:
        line = csv_line(values)
        self._out.write("\n" + line)
        self.rows += 1
        if len(self._kept) < self._keep:
            self._kept.append(line)


class CsvBlock(_RowWriter):
    """Rows for a CsvWriter, formatted into a separate stream (a parallel worker's share of a file)."""

    def __init__(self, out: TextIO) -> None:
        self.out = out
        self.first_records: list[str] = []
        super().__init__(out, self.first_records, PREVIEW_ROWS)


class CsvWriter(_RowWriter):
    """Writes header and rows to a text stream, ``\\n`` between lines, newline after the last optional.

    flows.csv and campaigns.csv end without a newline, subscribers.csv with one (as the old files
    did, so files stay byte-comparable); ``final_newline`` chooses.
    """

    def __init__(self, out: TextIO, header: Sequence[str], *, final_newline: bool) -> None:
        self._final_newline = final_newline
        self._preview = [csv_line(header)]
        super().__init__(out, self._preview, PREVIEW_ROWS + 1)
        out.write(self._preview[0])

    def append_block(self, block: CsvBlock) -> None:
        """Copies a ``CsvBlock``'s rows (each written as ``"\n" + record``) after ours, with its tally."""
        block.out.seek(0)
        shutil.copyfileobj(block.out, self._out)
        self._preview.extend(block.first_records[: PREVIEW_ROWS + 1 - len(self._preview)])
        self.rows += block.rows
        self.tally.update(block.tally)

    def summary(self, reconciliation: Mapping[str, object] | None = None) -> CsvSummary:
        return CsvSummary(self.rows, tuple(self._preview), reconciliation or {})

    def close(self) -> None:
        if self._final_newline:
            self._out.write("\n")
