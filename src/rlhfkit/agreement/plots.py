"""Plots a report can embed: a pairwise-agreement heatmap and anchor accuracy over time.
Each function writes a PNG and returns its path; matplotlib is imported only here."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from rlhfkit.agreement.gates import AnchorSeries
from rlhfkit.agreement.labels import Labels
from rlhfkit.agreement.stats import cohen_kappa_pairs


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    return plt


def _plain(text: str) -> str:
    """A label matplotlib prints as written: a pair of `$` would start mathtext, and a name
    such as "$\\frac{$" would fail to parse."""
    return text.replace("$", r"\$")


def kappa_heatmap(labels: Labels, out: Path) -> Path:
    """Cohen's kappa for every annotator pair; blank where two annotators share too few items."""
    plt = _pyplot()
    names = labels.annotators.tolist()
    grid = np.full((len(names), len(names)), np.nan)
    np.fill_diagonal(grid, 1.0)
    index = {n: i for i, n in enumerate(names)}
    for (a, b), k in cohen_kappa_pairs(labels).items():
        grid[index[a], index[b]] = grid[index[b], index[a]] = k
    size = max(3.0, 0.5 * len(names) + 1.5)
    fig, ax = plt.subplots(figsize=(size + 1, size))
    im = ax.imshow(grid, vmin=-1, vmax=1, cmap="RdYlGn")
    shown = [_plain(n) for n in names]
    ax.set_xticks(range(len(names)), shown, rotation=45, ha="right")
    ax.set_yticks(range(len(names)), shown)
    for i in range(len(names)):
        for j in range(len(names)):
            if not math.isnan(grid[i, j]):
                ax.text(j, i, f"{grid[i, j]:.2f}", ha="center", va="center", fontsize=8)
    fig.colorbar(im, ax=ax, label="Cohen's kappa")
    ax.set_title("Pairwise agreement between annotators")
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def anchor_accuracy_plot(
    series: list[AnchorSeries], out: Path, threshold: float | None = None
) -> Path:
    """Each annotator's anchor accuracy per window, with the alert threshold."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 3.5))
    for s in series:
        ax.plot(range(1, len(s.accuracy) + 1), s.accuracy, marker="o", label=_plain(s.annotator))
    if threshold is not None:
        ax.axhline(threshold, color="red", linestyle="--", linewidth=1, label="alert threshold")
    ax.set_ylim(-0.05, 1.05)
    ax.set_xlabel("window of anchor labels (time order)")
    ax.set_ylabel("anchor accuracy")
    ax.set_title("Anchor accuracy over time")
    ax.legend(fontsize=8, ncol=2)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out
