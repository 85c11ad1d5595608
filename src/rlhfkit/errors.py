"""Errors that are the user's to fix.

A `UserError` carries one or more problems, each already phrased for a person
(``FILE:LINE: reason`` where a file is involved). The CLI prints them and exits with code 2;
it never shows a stack trace for them. Anything else escaping a command is a bug in rlhfkit.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Problem:
    """One thing wrong with one place in one input."""

    source: str
    line: int | None
    reason: str

    def __str__(self) -> str:
        where = f"{self.source}:{self.line}" if self.line is not None else self.source
        return f"{where}: {self.reason}"


class UserError(Exception):
    """Bad input, a missing file, a refused request: exit code 2, nothing written."""

    def __init__(self, message: str | Sequence[Problem], hint: str | None = None):
        if isinstance(message, str):
            self.problems: list[Problem] = []
            text = message
        else:
            self.problems = list(message)
            text = "\n".join(str(p) for p in self.problems)
        self.hint = hint
        super().__init__(text)


def display_path(path: Path | str) -> str:
    """A path as the user would type it: relative to the working directory when inside it."""
    p = Path(path)
    try:
        return str(p.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(p)
