"""One typed config per training command. Standard library only, so the CLI can build its
options (and `--help`) from these classes without importing torch. A field's docstring is
its `--help` text.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from rlhfkit.errors import UserError

DPO_LOSS_TYPES = ("sigmoid", "ipo", "hinge", "robust")


@dataclass
class LoopConfig:
    """Settings every trainer shares."""

    model: str = "smollm2-135m-instruct"
    """Model folder, hub id in the local cache, or bundled alias."""
    data: Path = Path("data.jsonl")
    """Training data (JSONL or a saved dataset folder)."""
    output_dir: Path = Path("runs/train")
    """Where checkpoints, metrics.jsonl and the final model go."""
    epochs: float = 1.0
    """Passes over the data (fractions allowed)."""
    max_steps: int = 0
    """Stop after this many optimizer steps (0: use epochs)."""
    batch_size: int = 8
    """Examples per optimizer step, over all processes and accumulation steps."""
    grad_accum: int = 1
    """Split each step's batch into this many sequential micro-batches (saves memory)."""
    learning_rate: float = 5e-5
    """Peak learning rate of AdamW."""
    lr_schedule: Literal["cosine", "linear", "constant"] = "cosine"
    warmup_ratio: float = 0.1
    """Share of the steps spent warming the learning rate up from zero."""
    weight_decay: float = 0.0
    """AdamW weight decay (never applied to biases and norms)."""
    max_grad_norm: float = 1.0
    """Clip the gradient's global norm to this (0: no clipping)."""
    precision: Literal["auto", "bf16", "fp32"] = "auto"
    """auto: bf16 autocast where this machine runs bf16 matmuls faster than fp32 (GPUs, CPUs
    with AVX512-BF16/AMX; measured at start), else fp32. fp32 is exact (tests, resume)."""
    lora: bool = True
    """Train a LoRA adapter instead of every weight."""
    lora_r: int = 16
    """LoRA rank: the adapter's capacity."""
    lora_alpha: int = 32
    """LoRA scaling numerator (the update is scaled by alpha / r)."""
    lora_dropout: float = 0.0
    """Dropout on the LoRA path (0 keeps runs exactly reproducible)."""
    merge_lora: bool = True
    """Save the final model with the adapter merged in (False: save the adapter alone)."""
    gradient_checkpointing: bool = False
    """Recompute activations in the backward pass: less memory, about 30% slower."""
    max_length: int = 512
    """Longest prompt + completion in tokens; longer completions are cut."""
    seed: int = 0
    """Seeds the data order, the new weights and every RNG: same seed, same run."""
    save_every: int = 50
    """Write a resumable checkpoint every N steps (0: only at the end)."""
    resume: bool = False
    """Continue from the latest checkpoint in output_dir."""
    report_to: str = "none"
    """Also log to: none, tensorboard, mlflow or trackio (when installed)."""

    def check(self) -> None:
        if self.batch_size < 1 or self.grad_accum < 1 or self.batch_size % self.grad_accum:
            raise UserError("--batch-size must be a positive multiple of --grad-accum")
        if self.epochs <= 0 and self.max_steps <= 0:
            raise UserError("give a positive --epochs or --max-steps")
        if self.learning_rate <= 0 or not 0 <= self.warmup_ratio < 1:
            raise UserError("--learning-rate must be positive and --warmup-ratio in [0, 1)")
        if self.max_length < 8:
            raise UserError("--max-length must be at least 8")
        if self.precision not in ("auto", "bf16", "fp32"):
            raise UserError("--precision is auto, bf16 or fp32")
        if self.lr_schedule not in ("cosine", "linear", "constant"):
            raise UserError("--lr-schedule is cosine, linear or constant")
        if self.lora and self.lora_r < 1:
            raise UserError("--lora-r must be at least 1")
        if self.report_to not in ("none", "tensorboard", "mlflow", "trackio"):
            raise UserError("--report-to is one of none, tensorboard, mlflow, trackio")


@dataclass
class SFTConfig(LoopConfig):
    output_dir: Path = Path("runs/sft")
    learning_rate: float = 2e-4
    """Peak learning rate of AdamW."""


@dataclass
class RewardConfig(LoopConfig):
    output_dir: Path = Path("runs/rm")
    learning_rate: float = 1e-4
    center_coef: float = 0.0
    """Weight of the reward-centering term mean((r_c + r_r)^2) (Eisenstein et al. 2023)."""

    def check(self) -> None:
        super().check()
        if self.center_coef < 0:
            raise UserError("--center-coef must be >= 0")


@dataclass
class DPOConfig(LoopConfig):
    output_dir: Path = Path("runs/dpo")
    learning_rate: float = 5e-5
    beta: float = 0.1
    """Strength of the pull towards the reference: higher stays closer to it."""
    loss_type: Literal["sigmoid", "ipo", "hinge", "robust"] = "sigmoid"
    """sigmoid (DPO), ipo, hinge (SLiC) or robust (noisy labels)."""
    label_smoothing: float = 0.0
    """Assumed rate of flipped labels: conservative DPO with sigmoid, unbiased with robust."""
    reference: Literal["precomputed", "adapter-off"] = "precomputed"
    """precomputed: reference log-probs computed once and cached on disk; adapter-off: the
    LoRA-disabled base scores each batch live (LoRA only)."""

    def check(self) -> None:
        super().check()
        if self.loss_type not in DPO_LOSS_TYPES:
            raise UserError(f"--loss-type is one of {', '.join(DPO_LOSS_TYPES)}")
        if self.beta <= 0 or not 0 <= self.label_smoothing < 0.5:
            raise UserError("--beta must be positive and --label-smoothing in [0, 0.5)")
        if self.label_smoothing and self.loss_type not in ("sigmoid", "robust"):
            raise UserError("--label-smoothing applies to the sigmoid and robust losses only")
        if self.reference == "adapter-off" and not self.lora:
            raise UserError("--reference adapter-off needs --lora")
