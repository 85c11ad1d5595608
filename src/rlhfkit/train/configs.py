"""One typed config per training command. Standard library only, so the CLI can build its
options (and `--help`) from these classes without importing torch. A field's docstring is
its `--help` text.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar, Literal, get_args

from rlhfkit.choices import DPO_LOSS_TYPES, PRECISIONS, DPOLossType, Precision, one_of
from rlhfkit.errors import UserError

LRSchedule = Literal["cosine", "linear", "constant"]
LR_SCHEDULES = get_args(LRSchedule)
ReportTo = Literal["none", "tensorboard", "mlflow", "trackio"]
REPORT_TO = get_args(ReportTo)
RLAlgorithm = Literal["ppo", "rloo", "grpo"]
RL_ALGORITHMS = get_args(RLAlgorithm)
KLEstimator = Literal["k1", "k3"]
KL_ESTIMATORS = get_args(KLEstimator)
Critic = Literal["head", "reward-model"]
CRITICS = get_args(Critic)
DPOReference = Literal["precomputed", "adapter-off"]

RESUME = {"resume": True}
"""Field metadata of a setting a resumed run must share with the run it continues: any other
value would silently train on other batches or another schedule (see `resume_keys`)."""


def resume_keys(config_cls: type) -> tuple[str, ...]:
    """The fields of `config_cls` marked `RESUME`, on it or on a base class (a
    subclass that only changes a field's default keeps its mark)."""
    marked = {
        f.name
        for klass in config_cls.__mro__
        if dataclasses.is_dataclass(klass)
        for f in dataclasses.fields(klass)
        if f.metadata.get("resume")
    }
    return tuple(f.name for f in dataclasses.fields(config_cls) if f.name in marked)


@dataclass
class LoopConfig:
    """Settings every trainer shares."""

    model: str = "smollm2-135m-instruct"
    """Model folder, hub id in the local cache, or bundled alias."""
    data: Path = Path("data.jsonl")
    """Training data (JSONL or a saved dataset folder)."""
    output_dir: Path = Path("runs/train")
    """Where checkpoints, metrics.jsonl and the final model go."""
    epochs: float = field(default=1.0, metadata=RESUME)
    """Passes over the data (fractions allowed)."""
    max_steps: int = field(default=0, metadata=RESUME)
    """Stop after this many optimizer steps (0: use epochs)."""
    batch_size: int = field(default=8, metadata=RESUME)
    """Examples per optimizer step, over all processes and accumulation steps."""
    grad_accum: int = field(default=1, metadata=RESUME)
    """Split each step's batch into this many sequential micro-batches (saves memory)."""
    learning_rate: float | None = field(default=None, metadata=RESUME)
    """Peak learning rate of AdamW. Unset: the trainer's measured default, with LoRA / without:
    SFT 1e-3 / 2e-5, rm 5e-4 / 1e-5, DPO 6e-4 / 1e-6, PPO 3e-4 / 3e-6."""
    lr_schedule: LRSchedule = field(default="cosine", metadata=RESUME)
    warmup_ratio: float = field(default=0.1, metadata=RESUME)
    """Share of the steps spent warming the learning rate up from zero."""
    weight_decay: float = 0.0
    """AdamW weight decay (never applied to biases and norms)."""
    max_grad_norm: float = 1.0
    """Clip the gradient's global norm to this (0: no clipping)."""
    precision: Precision = field(default="auto", metadata=RESUME)
    """auto: bf16 autocast where this machine has native bf16 (GPUs, CPUs with AVX512-BF16 or
    AMX), else fp32. fp32 is exact (tests, resume)."""
    lora: bool = field(default=True, metadata=RESUME)
    """Train a LoRA adapter instead of every weight."""
    lora_r: int = field(default=16, metadata=RESUME)
    """LoRA rank: the adapter's capacity."""
    lora_alpha: int = 32
    """LoRA scaling numerator (the update is scaled by alpha / r)."""
    lora_dropout: float = 0.0
    """Dropout on the LoRA path (0 keeps runs exactly reproducible)."""
    lora_layers: int = field(default=0, metadata=RESUME)
    """Adapt only the top N transformer layers (0: all). The layers below get no gradient,
    so the backward pass stops at the first adapted layer: a third of the layers trains in
    about two thirds of the time."""
    merge_lora: bool = True
    """Save the final model with the adapter merged in (False: save the adapter alone)."""
    gradient_checkpointing: bool = False
    """Recompute activations in the backward pass: less memory, about 30% slower."""
    max_length: int = field(default=512, metadata=RESUME)
    """Longest prompt + completion in tokens; longer completions are cut."""
    seed: int = field(default=0, metadata=RESUME)
    """Seeds the data order, the new weights and every RNG: same seed, same run."""
    save_every: int = 50
    """Write a resumable checkpoint every N steps (0: only at the end)."""
    resume: bool = False
    """Continue from the latest checkpoint in output_dir."""
    report_to: ReportTo = "none"
    """Also log to this tracker (when installed)."""
    project: Path | None = None
    """Project folder or its rlhfkit.toml: the first training stage freezes its success
    criteria (artifacts/criteria.lock.json), the final model's manifest records their hash,
    and PPO measures them on every step's samples."""

    LEARNING_RATES: ClassVar[tuple[float, float]] = (1e-3, 2e-5)
    """The default peak learning rate (with LoRA, without), when none is given. LoRA's
    low-rank update starts at zero and moves only r x (d_in + d_out) weights per matrix, so it
    needs a learning rate 10-50x a full fine-tune's; the LoRA figures were measured on the
    bundled support-replies task (README, "Settings that matter")."""

    def __post_init__(self) -> None:
        if self.learning_rate is None:
            self.learning_rate = self.LEARNING_RATES[0 if self.lora else 1]

    def resume_keys(self) -> tuple[str, ...]:
        return resume_keys(type(self))

    def check(self) -> None:
        if self.batch_size < 1 or self.grad_accum < 1 or self.batch_size % self.grad_accum:
            raise UserError("--batch-size must be a positive multiple of --grad-accum")
        if self.epochs <= 0 and self.max_steps <= 0:
            raise UserError("give a positive --epochs or --max-steps")
        if self.learning_rate is None or self.learning_rate <= 0 or not 0 <= self.warmup_ratio < 1:
            raise UserError("--learning-rate must be positive and --warmup-ratio in [0, 1)")
        if self.max_length < 8:
            raise UserError("--max-length must be at least 8")
        if self.precision not in PRECISIONS:
            raise UserError(f"--precision is {one_of(PRECISIONS)}")
        if self.lr_schedule not in LR_SCHEDULES:
            raise UserError(f"--lr-schedule is {one_of(LR_SCHEDULES)}")
        if self.lora and self.lora_r < 1:
            raise UserError("--lora-r must be at least 1")
        if self.lora_layers < 0:
            raise UserError("--lora-layers must be 0 (all) or more")
        if self.report_to not in REPORT_TO:
            raise UserError(f"--report-to is one of {', '.join(REPORT_TO)}")


@dataclass
class SFTConfig(LoopConfig):
    output_dir: Path = Path("runs/sft")
    LEARNING_RATES: ClassVar[tuple[float, float]] = (1e-3, 2e-5)


@dataclass
class PairConfig(LoopConfig):
    """Settings of the trainers that learn from preference pairs (reward model, DPO)."""

    group_by_prompt: bool = field(default=True, metadata=RESUME)
    """Pairs that share a prompt train as one example: the prompt and each distinct reply go
    through the model once for all their comparisons (InstructGPT's K-way batching). Then
    --batch-size counts prompts; the loss is still the mean over pairs."""


@dataclass
class RewardConfig(PairConfig):
    output_dir: Path = Path("runs/rm")
    LEARNING_RATES: ClassVar[tuple[float, float]] = (5e-4, 1e-5)
    center_coef: float = field(default=0.0, metadata=RESUME)
    """Weight of the reward-centering term mean((r_c + r_r)^2) (Eisenstein et al. 2023)."""

    def check(self) -> None:
        super().check()
        if self.center_coef < 0:
            raise UserError("--center-coef must be >= 0")


@dataclass
class DPOConfig(PairConfig):
    output_dir: Path = Path("runs/dpo")
    LEARNING_RATES: ClassVar[tuple[float, float]] = (6e-4, 1e-6)
    beta: float = field(default=0.1, metadata=RESUME)
    """Strength of the pull towards the reference: higher stays closer to it."""
    loss_type: DPOLossType = field(default="sigmoid", metadata=RESUME)
    """sigmoid (DPO), ipo, hinge (SLiC) or robust (noisy labels)."""
    label_smoothing: float = field(default=0.0, metadata=RESUME)
    """Assumed rate of flipped labels: conservative DPO with sigmoid, unbiased with robust."""
    # not marked RESUME: both sources give the same log-probs (tested to 1e-5)
    reference: DPOReference = "precomputed"
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


@dataclass
class PPOConfig(LoopConfig):
    """Stage 3: reinforcement learning against a reward, with a KL penalty to the start."""

    output_dir: Path = Path("runs/ppo")
    data: Path = Path("prompts.jsonl")
    """Prompts to answer (prompt-only JSONL; preference or prompt/completion rows also work,
    their prompts are used)."""
    reward: list[str] = field(default_factory=list, metadata=RESUME)
    """Reward source; repeat the option for several: a reward model folder from `train rm`,
    or FILE.py:FUNCTION / module:FUNCTION taking (prompts, responses) and returning one float
    per response. Weight one with @W: --reward runs/rm/final --reward rules.py:signs_off@0.5."""
    algorithm: RLAlgorithm = field(default="ppo", metadata=RESUME)
    """ppo: critic + GAE; rloo: leave-one-out baseline over k samples per prompt; grpo:
    rewards standardised within each prompt's k samples. The last two need no critic."""
    batch_size: int = 8
    """Prompts per step (each sampled k times)."""
    k: int = field(default=1, metadata=RESUME)
    """Responses sampled per prompt (at least 2 for rloo and grpo)."""
    LEARNING_RATES: ClassVar[tuple[float, float]] = (3e-4, 3e-6)
    lr_schedule: LRSchedule = field(default="constant", metadata=RESUME)
    """PPO's steps each bring new samples: a constant rate, no warmup (the demo's measured
    setting)."""
    warmup_ratio: float = field(default=0.0, metadata=RESUME)
    max_new_tokens: int = field(default=64, metadata=RESUME)
    """Longest response sampled."""
    temperature: float = field(default=0.9, metadata=RESUME)
    """Sampling temperature; log-probs are taken at the same temperature."""
    top_p: float = field(default=1.0, metadata=RESUME)
    """Nucleus sampling mass (1: the whole distribution, which PPO's ratios assume)."""
    missing_eos_penalty: float = field(default=1.0, metadata=RESUME)
    """Subtracted from the reward of a response cut off by max_new_tokens."""
    kl_coef: float = field(default=0.05, metadata=RESUME)
    """Weight of the per-token KL penalty to the reference (the starting policy). Too high and
    the policy barely moves; too low and it drifts into reward hacking."""
    kl_estimator: KLEstimator = field(default="k1", metadata=RESUME)
    """Per-token KL estimate: k1 = log(pi/pi_ref), k3 = (r - 1) - log r (never negative)."""
    kl_target: float = field(default=0.0, metadata=RESUME)
    """Adaptive KL coefficient (Ziegler et al. 2019): steer the coefficient so the KL stays
    near this many nats per response (0: keep kl_coef fixed)."""
    kl_horizon: int = field(default=10000, metadata=RESUME)
    """Adaptive KL: responses over which the coefficient may roughly double or halve."""
    whiten_rewards: bool = field(default=True, metadata=RESUME)
    """Normalise each step's rewards to unit variance (keeping their mean)."""
    center_rewards: bool = field(default=True, metadata=RESUME)
    """Subtract each step's mean reward. A reward model's offset means nothing (Bradley–Terry
    fixes only differences), but with a fresh critic a negative one makes every last token,
    EOS included, look bad: the policy learns to stop later and later, not what the reward
    model prefers (InstructGPT normalised its reward model to mean 0 for this reason)."""
    gamma: float = field(default=1.0, metadata=RESUME)
    """GAE discount."""
    lam: float = field(default=0.95, metadata=RESUME)
    """GAE lambda: lower trusts the critic more (less variance, more bias)."""
    ppo_epochs: int = field(default=2, metadata=RESUME)
    """Passes over each step's rollouts."""
    minibatches: int = field(default=1, metadata=RESUME)
    """Optimizer steps per pass over a step's rollouts."""
    cliprange: float = field(default=0.2, metadata=RESUME)
    """PPO's policy ratio clip."""
    cliprange_value: float = field(default=0.2, metadata=RESUME)
    """Clip on how far a value estimate may move per update."""
    vf_coef: float = field(default=0.1, metadata=RESUME)
    """Weight of the value loss."""
    max_approx_kl: float = field(default=0.0, metadata=RESUME)
    """Stop a step's updates early once the approx-KL to the sampling policy exceeds this
    (0: never)."""
    critic: Critic = field(default="head", metadata=RESUME)
    """head: a value head on the policy's own backbone (one forward pass, least memory);
    reward-model: a separate critic initialised from the (first) reward model."""
    merged_rollouts: bool = field(default=True, metadata=RESUME)
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
        if self.kl_estimator not in KL_ESTIMATORS:
            raise UserError(f"--kl-estimator is {one_of(KL_ESTIMATORS)}")
        if not 0 < self.gamma <= 1 or not 0 <= self.lam <= 1:
            raise UserError("--gamma must be in (0, 1] and --lam in [0, 1]")
        if self.critic not in CRITICS:
            raise UserError(f"--critic is {one_of(CRITICS)}")
        if self.max_new_tokens > self.max_length - 8:
            raise UserError("--max-new-tokens must leave room for a prompt within --max-length")
        if self.cliprange <= 0 or self.cliprange_value <= 0:
            raise UserError("--cliprange and --cliprange-value must be positive")
        if self.vf_coef < 0 or self.max_approx_kl < 0 or self.missing_eos_penalty < 0:
            raise UserError("--vf-coef, --max-approx-kl and --missing-eos-penalty must be >= 0")
