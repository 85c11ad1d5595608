"""The calibration gate as `status`, the export's manifest and reports show it: one number
(the deciding round's, see `rounds.gate_labels`), its verdict, each round, and, when the gate
failed, whose labels drive the disagreement and what to do about it."""

from __future__ import annotations

import math
from typing import Any

from sqlalchemy import Connection, select

from rlhfkit.agreement import who_drives
from rlhfkit.annotate import models as m
from rlhfkit.annotate.rounds import deciding, gate_labels
from rlhfkit.annotate.rules import Policy


def gate_summary(
    rounds: list[Any], is_open: bool, policy: Policy, opened_by: dict[int, str] | None = None
) -> dict[str, Any]:
    """The gate and each round; a null comes with its `<name>_note`. `rounds`: the `Round`
    rows, oldest first; `opened_by`: who opened each round (`round_openers`)."""
    decided = deciding(list(reversed(rounds)))
    by_id = {r.id: r for r in rounds}
    d = by_id.get(decided.deciding_round)
    out: dict[str, Any] = {
        "main_queue_open": is_open,
        "threshold": policy.agreement_threshold,
        "statistic": "percent_agreement",
        "round": d.id if d else None,
        "value": _number(d.gate_value) if d else None,
        "passed": d.gate_passed if d else None,
        "pairs": d.size if d else None,
        "annotators": d.gate_annotators if d else None,
        "verdict": _verdict(d),
        "rounds": [_round(r, (opened_by or {}).get(r.id)) for r in rounds],
        "overridden": any(r.override_reason is not None for r in rounds),
    }
    why = (
        "no calibration round yet"
        if not rounds
        else "no round has been evaluated yet: the gate is evaluated once two annotators "
        "have finished a round"
    )
    for key in ("round", "value", "passed", "pairs", "annotators"):
        if out[key] is None:
            out[f"{key}_note"] = why if d is None else _not_evaluated(d)
    return out


def _verdict(r: Any) -> str:
    if r is None:
        return "not evaluated yet"
    if r.override_reason is not None:
        state = {True: "passed", False: "failed", None: "not evaluated"}[r.gate_passed]
        return f"{state}, overridden by {r.override_by}"
    return "passed" if r.gate_passed else "failed"


def _not_evaluated(r: Any) -> str:
    if r.gate_annotators < 2:
        return (
            f"{r.gate_annotators} annotator(s) have finished round {r.id}: the gate is "
            "evaluated once two have"
        )
    return "no item of the round has two or more labels: there is nothing to compare"


def _round(r: Any, by: str | None) -> dict[str, Any]:
    override = None
    if r.override_reason is not None:
        override = {"reason": r.override_reason, "by": r.override_by, "at": r.override_at}
    out = {
        "round": r.id,
        "size": r.size,
        "reason": r.reason,
        "opened_by": by,
        "annotators_finished": r.gate_annotators,
        "percent_agreement": _number(r.gate_value),
        "passed": r.gate_passed,
        "override": override,
    }
    if by is None:
        out["opened_by_note"] = "not recorded (a store from before it was)"
    if out["percent_agreement"] is None:
        out["percent_agreement_note"] = _not_evaluated(r)
    if out["passed"] is None:
        out["passed_note"] = _not_evaluated(r)
    if override is None:
        out["override_note"] = "not overridden"
    return out


def round_openers(conn: Connection) -> dict[int, str]:
    """Round id -> who opened it (the audit log's `round_opened` events)."""
    rows = conn.execute(
        select(m.Event.actor, m.Event.detail).where(m.Event.kind == "round_opened")
    ).all()
    return {r.detail["round"]: r.actor for r in rows if isinstance(r.detail.get("round"), int)}


def disagreement(conn: Connection, policy: Policy, gate: dict[str, Any]) -> dict[str, Any] | None:
    """When the deciding round failed: for each annotator it counted, the gate's number
    without them and their agreement with each other annotator (leave-one-out), and the
    recommended action. None when it did not fail."""
    if gate["passed"] is not False:
        return None
    drivers = who_drives(gate_labels(conn, gate["round"]))
    rows = []
    for d in drivers:
        row: dict[str, Any] = {
            "annotator": d.annotator,
            "gate_without": _number(d.without),
            "pairwise": {k: _number(v) for k, v in d.pairwise.items()},
            "mean_pairwise": _number(d.mean_pairwise),
        }
        if row["gate_without"] is None:
            row["gate_without_note"] = "one annotator would be left: nothing to agree with"
        rows.append(row)
    action, remove = _action(drivers, gate["value"], policy.agreement_threshold)
    out = {"round": gate["round"], "annotators": rows, "action": action, "remove": remove}
    if remove is None:
        out["remove_note"] = "no single annotator's removal lets the gate pass"
    return out


def _action(drivers: list, value: float | None, threshold: float) -> tuple[str, str | None]:
    """What to do about a failed gate, and whom to remove (None: removing one won't do)."""
    again = "then `rlhfkit annotate recalibrate --same-items --reason ...`"
    if len(drivers) < 3:
        return (
            "with two annotators the gate cannot tell whose labels are off: add a third "
            "(`rlhfkit annotate add-annotator NAME`: they label this round too and the gate "
            "is evaluated again), or go through the most disputed pairs together, sharpen "
            f"the rubric, {again}",
            None,
        )
    best = drivers[0]
    if best.without >= threshold:
        return (
            f"remove {best.annotator}: without their labels the gate is {best.without:.2f} "
            f"(threshold {threshold:.2f}; {_fmt(value)} with them), and they agree with the "
            f"others {best.mean_pairwise:.2f} of the time on average. "
            f"`rlhfkit annotate remove {best.annotator} --reason ...` opens the main queue "
            f"for the rest; or retrain them on the disputed pairs, {again}",
            best.annotator,
        )
    return (
        f"no single annotator explains it (without any one of them the gate is at most "
        f"{best.without:.2f}, below {threshold:.2f}): the rubric is likely unclear on the "
        "most disputed pairs. Revise it, then `rlhfkit annotate recalibrate --fresh --reason "
        "...` (or --same-items to measure the change on the same pairs)",
        None,
    )


def _fmt(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.2f}"


def _number(x: float | None) -> float | None:
    return None if x is None or (isinstance(x, float) and math.isnan(x)) else float(x)
