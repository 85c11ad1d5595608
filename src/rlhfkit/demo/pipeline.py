"""The demo: the bundled support-replies project through the whole governed RLHF loop.

Stages, in order (each a function in `stages.py`; each records a fingerprint of its inputs
and settings in ``stages.json`` when it finishes, and a rerun skips it unless that
fingerprint changed or its outputs are gone; a stage killed midway picks up where its own
resumable steps left off):

    project     scaffold the example project (rubric, success criteria, data)
    model       provision SmolLM2-135M-Instruct (converted once, cached)
    sft         stage 1: LoRA SFT on the team's past replies
    candidates  sample three replies per prompt from the SFT model (two in --quick) and one
                from the starting model; every pair of a prompt's replies is a comparison
    annotation  the simulated panel labels them through the real annotation app: calibration
                round, agreement gate, anchors, overlap; export + agreement statistics
    rm          stage 2: reward model on the panel's majority preferences (plus the anchor
                pairs, whose answers the team wrote down); `eval rm` on held-out prompts
    ppo         stage 3: PPO with a KL penalty against the reward model, monitors live
    dpo         DPO on the same preferences (the pairs of two SFT replies, and the anchors)
    eval_ppo, eval_dpo   `eval policy` of each against the SFT model (the starting point)
    report      the HTML report, its Markdown summary and summary.json
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from rlhfkit import strict_json
from rlhfkit.data.io import atomic_open
from rlhfkit.lineage import config_hash


@dataclass(frozen=True)
class Preset:
    """Sizes of everything; `quick` shrinks them, the stages stay the same."""

    sft_steps: int = 24
    sft_learning_rate: float = 1e-3
    sft_lora_layers: int = 15
    """SFT adapts the top half of the layers: 83 s instead of 130 s in fp32, and its replies
    sign off (46%), act on the email (86%) and run (45 words) as with every layer adapted."""
    candidate_prompts: int = 96
    """Prompts the SFT model answers for annotation."""
    candidate_samples: int = 3
    """Replies per prompt from the SFT model; every pair of a prompt's replies becomes a
    comparison (InstructGPT's K-way ranking, asked pairwise)."""
    start_samples: int = 1
    """Replies per prompt from the starting model (SmolLM2 before SFT), compared with the SFT
    model's: pairs that differ in whether the reply acts at all, which two SFT replies rarely
    do (README, "The simulated annotator panel": "Why two epochs")."""
    calibration_size: int = 50
    """Pairs every simulated annotator labels first (the spec's calibration round)."""
    anchors: int = 64
    """Anchor pairs with the team's answers: mixed into annotation to catch drift, and
    added to the reward model's and DPO's training pairs."""
    max_new_tokens: int = 80
    rm_epochs: float = 2.0
    """Two passes over the pairs: held-out accuracy 0.81 / 0.86 / 0.81 over training seeds
    0/1/2 against 0.74 / 0.78 / 0.73 after one (81 pairs; README, "The simulated annotator
    panel": "Why two epochs"), for about 90 s more."""
    rm_learning_rate: float = 5e-4
    rm_lora_layers: int = 15
    """The reward model adapts its top 15 of SmolLM2's 30 layers: 1.8x faster than all of them,
    at the same held-out accuracy (0.84 against 0.85 on an earlier preset's 97 pairs)."""
    heldout_share: float = 0.2
    """Share of the prompts whose preference pairs are kept out of RM and DPO training, for
    `eval rm` (split by prompt: pairs that share a prompt stay on one side)."""
    ppo_steps: int = 8
    ppo_batch: int = 8
    ppo_learning_rate: float = 3e-4
    ppo_lora_layers: int = 15
    dpo_epochs: float = 0.5
    """Of the prompts: DPO's batches are prompts, each with all its comparisons."""
    dpo_learning_rate: float = 6e-4
    dpo_lora_layers: int = 15
    """PPO and DPO adapt the top half of the layers too (the backward pass stops there)."""
    eval_prompts: int = 32
    eval_samples: int = 2
    eval_batch: int = 32
    """Prompts per sampling batch in the evaluations (each expands to eval_samples replies)."""
    precision: str = "auto"
    """Training and candidate sampling: auto (bf16 where this machine runs it faster), bf16 or
    fp32. The evaluations always run in fp32."""
    seed: int = 0
    """Added to every seed of the run (sampling, the panel, training, evaluation): another
    seed is another run of the same experiment."""


PRESETS = {
    "default": Preset(),
    "quick": Preset(
        sft_steps=6,
        candidate_prompts=24,
        candidate_samples=2,
        calibration_size=12,
        anchors=8,
        max_new_tokens=48,
        rm_epochs=1.0,
        ppo_steps=2,
        ppo_batch=4,
        dpo_epochs=0.5,
        eval_prompts=10,
        eval_samples=1,
        eval_batch=10,
    ),
}


@dataclass(frozen=True)
class Paths:
    """The run folder's layout (what `rlhfkit report` reads; see report/inputs.py)."""

    root: Path

    @property
    def project(self) -> Path:
        return self.root / "project"

    @property
    def sft(self) -> Path:
        return self.root / "sft"

    @property
    def candidates(self) -> Path:
        return self.root / "annotation" / "candidates.jsonl"

    @property
    def annotation(self) -> Path:
        return self.root / "annotation"

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
        """The training pairs of two SFT replies, and the anchors: DPO's."""
        return self.annotation / "preferences.dpo.jsonl"

    @property
    def rm(self) -> Path:
        return self.root / "rm"

    def policy(self, name: str) -> Path:
        return self.root / name

    def eval(self, name: str) -> Path:
        return self.root / "eval" / name

    def final(self, stage: str) -> Path:
        return self.root / stage / "final"


@dataclass(frozen=True)
class DemoConfig:
    root: Path = Path("runs/demo")
    """Where the demo's run folder goes (the project, every stage's output, the report)."""
    quick: bool = False
    """Smaller everything, same stages."""
    precision: str = "auto"
    """auto, bf16 or fp32 for training and candidate sampling (see Preset.precision)."""
    seed: int = 0
    """See Preset.seed."""

    @property
    def preset(self) -> Preset:
        base = PRESETS["quick" if self.quick else "default"]
        return replace(base, precision=self.precision, seed=self.seed)

    def settings(self) -> dict[str, Any]:
        return asdict(self.preset) | {"quick": self.quick}


@dataclass
class StageLog:
    """Per-stage timings and fingerprints, kept in ``stages.json``."""

    path: Path
    records: dict[str, dict[str, Any]] = field(default_factory=dict)

    @classmethod
    def open(cls, path: Path) -> StageLog:
        records = json.loads(path.read_text()) if path.exists() else {}
        return cls(path, records)

    def done(self, name: str, inputs: dict[str, Any], outputs: tuple[Path, ...] = ()) -> bool:
        previous = self.records.get(name)
        return bool(
            previous
            and previous.get("fingerprint") == config_hash(inputs)
            and all(p.exists() for p in outputs)
        )

    def changed(self, name: str, inputs: dict[str, Any]) -> bool:
        """The stage started or finished before with other inputs: what it left behind
        (a finished output, or a half-run's checkpoints) must not be reused."""
        previous = self.records.get(name, {})
        fingerprint = config_hash(inputs)
        return any(
            previous.get(key) not in (None, fingerprint) for key in ("fingerprint", "started")
        )

    def output_key(self, name: str) -> str:
        """What downstream stages fingerprint: this stage's inputs and when it last ran, so
        a stage rerun because its outputs were deleted reruns everything after it too."""
        record = self.records[name]
        return f"{record['fingerprint']}@{record.get('finished', '')}"

    def run(
        self,
        name: str,
        inputs: dict[str, Any],
        fn: Callable[[], Any],
        outputs: tuple[Path, ...] = (),
    ) -> bool:
        """Run `fn` unless it finished before with the same inputs and its outputs are still
        there; return True if it ran."""
        if self.done(name, inputs, outputs):
            return False
        self.records[name] = {"started": config_hash(inputs)}
        self._save()
        started = time.time()
        fn()
        self.records[name] = {
            "fingerprint": config_hash(inputs),
            "seconds": round(time.time() - started, 1),
            "finished": time.strftime("%Y-%m-%dT%H:%M:%S"),
        }
        self._save()
        return True

    def _save(self) -> None:
        with atomic_open(self.path) as f:
            strict_json.dump(strict_json.nulled(self.records), f, indent=2)

    def seconds(self) -> dict[str, float]:
        return {name: r["seconds"] for name, r in self.records.items() if "seconds" in r}
