"""The shared-prompt layout computes exactly what one row per completion computes."""

import pytest
import torch

from rlhfkit.models import tiny_model
from rlhfkit.train.batches import separate, shared_prompt
from rlhfkit.train.scoring import CompletionScorer, RewardScorer, rewards_of, sequence_logps
from rlhfkit.train.tokenize import Example

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
