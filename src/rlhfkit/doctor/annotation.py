"""Checks on the labels: ties (pairs people could not decide) and the calibration gate, with
who drives a failing one.

The gate and who drives a failing one are the store's (annotation/status.json, as `rlhfkit
annotate status` shows them): one number, computed in one place (`annotate.gate_status`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from rlhfkit.doctor.verdict import Check, missing, pct, share

TIE_WARN, TIE_FAIL = 0.25, 0.5
"""Shares of tie (and both-bad) labels that warn and fail."""

STAGE = "annotate"
TIES_TITLE = "people can decide the pairs (few ties)"
GATE_TITLE = "the calibration gate passed, and who drives it"


def _rows(path: Path | None) -> list[dict[str, Any]] | None:
    if path is None or not path.is_file():
        return None
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def check_ties(labels_path: Path | None) -> Check:
    rows = _rows(labels_path)
    name = "ties"
    if rows is None:
        return missing(name, STAGE, TIES_TITLE, "no labels exported yet (annotation/labels.jsonl)")
    rows = [r for r in rows if not r.get("anchor")]  # anchors test people; pairs are the data
    if not rows:
        return missing(name, STAGE, TIES_TITLE, "labels.jsonl holds no label of a pair")
    ties = sum(r["label"] == "tie" for r in rows)
    both_bad = sum(r["label"] == "both_bad" for r in rows)
    undecided = (ties + both_bad) / len(rows)
    numbers = {"labels": len(rows), "tie": ties, "both_bad": both_bad, "share": undecided}
    evidence = (
        f"{share(ties, len(rows))} labels are ties and {share(both_bad, len(rows))} both bad: "
        f"{pct(undecided)} of the labels say nothing about which reply is better"
    )
    action = (
        "make the rubric decide close calls (borderline examples in [rubric], tie_policy = "
        '"force_choice") and sample pairs that differ more ([generate] temperature, '
        "start_samples)"
    )
    verdict = "fail" if undecided > TIE_FAIL else "warn" if undecided > TIE_WARN else "ok"
    return Check(
        name, STAGE, TIES_TITLE, verdict, evidence, action if verdict != "ok" else "", numbers
    )


def check_gate(status_path: Path | None) -> Check:
    """The store's gate as `annotate status` shows it (annotation/status.json): its one number,
    and when it failed, who drives it (the store's leave-one-out, `annotate.gate_status`)."""
    name = "gate"
    status = json.loads(status_path.read_text()) if status_path and status_path.is_file() else {}
    gate = status.get("gate") or {}
    if gate.get("value") is None:
        return missing(
            name,
            STAGE,
            GATE_TITLE,
            "no calibration round has a gate value yet (annotation/status.json)",
            "`rlhfkit annotate status` shows the gate while people label",
        )
    value, threshold = gate["value"], gate["threshold"]
    evidence = f"round {gate['round']}: percent agreement {value:.2f} against {threshold:.2f}"
    numbers: dict[str, Any] = {"round": gate["round"], "value": value, "threshold": threshold}
    if gate["passed"]:
        return Check(name, STAGE, GATE_TITLE, "ok", evidence + ": passed", "", numbers)
    evidence += ": failed"
    action = "`rlhfkit annotate status` lists the disputed items: clarify the rubric on them"
    drivers = (gate.get("disagreement") or {}).get("annotators") or []
    numbers["annotators"] = drivers
    told = (gate.get("disagreement") or {}).get("action")
    if drivers:
        top = max(drivers, key=lambda d: -1.0 if d["gate_without"] is None else d["gate_without"])
        if top["gate_without"] is not None:
            evidence += (
                f"; {top['annotator']} agrees with each other annotator "
                f"{pct(top['mean_pairwise'])} of the time on average, and without them the "
                f"gate would be {top['gate_without']:.2f}"
            )
    if told:
        action = told
    if "overridden" in str(gate.get("verdict", "")) or gate.get("overridden"):
        return Check(name, STAGE, GATE_TITLE, "warn", evidence + " (overridden)", action, numbers)
    return Check(name, STAGE, GATE_TITLE, "fail", evidence, action, numbers)
