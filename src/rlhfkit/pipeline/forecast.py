"""`rlhfkit plan`: before training, what the planned evaluation can show, and what the run costs.

1. Base rates: the starting model (the spec's base_model, or `--model`) answers the held-out
   prompts with the evaluation's own settings ([eval] limit, samples, max_new_tokens,
   temperature, top_p, seed, batch_size), and each success criterion is measured on its
   replies, a criterion with ``applies_to`` only on the prompts it applies to. The samples are
   kept in ``artifacts/plan/``, so a second `plan` samples nothing.
2. Power: for each criterion, the smallest move in its direction that the evaluation's own
   test ([eval] test, at [eval] alpha) detects with 80% power (`stats.detectable_change`), and
   where none can, how many prompts would detect the behavior halving or vanishing (or, for an
   increase, the gap to 100% halving or closing).
3. Cost: each stage's projected wall time and peak memory on this host (`costs.py`).

With SFT in the loop the evaluation compares the trained policy with the SFT model, which does
not exist before training; the base model's rates stand in for it (SFT usually moves them).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from rlhfkit import __version__, stats, strict_json
from rlhfkit.criteria import SuccessCriterion, prompt_columns
from rlhfkit.data import load
from rlhfkit.data.io import atomic_open
from rlhfkit.errors import UserError
from rlhfkit.evaluate.configs import PolicyEvalConfig
from rlhfkit.evaluate.criteria import detect
from rlhfkit.generate import PROMPT_FORMATS
from rlhfkit.lineage import config_hash, weights_identity
from rlhfkit.models import resolve
from rlhfkit.pipeline.costs import TRAINING, StageCost, peak_mb, reset_peak, stage_costs
from rlhfkit.pipeline.plan import Plan, Progress

TIMED = (*TRAINING, "candidates")
"""The stages `plan` measures (without --no-timing)."""
PLAN_FOLDER = "plan"
"""Under the project's artifacts/: the base model's samples and the measured throughput."""


@dataclass(frozen=True)
class CriterionPlan:
    """One success criterion before training: its base rate and what the evaluation can show."""

    name: str
    direction: str
    detector: str
    prompts: int
    """Evaluation prompts it is measured on (those its applies_to selects)."""
    samples: int
    hits: int | None
    """Replies of the starting model that show the behavior; None: not measured before
    training (a reward_model or judge detector)."""
    base_rate: float | None
    base_ci: tuple[float, float] | None
    status: str
    """detectable, undetectable, absent (nothing to move: 0% to decrease, 100% to increase)
    or not measured."""
    rate_after: float | None = None
    """The nearest after-rate detected with 80% power (detectable only)."""
    power_at_extreme: float | None = None
    """The chance the evaluation calls it significant if the rate went all the way (0 or 1)."""
    prompts_needed: dict[str, int | None] = field(default_factory=dict)
    """Prompts (at the same samples each) that detect a stated change with 80% power:
    'to 0' / 'halved' for a decrease, 'to 100%' / 'gap halved' for an increase."""
    advice: str = ""
    """What it means, in words."""


@dataclass(frozen=True)
class Forecast:
    model: str
    prompts_file: str
    prompts_available: int
    prompts: int
    samples: int
    max_new_tokens: int
    temperature: float
    test: str
    alpha: float
    power: float
    criteria: list[CriterionPlan]
    stages: list[StageCost]
    sampled_seconds: float
    """How long the starting model took to sample the evaluation's replies (when measured)."""
    cached: bool
    """The samples came from artifacts/plan/ (an earlier `plan`)."""
    stand_in: bool
    """True when the evaluation's before model is the SFT model: the base model stands in."""

    def to_json(self) -> dict[str, Any]:
        return asdict(self) | {"timed": self.timed}

    @property
    def timed(self) -> bool:
        """Every stage `plan` times (the trainers, candidate sampling) has its figure, now or
        from an earlier plan: only then do the stages' times add up to the run's."""
        return all(s.seconds is not None for s in self.stages if s.name in TIMED)

    @property
    def undetectable(self) -> list[CriterionPlan]:
        return [c for c in self.criteria if c.status in ("undetectable", "absent")]


def eval_settings(plan: Plan) -> PolicyEvalConfig:
    """The evaluation's composed config (every eval stage of a run shares its settings)."""
    stage = next((s for s in plan.stages if s.name.startswith("eval_")), None)
    if stage is None:
        raise UserError("this project's run has no evaluation stage ([run] policies is empty)")
    return stage.config


def forecast(plan: Plan, *, timing: bool = True, progress: Progress | None = None) -> Forecast:
    """The plan's forecast, sampling and measuring what artifacts/plan/ does not hold yet
    (`timing` False: no stage is measured)."""
    found = _forecast(plan, measure=True, timing=timing, progress=progress)
    if found is None:  # pragma: no cover - measuring always finds
        raise AssertionError("a measured forecast is never empty")
    return found


def cached_forecast(plan: Plan) -> Forecast | None:
    """Only what artifacts/plan/ holds, no model loaded (None without the base model's
    samples): what `run --dry-run` shows."""
    return _forecast(plan, measure=False, timing=False, progress=None)


def _forecast(plan: Plan, *, measure: bool, timing: bool, progress: Progress | None):
    cfg = eval_settings(plan)
    rows = load(cfg.prompts, expect=PROMPT_FORMATS).rows
    chosen = rows[: cfg.limit]
    cache = plan.project.artifacts(PLAN_FOLDER) / f"samples-{_samples_key(plan, cfg, chosen)}.json"
    cached = cache.exists()
    if not cached and not measure:
        return None
    if cached:
        found = strict_json.loads(cache.read_text())
    else:
        found = _sample(plan, cfg, [r["prompt"] for r in chosen], progress)
        with atomic_open(cache) as f:  # creates the folder
            strict_json.dump(found, f)
    columns = [prompt_columns(r) for r in chosen]
    criteria = [
        criterion_plan(c, cfg, [r["prompt"] for r in chosen], found["texts"], columns, len(rows))
        for c in plan.project.spec.success_criteria
    ]
    stages = stage_costs(plan, cfg, found, measure=timing, progress=progress)
    return Forecast(
        model=plan.base, prompts_file=str(cfg.prompts), prompts_available=len(rows),
        prompts=len(chosen), samples=cfg.samples, max_new_tokens=cfg.max_new_tokens or 0,
        temperature=cfg.temperature or 0.0, test=cfg.test, alpha=cfg.alpha, power=stats.POWER,
        criteria=criteria, stages=stages, sampled_seconds=found["seconds"], cached=cached,
        stand_in=bool(plan.project.spec.data.sft),
    )  # fmt: skip


def _samples_key(plan: Plan, cfg: PolicyEvalConfig, rows: list[dict[str, Any]]) -> str:
    """What makes two plans' samples the same: the model's weights, the prompts, the settings."""
    folder = Path(plan.base) if Path(plan.base).is_dir() else resolve(plan.base)
    settings = {k: getattr(cfg, k) for k in ("samples", "max_new_tokens", "temperature", "top_p")}
    return config_hash(
        {
            **weights_identity(folder),
            "prompts": [r["prompt"] for r in rows],
            **settings,
            "seed": cfg.seed,
            "batch_size": cfg.batch_size,
            "rlhfkit": __version__,
        }
    )


def _sample(plan: Plan, cfg: PolicyEvalConfig, prompts: list[Any], progress) -> dict[str, Any]:
    """The starting model's replies, sampled as `eval policy` samples its before model."""
    from rlhfkit.evaluate.sampling import SamplePlan, sample_model  # lazy: torch
    from rlhfkit.train.rollout import Sampling  # lazy: torch

    sampling = Sampling(cfg.samples, cfg.max_new_tokens or 0, cfg.temperature or 0.0, cfg.top_p)
    reset_peak()
    started = time.time()
    run = sample_model(
        plan.base, prompts, SamplePlan(sampling, cfg.seed or 0, cfg.batch_size), progress, "plan"
    )
    tokens = [t for row in run.samples.tokens for t in row]
    return {
        "model": plan.base,
        "texts": run.samples.texts,
        "seconds": round(time.time() - started, 2),
        "mean_tokens": sum(tokens) / max(len(tokens), 1),
        "peak_mb": peak_mb(),
    }


def criterion_plan(
    c: SuccessCriterion,
    cfg: PolicyEvalConfig,
    prompts: list[Any],
    texts: list[list[str]],
    columns: list[dict[str, Any]],
    available: int,
) -> CriterionPlan:
    """One criterion's base rate on the prompts it applies to, and its power: `texts[i]` are
    prompt i's replies, `columns[i]` its row less the prompt, `available` the rows of the
    held-out file (to say when it holds fewer prompts than a detectable evaluation needs)."""
    mine = [i for i, col in enumerate(columns) if c.applies(col)]
    s = cfg.samples
    common = {"name": c.name, "direction": c.direction, "detector": c.detector.kind}
    if not mine:  # `plan_run` refuses such a spec first (pipeline/preflight.py)
        raise UserError(f"success criterion '{c.name}': {c.subset_problem(columns)}")
    if not c.text_only:
        why = f"a '{c.detector.kind}' detector needs a trained model or a judge"
        return CriterionPlan(
            **common, prompts=len(mine), samples=s, hits=None, base_rate=None, base_ci=None,
            status="not measured", advice=f"not measured before training: {why}.",
        )  # fmt: skip
    flat_prompts = [prompts[i] for i in mine for _ in range(s)]
    flat_texts = [t for i in mine for t in texts[i]]
    hits = sum(detect([c], flat_prompts, flat_texts)[c.name])
    n = len(flat_texts)
    p0 = hits / n
    common |= {"prompts": len(mine), "samples": s, "hits": hits, "base_rate": p0}
    common["base_ci"] = stats.wilson_interval(hits, n)
    test = str(cfg.test)
    if (c.direction == "decrease" and hits == 0) or (c.direction == "increase" and hits == n):
        return CriterionPlan(**common, status="absent", advice=_absent(c, n))
    found = stats.detectable_change(p0, c.direction, len(mine), s, test, cfg.alpha)
    if found.rate_after is not None:
        advice = (
            f"a move to {found.rate_after:.0%} or beyond is detected with 80% power "
            f"({found.smallest_change:+.0%} from {p0:.0%})."
        )
        return CriterionPlan(
            **common, status="detectable", rate_after=found.rate_after,
            power_at_extreme=found.power_at_extreme, advice=advice,
        )  # fmt: skip
    needed = _needed(test, p0, c.direction, s, cfg.alpha)
    advice = _undetectable(c, p0, len(mine), s, found.power_at_extreme, needed, available)
    return CriterionPlan(
        **common, status="undetectable", power_at_extreme=found.power_at_extreme,
        prompts_needed=needed, advice=advice,
    )  # fmt: skip


def _needed(test: str, p0: float, direction: str, s: int, alpha: float) -> dict[str, int | None]:
    if direction == "decrease":
        changes = {"to 0": 0.0, "halved": p0 / 2}
    else:
        changes = {"to 100%": 1.0, "gap halved": p0 + (1 - p0) / 2}
    return {k: stats.prompts_needed(test, p0, p1, s, alpha) for k, p1 in changes.items()}


def _absent(c: SuccessCriterion, n: int) -> str:
    if c.direction == "decrease":
        return (
            f"never seen in the starting model's {n} replies: there is nothing to decrease, so "
            "the evaluation can only find it unchanged or 'regressed' (a significant rise). "
            "Pre-register a behavior to decrease that the starting model shows; this one may "
            "stay beside it, to catch a rise."
        )
    return (
        f"already in all {n} of the starting model's replies: it cannot increase. Pre-register "
        "a behavior the starting model lacks."
    )


def _undetectable(
    c: SuccessCriterion,
    p0: float,
    prompts: int,
    s: int,
    at_extreme: float,
    needed: dict[str, int | None],
    available: int,
) -> str:
    """Why a criterion cannot move detectably, and the evaluation size that would show it."""
    extreme = "vanished entirely" if c.direction == "decrease" else "reached 100%"
    sizes = []
    for change, n in needed.items():
        what = f"{'drop' if c.direction == 'decrease' else 'rise'} {change}"
        sizes.append(f"{what}: more than {stats.MAX_PROMPTS:,}" if n is None else f"{what}: {n:,}")
    short = [n for n in needed.values() if n is not None and n > available]
    held_out = f" (the held-out file has {available:,})" if short else ""
    return (
        f"CANNOT MOVE DETECTABLY at {prompts} prompts x {s} samples: from {p0:.1%}, even if it "
        f"{extreme} the evaluation would call that significant in only {at_extreme:.1%} of runs. "
        f"Prompts needed at {s} samples each for 80% power — {'; '.join(sizes)}{held_out}. "
        "Raise [eval] limit (and add held-out prompts), or pre-register a behavior the "
        "starting model shows more often."
    )
