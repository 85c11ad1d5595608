"""Sampling token by token with a KV cache: the one decoder behind every sampler in rlhfkit
(candidate pairs for annotation, stage 3's rollouts, `eval policy`).

Why not `model.generate`: on a CPU its per-step bookkeeping cost as much as the model. Measured
on 2 cores (SmolLM2-135M, 96 rows, fp32), a decoding step of `generate` took about 0.8 s, of
which the forward pass was 0.3 s:

1. its cache grows by concatenation, so every step copies all keys and values so far;
2. top-p sorts the whole vocabulary (49,152 tokens) of every row, every step (0.19 s), and
   `torch.multinomial` draws from all of it (0.12 s);
3. with k samples per prompt it runs each prompt's prefill k times.

Here each prompt is computed once and its keys and values copied k times into a preallocated
(static) cache; top-p looks at the 256 most likely tokens first, which hold the nucleus in
nearly every row, and sorts a row in full only when they do not (exact either way); and a draw
is one inverse-CDF lookup. The same distribution as `generate` with ``top_k=0`` (temperature,
then top-p; Holtzman et al. 2020), drawn from a generator of its own: a seed gives the same
tokens whatever else used torch's global random state.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F

FIRST_LOOK = 256
"""Tokens top-p examines before it sorts a whole row."""


class Decoded(NamedTuple):
    """R is the response width: max_new_tokens, or fewer when every row ended earlier.

    tokens [N, R]: sampled ids, `pad_id` after a row's EOS (the EOS itself is kept);
    logps [N, R]: each sampled token's log-prob at the temperature, before top-p (the
    distribution training scores), 0 past the EOS; entropy [N, R] of that distribution.
    Both only when asked for.
    """

    tokens: torch.Tensor
    logps: torch.Tensor | None = None
    entropy: torch.Tensor | None = None


def entropy(logps: torch.Tensor) -> torch.Tensor:
    """Entropy of each row's distribution from its log-probabilities: [..., V] -> [...]. The
    sampler's entropies and PPO's (from the scoring pass's logits) both come from here."""
    return -(logps.exp() * logps).sum(dim=-1)


def nucleus(probs: torch.Tensor, top_p: float) -> tuple[torch.Tensor, torch.Tensor]:
    """The top-p nucleus of each row of `probs` [B, V]: the most likely tokens, in order, up to
    and including the one where their mass reaches `top_p` (at least one token).

    Returns (ids [B, W], weights [B, W]): each row's nucleus in descending probability,
    weights 0 past its end. A token is kept when the mass of the tokens above it is below
    top_p, which is what transformers' `TopPLogitsWarper` keeps.
    """
    look = min(FIRST_LOOK, probs.shape[-1])
    top, ids = probs.topk(look, dim=-1)
    wide = top.sum(dim=-1) < top_p  # the nucleus may reach past the first look
    if wide.any():
        full, full_ids = probs[wide].sort(dim=-1, descending=True)
        width = max(look, int(((full.cumsum(-1) - full) < top_p).sum(-1).max()))
        top, ids = F.pad(top, (0, width - look)), F.pad(ids, (0, width - look))
        top[wide], ids[wide] = full[:, :width], full_ids[:, :width]
    keep = (top.cumsum(dim=-1) - top) < top_p
    keep[:, 0] = True
    return ids, top * keep


def draw(weights: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """One column index per row of `weights` [B, W] (>= 0), with probability proportional
    to its weight."""
    u = torch.rand(
        (weights.shape[0], 1), generator=generator, device=weights.device, dtype=weights.dtype
    )
    return inverse_cdf(weights, u)


def inverse_cdf(weights: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """For u [B, 1] in [0, 1]: the first column whose cumulative weight exceeds u times the
    row's total. u * total can round up to the total itself (u within 2**-24 of 1); then it
    is the last column with any weight, never a zero-weight one past it."""
    cumulative = weights.cumsum(dim=-1)
    picked = (cumulative <= u * cumulative[:, -1:]).sum(dim=-1)
    last = weights.shape[-1] - 1 - (weights > 0).flip(-1).to(torch.uint8).argmax(dim=-1)
    return torch.minimum(picked, last)


def next_tokens(
    logits: torch.Tensor, temperature: float, top_p: float, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Sample one token per row from logits [B, V]; return it and the tempered log-probs
    [B, V] it was drawn from (before top-p). Temperature 0 is greedy decoding."""
    if temperature == 0:
        return logits.argmax(dim=-1), torch.log_softmax(logits.float(), dim=-1)
    logps = torch.log_softmax(logits.float() / temperature, dim=-1)
    probs = logps.exp()
    if top_p >= 1.0:
        return draw(probs, generator), logps
    ids, weights = nucleus(probs, top_p)
    return ids.gather(1, draw(weights, generator)[:, None]).squeeze(1), logps


@torch.no_grad()
def decode(
    model,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    *,
    k: int,
    max_new_tokens: int,
    temperature: float,
    top_p: float,
    eos_id: int,
    pad_id: int,
    seed: int,
    logprobs: bool = False,
) -> Decoded:
    """k samples for each left-padded prompt of input_ids [B, P] (attention_mask [B, P]).

    Rows of the result are prompt-major: prompt 0's k samples, then prompt 1's. `model` is a
    causal LM (or a peft wrapper of one) in eval mode; it decodes in its own dtype.
    """
    from transformers import DynamicCache, StaticCache

    if k < 1 or max_new_tokens < 1:
        raise ValueError("k and max_new_tokens must be at least 1")
    if temperature == 0 and logprobs:
        raise ValueError("greedy decoding samples from no distribution: no log-probs")
    device = input_ids.device
    batch, width = input_ids.shape
    rows = batch * k
    positions = (attention_mask.cumsum(dim=1) - 1).clamp(min=0)

    # 1. each prompt once, then its keys and values copied k times into a preallocated cache
    prefill = DynamicCache(config=model.config)
    out = model(
        input_ids=input_ids,
        attention_mask=attention_mask,
        position_ids=positions,
        cache=prefill,
        use_cache=True,
        logits_to_keep=1,
    )
    cache = StaticCache(config=model.config, max_cache_len=width + max_new_tokens)
    for layer, (keys, values, *_) in enumerate(prefill):
        cache.update(keys.repeat_interleave(k, dim=0), values.repeat_interleave(k, dim=0), layer)
    del prefill
    logits = out.logits[:, -1].repeat_interleave(k, dim=0)
    mask = torch.ones((rows, width + max_new_tokens), dtype=attention_mask.dtype, device=device)
    mask[:, :width] = attention_mask.repeat_interleave(k, dim=0)
    position = positions[:, -1].repeat_interleave(k, dim=0)

    generator = torch.Generator(device=device).manual_seed(seed)
    tokens = torch.full((rows, max_new_tokens), pad_id, dtype=torch.long, device=device)
    logps = torch.zeros((rows, max_new_tokens), device=device) if logprobs else None
    entropies = torch.zeros((rows, max_new_tokens), device=device) if logprobs else None
    finished = torch.zeros(rows, dtype=torch.bool, device=device)
    steps = max_new_tokens
    for t in range(max_new_tokens):
        # 2. sample; rows that ended keep emitting padding
        token, step_logps = next_tokens(logits, temperature, top_p, generator)
        token = token.masked_fill(finished, pad_id)
        tokens[:, t] = token
        if logprobs:
            live = (~finished).float()
            logps[:, t] = step_logps.gather(1, token[:, None]).squeeze(1) * live
            entropies[:, t] = entropy(step_logps) * live
        finished |= token == eos_id
        if finished.all() or t == max_new_tokens - 1:
            steps = t + 1
            break
        # 3. one step of the model on the new tokens
        position = position + 1
        logits = model(
            input_ids=token[:, None],
            attention_mask=mask[:, : width + t + 1],
            position_ids=position[:, None],
            cache=cache,
            use_cache=True,
        ).logits[:, -1]
    if logprobs:
        return Decoded(tokens[:, :steps], logps[:, :steps], entropies[:, :steps])
    return Decoded(tokens[:, :steps])
