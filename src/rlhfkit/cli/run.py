"""`rlhfkit run` and `rlhfkit project check`: a project's whole loop from its spec."""

from __future__ import annotations

import json
import shlex
import sys
import time
import tomllib
from pathlib import Path
from typing import Any

import typer
from rich.markup import escape
from rich.table import Table

from rlhfkit import strict_json
from rlhfkit.choices import PRECISIONS, one_of
from rlhfkit.cli.common import StepProgress, console
from rlhfkit.cli.pilot import show_pilot_file
from rlhfkit.doctor.verdict import as_text
from rlhfkit.errors import UserError, display_path

SET_HELP = (
    "Override one spec setting for this run, as TABLE.KEY=VALUE with a TOML value: "
    "--set train.dpo.beta=0.2 --set run.policies='[\"dpo\"]'. Repeatable."
)


def run(
    project: Path = typer.Option(..., "--project", "-p", help="The project folder."),
    out: Path = typer.Option(None, "--out", help="The run folder (default: PROJECT/run)."),
    until: str = typer.Option(None, help="Stop after this stage (e.g. annotate, rm)."),
    start_at: str = typer.Option(
        None,
        "--from",
        help="Run this stage again even if it is done, and every stage that depends on it.",
    ),
    dry_run: bool = typer.Option(
        False, "--dry-run", help="Say what would run and why, run nothing."
    ),
    settings: list[str] = typer.Option([], "--set", help=SET_HELP),
    precision: str = typer.Option(
        None, help="Training and candidate sampling precision for every stage: auto, bf16, fp32."
    ),
    seed: int = typer.Option(
        0, help="Added to every seed of the run: another seed is another run of the experiment."
    ),
    model: str = typer.Option(None, help="Base model instead of the spec's base_model."),
    ignore_doctor: bool = typer.Option(
        False,
        "--ignore-doctor",
        help="Go on to people labelling even when the doctor fails the candidate pairs "
        "(recorded in RUN/doctor.json, with who and when).",
    ),
) -> None:
    """Run the project's loop from its spec: sft, candidates, annotate, rm (+ eval rm on
    held-out prompts), ppo and/or dpo, eval policy for each, and the report.

    Each stage runs the config its own command runs (`rlhfkit train dpo`, `rlhfkit eval
    policy`, ...), composed from the spec: the [train.sft], [train.reward], [train.ppo],
    [train.dpo] and [eval] tables take any option of those commands, by name. stages.json in
    the run folder records each stage's effective settings.

    Run it again at any time: a finished stage is skipped; a stage whose settings or inputs
    changed runs again, and so does everything downstream of it, nothing else; a training
    stage cut off midway resumes from its last checkpoint. With people labelling ([run]
    labeler = "people"), the run stops at annotate and says how to serve the app; run it
    again once they are done.

    After each stage the doctor (`rlhfkit doctor`) checks what the stage made measurable;
    when the candidate pairs fail it (the trained model never shows a behavior to
    increase, or the pairs are too alike), the run stops before people label them, with
    exit code 1, unless --ignore-doctor.
    """
    # lazy: torch, transformers and the annotation app load only when a run starts
    from rlhfkit.pipeline.plan import RunOptions
    from rlhfkit.pipeline.run import plan_run, run_pipeline

    if precision is not None and precision not in PRECISIONS:
        raise UserError(f"--precision is {one_of(PRECISIONS)}, not '{precision}'")
    options = RunOptions(model=model, precision=precision, seed=seed)
    plan = plan_run(project, out, options=options, overrides=parse_settings(settings))
    started = time.time()
    if dry_run:
        result = run_pipeline(plan, until=until, start_at=start_at, dry_run=True)
        show_plan(plan, result.status)
        from rlhfkit.cli.plan import show_summary_line  # lazy: its forecast reads the samples

        show_summary_line(plan)
        return
    with RunDisplay() as display:
        result = run_pipeline(
            plan, until=until, start_at=start_at, display=display, ignore_doctor=ignore_doctor
        )
    show_doctor(result)
    show_result(result, time.time() - started)
    if result.stopped:
        raise typer.Exit(1)


def parse_settings(items: list[str]) -> dict[str, Any]:
    """``--set table.key=value`` (a TOML value; bare words are strings) -> {key: value}."""
    out: dict[str, Any] = {}
    for item in items:
        key, eq, raw = item.partition("=")
        if not eq or not key.strip() or "." not in key:
            raise UserError(f"--set {item}: give TABLE.KEY=VALUE, e.g. train.dpo.beta=0.2")
        try:
            value = tomllib.loads(f"v = {raw}")["v"]
        except tomllib.TOMLDecodeError:
            value = raw  # a bare word: labeler=people
        out[key.strip()] = value
    return out


class RunDisplay(StepProgress):
    """One progress display for the whole run: a line per stage, then its steps."""

    def __init__(self) -> None:
        super().__init__("run", "composing the stages")

    def stage(self, stage: Any, index: int = 0, total: int = 0) -> None:  # type: ignore[override]
        if isinstance(stage, str):  # StepProgress's own use
            return super().stage(stage, "")
        super().stage(f"[{index + 1}/{total}] {stage.name}", stage.about)

    def progress(self, *args: Any) -> None:
        self(*args)

    def finished(self, stage: Any, status: str) -> None:
        """The table at the end lists every stage's status; a waiting stage says why there."""


def show_plan(plan: Any, status: dict[str, str]) -> None:
    table = Table(title=f"rlhfkit run --dry-run: {display_path(plan.paths.root)}")
    for col in ("stage", "what it does", "would"):
        table.add_column(col)
    for stage in plan.stages:
        if stage.name in status:
            table.add_row(stage.name, stage.about, status[stage.name])
    console.print(table)
    console.print("The settings each stage would run with:")
    for stage in plan.stages:
        if stage.name in status and stage.config is not None:
            from rlhfkit.pipeline.compose import effective  # lazy: pydantic

            console.print(
                f"  {stage.name}: " + strict_json.dumps(effective(stage.config, plan.paths.root)),
                soft_wrap=True,
            )


def show_doctor(result: Any) -> None:
    """The doctor's verdicts, stage by stage (`rlhfkit doctor` shows them all)."""
    for stage, checks in result.doctor.items():
        if checks:
            console.print(f"[bold]doctor, after {stage}[/bold]")
            for check in checks:
                console.print(escape(as_text(check)), soft_wrap=True)


def show_result(result: Any, wall: float) -> None:
    paths = result.plan.paths
    if result.status.get("pilot") == "ran":  # [run] pilot: SIMULATED, before people label
        show_pilot_file(paths.root / "pilot" / "pilot.json")
    if result.stopped:
        console.print(result.stopped, soft_wrap=True)
        return
    if result.waiting:
        console.print(result.waiting)
        again = " ".join(shlex.quote(a) for a in ["rlhfkit", *sys.argv[1:]])
        console.print(f"That is: {again}", soft_wrap=True)
        return
    summary_path = paths.root / "summary.json"
    if result.status.get("report") and summary_path.exists():
        show_summary(json.loads(summary_path.read_text()), display_path(paths.root))
    stages = Table(title="stages")
    for col in ("stage", "status", "seconds"):
        stages.add_column(col, justify="right" if col == "seconds" else "left")
    for name, status in result.status.items():
        secs = result.seconds.get(name)
        stages.add_row(name, status, "" if secs is None else f"{secs:.1f}")
    console.print(stages)
    console.print(f"Done in {wall:.0f} s. Run folder: {display_path(paths.root)}")
    if "report" in result.status and paths.report.exists():
        console.print(f"Report: {display_path(paths.report)}")
    elif paths.report.exists():
        console.print(f"The report ({display_path(paths.report)}) is from an earlier run.")


def show_summary(s: dict[str, Any], run_dir: str = "RUN_DIR") -> None:
    """The gate, the reward model, each policy's criteria and the stage doctor's verdicts,
    from summary.json."""
    from rlhfkit.cli.summary import (
        show_annotation,
        show_doctor_summary,
        show_policies,
        show_reward_model,
    )

    show_annotation(s)
    show_reward_model(s)
    show_policies(s)
    show_doctor_summary(s, run_dir)


def check(
    project: Path = typer.Argument(..., help="The project folder (or its rlhfkit.toml)."),
    settings: list[str] = typer.Option([], "--set", help=SET_HELP),
) -> None:
    """Check the spec and every file it names before a long step: the spec's fields, each
    stage's settings as `rlhfkit run` would compose them ([train.*], [eval]), the data files
    (format and every bad row), the anchors' answers and the labeler. Every problem is
    listed as FILE:LINE: reason (exit 2); nothing is written, no model is loaded.
    """
    from rlhfkit.pipeline.check import check_project  # lazy: pydantic, the annotation store

    result = check_project(project, parse_settings(settings))
    if result.problems:
        raise UserError("\n".join(result.problems))
    spec = result.project.spec
    where = display_path(result.project.spec_path)
    console.print(f"{where}: ok. Task: {spec.name}; base model {spec.base_model}.")
    for name, rows in result.rows.items():
        path = display_path(result.project.data_path(name))
        console.print(f"  data.{name}: {path}, {rows} rows")
    stages = ", ".join(result.plan.names) if result.plan else ""
    labeler = spec.run.labeler
    console.print(f"  stages: {stages}")
    console.print(
        "  labels: people (run stops at annotate and says how to serve the app)"
        if labeler == "people"
        else f"  labels: SIMULATED by {labeler}"
    )
    console.print(f"Next: rlhfkit run --project {display_path(result.project.root)}")
