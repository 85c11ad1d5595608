"""Stage 3 end to end on a tiny model through the real CLI: PPO, RLOO and GRPO raise a rule
reward, a huge KL coefficient pins the policy, and a SIGKILLed run resumes exactly."""

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch

from rlhfkit.models import tiny_model
from tests.conftest import RLHFKIT, run_cli, write_lines

pytestmark = pytest.mark.slow  # PPO runs and rollouts of the tiny policy, seconds each

RULES = '''
TARGET = {target!r}


def count(prompts, responses):
    """The rule: how often the response says TARGET."""
    return [float(r.count(TARGET)) for r in responses]


def broken(prompts, responses):
    return [1.0]


def offset(prompts, responses):
    """The same rule far below zero, as a reward model's arbitrary offset can put it."""
    return [r - 5.0 for r in count(prompts, responses)]
'''


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """A tiny random model with peaked next-token distributions (a plain random init samples
    near-uniformly from 49k tokens, where no rule would ever fire), its prompts, and a rule
    rewarding a token it samples now and then."""
    root = tmp_path_factory.mktemp("ppo")
    model, tok = tiny_model(seed=3)
    with torch.no_grad():
        weights = model.model.embed_tokens.weight
        weights.normal_(0.0, 0.2, generator=torch.Generator().manual_seed(3))
    model.save_pretrained(root / "model")
    tok.save_pretrained(root / "model")
    prompts = [{"prompt": f"Order {i} is late because"} for i in range(16)]
    data = write_lines(root / "prompts.jsonl", prompts)
    # the rewarded token: one that shows up in some, not most, sampled responses
    enc = tok([p["prompt"] for p in prompts], return_tensors="pt", padding=True,
              padding_side="left")
    torch.manual_seed(0)
    out = model.generate(**enc, do_sample=True, max_new_tokens=12, top_k=None,
                         pad_token_id=tok.pad_token_id)[:, enc["input_ids"].shape[1]:]
    counts = torch.bincount(out.flatten(), minlength=len(tok))
    counts[tok.eos_token_id] = 0
    target_id = int(counts.argsort(descending=True)[1])
    target = tok.decode([target_id])
    (root / "rules.py").write_text(RULES.format(target=target))
    return root, data


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


def test_log_probs_are_those_of_the_distribution_sampled_from(setup):
    """At temperature 0.7 the sampler's log-probs and entropies of its own samples are those
    of a plain forward pass over the finished sequences, and of the trainer's scoring."""
    from rlhfkit.decode import entropy
    from rlhfkit.models import load_model
    from rlhfkit.train.ppo import ActorCritic, _call
    from rlhfkit.train.rollout import rollout_batch, sample_rollout, to_padded

    root, _ = setup
    model, tok = load_model(str(root / "model"))
    ids = [tok(f"Order {i} is {'very ' * i}late because")["input_ids"] for i in range(3)]
    rollout = sample_rollout(model, tok, ids, 2, 6, 0.7, 1.0, seed=5, logprobs=True)
    # the reference: one forward over prompt + response, no cache, logits at temperature
    x, mask = rollout.input_ids, rollout.attention_mask
    with torch.no_grad():
        logits = model(input_ids=x, attention_mask=mask,
                       position_ids=(mask.cumsum(1) - 1).clamp(min=0)).logits / 0.7
    p = rollout.prompt_width
    step_logits = logits[:, p - 1 : -1]  # position t predicts response token t
    expected = step_logits.log_softmax(-1).gather(-1, x[:, p:, None]).squeeze(-1)
    expected = expected * rollout.response_mask
    torch.testing.assert_close(rollout.logps, expected, atol=1e-5, rtol=1e-5)
    expected_entropy = entropy(step_logits.float().log_softmax(-1)) * rollout.response_mask
    torch.testing.assert_close(rollout.entropy, expected_entropy, atol=1e-4, rtol=1e-4)
    with torch.no_grad():
        scored, _, _ = _call(ActorCritic(model, 0.7, value_head=False), rollout_batch(rollout))
    torch.testing.assert_close(to_padded(scored, rollout.response_mask), expected,
                               atol=1e-5, rtol=1e-5)
    # asking for log-probs changes nothing about what is sampled
    plain = sample_rollout(model, tok, ids, 2, 6, 0.7, 1.0, seed=5)
    assert torch.equal(plain.input_ids, rollout.input_ids)


def test_reward_model_critic_whitening_and_the_approx_kl_stop(setup, tmp_path):
    root, data = setup
    from tests.train.test_train_cli import support_pairs

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


def test_merged_copy_samples_what_the_adapter_wrapped_policy_would(setup):
    import copy

    from rlhfkit.models import load_model
    from rlhfkit.train.configs import PPOConfig
    from rlhfkit.train.loop import prepare_model
    from rlhfkit.train.rollout import MergedCopy, sample_rollout

    root, _ = setup
    model, tok = load_model(str(root / "model"))
    merged = MergedCopy(copy.deepcopy(model))
    policy = prepare_model(model, PPOConfig(lora=True))
    with torch.no_grad():  # a trained adapter: B is no longer zero
        for name, p in policy.named_parameters():
            if "lora_B" in name:
                p.normal_(0.0, 0.05, generator=torch.Generator().manual_seed(len(name)))
    ids = tok(["Order 1 is late because", "Order 22 is"], return_tensors="pt", padding=True,
              padding_side="left")
    policy.eval()
    with torch.no_grad():
        want = policy(**ids).logits
        got = merged.refresh(policy)(**ids).logits
        with policy.disable_adapter():
            base = policy(**ids).logits
    assert (want - base).abs().max() > 1e-3  # the adapter matters
    torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)
    prompts = [tok("Order 1 is late because")["input_ids"]]
    a = sample_rollout(policy, tok, prompts, 2, 8, 1.0, 1.0, seed=3)
    b = sample_rollout(merged.refresh(policy), tok, prompts, 2, 8, 1.0, 1.0, seed=3)
    assert a.texts == b.texts


def test_k_samples_share_one_prefill_and_sample_what_k_copies_of_the_prompt_would(setup):
    """sample_rollout runs each prompt once and copies its cache k times; the samples are the
    ones drawn when every copy of the prompt is computed on its own."""
    from rlhfkit.models import load_model
    from rlhfkit.train.rollout import sample_rollout

    root, _ = setup
    model, tok = load_model(str(root / "model"))
    ids = [tok(f"Order {i} is {'very ' * i}late because")["input_ids"] for i in range(3)]
    rollout = sample_rollout(model, tok, ids, 4, 8, 0.8, 1.0, seed=11)
    copies = sample_rollout(model, tok, [p for p in ids for _ in range(4)], 1, 8, 0.8, 1.0,
                            seed=11)
    assert torch.equal(rollout.input_ids, copies.input_ids)
    assert rollout.texts == copies.texts
    assert rollout.prompt_index.tolist() == [0] * 4 + [1] * 4 + [2] * 4


def test_the_live_monitors_catch_the_rule_reward_being_gamed(setup, tmp_path):
    """Rewarding the count of one token teaches the policy to repeat it: the repetition
    monitor fires, and with --stop-on-flag the run stops there with the model saved."""
    from rlhfkit.demo.example import init_project

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
