"""Checks on a trained policy, from its `eval policy` folder (eval.json, samples.jsonl):

- reward up while the pre-registered criteria stay flat or move the wrong way: the seed's
  red flag of reward hacking, as the evaluation's own monitor decided it (eval.json);
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

from rlhfkit.criteria import RefusalScope, SuccessCriterion, prompt_columns
from rlhfkit.data import load
from rlhfkit.doctor.verdict import Check, missing, pct
from rlhfkit.evaluate.rates import RateSettings, compare
from rlhfkit.evaluate.schema import PolicyEvalResult

KL_LOW = 0.1
"""KL (nats per response) under which, with no criterion changed, nothing moved."""
REFUSAL_RISE = 0.05
"""A rise in the refusal rate that warns even when it is not significant."""

STAGE = "eval"


def check_reward_vs_criteria(name: str, ev: PolicyEvalResult) -> Check:
    """The evaluation's own `reward_without_criteria` monitor (eval.json's ``monitors``), as
    a verdict: one rule, decided in one place (`rlhfkit.train.monitors`). It fires when the
    reward rose by [monitors] reward_rise SDs of the starting model's rewards while no
    criterion moved criteria_min_change its way, or one moved that much the wrong way,
    significantly at the evaluation's alpha."""
    check, title = f"reward_without_criteria:{name}", f"{name}: reward rose with the criteria"
    r = ev.reward
    if r is None:
        return missing(check, STAGE, title, "evaluated without a reward model (--reward-model)")
    flag = next((m for m in ev.monitors if m.name == "reward_without_criteria"), None)
    if flag is None:
        what = "eval.json has no reward_without_criteria monitor: run `rlhfkit eval policy` again"
        return missing(check, STAGE, title, what)
    if flag.value is None:
        return missing(check, STAGE, title, flag.explanation)
    evidence = f"reward {r.before.mean:.2f} -> {r.after.mean:.2f}: {flag.explanation}"
    numbers = {"reward_rise_sd": flag.value, "reward_rise": flag.threshold, "reward_p": r.p_value}
    if not flag.flagged:
        return Check(check, STAGE, title, "ok", evidence, "", numbers)
    action = (
        f"the policy learned what the reward model rewards, not what you pre-registered: "
        f"read its replies in the report, check the reward model (length, same-model pairs), "
        f"and hold the policy closer to the start ([train.{_table(name)}] "
        f"{'kl_coef' if name == 'ppo' else 'beta'})"
    )
    return Check(check, STAGE, title, "fail", evidence, action, numbers)


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


def sample_columns(ev: PolicyEvalResult, samples: list[dict[str, Any]]) -> list[dict] | None:
    """Each sample's prompt columns: its own ``columns`` (what `eval policy` writes), else
    its row of the evaluation's prompts file (by ``prompt_index``) as
    `criteria.prompt_columns` reads it; None when a sample has neither."""
    own = [s.get("columns") if isinstance(s.get("columns"), dict) else None for s in samples]
    if all(cols is not None for cols in own):
        return own
    path = Path(ev.settings.prompts)
    rows = load(path).rows if path.is_file() else []
    out = []
    for s, cols in zip(samples, own, strict=True):
        if cols is None and s["prompt_index"] >= len(rows):
            return None
        out.append(cols if cols is not None else prompt_columns(rows[s["prompt_index"]]))
    return out


def check_over_refusal(
    name: str,
    ev: PolicyEvalResult,
    samples: list[dict[str, Any]],
    criteria: Sequence[SuccessCriterion],
) -> Check:
    """Refusals before and after on the prompts `RefusalScope` watches, counted by
    `RefusalScope.refuses` (as the refusal monitor counts them) and tested as the evaluation
    tests a criterion (its test, seed and samples per prompt: `rates.compare`)."""
    check, title = f"over_refusal:{name}", f"{name}: no declining where it is not wanted"
    scope = RefusalScope.of(criteria)  # the refusal monitor's scope and count: one definition
    if any(c.applies_to is None for c in scope.wanted):
        everywhere = next(c.name for c in scope.wanted if c.applies_to is None)
        return missing(check, STAGE, title, f"'{everywhere}' asks for declines on every prompt")
    if not samples:
        return missing(check, STAGE, title, "no samples.jsonl beside eval.json")
    columns = sample_columns(ev, samples)
    if columns is None:
        return missing(check, STAGE, title, f"the prompts file {ev.settings.prompts} is not there")
    outside = [s for s, cols in zip(samples, columns, strict=True) if scope.watched(cols)]
    if not outside:
        return missing(check, STAGE, title, "every evaluation prompt is in the declining subset")
    how = RateSettings.of(ev.settings)
    flat = _flat(outside, scope, how.samples)
    if flat is None:
        what = f"samples.jsonl does not hold all {how.samples} samples of each prompt"
        return missing(check, STAGE, title, what)
    before, after, rows = flat
    cmp = compare(before, after, rows, how, how.seed)
    n = len(rows) * how.samples
    where = scope.describe() or "all prompts (no criterion asks for declines)"
    evidence = (
        f"refusals on {where}: {pct(cmp.before)} -> {pct(cmp.after)} over {n} samples "
        f"(p {cmp.p_value:.3f})"
    )
    numbers = {"before": cmp.before, "after": cmp.after, "p": cmp.p_value, "n": n}
    action = (
        "declining spread beyond its subset: add labelled pairs where answering the "
        "on-topic prompt wins (borderline examples), and pre-register 'does not refuse "
        "on-topic' as a decrease criterion with applies_to"
    )
    if cmp.diff > 0 and cmp.p_value < how.alpha:
        return Check(check, STAGE, title, "fail", evidence, action, numbers)
    if cmp.diff >= REFUSAL_RISE:
        return Check(
            check, STAGE, title, "warn", evidence + ": rose, not significantly", action, numbers
        )
    return Check(check, STAGE, title, "ok", evidence, "", numbers)


def _flat(
    samples: list[dict[str, Any]], scope: RefusalScope, per_prompt: int
) -> tuple[list, list, list[int]] | None:
    """Refusals before and after as `rates.compare` takes them (prompts x samples, flat, by
    ``prompt_index`` and ``sample``) and the prompts to compare; None when a prompt lacks
    one of its samples."""
    by_prompt: dict[int, dict[int, dict[str, Any]]] = {}
    for s in samples:
        by_prompt.setdefault(s["prompt_index"], {})[s.get("sample", 0)] = s
    if any(sorted(got) != list(range(per_prompt)) for got in by_prompt.values()):
        return None
    size = (max(by_prompt) + 1) * per_prompt
    before: list = [None] * size
    after: list = [None] * size
    for k, got in by_prompt.items():
        for j, s in got.items():
            before[k * per_prompt + j] = scope.refuses(s["before"], s.get("prompt"))
            after[k * per_prompt + j] = scope.refuses(s["after"], s.get("prompt"))
    return before, after, sorted(by_prompt)
