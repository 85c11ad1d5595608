"""`rlhfkit eval policy`: what changed between a policy before and after training.

Both models answer the same held-out prompts, S samples each, with the same seeds (batch b
samples with seed ``seed * 1_000_003 + b`` for either model). Sampling runs at the spec's
temperature with top-p 1 by default, so the KL estimate below is exact in expectation.

Measured: each success criterion's pass rate before and after (Wilson intervals, a paired
test over prompts, a verdict), mean length and its change, the reward model's mean reward
and win rate, each judge's win rate of after over before, KL(after || before), and the
reward-hacking monitors on the after samples against the before samples.

KL: on each after sample y, ``log p_after(y) - log p_before(y)`` summed over its tokens (both
at the sampling temperature); the mean over samples estimates KL(after || before) in nats
per response (Schulman's k1 estimator; single samples can be negative, the mean cannot be in
expectation).

Output folder: ``eval.json`` and ``samples.jsonl`` (one row per prompt x sample).

eval.json (``"schema": "rlhfkit.eval_policy/1"``)::

    schema, created, seconds {sample_before, sample_after, score, judges, total}
    project {name, spec, rubric_version}
    models {before, after}
    settings {prompts, n_prompts, samples_per_prompt, max_new_tokens, temperature, top_p,
              seed, batch_size, test, alpha, confidence, judges [str], reward_model}
    freeze {criteria_hash, frozen_hash, changed, frozen_at, frozen_by, changes [str], message}
    criteria [{name, description, direction, detector,
               before {rate, ci [lo, hi]}, after {rate, ci},
               diff, diff_ci, p_value, test, verdict}]
        verdict: "improved" | "regressed" | "no significant change" (at alpha, by direction)
    length {unit: "words", before {mean, ci}, after {mean, ci}, diff, diff_ci, ratio,
            p_value, test, tokens {before, after}, truncated {before, after}}
    reward  null | {model, before {mean, ci}, after {mean, ci}, diff, diff_ci, p_value, test,
                    rise_sd}
    win_rates [{judge, win_rate, ci, p_value, wins, losses, ties, both_bad, n, test}]
        win_rate: share of pairs after beat before, ties and both-bad counting half
    kl {value, ci, per_token, n, negative_share, estimator, exact} | {value: null, reason}
    monitors [{name, value, threshold, flagged, explanation, reference}]
    flagged [names of monitors that fired]
    samples_file: "samples.jsonl"

samples.jsonl: {prompt_index, sample, seed, prompt, before, after, before_finished,
after_finished, before_words, after_words, criteria {name: {before, after}}, reward {before,
after} (with a reward model), kl (nats), judges {judge: {winner: after|before|tie|both_bad,
rationale}}}.
"""

from __future__ import annotations

import contextlib
import json
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from rlhfkit import strict_json
from rlhfkit.criteria import JudgeDetector
from rlhfkit.errors import UserError, display_path
from rlhfkit.evaluate import stats
from rlhfkit.evaluate.criteria import DetectContext, criteria_status, detect
from rlhfkit.evaluate.judges import (
    OpenAIJudge,
    PairwiseJudge,
    RewardModelJudge,
    make_judge,
    parse_judge,
)
from rlhfkit.evaluate.monitors import compare_flags, word_count

SCHEMA = "rlhfkit.eval_policy/1"
Progress = Callable[[str, int, int], None]


@dataclass(frozen=True)
class PolicyEvalConfig:
    project: Path
    """Project folder (or its rlhfkit.toml): criteria, monitors and defaults come from it."""
    before: str
    """The starting policy: a model folder, alias, or a training run's final/ (LoRA too)."""
    after: str
    """The trained policy."""
    out: Path
    """Output folder for eval.json and samples.jsonl."""
    prompts: Path | None = None
    """Held-out prompts (default: the spec's data.eval_prompts)."""
    limit: int | None = None
    """Use only the first N prompts."""
    samples: int = 2
    """Samples per prompt and model."""
    max_new_tokens: int | None = None
    """Longest response (default: the spec's [generate] max_new_tokens)."""
    temperature: float | None = None
    """Sampling temperature (default: the spec's)."""
    top_p: float = 1.0
    """Nucleus mass; below 1 the KL estimate is only approximate."""
    seed: int | None = None
    """Seed (default: the spec's)."""
    batch_size: int = 8
    """Prompts per generation batch."""
    judges: tuple[str, ...] = ()
    """rm:DIR, panel, callable:module:function or openai (see judges.py)."""
    reward_model: str | None = None
    """A reward model for mean reward, its win rate and 'reward up, no criterion moved'."""
    test: str = "permutation"
    """permutation, bootstrap or two_proportion (see stats.py)."""
    sample_cache: Path | None = None
    """A folder where the --before model's samples are kept and reused by a later evaluation
    with the same model, prompts and settings (e.g. PPO and DPO against one start)."""
    alpha: float = 0.05
    confidence: float = 0.95


@dataclass
class Sampled:
    """One model's samples: texts [P][S], finished [P][S], token counts [P][S]."""

    texts: list[list[str]] = field(default_factory=list)
    finished: list[list[bool]] = field(default_factory=list)
    tokens: list[list[int]] = field(default_factory=list)


def load_policy(ref: str):
    """A causal LM from a model folder or alias, or from a LoRA adapter folder (a training
    run's final/ saved with --no-merge-lora): its base model with the adapter merged in."""
    from rlhfkit.models import MANIFEST, load_model, load_tokenizer

    folder = Path(ref)
    adapter = folder / "adapter_config.json"
    if folder.is_dir() and adapter.exists() and not (folder / "config.json").exists():
        from peft import PeftModel

        manifest = folder / MANIFEST
        base = json.loads(manifest.read_text()).get("base_model") if manifest.exists() else None
        base = base or json.loads(adapter.read_text()).get("base_model_name_or_path")
        if not base:
            raise UserError(f"{display_path(folder)}: a LoRA adapter that names no base model")
        model, _ = load_model(base)
        model = PeftModel.from_pretrained(model, str(folder)).merge_and_unload()
        return model.eval(), load_tokenizer(base)  # LoRA leaves the tokenizer as it was
    model, tok = load_model(ref)
    return model.eval(), tok


def _recorded_hash(ref: str) -> str | None:
    """The criteria hash a trained model's manifest carries, if any."""
    from rlhfkit.models import MANIFEST

    manifest = Path(ref) / MANIFEST
    if not manifest.is_file():
        return None
    return json.loads(manifest.read_text()).get("criteria_hash")


@dataclass
class ModelRun:
    """What one model contributed: its samples, and log-probs for the KL estimate."""

    samples: Sampled
    rollouts: list
    """Its rollouts (token ids; empty when the samples came from the cache)."""
    own_logps: list[float] | None
    """Summed log-probs of its own samples, one per sample in order (if asked)."""
    scored_logps: list[float] | None
    """Summed log-probs of another model's rollouts (if asked and the tokenizers match)."""
    tokenizer: Any


def sample_model(
    ref: str,
    prompts: list[Any],
    cfg: PolicyEvalConfig,
    temperature: float,
    max_new_tokens: int,
    seed: int,
    progress: Progress | None = None,
    label: str = "",
    score_own: bool = False,
    score_rollouts: list | None = None,
    same_tokens_as: Any = None,
) -> ModelRun:
    """Sample `cfg.samples` responses per prompt from `ref`, batch by batch, seeded alike for
    every model (or read them from `cfg.sample_cache`, unless `score_own`: the KL needs the
    token ids). For the KL estimate: `score_own` keeps the sampler's log-prob of each of the
    model's own samples (at `temperature`, before top-p: the same numbers a scoring pass would
    give, to float rounding, for one pass less);
    `score_rollouts` another model's rollouts — unless this tokenizer differs from
    `same_tokens_as` (the token ids would mean other text)."""
    import torch

    from rlhfkit.train.rollout import sample_rollout
    from rlhfkit.train.tokenize import token_ids

    model, tok = load_policy(ref)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model.to(device)
    chat = isinstance(prompts[0], list)
    cached = None
    if cfg.sample_cache is not None and not score_own:
        key = _cache_key(ref, prompts, cfg, temperature, max_new_tokens, seed)
        cached = Path(cfg.sample_cache) / f"samples-{key}.json"
    out, rollouts, own_logps = Sampled(), [], []
    if cached is not None and cached.exists():
        out = Sampled(**json.loads(cached.read_text())["samples"])
        if progress:
            progress(f"{label} (cached)", 1, 1)
    else:
        batches = [prompts[i : i + cfg.batch_size] for i in range(0, len(prompts), cfg.batch_size)]
        for b, batch in enumerate(batches):
            ids = [token_ids(tok, p, generation_prompt=isinstance(p, list)) for p in batch]
            with _quiet_transformers():
                rollout = sample_rollout(
                    model, tok, ids, cfg.samples, max_new_tokens, temperature, cfg.top_p,
                    (seed * 1_000_003 + b) % 2**63, logprobs=score_own,
                )  # fmt: skip
            if score_own:  # the sampler's own log-probs: no second pass over these samples
                own_logps += (rollout.logps * rollout.response_mask).sum(dim=1).tolist()
            rollout = rollout._replace(
                logps=None,
                entropy=None,
                input_ids=rollout.input_ids.cpu(),
                attention_mask=rollout.attention_mask.cpu(),
                response_mask=rollout.response_mask.cpu(),
                finished=rollout.finished.cpu(),
            )
            rollouts.append(rollout)
            lengths = rollout.response_mask.sum(dim=1).long().tolist()
            for i in range(len(batch)):
                rows = range(i * cfg.samples, (i + 1) * cfg.samples)
                # a chat reply's surrounding whitespace is template noise (generate.py strips)
                texts = [rollout.texts[r] for r in rows]
                out.texts.append([t.strip() for t in texts] if chat else texts)
                out.finished.append([bool(rollout.finished[r]) for r in rows])
                out.tokens.append([lengths[r] for r in rows])
            if progress:
                progress(label, b + 1, len(batches))
        if cached is not None:
            from rlhfkit.data.io import atomic_open

            with atomic_open(cached) as f:
                strict_json.dump({"model": ref, "samples": asdict(out)}, f)

    same = same_tokens_as is None or same_tokens_as.get_vocab() == tok.get_vocab()
    return ModelRun(
        out,
        rollouts,
        own_logps if score_own else None,
        _logps(model, temperature, score_rollouts) if score_rollouts and same else None,
        tok,
    )


def _logps(model, temperature: float, rollouts: list) -> list[float]:
    """Summed log-probs of each rollout response under `model`, at `temperature`."""
    import torch

    from rlhfkit.train.rollout import rollout_batch
    from rlhfkit.train.scoring import CompletionScorer, sequence_logps

    scorer, found = CompletionScorer(model, temperature), []
    with torch.inference_mode():
        for rollout in rollouts:
            batch = rollout_batch(rollout).to(model.device)
            found += sequence_logps(scorer, batch).float().cpu().tolist()
    return found


def _cache_key(ref, prompts, cfg, temperature, max_new_tokens, seed) -> str:
    """What makes two runs sample the same: the model's weights (by file size and time), the
    prompts and every sampling setting."""
    from rlhfkit import __version__
    from rlhfkit.lineage import config_hash
    from rlhfkit.models import resolve

    folder = Path(ref) if Path(ref).is_dir() else resolve(ref)
    return config_hash(
        {
            **_weights(folder),
            "prompts": prompts,
            "samples": cfg.samples,
            "batch_size": cfg.batch_size,
            "top_p": cfg.top_p,
            "temperature": temperature,
            "max_new_tokens": max_new_tokens,
            "seed": seed,
            "rlhfkit": __version__,
        }
    )


def _weights(folder: Path) -> dict[str, Any]:
    """A model folder's identity for a cache key: its path and its weight files' sizes and
    modification times (hashing 500 MB per evaluation would cost more than it saves)."""
    weights = [
        (f.name, f.stat().st_size, f.stat().st_mtime_ns)
        for f in sorted(folder.glob("*.safetensors"))
    ]
    return {"folder": str(folder.resolve()), "weights": weights}


def _rewards(
    judge: RewardModelJudge, cfg: PolicyEvalConfig, prompts: list[Any], texts: list[str]
) -> list[float]:
    """The reward model's scores, kept in `cfg.sample_cache` beside the samples when the
    reward model is a folder: the before model's samples are scored once for PPO and DPO."""
    from rlhfkit import __version__
    from rlhfkit.data.io import atomic_open
    from rlhfkit.lineage import config_hash

    folder = Path(cfg.reward_model or "")
    if cfg.sample_cache is None or not folder.is_dir() or not any(folder.glob("*.safetensors")):
        return judge.scores(prompts, texts)
    key = config_hash(
        {"rm": _weights(folder), "prompts": prompts, "responses": texts, "rlhfkit": __version__}
    )
    cached = Path(cfg.sample_cache) / f"rewards-{key}.json"
    if cached.exists():
        return [float(r) for r in json.loads(cached.read_text())]
    found = judge.scores(prompts, texts)
    bad = next((i for i, r in enumerate(found) if not math.isfinite(r)), None)
    if bad is not None:  # as train's reward sources: a broken model, not a score to cache
        raise UserError(f"reward model {display_path(folder)}: scored response {bad} {found[bad]}")
    with atomic_open(cached) as f:  # creates the folder
        strict_json.dump(found, f)  # a cache must read back as written
    return found


@contextlib.contextmanager
def _quiet_transformers():
    """generate()'s deprecation notices (argument renames) are not the user's business."""
    from transformers.utils import logging as hf_logging

    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)


def _grid(flat: list[Any], p: int, s: int) -> np.ndarray:
    return np.array(flat, dtype=float).reshape(p, s)


def _comparison_json(c: stats.Comparison, key: str = "rate") -> dict[str, Any]:
    return {
        "before": {key: c.before, "ci": list(c.before_ci)},
        "after": {key: c.after, "ci": list(c.after_ci)},
        "diff": c.diff,
        "diff_ci": list(c.diff_ci),
        "p_value": c.p_value,
        "test": c.test,
    }


def evaluate_policy(cfg: PolicyEvalConfig, progress: Progress | None = None) -> dict[str, Any]:
    """Run the evaluation, write eval.json and samples.jsonl into `cfg.out`, return eval.json."""
    from rlhfkit.data import load
    from rlhfkit.generate import PROMPT_FORMATS
    from rlhfkit.project import load_project

    started = time.time()
    # 1. the project, its frozen criteria, the prompts and settings; judges checked early
    project = load_project(cfg.project)
    spec = project.spec
    freeze = criteria_status(project, _recorded_hash(cfg.after))
    if cfg.samples < 1 or cfg.batch_size < 1 or (cfg.limit is not None and cfg.limit < 1):
        raise UserError("--samples, --batch-size and --limit must be at least 1")
    if cfg.test not in stats.TESTS:
        raise UserError(f"--test is one of {', '.join(stats.TESTS)}")
    if not 0 < cfg.alpha < 1 or not 0 < cfg.confidence < 1 or not 0 < cfg.top_p <= 1:
        raise UserError("--alpha and --confidence must be in (0, 1), --top-p in (0, 1]")
    choices = [parse_judge(j) for j in cfg.judges]
    prompts_path = cfg.prompts or project.data_path("eval_prompts")
    data = load(prompts_path, expect=PROMPT_FORMATS)
    prompts = [r["prompt"] for r in data.rows[: cfg.limit]]
    temperature = cfg.temperature if cfg.temperature is not None else spec.generate.temperature
    max_new = cfg.max_new_tokens or spec.generate.max_new_tokens
    seed = cfg.seed if cfg.seed is not None else spec.generate.seed
    if temperature <= 0:
        raise UserError("--temperature must be positive: several samples per prompt must differ")
    rubric = [(c.name, c.description) for c in spec.rubric.criteria]
    judges: list[PairwiseJudge] = [make_judge(c, spec.task, rubric) for c in choices]
    rm_judge = RewardModelJudge(cfg.reward_model, name="reward_model") if cfg.reward_model else None
    question_judge = next((j for j in judges if isinstance(j, OpenAIJudge)), None)
    if question_judge is None and any(
        isinstance(c.detector, JudgeDetector) for c in spec.success_criteria
    ):
        question_judge = make_judge(parse_judge("openai"), spec.task, rubric)

    # 2. sample: the after model first (keeping its rollouts and log-probs for KL), then the
    # before model, which scores the after model's rollouts; one model in memory at a time
    t0 = time.time()
    after_run = sample_model(
        cfg.after, prompts, cfg, temperature, max_new, seed, progress, "after", score_own=True
    )
    after = after_run.samples
    t_after = time.time() - t0
    t0 = time.time()
    before_run = sample_model(
        cfg.before, prompts, cfg, temperature, max_new, seed, progress, "before",
        score_rollouts=after_run.rollouts, same_tokens_as=after_run.tokenizer,
    )  # fmt: skip
    before = before_run.samples
    t_before = time.time() - t0

    # 3. criteria, length, reward on both sides
    t0 = time.time()
    p, s = len(prompts), cfg.samples
    flat_prompts = [q for q in prompts for _ in range(s)]
    flat_before = [t for row in before.texts for t in row]
    flat_after = [t for row in after.texts for t in row]
    ctx = DetectContext(root=project.root, question_judge=question_judge)
    hits_before = detect(spec.success_criteria, flat_prompts, flat_before, ctx)
    hits_after = detect(spec.success_criteria, flat_prompts, flat_after, ctx)
    criteria, moves = [], {}
    for i, c in enumerate(spec.success_criteria):
        comp = stats.compare_rates(
            _grid(hits_before[c.name], p, s),
            _grid(hits_after[c.name], p, s),
            cfg.test,  # type: ignore[arg-type]
            cfg.confidence,
            seed=seed + i,
        )
        moves[c.name] = comp.diff * (1 if c.direction == "increase" else -1)
        criteria.append(
            {
                "name": c.name,
                "description": c.description,
                "direction": c.direction,
                "detector": c.detector.kind,
                **_comparison_json(comp),
                "verdict": stats.verdict(comp.diff, comp.p_value, c.direction, cfg.alpha),
            }
        )
    words_b = _grid([word_count(t) for t in flat_before], p, s)
    words_a = _grid([word_count(t) for t in flat_after], p, s)
    length_comp = stats.compare_means(words_b, words_a, cfg.confidence, seed)
    length = {
        "unit": "words",
        **_comparison_json(length_comp, key="mean"),
        "ratio": length_comp.after / length_comp.before if length_comp.before else None,
        "tokens": {"before": float(np.mean(before.tokens)), "after": float(np.mean(after.tokens))},
        "truncated": {
            "before": 1 - float(np.mean(before.finished)),
            "after": 1 - float(np.mean(after.finished)),
        },
    }
    reward, rewards_b, rewards_a, rise_sd = None, None, None, None
    if rm_judge is not None:
        rewards_b = _rewards(rm_judge, cfg, flat_prompts, flat_before)
        rewards_a = rm_judge.scores(flat_prompts, flat_after)
        comp = stats.compare_means(_grid(rewards_b, p, s), _grid(rewards_a, p, s), cfg.confidence)
        sd = float(np.std(rewards_b, ddof=1)) if len(rewards_b) > 1 else 0.0
        rise_sd = comp.diff / sd if sd > 0 else None
        reward = {"model": cfg.reward_model, **_comparison_json(comp, "mean"), "rise_sd": rise_sd}
    kl, kl_per_sample = _kl(after_run.own_logps, before_run.scored_logps, after, cfg.top_p)
    t_score = time.time() - t0

    # 4. judges: after is `a`, before is `b`
    t0 = time.time()
    pairs = list(zip(flat_prompts, flat_after, flat_before, strict=True))
    verdicts: dict[str, list] = {}
    if rm_judge is not None:
        verdicts[rm_judge.name] = rm_judge.from_scores(rewards_a, rewards_b)
    for judge in judges:
        verdicts[judge.name] = judge.judge_many(pairs)
    win_rates = []
    for name, js in verdicts.items():
        score = {"a": 1.0, "b": 0.0, "tie": 0.5, "both_bad": 0.5}
        w = stats.win_rate(_grid([score[j.preference] for j in js], p, s), cfg.confidence)
        both_bad = sum(j.preference == "both_bad" for j in js)
        win_rates.append(
            {"judge": name, **w.to_json(), "ties": w.ties - both_bad, "both_bad": both_bad}
        )
        win_rates[-1]["n"] = len(js)
    t_judges = time.time() - t0

    # 5. monitors: the after samples against the before samples
    flags = compare_flags(
        flat_prompts,
        flat_after,
        flat_before,
        spec.monitors,
        reward_rise_sd=rise_sd,
        criteria_moves=moves,
        kl=kl.get("value"),
    )

    result = {
        "schema": SCHEMA,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "seconds": {
            "sample_after": round(t_after, 2),
            "sample_before": round(t_before, 2),
            "score": round(t_score, 2),
            "judges": round(t_judges, 2),
            "total": round(time.time() - started, 2),
        },
        "project": {
            "name": spec.name,
            "spec": str(project.spec_path),
            "rubric_version": spec.rubric.version,
        },
        "models": {"before": cfg.before, "after": cfg.after},
        "settings": {
            "prompts": str(prompts_path),
            "n_prompts": p,
            "samples_per_prompt": s,
            "max_new_tokens": max_new,
            "temperature": temperature,
            "top_p": cfg.top_p,
            "seed": seed,
            "batch_size": cfg.batch_size,
            "test": stats.TEST_NAMES[cfg.test],
            "alpha": cfg.alpha,
            "confidence": cfg.confidence,
            "judges": list(cfg.judges),
            "reward_model": cfg.reward_model,
        },
        "freeze": freeze.to_json(),
        "criteria": criteria,
        "length": length,
        "reward": reward,
        "win_rates": win_rates,
        "kl": kl,
        "monitors": [f.to_json() for f in flags],
        "flagged": [f.name for f in flags if f.flagged],
        "samples_file": "samples.jsonl",
    }
    rows = _sample_rows(prompts, s, seed, cfg.batch_size, before, after, hits_before, hits_after)
    for i, row in enumerate(rows):
        if rewards_a is not None:
            row["reward"] = {"before": rewards_b[i], "after": rewards_a[i]}
        row["kl"] = kl_per_sample[i] if kl_per_sample else None
        winner = {"a": "after", "b": "before", "tie": "tie", "both_bad": "both_bad"}
        row["judges"] = {
            n: {"winner": winner[js[i].preference], "rationale": js[i].rationale}
            for n, js in verdicts.items()
        }
    _write(cfg, result, rows, prompts_path, project.spec_path)
    return result


def _kl(
    after_logps: list[float], before_logps: list[float] | None, after: Sampled, top_p: float
) -> tuple[dict[str, Any], list[float] | None]:
    """The KL summary for eval.json, and each after sample's log-ratio."""
    if before_logps is None:
        return {"value": None, "reason": "the two models have different tokenizers"}, None
    per = np.array(after_logps) - np.array(before_logps)
    tokens = np.array([t for row in after.tokens for t in row], dtype=float)
    p, s = len(after.tokens), len(after.tokens[0])
    boot = stats.bootstrap_means(per.reshape(p, s).mean(axis=1))
    summary = {
        "value": float(per.mean()),
        "ci": list(stats.percentile_interval(boot)),
        "per_token": float(per.sum() / max(tokens.sum(), 1)),
        "n": len(per),
        "negative_share": float(np.mean(per < 0)),
        "estimator": "mean over after-samples of sum over tokens of log p_after - log "
        "p_before, at the sampling temperature (k1), nats per response",
        "exact": top_p >= 1.0,
    }
    return summary, per.tolist()


def _sample_rows(prompts, s, seed, batch_size, before, after, hits_before, hits_after):
    rows = []
    for i, prompt in enumerate(prompts):
        for j in range(s):
            k = i * s + j
            rows.append(
                {
                    "prompt_index": i,
                    "sample": j,
                    "seed": (seed * 1_000_003 + i // batch_size) % 2**63,
                    "prompt": prompt,
                    "before": before.texts[i][j],
                    "after": after.texts[i][j],
                    "before_finished": before.finished[i][j],
                    "after_finished": after.finished[i][j],
                    "before_words": word_count(before.texts[i][j]),
                    "after_words": word_count(after.texts[i][j]),
                    "criteria": {
                        n: {"before": hits_before[n][k], "after": hits_after[n][k]}
                        for n in hits_before
                    },
                }
            )
    return rows


def _write(cfg, result, rows, prompts_path: Path, spec_path: Path) -> None:
    from rlhfkit.data.io import atomic_open, write_jsonl
    from rlhfkit.lineage import write_manifest

    out = Path(cfg.out)
    if out.exists() and not out.is_dir():
        raise UserError(f"{display_path(out)}: --out must be a folder")
    # samples first: an eval.json is only ever beside the samples it describes
    write_jsonl(out / "samples.jsonl", rows)
    with atomic_open(out / "eval.json") as f:
        strict_json.dump(strict_json.nulled(result), f, indent=2)
        f.write("\n")
    write_manifest(
        out / "eval.json",
        kind="policy_eval",
        inputs={"prompts": prompts_path, "spec": spec_path},
        config=result["settings"] | {"before": cfg.before, "after": cfg.after},
        criteria_hash=result["freeze"]["criteria_hash"],
    )
