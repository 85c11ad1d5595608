"""Checks on the reward model, from eval_rm.json (`rlhfkit eval rm` on the held-out pairs):
is it better than chance, overall and on same-model pairs (two replies of the trained model:
what PPO will ask it to tell apart), and does reply length alone explain its choices?"""

from __future__ import annotations

from pathlib import Path

from rlhfkit.doctor.verdict import Check, missing, pct
from rlhfkit.evaluate.schema import Accuracy, RMEvalResult, read_json

NEAR_CHANCE = 0.6
"""Accuracy under this, with an interval reaching 0.5: near chance (fail). Above it but with
the interval still reaching 0.5: too few held-out pairs to tell (warn)."""
LENGTH_WARN, LENGTH_FAIL = 0.8, 0.9
"""Shares of pairs where the reward model prefers the longer (or the shorter) reply."""
FOLLOWS_PEOPLE = 0.15
"""People chose the longer reply within this of the model's share: the data rewards length."""

STAGE = "rm"
CHANCE_TITLE = "the reward model beats chance on held-out pairs"
LENGTH_TITLE = "the reward model is not mostly length"
NO_EVAL = "no reward model evaluation yet (rm/eval_rm.json, written by the rm stage)"


def _read(path: Path | None) -> RMEvalResult | None:
    return read_json(RMEvalResult, path) if path is not None and path.is_file() else None


def check_reward_model(path: Path | None) -> list[Check]:
    rm = _read(path)
    if rm is None:
        return [
            missing("rm_chance", STAGE, CHANCE_TITLE, NO_EVAL),
            missing("rm_length", STAGE, LENGTH_TITLE, NO_EVAL),
        ]
    return [rm_chance(rm), rm_length(rm)]


def _grade(acc: Accuracy | None) -> str | None:
    if acc is None or acc.accuracy is None:
        return None
    low = acc.ci[0] if acc.ci[0] is not None else 0.0
    return "ok" if low > 0.5 else "fail" if acc.accuracy < NEAR_CHANCE else "warn"


def _words(what: str, acc: Accuracy) -> str:
    lo, hi = (x if x is not None else float("nan") for x in acc.ci)
    return f"{what} {acc.accuracy:.2f} [{lo:.2f}, {hi:.2f}] over {acc.pairs} pairs"


def rm_chance(rm: RMEvalResult) -> Check:
    overall = Accuracy(rm.pairs, rm.accuracy, rm.accuracy_ci)
    same = rm.slices.get("pairing", {}).get("same model")
    grades = {"held-out accuracy": (overall, _grade(overall))}
    if same is not None:
        grades["same-model pairs"] = (same, _grade(same))
    measured = {k: v for k, v in grades.items() if v[1] is not None}
    if not measured:
        return missing("rm_chance", STAGE, CHANCE_TITLE, "eval_rm.json scored no held-out pair")
    evidence = "; ".join(_words(k, acc) for k, (acc, _) in measured.items())
    numbers = {
        k.replace(" ", "_").replace("-", "_"): [a.accuracy, a.pairs]
        for k, (a, _) in measured.items()
    }
    verdict = min((g for _, g in measured.values()), key=("fail", "warn", "ok").index)
    if verdict == "ok":
        return Check("rm_chance", STAGE, CHANCE_TITLE, "ok", evidence, "", numbers)
    if verdict == "warn":
        action = "too few held-out pairs to tell: label more pairs, or raise [run] heldout_share"
    elif measured.get("held-out accuracy", (None, "fail"))[1] != "fail":
        action = (
            "it tells the models apart but not better from worse replies of the trained model, "
            "which is what PPO asks of it: label more same-model pairs ([generate] n) and train "
            "it again; meanwhile prefer DPO ([run] policies)"
        )
    else:
        action = (
            "it has not learned the preferences: check the labels (the gate, ties: `rlhfkit "
            "doctor`), label more pairs, or train it longer ([train.reward] epochs)"
        )
    return Check("rm_chance", STAGE, CHANCE_TITLE, verdict, evidence, action, numbers)


def rm_length(rm: RMEvalResult) -> Check:
    lb = rm.length
    if lb.rm_prefers_longer is None:
        return missing("rm_length", STAGE, LENGTH_TITLE, "no held-out pair of different lengths")
    longer = lb.rm_prefers_longer >= 0.5
    side = "longer" if longer else "shorter"
    dominance = lb.rm_prefers_longer if longer else 1 - lb.rm_prefers_longer
    people = None
    if lb.chosen_is_longer is not None:
        people = lb.chosen_is_longer if longer else 1 - lb.chosen_is_longer
    numbers = {
        "rm_prefers": side,
        "share": dominance,
        "people_share": people,
        "pearson": lb.pearson,
    }
    evidence = f"the reward model prefers the {side} reply in {pct(dominance)} of pairs"
    if people is not None:
        evidence += f"; people chose the {side} in {pct(people)}"
    if lb.pearson is not None:
        evidence += f"; reward-length correlation {lb.pearson:.2f}"
    if dominance < LENGTH_WARN:
        return Check("rm_length", STAGE, LENGTH_TITLE, "ok", evidence, "", numbers)
    action = (
        f"length alone predicts its choices, and PPO will make replies {side}: add pairs where "
        f"the {'shorter' if longer else 'longer'} reply is better (borderline examples in "
        "[rubric]) and watch the length monitor ([monitors])"
    )
    if people is not None and people >= dominance - FOLLOWS_PEOPLE:
        action = f"people's labels favour {side} replies too; if the rubric does not, " + action
        return Check("rm_length", STAGE, LENGTH_TITLE, "warn", evidence, action, numbers)
    verdict = "fail" if dominance >= LENGTH_FAIL else "warn"
    return Check("rm_length", STAGE, LENGTH_TITLE, verdict, evidence, action, numbers)
