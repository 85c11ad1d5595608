"""The `rlhfkit` command line: a thin Typer app, one command group per pipeline stage.

Commands only parse options, call the library function that does the work, and print. Heavy
libraries (torch, transformers, datasets) are imported inside commands, never here, so that
`rlhfkit --help` answers at once.
"""

from __future__ import annotations

import os
import sys
import warnings

import click
import typer
from rich.markup import escape

from rlhfkit import __version__
from rlhfkit.cli import agreement as agreement_cmds
from rlhfkit.cli import annotate as annotate_cmds
from rlhfkit.cli import data as data_cmds
from rlhfkit.cli import demo as demo_cmds
from rlhfkit.cli import doctor as doctor_cmds
from rlhfkit.cli import evaluate as evaluate_cmds
from rlhfkit.cli import generate as generate_cmds
from rlhfkit.cli import models as models_cmds
from rlhfkit.cli import plan as plan_cmds
from rlhfkit.cli import project as project_cmds
from rlhfkit.cli import report as report_cmds
from rlhfkit.cli import run as run_cmds
from rlhfkit.cli import train as train_cmds
from rlhfkit.cli.common import err_console
from rlhfkit.cli.help_layout import Group
from rlhfkit.errors import UserError

HELP = (
    "rlhfkit: the whole RLHF loop for teaching a model a narrow behavior, and proving it "
    "worked.\n\n"
    "The commands are listed in pipeline order: design the project, check its data and "
    "model, sample candidate replies for annotation, ... Start with `rlhfkit demo` to see "
    "the loop on a bundled example, or `rlhfkit init my-project --template ...` and then "
    "`rlhfkit run --project my-project` to run your own."
)
# The pipeline's order, which `--help` follows (Typer would list single commands first).
ORDER = [
    "init",
    "project",
    "plan",
    "data",
    "models",
    "generate",
    "annotate",
    "agreement",
    "train",
    "eval",
    "report",
    "doctor",
    "run",
    "demo",
]


class _PipelineOrder(Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        names = super().list_commands(ctx)
        return sorted(names, key=lambda n: ORDER.index(n) if n in ORDER else len(ORDER))


DESIGN = "1. Design the project"
INPUTS = "2. Data and models"
COLLECT = "3. Collect preferences"
TRAIN = "4. Train"
PROVE = "5. Prove it worked"
ALL = "Run everything"

app = typer.Typer(
    cls=_PipelineOrder,
    help=HELP,
    no_args_is_help=True,
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
    pretty_exceptions_show_locals=False,
    add_completion=False,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"rlhfkit {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    pass


app.command("init", rich_help_panel=DESIGN)(project_cmds.init)
project_app = typer.Typer(help="Check a project before a long step.", no_args_is_help=True)
project_app.command("check")(run_cmds.check)
app.add_typer(project_app, name="project", cls=Group, rich_help_panel=DESIGN)
app.command("plan", rich_help_panel=DESIGN)(plan_cmds.plan)
app.add_typer(data_cmds.app, name="data", cls=Group, rich_help_panel=INPUTS)
app.add_typer(models_cmds.app, name="models", cls=Group, rich_help_panel=INPUTS)
app.command("generate", rich_help_panel=COLLECT)(generate_cmds.generate)
app.add_typer(annotate_cmds.app, name="annotate", cls=Group, rich_help_panel=COLLECT)
app.command("agreement", rich_help_panel=COLLECT)(agreement_cmds.agreement)
app.add_typer(train_cmds.app, name="train", cls=Group, rich_help_panel=TRAIN)
app.add_typer(evaluate_cmds.app, name="eval", cls=Group, rich_help_panel=PROVE)
app.command("report", rich_help_panel=PROVE)(report_cmds.report)
app.command("doctor", rich_help_panel=PROVE)(doctor_cmds.doctor)
app.command("run", rich_help_panel=ALL)(run_cmds.run)
app.command("demo", rich_help_panel=ALL)(demo_cmds.demo)


def main() -> None:
    """Entry point: user mistakes print their problems and exit 2, never a stack trace."""
    # Every command draws its own progress display; the libraries' tqdm bars ("Loading
    # weights", "Writing model shards") would interleave with it.
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TQDM_DISABLE", "1")
    # transformers' notices of its own renamed methods, raised when peft calls the old names:
    # nothing a user can act on, and they land in the middle of the progress display.
    warnings.filterwarnings("ignore", category=FutureWarning, module=r"transformers\.")
    try:
        app()
    except UserError as e:
        err_console.print(f"[bold red]error:[/bold red] {escape(str(e))}", soft_wrap=True)
        if e.hint:
            err_console.print(f"[dim]hint:[/dim] {escape(e.hint)}", soft_wrap=True)
        sys.exit(2)
    except OSError as e:  # a path the user gave that cannot be read or written
        where = f"{e.filename}: " if e.filename else ""
        err_console.print(
            f"[bold red]error:[/bold red] {where}{e.strerror or e}", markup=True, highlight=False
        )
        sys.exit(2)
    except KeyboardInterrupt:
        err_console.print("interrupted; run the same command again to resume")
        sys.exit(130)
