"""The settings of `eval policy` and `eval rm`. Standard library only, so the CLI can build
their options (and `--help`) from these classes without importing numpy or torch. A field's
docstring is its `--help` text.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from rlhfkit.choices import Test


@dataclass(frozen=True)
class PolicyEvalConfig:
    project: Path
    """Project folder (or its rlhfkit.toml): criteria, monitors and defaults come from it."""
    before: str
    """The starting policy: a model folder, alias, or a training run's final/ (LoRA too)."""
    after: str
    """The trained policy (the same kinds of reference)."""
    out: Path
    """Output folder for eval.json and samples.jsonl."""
    prompts: Path | None = None
    """Held-out prompts (default: the spec's data.eval_prompts)."""
    limit: int | None = None
    """Use only the first N prompts."""
    samples: int = 2
    """Samples per prompt and model."""
    max_new_tokens: int | None = None
    """Longest response (default: the spec's [generate] max_new_tokens)."""
    temperature: float | None = None
    """Sampling temperature (default: the spec's)."""
    top_p: float = 1.0
    """Nucleus mass; below 1 the KL estimate is only approximate."""
    seed: int | None = None
    """Random seed (default: the spec's)."""
    batch_size: int = 8
    """Prompts per generation batch."""
    judges: tuple[str, ...] = field(default=(), metadata={"flag": "judge"})
    """A pairwise judge of after vs before; repeatable: rm:DIR, panel (the demo's simulated
    panel), callable:module:function, or openai (RLHFKIT_JUDGE_BASE_URL, RLHFKIT_JUDGE_MODEL,
    RLHFKIT_JUDGE_API_KEY)."""
    reward_model: str | None = None
    """A reward model for mean reward, its win rate and 'reward up, no criterion moved'."""
    test: Test = "permutation"
    """The test of each before/after difference; permutation is paired over prompts (see
    rlhfkit/stats.py)."""
    sample_cache: Path | None = None
    """A folder where the --before model's samples are kept and reused by a later evaluation
    with the same model, prompts and settings (e.g. PPO and DPO against one start)."""
    alpha: float = 0.05
    """Significance level of the verdicts."""
    confidence: float = 0.95
    """Level of the intervals."""
    slice_by: tuple[str, ...] = field(default=(), metadata={"flag": "slice"})
    """A prompt column (e.g. kind) to break every criterion down by: its rates before and
    after, counts and p-value on each value's prompts; repeatable."""


@dataclass(frozen=True)
class RMEvalConfig:
    model: str
    """The reward model folder (final/ of `train rm`)."""
    data: Path
    """Held-out preference pairs."""
    slice_by: tuple[str, ...] = field(default=(), metadata={"flag": "slice"})
    """A row column to break accuracy down by (e.g. topic); repeatable."""
    bins: int = 10
    """Confidence bins of the reliability table."""
    batch_size: int = 16
    """Pairs per forward batch."""
