"""The annotation rules a store runs by (overlap, calibration, anchors, gates, the answers the
rubric allows), taken from the project spec in one small typed value: what the scheduler,
the gates and the export need. (Not the trained policy: that is evaluate/policy.py.)"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Policy:
    overlap: int = 3
    """Labels per main item; never exceeded, even under concurrent requests."""
    calibration_size: int = 50
    agreement_threshold: float = 0.65
    anchor_rate: float = 0.1
    anchor_accuracy_threshold: float = 0.7
    min_anchor_labels: int = 5
    """Anchor answers needed before anchor accuracy can exclude an annotator."""
    recalibrate_every: int = 500
    rubric_version: str = "1"
    choices: tuple[str, ...] = ("first", "second", "both_bad")
    """The answers the rubric's tie and both-bad policies allow."""
    criteria: tuple[str, ...] = ()
    task_timeout_s: float = 1800.0
    """An open task not labeled within this long returns to the pool."""

    @classmethod
    def from_project(cls, project: Any, task_timeout_s: float = 1800.0) -> Policy:
        rubric, settings = project.spec.rubric, project.spec.annotation
        choices = ["first", "second"]
        if rubric.tie_policy == "allow":
            choices.append("tie")
        if rubric.both_bad_policy == "allow":
            choices.append("both_bad")
        return cls(
            overlap=settings.overlap,
            calibration_size=settings.calibration_size,
            agreement_threshold=settings.agreement_threshold,
            anchor_rate=settings.anchor_rate,
            anchor_accuracy_threshold=settings.anchor_accuracy_threshold,
            min_anchor_labels=settings.min_anchor_labels,
            recalibrate_every=settings.recalibrate_every,
            rubric_version=rubric.version,
            choices=tuple(choices),
            criteria=tuple(c.name for c in rubric.criteria),
            task_timeout_s=task_timeout_s,
        )
