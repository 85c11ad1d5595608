"""`rlhfkit eval rm` extended, on a tiny random reward model, against rewards computed by a
plain transformers forward pass per completion (the reference). The CLI runs in-process
(typer's runner) except for the bad-input case, which goes through the real entry point."""

import json

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from rlhfkit.cli import app
from rlhfkit.errors import UserError
from rlhfkit.evaluate.rm import calibration, evaluate_reward_model
from rlhfkit.stats import pearson, spearman
from tests.conftest import messages, run_cli, write_lines


def rows():
    out = []
    replies = [
        "It ships today.",
        "I have refunded you in full, it takes 3 days.",
        "Maybe.",
        "Sorry to hear that, I think it might come, perhaps next week.",
    ]
    for i in range(12):
        row = {
            "prompt": messages(("user", f"Where is order #{1000 + i}?")),
            "chosen": messages(("assistant", replies[i % 4])),
            "rejected": messages(("assistant", replies[(i + 1) % 4] + " x" * (i % 3))),
            "topic": "refund" if i % 2 else "late",
        }
        if i < 8:  # votes: majority chosen, majority rejected, or split (no majority)
            row["votes"] = {"a1": "chosen", "a2": "chosen" if i % 4 else "rejected",
                            "a3": "rejected" if i % 3 == 0 else "chosen"}  # fmt: skip
        out.append(row)
    out[7]["votes"] = {"a1": "chosen", "a2": "rejected", "a3": "tie"}
    return out


def reference_rewards(model, tok, data):
    def score(prompt, completion):
        ids = tok.apply_chat_template(prompt + completion, tokenize=True, return_dict=True)
        with torch.no_grad():
            return float(model(torch.tensor([ids["input_ids"]])).logits[0, 0])

    return np.array([[score(r["prompt"], r["chosen"]), score(r["prompt"], r["rejected"])]
                     for r in data])  # fmt: skip


@pytest.mark.slow
def test_eval_rm_figures_match_a_plain_forward_pass(reward_model, tmp_path):
    folder, model, tok = reward_model
    data = rows()
    path = write_lines(tmp_path / "held.jsonl", data)
    out = tmp_path / "rm_eval.json"
    args = ["--model", str(folder), "--data", str(path), "--slice", "topic", "--out", str(out)]
    result = CliRunner().invoke(app, ["eval", "rm", *args, "--bins", "5"])
    assert result.exit_code == 0, result.output
    assert "by topic: late" in result.output and "order invariance" in result.output
    f = json.loads(out.read_text())
    ref = reference_rewards(model, tok, data)
    diff = ref[:, 0] - ref[:, 1]
    assert f["schema"] == "rlhfkit.eval_rm/1" and f["pairs"] == 12
    assert f["mean_reward_chosen"] == pytest.approx(ref[:, 0].mean(), abs=1e-4)
    assert f["accuracy"] == pytest.approx(np.mean(diff > 0))
    lo, hi = f["accuracy_ci"]
    assert lo <= f["accuracy"] <= hi
    for topic in ("late", "refund"):
        idx = [i for i, r in enumerate(data) if r["topic"] == topic]
        assert f["slices"]["topic"][topic]["accuracy"] == pytest.approx(np.mean(diff[idx] > 0))
        assert f["slices"]["topic"][topic]["pairs"] == 6

    # human majority by hand: rows 0-6 have a majority (row 7's votes split 1-1)
    hm = f["human_majority"]
    assert hm["rows_with_votes"] == 8 and hm["rows_with_majority"] == 7
    agree = []
    for i, r in enumerate(data[:7]):
        c = sum(v == "chosen" for v in r["votes"].values())
        majority_chosen = c > len(r["votes"]) - c
        agree.append(diff[i] > 0 if majority_chosen else diff[i] < 0)
    assert hm["rm_agreement"]["accuracy"] == pytest.approx(np.mean(agree))

    cal = calibration(diff, bins=5)
    assert f["calibration"]["ece"] == pytest.approx(cal.ece, abs=1e-4)
    assert sum(b["count"] for b in f["calibration"]["bins"]) == 12
    words = [len(r[k][0]["content"].split()) for k in ("chosen", "rejected") for r in data]
    rewards = np.concatenate([ref[:, 0], ref[:, 1]])
    assert f["length"]["pearson"] == pytest.approx(pearson(words, rewards), abs=1e-3)
    assert f["length"]["spearman"] == pytest.approx(spearman(words, rewards), abs=1e-3)
    assert f["order_invariance"]["max_abs_diff"] < 1e-4 and f["order_invariance"]["flipped"] == 0


@pytest.mark.slow
def test_pairs_that_share_a_prompt_get_the_rewards_of_a_plain_forward_pass(reward_model, tmp_path):
    """Every pair of four replies to each of three emails, in shuffled row order: the replies
    are scored once per prompt, and each row still gets its own two rewards."""
    import itertools
    import random

    folder, model, tok = reward_model
    replies = ["It ships today.", "Refunded in full.", "Maybe.", "Sorry, I think next week."]
    data = [
        {"prompt": messages(("user", f"Where is order #{2000 + i}?")),
         "chosen": messages(("assistant", replies[a])),
         "rejected": messages(("assistant", replies[b]))}
        for i in range(3) for a, b in itertools.permutations(range(4), 2) if (a + b + i) % 2
    ]  # fmt: skip
    random.Random(0).shuffle(data)
    found = evaluate_reward_model(str(folder), write_lines(tmp_path / "k.jsonl", data))
    ref = reference_rewards(model, tok, data)
    assert found.pairs == len(data)
    assert found.mean_reward_chosen == pytest.approx(ref[:, 0].mean(), abs=1e-4)
    assert found.mean_reward_rejected == pytest.approx(ref[:, 1].mean(), abs=1e-4)
    assert found.accuracy == pytest.approx(np.mean(ref[:, 0] > ref[:, 1]))
    assert found.order_invariance.max_abs_diff < 1e-4


def test_calibration_by_hand():
    # margins log(3) and -log(3): p = 0.75 and 0.25, confidence 0.75, one right one wrong
    cal = calibration(np.array([np.log(3), -np.log(3), 0.0]), bins=2)
    first = cal.bins[0]  # [0.5, 0.75): only the tie (confidence 0.5, counted half right)
    assert first.count == 1 and first.accuracy == 0.5 and first.confidence == 0.5
    second = cal.bins[1]
    assert second.count == 2 and second.accuracy == 0.5
    assert second.confidence == pytest.approx(0.75)
    assert cal.ece == pytest.approx(2 / 3 * 0.25)


def test_eval_rm_bad_input(reward_model, tmp_path):
    folder, _, _ = reward_model
    path = write_lines(tmp_path / "held.jsonl", rows())
    missing = run_cli("eval", "rm", "--model", str(folder), "--data", str(path), "--slice", "x")
    assert missing.code == 2 and "--slice x: no row" in missing.stderr
    assert "Traceback" not in missing.stderr
    with pytest.raises(UserError, match="not a reward model"):
        evaluate_reward_model("tiny-random", path)
