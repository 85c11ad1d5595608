"""Checkpoints that survive SIGKILL, and the final model with its manifest.

A checkpoint is written to a temporary folder, flushed, and renamed into place, so the
latest complete ``checkpoint-STEP`` is always loadable. It holds the trainable weights (the
adapter, or every weight), the optimizer and schedule states and every RNG state; the data
position is the step itself, since batches are a pure function of (seed, epoch).
"""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rlhfkit.errors import UserError

if TYPE_CHECKING:
    from accelerate import Accelerator

    from rlhfkit.train.loop import LoopConfig


def trainable_state(model) -> dict[str, Any]:
    return {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}


def save_checkpoint(
    out: Path, step: int, model, optimizer, scheduler, extra: dict | None = None
) -> Path:
    """Atomically write ``checkpoint-STEP``: trainable weights, optimizer, schedule, RNG."""
    import numpy as np
    import torch

    target = out / f"checkpoint-{step:06d}"
    tmp = out / f".checkpoint-{step:06d}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    torch.save(
        {
            "step": step,
            "weights": trainable_state(model),
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "rng": {
                "python": random.getstate(),
                "numpy": np.random.get_state(),
                "torch": torch.get_rng_state(),
            },
            **(extra or {}),
        },
        tmp / "state.pt",
    )
    with (tmp / "state.pt").open("rb") as f:
        os.fsync(f.fileno())
    shutil.rmtree(target, ignore_errors=True)
    os.replace(tmp, target)
    for old in sorted(out.glob("checkpoint-*"))[:-2]:  # keep the last two
        shutil.rmtree(old, ignore_errors=True)
    return target


def latest_checkpoint(out: Path) -> Path | None:
    found = sorted(p for p in out.glob("checkpoint-*") if (p / "state.pt").exists())
    return found[-1] if found else None


def load_checkpoint(path: Path, model, optimizer, scheduler) -> dict[str, Any]:
    import numpy as np
    import torch

    state = torch.load(path / "state.pt", weights_only=False)
    params = dict(model.named_parameters())
    with torch.no_grad():
        for name, value in state["weights"].items():
            params[name].copy_(value)
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    random.setstate(state["rng"]["python"])
    np.random.set_state(state["rng"]["numpy"])
    torch.set_rng_state(state["rng"]["torch"])
    return state


@dataclass
class MetricsLog:
    """Appends one JSON line per step to metrics.jsonl (and to an optional tracker)."""

    path: Path
    report_to: str = "none"
    _tracker: Any = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if self.report_to == "tensorboard":
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:
                raise UserError("--report-to tensorboard needs `pip install tensorboard`") from None
            self._tracker = SummaryWriter(str(self.path.parent / "tensorboard"))
        elif self.report_to in ("mlflow", "trackio"):
            try:
                self._tracker = __import__(self.report_to)
            except ImportError:
                raise UserError(f"--report-to {self.report_to} needs it installed") from None
            if self.report_to == "trackio":
                self._tracker.init(project="rlhfkit", name=self.path.parent.name)

    def truncate_after(self, step: int) -> None:
        """Forget lines past `step` (a resumed run rewrites them)."""
        if not self.path.exists():
            return
        keep = [ln for ln in self.path.read_text().splitlines() if json.loads(ln)["step"] <= step]
        self.path.write_text("".join(ln + "\n" for ln in keep))

    def write(self, record: dict[str, Any]) -> None:
        with self.path.open("a") as f:
            f.write(json.dumps(record) + "\n")
        step = record["step"]
        numbers = {k: v for k, v in record.items() if isinstance(v, int | float) and k != "step"}
        if self.report_to == "tensorboard":
            for k, v in numbers.items():
                self._tracker.add_scalar(k, v, step)
        elif self.report_to == "mlflow":
            self._tracker.log_metrics(numbers, step=step)
        elif self.report_to == "trackio":
            self._tracker.log(numbers, step=step)


def code_version() -> str:
    from rlhfkit import __version__

    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=Path(__file__).parent,
            capture_output=True,
            text=True,
            timeout=5,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        commit = ""
    return f"{__version__}+{commit}" if commit else __version__


def save_final(
    out: Path, model, tokenizer, cfg: LoopConfig, kind: str, accelerator: Accelerator, **extra
) -> Path:
    """The finished model as an ordinary HF folder, with a manifest of what made it."""
    from rlhfkit.lineage import sha256_file

    final = out / "final"
    accelerator.wait_for_everyone()
    if not accelerator.is_main_process:
        return final
    tmp = out / ".final.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    model = accelerator.unwrap_model(model)
    if cfg.lora and cfg.merge_lora:
        model = model.merge_and_unload()
    model.save_pretrained(str(tmp), safe_serialization=True)
    tokenizer.save_pretrained(str(tmp))
    data = Path(cfg.data)
    manifest = {
        "kind": kind,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "code_version": code_version(),
        "base_model": cfg.model,
        "adapter_only": cfg.lora and not cfg.merge_lora,
        "inputs": {
            "data": {"path": str(data), "sha256": sha256_file(data) if data.is_file() else None}
        },
        "config": {k: str(v) if isinstance(v, Path) else v for k, v in asdict(cfg).items()},
        **extra,
    }
    (tmp / "rlhfkit-manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    shutil.rmtree(final, ignore_errors=True)
    os.replace(tmp, final)
    return final
