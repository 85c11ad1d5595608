"""Format detection and every kind of bad row, one row at a time."""

import pytest

from rlhfkit.data import Format, Kind, RowError, check_row
from tests.conftest import messages

USER = messages(("user", "Where is my order?"))
ANSWER = messages(("assistant", "It ships today."))
OTHER = messages(("assistant", "No idea."))


@pytest.mark.parametrize(
    ("row", "kind"),
    [
        ({"text": "hello"}, Kind(Format.LANGUAGE_MODELING, False)),
        ({"messages": USER + ANSWER}, Kind(Format.LANGUAGE_MODELING, True)),
        ({"prompt": "Q:"}, Kind(Format.PROMPT_ONLY, False)),
        ({"prompt": USER}, Kind(Format.PROMPT_ONLY, True)),
        ({"prompt": "Q:", "completion": " A"}, Kind(Format.PROMPT_COMPLETION, False)),
        ({"prompt": USER, "completion": ANSWER}, Kind(Format.PROMPT_COMPLETION, True)),
        ({"prompt": "Q:", "chosen": " A", "rejected": " B"}, Kind(Format.PREFERENCE, False)),
        ({"prompt": USER, "chosen": ANSWER, "rejected": OTHER}, Kind(Format.PREFERENCE, True)),
        ({"chosen": "Q: A", "rejected": "Q: B"}, Kind(Format.PREFERENCE_IMPLICIT, False)),
        (
            {"chosen": USER + ANSWER, "rejected": USER + OTHER},
            Kind(Format.PREFERENCE_IMPLICIT, True),
        ),
        ({"prompt": "Q:", "response_a": "A", "response_b": "B"}, Kind(Format.COMPARISON, False)),
    ],
)
def test_detects_every_trl_format(row, kind):
    assert check_row(row) == kind


def test_extra_columns_pass_through():
    assert check_row({"prompt": "Q", "source": "web", "score": 3}).format is Format.PROMPT_ONLY


@pytest.mark.parametrize(
    ("row", "reason"),
    [
        ([1, 2], "must be a JSON object"),
        ({"question": "?"}, "cannot tell the format"),
        ({"prompt": "Q", "chosen": "A"}, "missing 'rejected'"),
        ({"prompt": "Q", "response_a": "A"}, "missing 'response_b'"),
        ({"prompt": "   "}, "'prompt' is empty"),
        ({"prompt": "Q", "completion": ""}, "'completion' is empty"),
        ({"prompt": 3}, "must be a string or a list of messages"),
        ({"prompt": []}, "empty list of messages"),
        ({"prompt": [{"role": "user", "content": ""}]}, "empty content"),
        ({"prompt": [{"role": "human", "content": "hi"}]}, "role 'human'"),
        ({"prompt": [{"content": "hi"}]}, "role None"),
        ({"prompt": [{"role": "user", "content": 5}]}, "needs 'content' as a string"),
        ({"prompt": ["hi"]}, "must be an object"),
        ({"prompt": USER, "completion": "text"}, "all text or all messages"),
        ({"prompt": USER + ANSWER}, "must end with the user's turn"),
        ({"prompt": USER, "completion": USER}, "assistant messages only"),
        ({"messages": USER}, "no assistant message"),
        ({"messages": USER + messages(("system", "x")) + ANSWER}, "system message after"),
        ({"prompt": "Q", "chosen": "same", "rejected": "same"}, "identical"),
        ({"prompt": "Q", "response_a": "same", "response_b": "same"}, "identical"),
        ({"chosen": "abc", "rejected": "xyz"}, "share no beginning"),
        ({"chosen": USER + ANSWER, "rejected": USER}, "must end with an assistant message"),
        ({"text": "hi", "messages": USER + ANSWER}, "not both"),
    ],
)
def test_bad_rows_say_why(row, reason):
    with pytest.raises(RowError, match=reason.replace("(", r"\(").replace(")", r"\)")):
        check_row(row)


def test_oversized_row():
    with pytest.raises(RowError, match="oversized: 21 characters"):
        check_row({"prompt": "x" * 10, "completion": "y" * 11}, max_chars=20)
    assert check_row({"prompt": "x" * 10, "completion": "y" * 10}, max_chars=20)


PAIR = {"prompt": "Q", "chosen": "A", "rejected": "B"}


@pytest.mark.parametrize(
    ("meta", "reason"),
    [
        ({"tie": "yes"}, "'tie' must be true or false"),
        ({"both_bad": 1}, "'both_bad' must be true or false"),
        ({"tie": True, "both_bad": True}, "both a tie and both-bad"),
        ({"annotator_ids": "ann1"}, "list of non-empty strings"),
        ({"annotator_ids": ["a", "a"]}, "twice"),
        ({"votes": ["chosen"]}, "'votes' must be an object"),
        ({"votes": {"a": "left"}}, "vote of 'a' is 'left'"),
        ({"annotator_ids": ["a", "b"], "votes": {"a": "chosen"}}, "different annotators"),
        ({"margin": "big"}, "finite number"),
        ({"margin": float("inf")}, "finite number"),
        ({"id": 1.5}, "'id' must be a string or an integer"),
    ],
)
def test_bad_metadata(meta, reason):
    with pytest.raises(RowError, match=reason):
        check_row({**PAIR, **meta})


def test_good_metadata():
    row = {
        **PAIR,
        "id": "x1",
        "annotator_ids": ["a", "b", "c"],
        "votes": {"a": "chosen", "b": "chosen", "c": "tie"},
        "tie": False,
        "both_bad": False,
        "rubric_version": "2",
        "margin": 0.5,
    }
    assert check_row(row).format is Format.PREFERENCE
