"""`rlhfkit demo`: `rlhfkit run` on the bundled example, with a simulated annotator panel."""

from __future__ import annotations

import time
from pathlib import Path

import typer

from rlhfkit.choices import PRECISIONS, one_of
from rlhfkit.cli.common import console
from rlhfkit.cli.run import RunDisplay, show_result
from rlhfkit.errors import UserError, display_path


def demo(
    directory: Path = typer.Option(
        None, "--dir", help="Run folder (default: runs/demo, or runs/demo-quick with --quick)."
    ),
    quick: bool = typer.Option(False, help="Smaller everything, same stages (2 to 5 minutes)."),
    seed: int = typer.Option(
        0, help="Added to every seed of the run: another seed is another run of the experiment."
    ),
    precision: str = typer.Option(
        "auto",
        help="Training and candidate sampling in bf16, fp32, or auto: bf16 where this machine "
        "has native bf16 (CPUs with AVX512-BF16 or AMX, GPUs). fp32 gives the same numbers on "
        "every machine, slower. The evaluations always run in fp32.",
    ),
    model: str = typer.Option(
        None, hidden=True, help="Base model instead of the project's (tests: tiny-random)."
    ),
) -> None:
    """Run the whole loop on the bundled support-replies project with SmolLM2-135M-Instruct.

    This is `rlhfkit run` on the project `rlhfkit init --template support-replies` writes
    (scaffolded into the run folder), with a SIMULATED annotator panel as its labeler: SFT
    on the team's past replies, candidate pairs, the panel labelling them through the real
    annotation app (calibration round, agreement gate, anchors, overlap), a reward model
    checked on held-out prompts, PPO with a KL penalty and DPO on the same preferences, a
    before/after evaluation of both against the SFT model, and the HTML report with
    summary.json beside it. Every setting is in the project's rlhfkit.toml.

    Interrupted? Run it again: finished stages are skipped, a stage cut off midway resumes
    from its last checkpoint, and a stage whose inputs changed runs again.
    """
    # lazy: the pipeline loads torch, transformers and the annotation app
    from rlhfkit.demo.pipeline import DemoConfig, demo_plan
    from rlhfkit.pipeline.run import run_pipeline

    if precision not in PRECISIONS:
        raise UserError(f"--precision is {one_of(PRECISIONS)}, not '{precision}'")
    root = directory or Path("runs/demo-quick" if quick else "runs/demo")
    cfg = DemoConfig(root=root, quick=quick, precision=precision, seed=seed)
    started = time.time()
    plan = demo_plan(cfg, model)
    with RunDisplay() as display:
        result = run_pipeline(plan, display=display)
    console.rule("rlhfkit demo: support replies (annotators are a SIMULATED panel)")
    show_result(result, time.time() - started)
    if (root / "summary.json").exists():
        console.print(f"Summary: {display_path(root / 'summary.json')}")
