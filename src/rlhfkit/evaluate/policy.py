"""`rlhfkit eval policy`: what changed between a policy before and after training.

Both models answer the same held-out prompts, S samples each, with the same seeds (batch b
samples with seed ``batch_seed(seed, b)`` for either model). Sampling runs at the spec's
temperature with top-p 1 by default, so the KL estimate below is exact in expectation.

Measured: each success criterion's pass rate before and after on the prompts it applies to
(Wilson intervals, a paired test over prompts, a verdict; also per value of each --slice
column: `rlhfkit.evaluate.rates`), mean length and its change, the reward model's mean reward
and win rate, each judge's win rate of after over before, KL(after || before), and the
reward-hacking monitors on the after samples against the before samples.

KL: on each after sample y, ``log p_after(y) - log p_before(y)`` summed over its tokens (both
at the sampling temperature); the mean over samples estimates KL(after || before) in nats
per response (Schulman's k1 estimator; single samples can be negative, the mean cannot be in
expectation).

Output folder: ``eval.json`` and ``samples.jsonl`` (one row per prompt x sample).

Both files are described in `rlhfkit.evaluate.schema` (eval.json: `PolicyEvalResult`).
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from rlhfkit import __version__, stats, strict_json
from rlhfkit.criteria import JudgeDetector, prompt_columns
from rlhfkit.data import load
from rlhfkit.data.io import atomic_open, write_jsonl
from rlhfkit.errors import UserError, display_path
from rlhfkit.evaluate import rates, schema
from rlhfkit.evaluate.configs import PolicyEvalConfig
from rlhfkit.evaluate.criteria import DetectContext, criteria_status, detect
from rlhfkit.evaluate.judges import (
    OpenAIJudge,
    PairwiseJudge,
    RewardModelJudge,
    make_judge,
    parse_judge,
)
from rlhfkit.evaluate.monitors import compare_flags
from rlhfkit.evaluate.sampling import Sampled, SamplePlan, sample_model
from rlhfkit.generate import PROMPT_FORMATS
from rlhfkit.lineage import config_hash, weights_identity, write_manifest
from rlhfkit.models import MANIFEST
from rlhfkit.project import load_project
from rlhfkit.train.monitors import CriterionMove
from rlhfkit.train.rollout import Sampling, batch_seed
from rlhfkit.train.text_stats import word_count

SAMPLES_FILE = "samples.jsonl"
Progress = Callable[[str, int, int], None]


def _recorded_hash(ref: str) -> str | None:
    """The criteria hash a trained model's manifest carries, if any."""
    manifest = Path(ref) / MANIFEST
    if not manifest.is_file():
        return None
    return json.loads(manifest.read_text()).get("criteria_hash")


def _rewards(
    judge: RewardModelJudge, cfg: PolicyEvalConfig, prompts: list[Any], texts: list[str]
) -> list[float]:
    """The reward model's scores, kept in `cfg.sample_cache` beside the samples when the
    reward model is a folder: the before model's samples are scored once for PPO and DPO."""
    folder = Path(cfg.reward_model or "")
    if cfg.sample_cache is None or not folder.is_dir() or not any(folder.glob("*.safetensors")):
        return judge.scores(prompts, texts)
    identity = weights_identity(folder)
    key = config_hash(
        {"rm": identity, "prompts": prompts, "responses": texts, "rlhfkit": __version__}
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


def _grid(flat: list[Any], p: int, s: int) -> np.ndarray:
    return np.array(flat, dtype=float).reshape(p, s)


@dataclass
class _Setup:
    """Everything fixed before sampling: the project, the prompts, the settings with the
    spec's defaults filled in, and the judges."""

    project: Any
    prompts_path: Path
    prompts: list[Any]
    columns: list[dict[str, Any]]
    """Each prompt's row less "prompt": what ``applies_to`` and --slice select by."""
    temperature: float
    max_new_tokens: int
    seed: int
    judges: list[PairwiseJudge]
    rm_judge: RewardModelJudge | None
    question_judge: PairwiseJudge | None
    """The judge that answers `JudgeDetector` questions, if a criterion asks any."""
    freeze: schema.Freeze


def _prepare(cfg: PolicyEvalConfig) -> _Setup:
    """The project, its frozen criteria, the prompts and settings; every setting and judge
    checked before a model loads."""
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
    rows = data.rows[: cfg.limit]
    columns = [prompt_columns(r) for r in rows]
    rates.check_subsets(spec.success_criteria, columns, prompts_path)
    rates.check_slices(cfg.slice_by, columns, prompts_path)
    temperature = cfg.temperature if cfg.temperature is not None else spec.generate.temperature
    if temperature <= 0:
        raise UserError("--temperature must be positive: several samples per prompt must differ")
    rubric = [(c.name, c.description) for c in spec.rubric.criteria]
    judges: list[PairwiseJudge] = [make_judge(c, spec.task, rubric) for c in choices]
    question_judge = next((j for j in judges if isinstance(j, OpenAIJudge)), None)
    if question_judge is None and any(
        isinstance(c.detector, JudgeDetector) for c in spec.success_criteria
    ):
        question_judge = make_judge(parse_judge("openai"), spec.task, rubric)
    return _Setup(
        project=project,
        prompts_path=prompts_path,
        prompts=[r["prompt"] for r in rows],
        columns=columns,
        temperature=temperature,
        max_new_tokens=cfg.max_new_tokens or spec.generate.max_new_tokens,
        seed=cfg.seed if cfg.seed is not None else spec.generate.seed,
        judges=judges,
        rm_judge=RewardModelJudge(cfg.reward_model, name="reward_model")
        if cfg.reward_model
        else None,
        question_judge=question_judge,
        freeze=schema.Freeze.from_json(freeze.to_json()),
    )


@dataclass
class _Scored:
    """Both models' samples measured: flat lists run over prompts x samples."""

    prompts: list[Any]
    before: list[str]
    after: list[str]
    hits_before: dict[str, list]
    hits_after: dict[str, list]
    """{criterion: [hit, or None where it does not apply]} over prompts x samples."""
    criteria: list[schema.CriterionResult]
    slices: dict[str, dict[str, list[schema.CriterionResult]]] | None
    length: schema.LengthResult
    reward: schema.RewardResult | None
    rewards_before: list[float] | None
    rewards_after: list[float] | None
    kl: schema.KLResult
    kl_per_sample: list[float] | None


def evaluate_policy(
    cfg: PolicyEvalConfig, progress: Progress | None = None
) -> schema.PolicyEvalResult:
    """Run the evaluation, write eval.json and samples.jsonl into `cfg.out`, return eval.json
    (its fields: `rlhfkit.evaluate.schema.PolicyEvalResult`)."""
    started = time.time()
    # 1. the project, its frozen criteria, the prompts and settings; judges checked early
    setup = _prepare(cfg)
    # 2. sample: the after model first (keeping its rollouts and log-probs for KL), then the
    # before model, which scores the after model's rollouts; one model in memory at a time
    t0 = time.time()
    after_run = _sample(cfg, setup, cfg.after, progress, "after", score_own=True)
    t_after, t0 = time.time() - t0, time.time()
    before_run = _sample(
        cfg, setup, cfg.before, progress, "before", score=after_run
    )  # fmt: skip
    t_before, t0 = time.time() - t0, time.time()
    # 3. criteria, length, reward on both sides, and the KL
    scored = _score(cfg, setup, before_run, after_run)
    t_score, t0 = time.time() - t0, time.time()
    # 4. judges: after is `a`, before is `b`
    verdicts, win_rates = _judge(cfg, setup, scored)
    t_judges = time.time() - t0
    # 5. monitors: the after samples against the before samples
    moves = {
        c.name: CriterionMove(c.before.rate, c.after.rate, c.direction, c.p_value)
        for c in scored.criteria
    }
    flat_columns = [col for col in setup.columns for _ in range(cfg.samples)]
    flags = compare_flags(
        scored.prompts, scored.after, scored.before, setup.project.spec.monitors,
        reward_rise_sd=scored.reward.rise_sd if scored.reward else None,
        criteria_moves=moves, kl=scored.kl.value, alpha=cfg.alpha,
        columns=flat_columns, criteria=setup.project.spec.success_criteria,
    )  # fmt: skip
    seconds = schema.Seconds(  # in field order: after, before, score, judges, total
        *(round(t, 2) for t in (t_after, t_before, t_score, t_judges, time.time() - started))
    )
    result = _assemble(cfg, setup, scored, win_rates, flags, seconds)
    rows = _sample_rows(cfg, setup, before_run.samples, after_run.samples, scored, verdicts)
    _write(cfg, result, rows, setup)
    return result


def _sample(cfg: PolicyEvalConfig, setup: _Setup, ref: str, progress, label: str, **kw):
    sampling = Sampling(cfg.samples, setup.max_new_tokens, setup.temperature, cfg.top_p)
    plan = SamplePlan(sampling, setup.seed, cfg.batch_size, cfg.sample_cache)
    return sample_model(ref, setup.prompts, plan, progress, label, **kw)


def _score(cfg: PolicyEvalConfig, setup: _Setup, before_run, after_run) -> _Scored:
    """Success criteria, length and reward on both models' samples, and KL(after || before)."""
    spec = setup.project.spec
    p, s = len(setup.prompts), cfg.samples
    before, after = before_run.samples, after_run.samples
    flat_prompts = [q for q in setup.prompts for _ in range(s)]
    flat_before = [t for row in before.texts for t in row]
    flat_after = [t for row in after.texts for t in row]
    # each criterion on the prompts it applies to; the others' hits are None
    ctx = DetectContext(root=setup.project.root, question_judge=setup.question_judge)
    flat_columns = [col for col in setup.columns for _ in range(s)]
    hits_before = detect(spec.success_criteria, flat_prompts, flat_before, ctx, flat_columns)
    hits_after = detect(spec.success_criteria, flat_prompts, flat_after, ctx, flat_columns)
    how = rates.RateSettings(s, cfg.test, cfg.confidence, cfg.alpha, setup.seed)
    hits = rates.Hits(spec.success_criteria, hits_before, hits_after, setup.columns, how)
    criteria = rates.measure(hits)
    slices = rates.slices(hits, cfg.slice_by) if cfg.slice_by else None
    reward, rewards_b, rewards_a = None, None, None
    if setup.rm_judge is not None:
        rewards_b = _rewards(setup.rm_judge, cfg, flat_prompts, flat_before)
        rewards_a = setup.rm_judge.scores(flat_prompts, flat_after)
        reward = _reward(cfg, rewards_b, rewards_a, p, s)
    kl, kl_per_sample = _kl(after_run.own_logps, before_run.scored_logps, after, cfg.top_p)
    return _Scored(
        flat_prompts, flat_before, flat_after, hits_before, hits_after, criteria, slices,
        _length(cfg, setup, before, after), reward, rewards_b, rewards_a, kl, kl_per_sample,
    )  # fmt: skip


def _length(cfg: PolicyEvalConfig, setup: _Setup, before: Sampled, after: Sampled):
    """Mean length in words before and after, mean tokens and the share cut short."""
    p, s = len(setup.prompts), cfg.samples
    words_b = _grid([word_count(t) for row in before.texts for t in row], p, s)
    words_a = _grid([word_count(t) for row in after.texts for t in row], p, s)
    comp = stats.compare_means(words_b, words_a, cfg.confidence, setup.seed)
    return schema.LengthResult(
        unit="words",
        **rates.comparison(comp, schema.Mean),
        ratio=comp.after / comp.before if comp.before else None,
        tokens=schema.BeforeAfter(float(np.mean(before.tokens)), float(np.mean(after.tokens))),
        truncated=schema.BeforeAfter(
            1 - float(np.mean(before.finished)), 1 - float(np.mean(after.finished))
        ),
    )


def _reward(
    cfg: PolicyEvalConfig, rewards_b: list[float], rewards_a: list[float], p: int, s: int
) -> schema.RewardResult:
    comp = stats.compare_means(_grid(rewards_b, p, s), _grid(rewards_a, p, s), cfg.confidence)
    sd = float(np.std(rewards_b, ddof=1)) if len(rewards_b) > 1 else 0.0
    rise_sd = comp.diff / sd if sd > 0 else None
    return schema.RewardResult(
        model=cfg.reward_model, **rates.comparison(comp, schema.Mean), rise_sd=rise_sd
    )


def _judge(
    cfg: PolicyEvalConfig, setup: _Setup, scored: _Scored
) -> tuple[dict[str, list], list[schema.WinRateResult]]:
    """Every judge's verdict on each (after, before) pair, and each judge's win rate."""
    p, s = len(setup.prompts), cfg.samples
    pairs = list(zip(scored.prompts, scored.after, scored.before, strict=True))
    verdicts: dict[str, list] = {}
    if setup.rm_judge is not None:
        verdicts[setup.rm_judge.name] = setup.rm_judge.from_scores(
            scored.rewards_after, scored.rewards_before
        )
    for judge in setup.judges:
        verdicts[judge.name] = judge.judge_many(pairs)
    win_rates = []
    score = {"a": 1.0, "b": 0.0, "tie": 0.5, "both_bad": 0.5}
    for name, js in verdicts.items():
        w = stats.win_rate(_grid([score[j.preference] for j in js], p, s), cfg.confidence)
        both_bad = sum(j.preference == "both_bad" for j in js)
        win_rates.append(
            schema.WinRateResult(
                judge=name, win_rate=w.win_rate, ci=list(w.ci), p_value=w.p_value, wins=w.wins,
                losses=w.losses, ties=w.ties - both_bad, test=w.test, both_bad=both_bad,
                n=len(js),
            )
        )  # fmt: skip
    return verdicts, win_rates


def _assemble(
    cfg: PolicyEvalConfig,
    setup: _Setup,
    scored: _Scored,
    win_rates: list[schema.WinRateResult],
    flags: list,
    seconds: schema.Seconds,
) -> schema.PolicyEvalResult:
    spec = setup.project.spec
    return schema.PolicyEvalResult(
        created=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        seconds=seconds,
        project=schema.ProjectInfo(spec.name, str(setup.project.spec_path), spec.rubric.version),
        models=schema.Models(cfg.before, cfg.after),
        settings=schema.Settings(
            prompts=str(setup.prompts_path), n_prompts=len(setup.prompts),
            samples_per_prompt=cfg.samples, max_new_tokens=setup.max_new_tokens,
            temperature=setup.temperature, top_p=cfg.top_p, seed=setup.seed,
            batch_size=cfg.batch_size, test=stats.TEST_NAMES[cfg.test], alpha=cfg.alpha,
            confidence=cfg.confidence, judges=list(cfg.judges), reward_model=cfg.reward_model,
            slice_by=list(cfg.slice_by) or None,
        ),
        freeze=setup.freeze,
        # criteria, length, reward and KL as measured; the judges' win rates; the monitors
        criteria=scored.criteria, slices=scored.slices, length=scored.length,
        reward=scored.reward, kl=scored.kl,
        win_rates=win_rates,
        monitors=[schema.MonitorResult.from_json(f.to_json()) for f in flags],
        flagged=[f.name for f in flags if f.flagged],
        samples_file=SAMPLES_FILE,
    )  # fmt: skip


def _kl(
    after_logps: list[float], before_logps: list[float] | None, after: Sampled, top_p: float
) -> tuple[schema.KLResult, list[float] | None]:
    """The KL summary for eval.json, and each after sample's log-ratio."""
    if before_logps is None:
        return schema.KLResult(value=None, reason="the two models have different tokenizers"), None
    per = np.array(after_logps) - np.array(before_logps)
    tokens = np.array([t for row in after.tokens for t in row], dtype=float)
    p, s = len(after.tokens), len(after.tokens[0])
    boot = stats.bootstrap_means(per.reshape(p, s).mean(axis=1))
    summary = schema.KLResult(
        value=float(per.mean()),
        ci=list(stats.percentile_interval(boot)),
        per_token=float(per.sum() / max(tokens.sum(), 1)),
        n=len(per),
        negative_share=float(np.mean(per < 0)),
        estimator="mean over after-samples of sum over tokens of log p_after - log "
        "p_before, at the sampling temperature (k1), nats per response",
        exact=top_p >= 1.0,
    )
    return summary, per.tolist()


WINNER = {"a": "after", "b": "before", "tie": "tie", "both_bad": "both_bad"}


def _sample_rows(
    cfg: PolicyEvalConfig,
    setup: _Setup,
    before: Sampled,
    after: Sampled,
    scored: _Scored,
    verdicts: dict[str, list],
) -> list[dict[str, Any]]:
    """samples.jsonl: one row per prompt x sample (see the module docstring)."""
    rows, s = [], cfg.samples
    for i, prompt in enumerate(setup.prompts):
        for j in range(s):
            k = i * s + j
            row = {
                "prompt_index": i,
                "sample": j,
                "seed": batch_seed(setup.seed, i // cfg.batch_size),
                "prompt": prompt,
                "before": before.texts[i][j],
                "after": after.texts[i][j],
                "before_finished": before.finished[i][j],
                "after_finished": after.finished[i][j],
                "before_words": word_count(before.texts[i][j]),
                "after_words": word_count(after.texts[i][j]),
                "columns": setup.columns[i],
                "criteria": {
                    n: {"before": scored.hits_before[n][k], "after": scored.hits_after[n][k]}
                    for n in scored.hits_before
                },
            }
            if scored.rewards_after is not None:
                row["reward"] = {
                    "before": scored.rewards_before[k],
                    "after": scored.rewards_after[k],
                }
            row["kl"] = scored.kl_per_sample[k] if scored.kl_per_sample else None
            row["judges"] = {
                n: {"winner": WINNER[js[k].preference], "rationale": js[k].rationale}
                for n, js in verdicts.items()
            }
            rows.append(row)
    return rows


def _write(cfg: PolicyEvalConfig, result: schema.PolicyEvalResult, rows, setup: _Setup) -> None:
    out = Path(cfg.out)
    if out.exists() and not out.is_dir():
        raise UserError(f"{display_path(out)}: --out must be a folder")
    # samples first: an eval.json is only ever beside the samples it describes
    write_jsonl(out / SAMPLES_FILE, rows)
    schema.write_json(result, out / "eval.json")
    write_manifest(
        out / "eval.json",
        kind="policy_eval",
        inputs={"prompts": setup.prompts_path, "spec": setup.project.spec_path},
        config=result.settings.to_json() | {"before": cfg.before, "after": cfg.after},
        criteria_hash=result.freeze.criteria_hash,
    )
