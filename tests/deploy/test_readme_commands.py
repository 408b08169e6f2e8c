"""The README's promises: it opens with `make run`, `make ui` and `make test`, stays short enough for a
newcomer (the detail lives in docs/), every link in it and in docs/ resolves, and no page names a make
target the Makefile lacks."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
MAKEFILE = ROOT / "Makefile"
DOCS = sorted((ROOT / "docs").glob("*.md"))
README_MAX_LINES = 250

FENCED_BLOCK = re.compile(r"```[^\n]*\n(.*?)```", re.DOTALL)
INLINE_CODE = re.compile(r"`([^`\n]+)`")
MAKE_TARGET = re.compile(r"(?:^|[\s;&|(])make\s+([A-Za-z][\w.-]*)", re.MULTILINE)
TARGET_LINE = re.compile(r"^([A-Za-z][\w.-]*)\s*:(?!=)", re.MULTILINE)
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
HEADING = re.compile(r"^#{1,6}\s+(.+?)\s*$", re.MULTILINE)


def code_in(markdown: str) -> list[str]:
    blocks = FENCED_BLOCK.findall(markdown)
    prose = FENCED_BLOCK.sub("", markdown)
    return blocks + INLINE_CODE.findall(prose)


def make_targets_named_in(markdown: str) -> set[str]:
    targets = set()
    for code in code_in(markdown):
        for target in MAKE_TARGET.findall(code):
            if "=" not in target:
                targets.add(target)
    return targets


def makefile_targets() -> set[str]:
    return set(TARGET_LINE.findall(MAKEFILE.read_text()))


def anchor(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation dropped (hyphens and underscores kept),
    spaces as hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def anchors(page: Path) -> set[str]:
    return {anchor(heading) for heading in HEADING.findall(FENCED_BLOCK.sub("", page.read_text()))}


def test_readme_opens_with_make_run_make_ui_and_make_test() -> None:
    head = "\n".join(README.read_text().splitlines()[:8])
    positions = [head.find(f"make {target}") for target in ("run", "ui", "test")]
    assert -1 not in positions, head
    assert positions == sorted(positions), head


def test_readme_is_short_and_the_detail_is_in_docs() -> None:
    lines = len(README.read_text().splitlines())
    assert lines <= README_MAX_LINES, f"README.md has {lines} lines; move detail to docs/"
    linked = {target.split("#")[0] for target in LINK.findall(README.read_text())}
    for page in DOCS:
        assert f"docs/{page.name}" in linked, f"README does not link docs/{page.name}"


@pytest.mark.parametrize("page", [README, *DOCS], ids=lambda page: page.name)
def test_every_relative_link_resolves(page: Path) -> None:
    text = FENCED_BLOCK.sub("", page.read_text())
    for target in LINK.findall(text):
        if re.match(r"[a-z]+:", target):
            continue  # http(s), mailto: not ours to check offline
        path, _, fragment = target.partition("#")
        linked = (page.parent / path).resolve() if path else page
        assert linked.exists(), f"{page.name}: {target} names a missing file"
        if fragment and linked.suffix == ".md":
            assert fragment in anchors(linked), f"{page.name}: {target} names a missing heading"


def test_every_make_target_the_readme_and_docs_name_exists() -> None:
    named = make_targets_named_in(README.read_text())
    assert {"run", "ui", "test"} <= named
    for page in DOCS:
        named |= make_targets_named_in(page.read_text())
    missing = named - makefile_targets()
    assert not missing, f"README or docs/ name make targets the Makefile lacks: {sorted(missing)}"
