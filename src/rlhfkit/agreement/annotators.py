"""Per-annotator statistics: who agrees with the panel, who gets the anchors right, who
always clicks the left response, who hides in ties — and how fast each one works."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

from rlhfkit.agreement.labels import Labels, json_number

# Preference labels: which values mean "the first/second response" and the two escapes.
DECISIVE = ("A", "B")
TIE, BOTH_BAD = "tie", "both_bad"


@dataclass
class AnnotatorStats:
    annotator: str
    labels: int
    majority_agreement: float
    """Share of this annotator's labels that match the majority of the *other* labels on the
    item (items where the others have no unique majority are skipped)."""
    majority_items: int
    anchor_accuracy: float
    anchor_items: int
    chose_first_rate: float
    """Among decisive labels (A or B) with a known display order: how often the response shown
    first won. 0.5 is no position bias."""
    position_items: int
    tie_rate: float
    both_bad_rate: float
    labels_per_hour: float

    def as_dict(self) -> dict:
        """JSON-able; each undefined (null) rate comes with `<name>_note`: why."""
        out = {k: json_number(v) for k, v in asdict(self).items()}
        for name, why in NULL_REASONS.items():
            if out[name] is None:
                out[f"{name}_note"] = why
        return out


NULL_REASONS = {
    "majority_agreement": "no item where the other annotators have a single most common label",
    "anchor_accuracy": "no anchor item among this annotator's labels (or no --anchors answers)",
    "chose_first_rate": "no A or B label with a known shown_first: position bias is unknown",
    "labels_per_hour": "fewer than two distinct timestamps: no time span to divide by",
}


def _rate(hits: np.ndarray) -> float:
    return float(hits.mean()) if len(hits) else math.nan


def leave_one_out_majority(labels: Labels) -> np.ndarray:
    """For each label [n]: the majority label of the other annotators on its item, or -1
    when the others gave no labels or tie for the top."""
    counts = labels.counts()
    others = counts[labels.item].copy()
    others[np.arange(labels.n), labels.label] -= 1
    top = others.max(axis=1)
    unique = (others == top[:, None]).sum(axis=1) == 1
    return np.where((top > 0) & unique, others.argmax(axis=1), -1)


def annotator_stats(labels: Labels, gold: dict[int, int] | None = None) -> list[AnnotatorStats]:
    gold = gold or {}
    majority = leave_one_out_majority(labels)
    gold_of = np.full(len(labels.items), -1)
    for item, code in gold.items():
        gold_of[item] = code
    first = [labels.code_of(v) for v in DECISIVE]
    tie, both_bad = labels.code_of(TIE), labels.code_of(BOTH_BAD)
    out = []
    for a, name in enumerate(labels.annotators.tolist()):
        mine = labels.annotator == a
        lab, item = labels.label[mine], labels.item[mine]
        maj = majority[mine]
        g = gold_of[item]
        shown = labels.shown_first[mine]
        decisive = np.isin(lab, [c for c in first if c >= 0]) & (shown >= 0)
        stamps = labels.timestamp[mine]
        stamps = stamps[~np.isnan(stamps)]
        span_h = (stamps.max() - stamps.min()) / 3600 if len(stamps) >= 2 else 0.0
        out.append(
            AnnotatorStats(
                annotator=name,
                labels=int(mine.sum()),
                majority_agreement=_rate(lab[maj >= 0] == maj[maj >= 0]),
                majority_items=int((maj >= 0).sum()),
                anchor_accuracy=_rate(lab[g >= 0] == g[g >= 0]),
                anchor_items=int((g >= 0).sum()),
                chose_first_rate=_rate(lab[decisive] == shown[decisive]),
                position_items=int(decisive.sum()),
                tie_rate=_rate(lab == tie) if tie >= 0 else 0.0,
                both_bad_rate=_rate(lab == both_bad) if both_bad >= 0 else 0.0,
                labels_per_hour=len(stamps) / span_h if span_h > 0 else math.nan,
            )
        )
    return out
