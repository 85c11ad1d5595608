"""The memo-format template: the archive mixes the house format with loose emails, and the
judge applies the rubric: hand-written pairs, and swap symmetry over generated pairs (the
borderline examples and the anchors: test_judges.py)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from rlhfkit.project import parse_spec
from rlhfkit.templates import TEMPLATES
from rlhfkit.templates import memo_format as M
from rlhfkit.templates.pairs import messages

SPEC_TEXT = TEMPLATES["memo-format"].spec_text
DATA = M.data()
MIRROR = {"a": "b", "b": "a", "tie": "tie", "both_bad": "both_bad"}
MEMO = M.Memo(M.SUBJECTS[2], "All staff", "Facilities", "2 May", "")
PROMPT = messages(
    M.SYSTEM_PROMPT, "Write a memo to all staff saying that there is a fire drill on 2 May."
)


def test_hand_written_pairs():
    house, loose = M.house_memo(MEMO), M.loose_memo(MEMO, padded=False)
    padded = M.loose_memo(MEMO, padded=True)
    assert M.score(PROMPT, house) == 1.0
    assert M.judge(PROMPT, house, loose) == "a"
    assert M.judge(PROMPT, padded, loose) == "b"  # over 80 words loses
    no_summary = house.replace("Summary: ", "")
    assert M.judge(PROMPT, no_summary, house) == "b"
    assert M.judge(PROMPT, house, house + "\n") == "tie"
    assert M.judge(PROMPT, "Sure!", "I cannot do that.") == "both_bad"


def test_the_archive_is_mixed_and_the_criteria_see_it():
    house_format, long_memo = (c.detector for c in parse_spec(SPEC_TEXT).success_criteria)
    replies = [r["completion"][0]["content"] for r in DATA["sft"]]
    share = lambda hit: sum(map(hit, replies)) / len(replies)  # noqa: E731
    assert 0.3 < share(house_format.matches) < 0.5
    assert 0.1 < share(long_memo.matches) < 0.3
    assert not any(long_memo.matches(r) for r in replies if house_format.matches(r))


replies = st.one_of(
    st.sampled_from([r["completion"][0]["content"] for r in DATA["sft"][:20]]),
    st.text(max_size=300),
    st.lists(
        st.sampled_from(["To: x", "From: y", "Subject: z", "Date: d", "Summary: s", "drill"])
    ).map("\n".join),
)


@settings(max_examples=300, deadline=None)
@given(st.sampled_from([r["prompt"] for r in DATA["prompts"]]), replies, replies)
def test_swapping_the_replies_mirrors_the_verdict(prompt, a, b):
    verdict = M.judge(prompt, a, b)
    assert verdict in MIRROR and M.judge(prompt, b, a) == MIRROR[verdict]
