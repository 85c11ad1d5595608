"""The run folder's layout: where each stage of `rlhfkit run` writes (what `rlhfkit report`
reads; see report/inputs.py)::

    RUN/stages.json                   the stage log: fingerprints, timings
    RUN/sft/                          stage 1 (final/ is the SFT model)
    RUN/annotation/candidates.jsonl   pairs to label
    RUN/annotation/preferences*.jsonl the export, its split and DPO's selection
    RUN/rm/                           stage 2, and eval_rm.json on the held-out prompts
    RUN/ppo/, RUN/dpo/                stage 3
    RUN/eval/<policy>/                eval.json, samples.jsonl
    RUN/report.html, RUN/report.md    the report
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class RunPaths:
    root: Path
    """The run folder."""
    project: Path
    """The project folder (its rlhfkit.toml)."""

    @property
    def stages(self) -> Path:
        return self.root / "stages.json"

    @property
    def sft(self) -> Path:
        return self.root / "sft"

    @property
    def annotation(self) -> Path:
        return self.root / "annotation"

    @property
    def candidates(self) -> Path:
        return self.annotation / "candidates.jsonl"

    @property
    def prefs(self) -> Path:
        return self.annotation / "preferences.jsonl"

    @property
    def prefs_train(self) -> Path:
        return self.annotation / "preferences.train.jsonl"

    @property
    def prefs_heldout(self) -> Path:
        return self.annotation / "preferences.heldout.jsonl"

    @property
    def prefs_dpo(self) -> Path:
        """The training pairs DPO learns from ([run] dpo_pairs), and the anchors."""
        return self.annotation / "preferences.dpo.jsonl"

    @property
    def rm(self) -> Path:
        return self.root / "rm"

    @property
    def report(self) -> Path:
        return self.root / "report.html"

    def policy(self, name: str) -> Path:
        return self.root / name

    def eval(self, name: str) -> Path:
        return self.root / "eval" / name

    def final(self, stage: str) -> Path:
        return self.root / stage / "final"
