"""Calibration rounds and the agreement gate.

A round is a set of items every annotator labels before (more) main items. The first opens
with the first import; a new one opens when an annotator has given `recalibrate_every`
labels since their last round, and then the whole team labels it. Each time an annotator
finishes a round, the gate is evaluated on everyone who has: percent agreement (the
article's 65-75% rule is stated in it) against `agreement_threshold`, by the agreement
module's `calibration_gate`. The main queue is open while the latest evaluated round passed,
or an admin overrode it; the override, who made it and why stay with the round.
"""

from __future__ import annotations

import random
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, and_, bindparam, exists, func, insert, select, update

from rlhfkit.agreement import Labels, calibration_gate
from rlhfkit.annotate import models as m
from rlhfkit.annotate.prepared import Prepared
from rlhfkit.annotate.rules import Policy
from rlhfkit.annotate.security import verify
from rlhfkit.annotate.storable import unstorable
from rlhfkit.annotate.store import Store, record_event
from rlhfkit.errors import UserError

rounds, items, labels, people = (t.__table__ for t in (m.Round, m.Item, m.Label, m.Annotator))
tasks = m.Assignment.__table__
# Never handed out to anyone. Not only no slot taken: a pair someone let expire has its slot
# back, and if a round took it, it would come back to them there, which an anchor (seen once,
# ever) never does: its return would mark it as a real pair.
UNTOUCHED = and_(
    items.c.kind == m.MAIN, items.c.taken == 0, ~exists().where(tasks.c.item_id == items.c.id)
)

ROUNDS_NEWEST_FIRST = Prepared(
    select(rounds.c.id, rounds.c.gate_passed, rounds.c.override_reason).order_by(rounds.c.id.desc())
)


@dataclass(frozen=True)
class GateState:
    latest_round: int
    """0 when there is no round (no calibration, or nothing imported yet)."""
    main_queue_open: bool


def gate_state(conn: Connection) -> GateState:
    """Open when there is no round at all, or the latest evaluated (or overridden) round
    passed (or was overridden). A round waiting for its second annotator does not count."""
    newest_first = ROUNDS_NEWEST_FIRST(conn).all()
    if not newest_first:
        return GateState(0, True)
    latest = newest_first[0].id
    for r in newest_first:
        if r.override_reason is not None:
            return GateState(latest, True)
        if r.gate_passed is not None:
            return GateState(latest, bool(r.gate_passed))
    return GateState(latest, False)


def gate_open(conn: Connection) -> bool:
    return gate_state(conn).main_queue_open


def finish_round(conn: Connection, policy: Policy, annotator_id: int, round_id: int) -> None:
    """When this annotator has labeled every item of the round: record it and re-evaluate
    the gate on everyone who has."""
    size = conn.execute(
        select(rounds.c.size).where(rounds.c.id == round_id).with_for_update()
    ).scalar_one()
    done = conn.execute(
        select(func.count())
        .select_from(labels.join(items, items.c.id == labels.c.item_id))
        .where(labels.c.annotator_id == annotator_id, items.c.round == round_id)
    ).scalar_one()
    if done < size:
        return
    conn.execute(
        update(people)
        .where(people.c.id == annotator_id, people.c.calibrated_round < round_id)
        .values(calibrated_round=round_id, labels_at_calibration=people.c.label_count)
    )
    evaluate_gate(conn, policy, round_id)


def evaluate_gate(conn: Connection, policy: Policy, round_id: int) -> None:
    rows = conn.execute(
        select(labels.c.item_id, labels.c.annotator_id, labels.c.label)
        .select_from(labels.join(items, items.c.id == labels.c.item_id))
        .where(items.c.round == round_id)
    ).all()
    size = conn.execute(select(rounds.c.size).where(rounds.c.id == round_id)).scalar_one()
    per_annotator = Counter(r.annotator_id for r in rows)
    finished = {a for a, n in per_annotator.items() if n >= size}
    rows = [r for r in rows if r.annotator_id in finished]
    values: dict[str, Any] = {"gate_annotators": len(finished), "evaluated_at": time.time()}
    if len(finished) >= 2:
        coded = Labels.from_records(
            [r.item_id for r in rows],
            [str(r.annotator_id) for r in rows],
            [r.label for r in rows],
            order=list(m.LABEL_VALUES),
        )
        gate = calibration_gate(coded, None, policy.agreement_threshold)
        values |= {"gate_value": gate.value, "gate_passed": gate.passed}
    conn.execute(update(rounds).where(rounds.c.id == round_id).values(**values))


def open_round(
    conn: Connection,
    policy: Policy,
    reason: str,
    rng: random.Random,
    actor: str = "scheduler",
    now: float | None = None,
) -> int | None:
    """Open a calibration round of up to `calibration_size` untouched main items; returns the
    round waiting for the team (an existing one that nobody has finished), or None when no
    item is left to calibrate on. `now`: the caller's clock, for the round's `created_at`
    (shown, never compared with the time of a task or label: those come from other
    processes' clocks)."""
    # One opener at a time, on every database: lock the store's schema-version row.
    conn.execute(select(m.Meta.value).where(m.Meta.key == "schema_version").with_for_update())
    latest = conn.execute(
        select(rounds.c.id, rounds.c.gate_annotators).order_by(rounds.c.id.desc()).limit(1)
    ).first()
    if latest is not None and latest.gate_annotators == 0:
        return latest.id
    fresh = (
        conn.execute(
            select(items.c.id).where(UNTOUCHED).order_by(items.c.id)
        )
        .scalars()
        .all()
    )
    if not fresh:
        return None
    chosen = sorted(rng.sample(fresh, min(policy.calibration_size, len(fresh))))
    round_id = (latest.id if latest else 0) + 1
    size = 0
    for start in range(0, len(chosen), 500):
        part = chosen[start : start + 500]
        # taken == 0 again: on PostgreSQL a slot may have been taken since the select.
        size += len(
            conn.execute(
                update(items)
                .where(items.c.id.in_(part), UNTOUCHED)
                .values(kind=m.CALIBRATION, round=round_id)
                .returning(items.c.id)
            ).all()
        )
    if size == 0:
        return None
    conn.execute(
        insert(rounds).values(
            id=round_id, size=size, reason=reason, created_at=time.time() if now is None else now
        )
    )
    # Labels with a higher id came in during the round (`labels_in_round_after`). Ids come
    # from the database, so unlike times from each server's clock they order labels across
    # processes.
    after = conn.execute(select(func.max(labels.c.id))).scalar() or 0
    record_event(
        conn, "round_opened", actor, round=round_id, size=size, reason=reason, after_label=after
    )
    return round_id


ROUND_OPENED = (
    select(m.Event.detail).where(m.Event.kind == "round_opened").order_by(m.Event.id.desc())
)


def labels_in_round_after(conn: Connection, round_id: int) -> int | None:
    """The largest label id when the round opened: the round's labels have higher ones. None
    for a round opened before this was recorded (stores from before it)."""
    for (detail,) in conn.execute(ROUND_OPENED):
        if detail.get("round") == round_id:
            return detail.get("after_label")
    return None


def override_gate(
    store: Store, reason: str, actor: str = "cli", by: tuple[int, str] | None = None
) -> int:
    """Open the main queue although the latest round did not pass; the reason is kept with
    the round and shown in status, exports and reports. Returns the round overridden.
    `by`: the asking admin's (annotator id, token hash), checked in the same transaction on
    their row, locked first (`security.TokenRefused` if it was revoked or rotated since)."""
    if not reason.strip():
        raise UserError("an override needs a reason (it is recorded and shown in exports)")
    why = unstorable(reason)  # from the command line: argv bytes that are not UTF-8
    if why:
        raise UserError(f"the override's reason {why}")

    def unit(conn: Connection) -> int:
        if by is not None:  # annotator rows first, the order every unit keeps (see `store`)
            admin_id, token_hash = by
            stored = conn.execute(ADMIN_HASH, {"a": admin_id}).scalar()
            verify(stored or "", token_hash)
        round_id = gate_state(conn).latest_round
        if not round_id:
            raise UserError("there is no calibration round to override (nothing imported yet)")
        conn.execute(
            update(rounds)
            .where(rounds.c.id == bindparam("r"))
            .values(override_reason=reason.strip(), override_by=actor, override_at=time.time()),
            {"r": round_id},
        )
        record_event(conn, "gate_override", actor, round=round_id, reason=reason.strip())
        return round_id

    return store.run(unit)


ADMIN_HASH = (
    select(m.Annotator.token_hash).where(m.Annotator.id == bindparam("a")).with_for_update()
)
