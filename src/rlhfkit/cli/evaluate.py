"""`rlhfkit eval rm` and `rlhfkit eval policy`: check what training produced."""

from __future__ import annotations

from pathlib import Path

import typer

from rlhfkit import strict_json
from rlhfkit.cli.common import console, err_console
from rlhfkit.evaluate.schema import PolicyEvalResult, write_json

app = typer.Typer(help="Check what training produced.", no_args_is_help=True)


@app.command("rm")
def eval_rm(
    model: str = typer.Option(..., help="The reward model folder (final/ of `train rm`)."),
    data: Path = typer.Option(..., help="Held-out preference pairs."),
    slice_by: list[str] = typer.Option(
        [], "--slice", help="A row column to break accuracy down by (e.g. topic); repeatable."
    ),
    bins: int = typer.Option(10, help="Confidence bins of the reliability table."),
    batch_size: int = typer.Option(16, help="Pairs per forward batch."),
    out: Path = typer.Option(None, help="Also write the figures to this JSON file."),
    as_json: bool = typer.Option(False, "--json", help="Print the figures as JSON."),
) -> None:
    """Is the reward model fit to trust? Checks it on held-out preference pairs.

    Held-out accuracy (overall and per --slice), agreement with the human majority (rows with
    `votes`), calibration of its Bradley–Terry probability (reliability table, ECE),
    correlation of reward with length (the commonest reward-model bias), order invariance.
    """
    from rlhfkit.evaluate.rm import evaluate_reward_model, summary_lines  # lazy: torch

    figures = evaluate_reward_model(model, data, batch_size, tuple(slice_by), bins)
    if out is not None:
        write_json(figures, out)
    if as_json:
        console.print_json(strict_json.dumps(strict_json.nulled(figures.to_json())))
        return
    for line in summary_lines(figures):
        console.print(line, markup=False)


@app.command("policy")
def eval_policy(
    project: Path = typer.Option(..., help="Project folder: criteria, monitors, defaults."),
    before: str = typer.Option(
        ..., help="The starting policy: model folder, alias, or a run's final/ (LoRA too)."
    ),
    after: str = typer.Option(..., help="The trained policy (same kinds of reference)."),
    out: Path = typer.Option(..., help="Folder for eval.json and samples.jsonl."),
    prompts: Path = typer.Option(None, help="Held-out prompts (default: the spec's)."),
    limit: int = typer.Option(None, help="Use only the first N prompts."),
    samples: int = typer.Option(2, help="Samples per prompt and model."),
    max_new_tokens: int = typer.Option(None, help="Longest response (default: the spec's)."),
    temperature: float = typer.Option(None, help="Sampling temperature (default: the spec's)."),
    top_p: float = typer.Option(1.0, help="Nucleus mass; below 1 the KL is approximate."),
    seed: int = typer.Option(None, help="Random seed (default: the spec's)."),
    batch_size: int = typer.Option(8, help="Prompts per generation batch."),
    judge: list[str] = typer.Option(
        [],
        help="A pairwise judge of after vs before; repeatable: rm:DIR, panel (the demo's "
        "simulated panel), callable:module:function, or openai (RLHFKIT_JUDGE_BASE_URL, "
        "RLHFKIT_JUDGE_MODEL, RLHFKIT_JUDGE_API_KEY).",
    ),
    reward_model: str = typer.Option(
        None, help="Reward model for mean reward, its win rate and the hacking monitor."
    ),
    test: str = typer.Option(
        "permutation", help="permutation (paired, default), bootstrap or two_proportion."
    ),
    alpha: float = typer.Option(0.05, help="Significance level of the verdicts."),
    sample_cache: Path = typer.Option(
        None,
        help="Folder to keep the --before model's samples in; a later evaluation with the same "
        "model, prompts and settings reuses them (e.g. PPO and DPO against one start).",
    ),
) -> None:
    """Did training change what it should? Before vs after on held-out prompts.

    Each success criterion's pass rate with 95% intervals, a paired test and a verdict
    (improved / regressed / no significant change); mean length; reward and judge win rates;
    KL(after || before); reward-hacking flags. Both models answer the same prompts with the
    same seeds. Writes OUT/eval.json (schema: rlhfkit.evaluate.schema) and OUT/samples.jsonl.
    """
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    from rlhfkit.errors import display_path
    from rlhfkit.evaluate.policy import PolicyEvalConfig, evaluate_policy

    cfg = PolicyEvalConfig(
        project=project,
        before=before,
        after=after,
        out=out,
        prompts=prompts,
        limit=limit,
        samples=samples,
        max_new_tokens=max_new_tokens,
        temperature=temperature,
        top_p=top_p,
        seed=seed,
        batch_size=batch_size,
        judges=tuple(judge),
        reward_model=reward_model,
        test=test,
        alpha=alpha,
        sample_cache=sample_cache,
    )
    with Progress(
        TextColumn("sampling {task.fields[who]}"), BarColumn(), MofNCompleteColumn(),
        console=err_console,
    ) as bar:  # fmt: skip
        task = bar.add_task("sampling", total=None, who="")

        def progress(who: str, done: int, total: int) -> None:
            bar.update(task, completed=done, total=total, who=f"{who} model")

        result = evaluate_policy(cfg, progress)
    _show(result)
    console.print(
        f"Written: {display_path(out / 'eval.json')}, {display_path(out / 'samples.jsonl')}"
    )


def _show(r: PolicyEvalResult) -> None:
    from rich.table import Table

    freeze = r.freeze
    if freeze.changed:
        err_console.print(f"[bold red]WARNING:[/bold red] {freeze.message}", markup=True)
    elif freeze.frozen_hash is None:
        err_console.print(f"[yellow]note:[/yellow] {freeze.message}")
    s = r.settings
    console.print(f"{s.n_prompts} prompts x {s.samples_per_prompt} samples; test: {s.test}")
    table = Table()
    for col in ("criterion", "should", "before", "after", "change", "p", "verdict"):
        table.add_column(
            col, justify="right" if col in ("before", "after", "change", "p") else "left"
        )
    for c in r.criteria:
        b, a = c.before, c.after
        table.add_row(
            c.name, c.direction,
            f"{b.rate:.0%} [{b.ci[0]:.0%}-{b.ci[1]:.0%}]",
            f"{a.rate:.0%} [{a.ci[0]:.0%}-{a.ci[1]:.0%}]",
            f"{c.diff:+.0%}", f"{c.p_value:.3g}", c.verdict,
        )  # fmt: skip
    console.print(table)
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
