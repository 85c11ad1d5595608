"""The candidates' checks on planted failures and healthy pairs: the trained model never
shows a behavior to increase (on the prompts the criterion applies to), and near-identical
pairs."""

from __future__ import annotations

import json

import pytest

from rlhfkit.criteria import SuccessCriterion
from rlhfkit.doctor.candidates import check_candidates, similarity
from rlhfkit.errors import UserError
from rlhfkit.lineage import manifest_path
from tests.doctor.plant import ANSWER, DECLINE, DECLINES, candidates, verdicts


def _prompts(off_topic_sft_declines: int, on_topic: int = 5) -> list:
    """10 off-topic prompts (the SFT model declines the first `off_topic_sft_declines` of
    its 20 replies; the starting model declines 5 of 10), and on-topic prompts where the SFT
    model declines every time (outside the criterion's subset: they must not count)."""
    out, k = [], 0
    for p in range(10):
        sft = []
        for _ in range(2):
            sft.append(f"{DECLINE if k < off_topic_sft_declines else ANSWER} ({k}).")
            k += 1
        out.append(("off_topic", [*sft, f"{DECLINE} ({p})." if p < 5 else f"Sure! {p} tips."]))
    out += [
        ("on_topic", [f"{DECLINE} {p}a.", f"{DECLINE} {p}b.", f"An answer {p}."])
        for p in range(on_topic)
    ]
    return out


def test_an_increase_criterion_the_sft_model_never_shows_fails(tmp_path):
    path = candidates(tmp_path / "candidates.jsonl", _prompts(0))
    check = check_candidates(path, [DECLINES])[0]
    assert check.name == "sft_never_shows:declines" and check.verdict == "fail"
    # measured on the off-topic prompts only, each reply once (every reply is in two pairs)
    assert check.numbers["trained"] == [0, 20] and check.numbers["start"] == [5, 10]
    assert "0 of 20 (0%)" in check.evidence and "5 of 10 (50%)" in check.evidence
    assert "--ignore-doctor" in check.action and "[data] sft" in check.action


def test_seldom_warns_and_often_is_ok(tmp_path):
    seldom = check_candidates(candidates(tmp_path / "a.jsonl", _prompts(2)), [DECLINES])[0]
    assert seldom.verdict == "warn" and seldom.numbers["rate"] == 0.1
    often = check_candidates(candidates(tmp_path / "b.jsonl", _prompts(12)), [DECLINES])[0]
    assert often.verdict == "ok" and often.numbers["trained"] == [12, 20]
    assert often.action == ""
    always = [("off_topic", [f"{DECLINE} {p}a.", f"{DECLINE} {p}b.", f"{DECLINE} {p}c."])
              for p in range(10)]  # fmt: skip
    saturated = check_candidates(candidates(tmp_path / "c.jsonl", always), [DECLINES])[0]
    assert saturated.verdict == "ok" and "already in nearly every reply" in saturated.evidence


def test_without_its_subset_the_on_topic_declines_would_hide_the_failure(tmp_path):
    """The same replies, the criterion over every prompt: 10 of 30 decline, as often as the
    starting model (5 of 15): a warning, not the failure."""
    everywhere = DECLINES.model_copy(update={"applies_to": None})
    path = candidates(tmp_path / "candidates.jsonl", _prompts(0))
    check = check_candidates(path, [everywhere])[0]
    assert check.numbers["trained"] == [10, 30] and check.numbers["start"] == [5, 15]
    assert check.verdict == "warn" and "no more than the starting model" in check.evidence


def test_a_judge_criterion_and_missing_candidates_are_not_yet_measurable(tmp_path):
    judge = SuccessCriterion.model_validate(
        {
            "name": "helpful",
            "description": "Helps.",
            "direction": "increase",
            "detector": {"kind": "judge", "question": "Does it help?"},
        }
    )
    path = candidates(tmp_path / "candidates.jsonl", _prompts(12))
    assert check_candidates(path, [judge])[0].verdict == "not yet measurable"
    absent = check_candidates(tmp_path / "none.jsonl", [DECLINES])
    assert verdicts(absent) == {
        "sft_never_shows:declines": "not yet measurable",
        "similar_pairs": "not yet measurable",
    }


NAMES_THE_NUMBER = SuccessCriterion.model_validate(
    {
        "name": "names_the_number",
        "description": "Says which question it answers.",
        "direction": "increase",
        "detector": {"kind": "callable", "path": "tests.doctor.plant:names_the_number"},
    }
)


def test_a_detector_that_reads_the_prompt_is_given_it(tmp_path):
    """f(prompt, response): called with the pair's prompt, as `eval policy` calls it (given
    None it would crash, or, tolerating None, count nothing)."""
    prompts = [
        ("on_topic", [f"It is {p} indeed.", f"Number {p + 1} then.", f"About {p} too."])
        for p in range(4)
    ]
    check = check_candidates(candidates(tmp_path / "c.jsonl", prompts), [NAMES_THE_NUMBER])[0]
    # the trained model names its own question's number in 1 of its 2 replies per prompt
    assert check.numbers["trained"] == [4, 8] and check.numbers["start"] == [4, 4]
    assert check.verdict == "warn"  # no more often than the starting model


def test_the_trained_model_is_the_one_the_manifest_names_not_the_first_row(tmp_path):
    """Two replies from each model, pairs 1-2 and 3-4: the trained model's pair on the first
    prompt is skipped (its two replies are identical), so the first row is the starting
    model's pair. The manifest still says which replies are whose."""
    prompts = [
        ("off_topic", [f"{ANSWER} {p}." if p else ANSWER, f"{ANSWER} {p}!" if p else ANSWER,
                       f"{DECLINE} {p}a.", f"{DECLINE} {p}b."])
        for p in range(3)
    ]  # fmt: skip
    path = candidates(tmp_path / "c.jsonl", prompts, n=2, all_pairs=False)
    rows = [json.loads(x) for x in path.read_text().splitlines()]
    assert rows[0]["id"] == "p00000-2-3" and rows[0]["models"] == ["tiny-random"] * 2
    check = check_candidates(path, [DECLINES])[0]
    # read from the first row, the starting model (declining every time) would pass as trained
    assert check.numbers["trained"] == [0, 4] and check.numbers["start"] == [6, 6]
    assert check.verdict == "fail"
    manifest_path(path).write_text("{}")
    with pytest.raises(UserError, match="not a candidates manifest"):
        check_candidates(path, [DECLINES])
    manifest_path(path).unlink()  # who wrote what is no longer known: not guessed
    unknown = check_candidates(path, [DECLINES])[0]
    assert unknown.verdict == "not yet measurable" and "manifest" in unknown.evidence


def test_near_identical_pairs_fail_and_varied_ones_pass(tmp_path):
    long = "The book you want is on the second shelf near the window in the back room"
    alike = [("on_topic", [long, long + " today", long + " now"]) for _ in range(4)]
    check = check_candidates(candidates(tmp_path / "a.jsonl", alike), [DECLINES])[-1]
    assert check.name == "similar_pairs" and check.verdict == "fail"
    assert check.numbers["near_identical"] == 12 and check.numbers["pairs"] == 12
    different = [
        ("on_topic", [f"First idea for {p}: read slowly.", f"Try the catalogue, section {p}.",
                      f"No; {p} is out of print."])
        for p in range(4)
    ]  # fmt: skip
    varied = check_candidates(candidates(tmp_path / "b.jsonl", different), [DECLINES])[-1]
    assert varied.verdict == "ok" and varied.numbers["near_identical"] == 0


def test_similarity_by_hand():
    # 16 words against 17 with one added: 2 * 16 / 33
    long = "The book you want is on the second shelf near the window in the back room"
    assert abs(similarity(long, long + " today") - 32 / 33) < 1e-12
    assert similarity("a b", "c d") == 0.0 and similarity("x", "x") == 1.0


def test_only_increase_criteria_are_checked_as_the_readme_table_says(tmp_path):
    # 'refuses on-topic requests' (decrease) shown in 0 of 20 replies is no finding, and one
    # shown in every reply is none either: people can prefer the reply without it
    path = candidates(tmp_path / "candidates.jsonl", _prompts(0))
    for applies_to in ({"kind": "on_topic"}, {"kind": "off_topic"}):
        refuses = DECLINES.model_copy(
            update={"name": "refuses", "direction": "decrease", "applies_to": applies_to}
        )
        names = [c.name for c in check_candidates(path, [DECLINES, refuses])]
        assert names == ["sft_never_shows:declines", "similar_pairs"]
