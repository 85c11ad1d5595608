"""Agreement statistics over long-format labels, with bootstrap intervals over items.

Every statistic here is a ratio of sums over items, so one bootstrap replicate — items drawn
with replacement — is a weighted sum of per-item contributions: `W @ X` with W [replicates,
items]. That makes 1,000 replicates of Krippendorff's alpha on 200,000 items a few matrix
products instead of 1,000 recomputations.

Which statistic to read for pairwise preferences (labels A, B, tie, both_bad, nominal):
Krippendorff's alpha. It handles missing labels and any number of annotators per item, and
corrects for chance agreement — with four categories and a rubric that mostly prefers one
side, raw percent agreement looks good even for annotators who guess. Percent agreement is
what the calibration gate uses (the article's 65-75% rule is stated in it); Cohen's kappa
shows which pairs of annotators disagree; Fleiss' kappa applies only when every item has the
same number of labels.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Literal

import numpy as np

from rlhfkit.agreement.labels import Labels

Level = Literal["nominal", "ordinal", "interval", "ratio"]
LEVELS = ("nominal", "ordinal", "interval", "ratio")


# --- percent agreement ------------------------------------------------------------------


def _item_agreement(counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per item with >= 2 labels: the share of annotator pairs that agree; and the mask."""
    m = counts.sum(axis=1)
    keep = m >= 2
    c, mk = counts[keep].astype(float), m[keep].astype(float)
    return (c * (c - 1)).sum(axis=1) / (mk * (mk - 1)), keep


def percent_agreement(labels: Labels) -> float:
    """Mean over items with at least two labels of the share of agreeing annotator pairs."""
    per_item, _ = _item_agreement(labels.counts())
    return float(per_item.mean()) if len(per_item) else math.nan


# --- Krippendorff's alpha -----------------------------------------------------------------


def _unit_coincidences(counts: np.ndarray) -> np.ndarray:
    """Per pairable unit u, its contribution to the coincidence matrix, flattened [U, C*C]:
    (n_uc n_uk - [c = k] n_uc) / (m_u - 1) (Krippendorff 2011, "Computing Krippendorff's
    alpha-reliability", section C)."""
    m = counts.sum(axis=1)
    c = counts[m >= 2].astype(float)
    w = 1.0 / (m[m >= 2] - 1.0)
    k = c.shape[1]
    outer = c[:, :, None] * c[:, None, :]
    outer[:, np.arange(k), np.arange(k)] -= c
    return (outer * w[:, None, None]).reshape(len(c), k * k)


def _coincidences(counts: np.ndarray) -> np.ndarray:
    """The coincidence matrix o_ck [C, C], without materialising per-unit outer products."""
    m = counts.sum(axis=1)
    keep = m >= 2
    c = counts[keep].astype(float)
    w = 1.0 / (m[keep] - 1.0)
    cw = c * w[:, None]
    return cw.T @ c - np.diag(cw.sum(axis=0))


def distances(values: np.ndarray, marginals: np.ndarray, level: Level) -> np.ndarray:
    """Squared difference function delta^2_ck for the label domain [C, C]."""
    k = len(values)
    if level == "nominal":
        return 1.0 - np.eye(k)
    v = values.astype(float)
    if level == "interval":
        return (v[:, None] - v[None, :]) ** 2
    if level == "ratio":
        total = v[:, None] + v[None, :]
        with np.errstate(invalid="ignore", divide="ignore"):
            d = ((v[:, None] - v[None, :]) / total) ** 2
        return np.where(total == 0, 0.0, d)
    if level == "ordinal":
        # (sum of the marginals from c to k, minus half of the two ends)^2, on ranks
        cum = np.concatenate([[0.0], np.cumsum(marginals)])
        lo, hi = (
            np.minimum.outer(np.arange(k), np.arange(k)),
            np.maximum.outer(np.arange(k), np.arange(k)),
        )
        between = cum[hi + 1] - cum[lo]
        return (between - (marginals[:, None] + marginals[None, :]) / 2.0) ** 2
    raise ValueError(f"level must be one of {', '.join(LEVELS)}")


def alpha_from_coincidences(o: np.ndarray, values: np.ndarray, level: Level) -> float:
    """alpha = 1 - D_o / D_e from a coincidence matrix. NaN when undefined: fewer than two
    pairable values, or no variation at all (every pairable label the same)."""
    n_c = o.sum(axis=0)
    n = n_c.sum()
    if n <= 1:
        return math.nan
    d = distances(values, n_c, level)
    expected = (np.outer(n_c, n_c) * d).sum()
    if expected == 0:
        return math.nan
    return float(1.0 - (n - 1.0) * (o * d).sum() / expected)


def krippendorff_alpha(labels: Labels, level: Level = "nominal") -> float:
    """Krippendorff's alpha over all items; items with one label carry no information and are
    left out, as the definition requires. NaN when undefined (see alpha_from_coincidences)."""
    if level != "nominal" and not labels.numeric:
        raise ValueError(f"{level} alpha needs numeric labels (these are strings)")
    return alpha_from_coincidences(_coincidences(labels.counts()), labels.values, level)


# --- Cohen's and Fleiss' kappa --------------------------------------------------------------


def _kappa_from_confusion(conf: np.ndarray) -> float:
    n = conf.sum()
    if n == 0:
        return math.nan
    p_o = np.trace(conf) / n
    p_e = (conf.sum(axis=1) @ conf.sum(axis=0)) / n**2
    return float((p_o - p_e) / (1.0 - p_e)) if p_e < 1.0 else math.nan


def cohen_kappa_pairs(labels: Labels, min_shared: int = 2) -> dict[tuple[str, str], float]:
    """Cohen's kappa for every pair of annotators sharing at least `min_shared` items."""
    matrix = labels.matrix()
    k = len(labels.values)
    out = {}
    names = labels.annotators.tolist()
    for a in range(len(names)):
        for b in range(a + 1, len(names)):
            both = (matrix[:, a] >= 0) & (matrix[:, b] >= 0)
            if both.sum() < min_shared:
                continue
            flat = np.bincount(matrix[both, a] * k + matrix[both, b], minlength=k * k)
            out[(names[a], names[b])] = _kappa_from_confusion(flat.reshape(k, k))
    return out


def fleiss_kappa(labels: Labels) -> tuple[float, str | None]:
    """Fleiss' kappa, or (nan, the reason it does not apply)."""
    counts = labels.counts()
    m = counts.sum(axis=1)
    m = m[m > 0]
    if len(m) == 0:
        return math.nan, "no labels"
    if m.min() != m.max():
        return math.nan, (
            f"items have between {m.min()} and {m.max()} labels; Fleiss' kappa needs the same "
            "number on every item (read Krippendorff's alpha instead)"
        )
    if m[0] < 2:
        return math.nan, "every item has a single label"
    table = counts[counts.sum(axis=1) > 0].astype(float)
    used = np.nonzero(table.sum(axis=0))[0]
    if len(used) == 1:
        return math.nan, (
            f"every label is {labels.values[used[0]]}: no variation to agree on "
            "(chance agreement is 1, so kappa is 0/0)"
        )
    return _fleiss(table), None


def _fleiss(table: np.ndarray) -> float:
    n_items, m = table.shape[0], table[0].sum()
    p_j = table.sum(axis=0) / (n_items * m)
    p_i = ((table**2).sum(axis=1) - m) / (m * (m - 1))
    p_e = (p_j**2).sum()
    return float((p_i.mean() - p_e) / (1 - p_e)) if p_e < 1 else math.nan


# --- bootstrap ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Interval:
    low: float
    high: float
    level: float = 0.95


def _replicate_weights(n_items: int, replicates: int, rng: np.random.Generator):
    """Item multiplicities of bootstrap resamples, in chunks [chunk, n_items]."""
    chunk = max(1, min(replicates, 20_000_000 // max(n_items, 1)))
    done = 0
    while done < replicates:
        size = min(chunk, replicates - done)
        idx = rng.integers(0, n_items, size=(size, n_items))
        idx += (np.arange(size) * n_items)[:, None]
        w = np.bincount(idx.ravel(), minlength=size * n_items).reshape(size, n_items)
        w = w.astype(float)
        done += size
        yield w


def _interval(samples: np.ndarray, level: float) -> Interval:
    samples = samples[~np.isnan(samples)]
    if len(samples) == 0:
        return Interval(math.nan, math.nan, level)
    lo, hi = np.quantile(samples, [(1 - level) / 2, (1 + level) / 2])
    return Interval(float(lo), float(hi), level)


def bootstrap_intervals(
    labels: Labels,
    level: Level = "nominal",
    replicates: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
) -> dict[str, Interval]:
    """Percentile intervals, resampling items, for percent agreement, alpha and mean kappa."""
    counts = labels.counts()
    labelled = counts.sum(axis=1) >= 2
    counts = counts[labelled]
    n_items = len(counts)
    if n_items < 2 or replicates < 1:
        nan = Interval(math.nan, math.nan, confidence)
        return {"percent_agreement": nan, "krippendorff_alpha": nan, "cohen_kappa_mean": nan}
    per_item, _ = _item_agreement(counts)
    unit_o = _unit_coincidences(counts)  # [n_items, C*C]
    k = counts.shape[1]
    matrix = labels.matrix()[labelled]
    pairs = []
    for a in range(matrix.shape[1]):
        for b in range(a + 1, matrix.shape[1]):
            both = (matrix[:, a] >= 0) & (matrix[:, b] >= 0)
            if both.sum() >= 2:
                onehot = np.zeros((n_items, k * k))
                onehot[np.nonzero(both)[0], matrix[both, a] * k + matrix[both, b]] = 1.0
                pairs.append(onehot)
    rng = np.random.default_rng(seed)
    pa, al, ck = [], [], []
    for w in _replicate_weights(n_items, replicates, rng):
        pa.append((w @ per_item) / w.sum(axis=1))
        o = (w @ unit_o).reshape(-1, k, k)
        al.append([alpha_from_coincidences(oi, labels.values, level) for oi in o])
        if pairs:
            kappas = [[_kappa_from_confusion(c.reshape(k, k)) for c in w @ p] for p in pairs]
            with np.errstate(invalid="ignore"), warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN replicate
                ck.append(np.nanmean(np.array(kappas, dtype=float), axis=0))
    out = {
        "percent_agreement": _interval(np.concatenate(pa), confidence),
        "krippendorff_alpha": _interval(np.concatenate([np.array(x) for x in al]), confidence),
    }
    out["cohen_kappa_mean"] = (
        _interval(np.concatenate(ck), confidence) if ck else Interval(math.nan, math.nan)
    )
    return out
