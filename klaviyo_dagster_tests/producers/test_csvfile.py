"""Numbers as JavaScript writes them, quoting as RFC 4180 wants it, files the dashboard can parse."""

from __future__ import annotations

import csv
import io
import json
import random
import shutil
import struct
import subprocess

import pandas as pd
import pytest

from klaviyo_dagster.producers.csvfile import CsvWriter, csv_line, js_number

# (value, what node's String(value) prints), taken from node v20.
JAVASCRIPT_STRINGS = [
    (0, "0"),
    (-0.0, "0"),
    (0.1 + 0.2, "0.30000000000000004"),
    (1e-7, "1e-7"),
    (-1e-7, "-1e-7"),
    (1.5e-7, "1.5e-7"),
    (1e-6, "0.000001"),
    (0.000001234, "0.000001234"),
    (123e20, "1.23e+22"),
    (1e21, "1e+21"),
    (999999999999999999999, "1e+21"),
    (1e20, "100000000000000000000"),
    (9007199254740993, "9007199254740992"),
    (12345678901234567890, "12345678901234567000"),
    (12.0, "12"),
    (100, "100"),
    (0.4125, "0.4125"),
    (-5.5, "-5.5"),
    (2.675, "2.675"),
    (1.005 * 1000, "1004.9999999999999"),
    (1 / 3, "0.3333333333333333"),
    (1e300, "1e+300"),
    (1.7976931348623157e308, "1.7976931348623157e+308"),
    (5e-324, "5e-324"),
    (float("nan"), "NaN"),
    (float("inf"), "Infinity"),
]


@pytest.mark.parametrize(("value", "expected"), JAVASCRIPT_STRINGS)
def test_numbers_are_written_as_javascript_writes_them(value: float, expected: str) -> None:
    assert js_number(value) == expected


def test_random_doubles_match_node() -> None:
    """Thousands of doubles across every exponent, checked against a real JavaScript engine."""
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed; the fixed cases above still ran")
    rng = random.Random(11)
    values = [struct.unpack("<d", struct.pack("<Q", rng.getrandbits(64)))[0] for _ in range(3000)]
    values = [v for v in values if v == v and abs(v) != float("inf")]
    values += [round(rng.uniform(0, 1000), rng.randint(0, 6)) for _ in range(2000)]
    script = "const vs=JSON.parse(require('fs').readFileSync(0,'utf8'));console.log(JSON.stringify(vs.map(String)))"
    out = subprocess.run(
        [node, "-e", script], input=json.dumps(values), capture_output=True, text=True, check=True
    )
    assert [js_number(v) for v in values] == json.loads(out.stdout)


def test_fields_are_quoted_only_when_they_must_be() -> None:
    line = csv_line(["plain", "a,b", 'say "hi"', "two\nlines", "cr\r", None, 12.0, 0.25, "café"])
    assert line == 'plain,"a,b","say ""hi""","two\nlines","cr\r",,12,0.25,café'


def write(rows: list[list[object]], final_newline: bool) -> str:
    out = io.StringIO(newline="")
    writer = CsvWriter(out, ["Name", "Value"], final_newline=final_newline)
    for row in rows:
        writer.write_row(row)
    writer.close()
    return out.getvalue()


def test_the_final_newline_is_the_callers_choice() -> None:
    assert write([["a", 1]], final_newline=False) == "Name,Value\na,1"
    assert write([["a", 1]], final_newline=True) == "Name,Value\na,1\n"
    assert write([], final_newline=False) == "Name,Value"


def test_awkward_values_round_trip_through_csv_and_pandas() -> None:
    rows = [['Win-back, 90 days "VIP"', 0.1 + 0.2], ["Anne\nMarie - Été 🎂", 1e-7], ["", 12.0]]
    text = write(rows, final_newline=False)

    parsed = list(csv.reader(io.StringIO(text, newline="")))
    assert parsed == [["Name", "Value"]] + [[name, js_number(value)] for name, value in rows]

    frame = pd.read_csv(io.StringIO(text), keep_default_na=False, float_precision="round_trip")
    assert frame["Name"].tolist() == [name for name, _ in rows]
    assert frame["Value"].tolist() == [0.1 + 0.2, 1e-7, 12.0]


def test_the_summary_counts_data_rows_and_previews_the_first_two() -> None:
    out = io.StringIO()
    writer = CsvWriter(out, ["Name"], final_newline=True)
    assert writer.summary().rows == 0
    for name in ["a", "b,c", "d"]:
        writer.write_row([name])
    assert writer.summary().rows == 3
    assert writer.summary().preview == ("Name", "a", '"b,c"')
