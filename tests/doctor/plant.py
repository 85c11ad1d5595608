"""Hand-built run files for the doctor's tests: candidate pairs as `generate` writes them,
labels as the export writes them, a status.json gate, criteria as the spec holds them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rlhfkit.criteria import SuccessCriterion
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


def candidates(path: Path, prompts: list[tuple[str, list[str]]]) -> Path:
    """Pairs of each prompt's replies as `generate` writes them with all_pairs and
    start_samples = 1 (two identical replies make no pair): `prompts` [(kind, [sft reply,
    sft reply, start reply])]."""
    rows = []
    models = ["run/sft/final", "run/sft/final", "tiny-random"]
    for p, (kind, replies) in enumerate(prompts):
        for a, b in ((0, 1), (0, 2), (1, 2)):
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
