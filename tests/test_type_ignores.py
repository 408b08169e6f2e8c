"""Every ``type: ignore`` in the repository names its error code and says why on the same line.

An ignore without a reason is a silenced question: the next reader cannot tell a stub gap from a real
bug. ``mypy`` (run by ``make lint`` and ``.ci/run``) already reports ignores that no longer silence
anything (``warn_unused_ignores``); this test covers what mypy cannot: the reason.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
IGNORE = re.compile(r"#\s*type:\s*ignore(?P<codes>\[[^\]]*\])?(?P<rest>.*)$")
REASON = re.compile(r"^\s*#\s*\S+(\s+\S+){2,}")
"""A comment of at least three words after the ignore."""


def problems_in(text: str, path: str = "<snippet>") -> list[str]:
    found = []
    for number, line in enumerate(text.splitlines(), start=1):
        match = IGNORE.search(line)
        if match is None:
            continue
        if not match["codes"]:
            found.append(f"{path}:{number}: type: ignore without an error code")
        elif not REASON.match(match["rest"]):
            found.append(f"{path}:{number}: type: ignore{match['codes']} without a reason on the same line")
    return found


def test_every_type_ignore_names_its_code_and_reason() -> None:
    files = subprocess.run(
        ["git", "ls-files", "*.py"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.split()
    assert files, "git ls-files found no Python files"
    problems = [
        problem
        for name in files
        if name != "tests/test_type_ignores.py"
        for problem in problems_in((ROOT / name).read_text(encoding="utf-8"), name)
    ]
    assert not problems, "\n".join(problems)


def test_the_check_catches_a_bare_or_unexplained_ignore() -> None:
    assert problems_in("x = f()  # type: ignore")
    assert problems_in("x = f()  # type: ignore[arg-type]")
    assert problems_in("x = f()  # type: ignore[arg-type]  # stub")
    assert not problems_in("x = f()  # type: ignore[arg-type]  # pandas stubs type this as Any")
