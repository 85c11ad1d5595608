"""`rlhfkit annotate pilot`: a SIMULATED panel labels a pilot round with the team's own
rubric, through the real annotation app, before the first person labels."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer
from rich.table import Table

from rlhfkit import strict_json
from rlhfkit.choices import PRECISIONS, one_of
from rlhfkit.cli.common import StepProgress, console, err_console
from rlhfkit.errors import UserError, display_path

JUDGE_HELP = (
    "Who labels: rule (the spec's success criteria decide, by each pair's own columns: the "
    "reply that meets more of them, each in its direction, wins; at the same count, the "
    "criterion listed first that only one meets), openai (an LLM over an OpenAI-compatible API, "
    "prompted with the spec's rubric; set RLHFKIT_JUDGE_BASE_URL, RLHFKIT_JUDGE_MODEL, "
    "RLHFKIT_JUDGE_API_KEY), or module:function / FILE.py:function (the rubric in code: "
    "(prompt, response_a, response_b) -> 'a' | 'b' | 'tie' | 'both_bad')."
)

ANNOTATORS_HELP = (
    "Simulated annotators, at least 1 (default: [run] simulated_annotators, 3, raised to "
    "annotation.overlap; the run's pilot stage has the same panel)."
)

NOISE_HELP = "Each annotator's share of flipped answers (default: [run] simulated_noise, 0.05)."

ANNOTATOR_HELP = (
    "One annotator's own failings, NAME:KEY=VALUE,... with keys noise, position_bias, "
    "length_bias, drift_after, drift_noise; NAME is one of the panel's sim-1 ... sim-K: "
    "--annotator sim-3:noise=0.5 (a careless one), --annotators 4 --annotator "
    "sim-4:drift_after=20 (a fourth that drifts). Repeatable."
)

PAIRS_HELP = (
    "Comparison rows to draw the pilot's pairs from (default: PROJECT/artifacts/"
    "candidates.jsonl, as `rlhfkit generate` writes them, else PROJECT/run/annotation/"
    "candidates.jsonl, as `rlhfkit run` does; the pilot says which it used)."
)


def pilot(
    judge: str = typer.Option("rule", "--judge", help=JUDGE_HELP),
    pairs: Path = typer.Option(None, help=PAIRS_HELP),
    n: int = typer.Option(60, "--n", help="Pairs in the pilot round, calibration included."),
    annotators: int = typer.Option(None, help=ANNOTATORS_HELP),
    noise: float = typer.Option(None, help=NOISE_HELP),
    position_bias: float = typer.Option(
        0.0, help="Each annotator's share of lapses: the reply shown first, unread."
    ),
    length_bias: float = typer.Option(
        0.0, help="Each annotator's share of picking the longer reply over the judge's verdict."
    ),
    annotator: list[str] = typer.Option(
        [],
        "--annotator",
        help=ANNOTATOR_HELP,
    ),
    seed: int = typer.Option(0, help="Seed for drawing the pairs, the app's order and the slips."),
    train_rm: bool = typer.Option(
        None,
        "--train-rm/--no-train-rm",
        help="Train a tiny reward model on the pilot's majority labels and check it on "
        "held-out prompts (default: when there are 16 training and 4 held-out pairs).",
    ),
    model: str = typer.Option(None, help="The reward model's base (default: base_model)."),
    precision: str = typer.Option(None, help="The reward model's precision: auto, bf16, fp32."),
    out: Path = typer.Option(
        None, help="The pilot's folder (default: PROJECT/artifacts/pilot); replaced each time."
    ),
    show_prompt: bool = typer.Option(
        False, "--show-prompt", help="Print the rubric prompt the openai judge gets, and stop."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print pilot.json instead of the tables."),
    project: Path = typer.Option(Path("."), "--project", help="The project folder."),
) -> None:
    """Pilot the rubric before people label: a SIMULATED panel labels a round.

    N pairs (a calibration round of the spec's calibration_size or fewer, then the main
    queue, with the project's anchors mixed in) go into a store of the pilot's own (never
    the team's); the app serves them on a local port; K simulated annotators sharing the
    judge, each with its own slips and biases, label through its HTTP API as people would.
    Then: the calibration gate (pass or fail, and its number), agreement (percent, kappa,
    alpha), anchor accuracy, tie and both-bad rates, each annotator, and (--train-rm) a tiny
    reward model's held-out accuracy on the pilot's labels: can a model learn this rubric?

    Everything is marked simulated: the sim- annotators, each label's rationale, the store's
    event log, the export's manifest, pilot.json. Written to the pilot folder, always:
    pilot.json, pairs.jsonl, annotations.sqlite (open it with `rlhfkit annotate status --db`),
    labels.jsonl and gold.jsonl (every label and the anchors' answers: `rlhfkit agreement`
    reads them, a failed round's too); only when the export has rows: preferences.jsonl;
    only when a reward model is trained: rm/."""
    # lazy: pydantic (project), the annotation app, torch for the reward model
    from rlhfkit.pipeline.pilot import PanelSettings, PilotConfig, default_pairs, run_pilot
    from rlhfkit.pipeline.pilot_judges import make_pilot_judge, rubric_prompt
    from rlhfkit.project import load_project

    proj = load_project(project)
    if show_prompt:
        console.print(rubric_prompt(proj), markup=False, highlight=False, soft_wrap=True)
        return
    if precision is not None and precision not in PRECISIONS:
        raise UserError(f"--precision is {one_of(PRECISIONS)}, not '{precision}'")
    failings = _failings(noise=noise, position_bias=position_bias, length_bias=length_bias)
    panel = PanelSettings.for_project(proj, annotators, failings, tuple(annotator))
    source, note = (pairs, None) if pairs else default_pairs(proj)
    folder = out or proj.artifacts("pilot")
    cfg = PilotConfig(folder, source, n, panel, seed, train_rm, model, precision)
    if note:
        err_console.print(note, markup=False, highlight=False, soft_wrap=True)
    with StepProgress("pilot", "SIMULATED panel labelling through the app") as progress:
        summary = run_pilot(proj, make_pilot_judge(judge, proj), cfg, progress)
    if as_json:
        print(strict_json.dumps(strict_json.nulled(summary)))
        return
    show_pilot(summary, cfg.out)


def _failings(**shares: float | None) -> dict[str, float]:
    """The shares given on the command line, each within [0, 1]."""
    for name, share in shares.items():
        if share is not None and not 0.0 <= share <= 1.0:
            raise UserError(f"--{name.replace('_', '-')} {share}: give a share within [0, 1]")
    return {k: v for k, v in shares.items() if v is not None}


def _fmt(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.2f}"


def show_pilot(s: dict[str, Any], folder: Path) -> None:
    """The pilot's figures, headed SIMULATED."""
    judge, gate, a = s["judge"], s["gate"], s["agreement"]
    console.print(
        f"[bold]SIMULATED pilot[/bold] (no person labelled): judge {judge['judge']}, "
        f"{len(s['annotators'])} simulated annotators, {s['pairs']['drawn']} pairs"
    )
    if gate["passed"] is None:
        console.print("calibration gate: not evaluated (fewer than two annotators finished)")
    else:
        verdict = "[green]passes[/green]" if gate["passed"] else "[red]fails[/red]"
        console.print(
            f"calibration gate: {verdict}: percent agreement {_fmt(gate['value'])} on "
            f"{gate['pairs']} calibration pairs (threshold {gate['threshold']:.2f})"
        )
    console.print(
        f"agreement: {_fmt(a['percent'])} percent, Cohen's kappa {_fmt(a['cohen_kappa'])}, "
        f"Krippendorff's alpha {_fmt(a['krippendorff_alpha'])} over {a['pairs'] or 0} pairs"
    )
    console.print(
        f"anchors: accuracy {_fmt(s['anchor_accuracy'])} over {s['anchor_labels']} labels; "
        f"tie rate {_fmt(s['tie_rate'])}, both-bad rate {_fmt(s['both_bad_rate'])}"
    )
    b = s["borderline_examples"]
    without = b.get("left_out")  # the rule judge: no prompt columns on an example
    console.print(
        f"borderline examples: the judge answers {b['agreed']} of {b['of']} as the team"
        + (f" (judged without {', '.join(without)}: no prompt columns)" if without else "")
    )
    table = Table("annotator", "labels", "agrees w/ majority", "anchor acc.", "chose first")
    for row in s["per_annotator"]:
        table.add_row(
            row["annotator"],
            str(row["labels"]),
            _fmt(row["majority_agreement"]),
            _fmt(row["anchor_accuracy"]),
            _fmt(row["chose_first_rate"]),
        )
    console.print(table)
    rm = s["reward_model"]
    if rm["trained"]:
        lo, hi = rm["heldout_accuracy_ci"]
        console.print(
            f"reward model on the pilot's labels: held-out accuracy "
            f"{rm['heldout_accuracy']:.2f} (95% CI {lo:.2f}-{hi:.2f}) on "
            f"{rm['heldout_pairs']} pairs, trained on {rm['train_pairs']}"
        )
    else:
        console.print(f"reward model: not trained ({rm['why_not']})")
    for w in s["warnings"]:
        console.print(f"[yellow]warning:[/yellow] {w}")
    console.print(f"SIMULATED labels and figures in {display_path(folder)} (pilot.json)")


def show_pilot_file(path: Path) -> None:
    """A run's pilot, where its stage wrote one."""
    if path.exists():
        show_pilot(json.loads(path.read_text()), path.parent)
