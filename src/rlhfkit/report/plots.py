"""The report's figures, drawn with matplotlib's Agg backend and returned as PNG data URIs,
so that the HTML embeds them and opens offline. matplotlib is imported only in here."""

from __future__ import annotations

import base64
import io
import math
from collections.abc import Sequence
from typing import Any

from rlhfkit.evaluate.schema import CalibrationBin

# What to plot per training stage, in order; a metric a run did not log is skipped.
CURVES = {
    "ppo": ("reward", "kl", "kl_coef", "response_length"),
    "dpo": ("loss", "rewards/margin", "rewards/accuracy"),
    "rm": ("loss", "accuracy", "margin"),
    "sft": ("loss", "lr"),
}
TITLES = {
    "reward": "reward (reward model / rule)",
    "kl": "KL to the starting policy",
    "kl_coef": "KL coefficient",
    "response_length": "response length (tokens)",
    "entropy": "entropy",
    "reward_penalised": "reward minus KL penalty",
    "loss": "loss",
    "rewards/margin": "implicit reward margin",
    "rewards/accuracy": "chosen ranked above rejected",
    "rewards/chosen": "implicit reward of chosen",
    "accuracy": "training accuracy",
    "margin": "reward margin",
    "lr": "learning rate",
}
COLORS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#17becf")


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only, never a display
    import matplotlib.pyplot as plt

    return plt


def _data_uri(fig: Any) -> str:
    plt = _pyplot()
    buf = io.BytesIO()
    # every figure is laid out with tight_layout already: bbox_inches="tight" would draw the
    # whole figure a second time for nothing
    fig.savefig(buf, format="png", dpi=96)
    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _finite(xs: Sequence[Any]) -> bool:
    return any(isinstance(x, int | float) and math.isfinite(x) for x in xs)


def _smooth(values: list[float], weight: float = 0.8) -> list[float]:
    """Exponential moving average, so a trend shows through noisy per-step values."""
    out, last = [], None
    for v in values:
        if v is None or not math.isfinite(v):
            out.append(math.nan)
            continue
        last = v if last is None else weight * last + (1 - weight) * v
        out.append(last)
    return out


def training_curves(kind: str, records: list[dict[str, Any]]) -> str | None:
    """One panel per metric the stage logged (reward, KL, KL coefficient, length for PPO;
    loss and margins for DPO/RM/SFT), plus success-criterion pass rates when PPO logged them.
    None when nothing plottable was logged."""
    steps = [r.get("step", i + 1) for i, r in enumerate(records)]
    names = [n for n in CURVES.get(kind, ("loss",)) if _finite([r.get(n) for r in records])]
    criteria = sorted({k for r in records for k in r if k.startswith("criteria/")})
    panels = names + (["criteria"] if criteria else [])
    if not panels:
        return None
    plt = _pyplot()
    from matplotlib.ticker import MaxNLocator

    cols = min(3, len(panels))
    rows = math.ceil(len(panels) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 2.8 * rows), squeeze=False)
    for ax, name in zip(axes.flat, panels, strict=False):
        if name == "criteria":
            for i, c in enumerate(criteria):
                ys = [_num(r.get(c)) for r in records]
                ax.plot(steps, _smooth(ys), color=COLORS[i % len(COLORS)], label=c[9:])
            ax.set_ylim(-0.05, 1.05)
            ax.set_title("success criteria pass rate (smoothed)", fontsize=10)
            ax.legend(fontsize=7)
        else:
            ys = [_num(r.get(name)) for r in records]
            ax.plot(steps, ys, color="#9bbcd9", linewidth=1, label="per step")
            if len(ys) >= 8:
                ax.plot(steps, _smooth(ys), color=COLORS[0], linewidth=1.8, label="smoothed")
            ax.set_title(TITLES.get(name, name), fontsize=10)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("step", fontsize=8)
        ax.tick_params(labelsize=8)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(panels) :]:
        ax.axis("off")
    fig.tight_layout()
    return _data_uri(fig)


def _num(x: Any) -> float:
    return float(x) if isinstance(x, int | float) and x is not None else math.nan


def reliability_diagram(bins: list[CalibrationBin], ece: float | None) -> str | None:
    """Confidence of the Bradley–Terry probability, max(p, 1 - p), against how often the
    reward model's pick was the preferred reply, per bin; the diagonal is perfect calibration.
    `bins`: `rlhfkit eval rm`'s calibration bins."""
    pts = [(b.confidence, b.accuracy, b.count) for b in bins]
    pts = [p for p in pts if p[0] is not None and p[1] is not None]
    if not pts:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(4.2, 3.8))
    ax.plot([0.5, 1], [0.5, 1], "--", color="#888888", label="perfectly calibrated")
    total = sum(n for *_, n in pts) or 1
    ax.scatter(
        [p[0] for p in pts],
        [p[1] for p in pts],
        s=[30 + 400 * n / total for *_, n in pts],
        color=COLORS[0],
        zorder=3,
        label="bins (size: pairs)",
    )
    ax.plot([p[0] for p in pts], [p[1] for p in pts], color=COLORS[0], alpha=0.6)
    ax.set_xlim(0.48, 1.01)
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlabel("confidence, max(p, 1 − p)")
    ax.set_ylabel("share where its pick was preferred")
    title = "Reward model calibration"
    if ece is not None:
        title += f" (ECE {ece:.3f})"
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=7, loc="lower right")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return _data_uri(fig)


def before_after(rows: list[dict[str, Any]]) -> str | None:
    """Pass rate of each success criterion before and after, with 95% intervals."""
    rows = [r for r in rows if r.get("before") is not None and r.get("after") is not None]
    if not rows:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(max(4.5, 1.6 * len(rows) + 1.5), 3.4))
    width = 0.36
    for j, (key, color, label) in enumerate(
        (("before", "#9e9e9e", "before"), ("after", COLORS[0], "after"))
    ):
        xs = [i + (j - 0.5) * width for i in range(len(rows))]
        ys = [r[key] for r in rows]
        lo = [
            max(0.0, y - (r.get(f"{key}_ci") or (y, y))[0]) for y, r in zip(ys, rows, strict=True)
        ]
        hi = [
            max(0.0, (r.get(f"{key}_ci") or (y, y))[1] - y) for y, r in zip(ys, rows, strict=True)
        ]
        ax.bar(xs, ys, width, color=color, label=label, yerr=[lo, hi], capsize=3)
    ax.set_xticks(
        range(len(rows)),
        [f"{r['name']}\n({'↑' if r.get('direction') == 'increase' else '↓'} wanted)" for r in rows],
        fontsize=8,
    )
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("pass rate")
    ax.set_title("Success criteria before and after (95% intervals)", fontsize=10)
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    return _data_uri(fig)


def anchor_accuracy(series: dict[str, list[float]], threshold: float | None) -> str | None:
    """Each annotator's anchor accuracy per window of anchor labels, with the alert line."""
    series = {k: v for k, v in series.items() if v}
    if not series:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 3.2))
    for i, (name, acc) in enumerate(sorted(series.items())):
        ax.plot(range(1, len(acc) + 1), acc, marker="o", color=COLORS[i % len(COLORS)], label=name)
    if threshold is not None:
        ax.axhline(threshold, color="#d62728", linestyle="--", linewidth=1, label="alert below")
    ax.set_ylim(-0.05, 1.05)
    windows = max(len(v) for v in series.values())
    ax.set_xlim(0.5, windows + 0.5)
    if windows <= 20:
        ax.set_xticks(range(1, windows + 1))
    ax.set_xlabel("window of anchor labels")
    ax.set_ylabel("anchor accuracy")
    ax.set_title("Anchor accuracy over time (drift)", fontsize=10)
    ax.legend(fontsize=7, loc="lower left")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return _data_uri(fig)
