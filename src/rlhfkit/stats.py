"""The statistics of a before/after evaluation (numpy and the standard library only).

The data are paired by prompt: both models answer the same P held-out prompts, S samples
each, with the same seeds. Samples of one prompt are not independent (an easy prompt is
easy for both models), so the default test works on per-prompt differences:

- ``permutation`` (default): a paired sign-flip randomization test over prompts. Under "no
  change" the before and after answers to a prompt are exchangeable, so each per-prompt
  difference d_i is as likely to be -d_i; the p-value is the share of sign flips whose
  |sum| reaches the observed one (exact enumeration up to 16 non-zero prompts, else 20,000
  random flips, counted as (1 + hits) / (1 + flips) so it is never 0). Valid at any sample
  size; it does not assume normality or independent samples.
- ``bootstrap``: a paired bootstrap over prompts; the p-value is twice the smaller tail of
  the resampled mean difference beyond 0. Approximate, a little liberal with few prompts.
- ``two_proportion``: the pooled two-proportion z-test (as statsmodels' proportions_ztest),
  treating all P x S samples as independent. Reported for comparison with textbooks; it
  ignores the pairing and the clustering by prompt.

Intervals: a pass rate gets a Wilson score interval (over all samples); a difference, a win
rate or a mean gets the percentile interval of the paired bootstrap over prompts.
"""

from __future__ import annotations

from dataclasses import dataclass
from statistics import NormalDist
from typing import Any, Literal

import numpy as np

from rlhfkit.choices import TESTS, Test

TEST_NAMES = {
    "permutation": "paired sign-flip permutation test over prompts",
    "bootstrap": "paired bootstrap over prompts",
    "two_proportion": "pooled two-proportion z-test (samples treated as independent)",
}
RESAMPLES = 20_000
EXACT_UP_TO = 16  # non-zero prompts; 2**16 sign patterns are enumerated exactly


def wilson_interval(successes: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval for a proportion (Wilson 1927); (0, 1) when n is 0."""
    if n == 0:
        return 0.0, 1.0
    z = NormalDist().inv_cdf(0.5 + confidence / 2)
    p = successes / n
    denom = 1 + z * z / n
    center = (p + z * z / (2 * n)) / denom
    half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, float(center - half)), min(1.0, float(center + half))


def two_proportion_p(x1: int, n1: int, x2: int, n2: int) -> float:
    """Two-sided p-value of the pooled two-proportion z-test."""
    pooled = (x1 + x2) / (n1 + n2)
    var = pooled * (1 - pooled) * (1 / n1 + 1 / n2)
    if var == 0:
        return 1.0  # both all-pass or both all-fail: no evidence of a difference
    z = (x2 / n2 - x1 / n1) / np.sqrt(var)
    return float(2 * (1 - NormalDist().cdf(abs(z))))


def sign_flip_p(diffs: np.ndarray, resamples: int = RESAMPLES, seed: int = 0) -> float:
    """Two-sided p-value that per-prompt differences `diffs` [P] are symmetric around 0."""
    d = np.asarray(diffs, dtype=float)
    d = d[np.abs(d) > 1e-12]  # a zero difference is the same under either sign
    if len(d) == 0:
        return 1.0
    observed = abs(d.sum())
    tol = 1e-9 * max(1.0, observed)
    if len(d) <= EXACT_UP_TO:
        # every sign pattern once: bit j of row r says whether d_j is flipped
        bits = (np.arange(2 ** len(d))[:, None] >> np.arange(len(d))) & 1
        return float(np.mean(np.abs((1.0 - 2.0 * bits) @ d) >= observed - tol))
    rng = np.random.default_rng(seed)
    hits = 0
    for start in range(0, resamples, 5000):  # in chunks: a [resamples, P] matrix can be large
        n = min(5000, resamples - start)
        signs = rng.choice((-1.0, 1.0), size=(n, len(d)))
        hits += int(np.sum(np.abs(signs @ d) >= observed - tol))
    return (1 + hits) / (1 + resamples)


def bootstrap_means(values: np.ndarray, resamples: int = RESAMPLES, seed: int = 0) -> np.ndarray:
    """Means of `values` [P] over prompts resampled with replacement: [resamples]."""
    v = np.asarray(values, dtype=float)
    rng = np.random.default_rng(seed)
    out = np.empty(resamples)
    for start in range(0, resamples, 5000):
        n = min(5000, resamples - start)
        idx = rng.integers(0, len(v), size=(n, len(v)))
        out[start : start + n] = v[idx].mean(axis=1)
    return out


def percentile_interval(boot: np.ndarray, confidence: float = 0.95) -> tuple[float, float]:
    lo, hi = np.quantile(boot, [(1 - confidence) / 2, (1 + confidence) / 2])
    return float(lo), float(hi)


def bootstrap_p(boot: np.ndarray) -> float:
    """Twice the smaller share of resampled differences on either side of 0, at most 1."""
    return float(min(1.0, 2 * min(np.mean(boot <= 0), np.mean(boot >= 0))))


@dataclass(frozen=True)
class Interval:
    value: float
    ci: tuple[float, float]

    def to_json(self) -> dict[str, Any]:
        return {"rate": self.value, "ci": list(self.ci)}


@dataclass(frozen=True)
class Comparison:
    """A before/after comparison of a pass rate (or of a mean, with `kind` 'mean')."""

    before: float
    after: float
    before_ci: tuple[float, float]
    after_ci: tuple[float, float]
    diff: float
    """after - before."""
    diff_ci: tuple[float, float]
    p_value: float
    test: str
    n_prompts: int
    samples_per_prompt: int


def _per_prompt(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=float)
    if x.ndim != 2 or x.shape[0] == 0 or x.shape[1] == 0:
        raise ValueError(f"expected [prompts, samples] values, got shape {x.shape}")
    return x


def compare_rates(
    before: np.ndarray,
    after: np.ndarray,
    test: Test = "permutation",
    confidence: float = 0.95,
    seed: int = 0,
    resamples: int = RESAMPLES,
) -> Comparison:
    """Pass rates of `before` and `after` [P, S] booleans (row i: the samples of prompt i)."""
    b, a = _per_prompt(before), _per_prompt(after)
    if b.shape != a.shape:
        raise ValueError(f"before {b.shape} and after {a.shape} must pair up")
    n = b.size
    xb, xa = int(b.sum()), int(a.sum())
    diffs = a.mean(axis=1) - b.mean(axis=1)
    boot = bootstrap_means(diffs, resamples, seed)
    if test == "permutation":
        p = sign_flip_p(diffs, resamples, seed)
    elif test == "bootstrap":
        p = bootstrap_p(boot)
    elif test == "two_proportion":
        p = two_proportion_p(xb, n, xa, n)
    else:
        raise ValueError(f"unknown test {test!r}; tests: {', '.join(TESTS)}")
    return Comparison(
        before=xb / n,
        after=xa / n,
        before_ci=wilson_interval(xb, n, confidence),
        after_ci=wilson_interval(xa, n, confidence),
        diff=(xa - xb) / n,
        diff_ci=percentile_interval(boot, confidence),
        p_value=p,
        test=TEST_NAMES[test],
        n_prompts=b.shape[0],
        samples_per_prompt=b.shape[1],
    )


def compare_means(
    before: np.ndarray,
    after: np.ndarray,
    confidence: float = 0.95,
    seed: int = 0,
    resamples: int = RESAMPLES,
) -> Comparison:
    """Means of a per-sample quantity (length, reward) [P, S] before and after; the p-value
    is the paired sign-flip test, intervals the bootstrap over prompts."""
    b, a = _per_prompt(before), _per_prompt(after)
    if b.shape != a.shape:
        raise ValueError(f"before {b.shape} and after {a.shape} must pair up")
    pb, pa = b.mean(axis=1), a.mean(axis=1)
    return Comparison(
        before=float(pb.mean()),
        after=float(pa.mean()),
        before_ci=percentile_interval(bootstrap_means(pb, resamples, seed), confidence),
        after_ci=percentile_interval(bootstrap_means(pa, resamples, seed + 1), confidence),
        diff=float((pa - pb).mean()),
        diff_ci=percentile_interval(bootstrap_means(pa - pb, resamples, seed), confidence),
        p_value=sign_flip_p(pa - pb, resamples, seed),
        test=TEST_NAMES["permutation"],
        n_prompts=b.shape[0],
        samples_per_prompt=b.shape[1],
    )


Verdict = Literal["improved", "regressed", "no significant change"]


def verdict(diff: float, p_value: float, direction: str, alpha: float = 0.05) -> Verdict:
    """improved / regressed when the change is significant at `alpha`, by the criterion's
    direction ('increase' or 'decrease')."""
    if p_value >= alpha or diff == 0:
        return "no significant change"
    wanted = diff > 0 if direction == "increase" else diff < 0
    return "improved" if wanted else "regressed"


@dataclass(frozen=True)
class WinRate:
    """How often `a` beat `b`, ties counting half, with the bootstrap interval over prompts
    and the sign-flip p-value against 0.5 (no preference)."""

    win_rate: float
    ci: tuple[float, float]
    p_value: float
    wins: int
    losses: int
    ties: int
    test: str = TEST_NAMES["permutation"]

    def to_json(self) -> dict[str, Any]:
        return {
            "win_rate": self.win_rate,
            "ci": list(self.ci),
            "p_value": self.p_value,
            "wins": self.wins,
            "losses": self.losses,
            "ties": self.ties,
            "test": self.test,
        }


def win_rate(
    outcomes: np.ndarray, confidence: float = 0.95, seed: int = 0, resamples: int = RESAMPLES
) -> WinRate:
    """`outcomes` [P, S]: 1 where a won, 0 where b won, 0.5 for a tie."""
    o = _per_prompt(outcomes)
    per_prompt = o.mean(axis=1)
    boot = bootstrap_means(per_prompt, resamples, seed)
    return WinRate(
        win_rate=float(per_prompt.mean()),
        ci=percentile_interval(boot, confidence),
        # swapping a and b maps a prompt's score s to 1 - s: s - 0.5 flips its sign
        p_value=sign_flip_p(per_prompt - 0.5, resamples, seed),
        wins=int(np.sum(o == 1)),
        losses=int(np.sum(o == 0)),
        ties=int(np.sum(o == 0.5)),
    )


CONSTANT_ULPS = 16
"""Values within this many units in the last place of their largest magnitude are one value
(rounding noise), wherever a statistic divides by their spread."""


def is_constant(x: np.ndarray) -> bool:
    """Whether `x` is constant up to float rounding: its range is at most CONSTANT_ULPS units
    in the last place of max |x|, in x's own float precision. `np.std` of seven 0.1s is 1e-17,
    not 0, and dividing by it turns rounding noise into a correlation."""
    a = np.asarray(x)
    kind = a.dtype.type if a.dtype.kind == "f" else np.float64
    v = a.astype(float)
    if len(v) == 0:
        return True
    return float(np.ptp(v)) <= CONSTANT_ULPS * float(np.spacing(kind(np.max(np.abs(v)))))


def _correlatable(x: np.ndarray, y: np.ndarray) -> bool:
    """Two or more finite pairs, neither side constant: otherwise a correlation is undefined."""
    x, y = np.asarray(x), np.asarray(y)
    if len(x) < 2 or len(x) != len(y):
        return False
    if not (np.isfinite(x.astype(float)).all() and np.isfinite(y.astype(float)).all()):
        return False
    return not is_constant(x) and not is_constant(y)


def pearson(x: np.ndarray, y: np.ndarray) -> float | None:
    """Pearson correlation; None when it is undefined: either side constant (see
    `is_constant`), a non-finite value, or fewer than two pairs."""
    if not _correlatable(x, y):
        return None
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    # scale, then centre: corrcoef of values near 1e300 overflows in its sums of products
    x, y = x / np.abs(x).max(), y / np.abs(y).max()
    x, y = x - x.mean(), y - y.mean()
    return float(np.clip(np.corrcoef(x, y)[0, 1], -1.0, 1.0))


def ranks(x: np.ndarray) -> np.ndarray:
    """Average ranks (ties share the mean of their positions), as Spearman needs."""
    x = np.asarray(x, dtype=float)
    order = np.argsort(x, kind="mergesort")
    r = np.empty(len(x))
    r[order] = np.arange(1, len(x) + 1)
    for value in np.unique(x):
        tied = x == value
        if tied.sum() > 1:
            r[tied] = r[tied].mean()
    return r


def spearman(x: np.ndarray, y: np.ndarray) -> float | None:
    """Spearman rank correlation; None where `pearson` of the values would be (ranks of
    rounding noise are distinct, so constancy is judged on the values, not the ranks)."""
    if not _correlatable(x, y):
        return None
    return pearson(ranks(x), ranks(y))
