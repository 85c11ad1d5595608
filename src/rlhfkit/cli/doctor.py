"""`rlhfkit doctor RUN_DIR`: the seed's failure modes, checked on a run folder."""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.markup import escape

from rlhfkit.cli.common import console
from rlhfkit.doctor.verdict import as_text, counts
from rlhfkit.errors import UserError, display_path

if TYPE_CHECKING:
    from rlhfkit.pipeline.layout import RunPaths

CHECKS = """Checks, by the stage that makes them measurable:
  candidates  the trained model never shows an 'increase' criterion (fail:
              preferences cannot reinforce it; `rlhfkit run` stops before
              people label); pairs too alike to decide
  annotate    many ties; the calibration gate failing, and who drives it
              (each annotator's agreement with the others, the gate
              without them)
  rm          the reward model near chance on held-out or same-model
              pairs; mostly length
  eval        reward up while the criteria stay flat or move the wrong
              way: eval.json's reward_without_criteria monitor, a rise
              of [monitors] reward_rise SDs while no criterion moved
              criteria_min_change its way, or one moved that much the
              wrong way (significantly); KL too low (nothing moved) or
              too high (drift); over-refusal outside the subset a
              declining criterion applies to

Exit code: 0 when no check fails (warnings and "not yet measurable"
included), 1 when one fails, 2 on a bad RUN_DIR or file."""


RUN_HINT = "give the folder `rlhfkit run --project PROJECT` writes (PROJECT/run, or its --out)"


def is_run_folder(paths: RunPaths, policies: Sequence[str]) -> bool:
    """Whether `rlhfkit run` wrote here (a stage's output, its log) or put a project in it:
    a folder that is neither gets no doctor.json."""
    made = [paths.stages, paths.sft, paths.annotation, paths.rm, paths.root / "eval"]
    made += [paths.policy(p) for p in policies]
    return (paths.root / "project").is_dir() or any(p.exists() for p in made)


def doctor(
    run_dir: Path = typer.Argument(..., help="The run folder (`rlhfkit run`'s, PROJECT/run)."),
    project: Path = typer.Option(
        None,
        "--project",
        "-p",
        help="The project folder (default: RUN_DIR/project, else RUN_DIR's parent folder).",
    ),
    as_json: bool = typer.Option(
        False, "--json", help="Print doctor.json (checks, counts, overrides) instead."
    ),
) -> None:
    """Check a run for the failure modes of a first RLHF project: each check's verdict (ok,
    warn, fail, or not yet measurable when its stage has not run), the numbers it decided
    on, and what to do next. `rlhfkit run` runs the same checks after each stage.

    Writes RUN_DIR/doctor.json (read by the report and summary.json); overrides recorded
    there by `rlhfkit run --ignore-doctor` are kept.
    """
    # lazy: the checks import the spec's pydantic models and numpy
    from rlhfkit.doctor.record import DOCTOR_FILE, read_record, write_record
    from rlhfkit.pipeline.doctor import diagnose_run
    from rlhfkit.pipeline.layout import RunPaths
    from rlhfkit.project import SPEC_FILE, load_project

    if not run_dir.is_dir():
        raise UserError(f"{display_path(run_dir)}: no such run folder", hint=RUN_HINT)
    root = project
    if root is None:
        places = (run_dir / "project", run_dir.resolve().parent)
        root = next((d for d in places if (d / SPEC_FILE).is_file()), None)
    spec = load_project(root) if root is not None else None
    paths = RunPaths(run_dir.resolve(), spec.root if spec else run_dir.resolve())
    policies = spec.spec.run.policies if spec else ("ppo", "dpo")
    if not is_run_folder(paths, policies):
        raise UserError(f"{display_path(run_dir)}: not a run folder: {RUN_HINT}")
    checks = diagnose_run(paths, spec)
    record = paths.root / DOCTOR_FILE
    write_record(record, checks, read_record(record).get("overrides", []))
    if as_json:
        typer.echo(record.read_text(), nl=False)
    else:
        if spec is None:
            console.print("No project spec found (--project): the criteria checks cannot run.")
        stage = None
        for c in checks:
            if c.stage != stage:
                stage = c.stage
                console.print(f"\n[bold]after {stage}[/bold]")
            console.print(escape(as_text(c)), soft_wrap=True)
        n = counts(checks)
        console.print(
            "\n" + ", ".join(f"{k} {v}" for k, v in n.items()) + f"  ({display_path(record)})"
        )
    if any(c.verdict == "fail" for c in checks):
        raise typer.Exit(1)


# As `rlhfkit report` does: the docstring dedented, "\b" keeps the table's lines as they are.
doctor.__doc__ = inspect.cleandoc(doctor.__doc__ or "") + "\n\n\b\n" + CHECKS
