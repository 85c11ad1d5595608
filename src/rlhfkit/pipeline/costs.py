"""Each stage's projected wall time and peak memory on this host, from measured throughput.

How it is measured (once per host, model and stage settings; kept in ``artifacts/plan/``):

- a training stage (sft, rm, dpo, ppo) runs its own trainer for two steps on this host with the
  stage's composed config (batch size, max_length, LoRA layers, precision; PPO's rollouts and
  epochs) from the base model, into a temporary folder. SFT trains on the project's SFT data;
  the reward model and DPO on stand-in pairs of the base model's own replies, as many replies
  per prompt as the candidates stage will make; PPO against the two-step reward model. The
  second step's time is the step time (the first warms up); the rest (loading, saving the
  final model) is the stage's fixed cost. Projected: fixed cost + planned steps x step time.
- candidates: one sampling batch of the base model at [generate] batch_size, n and
  max_new_tokens, times the planned batches (and the starting model's extra replies).
- each evaluation: the base model's timed sampling of the evaluation's prompts (`plan`'s base
  rates), twice (the before and after models), plus the KL scoring pass; judges not included.
- peak memory: the process's peak resident memory during the measurement (Linux VmHWM, reset
  before each), or on a GPU the peak memory torch allocated.

Planned steps come from the composed configs: max_steps, or epochs x floor(rows / batch_size)
as the trainers count them, with rows estimated from the project's sizes (prompts x pairs per
prompt x the training share; ties and both-bad labels, left out of training, not subtracted).
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import platform
import re
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rlhfkit import __version__, strict_json
from rlhfkit.data import load, write_jsonl
from rlhfkit.data.io import atomic_open
from rlhfkit.lineage import config_hash
from rlhfkit.pipeline.compose import effective
from rlhfkit.pipeline.plan import Plan, Progress, Stage

TRAINING = ("sft", "rm", "dpo", "ppo")
IGNORED = ("model", "data", "output_dir", "project", "resume", "reward", "prompts", "out")
"""Paths: left out of a measurement's key (the same settings elsewhere run as fast)."""


@dataclass(frozen=True)
class StageCost:
    name: str
    about: str
    work: str
    """What the stage does, in its own units ('24 steps x 8 examples')."""
    seconds: float | None
    """Projected wall time; None where it is not measured (people labelling, the report)."""
    peak_mb: float | None
    how: str
    """How the figure was measured."""


def host() -> dict[str, Any]:
    """What identifies this machine for the measurements (they are kept per host)."""
    return {"node": platform.node(), "machine": platform.machine(), "cpus": os.cpu_count()}


def stage_costs(
    plan: Plan, eval_cfg: Any, sampled: dict[str, Any], *, measure: bool, progress: Progress | None
) -> list[StageCost]:
    """Every stage's cost: measured now where `measure`, else from the cache, else unknown."""
    folder = plan.project.artifacts("plan")
    out: list[StageCost] = []
    with tempfile.TemporaryDirectory(prefix="rlhfkit-plan-") as tmp:
        scratch = _Scratch(Path(tmp), plan, sampled)
        for stage in plan.stages:
            key = _stage_key(plan, stage)
            cache = folder / f"cost-{stage.name}-{key}.json"
            found = strict_json.loads(cache.read_text()) if cache.exists() else None
            if found is None and measure and _measurable(stage):
                if progress:
                    progress(f"timing {stage.name}", 0, 1)
                found = _measure(stage, scratch)
                with atomic_open(cache) as f:
                    strict_json.dump(found, f)
            out.append(_project(plan, stage, found, sampled))
    return out


def _measurable(stage: Stage) -> bool:
    return stage.name in (*TRAINING, "candidates")


def _stage_key(plan: Plan, stage: Stage) -> str:
    config = effective(stage.config) if stage.config is not None else None
    if config is not None:
        config = {k: v for k, v in config.items() if k not in IGNORED}
    gen = plan.project.spec.generate
    return config_hash(
        {"host": host(), "model": plan.base, "config": config, "rlhfkit": __version__,
         "pairs": [gen.n, gen.start_samples, gen.all_pairs]}
    )  # fmt: skip


# --- measuring ---------------------------------------------------------------------------------


class _Scratch:
    """A temporary folder with stand-in data for the measurements, made on first use."""

    def __init__(self, root: Path, plan: Plan, sampled: dict[str, Any]) -> None:
        self.root, self.plan, self.sampled = root, plan, sampled
        self._pairs: dict[int, Path] = {}

    def pairs(self, replies: int, prompts: int) -> Path:
        """`prompts` of the project's prompts, each with every pair of `replies` replies (the
        base model's own, cycled), as the candidates stage will pair them."""
        if replies not in self._pairs:
            rows = load(self.plan.project.data_path("prompts")).rows[:prompts]
            pool = [t for row in self.sampled["texts"] for t in row] or ["Thank you."]
            out = []
            for i, row in enumerate(rows):
                texts = [f"{pool[(i * replies + j) % len(pool)]} ({j})" for j in range(replies)]
                if isinstance(row["prompt"], list):  # a conversation's replies are messages
                    texts = [[{"role": "assistant", "content": t}] for t in texts]
                for a in range(replies):
                    for b in range(a + 1, replies):
                        out.append(
                            {"prompt": row["prompt"], "chosen": texts[a], "rejected": texts[b]}
                        )
            self._pairs[replies] = self.root / f"pairs-{replies}.jsonl"
            write_jsonl(self._pairs[replies], out)
        return self._pairs[replies]


def _measure(stage: Stage, scratch: _Scratch) -> dict[str, Any]:
    """Run the stage's own work for two steps (or one sampling batch); its timings and peak."""
    reset_peak()
    if stage.name == "candidates":
        found = _time_sampling(scratch.plan)
    else:
        found = _time_training(stage, scratch)
    return found | {"peak_mb": peak_mb(), "host": host()}


def _time_training(stage: Stage, scratch: _Scratch) -> dict[str, Any]:
    from rlhfkit.pipeline.stages import TRAINERS  # lazy: torch, transformers, peft

    plan, cfg = scratch.plan, stage.config
    out = scratch.root / stage.name
    explicit: dict[str, Any] = {"model": plan.base, "output_dir": out, "max_steps": 2,
                                "resume": False, "project": None, "save_every": 0}  # fmt: skip
    replies = _replies_per_prompt(plan, stage.name)
    if stage.name in ("rm", "dpo"):
        explicit["data"] = scratch.pairs(replies, 2 * cfg.batch_size)
    if stage.name == "ppo":
        explicit["reward"] = [str(_reward_model(scratch))]
    cfg = dataclasses.replace(cfg, **explicit)
    stamps: list[float] = []
    started = time.monotonic()
    TRAINERS[stage.name](cfg, lambda *a: stamps.append(time.monotonic()))
    total = time.monotonic() - started
    step = stamps[1] - stamps[0] if len(stamps) >= 2 else total / 2
    return {"step_seconds": round(step, 3), "fixed_seconds": round(max(total - 2 * step, 0), 2)}


def _reward_model(scratch: _Scratch) -> Path:
    """PPO's reward: the reward model the rm measurement trained (two steps), or one now."""
    final = scratch.root / "rm" / "final"
    if not final.exists():
        _time_training(scratch.plan.stage("rm"), scratch)
    return final


def _time_sampling(plan: Plan) -> dict[str, Any]:
    """One batch of candidates from the base model at [generate]'s settings."""
    from rlhfkit.evaluate.sampling import load_policy  # lazy: torch
    from rlhfkit.train.rollout import Sampling, sample_replies  # lazy: torch

    gen = plan.project.spec.generate
    started = time.monotonic()
    model, tok = load_policy(plan.base)
    load_s = time.monotonic() - started
    prompts = [r["prompt"] for r in load(plan.project.data_path("prompts")).rows[: gen.batch_size]]
    sampling = Sampling(gen.n, gen.max_new_tokens, gen.temperature, gen.top_p)
    started = time.monotonic()
    sample_replies(model, tok, prompts, sampling, gen.seed)
    seconds = round(time.monotonic() - started, 3)
    return {
        "batch_seconds": seconds,
        "fixed_seconds": round(load_s, 2),
        "batch_prompts": len(prompts),
    }


def reset_peak() -> None:
    """Start a fresh peak-memory measurement (see `peak_mb`)."""
    import torch  # lazy: only a measurement needs it

    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
        return
    # Linux: resets the peak resident size; elsewhere the peak is the process's since it started
    with contextlib.suppress(OSError):
        Path("/proc/self/clear_refs").write_text("5")


def peak_mb() -> float:
    """The peak since `reset_peak`: GPU memory torch allocated, else the process's resident
    memory (MiB)."""
    import torch  # lazy: only a measurement needs it

    if torch.cuda.is_available():
        return round(torch.cuda.max_memory_allocated() / 2**20, 1)
    status = Path("/proc/self/status")
    if status.exists() and (m := re.search(r"VmHWM:\s+(\d+) kB", status.read_text())):
        return round(int(m.group(1)) / 1024, 1)
    import resource  # lazy: Unix only

    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


# --- projecting -------------------------------------------------------------------------------


def _replies_per_prompt(plan: Plan, stage: str) -> int:
    """Distinct replies a prompt's pairs are made of: the reward model sees the trained
    model's n and the starting model's extra ones; DPO's "same model" pairs only the n."""
    gen, spec = plan.project.spec.generate, plan.project.spec
    start = gen.start_samples if spec.data.sft else 0
    if stage == "dpo" and spec.run.dpo_pairs == "same model":
        return gen.n
    return gen.n + start


def _pairs_per_prompt(plan: Plan, replies: int) -> int:
    return math.comb(replies, 2) if plan.project.spec.generate.all_pairs else max(replies // 2, 1)


def planned_steps(plan: Plan, stage: Stage) -> tuple[int, str]:
    """The stage's optimizer steps and what one holds, as the trainer will count them."""
    cfg, spec = stage.config, plan.project.spec
    prompts = len(load(plan.project.data_path("prompts")).rows)
    used = min(prompts, spec.generate.limit or prompts)
    if stage.name == "sft":
        rows, unit = len(load(plan.project.data_path("sft")).rows), "examples"
    elif stage.name == "ppo":
        rows, unit = prompts, "prompts"
    else:
        rows = round(used * (1 - spec.run.heldout_share))
        per = _pairs_per_prompt(plan, _replies_per_prompt(plan, stage.name))
        unit = f"prompts of {per} pairs" if cfg.group_by_prompt else "pairs"
        rows = rows if cfg.group_by_prompt else rows * per
    if cfg.max_steps > 0:
        return cfg.max_steps, f"{cfg.max_steps} steps x {cfg.batch_size} {unit}"
    per_epoch = max(rows // cfg.batch_size, 1)
    steps = max(1, math.ceil(cfg.epochs * per_epoch))
    return steps, f"{steps} steps x {cfg.batch_size} {unit} (epochs {cfg.epochs:g} of ~{rows})"


def _project(plan: Plan, stage: Stage, found: dict | None, sampled: dict[str, Any]) -> StageCost:
    name, about = stage.name, stage.about
    if name in TRAINING:
        steps, work = planned_steps(plan, stage)
        if found is None:
            return StageCost(name, about, work, None, None, "not measured")
        seconds = found["fixed_seconds"] + steps * found["step_seconds"]
        how = f"{found['step_seconds']:.2f} s/step + {found['fixed_seconds']:.0f} s load/save"
        return StageCost(name, about, work, round(seconds, 1), found["peak_mb"], how)
    if name == "candidates":
        return _candidates(plan, stage, found)
    if name.startswith("eval_"):
        cfg = stage.config
        work = f"{len(sampled['texts'])} prompts x {cfg.samples} samples, 2 models"
        seconds = 2.2 * sampled["seconds"]  # before and after, and the KL's scoring pass
        how = f"sampled in {sampled['seconds']:.0f} s; x2 models, +10% scoring"
        return StageCost(name, about, work, round(seconds, 1), sampled.get("peak_mb"), how)
    if name == "annotate":
        who = plan.project.spec.run.labeler
        work = "people label in the app" if who == "people" else f"simulated by {who}"
        return StageCost(
            name, about, work, None, None, "people's time" if who == "people" else "seconds"
        )
    return StageCost(name, about, "", None, None, "seconds")


def _candidates(plan: Plan, stage: Stage, found: dict | None) -> StageCost:
    gen, spec = plan.project.spec.generate, plan.project.spec
    prompts = len(load(plan.project.data_path("prompts")).rows)
    used = min(prompts, gen.limit or prompts)
    batches = math.ceil(used / gen.batch_size)
    start = gen.start_samples if spec.data.sft else 0
    work = f"{used} prompts x {gen.n} replies" + (f" + {start} from the start" if start else "")
    if found is None:
        return StageCost(stage.name, stage.about, work, None, None, "not measured")
    per_batch = found["batch_seconds"] * (gen.n + start) / gen.n  # the start model's too
    seconds = found["fixed_seconds"] * (2 if start else 1) + batches * per_batch
    size = f"{found['batch_prompts']} x {gen.n}"
    how = f"{found['batch_seconds']:.1f} s/batch of {size}; {batches} batches"
    return StageCost(stage.name, stage.about, work, round(seconds, 1), found["peak_mb"], how)
