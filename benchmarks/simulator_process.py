"""The Klaviyo simulator in a process of its own, for benchmarks (its CPU is not the benchmark's)."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def simulator_process(**options: object) -> Iterator[tuple[str, int]]:
    """(base URL, pid) of ``python -m klaviyo_dagster.sim --port 0 --<option> <value> ...``."""
    flags = [item for name, value in options.items() for item in (f"--{name.replace('_', '-')}", str(value))]
    command = [sys.executable, "-m", "klaviyo_dagster.sim", "--port", "0", *flags]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    try:
        line = process.stdout.readline() if process.stdout else ""
        yield next(word for word in line.split() if word.startswith("http://")), process.pid
    finally:
        process.terminate()
        process.wait(timeout=30)
