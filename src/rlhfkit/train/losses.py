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
