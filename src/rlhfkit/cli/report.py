"""`rlhfkit report RUN_DIR`: one HTML page (and a Markdown summary) a client can read."""

from __future__ import annotations

import inspect
from pathlib import Path

import typer

from rlhfkit.cli.common import console
from rlhfkit.errors import UserError, display_path

LAYOUT = """RUN_DIR layout (every part optional; a missing one shows as "not run"):

  project/rlhfkit.toml       the spec: task, rubric, version, success criteria
  annotation/agreement.json  rlhfkit agreement LABELS --json
  annotation/status.json     rlhfkit annotate status --json
  annotation/panel.json      the demo's simulated panel settings
  rm/eval_rm.json            rlhfkit eval rm --json
  STAGE/metrics.jsonl        each training run's step log (sft, rm, ppo, dpo)
  ppo/monitors.jsonl         PPO's live reward-hacking flags, step by step
  eval/POLICY/eval.json      rlhfkit eval policy (samples.jsonl beside it)"""


def report(
    run_dir: Path = typer.Argument(
        None,
        help="The run folder to report on (see the layout below). Optional when every "
        "input is given with the options.",
    ),
    out: Path = typer.Option(
        None,
        "--out",
        "-o",
        help="The HTML file to write (default: RUN_DIR/report.html). The "
        "Markdown summary goes beside it with the .md suffix.",
    ),
    project: Path = typer.Option(None, help="The project folder or its rlhfkit.toml."),
    agreement: Path = typer.Option(None, help="`rlhfkit agreement --json` output."),
    status: Path = typer.Option(None, help="`rlhfkit annotate status --json` output."),
    rm_eval: Path = typer.Option(None, "--rm-eval", help="`rlhfkit eval rm --json` output."),
    train: list[Path] = typer.Option(
        None,
        "--train",
        help="A training output folder (with metrics.jsonl); repeatable. "
        "Named by the folder; adds to or replaces what RUN_DIR holds.",
    ),
    eval_dirs: list[Path] = typer.Option(
        None,
        "--eval",
        help="An `eval policy` output folder (eval.json, samples.jsonl); "
        "repeatable. Named by the folder.",
    ),
    samples: int = typer.Option(12, min=0, help="Prompts in the side-by-side table per policy."),
) -> None:
    """Write one self-contained HTML report. It opens with the outcome, one line per
    trained policy: which success criteria moved the intended way and which the wrong way
    (with p-values), the KL, and every reward-hacking flag (after training and live during
    PPO). Then: task and rubric, annotation quality, reward model quality, training curves
    with the live monitors' flags, success criteria before/after with intervals, judge win
    rates, the flags with what they mean, and before/after replies side by side. Figures
    are embedded; the file opens offline and runs no scripts.

    The short Markdown summary beside it carries the headline numbers.
    """
    # lazy: the report package (its HTML renderer) slows --help
    from rlhfkit.report.html import write_report
    from rlhfkit.report.inputs import load_run

    if run_dir is None and out is None:
        raise UserError("give a RUN_DIR, or --out with the inputs as options", hint=LAYOUT)
    inputs = load_run(
        run_dir,
        project=project,
        agreement=agreement,
        status=status,
        rm_eval=rm_eval,
        training=train or [],
        evals=eval_dirs or [],
    )
    if inputs.empty:
        where = display_path(run_dir) if run_dir else "the options"
        raise UserError(f"{where}: nothing to report on; no input was found", hint=LAYOUT)
    written = write_report(inputs, out or run_dir / "report.html", samples)
    console.print(f"report: [bold]{display_path(written.html)}[/bold]")
    console.print(f"summary: {display_path(written.markdown)}")
    if written.sections_missing:
        console.print(f"[dim]not run: {', '.join(written.sections_missing)}[/dim]")


# The layout joins the docstring for --help: dedent the docstring first, or Typer keeps its
# indentation once an unindented block follows it. "\b" keeps the table's lines as they are.
report.__doc__ = (
    inspect.cleandoc(report.__doc__ or "") + "\n\n" + LAYOUT.replace("\n\n", "\n\n\b\n")
)
