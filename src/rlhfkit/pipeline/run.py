"""`rlhfkit run`: a project's whole loop from its spec, resumable stage by stage.

Stages, in order (those the spec asks for): sft (when data.sft is set), candidates, annotate,
rm (+ `eval rm` on held-out prompts), ppo and/or dpo ([run] policies), eval_ppo / eval_dpo
(`eval policy` against the starting model), report. A rerun skips a stage whose fingerprint
(its effective config, input files and upstream outputs) is unchanged and whose outputs are
still there; a changed input reruns exactly the stages downstream of it; a training stage cut
off midway resumes from its last checkpoint. With people labelling, the annotate stage stops
the run (see `annotation.py`) and a later run goes on from there.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from rlhfkit.doctor.verdict import Check
from rlhfkit.errors import UserError, display_path
from rlhfkit.models import resolve
from rlhfkit.pipeline.annotation import Labeler, Waiting
from rlhfkit.pipeline.doctor import after_stage
from rlhfkit.pipeline.layout import RunPaths
from rlhfkit.pipeline.log import StageLog
from rlhfkit.pipeline.plan import Plan, RunOptions, Stage, make_plan
from rlhfkit.pipeline.preflight import check_callables, check_subsets, spec_labeler
from rlhfkit.pipeline.stages import run_stage
from rlhfkit.project import load_project


class Display(Protocol):
    """How a run shows itself (the CLI's progress bars or plain lines)."""

    def stage(self, stage: Stage, index: int, total: int) -> None: ...

    def progress(self, *args: Any) -> None:
        """training (step, total, metrics); sampling (done, total); eval (what, done, total)"""

    def finished(self, stage: Stage, status: str) -> None: ...


@dataclass
class RunResult:
    plan: Plan
    status: dict[str, str] = field(default_factory=dict)
    """stage -> 'ran', 'skipped (done)', 'waiting', or, in a dry run, what would happen."""
    waiting: str | None = None
    """What people still have to do, when the annotate stage stopped the run."""
    seconds: dict[str, float] = field(default_factory=dict)
    doctor: dict[str, list[Check]] = field(default_factory=dict)
    """stage -> the doctor's verdicts it made measurable (see `pipeline/doctor.py`)."""
    stopped: str | None = None
    """Why the doctor stopped the run before people label."""


def plan_run(
    project_dir: Path | str,
    run_dir: Path | None = None,
    *,
    labeler: Labeler | None = None,
    options: RunOptions = RunOptions(),
    overrides: dict[str, Any] | None = None,
) -> Plan:
    """Load the project (with `overrides`) and compose every stage's config; every function
    the spec names and every criterion's applies_to are checked here, before any stage."""
    project = load_project(Path(project_dir).resolve(), overrides)  # one name per folder
    labeler = labeler or spec_labeler(project)
    _check_overrides(overrides or {}, labeler)
    check_callables(project)
    root = Path(run_dir).resolve() if run_dir else project.root / "run"
    paths = RunPaths(root, project.root)
    plan = make_plan(paths, project, labeler, options)
    check_subsets(plan)
    return plan


SETTABLE = ("generate", "train", "eval", "run", "data")
"""What `--set` may change: what the stages take from the composed spec. The rest (the
criteria, [monitors], the task) is read from rlhfkit.toml by the stages themselves."""


def _check_overrides(overrides: dict[str, Any], labeler: Labeler) -> None:
    for key in overrides:
        table = key.split(".")[0]
        if table in ("annotation", "rubric") and labeler.panel is not None:
            continue  # the simulated panel's app is given this run's spec
        if table not in SETTABLE:
            where = (
                "people label in `rlhfkit annotate serve`, which reads rlhfkit.toml itself"
                if table in ("annotation", "rubric")
                else "the stages read it from rlhfkit.toml (use --model for base_model)"
            )
            raise UserError(f"--set {key}: {where}; change it there")


def run_pipeline(
    plan: Plan,
    *,
    until: str | None = None,
    start_at: str | None = None,
    dry_run: bool = False,
    display: Display | None = None,
    ignore_doctor: bool = False,
) -> RunResult:
    """Run the plan's stages in order (from `start_at`, forced to run again, to `until`);
    the doctor checks after each, and stops before people label pairs that failed it
    (unless `ignore_doctor`, which doctor.json records)."""
    names = plan.names
    for given, flag in ((until, "--until"), (start_at, "--from")):
        if given is not None and given not in names:
            raise UserError(f"{flag} {given}: this project's stages are {', '.join(names)}")
    last = names.index(until) if until else len(names) - 1
    if start_at is not None and names.index(start_at) > last:
        raise UserError(f"--from {start_at} comes after --until {until}: nothing would run")
    chosen = plan.stages[: last + 1]
    log = StageLog.open(plan.paths.stages)
    if dry_run:
        return _dry_run(plan, chosen, log, start_at)
    plan.paths.root.mkdir(parents=True, exist_ok=True)
    resolve(plan.base)  # a bundled model is converted once, before the first stage needs it
    result = RunResult(plan)
    for index, stage in enumerate(chosen):
        if display:
            display.stage(stage, index, len(chosen))
        status = _run_one(plan, stage, log, stage.name == start_at, display, result)
        result.status[stage.name] = status
        if display:
            display.finished(stage, status)
        if status == "waiting":
            break
        people_next = plan.labeler.panel is None and "annotate" in plan.names[index + 1 : last + 1]
        checks, result.stopped = after_stage(
            plan.paths, plan.project, stage.name, people_next, ignore_doctor
        )
        result.doctor[stage.name] = checks
        if result.stopped:
            break
    result.seconds = log.seconds()
    return result


def _run_one(
    plan: Plan, stage: Stage, log: StageLog, force: bool, display, result: RunResult
) -> str:
    inputs = stage.fingerprint_inputs(_upstream(stage, log), plan.paths.root)
    rerun = force or not log.done(stage.name, inputs, stage.outputs)
    if stage.name == "candidates" and rerun:
        _keep_peoples_labels(plan)
    if force or log.changed(stage.name, inputs):
        for path in stage.clear:  # other inputs than the last run's: start that stage over
            _remove(path)
    progress: Callable[..., None] | None = display.progress if display else None

    def work() -> None:
        run_stage(plan, stage, progress, log.seconds())

    try:
        ran = log.run(stage.name, inputs, work, stage.outputs, force=force)
    except Waiting as w:
        result.waiting = str(w)
        return "waiting"
    return "ran" if ran else "skipped (done)"


def _keep_peoples_labels(plan: Plan) -> None:
    """New candidates would orphan the labels people gave the old ones: refuse, before
    anything is cleared."""
    imported = plan.paths.annotation / "imported.json"
    if imported.exists():
        raise UserError(
            "the candidate pairs would be sampled again (an input of theirs changed, or "
            f"--from), but people have been labelling them ({display_path(imported)}); "
            "to start over, move the annotation store and that file aside; to keep the "
            "labels, undo the change"
        )


def _remove(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path)
    elif path.exists():
        path.unlink()


def _dry_run(plan: Plan, chosen: list[Stage], log: StageLog, start_at: str | None) -> RunResult:
    """What a run would do, and why, without running anything."""
    result = RunResult(plan)
    reruns: set[str] = set()
    for stage in chosen:
        why = _why(stage, log, reruns, start_at, plan.paths.root)
        if why:
            reruns.add(stage.name)
        result.status[stage.name] = f"would run: {why}" if why else "skip (done)"
    return result


def _upstream(stage: Stage, log: StageLog) -> dict[str, str]:
    return {s: log.output_key(s) for s in stage.after}


def _why(stage: Stage, log: StageLog, reruns: set[str], start_at: str | None, root: Path) -> str:
    """Why a stage would run ('' if it would not)."""
    if stage.name == start_at:
        return "--from"
    upstream = [s for s in stage.after if s in reruns]
    if upstream:
        return f"{', '.join(upstream)} reruns"
    record = log.records.get(stage.name)
    if not record:
        return "never ran"
    inputs = stage.fingerprint_inputs(_upstream(stage, log), root)
    if "fingerprint" not in record:
        changed = log.changed(stage.name, inputs)
        return "started with other inputs (starts over)" if changed else "started (resumes)"
    if not log.done(stage.name, inputs):
        changed = log.changes(stage.name, inputs)
        upstream = [k.removeprefix("after.") for k in changed if k.startswith("after.")]
        own = [k for k in changed if not k.startswith("after.")]
        parts = [f"changed: {', '.join(own[:6])}"] if own else []
        parts += [f"{', '.join(upstream)} ran again since"] if upstream else []
        return "; ".join(parts) or "changed: its inputs"
    missing = [str(p) for p in stage.outputs if not p.exists()]
    return f"output missing: {missing[0]}" if missing else ""
