"""Figures over every process's share of a step, under `accelerate launch` (data parallel).

One reduction, `sum_over_processes`; the rest are named for what they compute, so a training
loop reads the same on one device as on many. On one process each returns its input's own
figure: a sum over one process is the value itself.
"""

from __future__ import annotations

import torch

from rlhfkit.train import losses as L


def sum_over_processes(accelerator, values: torch.Tensor) -> torch.Tensor:
    """`values` summed element-wise over every process (on `accelerator.device`)."""
    values = values.to(accelerator.device)
    if accelerator.num_processes == 1:
        return values
    return accelerator.reduce(values, "sum")


def mean_over_processes(accelerator, value: float) -> float:
    """The mean of one figure that each process computed for itself (in float32)."""
    total = sum_over_processes(accelerator, torch.tensor(value))
    return float(total / accelerator.num_processes)


def any_process(accelerator, flag: bool) -> bool:
    """True when `flag` is true on any process: every process makes the call and the same
    decision (to stop together, say)."""
    return float(sum_over_processes(accelerator, torch.tensor(float(flag)))) > 0


def response_means(accelerator, values: dict[str, torch.Tensor]) -> dict[str, float]:
    """The mean of each per-response tensor [B] over every process's responses."""
    names = list(values)
    device = accelerator.device
    sums = torch.stack([values[n].float().sum().to(device) for n in names])
    count = torch.tensor([float(len(next(iter(values.values()))))], device=device)
    total = sum_over_processes(accelerator, torch.cat([sums, count])).cpu()
    return {n: float(total[i] / total[-1]) for i, n in enumerate(names)}


def token_mean(accelerator, total: float, tokens: float) -> float:
    """A sum over this process's tokens, divided by every process's token count."""
    both = sum_over_processes(accelerator, torch.tensor([total, tokens]))
    return float(both[0] / both[1].clamp(min=1))


def whiten(x: torch.Tensor, mask: torch.Tensor, accelerator, shift_mean: bool = True):
    """`L.masked_whiten` with the mean and variance of every process's entries."""
    if accelerator.num_processes == 1:
        return L.masked_whiten(x, mask, shift_mean)
    stats = torch.stack([(x * mask).sum(), (x * x * mask).sum(), mask.sum()])
    s, sq, n = sum_over_processes(accelerator, stats).to(x.device)
    mean = s / n
    var = (sq / n - mean**2) * n / (n - 1).clamp(min=1)
    out = (x - mean) * torch.rsqrt(var + 1e-8)
    return (out if shift_mean else out + mean) * mask
