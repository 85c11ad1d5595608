"""Direct preference optimisation (Rafailov et al. 2023), written out.

The reference model's log-probs are computed once per (model, data) and cached on disk, so
no second model sits in memory while training; alternatively, with LoRA, the adapter-off base
serves as the reference live. The policy scores chosen and rejected completions in one
forward pass, and only completion tokens reach the LM head.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

import torch

from rlhfkit import strict_json
from rlhfkit.data import Format, load
from rlhfkit.data.io import atomic_open
from rlhfkit.lineage import weights_identity
from rlhfkit.models import cache_dir, load_model, resolve
from rlhfkit.train.batches import (
    Batch,
    comparison_index,
    separate,
    sequence_order,
    shared_prompt,
    supports_block_mask,
)
from rlhfkit.train.checkpoint import TrainResult, save_final
from rlhfkit.train.configs import DPOConfig
from rlhfkit.train.loop import begin, data_inputs, prepare_model, rubric_version
from rlhfkit.train.losses import dpo_loss
from rlhfkit.train.run import ProgressFn, make_accelerator, start_run
from rlhfkit.train.scoring import CompletionScorer, sequence_logps
from rlhfkit.train.tokenize import Example, group_by_prompt, tokenize_dataset


def train_dpo(cfg: DPOConfig, progress: ProgressFn | None = None) -> TrainResult:
    # 1. settings, data, model, tokens
    cfg = begin(cfg)

    data = load(cfg.data, expect=[Format.PREFERENCE, Format.PREFERENCE_IMPLICIT])
    model, tok = load_model(cfg.model)
    examples, truncated = tokenize_dataset(tok, data, cfg.max_length, "preference")
    pairs = len(examples)
    if cfg.group_by_prompt:
        examples = group_by_prompt(examples)
    # chosen and rejected share one pass over their prompt where the attention kernel allows
    layout = shared_prompt if supports_block_mask(model) else separate
    scorer = CompletionScorer(prepare_model(model, cfg))
    accelerator = make_accelerator(cfg)

    # 2. reference log-probs, before any checkpoint is loaded into the policy
    ref = None
    if cfg.reference == "precomputed":
        ref = reference_logps(scorer, examples, layout, tok.pad_token_id, cfg, accelerator)

    # 3. optimizer, schedule, placement, resume
    seq_lengths = [max(ex.lengths()) for ex in examples]
    run = start_run(cfg, accelerator, scorer, seq_lengths, progress, data_inputs(data))
    device = accelerator.device

    for step in range(run.start, run.total):
        micro_batches = run.micro_batches(step)
        # the loss and the metrics are means over the step's comparisons, on every process
        step_pairs = sum(len(examples[j].comparisons()) for j in run.global_batch(step))
        sums: dict[str, torch.Tensor] = defaultdict(lambda: torch.zeros((), device=device))
        for i, idx in enumerate(micro_batches):
            batch = [examples[j] for j in idx]
            inputs = layout(batch, tok.pad_token_id).to(device)
            chosen_at, rejected_at, _ = comparison_index(batch)
            chosen_at, rejected_at = chosen_at.to(device), rejected_at.to(device)
            with run.sync(i == len(micro_batches) - 1):
                # 4. policy log-probs of every completion in one forward pass
                with accelerator.autocast():
                    logps = sequence_logps(run.module, inputs).float()
                # 5. reference log-probs: cached, or the adapter-off base now
                if ref is not None:
                    ref_logps = torch.stack([ref[idx[r]][k] for r, k in sequence_order(batch)])
                    ref_logps = ref_logps.to(device)
                else:
                    ref_logps = _live_reference(run, inputs)
                # 6. the loss of each comparison, summed here and divided by the step's pairs
                losses, r_chosen, r_rejected = dpo_loss(
                    logps[chosen_at],
                    logps[rejected_at],
                    ref_logps[chosen_at],
                    ref_logps[rejected_at],
                    beta=cfg.beta,
                    loss_type=cfg.loss_type,
                    label_smoothing=cfg.label_smoothing,
                    chosen_lengths=inputs.n_scored[chosen_at],
                    rejected_lengths=inputs.n_scored[rejected_at],
                )
                run.backward(losses.sum() * run.world / step_pairs, inputs.tokens)
            sums["loss"] += losses.detach().sum()
            sums["rewards/chosen"] += r_chosen.sum()
            sums["rewards/rejected"] += r_rejected.sum()
            sums["rewards/accuracy"] += (r_chosen > r_rejected).float().sum()
            sums["rewards/margin"] += (r_chosen - r_rejected).sum()
        # 7. clip, step, log, checkpoint
        last = run.end_step(step + 1, sums, run.optimizer_step(), per=step_pairs)

    final = save_final(
        Path(cfg.output_dir),
        run.module,
        tok,
        cfg,
        "dpo",
        accelerator,
        rubric_version=rubric_version(data.rows),
        examples=pairs,
        prompts=len(examples) if cfg.group_by_prompt else None,
    )
    return TrainResult(final, last if run.total > run.start else {}, truncated, pairs)


def _live_reference(run, inputs: Batch) -> torch.Tensor:
    """The adapter-off base's log-prob of every sequence of the batch [S]."""
    scorer = run.accelerator.unwrap_model(run.module)
    with torch.no_grad(), scorer.model.disable_adapter(), run.accelerator.autocast():
        return sequence_logps(scorer, inputs).float()


def reference_logps(
    scorer: CompletionScorer,
    examples: list[Example],
    layout: Callable[[list[Example], int], Batch],
    pad_id: int,
    cfg: DPOConfig,
    accelerator,
) -> list[torch.Tensor]:
    """Reference log-probs of every example's completions (a pair: [chosen, rejected]; a
    group: one per reply), cached on disk.

    The main process computes them (batches of similar length, so little padding) while the
    others wait, then every process reads the cache. The key covers the model's config and
    weight files, the token ids and the precision, so a change to any of them recomputes.
    """
    key = _reference_key(resolve(cfg.model), examples, cfg.precision)
    path = cache_dir() / "reference-logps" / f"{key}.pt"
    with accelerator.main_process_first():
        try:
            cached = torch.load(path, map_location="cpu")
            if [len(c) for c in cached] == [len(ex.completions) for ex in examples]:
                return cached
        except (OSError, RuntimeError, EOFError, TypeError):
            pass  # absent, unreadable or of another shape: compute it
        out = [torch.empty(len(ex.completions)) for ex in examples]
        scorer.to(accelerator.device)
        order = sorted(range(len(examples)), key=lambda i: max(examples[i].lengths()))
        with torch.inference_mode(), accelerator.autocast():
            for start in range(0, len(order), cfg.batch_size):
                idx = order[start : start + cfg.batch_size]
                batch = [examples[i] for i in idx]
                inputs = layout(batch, pad_id).to(accelerator.device)
                logps = sequence_logps(scorer, inputs).float().cpu()
                for s, (r, k) in enumerate(sequence_order(batch)):
                    out[idx[r]][k] = logps[s]
        if accelerator.is_main_process:
            path.parent.mkdir(parents=True, exist_ok=True)
            with atomic_open(path, "wb") as f:
                torch.save(out, f)
    return out


def _reference_key(model_dir: Path, examples: list[Example], precision: str) -> str:
    h = hashlib.sha256(strict_json.dumps(weights_identity(model_dir)).encode())
    h.update((model_dir / "config.json").read_bytes())
    h.update(precision.encode())
    for ex in examples:
        h.update(strict_json.dumps([ex.prompt, *ex.completions]).encode())
    return h.hexdigest()[:24]
