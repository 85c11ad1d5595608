"""Stage 1: supervised fine-tuning on (prompt, ideal response) pairs, written out.

The loss is the negative log-likelihood of completion tokens only, averaged over the
completion tokens of the whole step's batch (so gradient accumulation and data-parallel
shards give the same gradient as one big batch). Prompt tokens and padding are never scored.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import torch

from rlhfkit.data import Format, load
from rlhfkit.models import load_model
from rlhfkit.train.batches import separate
from rlhfkit.train.checkpoint import TrainResult, save_final
from rlhfkit.train.configs import SFTConfig
from rlhfkit.train.loop import begin, data_inputs, prepare_model
from rlhfkit.train.losses import sft_loss
from rlhfkit.train.run import ProgressFn, make_accelerator, start_run
from rlhfkit.train.scoring import CompletionScorer, token_logps_of
from rlhfkit.train.tokenize import tokenize_dataset


def train_sft(cfg: SFTConfig, progress: ProgressFn | None = None) -> TrainResult:
    # 1. settings, data, model, tokens
    cfg = begin(cfg)

    data = load(cfg.data, expect=[Format.PROMPT_COMPLETION, Format.LANGUAGE_MODELING])
    model, tok = load_model(cfg.model)
    examples, truncated = tokenize_dataset(tok, data, cfg.max_length, "sft")
    scorer = CompletionScorer(prepare_model(model, cfg))

    # 2. optimizer, schedule, placement, resume
    accelerator = make_accelerator(cfg)
    seq_lengths = [ex.lengths()[0] for ex in examples]
    run = start_run(cfg, accelerator, scorer, seq_lengths, progress, data_inputs(data))
    device = accelerator.device

    for step in range(run.start, run.total):
        micro_batches = run.micro_batches(step)
        # 3. every process divides by the global batch's scored tokens
        global_tokens = sum(examples[j].scored()[0] for j in run.global_batch(step))
        sums: dict[str, torch.Tensor] = defaultdict(lambda: torch.zeros((), device=device))
        for i, idx in enumerate(micro_batches):
            batch = [examples[j] for j in idx]
            inputs = separate(batch, tok.pad_token_id).to(device)
            with run.sync(i == len(micro_batches) - 1):
                # 4. log-probs of the scored tokens; NLL averaged over the global batch
                with accelerator.autocast():
                    logps = token_logps_of(run.module, inputs)
                loss = sft_loss(logps, global_tokens / run.world)
                run.backward(loss, inputs.tokens)
            # logged as a per-token mean: end_step divides per-example sums by the batch size
            sums["loss"] += -logps.detach().sum() * cfg.batch_size / global_tokens
        # 5. clip, step, log, checkpoint
        last = run.end_step(step + 1, sums, run.optimizer_step())

    final = save_final(
        Path(cfg.output_dir), run.module, tok, cfg, "sft", accelerator, examples=len(examples)
    )
    return TrainResult(final, last if run.total > run.start else {}, truncated, len(examples))
