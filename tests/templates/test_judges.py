"""Every template's judge agrees with the team: its spec's borderline examples, in both
orders, and every anchor's known answer."""

from __future__ import annotations

import tomllib

import pytest

from rlhfkit.templates import TEMPLATES

MIRROR = {"a": "b", "b": "a", "tie": "tie", "both_bad": "both_bad"}
JUDGED = ["memo-format", "decline-off-topic"]


@pytest.mark.parametrize("name", JUDGED)
def test_borderline_examples_come_out_as_the_team_agreed(name):
    template = TEMPLATES[name]
    for ex in tomllib.loads(template.spec_text)["rubric"]["borderline_examples"]:
        judged = template.module.judge(ex["prompt"], ex["response_a"], ex["response_b"])
        swapped = template.module.judge(ex["prompt"], ex["response_b"], ex["response_a"])
        assert (judged, swapped) == (ex["preferred"], MIRROR[ex["preferred"]]), ex["why"]


@pytest.mark.parametrize("name", JUDGED)
def test_the_judge_agrees_with_every_anchor(name):
    module = TEMPLATES[name].module
    for row in module.data()["anchors"]:
        a, b = row["response_a"][0]["content"], row["response_b"][0]["content"]
        assert module.judge(row["prompt"], a, b) == row["label"].lower()
