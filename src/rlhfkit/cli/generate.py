"""`rlhfkit generate`: sample candidate reply pairs for annotation."""

from __future__ import annotations

from pathlib import Path

import typer

from rlhfkit.cli.common import console, progress_bar, status


def generate(
    project: Path = typer.Option(
        None,
        help="Project folder: model, prompts, output and sampling settings come from its spec.",
    ),
    model: str = typer.Option(None, help="Model folder, hub id in the local cache, or alias."),
    prompts: Path = typer.Option(None, help="Prompts (any format with a 'prompt' field)."),
    out: Path = typer.Option(None, help="Where to write the candidate pairs (.jsonl)."),
    n: int = typer.Option(None, help="Responses per prompt (default: the spec's, else 2)."),
    temperature: float = typer.Option(
        None, help="Sampling temperature (default: the spec's, else 0.9)."
    ),
    top_p: float = typer.Option(
        None, help="Nucleus sampling mass (default: the spec's, else 0.95)."
    ),
    max_new_tokens: int = typer.Option(
        None, help="Longest response in tokens (default: the spec's, else 128)."
    ),
    seed: int = typer.Option(None, help="Random seed (default: the spec's, else 0)."),
    batch_size: int = typer.Option(16, help="Prompts per batch."),
    precision: str = typer.Option(
        "auto",
        help="Weights' dtype while sampling: bf16, fp32, or auto (bf16 where this machine runs "
        "it faster: GPUs, CPUs with AVX512-BF16 or AMX).",
    ),
    limit: int = typer.Option(None, min=1, help="Use only the first N prompts."),
    all_pairs: bool = typer.Option(
        False, help="Pair every two responses of a prompt, not just 1-2, 3-4, ..."
    ),
    compare_with: str = typer.Option(
        None,
        help="Another model (e.g. the starting checkpoint) whose responses join each prompt's, "
        "so annotators also compare the two models; its pairs record which models wrote them.",
    ),
    compare_n: int = typer.Option(1, min=1, help="Responses per prompt from --compare-with."),
) -> None:
    """Sample N responses per prompt and write pairs of them for annotators to compare.

    Conversational prompts go through the model's chat template. Sampling is batched and
    seeded: the same seed and batch size give the same responses. An interrupted run resumes
    from its last finished batch when run again with the same settings.
    """
    from rlhfkit.errors import UserError, display_path
    from rlhfkit.generate import SamplingConfig, generate_candidates

    overrides = {
        "n": n,
        "temperature": temperature,
        "top_p": top_p,
        "max_new_tokens": max_new_tokens,
        "seed": seed,
        "batch_size": batch_size,
        "precision": precision,
    }
    if project is not None:
        from rlhfkit.project import load_project

        proj = load_project(project)
        model = model or proj.spec.base_model
        prompts = prompts or proj.data_path("prompts")
        out = out or proj.artifacts("candidates.jsonl")
        cfg = SamplingConfig.from_spec(proj.spec.generate, **overrides)
    else:
        cfg = SamplingConfig(**{k: v for k, v in overrides.items() if v is not None})
    if model is None or prompts is None or out is None:
        raise UserError("give --project, or all of --model, --prompts and --out")
    if cfg.precision not in ("auto", "bf16", "fp32"):
        raise UserError(f"--precision must be auto, bf16 or fp32, not '{cfg.precision}'")

    with status(f"loading {model}"):
        from rlhfkit.models import resolve

        resolve(model)  # converts a bundled model on first use, under the spinner
        if compare_with:
            resolve(compare_with)
    with progress_bar("sampling") as update:
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
