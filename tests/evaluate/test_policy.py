"""`rlhfkit eval policy` on the tiny random model: identical models change nothing (KL 0),
a LoRA-adapter policy through the real CLI with a judge, a reward model and a criteria edit
after freezing; and the training hook that freezes the criteria."""

import json
import os
import time
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from rlhfkit import strict_json
from rlhfkit.errors import UserError
from rlhfkit.evaluate import schema
from rlhfkit.evaluate.criteria import freeze_criteria
from rlhfkit.evaluate.policy import PolicyEvalConfig, evaluate_policy
from rlhfkit.project import load_project
from rlhfkit.templates import init_project
from tests.conftest import run_cli, write_lines


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    root = tmp_path_factory.mktemp("proj") / "p"
    init_project(root)
    return root


@pytest.fixture(scope="module")
def adapter(tmp_path_factory):
    """tiny-random plus a random LoRA adapter, saved adapter-only as `train --no-merge-lora`
    saves it: a policy that differs from tiny-random."""
    from peft import LoraConfig, get_peft_model

    from rlhfkit.lineage import write_manifest
    from rlhfkit.models import load_model

    model, tok = load_model("tiny-random")
    model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules="all-linear"))
    torch.manual_seed(5)
    for name, p in model.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(p, std=0.3)
    folder = tmp_path_factory.mktemp("dpo") / "final"
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    write_manifest(folder, kind="dpo", inputs={}, config={}, base_model="tiny-random")
    return folder


@pytest.mark.slow
def test_identical_models_change_nothing(project, reward_model, tmp_path):
    cfg = PolicyEvalConfig(project=project, before="tiny-random", after="tiny-random",
                           out=tmp_path / "eval", limit=3, max_new_tokens=6,
                           reward_model=str(reward_model[0]),
                           sample_cache=tmp_path / "cache")  # fmt: skip
    r = evaluate_policy(cfg)
    # the before model's samples and their rewards
    cached = sorted(f.name.split("-")[0] for f in (tmp_path / "cache").iterdir())
    assert cached == ["rewards", "samples"]
    again = evaluate_policy(replace(cfg, out=tmp_path / "again"))  # reads them back
    assert again.criteria == r.criteria and again.kl == r.kl
    assert again.reward == r.reward
    assert len(list((tmp_path / "cache").iterdir())) == 2
    for weights in Path(reward_model[0]).glob("*.safetensors"):  # a retrained reward model
        os.utime(weights, ns=(time.time_ns(), time.time_ns() + 10**9))
    evaluate_policy(replace(cfg, out=tmp_path / "third"))
    assert len(list((tmp_path / "cache").glob("rewards-*.json"))) == 2  # scored again
    assert r.kl.value == pytest.approx(0.0, abs=1e-5) and r.kl.exact
    assert {c.verdict for c in r.criteria} == {"no significant change"}
    assert all(c.p_value == 1.0 and c.diff == 0 for c in r.criteria)
    (rm,) = r.win_rates
    assert rm.judge == "reward_model" and rm.win_rate == 0.5 and rm.ties == 6
    assert r.reward.diff == pytest.approx(0.0, abs=1e-6) and r.flagged == []
    rows = [json.loads(x) for x in (tmp_path / "eval" / "samples.jsonl").read_text().splitlines()]
    assert len(rows) == 6 and all(x["before"] == x["after"] for x in rows)
    assert r.settings.n_prompts == 3 and r.settings.samples_per_prompt == 2
    # what was written is what was returned, and reads back as the same record
    on_disk = json.loads((tmp_path / "eval" / "eval.json").read_text())
    assert on_disk == strict_json.nulled(r.to_json())
    assert schema.PolicyEvalResult.parse(on_disk, "eval.json").to_json() == on_disk


@pytest.mark.slow
def test_eval_policy_cli_on_a_lora_policy_after_a_criteria_edit(
    project, adapter, reward_model, tmp_path
):
    proj = load_project(project)
    freeze_criteria(proj, "sft")
    spec = project / "rlhfkit.toml"
    original = spec.read_text()
    spec.write_text(original.replace("max = 60", "max = 70"))
    out = tmp_path / "eval"
    try:
        result = run_cli("eval", "policy", "--project", str(project), "--before", "tiny-random",
                         "--after", str(adapter), "--out", str(out), "--limit", "3",
                         "--max-new-tokens", "6", "--judge", "panel", "--reward-model",
                         str(reward_model[0]))  # fmt: skip
    finally:
        spec.write_text(original)
        proj.artifacts("criteria.lock.json").unlink()
    assert result.code == 0, result.stderr
    assert "WARNING" in result.stderr and "CHANGED after training started" in result.stderr
    assert "KL(after || before)" in result.stdout
    assert "win rate of after over before by panel" in result.stdout
    r = json.loads((out / "eval.json").read_text())
    assert r["schema"] == "rlhfkit.eval_policy/1" and r["samples_file"] == "samples.jsonl"
    assert r["freeze"]["changed"] and r["freeze"]["changes"] == ["concise: detector edited"]
    assert r["kl"]["n"] == 6  # six samples: the estimate's sign is still up to chance
    assert [w["judge"] for w in r["win_rates"]] == ["reward_model", "panel (simulated)"]
    for c in r["criteria"]:
        assert set(c) >= {"name", "direction", "before", "after", "diff", "p_value", "test",
                          "verdict"}  # fmt: skip
        assert c["before"]["ci"][0] <= c["before"]["rate"] <= c["before"]["ci"][1]
    names = {m["name"] for m in r["monitors"]}
    assert names >= {"length_inflation", "length_collapse", "prompt_echo", "hedging",
                     "sycophancy", "refusal", "repetition", "reward_without_criteria",
                     "kl_runaway"}  # fmt: skip
    rows = [json.loads(x) for x in (out / "samples.jsonl").read_text().splitlines()]
    assert len(rows) == 6 and any(x["before"] != x["after"] for x in rows)
    assert r["kl"]["value"] == pytest.approx(sum(x["kl"] for x in rows) / 6)
    assert set(rows[0]["judges"]) == {"reward_model", "panel (simulated)"}
    assert json.loads((out / "eval.json.manifest.json").read_text())["kind"] == "policy_eval"


def test_bad_settings_fail_before_any_model_loads(project, tmp_path):
    base = {"project": project, "before": "tiny-random", "after": "tiny-random",
            "out": tmp_path / "o"}  # fmt: skip
    with pytest.raises(UserError, match="give rm:DIR"):
        evaluate_policy(PolicyEvalConfig(**base, judges=("gpt4",)))
    with pytest.raises(UserError, match="--test is one of"):
        evaluate_policy(PolicyEvalConfig(**base, test="t-test"))
    with pytest.raises(UserError, match="no project spec"):
        evaluate_policy(PolicyEvalConfig(**{**base, "project": tmp_path}))
    assert not (tmp_path / "o").exists()


@pytest.mark.slow
def test_the_first_training_stage_freezes_the_criteria(project, tmp_path):
    """`rlhfkit train` freezes the criteria before it trains (the training loop does not), and
    the final model's manifest records the frozen hash."""
    from rlhfkit.data import load

    rows = load(project / "data" / "sft.jsonl").rows[:2]
    data = write_lines(tmp_path / "sft.jsonl", rows)
    lock = project / "artifacts" / "criteria.lock.json"
    try:
        result = run_cli("train", "sft", "--model", "tiny-random", "--data", str(data),
                         "--output-dir", str(tmp_path / "sft"), "--max-steps", "1",
                         "--batch-size", "2", "--precision", "fp32",
                         "--project", str(project))  # fmt: skip
        frozen = json.loads(lock.read_text())
    finally:
        lock.unlink(missing_ok=True)
    assert result.code == 0, result.stderr
    assert frozen["frozen_by"] == "sft"
    assert frozen["criteria_hash"] == load_project(project).spec.criteria_hash()
    manifest = json.loads((tmp_path / "sft" / "final" / "rlhfkit-manifest.json").read_text())
    assert manifest["criteria_hash"] == frozen["criteria_hash"]
