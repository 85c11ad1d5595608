"""`rlhfkit eval rm` and `rlhfkit eval policy`: check what training produced."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
from rich import box
from rich.table import Table

from rlhfkit import strict_json
from rlhfkit.cli.common import StepProgress, console, err_console, status
from rlhfkit.cli.configs import command_from_config, config_options
from rlhfkit.errors import display_path
from rlhfkit.evaluate.configs import PolicyEvalConfig, RMEvalConfig

if TYPE_CHECKING:
    from rlhfkit.evaluate.schema import PolicyEvalResult

app = typer.Typer(help="Check what training produced.", no_args_is_help=True)


@app.command("rm")
@config_options(RMEvalConfig)
def eval_rm(
    out: Path = typer.Option(None, help="Also write the figures to this JSON file."),
    as_json: bool = typer.Option(False, "--json", help="Print the figures as JSON."),
    *,
    settings: dict[str, Any],
) -> None:
    """Is the reward model fit to trust? Checks it on held-out preference pairs.

    Held-out accuracy (overall and per --slice), agreement with the human majority (rows with
    `votes`), calibration of its Bradley–Terry probability (reliability table, ECE),
    correlation of reward with length (the commonest reward-model bias), order invariance.
    """
    from rlhfkit.evaluate.rm import evaluate_reward_model, summary_lines  # lazy: torch
    from rlhfkit.evaluate.schema import write_json  # lazy: keeps `rlhfkit --help` light

    cfg = RMEvalConfig(**settings)
    with status(f"scoring the pairs of {display_path(cfg.data)}"):
        figures = evaluate_reward_model(cfg.model, cfg.data, cfg.batch_size, cfg.slice_by, cfg.bins)
    if out is not None:
        write_json(figures, out)
    if as_json:
        console.print_json(strict_json.dumps(strict_json.nulled(figures.to_json())))
        return
    for line in summary_lines(figures):
        console.print(line, markup=False)


def _eval_policy(cfg: PolicyEvalConfig) -> None:
    from rlhfkit.evaluate.policy import evaluate_policy  # lazy: imports numpy and the judges

    with StepProgress("sampling", "loading models and prompts") as progress:
        result = evaluate_policy(cfg, progress)  # calls progress("after" | "before", done, total)
    _show(result)
    out = cfg.out
    console.print(
        f"Written: {display_path(out / 'eval.json')}, {display_path(out / 'samples.jsonl')}"
    )


# `--confidence` is left out: the verdicts and their intervals stay at 95%, as before.
eval_policy = command_from_config(PolicyEvalConfig, _eval_policy, exclude=("confidence",))
eval_policy.__doc__ = """Did training change what it should? Before vs after on held-out prompts.

    Each success criterion's pass rate with 95% intervals, a paired test and a verdict
    (improved / regressed / no significant change), on the prompts it applies to (its
    applies_to, by the prompts file's columns); with --slice COL, the same for each value of
    that column; mean length; reward and judge win rates; KL(after || before);
    reward-hacking flags. Both models answer the same prompts with the same seeds. Writes
    OUT/eval.json (schema: rlhfkit.evaluate.schema) and OUT/samples.jsonl.
    """
app.command("policy")(eval_policy)


def _criteria_table(results: list, first: str, title: str | None = None) -> Table:
    """Criteria before and after, on the prompts each applies to: `results` are criterion
    results, or (slice value, criterion result) pairs. Readable at 80 columns: a name is
    never cut ("decli…"), its direction and prompts go under it, the rest wraps."""
    table = Table(
        title=title, box=box.SIMPLE_HEAD, collapse_padding=True, show_edge=False, show_lines=True
    )
    pairs = [item if isinstance(item, tuple) else (None, item) for item in results]
    if first != "criterion":
        table.add_column(first, no_wrap=True)
    table.add_column("criterion", no_wrap=True)
    if first == "criterion":
        table.add_column("on", overflow="fold")
    for col in ("before", "after", "change, p"):
        table.add_column(col, justify="right", overflow="fold")
    table.add_column("verdict", overflow="fold")
    for value, c in pairs:
        b, a = c.before, c.after
        n = "" if c.n_prompts is None else f"{c.n_prompts} prompt{'s' if c.n_prompts != 1 else ''}"
        name = f"{c.name}\n{c.direction}" + (f", {n}" if value is not None and n else "")
        on = () if value is not None else (f"{_subset(c.applies_to)}" + (f": {n}" if n else ""),)
        table.add_row(
            *(() if value is None else (str(value),)), name, *on,
            f"{b.rate:.0%}\n[{b.ci[0]:.0%}-{b.ci[1]:.0%}]",
            f"{a.rate:.0%}\n[{a.ci[0]:.0%}-{a.ci[1]:.0%}]",
            f"{c.diff:+.0%}\np {c.p_value:.3g}", c.verdict,
        )  # fmt: skip
    return table


def _subset(applies_to: dict | None) -> str:
    """A recorded applies_to in words, as `SuccessCriterion.subset` says it."""
    from rlhfkit.criteria import column_value  # lazy: pydantic, slow for --help

    if not applies_to:
        return "all"
    listed = {k: v if isinstance(v, list) else [v] for k, v in applies_to.items()}
    return ", ".join(f"{k} = {' or '.join(map(column_value, v))}" for k, v in listed.items())


def _show(r: PolicyEvalResult) -> None:
    freeze = r.freeze
    if freeze.changed:
        err_console.print(f"[bold red]WARNING:[/bold red] {freeze.message}", markup=True)
    elif freeze.frozen_hash is None:
        err_console.print(f"[yellow]note:[/yellow] {freeze.message}")
    s = r.settings
    console.print(f"{s.n_prompts} prompts x {s.samples_per_prompt} samples; test: {s.test}")
    console.print(_criteria_table(r.criteria, "criterion"))
    for col, values in (r.slices or {}).items():
        rows = [(v, c) for v, results in values.items() for c in results]
        console.print(_criteria_table(rows, col, title=f"by {col}"))
    ln = r.length
    console.print(
        f"length: {ln.before.mean:.0f} -> {ln.after.mean:.0f} words "
        f"({ln.diff:+.1f}, p {ln.p_value:.3g})"
    )
    if r.reward:
        rw = r.reward
        console.print(f"reward: {rw.before.mean:.3f} -> {rw.after.mean:.3f} (p {rw.p_value:.3g})")
    for w in r.win_rates:
        console.print(
            f"win rate of after over before by {w.judge}: {w.win_rate:.0%} "
            f"[{w.ci[0]:.0%}-{w.ci[1]:.0%}], p {w.p_value:.3g}",
            markup=False,
        )
    kl = r.kl
    if kl.value is not None:
        console.print(
            f"KL(after || before): {kl.value:.2f} nats per response "
            f"[{kl.ci[0]:.2f}, {kl.ci[1]:.2f}]"
        )
    else:
        console.print(f"KL: not estimated ({kl.reason})")
    fired = [m for m in r.monitors if m.flagged]
    if not fired:
        console.print("reward-hacking monitors: no flags")
    for m in fired:
        console.print(f"[bold yellow]flag {m.name}:[/bold yellow] {m.explanation}")
