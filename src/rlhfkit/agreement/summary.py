"""Everything `rlhfkit agreement` reports, as one JSON-able dict."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from rlhfkit.agreement.annotators import annotator_stats
from rlhfkit.agreement.gates import anchor_drift, calibration_gate
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
    counts = labels.counts()
    per_item = counts.sum(axis=1)
    kappas = cohen_kappa_pairs(labels)
    finite = [k for k in kappas.values() if not math.isnan(k)]
    fleiss, fleiss_reason = fleiss_kappa(labels)
    alpha = krippendorff_alpha(labels, level)
    ci = bootstrap_intervals(labels, level, replicates)
    out: dict[str, Any] = {
        "n_items": int((per_item > 0).sum()),
        "n_annotators": len(labels.annotators),
        "n_labels": labels.n,
        "labels_per_item": {
            "min": int(per_item[per_item > 0].min()),
            "max": int(per_item.max()),
            "mean": float(per_item[per_item > 0].mean()),
        },
        "values": labels.values.tolist(),
        "level": level,
        "percent_agreement": json_number(percent_agreement(labels)),
        "cohen_kappa_mean": json_number(float(np.mean(finite))) if finite else None,
        "cohen_kappa": {f"{a}|{b}": json_number(k) for (a, b), k in kappas.items()},
        "fleiss_kappa": json_number(fleiss),
        "fleiss_kappa_note": fleiss_reason,
        "krippendorff_alpha": json_number(alpha),
        "krippendorff_alpha_note": None
        if not math.isnan(alpha)
        else (
            "undefined: every pairable label is the same (no variation to agree on) or "
            "fewer than two items have two labels"
        ),
        "ci": {k: [json_number(v.low), json_number(v.high)] for k, v in ci.items()},
        "ci_level": 0.95,
        "ci_replicates": replicates,
        "annotators": [s.as_dict() for s in annotator_stats(labels, gold)],
        "calibration_gate": calibration_gate(labels, None, threshold).as_dict(),
    }
    if gold:
        series, alerts = anchor_drift(labels, gold, anchor_window, anchor_threshold)
        out["anchor_items"] = len(gold)
        out["anchor_accuracy_over_time"] = {s.annotator: s.accuracy for s in series}
        out["drift_alerts"] = [
            {
                "annotator": a.annotator,
                "window": a.window,
                "accuracy": a.accuracy,
                "baseline": a.baseline,
                "reason": a.reason,
            }
            for a in alerts
        ]
    return out
