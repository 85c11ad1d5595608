"""The reward-model and policy checks on planted failures, from eval_rm.json and eval.json
written by the project's own schema classes (the report's fixture run, then changed)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np

from rlhfkit.criteria import SuccessCriterion
from rlhfkit.doctor.policy import (
    check_kl,
    check_over_refusal,
    check_reward_vs_criteria,
    training_kl,
)
from rlhfkit.doctor.reward import check_reward_model, rm_chance, rm_length
from rlhfkit.evaluate.monitors import compare_flags
from rlhfkit.evaluate.schema import (
    Accuracy,
    KLResult,
    MonitorResult,
    PolicyEvalResult,
    RMEvalResult,
    read_json,
    write_json,
)
from rlhfkit.project import MonitorSettings
from rlhfkit.stats import TEST_NAMES, compare_rates
from rlhfkit.train.monitors import CriterionMove, reward_without_criteria
from tests.conftest import write_lines
from tests.doctor.plant import ANSWER, DECLINE, DECLINES

RUN = Path(__file__).parents[1] / "report" / "files" / "run"


def _rm() -> RMEvalResult:
    return read_json(RMEvalResult, RUN / "rm" / "eval_rm.json")


def _ppo() -> PolicyEvalResult:
    return read_json(PolicyEvalResult, RUN / "eval" / "ppo" / "eval.json")


def test_a_healthy_reward_model_passes_both_checks(tmp_path):
    path = tmp_path / "eval_rm.json"
    write_json(_rm(), path)  # 0.81 [0.68, 0.90] on 48 pairs; prefers the longer in 58%
    assert [c.verdict for c in check_reward_model(path)] == ["ok", "ok"]
    assert [c.verdict for c in check_reward_model(None)] == ["not yet measurable"] * 2


def test_a_reward_model_near_chance_fails():
    rm = dataclasses.replace(_rm(), accuracy=0.52, accuracy_ci=[0.38, 0.66])
    check = rm_chance(rm)
    assert check.verdict == "fail" and "0.52 [0.38, 0.66] over 48 pairs" in check.evidence
    assert "[train.reward] epochs" in check.action


def test_near_chance_on_same_model_pairs_fails_though_overall_passes():
    same = Accuracy(pairs=30, accuracy=0.5, ci=[0.33, 0.67])
    across = Accuracy(pairs=18, accuracy=1.0, ci=[0.82, 1.0])
    rm = dataclasses.replace(
        _rm(), slices={"pairing": {"same model": same, "across models": across}}
    )
    check = rm_chance(rm)
    assert check.verdict == "fail" and "same-model pairs 0.50" in check.evidence
    assert "tells the models apart" in check.action


def test_too_few_held_out_pairs_warn():
    rm = dataclasses.replace(_rm(), pairs=8, accuracy=0.75, accuracy_ci=[0.41, 0.93])
    check = rm_chance(rm)
    assert check.verdict == "warn" and "heldout_share" in check.action


def test_a_reward_model_that_is_mostly_length_fails_unless_people_chose_length_too():
    def lengthy(rm_share: float, people: float) -> RMEvalResult:
        rm = _rm()
        return dataclasses.replace(
            rm,
            length=dataclasses.replace(
                rm.length, rm_prefers_longer=rm_share, chosen_is_longer=people
            ),
        )

    fail = rm_length(lengthy(0.95, 0.5))
    assert fail.verdict == "fail" and "longer reply in 95% of pairs" in fail.evidence
    # the same share toward the shorter reply: symmetric
    assert rm_length(lengthy(0.05, 0.5)).numbers["rm_prefers"] == "shorter"
    assert rm_length(lengthy(0.05, 0.5)).verdict == "fail"
    follows = rm_length(lengthy(0.95, 0.9))
    assert follows.verdict == "warn" and follows.action.startswith("people's labels favour")
    assert rm_length(lengthy(0.85, 0.5)).verdict == "warn"


def _with_verdicts(ev: PolicyEvalResult, verdicts: list[str]) -> PolicyEvalResult:
    criteria = [
        dataclasses.replace(c, verdict=v) for c, v in zip(ev.criteria, verdicts, strict=True)
    ]
    return dataclasses.replace(ev, criteria=criteria)


def _judged(ev: PolicyEvalResult, rise_sd: float, moves: dict) -> PolicyEvalResult:
    """`ev` with the evaluation's own reward_without_criteria monitor on these figures, as
    `eval policy` computes it (`rlhfkit.train.monitors`)."""
    flag = reward_without_criteria(rise_sd, moves, MonitorSettings(), ev.settings.alpha)
    return dataclasses.replace(ev, monitors=[MonitorResult.from_json(flag.to_json())])


def test_reward_up_with_a_criterion_the_wrong_way_or_none_moving_fails():
    ev = _ppo()  # reward -0.4 -> 0.9, p 0.0001
    up = CriterionMove(0.2, 0.8, "increase", 0.0001)
    check = check_reward_vs_criteria("ppo", _judged(ev, 1.4, {"signs_off": up}))
    assert check.verdict == "ok" and check.numbers["reward_rise_sd"] == 1.4
    wrong = CriterionMove(0.8, 0.2, "increase", 0.0001)
    failed = check_reward_vs_criteria("ppo", _judged(ev, 1.4, {"signs_off": wrong}))
    assert failed.verdict == "fail" and "signs_off (80% -> 20%" in failed.evidence
    assert "moved the wrong way" in failed.evidence and "[train.ppo] kl_coef" in failed.action
    flat = CriterionMove(0.5, 0.5, "increase", 1.0)
    none = check_reward_vs_criteria("dpo", _judged(ev, 1.4, {"signs_off": flat}))
    assert none.verdict == "fail" and "no success criterion moved" in none.evidence
    assert "[train.dpo] beta" in none.action
    no_rm = dataclasses.replace(ev, reward=None)
    assert check_reward_vs_criteria("ppo", no_rm).verdict == "not yet measurable"
    assert check_reward_vs_criteria("ppo", ev).verdict == "not yet measurable"  # no monitor


def test_the_doctor_and_the_monitor_decide_reward_without_criteria_alike():
    """The cases where a second rule split from the monitor's: a significant rise under
    [monitors] reward_rise SDs with the criteria flat, and a criterion that moved 10 points
    its way without reaching significance. The monitor flags neither; nor does the doctor."""
    # the reward rose, p 0.0001; no criterion changed significantly
    ev = _with_verdicts(_ppo(), ["no significant change"] * 3)
    flat = {"signs_off": CriterionMove(0.5, 0.5, "increase", 1.0)}
    small = _judged(ev, 0.3, flat)
    unsure = _judged(ev, 1.4, {"signs_off": CriterionMove(0.4, 0.5, "increase", 0.2)})
    for judged in (small, unsure):
        (monitor,) = judged.monitors
        assert not monitor.flagged
        assert check_reward_vs_criteria("ppo", judged).verdict == "ok"
    flagged = _judged(ev, 0.6, flat)
    assert flagged.monitors[0].flagged
    assert check_reward_vs_criteria("ppo", flagged).verdict == "fail"


def test_kl_runaway_fails_kl_near_zero_with_nothing_moved_warns(tmp_path):
    ev = _ppo()  # KL 4.1 nats
    assert check_kl("ppo", ev, kl_max=20.0, trained=None).verdict == "ok"
    drift = check_kl("ppo", dataclasses.replace(ev, kl=KLResult(value=31.0)), 20.0, None)
    assert drift.verdict == "fail" and "above [monitors] kl_max 20" in drift.evidence
    still = _with_verdicts(ev, ["no significant change"] * 3)
    still = dataclasses.replace(still, kl=KLResult(value=0.02))
    low = check_kl("dpo", still, 20.0, None)
    assert low.verdict == "warn" and "nothing moved" in low.evidence
    assert "[train.dpo] beta" in low.action
    # no estimate in eval.json (other tokenizers): the training log's last steps stand in
    unknown = dataclasses.replace(ev, kl=KLResult(value=None, reason="different tokenizers"))
    assert check_kl("ppo", unknown, 20.0, None).verdict == "not yet measurable"
    metrics = write_lines(tmp_path / "metrics.jsonl", [{"kl": k} for k in (1, 2, 40, 50)])
    assert training_kl(metrics) == 50.0  # the last quarter of 4 steps: the last one
    assert check_kl("ppo", unknown, 20.0, training_kl(metrics)).verdict == "fail"


def _refusal_samples(on_topic_after_declines: bool) -> list[dict]:
    """4 off-topic prompts (declined after, wanted) and 6 on-topic ones, 2 samples each."""
    rows = []
    for p in range(10):
        off = p < 4
        for s in range(2):
            declines_after = off or on_topic_after_declines
            rows.append(
                {
                    "prompt_index": p,
                    "sample": s,
                    "prompt": f"q{p}",
                    "before": f"{ANSWER} {p}{s}",
                    "after": f"{DECLINE} {p}{s}." if declines_after else f"{ANSWER} {p}{s}!",
                }
            )
    return rows


def _prompts_file(tmp_path: Path) -> Path:
    return write_lines(
        tmp_path / "eval.jsonl",
        [{"prompt": f"q{p}", "kind": "off_topic" if p < 4 else "on_topic"} for p in range(10)],
    )


def test_declines_spilling_onto_on_topic_prompts_fail_as_over_refusal(tmp_path):
    ev = _ppo()
    ev = dataclasses.replace(
        ev, settings=dataclasses.replace(ev.settings, prompts=str(_prompts_file(tmp_path)))
    )
    spill = check_over_refusal("ppo", ev, _refusal_samples(True), [DECLINES])
    assert spill.verdict == "fail" and spill.numbers["n"] == 12  # 6 on-topic prompts x 2
    assert (spill.numbers["before"], spill.numbers["after"]) == (0.0, 1.0)
    assert "prompts outside declines (kind = off_topic)" in spill.evidence  # as the monitor says
    # the wanted declines on the 4 off-topic prompts are no over-refusal
    fine = check_over_refusal("ppo", ev, _refusal_samples(False), [DECLINES])
    assert fine.verdict == "ok" and fine.numbers["after"] == 0.0


def test_over_refusal_reads_columns_carried_by_the_samples_and_says_what_is_missing():
    ev = _ppo()  # its prompts file is not there
    samples = _refusal_samples(True)
    missing = check_over_refusal("ppo", ev, samples, [DECLINES])
    assert missing.verdict == "not yet measurable" and "prompts file" in missing.evidence
    for row in samples:
        row["columns"] = {"kind": "off_topic" if row["prompt_index"] < 4 else "on_topic"}
    assert check_over_refusal("ppo", ev, samples, [DECLINES]).verdict == "fail"
    # with no criterion asking for declines, every prompt counts, by the built-in detector
    assert check_over_refusal("ppo", ev, samples, []).numbers["after"] == 1.0
    assert check_over_refusal("ppo", ev, [], [DECLINES]).verdict == "not yet measurable"


def test_a_samples_own_columns_come_before_the_prompts_file(tmp_path):
    everything_on_topic = write_lines(
        tmp_path / "eval.jsonl", [{"prompt": f"q{p}", "kind": "on_topic"} for p in range(10)]
    )
    ev = _ppo()
    ev = dataclasses.replace(
        ev, settings=dataclasses.replace(ev.settings, prompts=str(everything_on_topic))
    )
    samples = _refusal_samples(True)
    for row in samples[:8]:  # the 4 off-topic prompts say so themselves; the rest do not
        row["columns"] = {"kind": "off_topic"}
    check = check_over_refusal("ppo", ev, samples, [DECLINES])
    assert check.numbers["n"] == 12 and check.verdict == "fail"


def _with_test(ev: PolicyEvalResult, test: str, seed: int) -> PolicyEvalResult:
    return dataclasses.replace(
        ev, settings=dataclasses.replace(ev.settings, test=TEST_NAMES[test], seed=seed)
    )


def test_over_refusal_is_tested_as_the_evaluation_tests_and_counted_as_the_monitor_counts():
    samples = _refusal_samples(True)
    for row in samples:
        row["columns"] = {"kind": "off_topic" if row["prompt_index"] < 4 else "on_topic"}
    # 6 on-topic prompts x 2 samples, none declined before, all after
    before, after = np.zeros((6, 2)), np.ones((6, 2))
    for test, seed in (("permutation", 0), ("two_proportion", 0), ("bootstrap", 3)):
        check = check_over_refusal("ppo", _with_test(_ppo(), test, seed), samples, [DECLINES])
        expected = compare_rates(before, after, test, 0.95, seed=seed).p_value
        assert check.numbers["p"] == expected and check.verdict == "fail"
    assert check_over_refusal("ppo", _ppo(), samples, [DECLINES]).numbers["p"] == 2 / 64
    # a decline in the criterion's own words ('also'), which the built-in patterns miss
    also = SuccessCriterion.model_validate(
        DECLINES.dump() | {"detector": {"kind": "refusal", "also": ["ring the front desk"]}}
    )
    for row in samples[8:]:  # the on-topic prompts
        row["after"] = "Best ring the front desk for that."
    assert check_over_refusal("ppo", _ppo(), samples, [also]).numbers["after"] == 1.0
    assert check_over_refusal("ppo", _ppo(), samples, [DECLINES]).numbers["after"] == 0.0
    after_texts = [r["after"] for r in samples]
    flags = compare_flags([r["prompt"] for r in samples], after_texts,
                          [r["before"] for r in samples], MonitorSettings(),
                          columns=[r["columns"] for r in samples], criteria=[also])  # fmt: skip
    assert next(f for f in flags if f.name == "refusal").value == 1.0  # the monitor agrees


def test_over_refusal_takes_every_sample_and_refuses_to_guess_a_missing_one():
    samples = _refusal_samples(True)
    for row in samples:
        row["columns"] = {"kind": "off_topic" if row["prompt_index"] < 4 else "on_topic"}
    gap = [r for r in samples if (r["prompt_index"], r["sample"]) != (5, 1)]
    check = check_over_refusal("ppo", _ppo(), gap, [DECLINES])
    assert check.verdict == "not yet measurable" and "all 2 samples" in check.evidence


def test_the_fixture_files_are_what_the_tests_assume():
    data = json.loads((RUN / "eval" / "ppo" / "eval.json").read_text())
    assert data["kl"]["value"] == 4.1 and data["reward"]["p_value"] == 0.0001
