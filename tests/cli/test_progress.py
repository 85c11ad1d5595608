"""Progress where the output is not a terminal (CI, nohup, a log file): plain lines, the first
and the last step always, at most one every two seconds between, each flushed at once."""

import io
import itertools
import re

import pytest
from rich.console import Console

from rlhfkit.cli.common import StepProgress
from tests.conftest import run_cli, write_lines


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class Flushes(io.StringIO):
    """A log file that counts its flushes."""

    flushes = 0

    def flush(self) -> None:
        self.flushes += 1


def plain(**kw) -> tuple[StepProgress, Flushes, Clock]:
    clock, log = Clock(), Flushes()
    out = Console(file=log, force_terminal=False, force_interactive=False)
    return StepProgress(kw.pop("label", "sft"), out=out, clock=clock, **kw), log, clock


def test_a_10000_step_run_prints_a_line_every_two_seconds_and_its_first_and_last():
    progress, log, clock = plain(note="loading model and data")
    assert not progress.live
    with progress:
        clock.now = 5.0
        for step in range(1, 10_001):
            progress(step, 10_000, {"loss": 1.0 / step, "kl": 0.5, "ignored": 1.0})
            clock.now += 0.01  # 100 s in all
    lines = log.getvalue().splitlines()
    assert lines[0] == "sft: loading model and data"
    assert lines[1] == "sft step 1/10000  loss=1  kl=0.5  5 s"
    assert lines[-1] == "sft step 10000/10000  loss=0.0001  kl=0.5  105 s"
    assert 50 <= len(lines) <= 53, len(lines)  # one per 2 s of the 100 s, with the ends
    steps = [int(re.search(r"step (\d+)/", line)[1]) for line in lines[1:]]
    gaps = [b - a for a, b in itertools.pairwise(steps[:-1])]
    assert all(199 <= gap <= 201 for gap in gaps), gaps  # 2 s of 0.01 s steps
    assert log.flushes >= len(lines)


def test_the_update_not_yet_shown_is_printed_on_leaving():
    progress, log, clock = plain()
    with progress:
        progress(1, 10, {"loss": 2.0})
        clock.now = 1.0
        progress(2, 10, {"loss": 1.5})  # within two seconds: held back
        assert log.getvalue().count("\n") == 1
    assert log.getvalue().splitlines() == [
        "sft step 1/10  loss=2  0 s",
        "sft step 2/10  loss=1.5  1 s",
    ]


def test_sampling_and_evaluation_shapes_and_stages():
    progress, log, clock = plain(label="sampling")
    with progress:
        progress(8, 16)
        clock.now = 0.5
        progress(16, 16)
        progress("after model", 4, 8)  # a new part of the step: shown at once
        progress.stage("eval", "loading")
        clock.now = 3.0
        progress("before", 8, 8)
    assert log.getvalue().splitlines() == [
        "sampling 8/16  0 s",
        "sampling 16/16  0 s",
        "sampling after model 4/8  0 s",
        "eval: loading",
        "eval before 8/8  2 s",
    ]


def test_a_terminal_gets_the_live_bar():
    log = io.StringIO()
    out = Console(file=log, force_terminal=True, force_interactive=True, width=100)
    with StepProgress("sft", "loading", out=out) as progress:
        assert progress.live
        progress(3, 4, {"loss": 0.5})
    assert "3/4" in log.getvalue() and "loss=0.5" in log.getvalue()
    assert "sft step" not in log.getvalue()


@pytest.mark.slow
def test_train_with_its_output_captured_prints_a_line_per_step(tmp_path):
    rows = [{"prompt": "Where is my order?", "completion": "It ships today."}] * 6
    data = write_lines(tmp_path / "sft.jsonl", rows)
    result = run_cli("train", "sft", "--model", "tiny-random", "--data", str(data),
                     "--output-dir", str(tmp_path / "sft"), "--max-steps", "3",
                     "--batch-size", "2", "--precision", "fp32", "--save-every", "0")  # fmt: skip
    assert result.code == 0, result.stderr
    lines = result.stderr.splitlines()
    assert "sft: loading model and data" in lines
    steps = [line for line in lines if line.startswith("sft step ")]
    assert steps[0].startswith("sft step 1/3  loss=") and steps[-1].startswith("sft step 3/3")
    assert all(re.fullmatch(r"sft step \d/3  loss=\S+ .* \d+ s", line) for line in steps)
