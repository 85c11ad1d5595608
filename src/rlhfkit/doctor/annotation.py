"""Checks on the labels: ties (pairs people could not decide) and the calibration gate, with
who drives a failing one.

Who drives the gate is measured two ways on the calibration labels (labels.jsonl rows of
phase "calibration"), both from `rlhfkit.agreement`'s `calibration_gate`: each annotator's
agreement with the majority of the others, and the gate's value without them (leave one
out). The annotator whose absence raises the gate most drives it.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from rlhfkit.agreement import Labels, calibration_gate
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


def check_gate(status_path: Path | None, labels_path: Path | None) -> Check:
    name = "gate"
    status = json.loads(status_path.read_text()) if status_path and status_path.is_file() else {}
    gate = status.get("gate") or {}
    rounds = gate.get("rounds") or []
    if not rounds or rounds[-1].get("percent_agreement") is None:
        return missing(
            name,
            STAGE,
            GATE_TITLE,
            "no calibration round has a gate value yet (annotation/status.json)",
            "`rlhfkit annotate status` shows the gate while people label",
        )
    last, threshold = rounds[-1], gate["threshold"]
    value = last["percent_agreement"]
    evidence = f"round {last['round']}: percent agreement {value:.2f} against {threshold:.2f}"
    numbers: dict[str, Any] = {"round": last["round"], "value": value, "threshold": threshold}
    if last["passed"]:
        return Check(name, STAGE, GATE_TITLE, "ok", evidence + ": passed", "", numbers)
    drivers = gate_drivers(_rows(labels_path) or [], threshold)
    numbers["annotators"] = drivers
    evidence += ": failed"
    action = "`rlhfkit annotate status` lists the disputed items: clarify the rubric on them"
    if drivers:
        top = drivers[0]
        evidence += (
            f"; {top['annotator']} agrees with the others on {pct(top['agreement'])} of the "
            f"calibration labels, and without them the gate would be {top['without']:.2f}"
        )
        if top["without"] >= threshold:
            action = (
                f"{top['annotator']} drives the disagreement: go over the disputed items with "
                f"them and recalibrate, or leave them out of the round; " + action
            )
    if last.get("override") or gate.get("overridden"):
        return Check(name, STAGE, GATE_TITLE, "warn", evidence + " (overridden)", action, numbers)
    return Check(name, STAGE, GATE_TITLE, "fail", evidence, action, numbers)


def gate_drivers(rows: list[dict[str, Any]], threshold: float) -> list[dict[str, Any]]:
    """Each annotator of the calibration labels: agreement with the others' majority, and
    the gate without them; the one whose absence raises the gate most first."""
    rows = [r for r in rows if r.get("phase") == "calibration" and not r.get("anchor")]
    if not rows:
        return []
    labels = Labels.from_records(
        [r["item"] for r in rows], [r["annotator"] for r in rows], [r["label"] for r in rows]
    )
    agreement = calibration_gate(labels, None, threshold).annotator_agreement
    if len(labels.annotators) < 3:  # without one of two, no one is left to agree with
        return []
    out = []
    for code, annotator in enumerate(labels.annotators.tolist()):
        rest = calibration_gate(labels.subset(labels.annotator != code), None, threshold)
        mine = agreement.get(annotator, math.nan)
        if math.isnan(rest.value) or math.isnan(mine):
            continue  # no item the others agree on: nothing to measure them against
        out.append({"annotator": annotator, "agreement": mine, "without": rest.value})
    return sorted(out, key=lambda d: -d["without"])
