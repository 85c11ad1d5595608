"""`rlhfkit train dpo` end to end on the tiny model, and its reference's source."""

import json
import math

import pytest
import torch

from rlhfkit.models import load_model
from rlhfkit.train.batches import shared_prompt
from rlhfkit.train.scoring import CompletionScorer, sequence_logps
from tests.conftest import run_cli, write_lines
from tests.train.conftest import close, common, support_pairs, train


def margin(model_dir, rows) -> float:
    """Mean log-prob margin of chosen over rejected on rows (the behavior DPO should move)."""
    from rlhfkit.data import Dataset, Format, Kind
    from rlhfkit.train.tokenize import tokenize_dataset

    model, tok = load_model(str(model_dir))
    ds = Dataset(None, Kind(Format.PREFERENCE, True), rows, list(range(len(rows))))
    examples, _ = tokenize_dataset(tok, ds, 512, "preference")
    inputs = shared_prompt(examples, tok.pad_token_id)
    with torch.no_grad():
        chosen, rejected = sequence_logps(CompletionScorer(model.eval()), inputs).chunk(2)
    return float((chosen - rejected).mean())


@pytest.mark.slow
def test_dpo_moves_the_preferred_behavior_on_held_out_prompts(tmp_path):
    prefs = write_lines(tmp_path / "prefs.jsonl", support_pairs(32))
    held_out = support_pairs(8, offset=500)
    result = run_cli("train", "dpo", *common(tmp_path / "dpo", prefs, "--epochs", "2",
                                             "--learning-rate", "2e-3", "--beta", "0.1"))
    assert result.code == 0, result.stderr
    before = margin("tiny-random", held_out)
    after = margin(tmp_path / "dpo" / "final", held_out)
    assert after > before + 5.0, (before, after)

    # The behavior shows in what the model would write next: at the start of a reply to a
    # new email, the chosen answers' first word now beats the rejected answers' first word.
    assert first_word_preference(tmp_path / "dpo" / "final", held_out) > 0 > (
        first_word_preference("tiny-random", held_out))


def first_word_preference(model_dir, rows) -> float:
    """log p("Sorry") - log p("I") as the first token of the reply, averaged over prompts."""
    model, tok = load_model(str(model_dir))
    good, bad = tok("Sorry")["input_ids"][0], tok("I")["input_ids"][0]
    gaps = []
    for row in rows:
        text = tok.apply_chat_template(row["prompt"], tokenize=False, add_generation_prompt=True)
        ids = tok(text, return_tensors="pt")["input_ids"]
        with torch.no_grad():
            logp = model(ids).logits[0, -1].log_softmax(-1)
        gaps.append(float(logp[good] - logp[bad]))
    return sum(gaps) / len(gaps)


@pytest.mark.slow
@pytest.mark.parametrize("loss_type", ["ipo", "hinge", "robust"])
def test_dpo_variants_run(tmp_path, loss_type):
    prefs = write_lines(tmp_path / "prefs.jsonl", support_pairs(8))
    extra = ["--label-smoothing", "0.1"] if loss_type == "robust" else []
    result = run_cli("train", "dpo", *common(tmp_path / "o", prefs, "--max-steps", "2",
                                             "--loss-type", loss_type, *extra))
    assert result.code == 0, result.stderr
    # Step 1's loss is taken before any update, where the policy is its reference: h = 0, so
    # with beta 0.1 IPO gives (0 - 1/(2 beta))^2, hinge max(0, 1 - 0), and robust (eps 0.1)
    # ((1 - eps) - eps) log 2 / (1 - 2 eps) = log 2.
    at_start = {"ipo": 25.0, "hinge": 1.0, "robust": math.log(2)}[loss_type]
    rows = [json.loads(x) for x in (tmp_path / "o" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2]
    assert rows[0]["loss"] == pytest.approx(at_start, abs=1e-4)


@pytest.mark.slow
def test_dpo_with_the_adapter_off_reference_and_no_merge(tmp_path):
    prefs = write_lines(tmp_path / "prefs.jsonl", support_pairs(8))
    result = run_cli("train", "dpo", *common(tmp_path / "o", prefs, "--max-steps", "2",
                                             "--reference", "adapter-off", "--no-merge-lora"))
    assert result.code == 0, result.stderr
    assert (tmp_path / "o" / "final" / "adapter_config.json").exists()
    # LoRA starts as a no-op, so the adapter-off reference is the policy at step 1: loss log 2
    first = json.loads((tmp_path / "o" / "metrics.jsonl").read_text().splitlines()[0])
    assert first["loss"] == pytest.approx(math.log(2), abs=1e-4)


@pytest.mark.slow
def test_adapter_off_reference_equals_the_precomputed_one(tmp_path):
    prefs = write_lines(tmp_path / "prefs.jsonl", support_pairs(8))
    cached = train(tmp_path, "dpo", "cached", prefs)
    live = train(tmp_path, "dpo", "live", prefs, "--reference", "adapter-off")
    assert close(cached, live)
