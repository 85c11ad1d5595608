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
from dataclasses import dataclass
from pathlib import Path

import pytest

RLHFKIT = str(Path(sys.executable).parent / "rlhfkit")
# What every command sees, in its own process or in this one: the rich consoles read these
# when `rlhfkit.cli` is first imported, so they are set before any test imports it.
CLI_ENV = {"COLUMNS": "200", "NO_COLOR": "1", "TTY_COMPATIBLE": "0"}
os.environ.update(CLI_ENV)


@dataclass
class CliResult:
    code: int
    stdout: str
    stderr: str


def run_cli(
    *args: str, cwd: Path | None = None, timeout: float | None = None, own_process: bool = False
) -> CliResult:
    """Run the `rlhfkit` command line as a user would: argv in; exit code, stdout, stderr out.

    By default in this process, through the entry point the installed script calls
    (`rlhfkit.cli.main`): a fresh interpreter spends ~4 s importing torch and transformers
    before each command, and the suite runs ~80 of them. An exception that escapes `main`
    becomes exit code 1 with its traceback on stderr, as in a real process. What differs from
    a process: Python warnings go to pytest's record, library logging to pytest's handlers,
    and nothing can time out. ``own_process=True`` runs the installed executable (with
    ``timeout``): for what only a process shows, such as the start-up time or the quick
    demo's real wiring. Tests about signals and `accelerate launch` start processes directly.
    """
    if own_process:
        proc = subprocess.run(
            [RLHFKIT, *args], cwd=cwd, capture_output=True, text=True, timeout=timeout or 600
        )  # the environment already holds CLI_ENV
        return CliResult(proc.returncode, proc.stdout, proc.stderr)
    if timeout is not None:
        raise ValueError("timeout needs own_process=True: an in-process command cannot time out")
    return _run_in_process(list(args), cwd)


def _run_in_process(args: list[str], cwd: Path | None) -> CliResult:
    from accelerate.state import AcceleratorState, GradientState

    from rlhfkit.cli import main

    out, err = io.StringIO(), io.StringIO()
    saved_argv, saved_env = sys.argv, dict(os.environ)
    code = 0
    try:
        sys.argv = ["rlhfkit", *args]
        with (
            contextlib.chdir(cwd or os.getcwd()),
            contextlib.redirect_stdout(out),
            contextlib.redirect_stderr(err),
        ):
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
        for key in set(os.environ) - set(saved_env):
            del os.environ[key]
        for key, value in saved_env.items():
            if os.environ.get(key) != value:
                os.environ[key] = value
        # Accelerate keeps one process-wide state: the next command may choose another
        # precision, as it could in its own process.
        AcceleratorState._reset_state(reset_partial_state=True)
        GradientState._reset_state()
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
