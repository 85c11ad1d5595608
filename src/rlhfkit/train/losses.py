"""Every training loss of rlhfkit, as short pure functions. Imports torch and nothing else.

Each function takes tensors and returns the loss (per example where the caller may want to
weight or reduce it) plus detached metrics. Shapes are in the docstrings: B is the batch of
examples, N the number of scored tokens.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def token_logps(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """log p(target) for each row: logits [N, V], targets [N] -> [N].

    Computed as a negative cross-entropy, which never materialises the [N, V] log-softmax.
    """
    return -F.cross_entropy(logits.float(), targets, reduction="none")


def sum_per_sequence(values: torch.Tensor, seq_index: torch.Tensor, n_seqs: int) -> torch.Tensor:
    """Sum the per-token values [N] into their sequences' slots [n_seqs] (seq_index [N])."""
    out = torch.zeros(n_seqs, dtype=values.dtype, device=values.device)
    return out.index_add(0, seq_index, values)


def sft_loss(logps: torch.Tensor, n_tokens: int | torch.Tensor | None = None) -> torch.Tensor:
    """Negative log-likelihood of the completion tokens, averaged per token.

    logps [N]: log-probs of the completion tokens of the whole batch (prompt tokens and
    padding are never scored). `n_tokens` overrides the divisor, so that gradient
    accumulation and data-parallel shards average over the global batch's tokens.
    """
    denominator = logps.numel() if n_tokens is None else n_tokens
    return -logps.sum() / denominator


def reward_loss(
    chosen_rewards: torch.Tensor,
    rejected_rewards: torch.Tensor,
    margin: torch.Tensor | None = None,
    center_coef: float = 0.0,
) -> torch.Tensor:
    """Bradley–Terry loss ``-log σ(r_c - r_r - margin)``, averaged over pairs [B] -> scalar.

    The margin term is Llama 2's (Touvron et al. 2023, eq. 2); `center_coef` adds
    Eisenstein et al. 2023's ``mean((r_c + r_r)^2)`` that keeps rewards centred on zero.
    """
    diff = chosen_rewards - rejected_rewards
    if margin is not None:
        diff = diff - margin
    loss = -F.logsigmoid(diff).mean()
    if center_coef:
        loss = loss + center_coef * ((chosen_rewards + rejected_rewards) ** 2).mean()
    return loss


DPO_LOSS_TYPES = ("sigmoid", "ipo", "hinge", "robust")


def dpo_loss(
    policy_chosen_logps: torch.Tensor,
    policy_rejected_logps: torch.Tensor,
    ref_chosen_logps: torch.Tensor,
    ref_rejected_logps: torch.Tensor,
    beta: float = 0.1,
    loss_type: str = "sigmoid",
    label_smoothing: float = 0.0,
    chosen_lengths: torch.Tensor | None = None,
    rejected_lengths: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Direct preference optimisation losses; all inputs [B] -> (losses [B], rewards [B] x2).

    The log-probs are sums over each completion's tokens. With h = (π_c - ref_c) - (π_r - ref_r):
    - sigmoid (Rafailov et al. 2023, eq. 7): ``-log σ(βh)``; with label smoothing ε it is
      conservative DPO: ``-(1-ε) log σ(βh) - ε log σ(-βh)``.
    - robust (Chowdhury et al. 2024, eq. 21): the same two terms made unbiased for labels
      flipped with probability ε: ``((1-ε)(-log σ(βh)) - ε(-log σ(-βh))) / (1 - 2ε)``.
    - hinge (SLiC, Zhao et al. 2023): ``max(0, 1 - βh)``.
    - ipo (Azar et al. 2023, eq. 17): ``(h/len - 1/(2β))^2``, where, as in TRL, h is taken
      per token when `chosen_lengths` and `rejected_lengths` are given.
    The implicit rewards ``β (π - ref)`` are returned detached, for metrics.
    """
    chosen_logratios = policy_chosen_logps - ref_chosen_logps
    rejected_logratios = policy_rejected_logps - ref_rejected_logps
    h = chosen_logratios - rejected_logratios
    if loss_type == "sigmoid":
        losses = -(1 - label_smoothing) * F.logsigmoid(beta * h) - label_smoothing * F.logsigmoid(
            -beta * h
        )
    elif loss_type == "robust":
        if not 0.0 <= label_smoothing < 0.5:
            raise ValueError("robust DPO needs 0 <= label_smoothing < 0.5")
        clean = -F.logsigmoid(beta * h)
        flipped = -F.logsigmoid(-beta * h)
        losses = ((1 - label_smoothing) * clean - label_smoothing * flipped) / (
            1 - 2 * label_smoothing
        )
    elif loss_type == "hinge":
        losses = torch.relu(1 - beta * h)
    elif loss_type == "ipo":
        if chosen_lengths is not None and rejected_lengths is not None:
            h = chosen_logratios / chosen_lengths.clamp(min=1) - rejected_logratios / (
                rejected_lengths.clamp(min=1)
            )
        losses = (h - 1 / (2 * beta)) ** 2
    else:
        raise ValueError(f"unknown DPO loss type {loss_type!r}; one of {', '.join(DPO_LOSS_TYPES)}")
    chosen_rewards = (beta * chosen_logratios).detach()
    rejected_rewards = (beta * rejected_logratios).detach()
    return losses, chosen_rewards, rejected_rewards


# --- Stage 3: reinforcement learning from a reward -------------------------------------
# B is the batch of sampled responses, T the response length; `mask` [B, T] is 1 on response
# tokens (up to and including EOS) and 0 on the padding after them.


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of x over the entries where mask is 1."""
    return (x * mask).sum() / mask.sum().clamp(min=1)


def masked_whiten(x: torch.Tensor, mask: torch.Tensor, shift_mean: bool = True) -> torch.Tensor:
    """(x - mean) / std over the masked entries; padding stays 0.

    shift_mean=False keeps the mean (for rewards, whose sign carries meaning), as in
    Ziegler et al. 2019's reward normalisation.
    """
    mean = masked_mean(x, mask)
    var = masked_mean((x - mean) ** 2, mask)
    n = mask.sum()
    if n > 1:
        var = var * n / (n - 1)  # unbiased, as OpenRLHF and TRL
    whitened = (x - mean) * torch.rsqrt(var + 1e-8)
    if not shift_mean:
        whitened = whitened + mean
    return whitened * mask


def kl_estimate(
    logps: torch.Tensor, ref_logps: torch.Tensor, estimator: str = "k1"
) -> torch.Tensor:
    """Per-token estimate of KL(policy || reference) from tokens the policy sampled [B, T].

    With log r = log pi_ref(x) - log pi(x) (Schulman 2020, "Approximating KL divergence"):
    k1 = -log r, unbiased but negative for some tokens; k3 = (r - 1) - log r, unbiased and
    never negative, with lower variance when the two are close.
    """
    log_r = ref_logps - logps
    if estimator == "k1":
        return -log_r
    if estimator == "k3":
        return torch.expm1(log_r) - log_r
    raise ValueError(f"unknown KL estimator {estimator!r} (k1 or k3)")


def gae(
    rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, gamma: float, lam: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalised advantage estimation (Schulman et al. 2016, eq. 16): advantages, returns.

    rewards, values, mask [B, T]. delta_t = r_t + gamma V_{t+1} - V_t, and
    A_t = delta_t + gamma lam A_{t+1}; after the last response token V and A are 0.
    Returns (the value targets) are A + V.
    """
    values = values * mask
    advantages = torch.zeros_like(rewards)
    running = torch.zeros_like(rewards[:, 0])
    for t in reversed(range(rewards.shape[1])):
        next_value = values[:, t + 1] if t + 1 < rewards.shape[1] else torch.zeros_like(running)
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        running = (delta + gamma * lam * running) * mask[:, t]
        advantages[:, t] = running
    return advantages, advantages + values


def rloo_advantages(scores: torch.Tensor, k: int) -> torch.Tensor:
    """REINFORCE leave-one-out (Ahmadian et al. 2024): each of a prompt's k samples is
    baselined by the mean score of the other k - 1. scores [B*k], grouped by prompt."""
    grouped = scores.view(-1, k)
    baseline = (grouped.sum(dim=1, keepdim=True) - grouped) / (k - 1)
    return (grouped - baseline).flatten()


def group_advantages(scores: torch.Tensor, k: int) -> torch.Tensor:
    """GRPO (Shao et al. 2024): a sample's score standardised within its prompt's group of k."""
    grouped = scores.view(-1, k)
    mean, std = grouped.mean(dim=1, keepdim=True), grouped.std(dim=1, keepdim=True)
    return ((grouped - mean) / (std + 1e-4)).flatten()


def ppo_policy_loss(
    logps: torch.Tensor,
    old_logps: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    clip: float = 0.2,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The clipped surrogate objective (Schulman et al. 2017, eq. 7), as a loss [B, T] -> [].

    Metrics: clip fraction (tokens where the clipped term was taken) and approx-KL between the
    new and the sampling policy, estimated as mean(0.5 * (log ratio)^2).
    """
    log_ratio = logps - old_logps
    ratio = torch.exp(log_ratio)
    unclipped = -advantages * ratio
    clipped = -advantages * torch.clamp(ratio, 1.0 - clip, 1.0 + clip)
    loss = masked_mean(torch.maximum(unclipped, clipped), mask)
    with torch.no_grad():
        metrics = {
            "clip_fraction": masked_mean((clipped > unclipped).float(), mask),
            "approx_kl": masked_mean(0.5 * log_ratio**2, mask),
        }
    return loss, metrics


def ppo_value_loss(
    values: torch.Tensor,
    old_values: torch.Tensor,
    returns: torch.Tensor,
    mask: torch.Tensor,
    clip: float = 0.2,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Clipped value loss (as in OpenAI baselines' PPO2): 0.5 * max of the squared errors of
    the new value and of the old value moved at most `clip`. [B, T] -> []."""
    moved = old_values + torch.clamp(values - old_values, -clip, clip)
    loss = 0.5 * masked_mean(torch.maximum((values - returns) ** 2, (moved - returns) ** 2), mask)
    with torch.no_grad():
        metrics = {
            "value_clip_fraction": masked_mean(
                ((moved - returns) ** 2 > (values - returns) ** 2).float(), mask
            )
        }
    return loss, metrics
