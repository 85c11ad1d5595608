"""`rlhfkit init`."""

from __future__ import annotations

from pathlib import Path

import typer

from rlhfkit.cli.common import console
from rlhfkit.errors import display_path

TEMPLATE_NAMES = ("support-replies", "memo-format", "decline-off-topic")
"""The templates' names, kept here so `--help` needs no import of the templates (pydantic)."""


def init(
    directory: Path = typer.Argument(
        ..., help="The project folder to create (must be new or empty)."
    ),
    template: str = typer.Option(
        "support-replies",
        help="Which template to start from: support-replies (the demo's task: customer-support "
        "replies), memo-format (a firm's internal memos) or decline-off-topic (a help desk "
        "that declines requests outside its domain).",
    ),
    example: str | None = typer.Option(None, hidden=True, help="Old name of --template."),
) -> None:
    """Create a project folder from a template: a spec (rubric, success criteria, settings)
    and data sized for `rlhfkit run`.

    The spec, rlhfkit.toml, is where the team writes down what 'good' means before any label
    is collected: two or three rubric criteria with borderline examples, a tie policy, a
    both-bad policy, and success criteria (one behavior that should increase, one that should
    decrease) that are frozen when training starts.
    """
    from rlhfkit.templates import init_project  # lazy: pydantic and the criteria slow --help

    template = example or template
    project = init_project(directory, template, name=Path(directory).resolve().name)
    spec = project.spec
    shown = display_path(directory)
    console.print(f"Created [bold]{shown}[/bold] from the '{template}' template:")
    for path in sorted(p for p in Path(directory).rglob("*") if p.is_file()):
        console.print(f"  {path.relative_to(directory)}")
    console.print(
        f"Rubric v{spec.rubric.version}: {', '.join(c.name for c in spec.rubric.criteria)}. "
        f"Success criteria: "
        + ", ".join(f"{c.name} ({c.direction})" for c in spec.success_criteria)
        + "."
    )
    console.print(
        f"Next: check the spec and its files with `rlhfkit project check {shown}`; see what the "
        f"evaluation can detect and what each stage costs here with `rlhfkit plan --project "
        f"{shown}`; then run every stage with `rlhfkit run --project {shown}` (it stops at "
        "annotation and says what to do)."
    )
