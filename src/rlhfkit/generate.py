"""Candidate reply pairs for annotation: batched, seeded sampling of each prompt's replies.

Sampling is the one sampler of `rlhfkit.train.rollout`, which PPO and `eval policy` use too:
conversational prompts go through the tokenizer's chat template, standard (text) prompts are
continued as they are, tokenised as the trainers tokenise them (TRL's convention), so that
what is sampled here is exactly what the trainers will see later.

Long runs resume: finished batches are appended to a hidden ``.OUT.partial`` file, and a rerun
with the same settings continues after the last finished batch. The output file appears
(atomically) only when every prompt is done.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rlhfkit import strict_json
from rlhfkit.choices import PRECISIONS, Precision, one_of
from rlhfkit.data import Dataset, Format, load, write_jsonl
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
PROMPT_ROW_FIELDS = ("prompt", "completion", "chosen", "rejected")
"""A prompt row's fields that a candidate pair does not carry over (its other columns do)."""


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
        ours = {f.name for f in dataclasses.fields(cls)}
        table = {k: v for k, v in settings.model_dump().items() if k in ours}
        return cls(**{**table, **given})

    def check(self) -> None:
        if self.n < 1 or self.batch_size < 1 or self.max_new_tokens < 1:
            raise UserError("n, batch size and max new tokens must be at least 1")
        if self.temperature < 0 or not 0 < self.top_p <= 1:
            raise UserError("temperature must be >= 0 and top-p in (0, 1]")
        if self.temperature == 0 and self.n > 1:
            raise UserError("temperature 0 is greedy decoding: every sample would be the same")
        if self.precision not in PRECISIONS:
            raise UserError(f"precision is {one_of(PRECISIONS)}, not '{self.precision}'")


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
    # 1. the request checked, the prompts read, the settings a resumed run must share
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
    if out.suffix != ".jsonl":
        raise UserError(f"{display_path(out)}: the candidates file must end in .jsonl")
    from rlhfkit.train.loop import resolve_precision  # lazy: keeps `rlhfkit --help` light

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

    # 2. every model's replies to every prompt, resuming an interrupted run
    partial = out.with_name(f".{out.name}.partial")
    groups = _sample_all(rows, sources, cfg, partial, config_hash(settings), on_progress)
    # a NUL can be a token of its own (a random model samples it); no reply means one, and
    # the annotation store (PostgreSQL) cannot keep it
    groups = [[(text.replace("\x00", ""), fin) for text, fin in g] for g in groups]

    # 3. pairs of each prompt's replies, written with their manifest
    # each reply's model as the user would name it (a folder relative to here, or an alias)
    names = [display_path(ref) if Path(ref).exists() else ref for ref, _ in sources]
    written_by = [name for name, (_, n) in zip(names, sources, strict=True) for _ in range(n)]
    written_by = written_by if compare_with else None
    pair_rows, skipped = _pairs(dataset, rows, groups, all_pairs, written_by)
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


def _sample_all(
    rows: list[dict[str, Any]],
    sources: list[tuple[str, int]],
    cfg: SamplingConfig,
    partial: Path,
    settings_hash: str,
    on_progress: Callable[[int, int], None] | None,
) -> list[list[Any]]:
    """Each prompt's replies, ``[(text, finished_with_eos), ...]``: the first source's (model,
    replies per prompt), then the next's.

    One unit of work is one model's batch, the first model's batches first. Unit u samples
    with ``batch_seed(cfg.seed, u)``: the main model's batches sample as they always did. Each
    finished unit is appended to `partial`, and a rerun with the same settings continues
    after the last one there.
    """
    # lazy: torch; `rlhfkit generate --help` imports this module
    from rlhfkit.train.rollout import Sampling, batch_seed, sample_replies

    batches = [rows[i : i + cfg.batch_size] for i in range(0, len(rows), cfg.batch_size)]
    units = [(s, b) for s in range(len(sources)) for b in range(len(batches))]
    done = _resume(partial, settings_hash, len(units))

    def report(n_units: int) -> None:
        if on_progress:
            whole, part = divmod(n_units, len(batches))
            prompts_done = whole * len(rows) + min(part * cfg.batch_size, len(rows))
            on_progress(prompts_done, len(rows) * len(sources))

    report(len(done))
    loaded: tuple[int, Any, Any] | None = None
    for u in range(len(done), len(units)):
        s, b = units[u]
        if loaded is None or loaded[0] != s:
            loaded = (s, *_sampler(sources[s][0], cfg.precision))
        sampling = Sampling(sources[s][1], cfg.max_new_tokens, cfg.temperature, cfg.top_p)
        _, model, tokenizer = loaded
        prompts = [row["prompt"] for row in batches[b]]
        replies = sample_replies(model, tokenizer, prompts, sampling, batch_seed(cfg.seed, u))
        texts_finished = zip(replies.texts, replies.finished, strict=True)
        done.append([list(zip(t, f, strict=True)) for t, f in texts_finished])
        _append(partial, done[-1])
        report(u + 1)

    groups: list[list] = [[] for _ in rows]
    for (_, b), unit in zip(units, done, strict=True):
        for i, group in enumerate(unit):
            groups[b * cfg.batch_size + i] += group
    return groups


def _pairs(
    dataset: Dataset,
    rows: list[dict[str, Any]],
    groups: list[list[Any]],
    all_pairs: bool,
    written_by: list[str] | None,
) -> tuple[list[dict[str, Any]], int]:
    """The comparison rows of each prompt's replies, and how many pairs were skipped (the two
    replies identical, or one empty). `written_by`: each reply's model, when two took part."""
    conversational = dataset.kind.conversational
    pair_rows, skipped = [], 0
    for index, (row, group) in enumerate(zip(rows, groups, strict=True)):
        indices = range(len(group))
        pairs = (
            itertools.combinations(indices, 2)
            if all_pairs
            else zip(indices[::2], indices[1::2], strict=False)
        )
        # the prompt row's other columns (e.g. a topic) pass through, as everywhere
        extra = {k: v for k, v in row.items() if k not in PROMPT_ROW_FIELDS}
        for a, b in pairs:
            (text_a, fin_a), (text_b, fin_b) = group[a], group[b]
            if text_a == text_b or not text_a or not text_b:
                skipped += 1
                continue
            models = {}
            if written_by is not None:
                same = written_by[a] == written_by[b]
                models = {
                    "models": [written_by[a], written_by[b]],
                    "pairing": "same model" if same else "across models",
                }
            pair_rows.append(
                extra
                | models
                | {
                    "id": f"p{index:05d}-{a}-{b}",
                    "prompt": row["prompt"],
                    "response_a": _as_completion(text_a, conversational),
                    "response_b": _as_completion(text_b, conversational),
                    "truncated": [not fin_a, not fin_b],
                    "source_row": dataset.lines[index],
                }
            )
    return pair_rows, skipped


def _sampler(model_ref: str, precision: str) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """A model ready to sample from, in the weights' dtype `precision` asks for."""
    import torch  # lazy: `rlhfkit generate --help` imports this module

    from rlhfkit.models import load_model  # lazy: keeps `rlhfkit --help` light

    model, tokenizer = load_model(model_ref)
    model.eval()
    if precision == "bf16":
        model.to(torch.bfloat16)
    return model, tokenizer


def _as_completion(text: str, conversational: bool) -> str | list[dict[str, str]]:
    return [{"role": "assistant", "content": text}] if conversational else text


def _resume(partial: Path, settings_hash: str, n_units: int) -> list[Any]:
    """The units an interrupted run with these settings finished (see `_read_partial`); with
    none, `partial` starts afresh with the settings' hash as its first line."""
    done = _read_partial(partial, settings_hash)
    if len(done) > n_units:
        done = []
    if not done:
        partial.parent.mkdir(parents=True, exist_ok=True)
        with partial.open("w") as f:
            f.write(strict_json.dumps({"config_hash": settings_hash}) + "\n")
    return done


def _append(partial: Path, unit: list[Any]) -> None:
    """One finished unit as a line of `partial`, on disk before the next unit starts."""
    with partial.open("a") as f:
        f.write(strict_json.dumps(unit) + "\n")
        f.flush()
        os.fsync(f.fileno())


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
