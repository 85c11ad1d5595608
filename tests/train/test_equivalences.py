"""Settings that must not change the numbers: micro-batching, gradient checkpointing, the
reference's source; and the scoring rules of multi-turn SFT."""

import json

import pytest

from rlhfkit.data import Dataset, Format, Kind
from rlhfkit.models import tiny_model
from rlhfkit.train.batches import separate
from rlhfkit.train.configs import SFTConfig
from rlhfkit.train.loop import prepare_model
from rlhfkit.train.scoring import CompletionScorer, sequence_logps
from rlhfkit.train.tokenize import Example, tokenize_dataset
from tests.conftest import messages, run_cli, write_lines
from tests.train.test_train_cli import support_pairs


def curve(out):
    lines = (out / "metrics.jsonl").read_text().splitlines()
    return [json.loads(x)["loss"] for x in lines]


def train(tmp_path, command, name, data, *extra):
    out = tmp_path / name
    result = run_cli("train", command, "--model", "tiny-random", "--data", str(data),
                     "--output-dir", str(out), "--precision", "fp32", "--batch-size", "4",
                     "--max-steps", "4", "--learning-rate", "1e-3", "--save-every", "0", *extra)
    assert result.code == 0, result.stderr
    return curve(out)


def close(a, b, tol=1e-5):
    return len(a) == len(b) and all(abs(x - y) < tol for x, y in zip(a, b, strict=True))


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


@pytest.mark.slow
def test_adapter_off_reference_equals_the_precomputed_one(tmp_path):
    prefs = write_lines(tmp_path / "prefs.jsonl", support_pairs(8))
    cached = train(tmp_path, "dpo", "cached", prefs)
    live = train(tmp_path, "dpo", "live", prefs, "--reference", "adapter-off")
    assert close(cached, live)


def test_multi_turn_sft_scores_assistant_turns_only(tiny):
    _, tok = tiny
    convo = messages(("user", "Hi there"), ("assistant", "Hello! How can I help?"),
                     ("user", "Where is my parcel?"), ("assistant", "It arrives Monday."))
    ds = Dataset(None, Kind(Format.LANGUAGE_MODELING, True), [{"messages": convo}], [1])
    examples, _ = tokenize_dataset(tok, ds, 512, "sft")
    scored = tok.decode(separate(examples, tok.pad_token_id).targets)
    assert "Hello! How can I help?" in scored and "It arrives Monday." in scored
    assert "Where is my parcel" not in scored and "Hi there" not in scored


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


def test_batch_larger_than_the_data_and_eval_of_a_non_reward_model(tmp_path):
    prefs = write_lines(tmp_path / "prefs.jsonl", support_pairs(4))
    result = run_cli("train", "dpo", "--model", "tiny-random", "--data", str(prefs),
                     "--output-dir", str(tmp_path / "o"), "--batch-size", "8")
    assert result.code == 2 and "cannot fill one batch" in result.stderr
    ev = run_cli("eval", "rm", "--model", "tiny-random", "--data", str(prefs))
    assert ev.code == 2 and "not a reward model" in ev.stderr
