"""The layout's promise: domain modules know nothing of the Dagster layer (``defs/``)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "klaviyo_dagster"
# Plain domain code: no Dagster at all.
NO_DAGSTER = ("klaviyo", "producers", "storage", "processing", "sim")
# May talk to a Dagster webserver, but never import the definitions.
NO_DEFINITIONS = (*NO_DAGSTER, "trigger", "accounts.py", "readiness.py", "account_zones.py", "run_names.py")


def imported_modules(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
    return found


def python_files(part: str) -> list[Path]:
    target = PACKAGE / part
    return [target] if target.is_file() else sorted(target.rglob("*.py"))


def imports_of(part: str, *prefixes: str) -> set[str]:
    """``file: module`` for each import under ``part`` of a module named by, or inside, a prefix."""
    return {
        f"{path.relative_to(PACKAGE)}: {module}"
        for path in python_files(part)
        for module in imported_modules(path)
        if any(module == prefix or module.startswith((f"{prefix}.", f"{prefix}_")) for prefix in prefixes)
    }


@pytest.mark.parametrize("part", NO_DEFINITIONS)
def test_domain_modules_never_import_the_dagster_layer(part: str) -> None:
    assert not imports_of(part, "klaviyo_dagster.defs", "klaviyo_dagster.definitions")


@pytest.mark.parametrize("part", NO_DAGSTER)
def test_the_domain_packages_do_not_import_dagster(part: str) -> None:
    assert not imports_of(part, "dagster")


def test_the_package_does_not_import_pandas() -> None:
    """pandas is a test dependency only (pyproject.toml's dev extra): the metrics are plain Python."""
    assert not imports_of(".", "pandas")
