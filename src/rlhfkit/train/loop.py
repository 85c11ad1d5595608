"""What every trainer shares, as plain functions: config, batching, optimizer, schedule,
precision, LoRA, checkpoints, metrics. Each trainer's loop (sft.py, reward.py, dpo.py, ppo.py) is
written out in full and calls these; there is no trainer base class.
"""

from __future__ import annotations

import dataclasses
import math
import os
import random
import re
from pathlib import Path
from typing import Any

from rlhfkit.errors import UserError, display_path
from rlhfkit.lineage import sha256_file
from rlhfkit.train.configs import LoopConfig

# --- batching ---------------------------------------------------------------------------


def epoch_batches(lengths: list[int], batch_size: int, seed: int, epoch: int) -> list[list[int]]:
    """Length-bucketed batches: shuffle, sort within windows of 16 batches, shuffle batches.

    Similar lengths share a batch, so little padding is computed (and none is ever scored);
    the order still changes every epoch. Deterministic in (seed, epoch), which is what makes
    an interrupted run resume on exactly the batches it would have seen.
    """
    rng = random.Random(seed * 100_003 + epoch)
    order = list(range(len(lengths)))
    rng.shuffle(order)
    window = batch_size * 16
    batches = []
    for start in range(0, len(order), window):
        chunk = sorted(order[start : start + window], key=lambda i: lengths[i])
        batches += [chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size)]
    rng.shuffle(batches)
    # Drop a last partial batch so every step has the same number of examples.
    return [b for b in batches if len(b) == batch_size] or batches[:1]


def shard(batch: list[int], rank: int, world: int, grad_accum: int) -> list[list[int]]:
    """This process's micro-batches of a global batch (rank r takes every world-th example)."""
    mine = batch[rank::world]
    size = math.ceil(len(mine) / grad_accum)
    return [mine[i : i + size] for i in range(0, len(mine), size)]


_BF16_FASTER: bool | None = None

FP32_ONLY = "RLHFKIT_FP32_ONLY"
"""Set to 1, `auto` resolves to fp32 as on a host without native bf16 (an AVX2-only CPU),
so the tests of such a host can be run anywhere; an explicit bf16 is still honoured."""


def resolve_precision(precision: str) -> str:
    """`auto` -> bf16 where it is faster here, else fp32; bf16/fp32 pass through.

    On a CPU without native bf16 (AVX2 only) a bf16 matmul is emulated and runs 10-100x
    *slower* than fp32; with native bf16 instructions (AVX512-BF16 or AMX) it runs ~3.5x
    faster. So the instructions decide, not a timing: an earlier timed race flipped to fp32
    on a loaded host, and a whole demo ran with other numbers. Every command that turns
    `auto` into a dtype asks here.
    """
    global _BF16_FASTER
    if precision != "auto":
        return precision
    # read on every call, not cached: a test may set it after another resolved `auto`
    fp32_only = os.environ.get(FP32_ONLY, "")
    if fp32_only not in ("", "0", "1"):
        raise UserError(f"{FP32_ONLY} is 1 (auto means fp32) or 0, not '{fp32_only}'")
    if fp32_only == "1":
        return "fp32"
    import torch

    if torch.cuda.is_available():
        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    if _BF16_FASTER is None:
        native = torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()
        _BF16_FASTER = bool(native)
    return "bf16" if _BF16_FASTER else "fp32"


def add_lora(model, cfg: LoopConfig, task_type: str = "CAUSAL_LM"):
    from peft import LoraConfig, get_peft_model

    # every linear layer but the output head, any architecture; or those of the top layers
    targets = "all-linear" if not cfg.lora_layers else _top_layer_linears(model, cfg.lora_layers)
    config = LoraConfig(
        r=cfg.lora_r,
        lora_alpha=cfg.lora_alpha,
        lora_dropout=cfg.lora_dropout,
        target_modules=targets,
        task_type=task_type,  # SEQ_CLS also trains the new score head in full
    )
    return get_peft_model(model, config)


_LAYER = re.compile(r"\.(?:layers|h|blocks|layer)\.(\d+)\.")
"""Where a transformer layer's index sits in a module name (`model.layers.12.mlp.up_proj`),
as peft looks for it."""


def _top_layer_linears(model, n: int) -> list[str]:
    """Names of the linear modules inside the top `n` transformer layers."""
    import torch

    found = {}
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.Linear) and (m := _LAYER.search(name)):
            found[name] = int(m.group(1))
    if not found:
        raise UserError("--lora-layers: this model's layers are not named layers.N / h.N")
    top = max(found.values())
    return [name for name, index in found.items() if index > top - n]


def begin(cfg: LoopConfig) -> LoopConfig:
    """Check the settings, fix `auto` precision, claim the output folder, seed everything.
    A project's success criteria are frozen before this, by the caller that starts training
    (`rlhfkit train`, the demo)."""
    cfg.check()
    cfg = dataclasses.replace(cfg, precision=resolve_precision(cfg.precision))
    prepare_output(cfg)
    seed_everything(cfg.seed)
    return cfg


def prepare_model(model, cfg: LoopConfig, task_type: str = "CAUSAL_LM"):
    """Gradient checkpointing if asked, then the LoRA adapter if asked."""
    if cfg.gradient_checkpointing:
        # Non-reentrant: works with frozen inputs (LoRA) without enable_input_require_grads.
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    if cfg.lora:
        model = add_lora(model, cfg, task_type=task_type)
    return model


def data_inputs(data) -> dict[str, Any]:
    """What identifies a run's training data, for the resume fingerprint."""
    path = Path(data.path)
    return {"data_sha256": sha256_file(path) if path.is_file() else str(path), "rows": len(data)}


def make_optimizer(model, cfg: LoopConfig):
    """AdamW over the trainable parameters; no weight decay on biases and norms."""
    import torch

    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if p.requires_grad:
            (no_decay if p.ndim < 2 or "norm" in name else decay).append(p)
    groups = [
        {"params": decay, "weight_decay": cfg.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    # The fused kernel updates every tensor in one pass: on a CPU, 4-5x faster than the
    # default per-tensor loop (0.09 s vs 0.40 s for SmolLM2-135M's 135M parameters).
    major, minor = (int(x) for x in torch.__version__.split(".")[:2])
    fused = (major, minor) >= (2, 4)  # CPU support for the fused kernel arrived in torch 2.4
    return torch.optim.AdamW(
        groups, lr=cfg.learning_rate, betas=(0.9, 0.999), eps=1e-8, fused=fused or None
    )


def make_scheduler(optimizer, cfg: LoopConfig, total_steps: int):
    """Linear warmup, then cosine or linear decay to zero (or constant)."""
    import torch

    warmup = int(cfg.warmup_ratio * total_steps)

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / (warmup + 1)
        if cfg.lr_schedule == "constant":
            return 1.0
        progress = (step - warmup) / max(1, total_steps - warmup)
        if cfg.lr_schedule == "linear":
            return max(0.0, 1.0 - progress)
        return 0.5 * (1.0 + math.cos(math.pi * progress))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def total_steps(cfg: LoopConfig, steps_per_epoch: int) -> int:
    if cfg.max_steps > 0:
        return cfg.max_steps
    return max(1, math.ceil(cfg.epochs * steps_per_epoch))


def seed_everything(seed: int) -> None:
    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def rubric_version(rows: list[dict[str, Any]]) -> str | None:
    versions = {str(r["rubric_version"]) for r in rows if "rubric_version" in r}
    return ", ".join(sorted(versions)) if versions else None


def check_start(cfg: LoopConfig) -> None:
    """What `begin` refuses, checked without side effects: the settings, the precision on this
    machine and an output folder that holds an earlier run. A caller that does something
    before training (freezing the criteria) checks this first, so a refused run leaves
    nothing behind."""
    cfg.check()
    resolve_precision(cfg.precision)
    out = Path(cfg.output_dir)
    earlier = [out / "metrics.jsonl", out / "final", *out.glob("checkpoint-*")]
    if not cfg.resume and any(p.exists() for p in earlier):
        raise UserError(
            f"{display_path(out)}: holds an earlier run",
            hint="pass --resume to continue it, or choose another --output-dir",
        )


def prepare_output(cfg: LoopConfig) -> None:
    check_start(cfg)
    Path(cfg.output_dir).mkdir(parents=True, exist_ok=True)
