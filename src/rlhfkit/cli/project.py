"""`rlhfkit init`."""

from __future__ import annotations

from pathlib import Path

import typer

from rlhfkit.cli.common import console
from rlhfkit.errors import display_path


def init(
    directory: Path = typer.Argument(
        ..., help="The project folder to create (must be new or empty)."
    ),
    example: str = typer.Option(
        "support-replies", help="Which example to start from: support-replies."
    ),
) -> None:
    """Create a project folder: a spec (rubric, success criteria, settings) and example data.

    The spec, rlhfkit.toml, is where the team writes down what 'good' means before any label
    is collected: two or three rubric criteria with borderline examples, a tie policy, a
    both-bad policy, and success criteria (one behavior that should increase, one that should
    decrease) that are frozen when training starts.
    """
    from rlhfkit.templates import init_project  # lazy: pydantic and the criteria slow --help

    project = init_project(directory, example)
    spec = project.spec
    console.print(f"Created [bold]{display_path(directory)}[/bold] from the '{example}' example:")
    for path in sorted(p for p in Path(directory).rglob("*") if p.is_file()):
        console.print(f"  {path.relative_to(directory)}")
    console.print(
        f"Rubric v{spec.rubric.version}: {', '.join(c.name for c in spec.rubric.criteria)}. "
        f"Success criteria: "
        + ", ".join(f"{c.name} ({c.direction})" for c in spec.success_criteria)
        + "."
    )
    console.print(f"Next: rlhfkit generate --project {display_path(directory)} --limit 8")
