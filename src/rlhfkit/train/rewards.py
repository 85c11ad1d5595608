"""Where stage 3's rewards come from: a trained reward model, a Python function, or several.

`--reward` takes one or more specs, each optionally weighted with ``@WEIGHT``:

- a reward model folder made by `rlhfkit train rm` (``runs/rm/final``); it tokenizes prompt
  and response with its own tokenizer, so it may differ from the policy's;
- a function ``FILE.py:NAME`` or ``package.module:NAME`` with the signature
  ``reward(prompts: list, responses: list[str]) -> list[float]`` (rule-based rewards).

The total reward is the weighted sum; every part is logged on its own.
"""

from __future__ import annotations

import importlib
import importlib.util
import math
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from rlhfkit.errors import UserError

RewardFn = Callable[[list[Any], list[str]], Sequence[float]]


@dataclass
class RewardSource:
    name: str
    weight: float
    fn: RewardFn


def parse_spec(spec: str) -> tuple[str, float]:
    target, _, weight = spec.rpartition("@") if "@" in spec else (spec, "", "1")
    try:
        return target, float(weight)
    except ValueError:
        raise UserError(f"--reward {spec}: the weight after @ must be a number") from None


def load_callable(target: str) -> RewardFn:
    """``FILE.py:NAME`` or ``package.module:NAME`` -> the function."""
    where, _, name = target.rpartition(":")
    if where.endswith(".py"):
        path = Path(where)
        if not path.is_file():
            raise UserError(f"--reward {target}: {where} does not exist")
        name_in_sys = f"rlhfkit_reward_{path.stem}"
        spec = importlib.util.spec_from_file_location(name_in_sys, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name_in_sys] = module  # dataclasses and pickling look modules up here
        try:
            spec.loader.exec_module(module)
        except Exception as e:  # the user's file: say which and why, no traceback
            raise UserError(f"--reward {target}: importing {where} failed: {e}") from None
    else:
        try:
            module = importlib.import_module(where)
        except Exception as e:  # ImportError, or whatever the module raises on import
            raise UserError(f"--reward {target}: cannot import {where!r}: {e}") from None
    fn = getattr(module, name, None)
    if not callable(fn):
        raise UserError(f"--reward {target}: {where} has no function {name!r}")
    return fn


class RewardModelFn:
    """A reward model from `rlhfkit train rm` as a reward function (batched, no gradients)."""

    def __init__(self, folder: str, device: Any = "cpu", batch_size: int = 16):
        from rlhfkit.train.reward import load_reward_model, require_reward_model

        require_reward_model(folder, where="--reward ")
        self.model, self.tokenizer = load_reward_model(folder)
        self.model.to(device).eval()
        self.batch_size = batch_size

    @torch.no_grad()
    def __call__(self, prompts: list[Any], responses: list[str]) -> list[float]:
        from rlhfkit.train.reward import score_replies
        from rlhfkit.train.tokenize import Example, split_prompt_completion

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


def load_rewards(specs: list[str], device: Any = "cpu") -> list[RewardSource]:
    if not specs:
        raise UserError("give at least one --reward: a reward model folder or FILE.py:FUNCTION")
    sources = []
    for spec in specs:
        target, weight = parse_spec(spec)
        if ":" in target and not Path(target).exists():
            sources.append(RewardSource(target.rpartition(":")[2], weight, load_callable(target)))
        else:
            sources.append(
                RewardSource(Path(target).name or target, weight, RewardModelFn(target, device))
            )
    names = [s.name for s in sources]
    for i, name in enumerate(names):  # unique names for the logs
        if names.count(name) > 1:
            sources[i].name = f"{name}{i}"
    return sources


def total_reward(
    sources: list[RewardSource], prompts: list[Any], responses: list[str]
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Weighted sum over sources [B], and each source's raw rewards by name."""
    parts = {}
    for source in sources:
        try:
            values = [float(v) for v in source.fn(prompts, responses)]
        except UserError:
            raise
        except Exception as e:  # a user's reward function failed: say which, no traceback
            raise UserError(f"reward {source.name}: raised {type(e).__name__}: {e}") from None
        if len(values) != len(responses):
            raise UserError(
                f"reward {source.name}: returned {len(values)} values for {len(responses)} "
                "responses"
            )
        bad = next((i for i, v in enumerate(values) if not math.isfinite(v)), None)
        if bad is not None:
            raise UserError(f"reward {source.name}: returned {values[bad]} for response {bad}")
        parts[source.name] = torch.tensor(values)
    total = sum(s.weight * parts[s.name] for s in sources)
    return total, parts
