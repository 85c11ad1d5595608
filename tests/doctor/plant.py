"""Hand-built run files for the doctor's tests: candidate pairs as `generate` writes them,
labels as the export writes them, a status.json gate, criteria as the spec holds them."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

from rlhfkit.criteria import SuccessCriterion
from rlhfkit.lineage import write_manifest
from tests.conftest import write_lines

DECLINE = "I can't help with that: I only answer questions about books"
"""A decline; sampled replies differ, so the tests add a number to each."""
ANSWER = "Here is a short answer about the topic you asked about, with one example."

DECLINES = SuccessCriterion.model_validate(
    {
        "name": "declines",
        "description": "Declines off-topic requests.",
        "direction": "increase",
        "detector": {"kind": "refusal"},
        "applies_to": {"kind": "off_topic"},
    }
)


SFT, START = "run/sft/final", "tiny-random"


def candidates(
    path: Path, prompts: list[tuple[str, list[str]]], n: int = 2, all_pairs: bool = True
) -> Path:
    """Pairs of each prompt's replies as `generate` writes them (two identical replies make
    no pair), with its manifest: `prompts` [(kind, [the trained model's `n` replies, then the
    starting model's])], every pair of them or (not `all_pairs`) 1-2, 3-4, ..."""
    rows = []
    for p, (kind, replies) in enumerate(prompts):
        models = [SFT] * n + [START] * (len(replies) - n)
        k = range(len(replies))
        pairs = itertools.combinations(k, 2) if all_pairs else zip(k[::2], k[1::2], strict=False)
        for a, b in pairs:
            if replies[a] == replies[b]:
                continue
            rows.append(
                {
                    "kind": kind,
                    "models": [models[a], models[b]],
                    "pairing": "same model" if models[a] == models[b] else "across models",
                    "id": f"p{p:05d}-{a}-{b}",
                    "prompt": f"Question {p} ({kind})?",
                    "response_a": replies[a],
                    "response_b": replies[b],
                    "truncated": [False, False],
                    "source_row": p + 1,
                }
            )
    compare_n = max((len(r) - n for _, r in prompts), default=1)
    config = {"model": SFT, "n": n, "compare_with": START, "compare_n": compare_n,
              "all_pairs": all_pairs}  # fmt: skip
    write_manifest(path, kind="candidates", inputs={}, config=config)
    return write_lines(path, rows)


def labels(path: Path, rows: list[tuple[str, str, str]], phase: str = "main") -> Path:
    """labels.jsonl rows (item, annotator, label) as the export writes them."""
    return write_lines(
        path,
        [
            {"item": i, "annotator": a, "label": v, "phase": phase, "anchor": False}
            for i, a, v in rows
        ],
    )


def verdicts(checks: list[Any]) -> dict[str, str]:
    return {c.name: c.verdict for c in checks}


def names_the_number(prompt: str, response: str) -> bool:
    """A `callable` detector that reads the prompt: the reply names the question's number
    (the prompts are "Question <number> (<kind>)?")."""
    return prompt.split()[1] in response.split()
