"""Everything `rlhfkit agreement` reports, as one JSON-able dict."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from rlhfkit.agreement.annotators import annotator_stats
from rlhfkit.agreement.gates import anchor_drift, gate_of
from rlhfkit.agreement.labels import Labels, json_number
from rlhfkit.agreement.stats import (
    Level,
    bootstrap_intervals,
    cohen_kappa_pairs,
    fleiss_kappa,
    krippendorff_alpha,
    percent_agreement,
)


def summarise(
    labels: Labels,
    level: Level = "nominal",
    gold: dict[int, int] | None = None,
    threshold: float = 0.65,
    replicates: int = 1000,
    anchor_threshold: float = 0.7,
    anchor_window: int = 20,
) -> dict[str, Any]:
    """Every figure `rlhfkit agreement` reports: the statistics over every label, and the
    calibration gate over the labels marked as the gate's (`gates.gate_of`). A null figure
    comes with the reason it is undefined: in `<name>_note`, `cohen_kappa_notes` (per pair)
    or `ci_notes` (per interval)."""
    per_item = labels.counts().sum(axis=1)
    labeled = per_item[per_item > 0]
    kappa = _cohen_kappa_fields(labels)
    fleiss, fleiss_reason = fleiss_kappa(labels)
    alpha = json_number(krippendorff_alpha(labels, level))
    ci = {
        name: [json_number(v.low), json_number(v.high)]
        for name, v in bootstrap_intervals(labels, level, replicates).items()
    }
    undefined = _why_undefined(labels)  # None when some item has two different labels
    notes = {  # why each estimate would be null
        "percent_agreement": undefined if undefined == NO_PAIRS else None,
        "krippendorff_alpha": undefined
        or f"undefined: the {level} distances between the labels given are all 0",
        "cohen_kappa_mean": kappa["cohen_kappa_mean_note"],
    }
    agreement = json_number(percent_agreement(labels))
    out: dict[str, Any] = {
        "n_items": len(labeled),
        "n_annotators": len(labels.annotators),
        "n_labels": labels.n,
        "labels_per_item": {
            "min": int(labeled.min()),
            "max": int(per_item.max()),
            "mean": float(labeled.mean()),
        },
        "values": labels.values.tolist(),
        "level": level,
        "percent_agreement": agreement,
        "percent_agreement_note": notes["percent_agreement"] if agreement is None else None,
        **kappa,
        "fleiss_kappa": json_number(fleiss),
        "fleiss_kappa_note": fleiss_reason,
        "krippendorff_alpha": alpha,
        "krippendorff_alpha_note": notes["krippendorff_alpha"] if alpha is None else None,
        "ci": ci,
        "ci_notes": {},
        "ci_level": 0.95,
        "ci_replicates": replicates,
        "annotators": [s.as_dict() for s in annotator_stats(labels, gold)],
        # On the labels the gate was decided on when the file marks them (an export from the
        # annotation store does): the same number `annotate status` shows.
        "calibration_gate": gate_of(labels, threshold).as_dict(),
    }
    pairable = int((per_item >= 2).sum())
    for name, (low, high) in ci.items():
        if low is None or high is None:
            out["ci_notes"][name] = _why_no_interval(out[name], notes[name], replicates, pairable)
    if gold:
        out |= _anchor_fields(labels, gold, anchor_window, anchor_threshold)
    return out


def _cohen_kappa_fields(labels: Labels) -> dict[str, Any]:
    """Cohen's kappa of every pair of annotators, their mean, and why any is undefined."""
    kappas = cohen_kappa_pairs(labels)
    finite = [k for k in kappas.values() if not math.isnan(k)]
    if not kappas:
        mean_note = "no two annotators share two or more items"
    elif not finite:
        mean_note = "undefined for every pair of annotators (see cohen_kappa_notes)"
    else:
        mean_note = None
    return {
        "cohen_kappa_mean": json_number(float(np.mean(finite))) if finite else None,
        "cohen_kappa_mean_note": mean_note,
        "cohen_kappa": {f"{a}|{b}": json_number(k) for (a, b), k in kappas.items()},
        "cohen_kappa_notes": {
            f"{a}|{b}": _why_kappa_undefined(labels, a, b)
            for (a, b), k in kappas.items()
            if math.isnan(k)
        },
    }


def _anchor_fields(
    labels: Labels, gold: dict[int, int], window: int, threshold: float
) -> dict[str, Any]:
    """Each annotator's accuracy on the anchors over time, and the drift alerts."""
    series, alerts = anchor_drift(labels, gold, window, threshold)
    return {
        "anchor_items": len(gold),
        "anchor_accuracy_over_time": {s.annotator: s.accuracy for s in series},
        "drift_alerts": [
            {
                "annotator": a.annotator,
                "window": a.window,
                "accuracy": a.accuracy,
                "baseline": a.baseline,
                "reason": a.reason,
            }
            for a in alerts
        ],
    }


NO_PAIRS = "no item has two or more labels: there is nothing to compare"


def _why_undefined(labels: Labels) -> str | None:
    """Why chance-corrected agreement over the items with two or more labels is undefined
    (0/0): there are no such items, or they hold one label value only. None otherwise."""
    counts = labels.counts()
    pairable = counts[counts.sum(axis=1) >= 2]
    if len(pairable) == 0:
        return NO_PAIRS
    used = np.nonzero(pairable.sum(axis=0))[0]
    if len(used) == 1:
        return (
            f"every label on items with two or more labels is {labels.values[used[0]]}: "
            "no variation to agree on (expected disagreement is 0, so the statistic is 0/0)"
        )
    return None


def _why_kappa_undefined(labels: Labels, a: str, b: str) -> str:
    names = labels.annotators.tolist()
    m = labels.matrix()
    both = (m[:, names.index(a)] >= 0) & (m[:, names.index(b)] >= 0)
    used = np.unique(m[both][:, [names.index(a), names.index(b)]])
    shown = ", ".join(str(labels.values[u]) for u in used)
    return (
        f"{a} and {b} gave only {shown} on the {int(both.sum())} items they share: "
        "no variation to agree on (chance agreement is 1, so kappa is 0/0)"
    )


def _why_no_interval(estimate: Any, note: str | None, replicates: int, pairable: int) -> str:
    if replicates < 1:
        return "no bootstrap replicates were asked for"
    if pairable < 2:
        return f"{pairable} item(s) with two or more labels: too few to resample"
    if estimate is None and note:
        return note
    return "undefined in every bootstrap replicate"
