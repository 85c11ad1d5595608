"""`rlhfkit train rm` on the tiny model."""

import json

import pytest

from tests.conftest import messages, run_cli, write_lines
from tests.train.conftest import common, support_pairs


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
