"""The one sampler: seeded replies to text and chat prompts, one seed rule, and one
tokenisation of prompts for candidates, PPO and evaluation."""

import pytest
import torch
from tokenizers.processors import TemplateProcessing

from rlhfkit.evaluate.sampling import SamplePlan, sample_model
from rlhfkit.generate import SamplingConfig, generate_candidates
from rlhfkit.models import tiny_model
from rlhfkit.train import rollout
from rlhfkit.train.rollout import Sampling, batch_seed, group_replies, sample_replies
from rlhfkit.train.tokenize import prompt_ids
from tests.conftest import messages, run_cli, write_lines

PROMPTS = [messages(("user", f"Question number {i}?")) for i in range(2)]


def test_batch_seed_is_the_one_formula():
    assert batch_seed(0, 3) == 3
    assert batch_seed(7, 2) == 7 * 1_000_003 + 2
    assert batch_seed(2**62, 1) == (2**62 * 1_000_003 + 1) % 2**63  # stays a valid seed


@pytest.mark.slow
def test_same_seed_same_samples(tiny):
    model, tok = tiny
    sampling = Sampling(k=3, max_new_tokens=8, temperature=0.9, top_p=0.95)
    first = sample_replies(model, tok, PROMPTS, sampling, batch_seed(7, 0))
    assert [len(g) for g in first.texts] == [3, 3]
    again = sample_replies(model, tok, PROMPTS, sampling, batch_seed(7, 0))
    assert (again.texts, again.finished) == (first.texts, first.finished)
    other = sample_replies(model, tok, PROMPTS, sampling, batch_seed(8, 0))
    assert (other.texts, other.finished) != (first.texts, first.finished)


@pytest.mark.slow
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


@pytest.fixture(scope="module")
def bos_model(tmp_path_factory):
    """The tiny model with a tokenizer that starts every encoded text with a BOS token, as
    Llama's and Gemma's do (SmolLM2's, which the tiny model has, adds none)."""
    model, tok = tiny_model()
    bos = "<|endoftext|>"
    tok.backend_tokenizer.post_processor = TemplateProcessing(
        single=f"{bos} $A", special_tokens=[(bos, tok.convert_tokens_to_ids(bos))]
    )
    folder = tmp_path_factory.mktemp("bos") / "model"
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder, tok, tok.convert_tokens_to_ids(bos)


@pytest.mark.parametrize("chat", [False, True], ids=["text", "chat"])
@pytest.mark.slow
def test_candidates_ppo_and_evaluation_tokenise_prompts_alike(bos_model, tmp_path, monkeypatch,
                                                              chat):  # fmt: skip
    """With a tokenizer that adds a BOS token, the three samplers continue the same ids: a
    text prompt after one BOS (as training's text examples begin), a conversation as its
    template writes it (no BOS added on top)."""
    folder, tok, bos = bos_model
    prompts = PROMPTS if chat else ["The sky is", "Order 1 is late because"]
    expected = [prompt_ids(tok, p) for p in prompts]
    for ids, p in zip(expected, prompts, strict=True):
        if chat:
            text = tok.apply_chat_template(p, tokenize=False, add_generation_prompt=True)
            assert ids == tok(text, add_special_tokens=False)["input_ids"] and bos not in ids
        else:
            assert ids == [bos, *tok(p, add_special_tokens=False)["input_ids"]]
    seen = []
    decode = rollout.decode

    def spy(model, input_ids, attention_mask, **kw):
        rows = zip(input_ids, attention_mask, strict=True)
        seen.append(sorted(row[mask.bool()].tolist() for row, mask in rows))
        return decode(model, input_ids, attention_mask, **kw)

    monkeypatch.setattr(rollout, "decode", spy)
    data = write_lines(tmp_path / "prompts.jsonl", [{"prompt": p} for p in prompts])
    # candidates
    generate_candidates(str(folder), data, tmp_path / "c.jsonl",
                        SamplingConfig(n=2, max_new_tokens=2, precision="fp32"))  # fmt: skip
    # evaluation
    sample_model(str(folder), prompts, SamplePlan(Sampling(1, 2, 1.0, 1.0), seed=0, batch_size=8))
    # PPO: one step over both prompts
    rules = tmp_path / "rules.py"
    rules.write_text("def zero(prompts, responses):\n    return [0.0] * len(responses)\n")
    result = run_cli("train", "ppo", "--model", str(folder), "--data", str(data),
                     "--output-dir", str(tmp_path / "ppo"), "--reward", f"{rules}:zero",
                     "--precision", "fp32", "--batch-size", "2", "--max-new-tokens", "2",
                     "--max-steps", "1", "--save-every", "0", "--no-lora")  # fmt: skip
    assert result.code == 0, result.stderr
    assert seen == [sorted(expected)] * 3  # candidates, evaluation, PPO


@pytest.mark.slow  # rollouts of the PPO tests' tiny policy
def test_log_probs_are_those_of_the_distribution_sampled_from(setup):
    """At temperature 0.7 the sampler's log-probs and entropies of its own samples are those
    of a plain forward pass over the finished sequences, and of the trainer's scoring."""
    from rlhfkit.decode import entropy
    from rlhfkit.models import load_model
    from rlhfkit.train.ppo import ActorCritic, _call
    from rlhfkit.train.rollout import rollout_batch, sample_rollout, to_padded

    root, _ = setup
    model, tok = load_model(str(root / "model"))
    ids = [tok(f"Order {i} is {'very ' * i}late because")["input_ids"] for i in range(3)]
    rollout = sample_rollout(model, tok, ids, 2, 6, 0.7, 1.0, seed=5, logprobs=True)
    # the reference: one forward over prompt + response, no cache, logits at temperature
    x, mask = rollout.input_ids, rollout.attention_mask
    with torch.no_grad():
        logits = model(input_ids=x, attention_mask=mask,
                       position_ids=(mask.cumsum(1) - 1).clamp(min=0)).logits / 0.7
    p = rollout.prompt_width
    step_logits = logits[:, p - 1 : -1]  # position t predicts response token t
    expected = step_logits.log_softmax(-1).gather(-1, x[:, p:, None]).squeeze(-1)
    expected = expected * rollout.response_mask
    torch.testing.assert_close(rollout.logps, expected, atol=1e-5, rtol=1e-5)
    expected_entropy = entropy(step_logits.float().log_softmax(-1)) * rollout.response_mask
    torch.testing.assert_close(rollout.entropy, expected_entropy, atol=1e-4, rtol=1e-4)
    with torch.no_grad():
        scored, _, _ = _call(ActorCritic(model, 0.7, value_head=False), rollout_batch(rollout))
    torch.testing.assert_close(to_padded(scored, rollout.response_mask), expected,
                               atol=1e-5, rtol=1e-5)
    # asking for log-probs changes nothing about what is sampled
    plain = sample_rollout(model, tok, ids, 2, 6, 0.7, 1.0, seed=5)
    assert torch.equal(plain.input_ids, rollout.input_ids)


@pytest.mark.slow  # rollouts of the PPO tests' tiny policy
def test_merged_copy_samples_what_the_adapter_wrapped_policy_would(setup):
    import copy

    from rlhfkit.models import load_model
    from rlhfkit.train.configs import PPOConfig
    from rlhfkit.train.loop import prepare_model
    from rlhfkit.train.rollout import MergedCopy, sample_rollout

    root, _ = setup
    model, tok = load_model(str(root / "model"))
    merged = MergedCopy(copy.deepcopy(model))
    policy = prepare_model(model, PPOConfig(lora=True))
    with torch.no_grad():  # a trained adapter: B is no longer zero
        for name, p in policy.named_parameters():
            if "lora_B" in name:
                p.normal_(0.0, 0.05, generator=torch.Generator().manual_seed(len(name)))
    ids = tok(["Order 1 is late because", "Order 22 is"], return_tensors="pt", padding=True,
              padding_side="left")
    policy.eval()
    with torch.no_grad():
        want = policy(**ids).logits
        got = merged.refresh(policy)(**ids).logits
        with policy.disable_adapter():
            base = policy(**ids).logits
    assert (want - base).abs().max() > 1e-3  # the adapter matters
    torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)
    prompts = [tok("Order 1 is late because")["input_ids"]]
    a = sample_rollout(policy, tok, prompts, 2, 8, 1.0, 1.0, seed=3)
    b = sample_rollout(merged.refresh(policy), tok, prompts, 2, 8, 1.0, 1.0, seed=3)
    assert a.texts == b.texts


@pytest.mark.slow  # rollouts of the PPO tests' tiny policy
def test_k_samples_share_one_prefill_and_sample_what_k_copies_of_the_prompt_would(setup):
    """sample_rollout runs each prompt once and copies its cache k times; the samples are the
    ones drawn when every copy of the prompt is computed on its own."""
    from rlhfkit.models import load_model
    from rlhfkit.train.rollout import sample_rollout

    root, _ = setup
    model, tok = load_model(str(root / "model"))
    ids = [tok(f"Order {i} is {'very ' * i}late because")["input_ids"] for i in range(3)]
    rollout = sample_rollout(model, tok, ids, 4, 8, 0.8, 1.0, seed=11)
    copies = sample_rollout(model, tok, [p for p in ids for _ in range(4)], 1, 8, 0.8, 1.0,
                            seed=11)
    assert torch.equal(rollout.input_ids, copies.input_ids)
    assert rollout.texts == copies.texts
    assert rollout.prompt_index.tolist() == [0] * 4 + [1] * 4 + [2] * 4
