"""The article's quality gates for a labeling team.

- Calibration gate: every annotator labels the same calibration items first; the main queue
  opens when their percent agreement reaches the project's threshold (default 0.65), and
  the report names the items and annotators that drive the disagreement. The gate's number
  is the percent agreement over the labels it was decided on (the annotation store's
  calibration round, less annotators removed from it) and nothing else: `gate_of` picks
  those labels when the file marks them, `who_drives` says whose labels pull it down.
- Drift: anchor items with known answers are mixed into every batch; an annotator whose
  anchor accuracy in a recent window falls below a threshold, or drops by more than a set
  amount from their calibration-time accuracy, raises an alert.
- Recalibration due: after N labels or D days since the last calibration.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from rlhfkit.agreement.annotators import leave_one_out_majority
from rlhfkit.agreement.labels import Labels, json_number
from rlhfkit.agreement.stats import _item_agreement


@dataclass
class GateResult:
    passed: bool
    statistic: str
    value: float
    threshold: float
    items: int
    annotators: int
    disputed_items: list[tuple[str, float]] = field(default_factory=list)
    """Calibration items by agreement, lowest first (at most ten)."""
    annotator_agreement: dict[str, float] = field(default_factory=dict)
    """Each annotator's agreement with the majority of the others on calibration items."""
    incomplete: dict[str, int] = field(default_factory=dict)
    """Annotators who have not labeled every calibration item: how many they miss."""
    scope: str = "all labels"
    """Which labels it was computed on: "calibration round" (the labels marked as the gate's)
    or "all labels" (nothing marked)."""

    def as_dict(self) -> dict:
        """JSON-able; an undefined (null) value comes with its reason in a `_note(s)` key."""
        agreement = {k: json_number(v) for k, v in self.annotator_agreement.items()}
        return {
            "passed": self.passed,
            "statistic": self.statistic,
            "value": json_number(self.value),
            "value_note": None
            if json_number(self.value) is not None
            else "no calibration item has two or more labels: nothing to agree on (not passed)",
            "threshold": self.threshold,
            "items": self.items,
            "annotators": self.annotators,
            "disputed_items": [[i, a] for i, a in self.disputed_items],
            "annotator_agreement": agreement,
            "annotator_agreement_notes": {
                k: "no calibration item where the others have a single most common label"
                for k, v in agreement.items()
                if v is None
            },
            "incomplete": self.incomplete,
            "scope": self.scope,
            "scope_note": SCOPES[self.scope],
        }


SCOPES = {
    "calibration round": "the labels the annotation store decided its gate on (marked `gate` "
    "in the file): the same number as `rlhfkit annotate status`",
    "all labels": "every label in the file: it marks no gate labels (a file exported by "
    "`rlhfkit annotate export --labels` does), so this is not the annotation store's gate",
}


def gate_of(labels: Labels, threshold: float = 0.65) -> GateResult:
    """The calibration gate on the labels marked as the gate's (`Labels.gate`), or on every
    label when none are marked."""
    if labels.gate is not None and labels.gate.any():
        gate = calibration_gate(labels.subset(labels.gate), None, threshold)
        gate.scope = "calibration round"
        return gate
    return calibration_gate(labels, None, threshold)


@dataclass
class Influence:
    """One annotator's part in the gate's number."""

    annotator: str
    without: float
    """The gate's statistic on the same items without this annotator's labels."""
    pairwise: dict[str, float]
    """Percent agreement with each other annotator on the items both labeled."""

    @property
    def mean_pairwise(self) -> float:
        finite = [v for v in self.pairwise.values() if not math.isnan(v)]
        return float(np.mean(finite)) if finite else math.nan


def who_drives(labels: Labels) -> list[Influence]:
    """Leave-one-out: for each annotator, the gate's statistic without their labels and their
    agreement with each other annotator; the one whose absence raises it most first. With
    two annotators, the statistic without either is undefined (nan): one person's labels
    cannot disagree."""
    out = []
    names = labels.annotators.tolist()
    m = labels.matrix()
    present = [a for a in range(len(names)) if (labels.annotator == a).any()]
    for a in present:
        rest = labels.subset(labels.annotator != a)
        per_item, _ = _item_agreement(rest.counts())
        pairwise = {}
        for b in present:
            if b == a:
                continue
            both = (m[:, a] >= 0) & (m[:, b] >= 0)
            same = m[both, a] == m[both, b]
            pairwise[names[b]] = float(same.mean()) if both.any() else math.nan
        without = float(per_item.mean()) if len(per_item) else math.nan
        out.append(Influence(names[a], without, pairwise))
    out.sort(key=lambda i: (-i.without if not math.isnan(i.without) else math.inf, i.annotator))
    return out


def calibration_gate(
    labels: Labels, calibration_items: list[str] | None = None, threshold: float = 0.65
) -> GateResult:
    """Percent agreement on the calibration items (all items when none are named)."""
    if calibration_items is not None:
        wanted = set(map(str, calibration_items))
        names = np.array(labels.item_names())
        keep = np.isin(names[labels.item], list(wanted))
        labels = labels.subset(keep)
    counts = labels.counts()
    per_item, labelled = _item_agreement(counts)
    value = float(per_item.mean()) if len(per_item) else math.nan
    names = np.array(labels.item_names())[labelled]
    order = np.argsort(per_item, kind="stable")[:10]
    disputed = [(str(names[i]), float(per_item[i])) for i in order if per_item[i] < 1.0]
    majority = leave_one_out_majority(labels)
    agreement = {}
    n_items = int((counts.sum(axis=1) > 0).sum())
    incomplete = {}
    for a, name in enumerate(labels.annotators.tolist()):
        mine = labels.annotator == a
        if not mine.any():
            continue
        ok = majority[mine] >= 0
        hits = labels.label[mine][ok] == majority[mine][ok]
        agreement[name] = float(hits.mean()) if len(hits) else math.nan
        if mine.sum() < n_items:
            incomplete[name] = n_items - int(mine.sum())
    return GateResult(
        passed=bool(value >= threshold) if not math.isnan(value) else False,
        statistic="percent_agreement",
        value=value,
        threshold=threshold,
        items=n_items,
        annotators=len(agreement),
        disputed_items=disputed,
        annotator_agreement=agreement,
        incomplete=incomplete,
    )


@dataclass
class DriftAlert:
    annotator: str
    window: int
    """Which window of the annotator's anchor labels (0 is the first)."""
    accuracy: float
    baseline: float
    reason: str


@dataclass
class AnchorSeries:
    annotator: str
    accuracy: list[float]
    """Anchor accuracy per window of `window` consecutive anchor labels."""
    ends: list[float]
    """Each window's last timestamp (or label index when there are no timestamps)."""


def anchor_drift(
    labels: Labels,
    gold: dict[int, int],
    window: int = 20,
    threshold: float = 0.7,
    max_drop: float = 0.15,
    baseline: dict[str, float] | None = None,
) -> tuple[list[AnchorSeries], list[DriftAlert]]:
    """Anchor accuracy over time per annotator, and alerts for windows that drift.

    Windows are `window` consecutive anchor labels in time order (file order when there are
    no timestamps). The baseline is the calibration-time accuracy when given, else the
    annotator's first window."""
    gold_of = np.full(len(labels.items), -1)
    for item, code in gold.items():
        gold_of[item] = code
    series, alerts = [], []
    for a, name in enumerate(labels.annotators.tolist()):
        idx = np.nonzero((labels.annotator == a) & (gold_of[labels.item] >= 0))[0]
        if len(idx) == 0:
            continue
        stamps = labels.timestamp[idx]
        if not np.isnan(stamps).any():
            idx = idx[np.argsort(stamps, kind="stable")]
        correct = labels.label[idx] == gold_of[labels.item[idx]]
        acc, ends = [], []
        for start in range(0, len(idx), window):
            part = slice(start, min(start + window, len(idx)))
            if part.stop - part.start < max(1, window // 2) and acc:
                break  # a short tail window says little; it joins the next report
            acc.append(float(correct[part].mean()))
            last = idx[part.stop - 1]
            ts = labels.timestamp[last]
            ends.append(float(ts) if not math.isnan(ts) else float(last))
        series.append(AnchorSeries(name, acc, ends))
        base = (baseline or {}).get(name, acc[0])
        for w, value in enumerate(acc):
            if value < threshold:
                alerts.append(
                    DriftAlert(
                        name,
                        w,
                        value,
                        base,
                        f"anchor accuracy {value:.2f} is below the threshold {threshold:.2f}",
                    )
                )
            elif base - value > max_drop + 1e-9:  # 1.0 - 0.85 is 0.15000000000000002
                alerts.append(
                    DriftAlert(
                        name,
                        w,
                        value,
                        base,
                        f"anchor accuracy fell {base - value:.2f} from {base:.2f} at calibration",
                    )
                )
    return series, alerts


def recalibration_due(
    labels_since: int, days_since: float, every_labels: int = 500, every_days: float = 14.0
) -> tuple[bool, str | None]:
    """Whether a fresh calibration round is due, and why."""
    if every_labels and labels_since >= every_labels:
        return True, f"{labels_since} labels since the last calibration (every {every_labels})"
    if every_days and days_since >= every_days:
        return True, f"{days_since:.1f} days since the last calibration (every {every_days:g})"
    return False, None
