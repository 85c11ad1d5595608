"""Stage 1: supervised fine-tuning on (prompt, ideal response) pairs, written out.

The loss is the negative log-likelihood of completion tokens only, averaged over the
completion tokens of the whole step's batch (so gradient accumulation and data-parallel
shards give the same gradient as one big batch). Prompt tokens and padding are never scored.
"""

from __future__ import annotations

import dataclasses
from collections import defaultdict
from pathlib import Path

import torch

from rlhfkit.data import Format, load
from rlhfkit.train.checkpoint import save_final
from rlhfkit.train.configs import SFTConfig
from rlhfkit.train.dpo import TrainResult
from rlhfkit.train.loop import add_lora, completion_batch, resolve_precision, seed_everything
from rlhfkit.train.losses import sft_loss
from rlhfkit.train.run import ProgressFn, make_accelerator, start_run
from rlhfkit.train.scoring import CompletionScorer
from rlhfkit.train.tokenize import tokenize_dataset


def train_sft(cfg: SFTConfig, progress: ProgressFn | None = None) -> TrainResult:
    # 1. data, model, tokens
    cfg.check()
    cfg = dataclasses.replace(cfg, precision=resolve_precision(cfg.precision))
    seed_everything(cfg.seed)
    from rlhfkit.models import load_model

    data = load(cfg.data, expect=[Format.PROMPT_COMPLETION, Format.LANGUAGE_MODELING])
    model, tok = load_model(cfg.model)
    examples, truncated = tokenize_dataset(tok, data, cfg.max_length, "sft")
    if cfg.gradient_checkpointing:
        model.gradient_checkpointing_enable()
    if cfg.lora:
        model = add_lora(model, cfg)

    # 2. optimizer, schedule, placement, resume
    accelerator = make_accelerator(cfg)
    lengths = [ex.lengths()[0] for ex in examples]
    run = start_run(cfg, accelerator, CompletionScorer(model), lengths, progress)
    device = accelerator.device

    for step in range(run.start, run.total):
        micro_batches = run.micro_batches(step)
        # 3. every process divides by the global batch's completion tokens
        global_tokens = sum(len(examples[j].completions[0]) for j in run.global_batch(step))
        sums: dict[str, torch.Tensor] = defaultdict(lambda: torch.zeros(()))
        for i, idx in enumerate(micro_batches):
            batch = [examples[j] for j in idx]
            ids, mask, score, _ = (t.to(device) for t in completion_batch(batch, tok.pad_token_id))
            with run.sync(i == len(micro_batches) - 1):
                # 4. log-probs of the completion tokens; NLL averaged over the global batch
                with accelerator.autocast():
                    logps = run.module(ids, mask, score)
                loss = sft_loss(logps, global_tokens / run.world)
                run.backward(loss, int(mask.sum()))
            # metrics are per-example sums; scale the token mean back to one
            sums["loss"] += -logps.detach().sum().cpu() * cfg.batch_size / global_tokens
        # 5. clip, step, log, checkpoint
        last = run.end_step(step + 1, sums, run.optimizer_step())

    final = save_final(
        Path(cfg.output_dir),
        accelerator.unwrap_model(run.module).model,
        tok,
        cfg,
        "sft",
        accelerator,
        examples=len(examples),
    )
    return TrainResult(final, last if run.total > run.start else {}, truncated, len(examples))
