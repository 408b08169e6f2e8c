"""The README's promises about commands: it opens with `make run` and `make test`, and names no target the
Makefile lacks."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
MAKEFILE = ROOT / "Makefile"

FENCED_BLOCK = re.compile(r"```[^\n]*\n(.*?)```", re.DOTALL)
INLINE_CODE = re.compile(r"`([^`\n]+)`")
MAKE_TARGET = re.compile(r"(?:^|[\s;&|(])make\s+([A-Za-z][\w.-]*)", re.MULTILINE)
TARGET_LINE = re.compile(r"^([A-Za-z][\w.-]*)\s*:(?!=)", re.MULTILINE)


def code_in(markdown: str) -> list[str]:
    blocks = FENCED_BLOCK.findall(markdown)
    prose = FENCED_BLOCK.sub("", markdown)
    return blocks + INLINE_CODE.findall(prose)


def readme_make_targets() -> set[str]:
    targets = set()
    for code in code_in(README.read_text()):
        for target in MAKE_TARGET.findall(code):
            if "=" not in target:
                targets.add(target)
    return targets


def makefile_targets() -> set[str]:
    return set(TARGET_LINE.findall(MAKEFILE.read_text()))


def test_readme_opens_with_make_run_and_make_test() -> None:
    head = README.read_text().splitlines()[:8]
    text = "\n".join(head)
    assert "make run" in text and "make test" in text
    assert text.index("make run") < text.index("make test")


def test_every_make_target_the_readme_names_exists() -> None:
    named = readme_make_targets()
    assert {"run", "test"} <= named
    missing = named - makefile_targets()
    assert not missing, f"README names make targets the Makefile lacks: {sorted(missing)}"
