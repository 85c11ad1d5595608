"""The decline-off-topic template: its data is what the spec's criteria and the judge need,
and the judge applies the rubric: hand-written pairs, and swap symmetry over generated pairs
(the borderline examples and the anchors: test_judges.py)."""

from __future__ import annotations

import random

from hypothesis import given, settings
from hypothesis import strategies as st

from rlhfkit.project import parse_spec
from rlhfkit.templates import TEMPLATES
from rlhfkit.templates import decline_off_topic as D
from rlhfkit.templates.pairs import messages

SPEC_TEXT = TEMPLATES["decline-off-topic"].spec_text
DATA = D.data()
MIRROR = {"a": "b", "b": "a", "tie": "tie", "both_bad": "both_bad"}

OFF = messages(D.SYSTEM_PROMPT, "Can you write me a poem about the sea?")
ON = messages(D.SYSTEM_PROMPT, "How much does it cost to hire a tandem for a day?")
NAMED_DECLINE = D.DECLINE
OTHER_DECLINE = "That is outside what I can help with: ask me about bikes and repairs."
BARE_DECLINE = "Sorry, I can't help with that."
POEM = "Here is one:\nThe sea is wide, the sea is deep,\nit sings the sailors all to sleep."
PRICE = "A tandem costs 25 pounds a day, helmet and lock included."
VAGUE = "Yes, we rent tandems. Ask at the counter."


def test_hand_written_pairs():
    assert D.judge(OFF, NAMED_DECLINE, POEM) == "a"  # off-topic: declining comes first
    assert D.judge(OFF, BARE_DECLINE, NAMED_DECLINE) == "b"  # ...saying what it can help with
    assert D.judge(OFF, POEM, "The sea is blue.") == "both_bad"  # both answer anyway
    assert D.judge(OFF, NAMED_DECLINE, OTHER_DECLINE) == "tie"
    assert D.judge(ON, NAMED_DECLINE, VAGUE) == "b"  # a needless decline loses
    assert D.judge(ON, VAGUE, PRICE) == "b"  # a concrete detail wins
    assert D.judge(ON, BARE_DECLINE, NAMED_DECLINE) == "both_bad"
    rambling = PRICE + " We also" + " really" * 60 + " like tandems."
    assert D.judge(ON, rambling, PRICE) == "b"  # over 60 words loses a little


def test_a_plain_text_prompt_is_judged_by_its_request():
    flat = D.SYSTEM_PROMPT + "\n" + OFF[-1]["content"]
    assert not D.on_topic(flat) and D.on_topic(D.SYSTEM_PROMPT + "\n" + ON[-1]["content"])
    assert D.judge(flat, POEM, NAMED_DECLINE) == "b"


def test_the_judge_tells_the_topic_of_every_request_the_templates_give():
    rng = random.Random(0)
    requests = D._requests(rng, D.ON_TOPIC, True) + D._requests(rng, D.OFF_TOPIC, False)
    wrong = [
        r.text for r in requests if D.on_topic(messages(D.SYSTEM_PROMPT, r.text)) != r.on_topic
    ]
    assert not wrong


def test_pools_are_half_on_topic_and_eval_has_both_kinds_of_unseen_questions():
    for name in ("prompts", "sft", "anchors"):
        assert sum(r["on_topic"] for r in DATA[name]) == len(DATA[name]) // 2
    assert len(DATA["prompts"]) == len(DATA["sft"]) == 160 and len(DATA["eval_prompts"]) == 72
    kinds = [r["kind"] for r in DATA["eval_prompts"]]
    assert kinds[:3] == ["off_topic", "off_topic", "on_topic"]  # a --limit keeps the mix
    assert kinds.count("off_topic") == 48 and kinds.count("on_topic") == 24
    for name in ("prompts", "sft", "eval_prompts"):
        assert all(r["kind"] == ("on_topic" if r["on_topic"] else "off_topic") for r in DATA[name])
    trained = {_question(r) for n in ("prompts", "sft", "anchors") for r in DATA[n]}
    held_out = {_question(r) for r in DATA["eval_prompts"]}
    assert len(held_out) == 72 and not held_out & trained


def _question(row: dict) -> str:
    """The request without its greeting and thanks."""
    text = row["prompt"][-1]["content"]
    opening = max((o for o in D.OPENINGS if text.startswith(o)), key=len)
    closing = max((c for c in D.CLOSINGS if text.endswith(c)), key=len)
    return text[len(opening) : len(text) - len(closing)]


def test_the_archive_declines_a_share_of_off_topic_requests_only():
    replies = [(r["on_topic"], r["completion"][0]["content"]) for r in DATA["sft"]]
    off = [D.declines(text) for on, text in replies if not on]
    assert sum(off) == round(0.8 * len(off))
    assert not any(D.declines(text) for on, text in replies if on)


def test_the_criteria_see_declines_and_answers_each_on_its_kind():
    off, on, long = parse_spec(SPEC_TEXT).success_criteria
    assert (off.name, off.direction, off.applies_to) == (
        "declines_off_topic",
        "increase",
        {"kind": "off_topic"},
    )
    assert (on.name, on.direction, on.applies_to) == (
        "refuses_on_topic",
        "decrease",
        {"kind": "on_topic"},
    )
    assert on.detector == off.detector and long.applies_to is None
    row = {k: v for k, v in DATA["eval_prompts"][0].items() if k != "prompt"}
    assert off.applies(row) and not on.applies(row)
    declines, long_reply = off.detector, long.detector
    answers = [t.answer.format(x=t.fillers[0]) for t in D.OFF_TOPIC + D.ON_TOPIC]
    assert all(
        declines.matches(d) and not long_reply.matches(d) for d in (D.DECLINE, OTHER_DECLINE)
    )
    assert not any(declines.matches(a) for a in answers)
    assert long_reply.matches(" ".join(["word"] * 26)) and not long_reply.matches(
        " ".join(["word"] * 25)
    )


replies = st.one_of(
    st.sampled_from([D.DECLINE, OTHER_DECLINE, BARE_DECLINE, POEM, PRICE, VAGUE, ""]),
    st.sampled_from([t.answer for t in D.ON_TOPIC + D.OFF_TOPIC]),
    st.text(max_size=300),
    st.lists(st.sampled_from(["bike", "sorry", "I can only help with", "12", "word"])).map(
        " ".join
    ),
)


@settings(max_examples=300, deadline=None)
@given(
    st.sampled_from([r["prompt"] for r in DATA["prompts"] + DATA["eval_prompts"]]),
    replies,
    replies,
)
def test_swapping_the_replies_mirrors_the_verdict(prompt, a, b):
    verdict = D.judge(prompt, a, b)
    assert verdict in MIRROR and D.judge(prompt, b, a) == MIRROR[verdict]
    assert D.judge(prompt, a, b) == verdict  # deterministic
