"""A trained reward model, loaded and scored: the one module that `train rm` (train/reward.py),
PPO's reward sources (train/reward_sources.py) and evaluation (`eval rm`, the `reward_model`
judge and detector) share. It imports nothing from `rlhfkit.evaluate`.

A reward model is an ordinary `AutoModelForSequenceClassification` folder with one label, made
by `rlhfkit train rm` (its manifest says ``kind = "reward_model"``); it tokenizes prompt and
reply with its own tokenizer, which may differ from the policy's.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import Any

import torch

from rlhfkit.errors import UserError
from rlhfkit.models import MANIFEST, load_tokenizer, resolve
from rlhfkit.train.batches import (
    Batch,
    separate,
    sequence_numbers,
    shared_prompt,
    supports_block_mask,
)
from rlhfkit.train.scoring import RewardScorer, rewards_of
from rlhfkit.train.tokenize import Example, split_prompt_completion

RewardFn = Callable[[list[Any], list[str]], Sequence[float]]
"""A batch reward function: ``(prompts, responses) -> one float per response``."""


def load_reward_model(name_or_path: str):
    """A causal-LM backbone (or a trained reward model) with a one-output score head."""
    from transformers import AutoModelForSequenceClassification
    from transformers.utils import logging as hf_logging

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


def require_reward_model(model_ref: str, where: str = "") -> None:
    """Refuse a folder that `rlhfkit train rm` did not make: loading it would put a fresh,
    random score head on top. `where` prefixes the message (e.g. the option it came from)."""
    manifest = resolve(model_ref) / MANIFEST
    kind = json.loads(manifest.read_text()).get("kind") if manifest.exists() else None
    if kind != "reward_model":
        raise UserError(
            f"{where}{model_ref}: not a reward model made by `rlhfkit train rm` (its manifest "
            f"says {kind or 'nothing'}); a fresh score head would give random rewards"
        )


class RewardModelFn:
    """A reward model from `rlhfkit train rm` as a reward function (batched, no gradients)."""

    def __init__(self, folder: str, device: Any = "cpu", batch_size: int = 16):
        require_reward_model(folder, where="--reward ")
        self.model, self.tokenizer = load_reward_model(folder)
        self.model.to(device).eval()
        self.batch_size = batch_size

    @torch.no_grad()
    def __call__(self, prompts: list[Any], responses: list[str]) -> list[float]:
        tok = self.tokenizer
        examples = []
        for prompt, response in zip(prompts, responses, strict=True):
            if isinstance(prompt, list):  # as the reward model was trained: a chat reply
                completion: Any = [{"role": "assistant", "content": response.strip()}]
            else:
                completion = response + tok.eos_token
            p, c = split_prompt_completion(tok, prompt, completion)
            examples.append(Example(p, (c,)))
        # replies to one prompt share a row (eval policy's samples): the prompt is read once
        by_prompt: dict[tuple[int, ...], list[int]] = {}
        for i, ex in enumerate(examples):
            by_prompt.setdefault(tuple(ex.prompt), []).append(i)
        rows = [
            (Example(list(p), tuple(examples[i].completions[0] for i in idx)), idx)
            for p, idx in by_prompt.items()
        ]
        out = [0.0] * len(examples)
        size = max(1, self.batch_size // max(len(idx) for _, idx in rows))
        for start in range(0, len(rows), size):
            chunk = rows[start : start + size]
            found = score_replies(self.model, [g for g, _ in chunk], tok.pad_token_id,
                                  self.model.device)  # fmt: skip
            for (_, idx), rewards in zip(chunk, found, strict=True):
                for i, r in zip(idx, rewards.tolist(), strict=True):
                    out[i] = r
        return out
