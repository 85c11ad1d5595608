"""`rlhfkit generate`: sample candidate reply pairs for annotation."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from rlhfkit.choices import PRECISIONS, one_of
from rlhfkit.cli.common import StepProgress, console, status
from rlhfkit.cli.configs import config_options
from rlhfkit.errors import UserError, display_path
from rlhfkit.generate import SamplingConfig, generate_candidates

# The settings a project spec's [generate] table may hold: left out, they come from there.
FROM_SPEC = ("n", "temperature", "top_p", "max_new_tokens", "seed", "batch_size", "precision")


@config_options(SamplingConfig, from_spec=FROM_SPEC)
def generate(
    project: Path = typer.Option(
        None,
        help="Project folder: model, prompts, output and sampling settings come from its spec.",
    ),
    model: str = typer.Option(None, help="Model folder, hub id in the local cache, or alias."),
    prompts: Path = typer.Option(None, help="Prompts (any format with a 'prompt' field)."),
    out: Path = typer.Option(None, help="Where to write the candidate pairs (.jsonl)."),
    limit: int = typer.Option(
        None, min=1, help="Use only the first N prompts (default: the spec's limit, else all)."
    ),
    all_pairs: bool = typer.Option(
        None,
        "--all-pairs/--adjacent-pairs",
        help="Pair every two responses of a prompt (6 pairs from 4 replies), or only 1-2, 3-4, "
        "... (default: the spec's all_pairs, else every pair).",
    ),
    compare_with: str = typer.Option(
        None,
        help="Another model (e.g. the starting checkpoint) whose responses join each prompt's, "
        "so annotators also compare the two models; its pairs record which models wrote them.",
    ),
    compare_n: int = typer.Option(1, min=1, help="Responses per prompt from --compare-with."),
    *,
    settings: dict[str, Any],
) -> None:
    """Sample N responses per prompt and write pairs of them for annotators to compare.

    Conversational prompts go through the model's chat template. Sampling is batched and
    seeded: the same seed and batch size give the same responses. An interrupted run resumes
    from its last finished batch when run again with the same settings.
    """
    from rlhfkit.models import resolve  # lazy: importlib.metadata, ~40 ms of --help
    from rlhfkit.project import load_project  # lazy: pydantic and the criteria slow --help

    if project is not None:
        proj = load_project(project)
        model = model or proj.spec.base_model
        prompts = prompts or proj.data_path("prompts")
        out = out or proj.artifacts("candidates.jsonl")
        cfg = SamplingConfig.from_spec(proj.spec.generate, **settings)
        limit = limit if limit is not None else proj.spec.generate.limit
        all_pairs = proj.spec.generate.all_pairs if all_pairs is None else all_pairs
    else:
        cfg = SamplingConfig(**{k: v for k, v in settings.items() if v is not None})
    if model is None or prompts is None or out is None:
        raise UserError("give --project, or all of --model, --prompts and --out")
    if cfg.precision not in PRECISIONS:
        raise UserError(f"--precision must be {one_of(PRECISIONS)}, not '{cfg.precision}'")

    all_pairs = True if all_pairs is None else all_pairs
    with status(f"loading {model}"):
        resolve(model)  # converts a bundled model on first use, under the spinner
        if compare_with:
            resolve(compare_with)
    with StepProgress("sampling") as update:
        result = generate_candidates(
            model,
            prompts,
            out,
            cfg,
            limit=limit,
            all_pairs=all_pairs,
            on_progress=update,
            compare_with=compare_with,
            compare_n=compare_n,
        )
    console.print(
        f"{display_path(result.out)}: {result.pairs} pairs from {result.prompts} prompts "
        f"({result.identical_skipped} identical pairs skipped, "
        f"{result.truncated} responses cut at {cfg.max_new_tokens} tokens)"
    )
