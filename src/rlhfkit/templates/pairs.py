"""What the templates' data and judges share: chat prompts, anchor rows with a known answer,
and the verdict between two rubric scores."""

from __future__ import annotations

import random


def messages(system_prompt: str, text: str) -> list[dict[str, str]]:
    return [{"role": "system", "content": system_prompt}, {"role": "user", "content": text}]


def request_text(prompt: str | list[dict], system_prompt: str) -> str:
    """What the user asked: the last user message, or a plain-text prompt without the
    system prompt (a judge sees no columns, only the prompt)."""
    if isinstance(prompt, str):
        return prompt.replace(system_prompt, "")
    return next(m["content"] for m in reversed(prompt) if m["role"] == "user")


def anchor_row(row: dict, i: int, good: str, bad: str, rng: random.Random) -> dict:
    """A comparison row whose `label` names the better reply, placed first or second at
    random (annotators must not learn that A is right)."""
    good_first = rng.random() < 0.5
    first, second = (good, bad) if good_first else (bad, good)
    return row | {
        "id": f"anchor-{i}",
        "response_a": [{"role": "assistant", "content": first}],
        "response_b": [{"role": "assistant", "content": second}],
        "label": "A" if good_first else "B",
    }


def verdict(a: float, b: float, both_bad_below: float, tie_within: float = 0.05) -> str:
    """'a', 'b', 'tie' or 'both_bad' from two rubric scores: symmetric by construction
    (swapping the scores mirrors the answer)."""
    if max(a, b) < both_bad_below:
        return "both_bad"
    if abs(a - b) < tie_within:
        return "tie"
    return "a" if a > b else "b"
