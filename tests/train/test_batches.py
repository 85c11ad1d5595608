"""The shared-prompt layout computes exactly what one row per completion computes, and a
prompt's group of compared replies what its pairs one by one compute."""

import pytest
import torch

from rlhfkit.models import tiny_model
from rlhfkit.train.batches import comparison_index, separate, sequence_numbers, shared_prompt
from rlhfkit.train.scoring import CompletionScorer, RewardScorer, rewards_of, sequence_logps
from rlhfkit.train.tokenize import Example, group_by_prompt

PAD = 2


def pairs() -> list[Example]:
    """Uneven prompts and completions, a completion ending in the pad id (as `<|im_end|>` does),
    and a one-token completion."""
    return [
        Example([5, 6, 7, 8, 9], ([10, 11, 12], [13, 14, 15, 16, 17, 18])),
        Example([20, 21], ([22], [23, 24, PAD])),
        Example([30, 31, 32, 33, 34, 35, 36, 37], ([38, 39, PAD, 40], [41, 42])),
    ]


def test_layouts_index_the_same_tokens():
    a, b = separate(pairs(), PAD), shared_prompt(pairs(), PAD)
    assert torch.equal(a.targets, b.targets) and torch.equal(a.seq_index, b.seq_index)
    assert a.n_scored.tolist() == b.n_scored.tolist() == [3, 1, 4, 6, 3, 2]
    assert b.input_ids.shape == (3, 14)  # 8 + 4 + 2: each prompt once
    assert a.tokens == 5 + 3 + 2 + 1 + 8 + 4 + 5 + 6 + 2 + 3 + 8 + 2
    assert b.tokens == 5 + 3 + 6 + 2 + 1 + 3 + 8 + 4 + 2


def test_a_completion_sees_its_prompt_and_itself_only():
    mask = shared_prompt(pairs(), PAD).attention_mask[1]  # prompt 2, chosen 1, rejected 3
    assert mask[2, :3].tolist() == [True, True, True]  # chosen token: prompt + itself
    assert mask[3].tolist()[:6] == [True, True, False, True, False, False]  # rejected skips chosen
    assert mask[5].tolist()[:6] == [True, True, False, True, True, True]
    assert mask[9].tolist() == [j == 9 for j in range(14)]  # padding sees itself only


@pytest.mark.parametrize("kernel", ["sdpa", "eager"])
def test_log_probs_and_their_gradients_match(kernel):
    model, _ = tiny_model(seed=0)
    model.config._attn_implementation = kernel
    scorer = CompletionScorer(model.eval())
    grads = []
    values = []
    for layout in (separate, shared_prompt):
        model.zero_grad()
        logps = sequence_logps(scorer, layout(pairs(), PAD))
        logps.sum().backward()
        values.append(logps.detach())
        grads.append(torch.cat([p.grad.flatten() for p in model.parameters()]))
    torch.testing.assert_close(values[0], values[1], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(grads[0], grads[1], atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("kernel", ["sdpa", "eager"])
def test_rewards_match_the_hf_sequence_classifier(kernel, tmp_path):
    from transformers import AutoModelForSequenceClassification

    base, _ = tiny_model(seed=0)
    base.save_pretrained(tmp_path)
    torch.manual_seed(1)
    model = AutoModelForSequenceClassification.from_pretrained(
        tmp_path, num_labels=1, attn_implementation=kernel
    ).eval()
    model.config.pad_token_id = PAD
    plain = separate(pairs(), PAD)
    with torch.no_grad():  # HF pools at the last non-pad token of each row
        expected = model(input_ids=plain.input_ids, attention_mask=plain.attention_mask).logits
        for layout in (separate, shared_prompt):
            got = rewards_of(RewardScorer(model), layout(pairs(), PAD))
            torch.testing.assert_close(got, expected.squeeze(-1), atol=1e-5, rtol=1e-5)


def k_wise() -> list[Example]:
    """Three replies to one prompt compared pairwise (one pair with a margin), a reply that
    ends in the pad id, and a lone pair with another prompt."""
    a, b, c = [10, 11, 12], [13, 14, PAD], [15]
    return [
        Example([5, 6, 7], (a, b), margin=0.5),
        Example([20, 21], ([22, 23], [24])),
        Example([5, 6, 7], (c, a)),
        Example([5, 6, 7], (b, c)),
    ]


def test_group_by_prompt_by_hand():
    first, second = group_by_prompt(k_wise())
    assert first.prompt == [5, 6, 7] and second.prompt == [20, 21]
    assert first.completions == ([10, 11, 12], [13, 14, PAD], [15])  # each reply once
    assert first.pairs == ((0, 1, 0.5), (2, 0, None), (1, 2, None))
    assert second.comparisons() == ((0, 1, None),)
    # completion-major numbering: each group's first reply, then each one's second, then
    # the third round, which only the three-reply group takes part in
    assert sequence_numbers([first, second]) == [[0, 2, 4], [1, 3]]
    chosen, rejected, margin = comparison_index([first, second])
    assert chosen.tolist() == [0, 4, 2, 1] and rejected.tolist() == [2, 0, 4, 3]
    assert margin.tolist() == [0.5, 0.0, 0.0, 0.0]


@pytest.mark.parametrize("layout", [separate, shared_prompt])
def test_grouped_pairs_get_the_rewards_and_loss_of_the_pairs_one_by_one(layout, tmp_path):
    """Invariance: a prompt's replies scored once in a group give every pair the rewards, the
    Bradley-Terry loss and the gradient that scoring the pairs one by one gives."""
    from transformers import AutoModelForSequenceClassification

    from rlhfkit.train.losses import reward_loss

    base, _ = tiny_model(seed=0)
    base.save_pretrained(tmp_path)
    torch.manual_seed(1)
    model = AutoModelForSequenceClassification.from_pretrained(tmp_path, num_labels=1)
    model.config.pad_token_id = PAD
    scorer = RewardScorer(model.eval())
    found = []
    for examples in (k_wise(), group_by_prompt(k_wise())):
        model.zero_grad()
        rewards = rewards_of(scorer, layout(examples, PAD))
        chosen_at, rejected_at, margin = comparison_index(examples)
        loss = reward_loss(rewards[chosen_at], rewards[rejected_at], margin)
        loss.backward()
        grad = torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])
        found.append((rewards[chosen_at].detach(), rewards[rejected_at].detach(), loss, grad))
    (c1, r1, l1, g1), (c2, r2, l2, g2) = found
    # the pairs come out in the same order: example by example, pair by pair
    order = [0, 2, 3, 1]  # the grouped batch lists the three-reply prompt's pairs first
    torch.testing.assert_close(c2, c1[order], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(r2, r1[order], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(l2, l1, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(g2, g1, atol=1e-5, rtol=1e-4)


def test_grouped_pairs_get_the_dpo_losses_of_the_pairs_one_by_one():
    from rlhfkit.train.losses import dpo_loss

    policy, _ = tiny_model(seed=0)
    reference, _ = tiny_model(seed=1)
    found = []
    for examples in (k_wise(), group_by_prompt(k_wise())):
        inputs = shared_prompt(examples, PAD)
        chosen_at, rejected_at, _ = comparison_index(examples)
        with torch.no_grad():
            pol = sequence_logps(CompletionScorer(policy.eval()), inputs)
            ref = sequence_logps(CompletionScorer(reference.eval()), inputs)
        losses, _, _ = dpo_loss(pol[chosen_at], pol[rejected_at], ref[chosen_at],
                                ref[rejected_at], beta=0.2, loss_type="ipo",
                                chosen_lengths=inputs.n_scored[chosen_at],
                                rejected_lengths=inputs.n_scored[rejected_at])  # fmt: skip
        found.append(losses)
    torch.testing.assert_close(found[1], found[0][[0, 2, 3, 1]], atol=1e-5, rtol=1e-5)
