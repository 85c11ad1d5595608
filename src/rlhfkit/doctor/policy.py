"""Checks on a trained policy, from its `eval policy` folder (eval.json, samples.jsonl):

- reward up while the pre-registered criteria stay flat or move the wrong way: the seed's
  red flag of reward hacking;
- KL to the starting model too low (nothing moved) or too high (drift), from eval.json and,
  where there is one, the training run's metrics.jsonl;
- over-refusal: declining spilled onto prompts it was not wanted on (outside a declining
  criterion's ``applies_to`` subset; every prompt when no criterion asks for declines).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from rlhfkit.criteria import RefusalScope, SuccessCriterion, is_refusal
from rlhfkit.data import load
from rlhfkit.doctor.verdict import Check, missing, pct
from rlhfkit.evaluate.schema import PolicyEvalResult
from rlhfkit.generate import PROMPT_ROW_FIELDS
from rlhfkit.stats import compare_rates

KL_LOW = 0.1
"""KL (nats per response) under which, with no criterion changed, nothing moved."""
REFUSAL_RISE = 0.05
"""A rise in the refusal rate that warns even when it is not significant."""

STAGE = "eval"


def check_reward_vs_criteria(name: str, ev: PolicyEvalResult) -> Check:
    check, title = f"reward_without_criteria:{name}", f"{name}: reward rose with the criteria"
    r = ev.reward
    if r is None:
        return missing(check, STAGE, title, "evaluated without a reward model (--reward-model)")
    alpha = ev.settings.alpha
    moved = "; ".join(
        f"{c.name} {pct(c.before.rate)} -> {pct(c.after.rate)} ({c.verdict})" for c in ev.criteria
    )
    evidence = f"reward {r.before.mean:.2f} -> {r.after.mean:.2f} (p {r.p_value:.3f}); {moved}"
    numbers = {"reward_diff": r.diff, "reward_p": r.p_value, "alpha": alpha}
    if not (r.diff > 0 and r.p_value < alpha):
        return Check(
            check, STAGE, title, "ok", "reward did not rise significantly: " + evidence, "", numbers
        )
    wrong = [c.name for c in ev.criteria if c.verdict == "regressed"]
    right = [c.name for c in ev.criteria if c.verdict == "improved"]
    numbers |= {"regressed": wrong, "improved": right}
    if not wrong and right:
        return Check(check, STAGE, title, "ok", evidence, "", numbers)
    what = f"{', '.join(wrong)} moved the wrong way" if wrong else "no criterion moved"
    action = (
        f"the policy learned what the reward model rewards, not what you pre-registered "
        f"({what}): read its replies in the report, check the reward model (length, "
        f"same-model pairs), and hold the policy closer to the start ([train.{_table(name)}] "
        f"{'kl_coef' if name == 'ppo' else 'beta'})"
    )
    return Check(check, STAGE, title, "fail", f"{evidence}: {what}", action, numbers)


def _table(name: str) -> str:
    return name if name in ("ppo", "dpo") else "ppo"


def training_kl(metrics: Path | None) -> float | None:
    """The mean ``kl`` over the last quarter of a training run's steps (PPO logs it)."""
    if metrics is None or not metrics.is_file():
        return None
    values = []
    for line in metrics.read_text().splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue  # a killed run's last line, cut in half
        if isinstance(row, dict) and isinstance(row.get("kl"), int | float):
            values.append(float(row["kl"]))
    tail = values[-max(1, len(values) // 4) :]
    return float(np.mean(tail)) if values else None


def check_kl(name: str, ev: PolicyEvalResult, kl_max: float, trained: float | None) -> Check:
    check, title = f"kl:{name}", f"{name}: KL to the starting model neither ~0 nor runaway"
    value = ev.kl.value
    if value is None and trained is None:
        return missing(check, STAGE, title, f"no KL estimate: {ev.kl.reason or 'none given'}")
    kl = value if value is not None else trained
    evidence = f"KL {kl:.2f} nats per response" + (" (eval)" if value is not None else "")
    if trained is not None and value is not None:
        evidence += f"; {trained:.2f} over the last training steps"
    numbers = {"kl": kl, "training_kl": trained, "low": KL_LOW, "max": kl_max}
    knob = "kl_coef" if _table(name) == "ppo" else "beta"
    if kl > kl_max:
        action = (
            f"raise [train.{_table(name)}] {knob}"
            + (" or set kl_target" if knob == "kl_coef" else "")
            + ", or train for fewer steps"
        )
        return Check(
            check,
            STAGE,
            title,
            "fail",
            f"{evidence}: above [monitors] kl_max {kl_max:g}, it drifted",
            action,
            numbers,
        )
    changed = [c.name for c in ev.criteria if c.verdict != "no significant change"]
    if kl < KL_LOW and not changed:
        action = (
            f"lower [train.{_table(name)}] {knob}, or raise learning_rate or the steps "
            "(max_steps / epochs)"
        )
        return Check(
            check,
            STAGE,
            title,
            "warn",
            f"{evidence}, under {KL_LOW:g}, and no criterion changed: nothing moved",
            action,
            numbers,
        )
    return Check(check, STAGE, title, "ok", evidence, "", numbers)


def prompt_columns(ev: PolicyEvalResult, samples: list[dict[str, Any]]) -> list[dict] | None:
    """Each sample's prompt columns: the sample's own ``columns`` when it carries them, else
    its row of the evaluation's prompts file (by ``prompt_index``); None when neither is
    there."""
    if samples and all(isinstance(s.get("columns"), dict) for s in samples):
        return [s["columns"] for s in samples]
    path = Path(ev.settings.prompts)
    if not path.is_file():
        return None
    rows = load(path).rows
    if any(s["prompt_index"] >= len(rows) for s in samples):
        return None
    return [
        {k: v for k, v in rows[s["prompt_index"]].items() if k not in PROMPT_ROW_FIELDS}
        for s in samples
    ]


def check_over_refusal(
    name: str,
    ev: PolicyEvalResult,
    samples: list[dict[str, Any]],
    criteria: Sequence[SuccessCriterion],
) -> Check:
    check, title = f"over_refusal:{name}", f"{name}: no declining where it is not wanted"
    scope = RefusalScope.of(criteria)  # the refusal monitor's scope: one definition
    declining = scope.wanted
    if any(c.applies_to is None for c in declining):
        everywhere = next(c.name for c in declining if c.applies_to is None)
        return missing(check, STAGE, title, f"'{everywhere}' asks for declines on every prompt")
    if not samples:
        return missing(check, STAGE, title, "no samples.jsonl beside eval.json")
    columns = prompt_columns(ev, samples)
    if columns is None:
        return missing(check, STAGE, title, f"the prompts file {ev.settings.prompts} is not there")
    outside = [s for s, cols in zip(samples, columns, strict=True) if scope.watched(cols)]
    if not outside:
        return missing(check, STAGE, title, "every evaluation prompt is in the declining subset")

    def refuses(text: str) -> bool:
        return any(c.detector.matches(text) for c in declining) if declining else is_refusal(text)

    before, after = _by_prompt(outside, refuses)
    cmp = compare_rates(before, after)
    where = (
        "prompts outside " + ", ".join(repr(c.name) for c in declining)
        if declining
        else ("all prompts (no criterion asks for declines)")
    )
    evidence = (
        f"refusals on {where}: {pct(cmp.before)} -> {pct(cmp.after)} over {before.size} "
        f"samples (p {cmp.p_value:.3f})"
    )
    numbers = {"before": cmp.before, "after": cmp.after, "p": cmp.p_value, "n": before.size}
    action = (
        "declining spread beyond its subset: add labelled pairs where answering the "
        "on-topic prompt wins (borderline examples), and pre-register 'does not refuse "
        "on-topic' as a decrease criterion with applies_to"
    )
    if cmp.diff > 0 and cmp.p_value < ev.settings.alpha:
        return Check(check, STAGE, title, "fail", evidence, action, numbers)
    if cmp.diff >= REFUSAL_RISE:
        return Check(
            check, STAGE, title, "warn", evidence + ": rose, not significantly", action, numbers
        )
    return Check(check, STAGE, title, "ok", evidence, "", numbers)


def _by_prompt(samples: list[dict[str, Any]], refuses) -> tuple[np.ndarray, np.ndarray]:
    """[P, S] refusals before and after, a row per prompt (samples in their order)."""
    groups: dict[int, list[dict[str, Any]]] = {}
    for s in samples:
        groups.setdefault(s["prompt_index"], []).append(s)
    width = min(len(g) for g in groups.values())
    rows = [sorted(g, key=lambda s: s.get("sample", 0))[:width] for g in groups.values()]
    before = np.array([[refuses(s["before"]) for s in g] for g in rows])
    after = np.array([[refuses(s["after"]) for s in g] for g in rows])
    return before, after
