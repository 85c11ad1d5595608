"""Every check on a run's files: `diagnose(RunFiles, criteria)`.

The doctor knows no run-folder layout: whoever calls it names the files (`rlhfkit run` and
`rlhfkit doctor` from `pipeline.layout.RunPaths`). A file that is not there makes its checks
"not yet measurable", never "ok".
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from rlhfkit.criteria import SuccessCriterion
from rlhfkit.doctor.annotation import check_gate, check_ties
from rlhfkit.doctor.candidates import check_candidates
from rlhfkit.doctor.policy import (
    check_kl,
    check_over_refusal,
    check_reward_vs_criteria,
    training_kl,
)
from rlhfkit.doctor.reward import check_reward_model
from rlhfkit.doctor.verdict import Check, missing
from rlhfkit.evaluate.schema import PolicyEvalResult, read_json


@dataclass(frozen=True)
class RunFiles:
    """The files the checks read; None (or absent) where the run has not made one yet."""

    candidates: Path | None = None
    """The candidate pairs (`rlhfkit generate`)."""
    labels: Path | None = None
    """The exported labels, one per row (`annotate export --labels-out`)."""
    status: Path | None = None
    """`rlhfkit annotate status --json`: the gate and its rounds."""
    rm_eval: Path | None = None
    """eval_rm.json (`rlhfkit eval rm`)."""
    evals: dict[str, Path] = field(default_factory=dict)
    """{policy: its `eval policy` folder (eval.json, samples.jsonl)}."""
    metrics: dict[str, Path] = field(default_factory=dict)
    """{policy: its training run's metrics.jsonl}."""


@dataclass(frozen=True)
class Settings:
    """What the checks take from the project spec."""

    criteria: Sequence[SuccessCriterion] = ()
    kl_max: float = 20.0
    """[monitors] kl_max: the KL that counts as drift."""


def diagnose(files: RunFiles, settings: Settings, policies: Sequence[str] = ()) -> list[Check]:
    """Every check, in the run's order. `policies`: the trained policies to expect (each
    gets its checks, 'not yet measurable' until its evaluation is there)."""
    checks = check_candidates(files.candidates, settings.criteria)
    checks += [check_ties(files.labels), check_gate(files.status)]
    checks += check_reward_model(files.rm_eval)
    for name in dict.fromkeys([*policies, *files.evals]):
        checks += _policy(name, files, settings)
    return checks


def _policy(name: str, files: RunFiles, settings: Settings) -> list[Check]:
    folder = files.evals.get(name)
    if folder is None or not (folder / "eval.json").is_file():
        what = f"no evaluation of {name} yet (its eval stage writes eval.json)"
        return [
            missing(f"{check}:{name}", "eval", f"{name}: {title}", what)
            for check, title in (
                ("reward_without_criteria", "reward rose with the criteria"),
                ("kl", "KL to the starting model neither ~0 nor runaway"),
                ("over_refusal", "no declining where it is not wanted"),
            )
        ]
    ev = read_json(PolicyEvalResult, folder / "eval.json")
    samples_path = folder / "samples.jsonl"
    samples = (
        [json.loads(x) for x in samples_path.read_text().splitlines() if x.strip()]
        if samples_path.is_file()
        else []
    )
    return [
        check_reward_vs_criteria(name, ev),
        check_kl(name, ev, settings.kl_max, training_kl(files.metrics.get(name))),
        check_over_refusal(name, ev, samples, settings.criteria),
    ]
