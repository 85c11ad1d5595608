"""Stage 2: a reward model, a scalar head on a causal-LM backbone, trained with the
Bradley–Terry loss on preference pairs. Written out.

The backbone may use a different tokenizer from the policy: the reward model tokenizes the
full conversation itself. The result is an ordinary `AutoModelForSequenceClassification`
folder (one label), as TRL's RewardTrainer makes, so any tool can load it.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

import torch

from rlhfkit.data import Format, load
from rlhfkit.errors import UserError
from rlhfkit.train.batches import (
    Batch,
    comparison_index,
    separate,
    sequence_numbers,
    shared_prompt,
    supports_block_mask,
)
from rlhfkit.train.checkpoint import save_final
from rlhfkit.train.configs import RewardConfig
from rlhfkit.train.dpo import TrainResult
from rlhfkit.train.loop import begin, data_inputs, prepare_model, rubric_version
from rlhfkit.train.losses import reward_loss
from rlhfkit.train.run import ProgressFn, make_accelerator, start_run
from rlhfkit.train.scoring import RewardScorer, rewards_of
from rlhfkit.train.tokenize import Example, group_by_prompt, tokenize_dataset


def load_reward_model(name_or_path: str):
    """A causal-LM backbone (or a trained reward model) with a one-output score head."""
    import torch
    from transformers import AutoModelForSequenceClassification
    from transformers.utils import logging as hf_logging

    from rlhfkit.models import load_tokenizer, resolve

    folder = resolve(name_or_path)
    tok = load_tokenizer(str(folder))
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # "score.weight newly initialized" is the point here
    try:
        model = AutoModelForSequenceClassification.from_pretrained(
            str(folder), num_labels=1, dtype=torch.float32, local_files_only=True
        )
    finally:
        hf_logging.set_verbosity(verbosity)
    model.config.pad_token_id = tok.pad_token_id
    return model, tok


def pair_layout(model) -> Callable[[list[Example], int], Batch]:
    """Chosen and rejected share one pass over their prompt where the attention kernel allows."""
    return shared_prompt if supports_block_mask(model) else separate


def score_pairs(model, examples: list[Example], pad_id: int, device) -> torch.Tensor:
    """Rewards [B, 2] (chosen, rejected) for a batch of pairs."""
    inputs = pair_layout(model)(examples, pad_id).to(device)
    rewards = rewards_of(RewardScorer(model), inputs).float()
    return torch.stack(rewards.chunk(2), dim=1)


def score_replies(model, examples: list[Example], pad_id: int, device) -> list[torch.Tensor]:
    """The reward of each completion of each example (a group's replies: [K] each)."""
    inputs = pair_layout(model)(examples, pad_id).to(device)
    rewards = rewards_of(RewardScorer(model), inputs).float().cpu()
    numbers = sequence_numbers(examples)
    return [rewards[torch.tensor(n)] for n in numbers]


def train_reward(cfg: RewardConfig, progress: ProgressFn | None = None) -> TrainResult:
    # 1. settings, data, backbone + fresh score head, tokens
    cfg = begin(cfg)
    data = load(cfg.data, expect=[Format.PREFERENCE, Format.PREFERENCE_IMPLICIT])
    model, tok = load_reward_model(cfg.model)
    examples, truncated = tokenize_dataset(tok, data, cfg.max_length, "preference")
    pairs = len(examples)
    if cfg.group_by_prompt:
        examples = group_by_prompt(examples)
    layout = pair_layout(model)
    scorer = RewardScorer(prepare_model(model, cfg, task_type="SEQ_CLS"))  # head trains in full

    # 2. optimizer, schedule, placement, resume
    accelerator = make_accelerator(cfg)
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
            chosen_at, rejected_at, margin = comparison_index(batch)
            chosen_at, rejected_at = chosen_at.to(device), rejected_at.to(device)
            margin = margin.to(device) if margin is not None else None
            with run.sync(i == len(micro_batches) - 1):
                # 3. a scalar reward for each sequence: every reply of a group once
                with accelerator.autocast():
                    rewards = rewards_of(run.module, inputs).float()
                chosen, rejected = rewards[chosen_at], rewards[rejected_at]
                # 4. Bradley–Terry loss; a micro-batch's mean weighted by its share of the step
                loss = reward_loss(chosen, rejected, margin, cfg.center_coef)
                run.backward(loss * len(chosen) * run.world / step_pairs, inputs.tokens)
            sums["loss"] += loss.detach() * len(chosen)
            sums["accuracy"] += (chosen > rejected).float().sum().detach()
            sums["margin"] += (chosen - rejected).sum().detach()
            sums["reward_mean"] += ((chosen + rejected) / 2).sum().detach()
        # 5. clip, step, log, checkpoint
        last = run.end_step(step + 1, sums, run.optimizer_step(), per=step_pairs)

    final = save_final(
        Path(cfg.output_dir),
        run.module,
        tok,
        cfg,
        "reward_model",
        accelerator,
        rubric_version=rubric_version(data.rows),
        examples=pairs,
        prompts=len(examples) if cfg.group_by_prompt else None,
    )
    return TrainResult(final, last if run.total > run.start else {}, truncated, pairs)


def require_reward_model(model_ref: str, where: str = "") -> None:
    """Refuse a folder that `rlhfkit train rm` did not make: loading it would put a fresh,
    random score head on top. `where` prefixes the message (e.g. the option it came from)."""
    from rlhfkit.models import MANIFEST, resolve

    manifest = resolve(model_ref) / MANIFEST
    kind = json.loads(manifest.read_text()).get("kind") if manifest.exists() else None
    if kind != "reward_model":
        raise UserError(
            f"{where}{model_ref}: not a reward model made by `rlhfkit train rm` (its manifest "
            f"says {kind or 'nothing'}); a fresh score head would give random rewards"
        )


def evaluate_reward_model(model_ref: str, data_path: Path, batch_size: int = 16) -> dict:
    """Held-out accuracy, margins, calibration, length bias and more: see
    `rlhfkit.evaluate.rm.evaluate_reward_model`, which this calls."""
    from rlhfkit.evaluate.rm import evaluate_reward_model as evaluate

    return evaluate(model_ref, data_path, batch_size)
