"""The mechanics around a training loop: placement, resume, optimizer step, logging.

`start_run` does the setup every trainer needs; each trainer's own loop then reads
top to bottom as: for each step, for each micro-batch, compute the loss, `backward`; then
`run.optimizer_step()` and `run.end_step(...)`. Accelerate places the model and, under
`accelerate launch`, wraps it for data parallelism; a single process runs the same code.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from rlhfkit.train.checkpoint import MetricsLog, latest_checkpoint, load_checkpoint, save_checkpoint
from rlhfkit.train.loop import (
    LoopConfig,
    epoch_batches,
    make_optimizer,
    make_scheduler,
    prepare_output,
    shard,
    total_steps,
)

ProgressFn = Callable[[int, int, dict[str, float]], None]


@dataclass
class Run:
    cfg: LoopConfig
    accelerator: Any
    module: torch.nn.Module  # what forward() is called on (DDP-wrapped under accelerate launch)
    optimizer: torch.optim.Optimizer
    scheduler: Any
    metrics: MetricsLog
    lengths: list[int]
    steps_per_epoch: int
    total: int
    start: int
    progress: ProgressFn | None = None
    _t0: float = field(default_factory=time.time)
    _tokens: int = 0

    @property
    def rank(self) -> int:
        return self.accelerator.process_index

    @property
    def world(self) -> int:
        return self.accelerator.num_processes

    def micro_batches(self, step: int) -> list[list[int]]:
        """This process's micro-batches for optimizer step `step` (0-based)."""
        epoch, index = divmod(step, self.steps_per_epoch)
        batch = epoch_batches(self.lengths, self.cfg.batch_size, self.cfg.seed, epoch)[index]
        return shard(batch, self.rank, self.world, self.cfg.grad_accum)

    def global_batch(self, step: int) -> list[int]:
        epoch, index = divmod(step, self.steps_per_epoch)
        return epoch_batches(self.lengths, self.cfg.batch_size, self.cfg.seed, epoch)[index]

    def sync(self, last_micro: bool):
        """Gradients are all-reduced only on a step's last micro-batch."""
        return contextlib.nullcontext() if last_micro else self.accelerator.no_sync(self.module)

    def backward(self, loss: torch.Tensor, tokens: int) -> None:
        self.accelerator.backward(loss)
        self._tokens += tokens

    def optimizer_step(self) -> float:
        """Clip, step, advance the schedule, zero the gradients; return the gradient norm."""
        norm = torch.tensor(0.0)
        if self.cfg.max_grad_norm > 0:
            norm = self.accelerator.clip_grad_norm_(
                [p for p in self.module.parameters() if p.requires_grad], self.cfg.max_grad_norm
            )
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        return float(norm)

    def end_step(self, step: int, sums: dict[str, torch.Tensor], grad_norm: float) -> dict:
        """Reduce this step's metric sums over processes, log them, checkpoint when due.

        `sums` holds per-process sums; each is divided by the global batch size.
        """
        names = sorted(sums)
        local = torch.stack([sums[n].detach().float().cpu() for n in names])
        total = self.accelerator.reduce(local.to(self.accelerator.device), "sum").cpu()
        tokens = self.accelerator.reduce(
            torch.tensor([float(self._tokens)], device=self.accelerator.device), "sum"
        )
        elapsed = time.time() - self._t0
        record = {"step": step}
        record |= {n: float(v) / self.cfg.batch_size for n, v in zip(names, total, strict=True)}
        record |= {
            "lr": self.scheduler.get_last_lr()[0],
            "grad_norm": grad_norm,
            "epoch": step / self.steps_per_epoch,
            "tokens_per_s": float(tokens) / max(elapsed, 1e-9),
            "seconds": elapsed,
        }
        self._t0, self._tokens = time.time(), 0
        if self.accelerator.is_main_process:
            self.metrics.write(record)
        if self.cfg.save_every and step % self.cfg.save_every == 0 and step < self.total:
            self.checkpoint(step)
        if self.progress:
            self.progress(step, self.total, record)
        return record

    def checkpoint(self, step: int) -> None:
        self.accelerator.wait_for_everyone()
        if self.accelerator.is_main_process:
            model = self.accelerator.unwrap_model(self.module)
            save_checkpoint(Path(self.cfg.output_dir), step, model, self.optimizer, self.scheduler)


def make_accelerator(cfg: LoopConfig):
    """One process, or one of many under `accelerate launch`; bf16 autocast or fp32."""
    from accelerate import Accelerator

    prepare_output(cfg)
    # Without cpu=True on a machine with no GPU, Accelerate ignores `accelerate launch`'s
    # processes and runs each as a lone single-process job.
    return Accelerator(
        cpu=not torch.cuda.is_available(),
        mixed_precision="bf16" if cfg.precision == "bf16" else "no",
    )


def start_run(
    cfg: LoopConfig,
    accelerator,
    module: torch.nn.Module,
    lengths: list[int],
    progress: ProgressFn | None = None,
) -> Run:
    """Place the module, build optimizer and schedule, and resume from a checkpoint if asked."""
    steps_per_epoch = len(epoch_batches(lengths, cfg.batch_size, cfg.seed, 0))
    total = total_steps(cfg, steps_per_epoch)
    optimizer = make_optimizer(module, cfg)
    scheduler = make_scheduler(optimizer, cfg, total)
    module, optimizer = accelerator.prepare(module, optimizer)
    metrics = MetricsLog(Path(cfg.output_dir) / "metrics.jsonl", cfg.report_to)
    start = 0
    if cfg.resume and (ckpt := latest_checkpoint(Path(cfg.output_dir))):
        state = load_checkpoint(ckpt, accelerator.unwrap_model(module), optimizer, scheduler)
        start = state["step"]
    if accelerator.is_main_process:
        metrics.truncate_after(start)
    return Run(
        cfg,
        accelerator,
        module,
        optimizer,
        scheduler,
        metrics,
        lengths,
        steps_per_epoch,
        total,
        start,
        progress,
    )
