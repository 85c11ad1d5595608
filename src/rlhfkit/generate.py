"""Batched, seeded sampling: candidate reply pairs for annotation (later, rollouts for RL).

Conversational prompts go through the tokenizer's chat template; standard (text) prompts are
continued as they are, following TRL's convention so that what is sampled here is exactly
what the trainers will see later.

Long runs resume: finished batches are appended to a hidden ``.OUT.partial`` file, and a rerun
with the same settings continues after the last finished batch. The output file appears
(atomically) only when every prompt is done.
"""

from __future__ import annotations

import itertools
import json
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rlhfkit import strict_json
from rlhfkit.choices import PRECISIONS, Precision, one_of
from rlhfkit.data import Format, load, write_jsonl
from rlhfkit.errors import UserError, display_path
from rlhfkit.lineage import config_hash, sha256_file, write_manifest

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

PROMPT_FORMATS = (
    Format.PROMPT_ONLY,
    Format.PROMPT_COMPLETION,
    Format.PREFERENCE,
    Format.COMPARISON,
)


@dataclass(frozen=True)
class SamplingConfig:
    n: int = 2
    """Responses sampled per prompt."""
    temperature: float = 0.9
    """Sampling temperature."""
    top_p: float = 0.95
    """Nucleus sampling mass."""
    max_new_tokens: int = 128
    """Longest response in tokens."""
    seed: int = 0
    """Random seed: with the same seed and batch size, the same responses come out."""
    batch_size: int = 16
    """Prompts per forward batch (each expands to n sequences)."""
    # Measured on 2 AVX512-BF16 cores: 96 replies of 80 tokens in 17 s in bf16, 29 s in fp32.
    precision: Precision = "auto"
    """The weights' dtype while sampling. auto: bf16 where this machine runs bf16 matmuls
    faster than fp32 (as training decides it: GPUs, CPUs with AVX512-BF16 or AMX), else fp32."""

    @classmethod
    def from_spec(cls, settings: Any, **overrides: Any) -> SamplingConfig:
        """Sampling settings from a project spec's [generate] table, with overrides."""
        given = {k: v for k, v in overrides.items() if v is not None}
        return cls(**{**settings.model_dump(), **given})

    def check(self) -> None:
        if self.n < 1 or self.batch_size < 1 or self.max_new_tokens < 1:
            raise UserError("n, batch size and max new tokens must be at least 1")
        if self.temperature < 0 or not 0 < self.top_p <= 1:
            raise UserError("temperature must be >= 0 and top-p in (0, 1]")
        if self.temperature == 0 and self.n > 1:
            raise UserError("temperature 0 is greedy decoding: every sample would be the same")
        if self.precision not in PRECISIONS:
            raise UserError(f"precision is {one_of(PRECISIONS)}, not '{self.precision}'")


def render(tokenizer: PreTrainedTokenizerBase, prompt: str | list[dict[str, str]]) -> str:
    """The exact text the model continues: chat template for messages, the text itself else."""
    if isinstance(prompt, str):
        return prompt
    return tokenizer.apply_chat_template(prompt, tokenize=False, add_generation_prompt=True)


def sample(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    texts: list[str],
    cfg: SamplingConfig,
    batch_index: int = 0,
    chat: bool = True,
) -> list[list[tuple[str, bool]]]:
    """Sample `cfg.n` responses for each rendered prompt: ``[(text, finished_with_eos), ...]``.

    `chat`: the prompts were rendered with the chat template (replies are stripped)."""
    from rlhfkit.train.rollout import sample_rollout

    prompts = [tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts]
    rollout = sample_rollout(
        model,
        tokenizer,
        prompts,
        cfg.n,
        cfg.max_new_tokens,
        cfg.temperature,
        cfg.top_p,
        seed=(cfg.seed * 1_000_003 + batch_index) % 2**63,
    )
    results = []
    for i in range(len(texts)):
        group = []
        for j in range(i * cfg.n, (i + 1) * cfg.n):
            text = rollout.texts[j]
            # A chat reply's surrounding whitespace is template noise; a text continuation's
            # leading space is part of it (TRL joins prompt + completion as they are).
            group.append((text.strip() if chat else text, bool(rollout.finished[j])))
        results.append(group)
    return results


@dataclass
class GenerateResult:
    out: Path
    prompts: int
    pairs: int
    identical_skipped: int
    truncated: int
    responses: list[list[str]]


def generate_candidates(
    model_ref: str,
    prompts_path: Path,
    out: Path,
    cfg: SamplingConfig,
    limit: int | None = None,
    all_pairs: bool = False,
    on_progress: Callable[[int, int], None] | None = None,
    extra_config: dict[str, Any] | None = None,
    compare_with: str | None = None,
    compare_n: int = 1,
) -> GenerateResult:
    """Sample responses for each prompt and write comparison pairs for annotation.

    Pairs are consecutive responses (1-2, 3-4, ...) or, with `all_pairs`, every pair. A pair
    whose two responses are identical is skipped: there is nothing to compare.

    `compare_with`: another model (the starting checkpoint, last release's model) adds
    `compare_n` responses to each prompt's, after the main model's, sampled the same way
    (InstructGPT's labelers ranked outputs of several models). Its pairs then say which
    models wrote them (``models``, and ``pairing``: "same model" or "across models").
    """
    cfg.check()
    sources = [(model_ref, cfg.n)] + ([(compare_with, compare_n)] if compare_with else [])
    if compare_n < 1:
        raise UserError("--compare-n must be at least 1")
    if sum(n for _, n in sources) < 2:
        raise UserError("candidate pairs need at least 2 responses per prompt (--n 2)")
    if limit is not None and limit < 1:
        raise UserError("--limit must be at least 1")
    dataset = load(prompts_path, expect=PROMPT_FORMATS)
    rows = dataset.rows[:limit] if limit is not None else dataset.rows
    conversational = dataset.kind.conversational
    if out.suffix != ".jsonl":
        raise UserError(f"{display_path(out)}: the candidates file must end in .jsonl")

    from rlhfkit.train.loop import resolve_precision

    cfg = replace(cfg, precision=resolve_precision(cfg.precision))
    settings = {
        "model": model_ref,
        "prompts": str(prompts_path),
        "prompts_sha256": sha256_file(prompts_path) if prompts_path.is_file() else None,
        "limit": limit,
        **asdict(cfg),
    }
    if compare_with:
        settings |= {"compare_with": compare_with, "compare_n": compare_n}
    partial = out.with_name(f".{out.name}.partial")
    done = _read_partial(partial, config_hash(settings))
    batches = [rows[i : i + cfg.batch_size] for i in range(0, len(rows), cfg.batch_size)]
    # one unit of work: one model's batch; the main model's batches come first
    units = [(s, b) for s in range(len(sources)) for b in range(len(batches))]
    if len(done) > len(units):
        done = []
    if not done:
        out.parent.mkdir(parents=True, exist_ok=True)
        with partial.open("w") as f:
            f.write(strict_json.dumps({"config_hash": config_hash(settings)}) + "\n")

    def prompts_done(n_units: int) -> int:
        whole, part = divmod(n_units, len(batches))
        return whole * len(rows) + min(part * cfg.batch_size, len(rows))

    total = len(rows) * len(sources)
    if on_progress:
        on_progress(prompts_done(len(done)), total)
    loaded: tuple[int, Any, Any] | None = None
    for u, (s, b) in enumerate(units):
        if u < len(done):
            continue
        if loaded is None or loaded[0] != s:
            loaded = (s, *_sampler(sources[s][0], cfg.precision))
        _, model, tokenizer = loaded
        texts = [render(tokenizer, r["prompt"]) for r in batches[b]]
        # the unit's index seeds it: the main model's batches sample as they always did
        unit_cfg = replace(cfg, n=sources[s][1])
        groups = sample(model, tokenizer, texts, unit_cfg, batch_index=u, chat=conversational)
        with partial.open("a") as f:
            f.write(strict_json.dumps(groups) + "\n")
            f.flush()
            os.fsync(f.fileno())
        done.append(groups)
        if on_progress:
            on_progress(prompts_done(u + 1), total)

    # each prompt's responses: the main model's, then the other model's
    groups: list[list] = [[] for _ in rows]
    for (_, b), batch_groups in zip(units, done, strict=True):
        for i, group in enumerate(batch_groups):
            groups[b * cfg.batch_size + i] += group
    written_by = [ref for ref, n in sources for _ in range(n)]
    pair_rows, skipped = [], 0
    for index, (row, group) in enumerate(zip(rows, groups, strict=True)):
        indices = range(len(group))
        pairs = (
            itertools.combinations(indices, 2)
            if all_pairs
            else zip(indices[::2], indices[1::2], strict=False)
        )
        for a, b in pairs:
            (text_a, fin_a), (text_b, fin_b) = group[a], group[b]
            if text_a == text_b or not text_a or not text_b:
                skipped += 1
                continue
            # the prompt row's other columns (e.g. a topic) pass through, as everywhere
            extra = {
                k: v
                for k, v in row.items()
                if k not in ("prompt", "completion", "chosen", "rejected")
            }
            if compare_with:
                same = written_by[a] == written_by[b]
                extra |= {
                    "models": [written_by[a], written_by[b]],
                    "pairing": "same model" if same else "across models",
                }
            pair_rows.append(
                extra
                | {
                    "id": f"p{index:05d}-{a}-{b}",
                    "prompt": row["prompt"],
                    "response_a": _as_completion(text_a, conversational),
                    "response_b": _as_completion(text_b, conversational),
                    "truncated": [not fin_a, not fin_b],
                    "source_row": dataset.lines[index],
                }
            )
    write_jsonl(out, pair_rows)
    write_manifest(
        out,
        kind="candidates",
        inputs={"prompts": prompts_path},
        config={**settings, "all_pairs": all_pairs, **(extra_config or {})},
    )
    partial.unlink(missing_ok=True)
    truncated = sum(not fin for g in groups for _, fin in g)
    return GenerateResult(
        out, len(rows), len(pair_rows), skipped, truncated, [[t for t, _ in g] for g in groups]
    )


def _sampler(model_ref: str, precision: str):
    """A model ready to sample from, in the weights' dtype `precision` asks for."""
    import torch

    from rlhfkit.models import load_model

    model, tokenizer = load_model(model_ref)
    model.eval()
    if precision == "bf16":
        model.to(torch.bfloat16)
    return model, tokenizer


def _as_completion(text: str, conversational: bool) -> str | list[dict[str, str]]:
    return [{"role": "assistant", "content": text}] if conversational else text


def _read_partial(path: Path, expected_hash: str) -> list[Any]:
    """Finished batches of an interrupted run with the same settings (else nothing).

    A batch cut off mid-write by a crash is dropped, and the file is rewritten without it so
    that the next append starts on a clean line.
    """
    if not path.exists():
        return []
    lines = path.read_text().splitlines()
    try:
        if not lines or json.loads(lines[0]).get("config_hash") != expected_hash:
            return []
    except json.JSONDecodeError:
        return []
    batches = []
    for line in lines[1:]:
        try:
            batches.append(json.loads(line))
        except json.JSONDecodeError:
            break
    if len(batches) < len(lines) - 1:
        path.write_text("\n".join(lines[: len(batches) + 1]) + "\n")
    return batches
