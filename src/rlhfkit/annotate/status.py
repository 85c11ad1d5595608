"""Where annotation stands: progress, the gate, agreement, each annotator, drift, disputes,
and every token revoked or rotated.

The statistics are the agreement module's (`rlhfkit.agreement`); this module only gathers
the labels from the store in the shape it reads (long format, labels A / B / tie / both_bad
relative to the stored pair, `shown_first` for position bias, anchors as gold).
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

from sqlalchemy import Connection, func, select

from rlhfkit.agreement import (
    AnnotatorStats,
    Labels,
    anchor_drift,
    annotator_stats,
    calibration_gate,
    summarise,
)
from rlhfkit.annotate import models as m
from rlhfkit.annotate.annotators import token_events
from rlhfkit.annotate.gate_status import disagreement, gate_summary, round_openers
from rlhfkit.annotate.rounds import gate_open, labels_in_round_after
from rlhfkit.annotate.rules import Policy
from rlhfkit.annotate.security import verify
from rlhfkit.annotate.store import Store


@dataclass
class LabelTable:
    """Every label in the store, joined with its item and annotator, as parallel lists."""

    item_id: list[int]
    external_id: list[str]
    annotator: list[str]
    label: list[str]
    shown_first: list[str]
    created_at: list[float]
    phase: list[str]
    kind: list[str]
    rubric_version: list[str]
    criteria: list[dict | None]
    rationale: list[str | None]
    seconds: list[float]
    gold: dict[int, str]
    """Anchor item id -> its answer, for every anchor in the store."""

    def labels(self, keep: list[bool] | None = None) -> Any:
        """`rlhfkit.agreement.Labels` (optionally of a subset), over the four label values."""
        def pick(xs: list) -> list:
            return xs if keep is None else [x for x, k in zip(xs, keep, strict=True) if k]

        return Labels.from_records(
            pick(self.item_id),
            pick(self.annotator),
            pick(self.label),
            pick(self.shown_first),
            pick(self.created_at),
            order=list(m.LABEL_VALUES),
        )

    def gold_codes(self, labels: Any) -> dict[int, int]:
        """The gold answers in `Labels` codes (item code -> label code)."""
        codes = {int(v): i for i, v in enumerate(labels.items.tolist())}
        return {codes[i]: labels.code_of(g) for i, g in self.gold.items() if i in codes}


def label_table(conn: Connection) -> LabelTable:
    rows = conn.execute(
        select(
            m.Label.item_id,
            m.Item.external_id,
            m.Annotator.name,
            m.Label.label,
            m.Label.shown_first,
            m.Label.created_at,
            m.Label.phase,
            m.Item.kind,
            m.Label.rubric_version,
            m.Label.criteria,
            m.Label.rationale,
            m.Label.seconds,
        )
        .join(m.Item, m.Item.id == m.Label.item_id)
        .join(m.Annotator, m.Annotator.id == m.Label.annotator_id)
        .order_by(m.Label.id)
    ).all()
    gold = dict(conn.execute(select(m.Item.id, m.Item.gold).where(m.Item.kind == m.ANCHOR)).all())
    columns = list(zip(*rows, strict=True)) if rows else [[] for _ in range(12)]
    return LabelTable(*[list(c) for c in columns], gold=gold)


def simulated_by(conn: Connection) -> dict[str, Any] | None:
    """A pilot store's simulated panel (`rlhfkit annotate pilot` records it): its judge."""
    row = conn.execute(select(m.Event.detail).where(m.Event.kind == "simulated_pilot")).first()
    return None if row is None else {"judge": row.detail.get("judge")}


def status(store: Store, policy: Policy, replicates: int = 200) -> dict[str, Any]:
    """Everything the admin dashboard and `rlhfkit annotate status` show, JSON-able."""
    with store.read() as conn:
        table = label_table(conn)
        kinds = dict(conn.execute(select(m.Item.kind, func.count()).group_by(m.Item.kind)).all())
        complete = conn.execute(
            select(func.count())
            .select_from(m.Item)
            .where(m.Item.kind.in_([m.MAIN, m.CALIBRATION]), m.Item.labels >= policy.overlap)
        ).scalar_one()
        open_tasks = conn.execute(
            select(func.count()).select_from(m.Assignment).where(m.Assignment.status == m.OPEN)
        ).scalar_one()
        people = conn.execute(select(m.Annotator).order_by(m.Annotator.name)).all()
        rounds = conn.execute(select(m.Round).order_by(m.Round.id)).all()
        gate = gate_summary(rounds, gate_open(conn), policy, round_openers(conn))
        gate["disagreement"] = disagreement(conn, policy, gate)
        tokens = token_events(conn)
        simulated = simulated_by(conn)
    main_items = kinds.get(m.MAIN, 0) + kinds.get(m.CALIBRATION, 0)
    out: dict[str, Any] = {
        "progress": {
            "items": main_items,
            "calibration_items": kinds.get(m.CALIBRATION, 0),
            "anchors": kinds.get(m.ANCHOR, 0),
            "complete_items": complete,
            "overlap": policy.overlap,
            "labels": len(table.label),
            "open_tasks": open_tasks,
            "fraction_complete": complete / main_items if main_items else 0.0,
        },
        "gate": gate,
        "rubric_version": policy.rubric_version,
        "token_events": tokens,
        # a pilot store (`rlhfkit annotate pilot`): every label is a simulated annotator's
        "simulated": simulated,
    }
    if simulated is None:
        out["simulated_note"] = "people's labels: no simulated pilot wrote this store"
    if gate["disagreement"] is None:
        gate["disagreement_note"] = (
            "the gate passed" if gate["passed"] else "the gate has not failed: " + gate["verdict"]
        )
    revoked = {e["annotator"]: e["at"] for e in tokens if e["event"] == "revoked"}
    stats = annotator_quality(table, policy, replicates)
    # Over every label (main, calibration, anchors, every annotator): not the gate's number.
    out["agreement"] = stats["agreement"]
    if stats["agreement"] is None:
        out["agreement_note"] = stats["agreement_note"]
    out["drift_alerts"] = stats["drift_alerts"]
    out["disputed_items"] = stats["disputed_items"]
    out["annotators"] = []
    latest = rounds[-1].id if rounds else 0
    for p in people:
        since = p.label_count - p.labels_at_calibration
        # An admin who labels nothing is no annotator to wait for; a removed one gets no tasks.
        labels_pairs = not p.is_admin or p.label_count > 0
        row = {
            "annotator": p.name,
            "admin": bool(p.is_admin),
            "labels": p.label_count,
            "calibrated_round": p.calibrated_round,
            "in_calibration": bool(
                latest and p.calibrated_round < latest and labels_pairs and p.removed_at is None
            ),
            "labels_since_calibration": since,
            "recalibration_due": bool(
                policy.recalibrate_every and since >= policy.recalibrate_every
            ),
            "revoked": p.name in revoked,
            "revoked_at": revoked.get(p.name),
            "removed": _removal(p),
        }
        if row["removed"] is None:
            row["removed_note"] = "not removed"
        if row["revoked_at"] is None:
            row["revoked_at_note"] = "the token has not been revoked"
        row.update(stats["per_annotator"].get(p.name, _no_labels()))
        out["annotators"].append(row)
    return out


def _removal(p: Any) -> dict[str, Any] | None:
    if p.removed_at is None:
        return None
    return {"reason": p.removed_reason, "by": p.removed_by, "at": p.removed_at}


def _no_labels() -> dict[str, Any]:
    """The per-annotator statistics of someone without labels: counts 0, rates undefined,
    each with its `<name>_note` as `AnnotatorStats.as_dict` gives them."""
    row: dict[str, Any] = {"excluded_from_export": False}
    for f in fields(AnnotatorStats):
        if f.name == "annotator":
            continue
        if f.type in (int, "int"):
            row[f.name] = 0
        else:
            row[f.name] = None
            row[f"{f.name}_note"] = "no labels yet"
    return row


def annotator_quality(table: LabelTable, policy: Policy, replicates: int = 200) -> dict[str, Any]:
    """Agreement, per-annotator statistics (with anchor accuracy), drift alerts against each
    annotator's calibration-time anchor accuracy, and the most disputed items."""
    empty = {
        "agreement": None,
        "agreement_note": "no labels yet",
        "per_annotator": {},
        "drift_alerts": [],
        "disputed_items": [],
    }
    if not table.label:
        return empty
    labels = table.labels()
    gold = table.gold_codes(labels)
    per_annotator = {s.annotator: s.as_dict() for s in annotator_stats(labels, gold)}
    for s in per_annotator.values():
        acc, seen = s["anchor_accuracy"], s["anchor_items"]
        s["excluded_from_export"] = (
            acc is not None
            and seen >= policy.min_anchor_labels
            and acc < policy.anchor_accuracy_threshold
        )
    counts = labels.counts()
    agreement, agreement_note = None, "no item has two or more labels: there is nothing to compare"
    if (counts.sum(axis=1) >= 2).any():
        full = summarise(labels, "nominal", gold, policy.agreement_threshold, replicates)
        # Each statistic with its note (the reason when it is null), as `summarise` has them.
        keys = ("n_items", "n_labels", "percent_agreement", "krippendorff_alpha")
        keys += ("cohen_kappa_mean", "ci")
        agreement = {}
        for k in keys:
            agreement[k] = full[k]
            note = "ci_notes" if k == "ci" else f"{k}_note"
            if note in full:
                agreement[note] = full[note]
        agreement_note = None
    alerts = []
    if gold:
        calibration = [p == "calibration" for p in table.phase]
        baseline = _baseline(table, calibration)
        _, drift = anchor_drift(
            labels, gold, threshold=policy.anchor_accuracy_threshold, baseline=baseline
        )
        alerts = [
            {
                "annotator": a.annotator,
                "window": a.window,
                "accuracy": a.accuracy,
                "reason": a.reason,
            }
            for a in drift
        ]
    # The calibration gate's statistic over every item names the most disputed ones.
    names = dict(zip(table.item_id, table.external_id, strict=True))
    row_of = {name: i for i, name in enumerate(labels.item_names())}
    disputed = [
        {
            "item": names[int(item)],
            "agreement": value,
            "votes": {
                v: int(n) for v, n in zip(m.LABEL_VALUES, counts[row_of[item]], strict=True) if n
            },
        }
        for item, value in calibration_gate(labels, None).disputed_items
    ]
    return {
        "agreement": agreement,
        "agreement_note": agreement_note,
        "per_annotator": per_annotator,
        "drift_alerts": alerts,
        "disputed_items": disputed,
    }


def _baseline(table: LabelTable, calibration: list[bool]) -> dict[str, float]:
    """Each annotator's anchor accuracy during calibration: what drift is measured from."""
    hits: dict[str, list[bool]] = {}
    for i, during in enumerate(calibration):
        gold = table.gold.get(table.item_id[i])
        if during and gold is not None:
            hits.setdefault(table.annotator[i], []).append(table.label[i] == gold)
    return {a: sum(h) / len(h) for a, h in hits.items() if h}


def annotator_progress(
    store: Store, policy: Policy, annotator_id: int, token_hash: str | None = None
) -> dict[str, Any]:
    """One annotator's view of their own progress (`GET /api/me`, the labeling page's line).

    Anchors must stay secret, so this counts tasks, whatever they were: `labels` is every
    label they gave, anchors included, and `calibration.done` every task they finished in
    the latest round, anchors included; each moves by one per label. There is no count of
    what is left: the main queue's would move when they or anyone else took a main item and
    not for an anchor, and a round's size or the number of anchors would say how many of
    their tasks were anchors. `state` turns to done when no main item is left for them,
    which is also when the anchors end (see `scheduling`); an open task of theirs, of any
    kind, is still theirs to finish. `calibration.done` counts every calibration-phase label
    given since the round opened, whatever round its task was first handed out in (an
    abandoned one comes back in the next round, anchor or not). With `token_hash`,
    `security.TokenRefused` if the annotator's token is no longer that one."""
    with store.read() as conn:
        me = conn.execute(select(m.Annotator).where(m.Annotator.id == annotator_id)).one()
        verify(me.token_hash, token_hash)
        latest = conn.execute(select(m.Round).order_by(m.Round.id.desc()).limit(1)).first()
        is_open = gate_open(conn)
        calibration = None
        if latest is not None:
            # The round's labels by label id, not by time: the round was opened, and each
            # label stored, by whichever server process took the request, each with its clock.
            after = labels_in_round_after(conn, latest.id)
            in_round = (
                m.Label.id > after
                if after is not None
                else m.Label.created_at >= latest.created_at  # a round from an older store
            )
            done = conn.execute(
                select(func.count())
                .select_from(m.Label)
                .where(
                    m.Label.annotator_id == annotator_id,
                    m.Label.phase == "calibration",
                    in_round,
                )
            ).scalar_one()
            calibration = {"round": latest.id, "done": done}
        holding = conn.execute(
            select(m.Assignment.id).where(
                m.Assignment.annotator_id == annotator_id, m.Assignment.status == m.OPEN
            )
        ).first()
        mine = select(m.Assignment.item_id).where(m.Assignment.annotator_id == annotator_id)
        main_left = conn.execute(
            select(m.Item.id)
            .where(m.Item.kind == m.MAIN, m.Item.taken < policy.overlap)
            .where(m.Item.id.not_in(mine))
            .limit(1)
        ).first()
    in_calibration = latest is not None and me.calibrated_round < latest.id
    if me.removed_at is not None:
        state = "removed"
    elif in_calibration:
        state = "calibration"
    elif not is_open:
        state = "waiting_for_gate"
    else:
        state = "main" if holding or main_left else "done"
    return {
        "annotator": me.name,
        "admin": bool(me.is_admin),
        "labels": me.label_count,
        "state": state,
        "calibration": calibration,
        "main_queue_open": is_open,
        "progress": {"text": _progress_text(state, me.label_count, calibration)},
    }


def _progress_text(state: str, labels: int, calibration: dict[str, int] | None) -> str:
    """The labeling page's progress line (the page shows it as it is)."""

    def pairs(n: int) -> str:
        return f"{n} pair{'' if n == 1 else 's'} labeled"

    if state == "calibration" and calibration:
        return f"Calibration round {calibration['round']}: {pairs(calibration['done'])}"
    if state == "waiting_for_gate" and calibration:
        return (
            f"Calibration round {calibration['round']} finished ({pairs(calibration['done'])});"
            " waiting for the team's agreement"
        )
    if state == "done":
        return f"{pairs(labels)}; nothing left for you right now"
    if state == "removed":
        return f"{pairs(labels)}; an admin took you off this round"
    return pairs(labels)
