"""What each stage of `rlhfkit run` does, given its composed config (see `plan.py`).

Every stage calls the same Python function as the command it stands for (`train_sft`,
`generate_candidates`, the annotation store and app, `evaluate_reward_model`, `train_ppo`,
`train_dpo`, `evaluate_policy`, `write_report`), so `run` is exactly what a team would type
by hand. Training stages resume from their last checkpoint.
"""

from __future__ import annotations

from typing import Any

from rlhfkit import strict_json
from rlhfkit.data import load
from rlhfkit.data.io import atomic_open
from rlhfkit.evaluate.criteria import freeze_for_training
from rlhfkit.evaluate.policy import evaluate_policy
from rlhfkit.evaluate.rm import evaluate_reward_model
from rlhfkit.generate import generate_candidates
from rlhfkit.pipeline.annotation import annotate
from rlhfkit.pipeline.pilot import PanelSettings, PilotConfig, run_pilot
from rlhfkit.pipeline.plan import Plan, Progress, Stage, pilot_judge
from rlhfkit.pipeline.summary import summary
from rlhfkit.report.html import write_report
from rlhfkit.report.inputs import load_run
from rlhfkit.train.dpo import train_dpo
from rlhfkit.train.ppo import train_ppo
from rlhfkit.train.reward import train_reward
from rlhfkit.train.sft import train_sft

TRAINERS = {"sft": train_sft, "rm": train_reward, "ppo": train_ppo, "dpo": train_dpo}


def run_stage(plan: Plan, stage: Stage, progress: Progress | None, seconds: dict) -> Any:
    """Run one stage of the plan."""
    p = plan.paths
    if stage.name in TRAINERS:
        freeze_for_training(stage.config)  # the first training stage freezes the criteria
        result = TRAINERS[stage.name](stage.config, progress)
        if stage.name == "rm":
            return _eval_rm(plan)
        return result
    if stage.name == "candidates":
        return _candidates(plan, stage, progress)
    if stage.name == "pilot":
        return _pilot(plan, progress)
    if stage.name == "annotate":
        return annotate(p, plan.project, plan.labeler, seed=plan.options.seed)
    if stage.name.startswith("eval_"):
        return evaluate_policy(stage.config, progress).to_json()
    if stage.name == "report":
        written = write_report(load_run(p.root, project=plan.project.root), p.report)
        write_json(p.root / "summary.json", summary(p, seconds, pilot="pilot" in plan.names))
        return written.html
    raise ValueError(f"no such stage: {stage.name}")


def _candidates(plan: Plan, stage: Stage, progress: Progress | None) -> Any:
    gen, (base, start_samples) = plan.project.spec.generate, stage.inputs["start"]
    trained = str(plan.paths.final("sft")) if plan.project.spec.data.sft else plan.base
    return generate_candidates(
        trained,
        plan.project.data_path("prompts"),
        plan.paths.candidates,
        stage.config,
        limit=gen.limit,
        all_pairs=gen.all_pairs,
        on_progress=progress,
        compare_with=base if start_samples else None,
        compare_n=max(start_samples, 1),
    )


def _pilot(plan: Plan, progress: Progress | None) -> dict[str, Any]:
    """`rlhfkit annotate pilot` on the run's candidates, in the run's pilot/ folder."""
    cfg = PilotConfig(
        out=plan.paths.root / "pilot",
        pairs=plan.paths.candidates,
        panel=PanelSettings.for_project(plan.project),
        seed=plan.options.seed,
        model=plan.base,
        precision=plan.options.precision,
    )
    found = run_pilot(plan.project, pilot_judge(plan), cfg, progress)
    return {k: found[k] for k in ("gate", "agreement", "reward_model", "warnings")}


def _eval_rm(plan: Plan) -> dict[str, Any] | None:
    """`eval rm` on the held-out prompts' pairs, broken down by pairing and topic."""
    p = plan.paths
    if not p.prefs_heldout.read_text().strip():
        return None  # nothing held out to check on ([run] heldout_share = 0, or few prompts)
    rows = load(p.prefs_heldout).rows
    slices = tuple(c for c in ("pairing", "topic") if any(c in r for r in rows))
    found = evaluate_reward_model(str(p.final("rm")), p.prefs_heldout, slices=slices)
    found = found.to_json()  # the record as eval_rm.json holds it
    write_json(p.rm / "eval_rm.json", found)
    return found


def write_json(path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_open(path) as f:
        strict_json.dump(strict_json.nulled(data), f, indent=2, default=str)
