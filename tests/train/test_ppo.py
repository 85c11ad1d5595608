"""Stage 3 end to end on a tiny model through the real CLI: PPO, RLOO and GRPO raise a rule
reward, a huge KL coefficient pins the policy, and a SIGKILLed run resumes exactly."""

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.conftest import RLHFKIT, run_cli, write_lines

pytestmark = pytest.mark.slow  # PPO runs and rollouts of the tiny policy, seconds each

def ppo(root, data, out, *extra):
    return ["train", "ppo", "--model", str(root / "model"), "--data", str(data),
            "--output-dir", str(out), "--reward", f"{root / 'rules.py'}:count",
            "--precision", "fp32", "--batch-size", "8", "--max-new-tokens", "12",
            "--learning-rate", "3e-3", "--lr-schedule", "constant", "--warmup-ratio", "0",
            "--temperature", "1.0", "--save-every", "0", *extra]


def metrics(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def mean(rows, key):
    return sum(r[key] for r in rows) / len(rows)


@pytest.fixture(scope="module")
def free_run(setup, tmp_path_factory):
    """16 PPO steps with a small KL coefficient: the run the other settings are measured
    against."""
    root, data = setup
    out = tmp_path_factory.mktemp("ppo") / "free"
    result = run_cli(*ppo(root, data, out, "--max-steps", "16", "--kl-coef", "0.05",
                          "--no-lora"))
    assert result.code == 0, result.stderr
    return out


def test_ppo_raises_a_rule_reward_with_bounded_kl(free_run):
    rows = metrics(free_run)
    early, late = mean(rows[:3], "reward"), mean(rows[-3:], "reward")
    assert late > early + 1.0, (early, late)
    assert max(r["kl"] for r in rows) < 20.0
    for key in ("kl_coef", "entropy", "clip_fraction", "approx_kl", "value_loss",
                "explained_variance", "response_length", "seconds_generate", "seconds_score",
                "seconds_train", "reward_penalised", "reward/count"):
        assert key in rows[-1], key
    final = free_run / "final"
    assert (final / "model.safetensors").exists()
    assert (final / "critic" / "value_head.safetensors").exists()


def test_centred_rewards_learn_whatever_the_rewards_offset(setup, tmp_path):
    root, data = setup
    args = ppo(root, data, tmp_path / "centred", "--max-steps", "16", "--kl-coef", "0.05",
               "--no-lora", "--whiten-rewards", "--center-rewards")
    args[args.index("--reward") + 1] = f"{root / 'rules.py'}:offset"
    result = run_cli(*args)
    assert result.code == 0, result.stderr
    rows = metrics(tmp_path / "centred")
    early, late = mean(rows[:3], "reward"), mean(rows[-3:], "reward")
    assert late > early + 1.0, (early, late)
    assert abs(mean(rows, "score")) < 1e-4  # every step's scores have mean 0


def test_a_huge_kl_coefficient_keeps_the_policy_in_place(setup, free_run, tmp_path):
    """Measured against the same run with kl-coef 0.05, not against fixed numbers: the pinned
    run's largest KL moves with the seed and the CPU's kernels (seed 0: 2.03 nats with AVX2,
    1.70 with AVX-512; seeds 0-7: 1.2 to 2.6). Over seeds 0-7 on both, its mean KL in the last
    8 steps was 0.09-0.21 of the free run's, and its reward gain at most 0.1 of the free run's."""
    root, data = setup
    result = run_cli(*ppo(root, data, tmp_path / "pinned", "--max-steps", "16", "--kl-coef",
                          "1000", "--no-lora"))
    assert result.code == 0, result.stderr
    pinned, free = metrics(tmp_path / "pinned"), metrics(free_run)
    gain = {name: mean(rows[-3:], "reward") - mean(rows[:3], "reward")
            for name, rows in (("pinned", pinned), ("free", free))}
    assert gain["pinned"] < 0.25 * gain["free"], gain
    kl = {"pinned": mean(pinned[8:], "kl"), "free": mean(free[8:], "kl")}
    assert kl["pinned"] < 0.4 * kl["free"], kl


# RLOO with one update per step takes the on-policy path (the sampler's log-probs, no
# separate scoring pass); GRPO with two PPO epochs recomputes them
@pytest.mark.parametrize(("algorithm", "epochs"), [("rloo", "1"), ("grpo", "2")])
def test_critic_free_algorithms_raise_the_reward(setup, tmp_path, algorithm, epochs):
    root, data = setup
    result = run_cli(*ppo(root, data, tmp_path / algorithm, "--algorithm", algorithm, "--k", "4",
                          "--batch-size", "4", "--max-steps", "16", "--kl-coef", "0.05",
                          "--ppo-epochs", epochs, "--no-lora"))
    assert result.code == 0, result.stderr
    rows = metrics(tmp_path / algorithm)
    early, late = mean(rows[:3], "reward"), mean(rows[-3:], "reward")
    assert late > early + 1.0, (early, late)
    assert "value_loss" not in rows[-1]


def test_lora_ppo_uses_the_adapter_off_reference(setup, tmp_path):
    root, data = setup
    result = run_cli(*ppo(root, data, tmp_path / "lora", "--max-steps", "2", "--lora"))
    assert result.code == 0, result.stderr
    first = metrics(tmp_path / "lora")[0]
    assert abs(first["kl"]) < 1e-5  # before the first update, policy == reference


def test_resume_after_sigkill_reproduces_the_run(setup, tmp_path):
    root, data = setup
    args = ppo(root, data, tmp_path / "ref", "--max-steps", "10", "--kl-target", "1.0",
               "--kl-horizon", "100")
    assert run_cli(*args).code == 0
    out = tmp_path / "killed"
    cmd = [a if a != str(tmp_path / "ref") else str(out) for a in args]
    cmd[cmd.index("--save-every") + 1] = "3"
    proc = subprocess.Popen([RLHFKIT, *cmd], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 300
    while not (out / "checkpoint-000006").exists():
        assert proc.poll() is None, "training finished before it could be killed"
        assert time.time() < deadline
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (out / "final").exists()
    resumed = run_cli(*cmd, "--resume")
    assert resumed.code == 0, resumed.stderr
    got, want = metrics(out), metrics(tmp_path / "ref")
    assert [r["step"] for r in got] == list(range(1, 11))
    for a, b in zip(got, want, strict=True):
        for key in ("reward", "kl", "kl_coef", "policy_loss", "value_loss"):
            assert abs(a[key] - b[key]) < 1e-5, (a["step"], key)


def test_bad_reward_specs_are_clear_errors(setup, tmp_path):
    root, data = setup
    missing = run_cli(*ppo(root, data, tmp_path / "a", "--max-steps", "1")[:-2], "--reward",
                      "nowhere.py:count", "--save-every", "0")
    assert missing.code == 2 and "nowhere.py does not exist" in missing.stderr
    args = ppo(root, data, tmp_path / "b", "--max-steps", "1")
    args[args.index("--reward") + 1] = f"{root / 'rules.py'}:broken"
    broken = run_cli(*args)
    assert broken.code == 2 and "returned 1 values for 8 responses" in broken.stderr
    assert "Traceback" not in broken.stderr
    args[args.index("--reward") + 1] = str(tmp_path)
    not_rm = run_cli(*args)
    assert not_rm.code == 2 and "not a Hugging Face model folder" in not_rm.stderr


def test_reward_model_critic_whitening_and_the_approx_kl_stop(setup, tmp_path):
    root, data = setup
    from tests.train.conftest import support_pairs

    prefs = write_lines(tmp_path / "prefs.jsonl", support_pairs(8))
    rm = run_cli("train", "rm", "--model", str(root / "model"), "--data", str(prefs),
                 "--output-dir", str(tmp_path / "rm"), "--max-steps", "2", "--batch-size", "4",
                 "--precision", "fp32")
    assert rm.code == 0, rm.stderr
    args = ppo(root, data, tmp_path / "ppo", "--max-steps", "2", "--critic", "reward-model",
               "--whiten-rewards", "--max-approx-kl", "1e-9", "--ppo-epochs", "4",
               "--minibatches", "2")
    args[args.index("--reward") + 1] = str(tmp_path / "rm" / "final")
    result = run_cli(*args, "--reward", f"{root / 'rules.py'}:count@0.5")
    assert result.code == 0, result.stderr
    rows = metrics(tmp_path / "ppo")
    # the first update starts at ratio 1 (approx-KL 0); the second sees the moved policy and
    # stops the step: 2 of the 8 configured updates
    assert all(r["updates"] == 2 for r in rows)
    assert {"reward/final", "reward/count", "value_loss"} <= rows[-1].keys()
    critic = tmp_path / "ppo" / "final" / "critic"
    assert (critic / "config.json").exists() and (critic / "model.safetensors").exists()


def test_minibatches_must_divide_the_rollouts(setup, tmp_path):
    root, data = setup
    result = run_cli(*ppo(root, data, tmp_path / "x", "--max-steps", "1", "--minibatches", "3"))
    assert result.code == 2 and "must split evenly" in result.stderr


def test_the_live_monitors_catch_the_rule_reward_being_gamed(setup, tmp_path):
    """Rewarding the count of one token teaches the policy to repeat it: the repetition
    monitor fires, and with --stop-on-flag the run stops there with the model saved."""
    from rlhfkit.templates import init_project

    root, data = setup
    project = init_project(tmp_path / "project").root
    with open(project / "rlhfkit.toml", "a") as spec:
        # 'reward up, no criterion moved' fires on this run too, often first: out of the way
        spec.write("\n[monitors]\nrepetition = 0.1\nwindow = 2\nreward_rise = 1000\n")
    out = tmp_path / "watched"
    result = run_cli(*ppo(root, data, out, "--max-steps", "32", "--kl-coef", "0.05",
                          "--no-lora", "--project", str(project), "--stop-on-flag"))
    assert result.code == 0, result.stderr
    assert "stopped early: reward-hacking monitor: repetition" in result.stdout
    rows = metrics(out)
    assert len(rows) < 32 and rows[-1]["monitor_flags"] >= 1
    assert all("criteria/signs_off" in r for r in rows)
    flags = [json.loads(x) for x in (out / "monitors.jsonl").read_text().splitlines()]
    assert flags[-1]["step"] == len(rows)
    assert "repetition" in [f["name"] for f in flags[-1]["flags"]]
    assert (out / "final" / "model.safetensors").exists()
