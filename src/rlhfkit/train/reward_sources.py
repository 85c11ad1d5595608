"""Where stage 3's rewards come from: a trained reward model, a Python function, or several.

`--reward` takes one or more specs, each optionally weighted with ``@WEIGHT``:

- a reward model folder made by `rlhfkit train rm` (``runs/rm/final``); it tokenizes prompt
  and response with its own tokenizer, so it may differ from the policy's;
- a function ``FILE.py:NAME`` or ``package.module:NAME`` with the signature
  ``reward(prompts: list, responses: list[str]) -> list[float]`` (rule-based rewards).

The total reward is the weighted sum; every part is logged on its own.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from rlhfkit.callables import load_callable
from rlhfkit.errors import UserError
from rlhfkit.train.reward_model import RewardFn, RewardModelFn


@dataclass
class RewardSource:
    name: str
    weight: float
    fn: RewardFn


def parse_reward_spec(spec: str) -> tuple[str, float]:
    target, _, weight = spec.rpartition("@") if "@" in spec else (spec, "", "1")
    try:
        return target, float(weight)
    except ValueError:
        raise UserError(f"--reward {spec}: the weight after @ must be a number") from None


def load_rewards(specs: list[str], device: Any = "cpu") -> list[RewardSource]:
    if not specs:
        raise UserError("give at least one --reward: a reward model folder or FILE.py:FUNCTION")
    sources = []
    for spec in specs:
        target, weight = parse_reward_spec(spec)
        if ":" in target and not Path(target).exists():
            fn = load_callable(target, f"--reward {target}")
            sources.append(RewardSource(target.rpartition(":")[2], weight, fn))
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
