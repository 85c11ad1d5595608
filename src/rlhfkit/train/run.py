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

from rlhfkit.errors import UserError
from rlhfkit.train.checkpoint import (
    MetricsLog,
    latest_checkpoint,
    load_checkpoint,
    resume_fingerprint,
    save_checkpoint,
)
from rlhfkit.train.distributed import sum_over_processes
from rlhfkit.train.loop import (
    LoopConfig,
    epoch_batches,
    make_optimizer,
    make_scheduler,
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
    fingerprint: str
    progress: ProgressFn | None = None
    state: dict[str, Any] = field(default_factory=dict)
    """A trainer's own resumable state (JSON-able), saved with every checkpoint."""
    _t0: float = field(default_factory=time.time)
    _tokens: int = 0
    _epoch: tuple[int, list[list[int]]] = (-1, [])

    @property
    def world(self) -> int:
        return self.accelerator.num_processes

    def global_batch(self, step: int) -> list[int]:
        """The example indices of optimizer step `step` (0-based), on every process alike."""
        epoch, index = divmod(step, self.steps_per_epoch)
        if self._epoch[0] != epoch:
            batches = epoch_batches(self.lengths, self.cfg.batch_size, self.cfg.seed, epoch)
            self._epoch = (epoch, batches)
        return self._epoch[1][index]

    def micro_batches(self, step: int) -> list[list[int]]:
        """This process's share of step `step`, split into `grad_accum` micro-batches."""
        return shard(
            self.global_batch(step),
            self.accelerator.process_index,
            self.world,
            self.cfg.grad_accum,
        )

    def sync(self, last_micro: bool):
        """Gradients are all-reduced only on a step's last micro-batch."""
        return contextlib.nullcontext() if last_micro else self.accelerator.no_sync(self.module)

    def backward(self, loss: torch.Tensor, tokens: int) -> None:
        self.accelerator.backward(loss)
        self._tokens += tokens

    def optimizer_step(self) -> tuple[float, float]:
        """Clip, step, advance the schedule, zero the gradients.

        Returns the gradient norm before clipping and the learning rate the step used.
        """
        norm = None
        if self.cfg.max_grad_norm > 0:
            # All parameters, not only trainable ones: under FSDP, Accelerate computes the
            # global norm only when handed exactly model.parameters().
            norm = self.accelerator.clip_grad_norm_(
                self.module.parameters(), self.cfg.max_grad_norm
            )
        lr = self.scheduler.get_last_lr()[0]
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        return (float(norm) if norm is not None else float("nan")), lr

    def end_step(
        self,
        step: int,
        sums: dict[str, torch.Tensor],
        stepped: tuple[float, float],
        extra: dict[str, float] | None = None,
        per: int | None = None,
    ):
        """Reduce this step's metric sums over processes, log them, checkpoint when due.

        `sums` holds per-process sums over examples; each is divided by the global batch size
        (or by `per`, the step's global count of what was summed: a reward model's pairs).
        `extra` metrics are logged as they are (the main process's values).
        """
        names = sorted(sums)
        local = torch.tensor([*(float(sums[n]) for n in names), float(self._tokens)])
        total = sum_over_processes(self.accelerator, local).cpu().tolist()
        elapsed = time.time() - self._t0
        grad_norm, lr = stepped
        record: dict[str, float] = {"step": step}
        record |= {n: v / (per or self.cfg.batch_size) for n, v in zip(names, total, strict=False)}
        record |= {
            "lr": lr,
            "grad_norm": grad_norm,
            "epoch": step / self.steps_per_epoch,
            "tokens_per_s": total[-1] / max(elapsed, 1e-9),
            "seconds": elapsed,
        }
        record |= extra or {}
        self._t0, self._tokens = time.time(), 0
        if self.accelerator.is_main_process:
            self.metrics.write(record)
        if self.cfg.save_every and step % self.cfg.save_every == 0 and step < self.total:
            save_checkpoint(
                Path(self.cfg.output_dir),
                step,
                self.accelerator,
                self.module,
                self.optimizer,
                self.scheduler,
                self.fingerprint,
                self.state,
            )
        if self.progress and self.accelerator.is_main_process:
            self.progress(step, self.total, record)
        return record


def make_accelerator(cfg: LoopConfig):
    """One process, or one of many under `accelerate launch`; bf16 autocast or fp32."""
    from accelerate import Accelerator

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
    inputs: dict[str, Any] | None = None,
    optimizer_steps_per_step: int = 1,
) -> Run:
    """Check the batch fits, place the module, build optimizer and schedule, resume if asked.

    `inputs` (e.g. the data's hash) join the config in the fingerprint a resumed run must
    match: resuming with other data, seed or batch size would silently train another run.
    """
    world = accelerator.num_processes
    if len(lengths) < cfg.batch_size:
        raise UserError(
            f"{len(lengths)} examples cannot fill one batch of --batch-size {cfg.batch_size}"
        )
    if cfg.batch_size % (world * cfg.grad_accum):
        raise UserError(
            f"--batch-size {cfg.batch_size} must split evenly over {world} processes x "
            f"--grad-accum {cfg.grad_accum}"
        )
    steps_per_epoch = len(epoch_batches(lengths, cfg.batch_size, cfg.seed, 0))
    total = total_steps(cfg, steps_per_epoch)
    module.train()  # dropout and gradient checkpointing act only in training mode
    optimizer = make_optimizer(module, cfg)
    # PPO takes several optimizer steps per training step; the schedule counts them all
    scheduler = make_scheduler(optimizer, cfg, total * optimizer_steps_per_step)
    module, optimizer = accelerator.prepare(module, optimizer)
    metrics = MetricsLog(Path(cfg.output_dir) / "metrics.jsonl", cfg.report_to)
    fingerprint = resume_fingerprint(cfg, inputs or {})
    start, state = 0, {}
    if cfg.resume and (ckpt := latest_checkpoint(Path(cfg.output_dir))):
        start, state = load_checkpoint(ckpt, accelerator, module, optimizer, scheduler, fingerprint)
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
        fingerprint,
        progress,
        state,
    )
