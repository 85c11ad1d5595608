"""`eval policy`'s samples: both models answer the same prompts through the one sampler
(`rlhfkit.train.rollout`), batch by batch with the same seeds, one model in memory at a time.

A model also gives the log-probs the KL estimate needs: of its own samples (the sampler's,
no second pass) or of the other model's rollouts (one scoring pass). The before model's
samples can be kept in a cache folder and reused by a later evaluation against the same
start (PPO's and DPO's, say).
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from transformers.utils import logging as hf_logging

from rlhfkit import __version__, strict_json
from rlhfkit.data.io import atomic_open
from rlhfkit.errors import UserError, display_path
from rlhfkit.lineage import config_hash, weights_identity
from rlhfkit.models import MANIFEST, load_model, load_tokenizer, resolve
from rlhfkit.train.rollout import Sampling, batch_seed, rollout_batch, sample_replies
from rlhfkit.train.scoring import CompletionScorer, sequence_logps

Progress = Callable[[str, int, int], None]


@dataclass(frozen=True)
class SamplePlan:
    """What every model of one evaluation samples alike: `sampling` for each prompt, in
    batches of `batch_size` prompts, batch b seeded ``batch_seed(seed, b)``. `cache`: a
    folder where samples are kept for a later evaluation with the same settings (None: no
    cache)."""

    sampling: Sampling
    seed: int
    batch_size: int
    cache: Path | None = None


@dataclass
class Sampled:
    """One model's samples: texts [P][S], finished [P][S], token counts [P][S]."""

    texts: list[list[str]] = field(default_factory=list)
    finished: list[list[bool]] = field(default_factory=list)
    tokens: list[list[int]] = field(default_factory=list)


@dataclass
class ModelRun:
    """What one model contributed: its samples, and log-probs for the KL estimate."""

    samples: Sampled
    rollouts: list
    """Its rollouts (token ids; empty when the samples came from the cache)."""
    own_logps: list[float] | None
    """Summed log-probs of its own samples, one per sample in order (if asked)."""
    scored_logps: list[float] | None
    """Summed log-probs of another model's rollouts (if asked and the tokenizers match)."""
    tokenizer: Any


def sample_model(
    ref: str,
    prompts: list[Any],
    plan: SamplePlan,
    progress: Progress | None = None,
    label: str = "",
    score_own: bool = False,
    score: ModelRun | None = None,
) -> ModelRun:
    """`plan.sampling.k` samples per prompt from `ref`, batch by batch (or read from
    `plan.cache`, unless `score_own`: the KL needs the token ids). For the KL estimate:
    `score_own` keeps the sampler's log-prob of each of the model's own samples (at the
    temperature, before top-p: the same numbers a scoring pass would give, to float
    rounding, for one pass less); `score`: another model's run whose rollouts this model
    scores — unless its tokenizer differs from this one (the token ids would mean other
    text)."""
    model, tok = load_policy(ref)
    model.to("cuda" if torch.cuda.is_available() else "cpu")
    cached = None
    if plan.cache is not None and not score_own:
        cached = Path(plan.cache) / f"samples-{_cache_key(ref, prompts, plan)}.json"
    if cached is not None and cached.exists():
        out, rollouts, own_logps = Sampled(**json.loads(cached.read_text())["samples"]), [], []
        if progress:
            progress(f"{label} (cached)", 1, 1)
    else:
        out, rollouts, own_logps = _sample(model, tok, prompts, plan, score_own, progress, label)
        if cached is not None:
            with atomic_open(cached) as f:
                strict_json.dump({"model": ref, "samples": asdict(out)}, f)

    same = score is None or score.tokenizer.get_vocab() == tok.get_vocab()
    temperature = plan.sampling.temperature
    return ModelRun(
        out,
        rollouts,
        own_logps if score_own else None,
        _logps(model, temperature, score.rollouts) if score and score.rollouts and same else None,
        tok,
    )


def _sample(model, tok, prompts, plan: SamplePlan, score_own: bool, progress, label):
    """Every batch's samples, rollouts (on the CPU) and, with `score_own`, log-probs."""
    out, rollouts, own_logps = Sampled(), [], []
    size = plan.batch_size
    batches = [prompts[i : i + size] for i in range(0, len(prompts), size)]
    for b, batch in enumerate(batches):
        with _quiet_transformers():
            replies = sample_replies(
                model, tok, batch, plan.sampling, batch_seed(plan.seed, b), logprobs=score_own
            )
        rollout = replies.rollout
        if score_own:  # the sampler's own log-probs: no second pass over these samples
            own_logps += (rollout.logps * rollout.response_mask).sum(dim=1).tolist()
        rollouts.append(
            rollout._replace(
                logps=None,
                entropy=None,
                input_ids=rollout.input_ids.cpu(),
                attention_mask=rollout.attention_mask.cpu(),
                response_mask=rollout.response_mask.cpu(),
                finished=rollout.finished.cpu(),
            )
        )
        out.texts += replies.texts
        out.finished += replies.finished
        out.tokens += replies.tokens
        if progress:
            progress(label, b + 1, len(batches))
    return out, rollouts, own_logps


def load_policy(ref: str):
    """A causal LM from a model folder or alias, or from a LoRA adapter folder (a training
    run's final/ saved with --no-merge-lora): its base model with the adapter merged in."""
    folder = Path(ref)
    adapter = folder / "adapter_config.json"
    if folder.is_dir() and adapter.exists() and not (folder / "config.json").exists():
        from peft import PeftModel  # lazy: peft loads only for adapter folders

        manifest = folder / MANIFEST
        base = json.loads(manifest.read_text()).get("base_model") if manifest.exists() else None
        base = base or json.loads(adapter.read_text()).get("base_model_name_or_path")
        if not base:
            raise UserError(f"{display_path(folder)}: a LoRA adapter that names no base model")
        model, _ = load_model(base)
        model = PeftModel.from_pretrained(model, str(folder)).merge_and_unload()
        return model.eval(), load_tokenizer(base)  # LoRA leaves the tokenizer as it was
    model, tok = load_model(ref)
    return model.eval(), tok


def _logps(model, temperature: float, rollouts: list) -> list[float]:
    """Summed log-probs of each rollout response under `model`, at `temperature`."""
    scorer, found = CompletionScorer(model, temperature), []
    with torch.inference_mode():
        for rollout in rollouts:
            batch = rollout_batch(rollout).to(model.device)
            found += sequence_logps(scorer, batch).float().cpu().tolist()
    return found


def _cache_key(ref: str, prompts: list[Any], plan: SamplePlan) -> str:
    """What makes two runs sample the same: the model's weights (by file size and time), the
    prompts and every sampling setting."""
    folder = Path(ref) if Path(ref).is_dir() else resolve(ref)
    return config_hash(
        {
            **weights_identity(folder),
            "prompts": prompts,
            "samples": plan.sampling.k,
            "batch_size": plan.batch_size,
            "top_p": plan.sampling.top_p,
            "temperature": plan.sampling.temperature,
            "max_new_tokens": plan.sampling.max_new_tokens,
            "seed": plan.seed,
            "rlhfkit": __version__,
        }
    )


@contextlib.contextmanager
def _quiet_transformers():
    """transformers' deprecation notices (argument renames) are not the user's business."""
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)
