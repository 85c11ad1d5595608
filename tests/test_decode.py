"""The decoder: greedy decoding token for token what `generate` gives, top-p keeping exactly
what transformers' warper keeps, draws in proportion to their weights, seeds that hold."""

import pytest
import torch

from rlhfkit.decode import FIRST_LOOK, decode, draw, inverse_cdf, next_tokens, nucleus
from rlhfkit.train.rollout import left_pad


def test_nucleus_by_hand():
    probs = torch.tensor([[0.05, 0.5, 0.15, 0.3]])
    ids, weights = nucleus(probs, 0.8)
    # 0.5 and 0.3 reach 0.8; the mass above 0.15 is already 0.8, so it is left out
    assert ids[0, :2].tolist() == [1, 3]
    torch.testing.assert_close(weights[0, :2], torch.tensor([0.5, 0.3]))
    assert weights[0, 2:].sum() == 0
    ids, weights = nucleus(torch.tensor([[0.9, 0.05, 0.05]]), 0.5)
    assert (weights[0] > 0).tolist() == [True, False, False]  # one token always stays


@pytest.mark.parametrize("sharpness", [0.1, 1.0, 4.0])
def test_nucleus_keeps_what_transformers_top_p_keeps(sharpness):
    from transformers.generation.logits_process import TopPLogitsWarper

    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(16, 3000, generator=gen) * sharpness
    # a nearly flat row (no ties: tied tokens may be kept in either order): its nucleus is
    # far wider than the first look
    logits[0] = torch.randperm(3000, generator=gen) * 1e-4
    probs = logits.softmax(-1)
    ids, weights = nucleus(probs, 0.9)
    assert ids.shape[1] > FIRST_LOOK  # the wide rows took the full sort
    # narrow rows are padded to the wide rows' width with weight 0 (on token 0)
    kept = torch.zeros_like(probs).scatter_add_(1, ids, (weights > 0).float()) > 0
    warped = TopPLogitsWarper(0.9)(None, logits.clone())
    reference = warped > -float("inf")
    # the same tokens, but where the mass above a token is top_p to float rounding (the
    # warper sums the tail in ascending order, this the head in descending order)
    ordered, order = probs.sort(-1, descending=True)
    mass_above = torch.zeros_like(probs).scatter_(1, order, ordered.cumsum(-1) - ordered)
    differ = kept != reference
    assert differ.sum(-1).max() <= 1, differ.sum(-1)
    assert ((mass_above[differ] - 0.9).abs() < 1e-5).all(), mass_above[differ]


def test_draws_follow_the_weights():
    gen = torch.Generator().manual_seed(1)
    weights = torch.tensor([[0.0, 0.5, 0.3, 0.2, 0.0]]).repeat(40_000, 1)
    picked = draw(weights, gen)
    freq = torch.bincount(picked, minlength=5).float() / len(picked)
    assert freq[0] == 0 and freq[4] == 0  # weight 0 is never drawn
    torch.testing.assert_close(freq, weights[0], atol=0.01, rtol=0)


def test_inverse_cdf_by_hand():
    weights = torch.tensor([[0.0, 0.25, 0.0, 0.75, 0.0]]).repeat(4, 1)
    u = torch.tensor([[0.0], [0.2], [0.25], [1.0]])
    # 0 -> the first token with weight; 0.25 is where token 3 begins; a u that rounds up to
    # the total still lands on the last token with weight
    assert inverse_cdf(weights, u).tolist() == [1, 1, 3, 3]


def test_sampled_tokens_come_from_the_nucleus_in_proportion():
    gen = torch.Generator().manual_seed(2)
    logits = torch.tensor([[2.0, 1.0, 0.5, -1.0, -3.0]]).repeat(40_000, 1)
    tokens, logps = next_tokens(logits, temperature=0.7, top_p=0.8, generator=gen)
    probs = (logits[0] / 0.7).softmax(-1)
    torch.testing.assert_close(logps[0].exp(), probs)  # before top-p
    ids, weights = nucleus(probs[None], 0.8)
    expected = torch.zeros(5).scatter_(0, ids[0], weights[0] / weights[0].sum())
    freq = torch.bincount(tokens, minlength=5).float() / len(tokens)
    torch.testing.assert_close(freq, expected, atol=0.01, rtol=0)
    assert expected[3] == 0 and expected[4] == 0


def _prompts(tok):
    # different lengths, so the batch is left-padded
    return [tok(f"Order {i} is {'very ' * i}late because")["input_ids"] for i in range(3)]


@pytest.mark.slow
def test_greedy_decoding_is_generate_token_for_token(tiny):
    """The cache, the positions under left padding and the stop at EOS all agree with
    transformers' own generate, with an EOS the tiny model actually emits."""
    model, tok = tiny
    x, mask = left_pad(_prompts(tok), tok.pad_token_id)
    probe = model.generate(input_ids=x, attention_mask=mask, do_sample=False, max_new_tokens=12,
                           pad_token_id=tok.pad_token_id)  # fmt: skip
    eos = int(probe[1, x.shape[1] + 3])  # a token row 1 emits after three others
    want = model.generate(input_ids=x, attention_mask=mask, do_sample=False, max_new_tokens=12,
                          pad_token_id=tok.pad_token_id, eos_token_id=eos)  # fmt: skip
    got = decode(model, x, mask, k=2, max_new_tokens=12, temperature=0, top_p=1.0,
                 eos_id=eos, pad_id=tok.pad_token_id, seed=0)  # fmt: skip
    # k copies of each prompt share its prefill: each copy decodes what generate does
    assert torch.equal(got.tokens, want[:, x.shape[1] :].repeat_interleave(2, dim=0))
    assert (got.tokens == eos).any()  # the stop was exercised


@pytest.mark.slow
def test_a_seed_gives_the_same_samples_whatever_the_global_random_state(tiny):
    model, tok = tiny
    x, mask = left_pad(_prompts(tok), tok.pad_token_id)
    run = dict(k=3, max_new_tokens=8, temperature=1.0, top_p=0.9, eos_id=tok.eos_token_id,
               pad_id=tok.pad_token_id)  # fmt: skip
    torch.manual_seed(0)
    first = decode(model, x, mask, seed=4, **run).tokens
    torch.manual_seed(123)
    assert torch.equal(decode(model, x, mask, seed=4, **run).tokens, first)
    assert not torch.equal(decode(model, x, mask, seed=5, **run).tokens, first)


def test_greedy_has_no_log_probs(tiny):
    model, tok = tiny
    x, mask = left_pad(_prompts(tok), tok.pad_token_id)
    with pytest.raises(ValueError, match="greedy"):
        decode(model, x, mask, k=1, max_new_tokens=2, temperature=0, top_p=1.0, eos_id=0,
               pad_id=0, seed=0, logprobs=True)  # fmt: skip
