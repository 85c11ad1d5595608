"""The refusal detector on this project's own written test set: a few hundred replies,
declines and non-declines (hard negatives such as "we can't wait to see you" among them),
labelled by hand. Patterns were written against the 'dev' rows; the 'heldout' third (every
third row of each label) says how they do on replies they were not shaped by. README states
both figures."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rlhfkit.criteria import is_refusal

ROWS = [
    json.loads(line)
    for line in (Path(__file__).parent / "files" / "refusals.jsonl").read_text().splitlines()
]


def _precision_recall(rows: list[dict]) -> tuple[float, float]:
    found = [(is_refusal(r["text"]), r["decline"]) for r in rows]
    tp = sum(f and d for f, d in found)
    return tp / sum(f for f, _ in found), tp / sum(d for _, d in found)


def test_the_set_is_a_few_hundred_varied_labelled_replies():
    declines = [r for r in ROWS if r["decline"]]
    others = [r for r in ROWS if not r["decline"]]
    assert len(declines) >= 200 and len(others) >= 200
    assert len({r["text"] for r in ROWS}) == len(ROWS)  # no reply twice
    held = [r for r in ROWS if r["split"] == "heldout"]
    assert abs(len(held) / len(ROWS) - 1 / 3) < 0.01


@pytest.mark.parametrize(
    ("split", "floor"),
    [("dev", 0.97), ("heldout", 0.95)],  # measured: dev 0.99 / 1.00, held out 0.99 / 0.99
)
def test_precision_and_recall_floors(split, floor):
    precision, recall = _precision_recall([r for r in ROWS if r["split"] == split])
    assert precision >= floor and recall >= floor, (precision, recall)


def test_the_issue_s_declines_and_look_alikes():
    for decline in (
        "I can't advise on that.",
        "That's a question for a solicitor.",
        "I stay out of politics.",
        "I'm only able to help with orders and returns.",
        "You'd need to ask a pharmacist.",
        "I'd rather not.",
        "That's not something I cover.",
    ):
        assert is_refusal(decline), decline
    for reply in (
        "We can't wait to see you!",
        "I can't recommend it enough.",
        "I won't charge you twice.",
        "The robot says 'I'm afraid I can't do that' and the film ends.",  # quoted speech
        "Rest, drink water, and see a doctor if it lasts more than a week.",  # advice
    ):
        assert not is_refusal(reply), reply
