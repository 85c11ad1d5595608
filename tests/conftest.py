"""Shared fixtures: the real CLI as a subprocess, the tiny random model, sample rows.

Models come from rlhfkit's normal cache (~/.cache/rlhfkit unless RLHFKIT_CACHE is set), so
the suite converts the bundled SmolLM2 at most once per machine, as `make demo` does.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

RLHFKIT = str(Path(sys.executable).parent / "rlhfkit")


@dataclass
class CliResult:
    code: int
    stdout: str
    stderr: str


def run_cli(*args: str, cwd: Path | None = None, timeout: float = 600) -> CliResult:
    """Run the installed `rlhfkit` entry point, exactly as a user would."""
    env = {**os.environ, "COLUMNS": "200", "NO_COLOR": "1"}
    proc = subprocess.run(
        [RLHFKIT, *args], cwd=cwd, capture_output=True, text=True, timeout=timeout, env=env
    )
    return CliResult(proc.returncode, proc.stdout, proc.stderr)


@pytest.fixture
def cli():
    return run_cli


def write_lines(path: Path, rows: list) -> Path:
    """Write rows as JSONL; a str row is written verbatim (to make broken lines)."""
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


@pytest.fixture(scope="session")
def tiny():
    from rlhfkit.models import tiny_model

    model, tok = tiny_model()
    model.eval()
    return model, tok


def messages(*pairs: tuple[str, str]) -> list[dict[str, str]]:
    return [{"role": r, "content": c} for r, c in pairs]
