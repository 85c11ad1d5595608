"""Stage 2: a reward model, a scalar head on a causal-LM backbone, trained with the
Bradley–Terry loss on preference pairs. Written out.

The backbone may use a different tokenizer from the policy: the reward model tokenizes the
full conversation itself. The result is an ordinary `AutoModelForSequenceClassification`
folder (one label), as TRL's RewardTrainer makes, so any tool can load it. Loading and
scoring one lives in train/reward_model.py.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import torch

from rlhfkit.data import Format, load
from rlhfkit.train.batches import comparison_index
from rlhfkit.train.checkpoint import TrainResult, save_final
from rlhfkit.train.configs import RewardConfig
from rlhfkit.train.loop import begin, data_inputs, prepare_model, rubric_version
from rlhfkit.train.losses import reward_loss
from rlhfkit.train.reward_model import load_reward_model, pair_layout
from rlhfkit.train.run import ProgressFn, make_accelerator, start_run
from rlhfkit.train.scoring import RewardScorer, rewards_of
from rlhfkit.train.tokenize import group_by_prompt, tokenize_dataset


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
