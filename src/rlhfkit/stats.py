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

import math
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
    """Twice the smaller share of resampled differences on either side of 0, at most 1. A
    resample whose differences cancel is 0 on both sides, though its float mean may be off by
    an ulp (sixths of a hit do not add up exactly), hence the tolerance."""
    tol = 1e-9 * max(1.0, float(np.max(np.abs(boot))))
    return float(min(1.0, 2 * min(np.mean(boot <= tol), np.mean(boot >= -tol))))


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


# --- power: what a planned evaluation can detect ---------------------------------------------
#
# Before training, a criterion's rate on the starting model's samples is the base rate p0. For
# an after-rate p1, the power is the chance that the evaluation's own test calls the change
# significant at `alpha`, in the criterion's direction. The model behind every number below:
# each of the P x S samples shows the behavior independently, at p0 before and p1 after (no
# prompt easier than another). Where prompts differ, pairing helps a change spread over many
# prompts and hurts one concentrated on a few.

POWER = 0.8
POWER_SIMULATIONS = 2000
EXACT_NULL_UP_TO = 60
"""Non-zero prompts up to which the sign-flip test's null distribution is convolved exactly;
beyond, its normal limit (mean 0, variance sum of d_i^2) is within a hair of it."""
EXACT_BOOTSTRAP_UP_TO = 200
"""Non-zero prompts up to which the bootstrap's resampled sum is convolved exactly; beyond,
its normal limit (the skew of a sum over so many prompts moves p by a few thousandths)."""
MAX_PROMPTS = 100_000
"""`prompts_needed` gives up beyond this many prompts."""


def z_test_power(effect_size: float, nobs: float, alpha: float = 0.05, ratio: float = 1.0) -> float:
    """Power of the two-sided z-test of a standardized effect, as statsmodels' NormalIndPower:
    `ratio` 0 is the one-sample (paired) test over `nobs`; otherwise two samples of `nobs` and
    `nobs * ratio` (Cohen 1988, ch. 6; the power is Phi(|es| sqrt(n) - z) + Phi(-|es| sqrt(n)
    - z), n the effective sample size)."""
    n = nobs if ratio == 0 else 1 / (1 / nobs + 1 / (nobs * ratio))
    z, shift = NormalDist().inv_cdf(1 - alpha / 2), abs(effect_size) * np.sqrt(n)
    return float(NormalDist().cdf(shift - z) + NormalDist().cdf(-shift - z))


def proportion_effect_size(p1: float, p0: float) -> float:
    """Cohen's h, 2 asin(sqrt p1) - 2 asin(sqrt p0): the effect size of two proportions."""
    return float(2 * np.arcsin(np.sqrt(p1)) - 2 * np.arcsin(np.sqrt(p0)))


def _binom_pmf(n: int, p: float) -> np.ndarray:
    """P(X = k) for k = 0..n, X ~ Binomial(n, p)."""
    k = np.arange(n + 1)
    if p <= 0 or p >= 1:
        return (k == (0 if p <= 0 else n)).astype(float)
    log_choose = np.array(
        [math.lgamma(n + 1) - math.lgamma(i + 1) - math.lgamma(n - i + 1) for i in k]
    )
    return np.exp(log_choose + k * np.log(p) + (n - k) * np.log1p(-p))


def _wanted(diff: np.ndarray, direction: str) -> np.ndarray:
    return diff > 0 if direction == "increase" else diff < 0


def two_proportion_power(p0: float, p1: float, n: int, alpha: float, direction: str) -> float:
    """Power of the pooled two-proportion z-test (`two_proportion_p`) with `n` samples a side,
    exactly: every pair of counts (before, after), weighted by its binomial probability."""
    pb, pa = _binom_pmf(n, p0), _binom_pmf(n, p1)
    keep_b, keep_a = np.flatnonzero(pb > 1e-15), np.flatnonzero(pa > 1e-15)
    xb, xa = np.meshgrid(keep_b, keep_a, indexing="ij")
    pooled = (xb + xa) / (2 * n)
    var = pooled * (1 - pooled) * (2 / n)
    with np.errstate(divide="ignore", invalid="ignore"):
        z = np.where(var > 0, (xa - xb) / n / np.sqrt(np.where(var > 0, var, 1)), 0.0)
    p = 2 * (1 - np.vectorize(NormalDist().cdf)(np.abs(z)))
    reject = (var > 0) & (p < alpha) & _wanted(xa - xb, direction)
    return float(np.sum(np.outer(pb[keep_b], pa[keep_a]) * reject))


def _diff_pmf(p0: float, p1: float, s: int) -> np.ndarray:
    """The distribution of one prompt's after-hits minus before-hits, values -s..s."""
    return np.convolve(_binom_pmf(s, p1), _binom_pmf(s, p0)[::-1])


def _simulated_evaluations(
    p0: float, p1: float, prompts: int, samples: int, simulations: int, seed: int
) -> np.ndarray:
    """[simulations, 2 S + 1]: per simulated evaluation, how many of its prompts differ by
    -S..S hits (after - before)."""
    pmf = _diff_pmf(p0, p1, samples)
    return np.random.default_rng(seed).multinomial(prompts, pmf / pmf.sum(), size=simulations)


def sign_flip_null_p(nonzero: np.ndarray, total: int) -> float:
    """`sign_flip_p` of integer per-prompt differences, from their counts: `nonzero[k-1]`
    prompts differ by +-k, their sum is `total`. Exact (the null is a convolution of scaled
    binomials, 2 Bin(n_k, 1/2) - n_k times k) up to EXACT_NULL_UP_TO prompts, else normal."""
    n = [int(c) for c in nonzero]
    if sum(n) == 0:
        return 1.0
    if sum(n) > EXACT_NULL_UP_TO:
        sd = math.sqrt(sum((k + 1) ** 2 * c for k, c in enumerate(n)))
        return min(
            1.0, 2 * (1 - NormalDist().cdf((abs(total) - 1) / sd))
        )  # continuity: lattice step 2
    pmf = np.ones(1)
    for k, c in enumerate(n, start=1):
        term = np.zeros(2 * k * c + 1)  # values -k c .. k c
        term[:: 2 * k] = _binom_pmf(c, 0.5)
        pmf = np.convolve(pmf, term)
    values = np.arange(len(pmf)) - (len(pmf) - 1) // 2
    return float(min(1.0, pmf[np.abs(values) >= abs(total)].sum()))


def sign_flip_power(
    p0: float, p1: float, prompts: int, samples: int, alpha: float, direction: str,
    simulations: int = POWER_SIMULATIONS, seed: int = 0,
) -> float:  # fmt: skip
    """Power of the paired sign-flip test (`sign_flip_p`) over `prompts` x `samples`, by
    simulation with a fixed seed: each simulated evaluation draws every prompt's (after -
    before) hit count, and is tested with its exact p-value (`sign_flip_null_p`)."""
    counts = _simulated_evaluations(p0, p1, prompts, samples, simulations, seed)
    totals = counts @ np.arange(-samples, samples + 1)
    magnitudes = counts[:, samples + 1 :] + counts[:, samples - 1 :: -1][:, :samples]
    found: dict[tuple, float] = {}
    hits = 0
    for row, total in zip(magnitudes, totals, strict=True):
        if not _wanted(np.array(total), direction):
            continue
        key = (tuple(row), abs(int(total)))
        if key not in found:
            found[key] = sign_flip_null_p(row, int(total))
        hits += found[key] < alpha
    return hits / simulations


def _bootstrap_tails_exact(counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """P(T <= 0) and P(T >= 0) for each row of `counts` [U, 2 S + 1] (see `bootstrap_null_p`):
    the law of T is the P-th convolution power of the row's distribution, by FFT. A resample
    holds about as many non-zero prompts as its data (m), and far beyond m + 8 sqrt(m) + 30
    lies under 1e-12 of the mass, so T is computed modulo a window of that many steps each way
    rather than over all of -S P .. S P."""
    samples = (counts.shape[1] - 1) // 2
    prompts = int(counts[0].sum())
    nonzero = int((prompts - counts[:, samples]).max())
    reach = samples * min(prompts, math.ceil(nonzero + 8 * math.sqrt(nonzero) + 30))
    length = 2 * reach + 1
    law = np.zeros((len(counts), length))
    law[:, np.arange(-samples, samples + 1) % length] = counts / prompts
    with np.errstate(divide="ignore"):  # |phi| <= 1: exp(P log phi) is phi^P, twice as fast
        power = np.exp(prompts * np.log(np.fft.rfft(law, axis=1)))
    pmf = np.fft.irfft(power, n=length, axis=1)
    below = pmf[:, 0] + pmf[:, length - reach :].sum(axis=1)  # T = 0 and T = -reach .. -1
    return below, pmf[:, : reach + 1].sum(axis=1)


def bootstrap_null_p(counts: np.ndarray, exact_up_to: int = EXACT_BOOTSTRAP_UP_TO) -> np.ndarray:
    """`bootstrap_p` of integer per-prompt differences with infinitely many resamples, for
    each row of `counts` [U, 2 S + 1] (row u: how many prompts differ by -S..S hits). A
    resample's sum T draws P prompts with replacement, and p = 2 min(P(T <= 0), P(T >= 0)):
    exact up to `exact_up_to` non-zero prompts, beyond that T's normal limit, corrected for
    continuity."""
    counts = np.atleast_2d(np.asarray(counts))
    samples, prompts = (counts.shape[1] - 1) // 2, int(counts[0].sum())
    values = np.arange(-samples, samples + 1)
    mean = (counts @ values).astype(float)  # of T: P draws of mean (counts @ values) / P
    var = counts @ values**2 - mean**2 / prompts
    sd = np.sqrt(np.maximum(var, 1e-300))  # var 0: every prompt differs alike, T = mean
    normal = np.vectorize(NormalDist().cdf)
    below, above = normal((0.5 - mean) / sd), normal((mean + 0.5) / sd)
    nonzero = prompts - counts[:, samples]
    exact = np.flatnonzero(nonzero <= exact_up_to)
    exact = exact[np.argsort(nonzero[exact], kind="stable")]  # alike windows share a chunk
    for start in range(0, len(exact), 256):  # in chunks: each row is a window of floats
        rows = exact[start : start + 256]
        below[rows], above[rows] = _bootstrap_tails_exact(counts[rows])
    return np.minimum(1.0, 2 * np.clip(np.minimum(below, above), 0.0, None))


def bootstrap_power(
    p0: float, p1: float, prompts: int, samples: int, alpha: float, direction: str,
    simulations: int = POWER_SIMULATIONS, seed: int = 0,
) -> float:  # fmt: skip
    """Power of the paired bootstrap test (`bootstrap_p` of `compare_rates`) over `prompts` x
    `samples`, by simulation with a fixed seed, as `sign_flip_power`: each simulated
    evaluation is tested with its infinitely-resampled p-value (`bootstrap_null_p`); the real
    test's 20,000 resamples are within a few thousandths of it."""
    counts = _simulated_evaluations(p0, p1, prompts, samples, simulations, seed)
    counts = counts[_wanted(counts @ np.arange(-samples, samples + 1), direction)]
    if len(counts) == 0:
        return 0.0
    distinct, which = np.unique(counts, axis=0, return_inverse=True)
    return float(np.sum(bootstrap_null_p(distinct)[which.ravel()] < alpha)) / simulations


def change_power(
    test: str, p0: float, p1: float, prompts: int, samples: int, alpha: float, seed: int = 0
) -> float:
    """The chance that `test` (as `compare_rates` runs it) calls a move from p0 to p1
    significant in its own direction, over `prompts` x `samples`."""
    direction = "increase" if p1 > p0 else "decrease"
    if p1 == p0:
        return 0.0
    if test == "two_proportion":
        return two_proportion_power(p0, p1, prompts * samples, alpha, direction)
    if test == "bootstrap":
        return bootstrap_power(p0, p1, prompts, samples, alpha, direction, seed=seed)
    return sign_flip_power(p0, p1, prompts, samples, alpha, direction, seed=seed)


@dataclass(frozen=True)
class Detectable:
    """What a planned evaluation can show of one criterion (see `detectable_change`)."""

    base_rate: float
    direction: str
    rate_after: float | None
    """The nearest after-rate, in the criterion's direction, detected with `power`; None when
    even the extreme (0 for a decrease, 1 for an increase) is not."""
    power_at_extreme: float
    """The chance of a significant result if the rate went all the way to 0 or 1."""
    power: float = POWER

    @property
    def smallest_change(self) -> float | None:
        return None if self.rate_after is None else self.rate_after - self.base_rate


def detectable_change(
    base_rate: float, direction: str, prompts: int, samples: int, test: str = "permutation",
    alpha: float = 0.05, power: float = POWER, seed: int = 0,
) -> Detectable:  # fmt: skip
    """The smallest move of a rate from `base_rate` in `direction` that the evaluation's test
    detects with `power` at `alpha` (the minimal detectable change), by bisection on the
    after-rate to within half a percentage point."""
    extreme = 0.0 if direction == "decrease" else 1.0
    at_extreme = change_power(test, base_rate, extreme, prompts, samples, alpha, seed)
    if at_extreme < power:
        return Detectable(base_rate, direction, None, at_extreme, power)
    near, far = base_rate, extreme  # power(near) < target <= power(far)
    while abs(far - near) > 0.005:
        mid = (near + far) / 2
        if change_power(test, base_rate, mid, prompts, samples, alpha, seed) >= power:
            far = mid
        else:
            near = mid
    return Detectable(base_rate, direction, round(far, 4), at_extreme, power)


def prompts_needed(
    test: str, p0: float, p1: float, samples: int, alpha: float = 0.05, power: float = POWER,
    seed: int = 0,
) -> int | None:  # fmt: skip
    """The fewest prompts (at `samples` each) whose evaluation detects p0 -> p1 with `power`;
    None beyond MAX_PROMPTS. Starts from the normal formula, n = ((z_a/2 + z_b) sd / d)^2
    with sd^2 = (p0 q0 + p1 q1) / S, then searches with the test's own power."""
    if p1 == p0:
        return None
    z = NormalDist().inv_cdf(1 - alpha / 2) + NormalDist().inv_cdf(power)
    sd2 = (p0 * (1 - p0) + p1 * (1 - p1)) / samples
    guess = max(2, math.ceil(z * z * sd2 / (p1 - p0) ** 2))

    def enough(n: int) -> bool:
        return change_power(test, p0, p1, n, samples, alpha, seed) >= power

    lo, hi = max(1, guess // 2), guess
    while lo > 1 and enough(lo):
        lo, hi = lo // 2, lo
    while not enough(hi):
        lo, hi = hi, hi * 2
        if hi > MAX_PROMPTS:
            return None
    while hi - lo > max(1, hi // 100):  # to 1%: the model behind it is no finer
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if enough(mid) else (mid, hi)
    return hi
