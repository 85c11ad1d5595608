"""The demo: `rlhfkit run` on the bundled support-replies project, with the simulated panel
(`panel.py`) as its labeler.

Every setting of the run is in the bundled spec (``templates/support_replies.toml``): the
sizes, and anything the demo sets apart from rlhfkit's defaults, each with its reason. The
demo adds only what a spec cannot hold: where the run goes (``runs/demo``, with the project
scaffolded in ``runs/demo/project``), the simulated panel, and `--quick`'s smaller sizes
(`QUICK`, applied like `rlhfkit run --set`).
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from rlhfkit.annotate import Policy
from rlhfkit.data import load, write_jsonl
from rlhfkit.demo.panel import default_panel
from rlhfkit.lineage import config_hash, sha256_file
from rlhfkit.pipeline.annotation import Labeler
from rlhfkit.pipeline.log import StageLog
from rlhfkit.pipeline.plan import Plan, RunOptions
from rlhfkit.pipeline.run import plan_run
from rlhfkit.project import SPEC_FILE, Project
from rlhfkit.templates import init_project

PANEL_SIZE = 5

QUICK: dict[str, Any] = {
    "generate.limit": 24,
    "generate.n": 2,
    "generate.max_new_tokens": 48,
    "annotation.calibration_size": 12,
    "train.sft.max_steps": 6,
    "train.reward.epochs": 1.0,
    "train.ppo.max_steps": 2,
    "train.ppo.batch_size": 4,
    "train.ppo.max_new_tokens": 48,
    "eval.limit": 10,
    "eval.samples": 1,
    "eval.batch_size": 10,
    "eval.max_new_tokens": 48,
}
"""`--quick`: the same stages, smaller (2 to 5 minutes on two cores)."""
QUICK_ANCHORS = 8
"""`--quick` keeps the first 8 of the project's 64 anchor pairs."""


@dataclass(frozen=True)
class DemoConfig:
    root: Path = Path("runs/demo")
    """Where the demo's run folder goes (the project, every stage's output, the report)."""
    quick: bool = False
    """Smaller everything, same stages."""
    precision: str = "auto"
    """auto, bf16 or fp32 for training and candidate sampling (evaluations run in fp32)."""
    seed: int = 0
    """Added to every seed of the run: another seed is another run of the same experiment."""


def support_panel(project: Project, policy: Policy, seed: int) -> list:
    """The demo's five simulated annotators. The drifter turns careless once calibration
    is behind it, so that the gate passes and the drift shows in the main round's anchors."""
    return default_panel(PANEL_SIZE, seed=seed, drift_after=policy.calibration_size + 10)


def _code_hash(*names: str) -> str:
    """A hash of files of the demo and its template: a new version reruns what they feed."""
    files = {
        "panel.py": Path(__file__).parent / "panel.py",
        **{n: Path(str(resources.files("rlhfkit.templates").joinpath(n))) for n in names},
    }
    return config_hash({name: sha256_file(path) for name, path in files.items()})


PANEL = Labeler(support_panel, "simulated panel (rlhfkit.demo.panel)", _code_hash())


def scaffold(cfg: DemoConfig) -> Path:
    """The example project in ``ROOT/project``, scaffolded again when the template changed."""
    project = cfg.root / "project"
    log = StageLog.open(cfg.root / "stages.json")
    inputs = {
        "template": _code_hash("support_replies.toml", "support_replies.py"),
        "anchors": QUICK_ANCHORS if cfg.quick else None,
    }
    if log.changed("project", inputs) and project.exists():
        shutil.rmtree(project)  # a new version of the example: scaffold it again

    def make() -> None:
        if project.exists():
            shutil.rmtree(project)
        init_project(project)
        if cfg.quick:
            anchors = project / "data" / "anchors.jsonl"
            write_jsonl(anchors, load(anchors).rows[:QUICK_ANCHORS])

    cfg.root.mkdir(parents=True, exist_ok=True)
    log.run("project", inputs, make, outputs=(project / SPEC_FILE,))
    return project


def demo_plan(cfg: DemoConfig, model: str | None = None) -> Plan:
    """Scaffold the project, then the plan of `rlhfkit run` on it with the panel."""
    project = scaffold(cfg)
    precision = None if cfg.precision == "auto" else cfg.precision  # else the spec's
    options = RunOptions(model=model, precision=precision, seed=cfg.seed)
    overrides = QUICK if cfg.quick else None
    return plan_run(project, cfg.root, labeler=PANEL, options=options, overrides=overrides)
