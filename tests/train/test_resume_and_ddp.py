"""Runs that survive SIGKILL, and data parallelism that changes nothing but the speed."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import RLHFKIT, messages, run_cli, write_lines

pytestmark = pytest.mark.slow  # training runs in processes, killed and resumed; DDP over two


def preferences(n=24):
    return [
        {"prompt": messages(("user", f"Customer {i}: my order #{1000 + 37 * i} is late.")),
         "chosen": messages(("assistant", f"Sorry! Order #{1000 + 37 * i} ships today.\n\nBest "
                                          "regards,\nThe Team")),
         "rejected": messages(("assistant", "I think maybe it will arrive, perhaps." + " x" * i))}
        for i in range(n)
    ]


def losses(out: Path) -> list[tuple[int, float]]:
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return [(r["step"], r["loss"]) for r in rows]


def train_args(data, out, *extra):
    return ["train", "dpo", "--model", "tiny-random", "--data", str(data), "--output-dir",
            str(out), "--precision", "fp32", "--batch-size", "4", "--learning-rate", "1e-3",
            "--save-every", "3", *extra]


@pytest.mark.parametrize("lora", ["--lora", "--no-lora"])
def test_resume_after_sigkill_reproduces_the_loss_curve(tmp_path, lora):
    data = write_lines(tmp_path / "prefs.jsonl", preferences())
    steps = "24"
    reference = run_cli(*train_args(data, tmp_path / "ref", "--max-steps", steps, lora))
    assert reference.code == 0, reference.stderr

    out = tmp_path / "killed"
    proc = subprocess.Popen([RLHFKIT, *train_args(data, out, "--max-steps", steps, lora)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    deadline = time.time() + 300
    while not (out / "checkpoint-000006").exists():
        assert proc.poll() is None, "training finished before it could be killed"
        assert time.time() < deadline
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (out / "final").exists()
    done_before_kill = len(losses(out))
    assert 6 <= done_before_kill < 24

    resumed = run_cli(*train_args(data, out, "--max-steps", steps, lora, "--resume"))
    assert resumed.code == 0, resumed.stderr
    got, want = losses(out), losses(tmp_path / "ref")
    assert [s for s, _ in got] == [s for s, _ in want] == list(range(1, 25))
    for (_, a), (_, b) in zip(got, want, strict=True):
        assert abs(a - b) < 1e-5


def test_refuses_to_mix_two_runs_in_one_folder(tmp_path):
    data = write_lines(tmp_path / "prefs.jsonl", preferences(8))
    assert run_cli(*train_args(data, tmp_path / "o", "--max-steps", "3")).code == 0
    again = run_cli(*train_args(data, tmp_path / "o", "--max-steps", "3"))
    assert again.code == 2 and "--resume" in again.stderr


def test_two_processes_match_one(tmp_path):
    """DDP over 2 CPU processes (gloo) with the same global batch gives the same loss curve."""
    data = write_lines(tmp_path / "prefs.jsonl", preferences())
    args = train_args(data, tmp_path / "one", "--max-steps", "6", "--save-every", "0")
    single = run_cli(*args)
    assert single.code == 0, single.stderr
    accelerate = str(Path(sys.executable).parent / "accelerate")
    config = Path(__file__).parents[2] / "configs" / "accelerate" / "ddp-cpu.yaml"
    launch = [accelerate, "launch", "--config_file", str(config), "--main_process_port", "29517",
              "-m", "rlhfkit.cli"]
    two = subprocess.run(
        launch + train_args(data, tmp_path / "two", "--max-steps", "6", "--save-every", "0"),
        capture_output=True, text=True, timeout=600,
        env={**os.environ, "CUDA_VISIBLE_DEVICES": ""},
    )
    assert two.returncode == 0, two.stderr[-3000:]
    for (s1, a), (s2, b) in zip(losses(tmp_path / "one"), losses(tmp_path / "two"), strict=True):
        assert s1 == s2 and abs(a - b) < 1e-5
    manifest = json.loads((tmp_path / "two" / "final" / "rlhfkit-manifest.json").read_text())
    assert manifest["kind"] == "dpo"
