"""The training loop: settings that must not change the numbers (micro-batching, gradient
checkpointing), refused input, and the precision it runs in (`--precision auto` and
RLHFKIT_FP32_ONLY: with the variable at 1, auto resolves as on a host without native bf16 (an
AVX2-only CPU picks fp32), so that host's runs can be reproduced on one that would pick bf16;
an explicit --precision is still honoured)."""

import json

import pytest
import torch

from rlhfkit.errors import UserError
from rlhfkit.models import tiny_model
from rlhfkit.train import loop
from rlhfkit.train.batches import separate
from rlhfkit.train.configs import SFTConfig
from rlhfkit.train.loop import FP32_ONLY, prepare_model, resolve_precision
from rlhfkit.train.scoring import CompletionScorer, sequence_logps
from rlhfkit.train.tokenize import Example
from tests.conftest import messages, run_cli, write_lines
from tests.train.conftest import close, common, support_pairs, train


@pytest.mark.slow
def test_grad_accum_changes_nothing_for_sft_rm_and_dpo(tmp_path):
    prefs = write_lines(tmp_path / "prefs.jsonl", support_pairs(16))
    sft = write_lines(tmp_path / "sft.jsonl", [
        {"prompt": r["prompt"], "completion": messages(("assistant", "ok " * (1 + i % 5)))}
        for i, r in enumerate(support_pairs(16))])  # uneven lengths: token-weighted mean
    for command, data in (("sft", sft), ("rm", prefs), ("dpo", prefs)):
        one = train(tmp_path, command, f"{command}-1", data)
        two = train(tmp_path, command, f"{command}-2", data, "--grad-accum", "2")
        assert close(one, two), (command, one, two)


@pytest.mark.slow
def test_gradient_checkpointing_changes_nothing_but_is_active(tmp_path):
    sft = write_lines(tmp_path / "sft.jsonl", [
        {"prompt": r["prompt"], "completion": r["chosen"]} for r in support_pairs(8)])
    plain = train(tmp_path, "sft", "plain", sft, "--no-lora")
    checkpointed = train(tmp_path, "sft", "gc", sft, "--no-lora", "--gradient-checkpointing")
    assert close(plain, checkpointed)

    model, tok = tiny_model()
    cfg = SFTConfig(gradient_checkpointing=True, lora=True)
    scorer = CompletionScorer(prepare_model(model, cfg))
    layer = model.model.layers[0]
    calls = []
    checkpoint = layer._gradient_checkpointing_func
    layer._gradient_checkpointing_func = lambda *a, **k: calls.append(1) or checkpoint(*a, **k)
    ids = tok("Best regards, the team")["input_ids"]
    inputs = separate([Example(ids[:1], (ids[1:],))], tok.pad_token_id)
    for mode, expected in ((scorer.eval, 0), (scorer.train, 1)):
        calls.clear()
        mode()
        sequence_logps(scorer, inputs).sum().backward()
        assert len(calls) == expected  # checkpointing acts in training mode only


def test_batch_larger_than_the_data_and_eval_of_a_non_reward_model(tmp_path):
    prefs = write_lines(tmp_path / "prefs.jsonl", support_pairs(4))
    result = run_cli("train", "dpo", "--model", "tiny-random", "--data", str(prefs),
                     "--output-dir", str(tmp_path / "o"), "--batch-size", "8")
    assert result.code == 2 and "cannot fill one batch" in result.stderr
    ev = run_cli("eval", "rm", "--model", "tiny-random", "--data", str(prefs))
    assert ev.code == 2 and "not a reward model" in ev.stderr


def test_bad_training_input_is_exit_2_and_writes_nothing(tmp_path):
    prefs = write_lines(tmp_path / "prefs.jsonl", support_pairs(4))
    sft = write_lines(tmp_path / "sft.jsonl", [{"prompt": "Q", "completion": "A"}])
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    long_prompt = write_lines(tmp_path / "long.jsonl", [
        {"prompt": "word " * 300, "chosen": " yes", "rejected": " no"}])
    cases = {
        "expected preference": ("dpo", common(tmp_path / "a", sft)),
        "the dataset is empty": ("rm", common(tmp_path / "b", empty)),
        "no room for a completion": ("dpo", common(tmp_path / "c", long_prompt,
                                                   "--max-length", "64")),
        "never downloads": ("sft", ["--model", str(tmp_path / "nope"), "--data", str(sft),
                                    "--output-dir", str(tmp_path / "d")]),
        "multiple of --grad-accum": ("dpo", common(tmp_path / "e", prefs, "--grad-accum", "3")),
        "--loss-type is one of": ("dpo", common(tmp_path / "f", prefs, "--loss-type", "kto")),
    }
    for expected, (command, args) in cases.items():
        result = run_cli("train", command, *args)
        assert result.code == 2, (expected, result.stderr)
        assert expected in result.stderr, (expected, result.stderr)
        assert "Traceback" not in result.stderr
    assert "long.jsonl:1: prompt is" in run_cli("train", "dpo", *cases[
        "no room for a completion"][1]).stderr
    for name in "abcdef":
        assert not (tmp_path / name / "final").exists()


@pytest.fixture
def bf16_host(monkeypatch):
    """A CPU host where bf16 won the race, whatever this machine has."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(loop, "_BF16_FASTER", True)
    monkeypatch.delenv(FP32_ONLY, raising=False)


def test_fp32_only_makes_auto_fp32_and_passes_explicit_choices_through(bf16_host, monkeypatch):
    assert resolve_precision("auto") == "bf16"
    monkeypatch.setenv(FP32_ONLY, "1")
    assert resolve_precision("auto") == "fp32"
    assert resolve_precision("bf16") == "bf16"
    assert resolve_precision("fp32") == "fp32"
    monkeypatch.setenv(FP32_ONLY, "0")
    assert resolve_precision("auto") == "bf16"
    monkeypatch.setenv(FP32_ONLY, "yes")
    with pytest.raises(UserError, match="RLHFKIT_FP32_ONLY is 1"):
        resolve_precision("auto")


@pytest.mark.slow
@pytest.mark.parametrize(("precision", "expected"), [("auto", "fp32"), ("bf16", "bf16")])
def test_a_training_command_records_the_precision_it_ran_in(
    bf16_host, monkeypatch, tmp_path, precision, expected
):
    monkeypatch.setenv(FP32_ONLY, "1")
    rows = [{"prompt": "Where is my order?", "completion": "It ships today."}] * 4
    data = write_lines(tmp_path / "sft.jsonl", rows)
    result = run_cli("train", "sft", "--model", "tiny-random", "--data", str(data),
                     "--output-dir", str(tmp_path / "sft"), "--max-steps", "1",
                     "--batch-size", "2", "--precision", precision)
    assert result.code == 0, result.stderr
    manifest = json.loads((tmp_path / "sft" / "final" / "rlhfkit-manifest.json").read_text())
    assert manifest["config"]["precision"] == expected
