"""One typed config per training command. Standard library only, so the CLI can build its
options (and `--help`) from these classes without importing torch. A field's docstring is
its `--help` text.
"""

from __future__ import annotations

from dataclasses import dataclass, field
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
    lora_layers: int = 0
    """Adapt only the top N transformer layers (0: all). The layers below get no gradient,
    so the backward pass stops at the first adapted layer: a third of the layers trains in
    about two thirds of the time."""
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
    project: Path | None = None
    """Project folder or its rlhfkit.toml: the first training stage freezes its success
    criteria (artifacts/criteria.lock.json), the final model's manifest records their hash,
    and PPO measures them on every step's samples."""

    def resume_keys(self) -> tuple[str, ...]:
        """What a resumed run must share with the run it continues: anything else would
        silently train on other batches or another schedule."""
        return (
            "batch_size",
            "grad_accum",
            "seed",
            "epochs",
            "max_steps",
            "learning_rate",
            "lr_schedule",
            "warmup_ratio",
            "lora",
            "lora_r",
            "lora_layers",
            "max_length",
            "precision",
        )

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
        if self.lora_layers < 0:
            raise UserError("--lora-layers must be 0 (all) or more")
        if self.report_to not in ("none", "tensorboard", "mlflow", "trackio"):
            raise UserError("--report-to is one of none, tensorboard, mlflow, trackio")


@dataclass
class SFTConfig(LoopConfig):
    output_dir: Path = Path("runs/sft")
    learning_rate: float = 2e-4
    """Peak learning rate of AdamW."""


@dataclass
class PairConfig(LoopConfig):
    """Settings of the trainers that learn from preference pairs (reward model, DPO)."""

    group_by_prompt: bool = True
    """Pairs that share a prompt train as one example: the prompt and each distinct reply go
    through the model once for all their comparisons (InstructGPT's K-way batching). Then
    --batch-size counts prompts; the loss is still the mean over pairs."""

    def resume_keys(self) -> tuple[str, ...]:
        return (*super().resume_keys(), "group_by_prompt")


@dataclass
class RewardConfig(PairConfig):
    output_dir: Path = Path("runs/rm")
    learning_rate: float = 1e-4
    center_coef: float = 0.0
    """Weight of the reward-centering term mean((r_c + r_r)^2) (Eisenstein et al. 2023)."""

    def resume_keys(self) -> tuple[str, ...]:
        return (*super().resume_keys(), "center_coef")

    def check(self) -> None:
        super().check()
        if self.center_coef < 0:
            raise UserError("--center-coef must be >= 0")


@dataclass
class DPOConfig(PairConfig):
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

    def resume_keys(self) -> tuple[str, ...]:
        # not `reference`: both sources give the same log-probs (tested to 1e-5)
        return (*super().resume_keys(), "beta", "loss_type", "label_smoothing")

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


RL_ALGORITHMS = ("ppo", "rloo", "grpo")


@dataclass
class PPOConfig(LoopConfig):
    """Stage 3: reinforcement learning against a reward, with a KL penalty to the start."""

    def resume_keys(self) -> tuple[str, ...]:
        return (
            *super().resume_keys(),
            "reward",
            "algorithm",
            "k",
            "max_new_tokens",
            "temperature",
            "top_p",
            "missing_eos_penalty",
            "kl_coef",
            "kl_estimator",
            "kl_target",
            "kl_horizon",
            "whiten_rewards",
            "center_rewards",
            "gamma",
            "lam",
            "ppo_epochs",
            "minibatches",
            "cliprange",
            "cliprange_value",
            "vf_coef",
            "max_approx_kl",
            "critic",
            "merged_rollouts",
        )

    output_dir: Path = Path("runs/ppo")
    data: Path = Path("prompts.jsonl")
    """Prompts to answer (prompt-only JSONL; preference or prompt/completion rows also work,
    their prompts are used)."""
    reward: list[str] = field(default_factory=list)
    """Reward source; repeat the option for several: a reward model folder from `train rm`,
    or FILE.py:FUNCTION / module:FUNCTION taking (prompts, responses) and returning one float
    per response. Weight one with @W: --reward runs/rm/final --reward rules.py:signs_off@0.5."""
    algorithm: Literal["ppo", "rloo", "grpo"] = "ppo"
    """ppo: critic + GAE; rloo: leave-one-out baseline over k samples per prompt; grpo:
    rewards standardised within each prompt's k samples. The last two need no critic."""
    batch_size: int = 8
    """Prompts per step (each sampled k times)."""
    k: int = 1
    """Responses sampled per prompt (at least 2 for rloo and grpo)."""
    learning_rate: float = 1e-5
    max_new_tokens: int = 64
    """Longest response sampled."""
    temperature: float = 0.9
    """Sampling temperature; log-probs are taken at the same temperature."""
    top_p: float = 1.0
    """Nucleus sampling mass (1: the whole distribution, which PPO's ratios assume)."""
    missing_eos_penalty: float = 0.0
    """Subtracted from the reward of a response cut off by max_new_tokens."""
    kl_coef: float = 0.05
    """Weight of the per-token KL penalty to the reference (the starting policy). Too high and
    the policy barely moves; too low and it drifts into reward hacking."""
    kl_estimator: Literal["k1", "k3"] = "k1"
    """Per-token KL estimate: k1 = log(pi/pi_ref), k3 = (r - 1) - log r (never negative)."""
    kl_target: float = 0.0
    """Adaptive KL coefficient (Ziegler et al. 2019): steer the coefficient so the KL stays
    near this many nats per response (0: keep kl_coef fixed)."""
    kl_horizon: int = 10000
    """Adaptive KL: responses over which the coefficient may roughly double or halve."""
    whiten_rewards: bool = False
    """Normalise each step's rewards to unit variance (keeping their mean)."""
    center_rewards: bool = False
    """Subtract each step's mean reward. A reward model's offset means nothing (Bradley–Terry
    fixes only differences), but with a fresh critic a negative one makes every last token,
    EOS included, look bad: the policy learns to stop later and later, not what the reward
    model prefers (InstructGPT normalised its reward model to mean 0 for this reason)."""
    gamma: float = 1.0
    """GAE discount."""
    lam: float = 0.95
    """GAE lambda: lower trusts the critic more (less variance, more bias)."""
    ppo_epochs: int = 2
    """Passes over each step's rollouts."""
    minibatches: int = 1
    """Optimizer steps per pass over a step's rollouts."""
    cliprange: float = 0.2
    """PPO's policy ratio clip."""
    cliprange_value: float = 0.2
    """Clip on how far a value estimate may move per update."""
    vf_coef: float = 0.1
    """Weight of the value loss."""
    max_approx_kl: float = 0.0
    """Stop a step's updates early once the approx-KL to the sampling policy exceeds this
    (0: never)."""
    critic: Literal["head", "reward-model"] = "head"
    """head: a value head on the policy's own backbone (one forward pass, least memory);
    reward-model: a separate critic initialised from the (first) reward model."""
    merged_rollouts: bool = True
    """With LoRA, sample from a copy of the model with the adapter merged in (refreshed each
    step): faster decoding for one more copy of the model in memory."""
    monitor: bool = True
    """With --project: run the reward-hacking monitors (length inflation or collapse, prompt
    echo, hedging, flattery, repetition, refusals, reward up with no criterion moving, KL or
    entropy running away; thresholds in the spec's [monitors]) on every step's samples,
    warn in the progress line and record them in monitors.jsonl."""
    stop_on_flag: bool = False
    """Stop the run (saving the model so far) the first time a monitor fires."""

    def check(self) -> None:
        super().check()
        if self.algorithm not in RL_ALGORITHMS:
            raise UserError(f"--algorithm is one of {', '.join(RL_ALGORITHMS)}")
        if self.algorithm != "ppo" and self.k < 2:
            raise UserError(f"--algorithm {self.algorithm} needs --k 2 or more samples per prompt")
        if self.k < 1 or self.max_new_tokens < 1 or self.ppo_epochs < 1 or self.minibatches < 1:
            raise UserError("--k, --max-new-tokens, --ppo-epochs and --minibatches must be >= 1")
        if self.temperature <= 0 or not 0 < self.top_p <= 1:
            raise UserError("--temperature must be positive and --top-p in (0, 1]")
        if self.kl_coef < 0 or self.kl_target < 0 or self.kl_horizon < 1:
            raise UserError("--kl-coef and --kl-target must be >= 0, --kl-horizon >= 1")
        if self.kl_estimator not in ("k1", "k3"):
            raise UserError("--kl-estimator is k1 or k3")
        if not 0 < self.gamma <= 1 or not 0 <= self.lam <= 1:
            raise UserError("--gamma must be in (0, 1] and --lam in [0, 1]")
        if self.critic not in ("head", "reward-model"):
            raise UserError("--critic is head or reward-model")
        if self.max_new_tokens > self.max_length - 8:
            raise UserError("--max-new-tokens must leave room for a prompt within --max-length")
        if self.cliprange <= 0 or self.cliprange_value <= 0:
            raise UserError("--cliprange and --cliprange-value must be positive")
        if self.vf_coef < 0 or self.max_approx_kl < 0 or self.missing_eos_penalty < 0:
            raise UserError("--vf-coef, --max-approx-kl and --missing-eos-penalty must be >= 0")
