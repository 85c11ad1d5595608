"""The plan of a run: every stage of the project's loop with its composed config.

`make_plan` composes all of them before anything runs, so a bad setting anywhere in the spec
fails at once, not an hour in. A stage's fingerprint is the hash of its effective config, its
input files and the output keys of the stages it reads from (see `log.py`): there is no
second, hand-written list of settings to drift from what the stage runs.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rlhfkit.errors import UserError, display_path
from rlhfkit.generate import SamplingConfig
from rlhfkit.lineage import sha256_file
from rlhfkit.pipeline.annotation import Labeler, code_hash
from rlhfkit.pipeline.compose import effective, eval_config, train_config
from rlhfkit.pipeline.layout import RunPaths
from rlhfkit.pipeline.pilot_judges import CodeJudge, PilotJudge, make_pilot_judge
from rlhfkit.project import Project
from rlhfkit.train.loop import resolve_precision

ABOUT = {
    "sft": "stage 1: supervised fine-tuning",
    "candidates": "sample candidate reply pairs",
    "pilot": "a SIMULATED pilot of the rubric: gate, agreement, a tiny RM",
    "annotate": "label the pairs, export preferences",
    "rm": "stage 2: reward model + eval rm on held-out prompts",
    "ppo": "stage 3: PPO with a KL penalty",
    "dpo": "DPO on the preferences",
    "eval_ppo": "eval policy: PPO against its start",
    "eval_dpo": "eval policy: DPO against its start",
    "report": "the report and summary.json",
}


@dataclass(frozen=True)
class RunOptions:
    """What the command line adds to the spec."""

    model: str | None = None
    """Base model instead of the spec's (tests: tiny-random)."""
    precision: str | None = None
    """Training and candidate sampling precision for every stage (auto, bf16, fp32)."""
    seed: int = 0
    """Added to every seed of the run: another seed is another run of the same experiment."""


@dataclass
class Stage:
    name: str
    after: tuple[str, ...]
    """Upstream stages: their output keys are part of this stage's fingerprint."""
    config: Any = None
    """The typed config the stage runs (None for annotate and report)."""
    inputs: dict[str, Any] = field(default_factory=dict)
    """Everything else it is made from: input files' hashes, settings outside its config."""
    outputs: tuple[Path, ...] = ()
    clear: tuple[Path, ...] = ()
    """Removed before the stage reruns with other inputs (a stale half-run must not resume)."""

    @property
    def about(self) -> str:
        return ABOUT[self.name]

    def fingerprint_inputs(self, upstream: dict[str, str], root: Path) -> dict[str, Any]:
        """What the stage is made from; paths relative to the run folder `root`."""
        config = effective(self.config, root) if self.config is not None else None
        return {"config": config, **self.inputs, "after": {s: upstream[s] for s in self.after}}


@dataclass
class Plan:
    paths: RunPaths
    project: Project
    labeler: Labeler
    options: RunOptions
    base: str
    stages: list[Stage]

    def stage(self, name: str) -> Stage:
        return next(s for s in self.stages if s.name == name)

    @property
    def names(self) -> list[str]:
        return [s.name for s in self.stages]


def make_plan(paths: RunPaths, project: Project, labeler: Labeler, options: RunOptions) -> Plan:
    spec = project.spec
    if labeler.panel is not None and spec.run.labeler != "people":
        _enough_annotators(project)
    base = options.model or spec.base_model
    start = str(paths.final("sft")) if spec.data.sft else base
    plan = Plan(paths, project, labeler, options, base, [])
    if spec.data.sft:
        plan.stages.append(_sft(plan))
    plan.stages.append(_candidates(plan, start))
    if spec.run.pilot:
        plan.stages.append(_pilot(plan))
    plan.stages += [_annotate(plan), _rm(plan, start)]
    for policy in ("ppo", "dpo"):
        if policy in spec.run.policies:
            plan.stages.append(_policy(plan, policy, start))
    for policy in ("ppo", "dpo"):
        if policy in spec.run.policies:
            plan.stages.append(_evaluation(plan, policy, start))
    done = tuple(s.name for s in plan.stages)
    plan.stages.append(Stage("report", done, outputs=(paths.report, paths.root / "summary.json")))
    return plan


def _enough_annotators(project: Project) -> None:
    run, overlap = project.spec.run, project.spec.annotation.overlap
    if run.simulated_annotators < overlap:
        raise UserError(
            f"{display_path(project.spec_path)}: run.simulated_annotators is "
            f"{run.simulated_annotators}, fewer than annotation.overlap ({overlap}): no pair "
            "would get its labels; raise the one or lower the other"
        )


def _train(plan: Plan, stage: str, **explicit: Any):
    """A training stage's config: the spec's [train.*], the run's paths, the options."""
    cfg = train_config(
        stage,
        plan.project,
        output_dir=plan.paths.policy(stage),
        resume=True,
        project=plan.project.root,
        **explicit,
    )
    precision = plan.options.precision or cfg.precision
    # resolved here, so the fingerprint and the manifest say what ran, not "auto"
    return dataclasses.replace(
        cfg, precision=resolve_precision(precision), seed=cfg.seed + plan.options.seed
    )


def _sft(plan: Plan) -> Stage:
    data = plan.project.data_path("sft")
    cfg = _train(plan, "sft", model=plan.base, data=data)
    return Stage(
        "sft",
        (),
        cfg,
        {"data": sha256_file(data)},
        outputs=(plan.paths.final("sft"),),
        clear=(plan.paths.sft,),
    )


def sampling_config(plan: Plan) -> SamplingConfig:
    gen = plan.project.spec.generate
    precision = plan.options.precision or gen.precision
    return SamplingConfig.from_spec(
        gen, precision=resolve_precision(precision), seed=gen.seed + plan.options.seed
    )


def _candidates(plan: Plan, start: str) -> Stage:
    spec = plan.project.spec
    prompts = plan.project.data_path("prompts")
    # the starting model's replies join the trained one's, when SFT made them differ
    start_samples = spec.generate.start_samples if spec.data.sft else 0
    inputs = {
        "prompts": sha256_file(prompts),
        "limit": spec.generate.limit,
        "all_pairs": spec.generate.all_pairs,
        "start": [plan.base, start_samples],
    }
    candidates = plan.paths.candidates
    return Stage(
        "candidates",
        ("sft",) if spec.data.sft else (),
        sampling_config(plan),
        inputs,
        outputs=(candidates,),
        clear=(candidates, candidates.with_name(f".{candidates.name}.partial")),
    )


def _pilot(plan: Plan) -> Stage:
    """The pilot ([run] pilot): its judge is made here once, so that a bad one fails before
    anything runs; the stage makes it again (`pilot_judge`)."""
    spec, p = plan.project.spec, plan.paths
    judge = pilot_judge(plan)
    anchors = plan.project.data_path("anchors") if spec.data.anchors else None
    inputs = {
        "judge": judge.describe(),
        "code": code_hash(judge.fn) if isinstance(judge, CodeJudge) else None,
        "task": spec.task,
        "rubric": spec.rubric.model_dump(mode="json"),
        "criteria": spec.criteria_hash(),
        "annotation": spec.annotation.model_dump(mode="json"),
        "anchors": sha256_file(anchors) if anchors else None,
        "panel": [spec.run.simulated_annotators, spec.run.simulated_noise],
        "rm": [plan.base, plan.options.precision, spec.train.reward],
        "seed": plan.options.seed,
    }
    pilot = p.root / "pilot"
    return Stage("pilot", ("candidates",), None, inputs, outputs=(pilot / "pilot.json",))


def pilot_judge(plan: Plan) -> PilotJudge:
    value = plan.project.spec.run.pilot or "rule"
    return make_pilot_judge(value, plan.project, setting=f'[run] pilot = "{value}"')


def _annotate(plan: Plan) -> Stage:
    spec = plan.project.spec
    anchors = plan.project.data_path("anchors") if spec.data.anchors else None
    run = spec.run
    inputs = {
        "rubric": spec.rubric.model_dump(mode="json"),
        "annotation": spec.annotation.model_dump(mode="json"),
        "split": [run.heldout_share, run.anchors_as_training, run.dpo_pairs],
        "anchors": sha256_file(anchors) if anchors else None,
        "labeler": plan.labeler.name,
        "seed": plan.options.seed,
    }
    if plan.labeler.panel is not None:  # people's labels do not change with these
        inputs["simulated"] = [plan.labeler.code, run.simulated_annotators, run.simulated_noise]
    p = plan.paths
    outputs = (p.prefs_train, p.prefs_heldout, p.prefs_dpo, p.annotation / "status.json")
    return Stage("annotate", ("candidates",), None, inputs, outputs=outputs)


def _rm(plan: Plan, start: str) -> Stage:
    p = plan.paths
    cfg = _train(plan, "rm", model=start, data=p.prefs_train)
    return Stage(
        "rm",
        ("annotate",),
        cfg,
        outputs=(p.final("rm"),),
        clear=(p.rm,),
    )


def _policy(plan: Plan, policy: str, start: str) -> Stage:
    p, spec = plan.paths, plan.project.spec
    if policy == "ppo":
        data = plan.project.data_path("prompts")
        cfg = _train(plan, "ppo", model=start, data=data, reward=[str(p.final("rm"))])
        inputs = {  # PPO measures the criteria and runs the monitors on every step
            "prompts": sha256_file(data),
            "criteria": spec.criteria_hash(),
            "monitors": spec.monitors.model_dump(mode="json"),
        }
        after = ("rm",)
    else:
        cfg = _train(plan, "dpo", model=start, data=p.prefs_dpo)
        inputs, after = {}, ("annotate",)
    if spec.data.sft:
        after = ("sft", *after)
    return Stage(policy, after, cfg, inputs, outputs=(p.final(policy),), clear=(p.policy(policy),))


def _evaluation(plan: Plan, policy: str, start: str) -> Stage:
    p, project = plan.paths, plan.project
    cfg = eval_config(
        project,
        project=project.root,
        before=start,
        after=str(p.final(policy)),
        out=p.eval(policy),
        reward_model=str(p.final("rm")),
        sample_cache=p.root / "eval" / "cache",
    )
    spec = project.spec
    gen = spec.generate
    # what eval policy would take from the spec file, taken from this run's (`--set`) spec
    cfg = dataclasses.replace(
        cfg,
        prompts=cfg.prompts or project.data_path("eval_prompts"),
        temperature=gen.temperature if cfg.temperature is None else cfg.temperature,
        max_new_tokens=cfg.max_new_tokens or gen.max_new_tokens,
        seed=(gen.seed if cfg.seed is None else cfg.seed) + plan.options.seed,
    )
    inputs = {
        "eval_prompts": sha256_file(cfg.prompts),
        "criteria": spec.criteria_hash(),
        "monitors": spec.monitors.model_dump(mode="json"),
    }
    return Stage(
        f"eval_{policy}",
        (policy, "rm"),
        cfg,
        inputs,
        outputs=(p.eval(policy) / "eval.json",),
    )


Progress = Callable[..., None]
