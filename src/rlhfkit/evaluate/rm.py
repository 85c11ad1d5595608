"""`rlhfkit eval rm`: is the reward model fit to be trusted? On held-out preference pairs:

- accuracy (chosen scored above rejected) with a Wilson interval, overall and per slice
  (any row column, e.g. ``topic``: a model can be right on average and wrong on one kind);
- agreement with the human majority where rows carry ``votes`` (a stricter target than the
  exported ``chosen`` when annotators disagreed), beside how far annotators agree with their
  own majority — the ceiling a reward model can hope to reach;
- calibration of the Bradley–Terry probability p = sigmoid(r_chosen - r_rejected): a
  reliability table over confidence max(p, 1 - p) and the expected calibration error (ECE,
  Guo et al. 2017), plus the Brier score;
- length: Pearson and Spearman correlation of reward with length in words, how often the
  model prefers the longer reply against how often people did, and accuracy when the chosen
  reply is the longer vs the shorter one — length is the most common reward-model bias
  (Singhal et al. 2023);
- order invariance: every prompt's replies are scored again in reverse order within their row
  (the shared-prompt layout puts a prompt's replies in one row); a scalar reward must not
  change.

Each prompt's distinct replies are scored once, whatever the number of pairs they are in.

Output (``--json`` / ``--out``): `rlhfkit.evaluate.schema.RMEvalResult`
(``"schema": "rlhfkit.eval_rm/1"``), each field documented there.
"""

from __future__ import annotations

import math
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import torch

from rlhfkit.data import Dataset, Format, load
from rlhfkit.data.convert import to_explicit_prompt
from rlhfkit.errors import UserError
from rlhfkit.evaluate.schema import (
    Accuracy,
    Calibration,
    CalibrationBin,
    HumanMajority,
    LengthBias,
    OrderInvariance,
    RMEvalResult,
)
from rlhfkit.stats import pearson, spearman, wilson_interval
from rlhfkit.train.reward_model import load_reward_model, require_reward_model, score_replies
from rlhfkit.train.tokenize import Example, group_by_prompt, tokenize_dataset


def completion_text(value: Any) -> str:
    """A completion's text: the string, or its messages' contents joined."""
    if isinstance(value, str):
        return value
    return "\n".join(m["content"] for m in value)


def _accuracy(correct: np.ndarray) -> Accuracy:
    n = len(correct)
    hits = round(float(np.sum(correct)))
    return Accuracy(n, float(np.mean(correct)) if n else None, list(wilson_interval(hits, n)))


def calibration(diff: np.ndarray, bins: int = 10) -> Calibration:
    """Reliability of the Bradley–Terry probability over confidence bins in [0.5, 1]."""
    p = 1 / (1 + np.exp(-diff))
    confidence = np.maximum(p, 1 - p)
    correct = np.where(diff > 0, 1.0, np.where(diff < 0, 0.0, 0.5))
    edges = np.linspace(0.5, 1.0, bins + 1)
    index = np.clip(np.searchsorted(edges, confidence, side="right") - 1, 0, bins - 1)
    table, ece = [], 0.0
    for b in range(bins):
        inside = index == b
        count = int(inside.sum())
        conf = float(confidence[inside].mean()) if count else None
        acc = float(correct[inside].mean()) if count else None
        if count:
            ece += count / len(diff) * abs(acc - conf)
        table.append(CalibrationBin(float(edges[b]), float(edges[b + 1]), count, conf, acc))
    return Calibration(float(ece), float(np.mean((1 - p) ** 2)), table)


def human_majority(rows: list[dict[str, Any]], diff: np.ndarray) -> HumanMajority | None:
    """The reward model against each pair's majority of 'chosen'/'rejected' votes."""
    voted = [(i, r["votes"]) for i, r in enumerate(rows) if isinstance(r.get("votes"), dict)]
    if not voted:
        return None
    agree, majority_is_chosen, annotator_share = [], [], []
    for i, votes in voted:
        c = sum(v == "chosen" for v in votes.values())
        r = sum(v == "rejected" for v in votes.values())
        if c == r:
            continue  # no majority to agree with
        majority = "chosen" if c > r else "rejected"
        majority_is_chosen.append(majority == "chosen")
        annotator_share.append(max(c, r) / (c + r))
        agree.append(diff[i] > 0 if majority == "chosen" else diff[i] < 0)
    if not agree:
        return HumanMajority(rows_with_votes=len(voted), rows_with_majority=0, rm_agreement=None)
    return HumanMajority(
        rows_with_votes=len(voted),
        rows_with_majority=len(agree),
        rm_agreement=_accuracy(np.array(agree, dtype=float)),
        majority_is_chosen=float(np.mean(majority_is_chosen)),
        annotator_agreement_with_majority=float(np.mean(annotator_share)),
    )


def length_bias(
    rows: list[dict[str, Any]], chosen_r: np.ndarray, rejected_r: np.ndarray
) -> LengthBias:
    lc = np.array([len(completion_text(r["chosen"]).split()) for r in rows], dtype=float)
    lr = np.array([len(completion_text(r["rejected"]).split()) for r in rows], dtype=float)
    lengths = np.concatenate([lc, lr])
    rewards = np.concatenate([chosen_r, rejected_r])
    differ = lc != lr
    diff = chosen_r - rejected_r
    longer_preferred = np.where(lc > lr, diff > 0, diff < 0)[differ]
    correct = (diff > 0).astype(float)
    return LengthBias(
        pearson=pearson(lengths, rewards),
        spearman=spearman(lengths, rewards),
        rm_prefers_longer=float(np.mean(longer_preferred)) if differ.any() else None,
        chosen_is_longer=float(np.mean((lc > lr)[differ])) if differ.any() else None,
        accuracy_chosen_longer=_accuracy(correct[lc > lr]),
        accuracy_chosen_shorter=_accuracy(correct[lc < lr]),
    )


def evaluate_reward_model(
    model_ref: str,
    data_path: Path,
    batch_size: int = 16,
    slices: tuple[str, ...] = (),
    bins: int = 10,
) -> RMEvalResult:
    """Every check above on held-out pairs; see the module docstring for the output."""
    # 1. the pairs, checked before the model loads
    require_reward_model(model_ref)
    if bins < 1:
        raise UserError("--bins must be at least 1")
    data = load(data_path, expect=[Format.PREFERENCE, Format.PREFERENCE_IMPLICIT])
    rows = data.rows
    if data.kind.format is Format.PREFERENCE_IMPLICIT:
        rows = [to_explicit_prompt(r, data.kind.conversational) for r in rows]
    for column in slices:
        if not any(column in r for r in rows):
            raise UserError(f"--slice {column}: no row of {data_path} has a '{column}' column")
    # 2. each pair's (chosen, rejected) rewards, and again with the replies in reverse order
    rewards, again, truncated = _pair_rewards(model_ref, data, batch_size)
    # 3. the figures
    chosen_r, rejected_r = rewards[:, 0], rewards[:, 1]
    diff = chosen_r - rejected_r
    correct = (diff > 0).astype(float)
    moved = np.abs(again - rewards)
    overall = _accuracy(correct)
    return RMEvalResult(
        model=model_ref,
        data=str(data_path),
        pairs=len(rewards),
        accuracy=overall.accuracy,
        accuracy_ci=overall.ci,
        ties=int(np.sum(diff == 0)),
        mean_margin=float(diff.mean()),
        mean_reward_chosen=float(chosen_r.mean()),
        mean_reward_rejected=float(rejected_r.mean()),
        truncated=truncated,
        slices={column: _slice(rows, column, correct) for column in slices},
        human_majority=human_majority(rows, diff),
        calibration=calibration(diff, bins),
        length=length_bias(rows, chosen_r, rejected_r),
        order_invariance=OrderInvariance(
            max_abs_diff=float(moved.max()),
            mean_abs_diff=float(moved.mean()),
            flipped=int(np.sum(np.sign(again[:, 0] - again[:, 1]) != np.sign(diff))),
        ),
    )


def _slice(rows: list[dict[str, Any]], column: str, correct: np.ndarray) -> dict[str, Accuracy]:
    """Accuracy for each value of a row column."""
    groups: dict[str, list[int]] = defaultdict(list)
    for i, r in enumerate(rows):
        groups[str(r.get(column, "(none)"))].append(i)
    return {v: _accuracy(correct[idx]) for v, idx in sorted(groups.items())}


def _pair_rewards(
    model_ref: str, data: Dataset, batch_size: int
) -> tuple[np.ndarray, np.ndarray, int]:
    """Rewards [pairs, 2] (chosen, rejected) in row order; the same with each prompt's
    replies scored in reverse order; and how many replies were truncated."""
    model, tok = load_reward_model(model_ref)
    model.eval()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model.to(device)
    examples, truncated = tokenize_dataset(tok, data, min(tok.model_max_length, 4096), "preference")
    # each prompt's distinct replies scored once for all their pairs (pairs in row order)
    groups = group_by_prompt(examples)
    slot = {tuple(g.prompt): i for i, g in enumerate(groups)}
    taken = [0] * len(groups)
    where = []  # (group, pair within it) of each row
    for ex in examples:
        g = slot[tuple(ex.prompt)]
        where.append((g, taken[g]))
        taken[g] += 1
    # the same replies again in reverse order within their rows: a reward must not move
    reversed_groups = [Example(g.prompt, g.completions[::-1]) for g in groups]
    rewards_of_reply, again_of_reply = [], []
    with torch.inference_mode():
        for start in range(0, len(groups), batch_size):
            chunk = slice(start, start + batch_size)
            rewards_of_reply += score_replies(model, groups[chunk], tok.pad_token_id, device)
            again = score_replies(model, reversed_groups[chunk], tok.pad_token_id, device)
            again_of_reply += [r.flip(0) for r in again]

    def per_pair(of_reply: list[torch.Tensor]) -> np.ndarray:
        out = []
        for g, i in where:
            chosen, rejected, _ = groups[g].comparisons()[i]
            out.append([float(of_reply[g][chosen]), float(of_reply[g][rejected])])
        return np.array(out, dtype=np.float64).reshape(-1, 2)

    return per_pair(rewards_of_reply), per_pair(again_of_reply), truncated


def summary_lines(f: RMEvalResult) -> list[str]:
    """The figures as a few lines of text for the terminal."""
    lo, hi = f.accuracy_ci
    lines = [
        f"{f.pairs} pairs: accuracy {f.accuracy:.3f} (95% CI {lo:.2f}-{hi:.2f}), mean "
        f"margin {f.mean_margin:.3f} (chosen {f.mean_reward_chosen:.3f}, rejected "
        f"{f.mean_reward_rejected:.3f})"
    ]
    for column, groups in f.slices.items():
        parts = ", ".join(f"{v} {g.accuracy:.2f} (n={g.pairs})" for v, g in groups.items())
        lines.append(f"by {column}: {parts}")
    hm = f.human_majority
    if hm and hm.rm_agreement:
        lines.append(
            f"agrees with the human majority on {hm.rm_agreement.accuracy:.3f} of "
            f"{hm.rows_with_majority} pairs (annotators agree with their majority "
            f"{hm.annotator_agreement_with_majority:.2f})"
        )
    cal = f.calibration
    lines.append(f"calibration: ECE {cal.ece:.3f}, Brier {cal.brier:.3f}")
    ln = f.length

    def num(x: float | None) -> str:
        return "n/a" if x is None or math.isnan(x) else f"{x:.2f}"

    lines.append(
        f"length: reward~words Pearson {num(ln.pearson)}, Spearman {num(ln.spearman)}; "
        f"prefers the longer reply {num(ln.rm_prefers_longer)} (people: "
        f"{num(ln.chosen_is_longer)})"
    )
    oi = f.order_invariance
    lines.append(
        f"order invariance: max |reward change| {oi.max_abs_diff:.2g} when chosen and "
        f"rejected swap places, {oi.flipped} decisions flipped"
    )
    return lines
