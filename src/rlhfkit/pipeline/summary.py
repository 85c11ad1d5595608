"""summary.json: a run's outcome in one machine-readable file, beside the report.

Keys: ``simulated_annotators`` (whether a simulated labeler stood in for people),
``rm_heldout_accuracy`` and ``rm_heldout_pairs``, ``rm_heldout_by_pairing``
{"same model" | "across models": {accuracy, pairs}} (two SFT replies, or an SFT reply
against the starting model's);
``calibration_gate`` {statistic, value, threshold, passed, verdict, round, overridden,
main_queue_open, rounds}: the store's one gate number and verdict, from its deciding round
(the latest evaluated or overridden one; a round still waiting for its second annotator does
not decide), as `annotate status` shows it; ``rounds``: how many there were;
``pilot``: the SIMULATED pilot's pilot.json ([run] pilot: its judge, panel, gate,
agreement, reward model; null in a run without a pilot stage); ``agreement`` {percent_agreement,
krippendorff_alpha, fleiss_kappa}; ``flagged_annotators`` (drift alerts or anchor accuracy
under the threshold, with why); ``panel`` (the simulated annotators and their label counts);
for ``ppo`` and ``dpo``: ``criteria`` {name: {direction, before, after, p_value, test,
verdict}}, ``improved`` and ``regressed`` (the criteria by verdict), ``kl``, ``length``
{before, after}, ``win_rates``, ``hacking_flags``, ``samples``; ``doctor`` {counts,
checks {name: {verdict, evidence, action}}, overrides} (doctor.json, see `rlhfkit.doctor`);
and ``stage_seconds``, ``total_seconds``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from rlhfkit.doctor.record import DOCTOR_FILE, read_record
from rlhfkit.evaluate.schema import PolicyEvalResult, RMEvalResult, read_json
from rlhfkit.pipeline.layout import RunPaths


def summary(paths: RunPaths, seconds: dict[str, float], pilot: bool = False) -> dict[str, Any]:
    """summary.json (see the module's docstring); `pilot`: the run has a pilot stage (a run
    folder may hold an earlier configuration's pilot/, which says nothing of this run)."""
    annotation = paths.annotation
    status = _read(annotation / "status.json")
    agreement = _read(annotation / "agreement.json")
    rm_path = paths.rm / "eval_rm.json"
    rm = read_json(RMEvalResult, rm_path) if rm_path.exists() else None
    out: dict[str, Any] = {
        "simulated_annotators": bool(_read(annotation / "panel.json").get("simulated")),
        "rm_heldout_accuracy": rm.accuracy if rm else None,
        "rm_heldout_pairs": rm.pairs if rm else None,
        "rm_heldout_by_pairing": {
            k: {"accuracy": v.accuracy, "pairs": v.pairs}
            for k, v in (rm.slices if rm else {}).get("pairing", {}).items()
        },
        "calibration_gate": _gate(status),
        "pilot": (_read(paths.root / "pilot" / "pilot.json") or None) if pilot else None,
        "agreement": {
            k: agreement.get(k) for k in ("percent_agreement", "krippendorff_alpha", "fleiss_kappa")
        },
        "flagged_annotators": _flagged(status, agreement),
        "panel": _read(annotation / "panel.json"),
    }
    for policy in ("ppo", "dpo"):
        out[policy] = _policy(paths.eval(policy) / "eval.json")
    out["doctor"] = _doctor(paths.root / DOCTOR_FILE)
    out["stage_seconds"] = seconds
    out["total_seconds"] = round(sum(seconds.values()), 1)
    return out


def _gate(status: dict[str, Any]) -> dict[str, Any] | None:
    """The store's one gate number and verdict (its deciding round), as `annotate status`
    and the report show it."""
    gate = status.get("gate")
    if not gate or not gate.get("rounds"):
        return None
    return {
        "statistic": gate["statistic"],
        "value": gate.get("value"),
        "threshold": gate["threshold"],
        "passed": gate.get("passed"),
        "verdict": gate.get("verdict"),
        "round": gate.get("round"),
        "overridden": gate["overridden"],
        "main_queue_open": gate["main_queue_open"],
        "rounds": len(gate["rounds"]),
    }


def _flagged(status: dict[str, Any], agreement: dict[str, Any]) -> list[dict[str, Any]]:
    """Annotators with a drift alert, or left out of the export (anchor accuracy under the
    threshold over at least `min_anchor_labels` anchors)."""
    flagged: dict[str, list[str]] = {}
    for alert in status.get("drift_alerts", []) + agreement.get("drift_alerts", []):
        flagged.setdefault(alert["annotator"], []).append(alert["reason"])
    for a in status.get("annotators", []):
        if a.get("excluded_from_export"):
            flagged.setdefault(a["annotator"], []).append(
                f"left out of the export (anchor accuracy {a['anchor_accuracy']:.2f} over "
                f"{a['anchor_items']} anchors)"
            )
    return [{"annotator": k, "reasons": sorted(set(v))} for k, v in sorted(flagged.items())]


def _policy(path: Path) -> dict[str, Any] | None:
    if not path.exists():
        return None
    ev = read_json(PolicyEvalResult, path)
    criteria = {
        c.name: {
            "direction": c.direction,
            "before": c.before.rate,
            "after": c.after.rate,
            "p_value": c.p_value,
            "test": c.test,
            "verdict": c.verdict,
        }
        for c in ev.criteria
    }
    return {
        "criteria": criteria,
        "improved": [n for n, c in criteria.items() if c["verdict"] == "improved"],
        "regressed": [n for n, c in criteria.items() if c["verdict"] == "regressed"],
        "kl": ev.kl.value,
        "length": {"before": ev.length.before.mean, "after": ev.length.after.mean},
        "win_rates": {w.judge: w.win_rate for w in ev.win_rates},
        "hacking_flags": [
            {"name": m.name, "value": m.value, "explanation": m.explanation}
            for m in ev.monitors
            if m.flagged
        ],
        "samples": ev.settings.n_prompts * ev.settings.samples_per_prompt,
    }


def _doctor(path: Path) -> dict[str, Any] | None:
    record = read_record(path)
    if not record:
        return None
    return {
        "counts": record["counts"],
        "checks": {
            c.name: {"verdict": c.verdict, "evidence": c.evidence, "action": c.action}
            for c in record["checks"]
        },
        "overrides": record["overrides"],
    }


def _read(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text()) if path.exists() else {}
