"""Annotation quality: agreement statistics, the calibration gate, anchors and drift.

numpy only (matplotlib for the plots, imported when drawn); no web or torch imports. Start
with `read_labels` (or `Labels.from_records`) and `summarise`.
"""

from rlhfkit.agreement.annotators import AnnotatorStats, annotator_stats
from rlhfkit.agreement.gates import (
    anchor_drift,
    calibration_gate,
    gate_of,
    recalibration_due,
    who_drives,
)
from rlhfkit.agreement.labels import Labels, read_gold, read_labels
from rlhfkit.agreement.stats import (
    LEVELS,
    bootstrap_intervals,
    cohen_kappa_pairs,
    fleiss_kappa,
    krippendorff_alpha,
    percent_agreement,
)
from rlhfkit.agreement.summary import summarise

__all__ = [
    "LEVELS",
    "AnnotatorStats",
    "Labels",
    "anchor_drift",
    "annotator_stats",
    "bootstrap_intervals",
    "calibration_gate",
    "cohen_kappa_pairs",
    "fleiss_kappa",
    "gate_of",
    "krippendorff_alpha",
    "percent_agreement",
    "read_gold",
    "read_labels",
    "recalibration_due",
    "summarise",
    "who_drives",
]
