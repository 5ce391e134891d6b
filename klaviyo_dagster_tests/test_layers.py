"""The layout's promise: domain modules know nothing of the Dagster layer (``defs/``), and the domain
packages depend on each other in one direction only (``DIRECTIONS``)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "klaviyo_dagster"
# Plain domain code: no Dagster at all.
NO_DAGSTER = ("klaviyo", "producers", "storage", "processing", "publishing", "sim", "derived_rows.py")
# May talk to a Dagster webserver, but never import the definitions.
NO_DEFINITIONS = (*NO_DAGSTER, "trigger", "accounts.py", "readiness.py", "account_zones.py", "run_names.py")

# What each part must not import, so that the domain packages depend on each other one way only.
# Storage keeps files and rows and knows no domain logic: it uses small shared leaf modules
# (``derived_rows``, ``redaction``, ``backoff``) and the call-ledger port ``klaviyo.ledger`` that it
# implements. Only the entry points read the environment (``environment.py``; test_environment.py).
# Processing is arithmetic on files: it never reads or writes the store. Publishing uses both, and
# only the Dagster layer uses it (that publishing and trigger import no ``defs`` is NO_DEFINITIONS).
# ``derived_rows`` is the leaf both storage and processing share: it imports nothing of ours.
DIRECTIONS = {
    "storage": (
        "klaviyo_dagster.processing",
        "klaviyo_dagster.producers",
        "klaviyo_dagster.publishing",
        "klaviyo_dagster.trigger",
        "klaviyo_dagster.klaviyo.client",
        "klaviyo_dagster.accounts",
        "klaviyo_dagster.environment",
    ),
    "processing": ("klaviyo_dagster.storage", "klaviyo_dagster.publishing", "klaviyo_dagster.environment"),
    # Producers name their files as the bucket does (storage/objects.py) and touch nothing else of it.
    "producers": (
        "klaviyo_dagster.environment",
        "klaviyo_dagster.storage.store",
        "klaviyo_dagster.storage.tables",
        "klaviyo_dagster.publishing",
    ),
    "klaviyo": ("klaviyo_dagster.environment", "klaviyo_dagster.producers", "klaviyo_dagster.storage.store"),
    "derived_rows.py": ("klaviyo_dagster",),
}


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


@pytest.mark.parametrize(("part", "forbidden"), DIRECTIONS.items(), ids=list(DIRECTIONS))
def test_the_domain_packages_depend_on_each_other_one_way(part: str, forbidden: tuple[str, ...]) -> None:
    assert not imports_of(part, *forbidden)


def test_the_rules_see_the_imports_they_forbid() -> None:
    """The checks read real imports (nested ones too): the Dagster layer imports publishing and storage."""
    assert imports_of("defs", "klaviyo_dagster.publishing")
    assert imports_of("publishing", "klaviyo_dagster.storage", "klaviyo_dagster.processing")


def test_the_package_does_not_import_pandas() -> None:
    """pandas is a test dependency only (pyproject.toml's dev extra): the metrics are plain Python."""
    assert not imports_of(".", "pandas")
