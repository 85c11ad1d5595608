"""Checkpoints and --resume: runs that survive SIGKILL, and resumes that are refused."""

import os
import signal
import subprocess
import time

import pytest

from tests.conftest import RLHFKIT, run_cli, write_lines
from tests.train.conftest import losses, preferences, support_pairs, train_args


@pytest.mark.slow
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


@pytest.mark.slow
def test_refuses_to_mix_two_runs_in_one_folder(tmp_path):
    data = write_lines(tmp_path / "prefs.jsonl", preferences(8))
    assert run_cli(*train_args(data, tmp_path / "o", "--max-steps", "3")).code == 0
    again = run_cli(*train_args(data, tmp_path / "o", "--max-steps", "3"))
    assert again.code == 2 and "--resume" in again.stderr


@pytest.mark.slow
def test_resume_with_other_settings_is_refused(tmp_path):
    prefs = write_lines(tmp_path / "prefs.jsonl", support_pairs(16))
    args = ["train", "dpo", "--model", "tiny-random", "--data", str(prefs), "--output-dir",
            str(tmp_path / "o"), "--precision", "fp32", "--batch-size", "4", "--max-steps", "4",
            "--save-every", "2"]
    assert run_cli(*args).code == 0
    changed = run_cli(*[a if a != "4" else "8" for a in args[:-2]], "--save-every", "2",
                      "--resume")
    assert changed.code == 2 and "other data or settings" in changed.stderr
    other_beta = run_cli(*args, "--beta", "0.5", "--resume")  # DPO's own settings count too
    assert other_beta.code == 2 and "other data or settings" in other_beta.stderr
