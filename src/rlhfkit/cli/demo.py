"""`rlhfkit demo`: the bundled example through every stage that exists so far."""

from __future__ import annotations

import json
import time
from pathlib import Path

import typer
from rich.markup import escape
from rich.table import Table

from rlhfkit.cli.common import console, progress_bar, status


def demo(
    directory: Path = typer.Option(Path("runs/demo"), "--dir", help="Where the demo writes."),
    quick: bool = typer.Option(False, help="Smaller everything (8 prompts), same stages."),
) -> None:
    """Run the loop on the bundled support-replies project with SmolLM2-135M-Instruct.

    Stages: scaffold the project, provision the bundled model (converted once, cached), sample
    candidate reply pairs, and measure how often the replies already meet each success
    criterion. Interrupted? Run it again: finished stages are skipped.
    """
    from rlhfkit.data.io import atomic_open
    from rlhfkit.demo.pipeline import DemoConfig, StageLog, baseline_rates
    from rlhfkit.errors import display_path
    from rlhfkit.generate import SamplingConfig, generate_candidates
    from rlhfkit.lineage import sha256_file
    from rlhfkit.models import pull
    from rlhfkit.project import SPEC_FILE, init_project, load_project

    cfg = DemoConfig(root=directory, quick=quick)
    started = time.time()
    project_dir = cfg.root / "project"
    cfg.root.mkdir(parents=True, exist_ok=True)
    log = StageLog.open(cfg.root / "stages.json")
    ran = {}

    ran["project"] = log.run(
        "project",
        {"example": "support-replies"},
        lambda: None if (project_dir / SPEC_FILE).exists() else init_project(project_dir),
        outputs=(project_dir / SPEC_FILE,),
    )
    spec = load_project(project_dir).spec

    def provision() -> None:
        with status(f"converting {spec.base_model} to safetensors (once, about 30 s)"):
            pull(spec.base_model)

    ran["model"] = log.run("model", {"model": spec.base_model}, provision)

    candidates = project_dir / "artifacts" / "candidates.jsonl"
    sampling = SamplingConfig.from_spec(spec.generate, max_new_tokens=cfg.max_new_tokens)
    prompts = project_dir / spec.data.prompts

    def sample() -> None:
        with progress_bar("sampling candidate replies") as update:
            generate_candidates(
                spec.base_model,
                prompts,
                candidates,
                sampling,
                limit=cfg.n_prompts,
                on_progress=update,
            )

    ran["candidates"] = log.run(
        "candidates",
        {
            "model": spec.base_model,
            "sampling": sampling.__dict__,
            "limit": cfg.n_prompts,
            "prompts_sha256": sha256_file(prompts),
        },
        sample,
        outputs=(candidates,),
    )

    baseline_path = cfg.root / "baseline.json"

    def baseline() -> None:
        with atomic_open(baseline_path) as f:
            json.dump(baseline_rates(project_dir, candidates), f, indent=2)

    ran["baseline"] = log.run(
        "baseline",
        {"after": log.records["candidates"], "criteria": spec.criteria_hash()},
        baseline,
        outputs=(baseline_path,),
    )

    _show(cfg.root, candidates, json.loads(baseline_path.read_text()), log, ran)
    console.print(f"Done in {time.time() - started:.1f} s. Artifacts in {display_path(cfg.root)}")


def _show(root: Path, candidates: Path, rates: dict, log, ran: dict[str, bool]) -> None:
    from rlhfkit.data import load

    rows = load(candidates).rows
    example = rows[0]
    email = example["prompt"][-1]["content"]
    console.rule("A customer email and two sampled replies")
    console.print(email, markup=False)
    for key in ("response_a", "response_b"):
        console.print(f"[bold]{key}[/bold]: {escape(example[key][0]['content'])}")

    console.print(
        f"Success criteria on {rates['complete']} complete sampled replies, before any training "
        f"({rates['truncated']} more were cut off at the token limit and are not counted):"
    )
    table = Table()
    table.add_column("criterion")
    table.add_column("should")
    table.add_column("pass rate", justify="right")
    for name, r in rates["criteria"].items():
        rate = "n/a" if r["pass_rate"] is None else f"{r['pass_rate']:.0%}"
        table.add_row(name, r["direction"], rate)
    console.print(table)
    if rates["mean_words"] is not None:
        console.print(f"mean length of complete replies: {rates['mean_words']:.0f} words")

    console.print("Stages:")
    stages = Table()
    stages.add_column("stage")
    stages.add_column("status")
    stages.add_column("seconds", justify="right")
    for name, record in log.records.items():
        stages.add_row(name, "ran" if ran.get(name) else "skipped (done)", f"{record['seconds']}")
    console.print(stages)
