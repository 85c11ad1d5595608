"""`rlhfkit plan`: power and cost before training."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer
from rich.markup import escape
from rich.table import Table

from rlhfkit import strict_json
from rlhfkit.cli.common import StepProgress, console
from rlhfkit.cli.run import SET_HELP, parse_settings
from rlhfkit.errors import UserError, display_path


def plan(
    project: Path = typer.Option(..., "--project", "-p", help="The project folder."),
    model: str = typer.Option(None, help="Starting model instead of the spec's base_model."),
    settings: list[str] = typer.Option([], "--set", help=SET_HELP),
    timing: bool = typer.Option(
        True,
        "--timing/--no-timing",
        help="Measure each stage's time and memory on this host (two training steps each, "
        "once; about a minute per stage on a CPU). --no-timing: base rates and power only.",
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the forecast as JSON."),
) -> None:
    """Before training: can the evaluation show what you pre-registered, and what will the run
    cost on this machine?

    1. Base rates. The starting model answers the held-out prompts exactly as `eval policy`
    will sample them ([eval] limit, samples, max_new_tokens, temperature, seed), and every
    success criterion is measured on its replies (one with applies_to, on its prompts only).

    2. Power. For each criterion, the smallest change in its direction that the evaluation's
    own test ([eval] test, default the paired sign-flip test over prompts) calls significant
    at [eval] alpha (default 0.05) in 80% of runs. A criterion that cannot move detectably is
    flagged, with the number of prompts that would detect it: a decrease from a 2% base rate
    cannot be significant on 32 prompts x 2 samples even if it vanished, because too few
    prompts show it at all. Fix it before training, while the criteria can still change: raise
    [eval] limit, or pre-register a behavior the starting model shows often enough to move.

    3. Cost. Each stage's projected wall time and peak memory on this host: the trainers run
    two steps each with the stage's settings, a sampling batch is timed, and the planned steps
    ([train.*] max_steps or epochs, the project's sizes) scale them.

    The samples and measurements are kept in the project's artifacts/plan/, so a second plan
    is instant; delete that folder to measure again. `rlhfkit run --dry-run` repeats the
    summary from there.
    """
    # lazy: the plan composes the stages (pydantic) and samples the model (torch)
    from rlhfkit.pipeline.forecast import forecast
    from rlhfkit.pipeline.plan import RunOptions
    from rlhfkit.pipeline.run import plan_run

    composed = plan_run(
        project, options=RunOptions(model=model), overrides=parse_settings(settings)
    )
    with StepProgress("plan", "base rates and timings (kept in artifacts/plan/)") as progress:
        found = forecast(composed, timing=timing, progress=progress)
    if as_json:
        typer.echo(strict_json.dumps(found.to_json(), indent=2))
        return
    show_forecast(found, display_path(composed.project.root))


def show_forecast(found: Any, project: str) -> None:
    """The forecast as tables, and every warning in words."""
    console.print(
        f"rlhfkit plan: {project}. Starting model {found.model}; the evaluation: "
        f"{found.prompts} prompts x {found.samples} samples (max {found.max_new_tokens} new "
        f"tokens, temperature {found.temperature:g}), {found.test} test at alpha "
        f"{found.alpha:g}, power {found.power:.0%}.",
        soft_wrap=True,
    )
    if found.stand_in:
        console.print(
            "  (The evaluation compares against the SFT model, which does not exist yet; the "
            "starting model's rates stand in for it.)",
            soft_wrap=True,
        )
    show_criteria(found)
    show_costs(found)
    times = (
        "Times: each trainer ran 2 steps here with the stage's settings (the second step "
        "timed; the rest is loading and saving), and one sampling batch was timed; planned "
        "steps and batches scale them. Memory: the peak resident memory of the measurement "
        "(on a GPU, torch's peak allocation)."
        if found.timed
        else "Timing not measured (--no-timing): only the evaluation's stages have a figure, "
        "from sampling the base rates; `rlhfkit plan` without --no-timing measures the rest."
    )
    console.print(
        f"Base rates: {'samples kept by an earlier plan' if found.cached else 'sampled now'} "
        f"({found.sampled_seconds:.0f} s). {times} All kept in artifacts/plan/ per host, "
        "model and settings; delete it to measure again.",
        soft_wrap=True,
    )


def show_criteria(found: Any) -> None:
    table = Table(title="success criteria before training")
    for col in ("criterion", "direction", "base rate (95% CI)", "detectable with 80% power"):
        table.add_column(col)
    for c in found.criteria:
        if c.base_rate is None:
            table.add_row(c.name, c.direction, "not measured", "?")
            continue
        rate = (
            f"{c.base_rate:.1%} ({c.hits}/{c.prompts * c.samples}; "
            f"{c.base_ci[0]:.0%}-{c.base_ci[1]:.0%})"
        )
        if c.status == "detectable":
            can = f"to {c.rate_after:.0%} or beyond"
        else:
            can = "NO: " + ("nothing to move" if c.status == "absent" else "cannot move detectably")
        table.add_row(c.name, c.direction, rate, can)
    console.print(table)
    for c in found.criteria:
        if c.status != "detectable":
            mark = "warning" if c.status in ("undetectable", "absent") else "note"
            console.print(f"  {mark}: {c.name}: {escape(c.advice)}", soft_wrap=True)


def show_costs(found: Any) -> None:
    table = Table(title="each stage on this host")
    for col in ("stage", "work", "projected time", "peak memory", "how"):
        table.add_column(
            col, justify="right" if col in ("projected time", "peak memory") else "left"
        )
    for s in found.stages:
        time_ = "" if s.seconds is None else _duration(s.seconds)
        memory = "" if s.peak_mb is None else f"{s.peak_mb / 1024:.1f} GiB"
        table.add_row(s.name, s.work, time_, memory, s.how)
    console.print(table)
    known = [s.seconds for s in found.stages if s.seconds is not None]
    if found.timed and known:
        console.print(
            f"Projected machine time: {_duration(sum(known))} (the stages with a figure; "
            "annotation by people not included).",
            soft_wrap=True,
        )


def show_summary_line(composed: Any) -> None:
    """`run --dry-run`'s word on power and cost: what an earlier `plan` found, or how to ask."""
    from rlhfkit.pipeline.forecast import cached_forecast  # lazy: detectors, pydantic

    where = display_path(composed.project.root)
    try:
        found = cached_forecast(composed)
    except UserError as e:  # a detector that fails on the kept samples: plan will say so
        console.print(f"Power and cost: not shown ({escape(str(e))}).", soft_wrap=True)
        return
    if found is None:
        console.print(
            f"Power and cost: not measured yet. `rlhfkit plan --project {where}` says what the "
            "evaluation can detect of each success criterion, and each stage's time here.",
            soft_wrap=True,
        )
        return
    bad = [f"{c.name} ({c.status})" for c in found.undetectable]
    moves = "every criterion can move detectably" if not bad else "CANNOT MOVE: " + ", ".join(bad)
    known = [s.seconds for s in found.stages if s.seconds is not None]
    cost = (
        f"; projected machine time {_duration(sum(known))}"
        if found.timed and known
        else "; machine time not measured (plan ran with --no-timing)"
    )
    console.print(
        f"Power and cost (rlhfkit plan, {found.prompts} prompts x {found.samples} samples): "
        f"{moves}{cost}. Details: `rlhfkit plan --project {where}`.",
        soft_wrap=True,
    )


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"
