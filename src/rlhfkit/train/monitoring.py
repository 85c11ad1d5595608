"""Watching a PPO run as it goes: each step's success-criterion rates, the reward-hacking
monitors (train/monitors.py) on its samples, their flags' log (monitors.jsonl), and the two
ways a run stops early: a monitor fires under `--stop-on-flag`, or the caller's samples hook
says stop. The model so far is saved either way.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from rlhfkit.criteria import RefusalScope
from rlhfkit.project import load_project
from rlhfkit.train.checkpoint import MetricsLog
from rlhfkit.train.configs import PPOConfig
from rlhfkit.train.distributed import any_process
from rlhfkit.train.monitors import Flag, LiveMonitor

# Called after each step with (step, prompts, responses, metrics); returns None to go on, or a
# reason to stop the run early. The main process's answer decides for every process.
SampleHook = Callable[[int, list[Any], list[str], dict[str, float]], str | None]


def success_criteria(project: Path | None) -> list:
    """The project's success criteria decidable from the text alone: a reward-model or judge
    criterion would need a model call per response per step (`eval policy` measures them)."""
    if project is None:
        return []
    return [c for c in load_project(project).spec.success_criteria if c.text_only]


def live_monitor(cfg: PPOConfig, criteria: list) -> LiveMonitor | None:
    """The reward-hacking monitors over this run's steps, with the thresholds of the project's
    [monitors]; the first step's samples are the reference."""
    if cfg.project is None or not cfg.monitor:
        return None
    thresholds = load_project(cfg.project).spec.monitors
    directions = {c.name: c.direction for c in criteria}
    return LiveMonitor(thresholds, directions, refusal=RefusalScope.of(criteria))


def subset_rates(means: dict[str, float]) -> dict[str, float]:
    """`means` (over every process) of `RunWatch.criteria_hits`' tensors, with each
    `criteria/NAME` the rate over the responses the criterion applies to (left out when none
    of the step's did) and the `criteria_n/` shares dropped."""
    out = {k: v for k, v in means.items() if not k.startswith("criteria_n/")}
    for key, share in means.items():
        if key.startswith("criteria_n/"):
            name = "criteria/" + key.removeprefix("criteria_n/")
            if share > 0:
                out[name] = means[name] / share
            else:
                del out[name]
    return out


class RunWatch:
    """One PPO run's criteria, live monitors, flags' log and early stops.

    Every process computes the monitors; only the main one writes the log."""

    def __init__(self, cfg: PPOConfig, accelerator, on_samples: SampleHook | None = None):
        self.accelerator = accelerator
        self.criteria = success_criteria(cfg.project)
        self.monitor = live_monitor(cfg, self.criteria)
        self.stop_on_flag = cfg.stop_on_flag
        self.on_samples = on_samples
        # step-keyed JSON lines, cut back on resume like metrics.jsonl
        self.log = MetricsLog(Path(cfg.output_dir) / "monitors.jsonl")
        self.seen: set[str] = set()  # flags that fired so far
        self.fired: list[Flag] = []  # flags that fired first on the last step

    def resume_at(self, step: int) -> None:
        """Forget the log's lines past `step` (the monitors' history starts afresh: the first
        resumed step is the new reference)."""
        if self.monitor is not None and self.accelerator.is_main_process:
            self.log.truncate_after(step)

    def criteria_hits(
        self,
        texts: list[str],
        prompts: list[Any] | None = None,
        columns: list[dict[str, Any]] | None = None,
    ) -> dict[str, torch.Tensor]:
        """`criteria/NAME`: 1.0 for each response the criterion's detector matches, else 0.0;
        `criteria_n/NAME`: 1.0 for each response to a prompt the criterion applies to (its
        ``applies_to``). Their means over every process give the rate on the subset
        (`subset_rates`)."""
        device = self.accelerator.device
        out = {}
        prompts = prompts if prompts is not None else [None] * len(texts)
        for c in self.criteria:
            applies = [c.applies(col) for col in columns or [None] * len(texts)]
            pairs = zip(applies, prompts, texts, strict=True)
            hits = [a and c.detector.matches(t, p) for a, p, t in pairs]
            out[f"criteria/{c.name}"] = torch.tensor([float(h) for h in hits], device=device)
            out[f"criteria_n/{c.name}"] = torch.tensor([float(a) for a in applies], device=device)
        return out

    def check(
        self,
        step: int,
        prompts: list[Any],
        texts: list[str],
        rewards: list[float],
        means: dict[str, float],
        entropy: float,
        columns: list[dict[str, Any]] | None = None,
    ) -> dict[str, float]:
        """Run the monitors on the step's samples and log the flags raised (before the
        checkpoint, so that a kill loses no line). `means` holds the step's `kl` and
        `criteria/NAME` rates over every process; `columns[i]`: prompt i's row less the
        prompt. Returns the record's `monitor_flags`."""
        if self.monitor is None:
            return {}
        flags = self.monitor.step(
            prompts,
            texts,
            rewards,
            kl=means["kl"],
            entropy=entropy,
            criteria={
                c.name: means[f"criteria/{c.name}"]
                for c in self.criteria
                if f"criteria/{c.name}" in means
            },
            columns=columns,
        )
        raised = [f for f in flags if f.flagged]
        # a flag that stays up is reported once, when it first fires
        self.fired = [f for f in raised if f.name not in self.seen]
        self.seen.update(f.name for f in raised)
        if self.accelerator.is_main_process:
            self.log.write({"step": step, "flags": [f.to_json() for f in raised]})
        return {"monitor_flags": float(len(raised))}

    def stop_reason(
        self, step: int, prompts: list[Any], texts: list[str], record: dict[str, float]
    ) -> str | None:
        """Why the run stops after this step, or None to go on; every process stops together."""
        fired = bool(self.fired) and self.stop_on_flag
        if self.monitor is not None and any_process(self.accelerator, fired):
            return "reward-hacking monitor: " + (
                "; ".join(f"{f.name} ({f.explanation})" for f in self.fired)
                or "fired on another process"
            )
        if self.on_samples is not None:
            reason = self.on_samples(step, prompts, texts, record)
            if any_process(self.accelerator, bool(reason)):  # the main process decides
                return reason or "stopped by the monitor on the main process"
        return None
