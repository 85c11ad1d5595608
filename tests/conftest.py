"""Shared fixtures: the real CLI (in this process, or as a subprocess), the tiny random model,
sample rows.

Models come from rlhfkit's normal cache (~/.cache/rlhfkit unless RLHFKIT_CACHE is set), so
the suite converts the bundled SmolLM2 at most once per machine, as `make demo` does.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import subprocess
import sys
import traceback
from contextlib import redirect_stderr, redirect_stdout
from dataclasses import dataclass
from pathlib import Path

import pytest

RLHFKIT = str(Path(sys.executable).parent / "rlhfkit")


@dataclass
class CliResult:
    code: int
    stdout: str
    stderr: str


def run_cli(
    *args: str, cwd: Path | None = None, timeout: float = 600, own_process: bool = False
) -> CliResult:
    """Run the `rlhfkit` command line as a user would: argv in; exit code, stdout, stderr out.

    By default in this process, through the same entry point the installed script calls
    (`rlhfkit.cli.main`): a fresh interpreter would spend ~4 s importing torch and
    transformers before every command, and the suite runs ~80 of them. An exception that
    escapes `main` becomes exit code 1 with its traceback on stderr, as in a real process.
    ``own_process=True`` runs the installed executable instead (with ``timeout``), for what
    only a process shows: signals, `accelerate launch`, the long demo's real wiring.
    """
    env = {"COLUMNS": "200", "NO_COLOR": "1"}
    if own_process:
        proc = subprocess.run(
            [RLHFKIT, *args], cwd=cwd, capture_output=True, text=True, timeout=timeout,
            env={**os.environ, **env},
        )
        return CliResult(proc.returncode, proc.stdout, proc.stderr)
    return _run_in_process(list(args), cwd, env)


def _run_in_process(args: list[str], cwd: Path | None, env: dict[str, str]) -> CliResult:
    from rlhfkit.cli import main

    out, err = io.StringIO(), io.StringIO()
    saved_argv, saved_env = sys.argv, dict(os.environ)
    code = 0
    try:
        sys.argv = ["rlhfkit", *args]
        os.environ.update(env)
        with contextlib.chdir(cwd or os.getcwd()), redirect_stdout(out), redirect_stderr(err):
            try:
                main()
            except SystemExit as e:
                code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
                if isinstance(e.code, str):
                    print(e.code, file=sys.stderr)
            except Exception:
                traceback.print_exc()
                code = 1
    finally:
        sys.argv = saved_argv
        os.environ.clear()
        os.environ.update(saved_env)
    return CliResult(code, out.getvalue(), err.getvalue())


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
