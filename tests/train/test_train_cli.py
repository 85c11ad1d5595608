"""`rlhfkit train sft|rm|dpo` and `rlhfkit eval rm` end to end on the tiny model."""

import json
import math

import pytest
import torch

from rlhfkit.models import load_model
from rlhfkit.train.batches import shared_prompt
from rlhfkit.train.scoring import CompletionScorer, sequence_logps
from tests.conftest import messages, run_cli, write_lines


def support_pairs(n, offset=0):
    rows = []
    for i in range(offset, offset + n):
        email = f"Hello, order #{4000 + 7 * i} for a lamp is late. Ticket {i}."
        rows.append({
            "prompt": messages(("user", email)),
            "chosen": messages(("assistant", "Sorry for the wait. It ships today.\n\nBest "
                                             "regards,\nThe Support Team")),
            "rejected": messages(("assistant", "I think maybe it might come, perhaps, I am not "
                                               "sure.")),
            "rubric_version": "1",
        })
    return rows


def common(out, data, *extra):
    return ["--model", "tiny-random", "--data", str(data), "--output-dir", str(out),
            "--precision", "fp32", *extra]


@pytest.mark.slow
def test_sft_then_rm_then_eval(tmp_path):
    sft_rows = [{"prompt": r["prompt"], "completion": r["chosen"]} for r in support_pairs(16)]
    sft_data = write_lines(tmp_path / "sft.jsonl", sft_rows)
    result = run_cli("train", "sft", *common(tmp_path / "sft", sft_data, "--max-steps", "4"))
    assert result.code == 0, result.stderr
    final = tmp_path / "sft" / "final"
    assert (final / "model.safetensors").exists() and (final / "tokenizer.json").exists()
    manifest = json.loads((final / "rlhfkit-manifest.json").read_text())
    assert manifest["kind"] == "sft" and manifest["inputs"]["data"]["sha256"]
    metrics = [json.loads(x) for x in (tmp_path / "sft" / "metrics.jsonl").read_text().splitlines()]
    assert metrics[-1]["loss"] < metrics[0]["loss"]

    prefs = write_lines(tmp_path / "prefs.jsonl", support_pairs(32))
    held_out = write_lines(tmp_path / "held.jsonl", support_pairs(16, offset=100))
    rm = run_cli("train", "rm", *common(tmp_path / "rm", prefs, "--epochs", "2",
                                        "--learning-rate", "1e-3"))
    assert rm.code == 0, rm.stderr
    manifest = json.loads((tmp_path / "rm" / "final" / "rlhfkit-manifest.json").read_text())
    assert manifest["rubric_version"] == "1"
    ev = run_cli("eval", "rm", "--model", str(tmp_path / "rm" / "final"), "--data",
                 str(held_out), "--json")
    assert ev.code == 0, ev.stderr
    figures = json.loads(ev.stdout)
    assert figures["pairs"] == 16 and figures["accuracy"] == 1.0


def k_wise_pairs(n_prompts: int) -> list[dict]:
    """Three replies to each email, every pair of them compared (the best wins)."""
    best, middle, worst = (messages(("assistant", text)) for text in (
        "Sorry for the wait. It ships today.\n\nBest regards,\nThe Support Team",
        "It ships today.",
        "I think maybe it might come, perhaps, I am not sure.",
    ))
    rows = []
    for row in support_pairs(n_prompts):
        for chosen, rejected in ((best, middle), (best, worst), (middle, worst)):
            rows.append(row | {"chosen": chosen, "rejected": rejected})
    return rows


@pytest.mark.slow
def test_rm_trains_each_prompt_with_all_its_comparisons(tmp_path):
    prefs = write_lines(tmp_path / "prefs.jsonl", k_wise_pairs(8))  # 24 pairs, 8 prompts
    grouped = run_cli("train", "rm", *common(tmp_path / "grouped", prefs, "--batch-size", "4",
                                             "--epochs", "1"))
    assert grouped.code == 0, grouped.stderr
    metrics = (tmp_path / "grouped" / "metrics.jsonl").read_text().splitlines()
    rows = [json.loads(x) for x in metrics]
    assert len(rows) == 2  # 8 prompts, 4 per step
    assert all(0.0 <= r["accuracy"] <= 1.0 for r in rows)  # a mean over each step's 12 pairs
    manifest = json.loads((tmp_path / "grouped" / "final" / "rlhfkit-manifest.json").read_text())
    assert manifest["examples"] == 24 and manifest["prompts"] == 8
    pairs = run_cli("train", "rm", *common(tmp_path / "pairs", prefs, "--batch-size", "4",
                                           "--epochs", "1", "--no-group-by-prompt"))
    assert pairs.code == 0, pairs.stderr
    assert len((tmp_path / "pairs" / "metrics.jsonl").read_text().splitlines()) == 6  # 24 / 4


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
