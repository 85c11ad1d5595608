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
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rlhfkit import __version__, strict_json
from rlhfkit.criteria import LOCK_FILE, read_lock
from rlhfkit.data.io import atomic_dir
from rlhfkit.errors import UserError
from rlhfkit.lineage import config_hash, write_manifest
from rlhfkit.project import load_project
from rlhfkit.train.configs import LoopConfig
from rlhfkit.train.scoring import ModelScorer

if TYPE_CHECKING:
    from accelerate import Accelerator


@dataclass
class TrainResult:
    """What a trainer returns: the final model's folder and how the run went."""

    final: Path
    last: dict
    """The last step's metrics ({} when a resumed run had no step left)."""
    truncated: int
    """Completions cut at max_length."""
    examples: int
    stopped_early: str | None = None
    """Why PPO stopped before its last step (None: it did not)."""


def resume_fingerprint(cfg: LoopConfig, inputs: dict[str, Any]) -> str:
    return config_hash({**{k: getattr(cfg, k) for k in cfg.resume_keys()}, **inputs})


def _sharded(accelerator) -> bool:
    """FSDP and DeepSpeed shard weights and optimizer state over ranks: Accelerate must save."""
    return accelerator.distributed_type.value in ("FSDP", "DEEPSPEED")


def _rng_state() -> dict[str, Any]:
    import numpy as np
    import torch

    state = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    import numpy as np
    import torch

    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(
    out: Path,
    step: int,
    accelerator,
    module,
    optimizer,
    scheduler,
    fingerprint: str,
    state: dict[str, Any] | None = None,
) -> Path:
    """Atomically write ``checkpoint-STEP``; every process calls this.

    Single process and DDP: rank 0 writes the trainable weights (the adapter alone with LoRA),
    optimizer, schedule and RNG states. FSDP/DeepSpeed: Accelerate's `save_state` writes each
    rank's shards. Either way the folder appears under its final name only when complete.
    """
    import torch

    target = out / f"checkpoint-{step:06d}"
    tmp = out / f".checkpoint-{step:06d}.tmp"
    meta = {"step": step, "fingerprint": fingerprint, "state": state or {}}
    if accelerator.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    accelerator.wait_for_everyone()
    if _sharded(accelerator):
        accelerator.save_state(str(tmp))
    elif accelerator.is_main_process:
        model = accelerator.unwrap_model(module)
        weights = {n: p.detach().cpu() for n, p in model.named_parameters() if p.requires_grad}
        saved = {
            "weights": weights,
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "rng": _rng_state(),
        }
        torch.save(saved, tmp / "state.pt")
        with (tmp / "state.pt").open("rb") as f:
            os.fsync(f.fileno())
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        (tmp / "meta.json").write_text(strict_json.dumps(meta))
        shutil.rmtree(target, ignore_errors=True)
        os.replace(tmp, target)
        for old in sorted(out.glob("checkpoint-*"))[:-2]:  # keep the last two
            shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()
    return target


def latest_checkpoint(out: Path) -> Path | None:
    found = sorted(p for p in out.glob("checkpoint-*") if (p / "meta.json").exists())
    return found[-1] if found else None


def load_checkpoint(
    path: Path, accelerator, module, optimizer, scheduler, fingerprint: str
) -> tuple[int, dict[str, Any]]:
    """Restore a checkpoint into the prepared objects; return its step and trainer state."""
    import torch

    meta = json.loads((path / "meta.json").read_text())
    if meta["fingerprint"] != fingerprint:
        raise UserError(
            f"{path}: was made with other data or settings (batch size, seed, steps, "
            "learning rate, LoRA, max length or precision); resuming would train another run",
            hint="rerun with the original settings, or start afresh in another --output-dir",
        )
    if _sharded(accelerator):
        accelerator.load_state(str(path))
        return meta["step"], meta.get("state", {})
    state = torch.load(path / "state.pt", map_location="cpu", weights_only=False)
    params = dict(accelerator.unwrap_model(module).named_parameters())
    with torch.no_grad():
        for name, value in state["weights"].items():
            params[name].copy_(value)
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    _set_rng_state(state["rng"])
    return meta["step"], meta.get("state", {})


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
        """Forget lines past `step` (a resumed run rewrites them), and any line a kill cut."""
        if not self.path.exists():
            return
        keep = []
        for line in self.path.read_text().splitlines():
            try:
                if json.loads(line)["step"] <= step:
                    keep.append(line)
            except (json.JSONDecodeError, KeyError, TypeError):
                continue
        self.path.write_text("".join(ln + "\n" for ln in keep))

    def write(self, record: dict[str, Any]) -> None:
        with self.path.open("a") as f:
            f.write(strict_json.dumps(strict_json.nulled(record)) + "\n")  # a diverged loss
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


def frozen_criteria_hash(project: Path | None) -> str | None:
    """The hash the project's success criteria were frozen with: the caller that started
    training froze them (evaluate/criteria.py's `freeze_for_training`)."""
    if project is None:
        return None
    record = read_lock(load_project(project).artifacts(LOCK_FILE))
    return None if record is None else record["criteria_hash"]


def save_final(
    out: Path, module, tokenizer, cfg: LoopConfig, kind: str, accelerator: Accelerator, **extra
) -> Path:
    """The finished model as an ordinary HF folder, with a manifest of what made it.

    Every process calls this: under FSDP/DeepSpeed, gathering the full weights needs them all.
    `module` is the prepared module: a `ModelScorer` around the model, or the model.
    """
    final = out / "final"
    state = accelerator.get_state_dict(module) if _sharded(accelerator) else None
    accelerator.wait_for_everyone()
    if not accelerator.is_main_process:
        accelerator.wait_for_everyone()
        return final
    unwrapped = accelerator.unwrap_model(module)
    model = unwrapped.model if isinstance(unwrapped, ModelScorer) else unwrapped
    if state is not None and model is not unwrapped:
        state = {k.removeprefix("model."): v for k, v in state.items()}
    if cfg.lora and cfg.merge_lora:
        if state is not None:
            model.load_state_dict(state)
            state = None
        model = model.merge_and_unload()
    with atomic_dir(final) as tmp:
        model.save_pretrained(str(tmp), safe_serialization=True, state_dict=state)
        tokenizer.save_pretrained(str(tmp))
        write_manifest(
            tmp,
            kind=kind,
            inputs={"data": Path(cfg.data)},
            config={k: str(v) if isinstance(v, Path) else v for k, v in asdict(cfg).items()},
            code_version=code_version(),
            base_model=cfg.model,
            adapter_only=cfg.lora and not cfg.merge_lora,
            criteria_hash=frozen_criteria_hash(cfg.project),
            **extra,
        )
    accelerator.wait_for_everyone()
    return final
