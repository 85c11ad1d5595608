"""A run's outcome on the console, from its summary.json (`rlhfkit run`, `rlhfkit demo`)."""

from __future__ import annotations

from typing import Any

from rich.markup import escape
from rich.table import Table

from rlhfkit.cli.common import console


def show_annotation(s: dict[str, Any]) -> None:
    """The calibration gate, the panel's agreement and the annotators it flagged."""
    gate = s.get("calibration_gate") or {}
    if gate:
        verdict = {True: "passed", None: "not evaluated yet"}.get(
            gate["passed"], "FAILED: the main queue stayed closed"
        )
        value = "n/a" if gate["value"] is None else f"{gate['value']:.2f}"
        console.print(
            f"calibration gate: {gate['statistic']} {value} vs threshold "
            f"{gate['threshold']:.2f}: {verdict}" + (" (overridden)" if gate["overridden"] else "")
        )
    agreement, panel = s.get("agreement") or {}, s.get("panel") or {}
    if agreement.get("percent_agreement") is not None:
        alpha = agreement.get("krippendorff_alpha")
        console.print(
            f"panel agreement: {agreement['percent_agreement']:.2f} percent agreement, "
            f"Krippendorff's alpha {'n/a' if alpha is None else f'{alpha:.2f}'}; exported "
            f"{panel.get('exported', 0)} majority pairs ({panel.get('ties', 0)} ties, "
            f"{panel.get('both_bad', 0)} both-bad and {panel.get('no_majority', 0)} without a "
            "majority left out)"
        )
    for f in s.get("flagged_annotators", []):
        console.print(f"flagged annotator: {f['annotator']}: {'; '.join(f['reasons'])}")


def show_reward_model(s: dict[str, Any]) -> None:
    if s.get("rm_heldout_accuracy") is None:
        return
    panel = s.get("panel") or {}
    by = s.get("rm_heldout_by_pairing") or {}
    parts = [
        f"{by[k]['accuracy']:.2f} on {by[k]['pairs']} {what}"
        for k, what in (("same model", "pairs of two SFT replies"),
                        ("across models", "SFT vs starting model"))
        if k in by and by[k]["accuracy"] is not None
    ]  # fmt: skip
    console.print(
        f"reward model: held-out accuracy {s['rm_heldout_accuracy']:.2f} on "
        f"{s['rm_heldout_pairs']} pairs of held-out prompts (against the annotators' majority"
        + (f"; {', '.join(parts)}" if parts else "")
        + f"); trained on {panel.get('train_pairs', '?')} labelled pairs + "
        f"{panel.get('anchor_pairs', 0)} anchor pairs"
    )


def show_policies(s: dict[str, Any]) -> None:
    """The success criteria of PPO and DPO against the SFT model, then their KL and length."""
    table = Table(title="success criteria on held-out prompts, against the starting (SFT) model")
    for col in ("policy", "criterion", "should", "before", "after", "p", "verdict"):
        table.add_column(col)
    for policy in ("ppo", "dpo"):
        ev = s.get(policy)
        if not ev:
            continue
        for name, c in ev["criteria"].items():
            table.add_row(
                policy,
                name,
                c["direction"],
                f"{c['before']:.0%}",
                f"{c['after']:.0%}",
                f"{c['p_value']:.3g}",
                c["verdict"],
            )
    console.print(table)
    for policy in ("ppo", "dpo"):
        ev = s.get(policy)
        if ev:
            flags = ", ".join(f["name"] for f in ev["hacking_flags"]) or "none"
            kl = "n/a" if ev["kl"] is None else f"{ev['kl']:.2f} nats"
            console.print(
                f"{policy}: KL to the SFT model {kl}; length {ev['length']['before']:.0f} -> "
                f"{ev['length']['after']:.0f} words; hacking flags: {flags}"
            )


def show_doctor_summary(s: dict[str, Any], run_dir: str) -> None:
    """The stage doctor's counts, and each check that did not pass, from summary.json."""
    doctor = s.get("doctor")
    if not doctor:
        return
    c = doctor["counts"]
    console.print(
        f"stage doctor: {c['fail']} fail, {c['warn']} warn, {c['ok']} ok, "
        f"{c['not yet measurable']} not yet measurable (`rlhfkit doctor {run_dir}` for each)",
        soft_wrap=True,
    )
    for name, check in doctor["checks"].items():
        if check["verdict"] in ("fail", "warn"):
            console.print(
                escape(f"  {check['verdict']}  {name}: {check['evidence']}. {check['action']}"),
                soft_wrap=True,
            )

