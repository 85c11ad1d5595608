"""The one sampler: seeded replies to text and chat prompts, and one seed rule."""

from rlhfkit.train.rollout import Sampling, batch_seed, group_replies, sample_replies
from tests.conftest import messages

PROMPTS = [messages(("user", f"Question number {i}?")) for i in range(2)]


def test_batch_seed_is_the_one_formula():
    assert batch_seed(0, 3) == 3
    assert batch_seed(7, 2) == 7 * 1_000_003 + 2
    assert batch_seed(2**62, 1) == (2**62 * 1_000_003 + 1) % 2**63  # stays a valid seed


def test_same_seed_same_samples(tiny):
    model, tok = tiny
    sampling = Sampling(k=3, max_new_tokens=8, temperature=0.9, top_p=0.95)
    first = sample_replies(model, tok, PROMPTS, sampling, batch_seed(7, 0))
    assert [len(g) for g in first.texts] == [3, 3]
    again = sample_replies(model, tok, PROMPTS, sampling, batch_seed(7, 0))
    assert (again.texts, again.finished) == (first.texts, first.finished)
    other = sample_replies(model, tok, PROMPTS, sampling, batch_seed(8, 0))
    assert (other.texts, other.finished) != (first.texts, first.finished)


def test_text_prompts_keep_the_leading_space(tiny):
    # TRL joins a text prompt and its completion as they are: " blue" must stay " blue".
    model, tok = tiny
    sampling = Sampling(k=8, max_new_tokens=3, temperature=0.9, top_p=0.95)
    replies = sample_replies(model, tok, ["The sky is"], sampling, batch_seed(1, 0))
    as_text = replies.texts[0]
    assert as_text == group_replies(replies.rollout, 8, [False]).texts[0]
    assert sum(t.startswith(" ") for t in as_text) >= 2
    as_chat = group_replies(replies.rollout, 8, [True]).texts[0]
    assert as_chat == [t.strip() for t in as_text]


def test_replies_count_their_tokens_and_say_which_ended(tiny):
    model, tok = tiny
    replies = sample_replies(model, tok, PROMPTS, Sampling(2, 6, 1.0, 1.0), seed=3)
    r = replies.rollout
    assert [t for g in replies.tokens for t in g] == r.response_mask.sum(dim=1).long().tolist()
    assert [f for g in replies.finished for f in g] == r.finished.tolist()
    for g, tokens in zip(replies.finished, replies.tokens, strict=True):
        for finished, n in zip(g, tokens, strict=True):
            assert finished or n == 6  # a reply without EOS ran to max_new_tokens
