"""The one sampler: stage 3's rollouts, candidate pairs (`rlhfkit.generate`) and `eval policy`
all sample here, and lay what they sampled out for scoring.

Sampling is `rlhfkit.decode` (KV cache, stop at EOS) on a fresh generator per batch, seeded
by one rule (`batch_seed`), so a resumed run samples exactly what the uninterrupted one did.
Prompts are tokenised by one rule too (`prompt_ids`). The result is a `Rollout` — left-padded
prompts followed by right-padded responses — and `rollout_batch` turns it into the same
`Batch` the other trainers score, so the policy, reference and critic all read log-probs and
values at the response positions only. `sample_replies` is the same sampling from prompts as
the data files hold them (texts or conversations), read back as each prompt's reply texts.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from rlhfkit.decode import decode
from rlhfkit.train.batches import Batch
from rlhfkit.train.tokenize import prompt_ids


class Rollout(NamedTuple):
    """B sampled responses. P is the (left-padded) prompt width, R the response width.

    input_ids [B, P + R]; attention_mask [B, P + R] (0 on padding on either side);
    response_mask [B, R] float: 1 on response tokens up to and including EOS;
    finished [B] bool: the response ended with EOS (else it hit max_new_tokens);
    prompt_index [B]: which of the step's prompts each response answers;
    texts: the decoded responses;
    logps [B, R] (only when asked for): each response token's log-prob under the sampling
    distribution at temperature (before top-p), 0 past the response; entropy [B, R] likewise.
    """

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    response_mask: torch.Tensor
    finished: torch.Tensor
    prompt_index: torch.Tensor
    texts: list[str]
    logps: torch.Tensor | None = None
    entropy: torch.Tensor | None = None

    @property
    def prompt_width(self) -> int:
        return self.input_ids.shape[1] - self.response_mask.shape[1]


def left_pad(seqs: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for i, s in enumerate(seqs):
        ids[i, width - len(s) :] = torch.tensor(s)
        mask[i, width - len(s) :] = 1
    return ids, mask


@torch.no_grad()
def sample_rollout(
    model,
    tokenizer,
    prompts: list[list[int]],
    k: int,
    max_new_tokens: int,
    temperature: float,
    top_p: float,
    seed: int,
    logprobs: bool = False,
) -> Rollout:
    """k responses to each prompt (token ids), sampled with `seed` on a fresh generator.

    `logprobs`: also return each sampled token's log-prob and the entropy at every position,
    from the logits the sampler computed anyway (at `temperature`, before top-p) — what an
    on-policy update would otherwise spend a whole extra forward pass to recompute.
    """
    ids, mask = left_pad(prompts, tokenizer.pad_token_id)
    ids, mask = ids.to(model.device), mask.to(model.device)
    was_training = model.training
    model.eval()  # no dropout
    decoded = decode(
        model,
        ids,
        mask,
        k=k,
        max_new_tokens=max_new_tokens,
        temperature=temperature,
        top_p=top_p,
        eos_id=tokenizer.eos_token_id,
        pad_id=tokenizer.pad_token_id,
        seed=seed,
        logprobs=logprobs,
    )
    model.train(was_training)
    response = decoded.tokens
    is_eos = response == tokenizer.eos_token_id
    # a token belongs to the response if no EOS came before it (the EOS itself counts)
    before = torch.cumsum(is_eos.long(), dim=1) - is_eos.long()
    response_mask = (before == 0).float()
    finished = is_eos.any(dim=1)
    # exactly what was written, leading space included: a reward model scoring a text prompt
    # must see prompt + response as the policy produced them
    texts = [
        tokenizer.decode(response[i][response_mask[i].bool()], skip_special_tokens=True)
        for i in range(response.shape[0])
    ]
    ids, mask = ids.repeat_interleave(k, dim=0), mask.repeat_interleave(k, dim=0)
    attention = torch.cat([mask, response_mask.long()], dim=1)
    prompt_index = torch.arange(len(prompts), device=ids.device).repeat_interleave(k)
    return Rollout(
        torch.cat([ids, response], dim=1),
        attention,
        response_mask,
        finished,
        prompt_index,
        texts,
        decoded.logps,
        decoded.entropy,
    )


def batch_seed(seed: int, batch_index: int) -> int:
    """The seed batch `batch_index` of a run seeded `seed` samples with, on a fresh generator:
    a batch's samples depend on its seed and index alone, whatever ran before it (a resumed
    run, or the other model of a comparison answering the same prompts)."""
    return (seed * 1_000_003 + batch_index) % 2**63


class Sampling(NamedTuple):
    """How replies are drawn: k per prompt, each at most max_new_tokens long, at temperature
    and then top-p (see `rlhfkit.decode`)."""

    k: int
    max_new_tokens: int
    temperature: float
    top_p: float


class Replies(NamedTuple):
    """A batch of P prompts' replies, k each. texts [P][k]: a reply to a conversation without
    the whitespace its template puts around it, a text prompt's continuation exactly as
    written (leading space included: TRL joins prompt and completion as they are);
    finished [P][k]: ended with EOS; tokens [P][k]: response tokens, EOS included;
    rollout: what was sampled, for scoring (its `logps` when asked for)."""

    texts: list[list[str]]
    finished: list[list[bool]]
    tokens: list[list[int]]
    rollout: Rollout


def sample_replies(
    model, tokenizer, prompts: list, sampling: Sampling, seed: int, logprobs: bool = False
) -> Replies:
    """`sampling.k` replies to each prompt (a text, or a conversation's messages), the prompts
    tokenised by `prompt_ids` as PPO tokenises them, sampled with `seed` (`batch_seed`)."""
    rollout = sample_rollout(
        model,
        tokenizer,
        [prompt_ids(tokenizer, p) for p in prompts],
        sampling.k,
        sampling.max_new_tokens,
        sampling.temperature,
        sampling.top_p,
        seed,
        logprobs=logprobs,
    )
    return group_replies(rollout, sampling.k, [isinstance(p, list) for p in prompts])


def group_replies(rollout: Rollout, k: int, conversational: list[bool]) -> Replies:
    """The rollout's replies per prompt; `conversational[i]`: prompt i was a conversation."""
    lengths = rollout.response_mask.sum(dim=1).long().tolist()
    finished = rollout.finished.tolist()
    texts, done, tokens = [], [], []
    for i, chat in enumerate(conversational):
        rows = range(i * k, (i + 1) * k)
        # a chat reply's surrounding whitespace is template noise
        texts.append([rollout.texts[r].strip() if chat else rollout.texts[r] for r in rows])
        done.append([bool(finished[r]) for r in rows])
        tokens.append([lengths[r] for r in rows])
    return Replies(texts, done, tokens, rollout)


def rollout_batch(rollout: Rollout) -> Batch:
    """The rollout as a `Batch` whose scored tokens are the response tokens, row-major."""
    ids, attention = rollout.input_ids, rollout.attention_mask
    rows, width = ids.shape
    p = rollout.prompt_width
    positions = (attention.cumsum(dim=1) - 1).clamp(min=0)  # left padding shifts nothing
    valid = rollout.response_mask.bool()
    b, t = valid.nonzero(as_tuple=True)
    predict_from = b * width + p + t - 1
    lengths = valid.sum(dim=1)
    last_index = torch.arange(rows, device=ids.device) * width + p + lengths - 1
    return Batch(
        input_ids=ids,
        attention_mask=attention,
        position_ids=positions,
        predict_from=predict_from,
        targets=ids[:, p:][valid],
        seq_index=b,
        last_index=last_index,
        n_scored=lengths,
        tokens=int(attention.sum()),
    )


def to_padded(flat: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Per-token values in row-major order [N] -> [B, R] with zeros where mask is 0."""
    out = torch.zeros(mask.shape, dtype=flat.dtype, device=flat.device)
    out[mask.bool()] = flat
    return out


class MergedCopy:
    """What a LoRA policy samples from: a plain copy of the base model whose adapted weights
    are set to W + scale * B A before each rollout. The same distribution as the adapter-
    wrapped policy (to float rounding) without the adapter's two extra matmuls per layer in
    every decoding step; recomputed from the live weights each time, so nothing drifts and a
    resumed run samples what the uninterrupted one did. Costs one more copy of the model. A
    copy in bf16 (bf16 runs) holds W + scale * B A rounded to bf16."""

    def __init__(self, plain: torch.nn.Module):
        self.model = plain.eval().requires_grad_(False)

    @torch.no_grad()
    def refresh(self, policy: torch.nn.Module) -> torch.nn.Module:
        # lazy: only LoRA runs need peft
        from peft.tuners.lora.layer import Linear as LoraLinear

        for name, module in policy.named_modules():
            if isinstance(module, LoraLinear):
                target = self.model.get_submodule(name.removeprefix("base_model.model."))
                delta = module.get_delta_weight(module.active_adapters[0])
                target.weight.copy_(module.base_layer.weight + delta)
        return self.model
