"""The README and docs/*.md hold together: every relative link reaches a file (and a heading, when it
names one), every docs page is linked from the README, and every `make <target>` they name exists."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from klaviyo_dagster_tests.paths import PROJECT_ROOT

README = PROJECT_ROOT / "README.md"
DOCS = sorted((PROJECT_ROOT / "docs").glob("*.md"))
PAGES = [README, *DOCS]
MAKEFILE = PROJECT_ROOT / "Makefile"

FENCE = re.compile(r"^(```|~~~).*?^\1[ \t]*$", flags=re.MULTILINE | re.DOTALL)
INLINE_CODE = re.compile(r"(`+)(.+?)\1", flags=re.DOTALL)
# [text](target) and [text](target "title"); images too. Not inside code (removed first).
LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
HEADING = re.compile(r"^#{1,6}[ \t]+(.+?)[ \t]*#*[ \t]*$", flags=re.MULTILINE)
EXTERNAL = re.compile(r"^[a-z][a-z0-9+.-]*:", flags=re.IGNORECASE)  # http:, https:, mailto:, ...
# `make` as a command: at the start of a line or after a shell separator, then its arguments.
MAKE_COMMAND = re.compile(r"(?:^|[\s;&|(])make((?:[ \t]+[^\s;&|)#`]+)*)", flags=re.MULTILINE)


def _relative(page: Path) -> str:
    return str(page.relative_to(PROJECT_ROOT))


def _without_code(text: str) -> str:
    return INLINE_CODE.sub("", FENCE.sub("", text))


def _code(text: str) -> list[str]:
    """The fenced blocks and inline code spans of a page."""
    blocks = [match.group(0) for match in FENCE.finditer(text)]
    spans = [match.group(2) for match in INLINE_CODE.finditer(FENCE.sub("", text))]
    return blocks + spans


def github_anchor(heading: str) -> str:
    """The anchor GitHub gives a heading: markup dropped, lower case, punctuation removed, spaces to
    hyphens (underscores and hyphens stay)."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link: its text
    text = text.replace("`", "").replace("*", "")
    text = re.sub(r"[^\w\- ]", "", text.strip().lower())
    return text.replace(" ", "-")


def anchors(page: Path) -> set[str]:
    """Every anchor of the page's headings, with GitHub's -1, -2, ... for repeated ones."""
    seen: dict[str, int] = {}
    found = set()
    for heading in HEADING.findall(FENCE.sub("", page.read_text())):
        anchor = github_anchor(heading)
        count = seen.get(anchor, 0)
        seen[anchor] = count + 1
        found.add(anchor if count == 0 else f"{anchor}-{count}")
    return found


def links(page: Path) -> list[str]:
    return LINK.findall(_without_code(page.read_text()))


def make_targets() -> set[str]:
    """The targets the Makefile defines (rules and .PHONY names)."""
    targets = set()
    for line in MAKEFILE.read_text().splitlines():
        rule = re.match(r"^([A-Za-z0-9_.$() -]+?)\s*:(?!=)", line)
        if rule and not line.startswith("\t"):
            targets.update(name for name in rule.group(1).split() if not name.startswith("$"))
        phony = re.match(r"^\.PHONY\s*:(.*)$", line)
        if phony:
            targets.update(phony.group(1).split())
    return targets - {".PHONY"}


def named_make_targets(text: str) -> set[str]:
    """The targets of every `make ...` command in the page's code: `make dev PORT=3311` names dev."""
    named = set()
    for code in _code(text):
        for match in MAKE_COMMAND.finditer(code):
            for argument in match.group(1).split():
                if argument.startswith("-") or "=" in argument:
                    continue  # an option, or a variable assignment
                if re.fullmatch(r"[A-Za-z][\w.-]*", argument):
                    named.add(argument)
                break  # only the first target after make's options and variables
    return named


def test_the_docs_exist() -> None:
    assert DOCS, "docs/*.md"


@pytest.mark.parametrize("page", PAGES, ids=_relative)
def test_every_relative_link_reaches_a_file_and_its_heading(page: Path) -> None:
    broken = []
    for target in links(page):
        if EXTERNAL.match(target):
            continue
        path_part, _, anchor = target.partition("#")
        destination = (page.parent / path_part).resolve() if path_part else page
        if not destination.exists():
            broken.append(f"{target}: no file {destination}")
        elif anchor and destination.suffix == ".md" and anchor not in anchors(destination):
            broken.append(f"{target}: no heading #{anchor} in {_relative(destination)}")
    assert not broken, "\n".join(broken)


def test_the_readme_links_every_docs_page() -> None:
    linked = {(README.parent / target.partition("#")[0]).resolve() for target in links(README)}
    assert not [_relative(page) for page in DOCS if page.resolve() not in linked]


@pytest.mark.parametrize("page", PAGES, ids=_relative)
def test_every_make_target_named_exists(page: Path) -> None:
    named = named_make_targets(page.read_text())
    assert not named - make_targets(), f"{_relative(page)} names targets the Makefile lacks"


def test_the_checks_see_what_they_check() -> None:
    """The helpers find real links, headings and targets (a regex that matched nothing would pass)."""
    assert "docs/operations.md" in links(README)
    assert "backfill-missed-dates" in anchors(PROJECT_ROOT / "docs" / "operations.md")
    assert github_anchor("The `reconciles_with_klaviyo` check") == "the-reconciles_with_klaviyo-check"
    assert github_anchor("2. The instance and its environment") == "2-the-instance-and-its-environment"
    assert github_anchor("Klaviyo calls: pacing, 429s, retries") == "klaviyo-calls-pacing-429s-retries"
    assert {"install", "demo", "test", "dev", "clean"} <= make_targets()
    assert named_make_targets(
        "```bash\nmake dev PORT=3311 DEV_HOME=/tmp/x\n```\n`make test TEST_WORKERS=0`"
    ) == {
        "dev",
        "test",
    }
    assert named_make_targets("`PYTHON=python3.11 make demo`, and make sure of it") == {"demo"}
    assert {"demo", "test", "dev"} <= named_make_targets(README.read_text())
