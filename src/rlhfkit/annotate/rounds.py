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

import hashlib
import random
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any

import numpy as np
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
    deciding_round: int = 0
    """The round whose verdict (or override) holds the queue open or shut; 0 when none does."""


def gate_state(conn: Connection) -> GateState:
    return deciding(ROUNDS_NEWEST_FIRST(conn).all())


def deciding(newest_first: list[Any]) -> GateState:
    """Open when there is no round at all, or the latest evaluated (or overridden) round
    passed (or was overridden). A round waiting for its second annotator does not count:
    the one before it decides. `newest_first`: rows with id, gate_passed, override_reason."""
    if not newest_first:
        return GateState(0, True)
    latest = newest_first[0].id
    for r in newest_first:
        if r.override_reason is not None:
            return GateState(latest, True, r.id)
        if r.gate_passed is not None:
            return GateState(latest, bool(r.gate_passed), r.id)
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


def gate_labels(conn: Connection, round_id: int) -> Labels | None:
    """The labels a round's gate is decided on, and nothing else: every label on the round's
    items by each annotator who has labeled all of them and was not removed (None when
    there is none). The gate is evaluated once two such annotators count.

    This is the one definition of the gate's number: `evaluate_gate` stores it, `status`
    shows it and says who drives it, and the export marks these labels (`gate`) so that
    `rlhfkit agreement` computes it again from the file."""
    size = conn.execute(select(rounds.c.size).where(rounds.c.id == round_id)).scalar_one()
    rows = conn.execute(
        select(labels.c.item_id, people.c.name, labels.c.label, people.c.removed_at)
        .select_from(
            labels.join(items, items.c.id == labels.c.item_id).join(
                people, people.c.id == labels.c.annotator_id
            )
        )
        .where(items.c.round == round_id)
        .order_by(labels.c.id)
    ).all()
    per_annotator = Counter(r.name for r in rows)
    counted = {r.name for r in rows if per_annotator[r.name] >= size and r.removed_at is None}
    rows = [r for r in rows if r.name in counted]
    if not counted:
        return None
    return Labels.from_records(
        [r.item_id for r in rows],
        [r.name for r in rows],
        [r.label for r in rows],
        order=list(m.LABEL_VALUES),
    )


def evaluate_gate(conn: Connection, policy: Policy, round_id: int) -> None:
    """Store the round's gate: its number and verdict once two annotators count, none before
    (or again, when a removal leaves fewer than two)."""
    coded = gate_labels(conn, round_id)
    counted = 0 if coded is None else len(np.unique(coded.annotator))
    values: dict[str, Any] = {
        "gate_annotators": counted,
        "evaluated_at": time.time(),
        "gate_value": None,
        "gate_passed": None,
    }
    if coded is not None and counted >= 2:
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
    fresh = conn.execute(select(items.c.id).where(UNTOUCHED).order_by(items.c.id)).scalars().all()
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
    store: Store,
    reason: str,
    actor: str = "cli",
    by: tuple[int, str] | None = None,
    *,
    careful: bool = False,
    unlabelled: bool = False,
) -> int:
    """Open the main queue although the latest round did not pass; the reason is kept with
    the round and shown in status, exports and reports. Returns the round overridden.
    `by`: the asking admin's (annotator id, token hash), checked in the same transaction on
    their row, locked first (`security.TokenRefused` if it was revoked or rotated since).
    `careful` (`rlhfkit annotate override-gate`): refuse a round overridden already (as a
    second `remove` is), and one nobody has labelled yet, whose gate was never evaluated,
    unless `unlabelled`."""
    reason = checked_reason(reason, "override")

    def unit(conn: Connection) -> int:
        if by is not None:  # annotator rows first, the order every unit keeps (see `store`)
            admin_id, token_hash = by
            stored = conn.execute(ADMIN_HASH, {"a": admin_id}).scalar()
            verify(stored or "", token_hash)
        round_id = gate_state(conn).latest_round
        if not round_id:
            raise UserError("there is no calibration round to override (nothing imported yet)")
        if careful:
            _overridable(conn, round_id, unlabelled)
        conn.execute(
            update(rounds)
            .where(rounds.c.id == bindparam("r"))
            .values(override_reason=reason, override_by=actor, override_at=time.time()),
            {"r": round_id},
        )
        record_event(conn, "gate_override", actor, round=round_id, reason=reason)
        return round_id

    return store.run(unit)


def _overridable(conn: Connection, round_id: int, unlabelled: bool) -> None:
    row = conn.execute(
        select(rounds.c.override_reason, rounds.c.override_by, rounds.c.gate_value).where(
            rounds.c.id == round_id
        )
    ).one()
    if row.override_reason is not None:
        raise UserError(
            f"calibration round {round_id}'s gate was already overridden by {row.override_by} "
            f"({row.override_reason}); the main queue is open"
        )
    in_round = select(items.c.id).where(items.c.round == round_id)
    labelled = conn.execute(select(func.count()).where(labels.c.item_id.in_(in_round))).scalar()
    if row.gate_value is None and not labelled and not unlabelled:
        raise UserError(
            f"calibration round {round_id}'s gate was never evaluated: nobody has labelled "
            "its pairs yet. Let two annotators finish it (the gate may pass), or give "
            "--unlabelled to open the main queue without any calibration"
        )


def checked_reason(reason: str, what: str) -> str:
    """The reason for a team decision (override, removal, recalibration), stripped; a
    `UserError` when it is empty or cannot be stored."""
    if not reason.strip():
        raise UserError(f"an {what} needs a reason (it is recorded and shown in exports)")
    why = unstorable(reason)  # from the command line: argv bytes that are not UTF-8
    if why:
        raise UserError(f"the {what}'s reason {why}")
    return reason.strip()


@dataclass(frozen=True)
class Recalibration:
    round: int
    size: int
    same_items_as: int | None
    """The round whose pairs are labeled again (`same_items`), else None (fresh pairs)."""


def recalibrate(
    store: Store,
    policy: Policy,
    same_items: bool,
    reason: str,
    actor: str,
    rng: random.Random | None = None,
    by: tuple[int, str] | None = None,
) -> Recalibration:
    """Open a new calibration round for the whole team, now: fresh pairs nobody has been
    handed (`calibration_size` of them), or the latest round's pairs again (`same_items`:
    copies, kind `recheck`, since nobody labels one item twice). Everyone not removed labels
    it before more main items; the main queue stays as the last verdict left it until two
    have finished it. Recorded (who, why) in the audit log, like an override. `by`: as for
    `override_gate`."""
    reason = checked_reason(reason, "recalibration")

    def unit(conn: Connection) -> Recalibration:
        if by is not None:  # annotator rows first, the order every unit keeps (see `store`)
            stored = conn.execute(ADMIN_HASH, {"a": by[0]}).scalar()
            verify(stored or "", by[1])
        conn.execute(select(m.Meta.value).where(m.Meta.key == "schema_version").with_for_update())
        latest = conn.execute(
            select(rounds.c.id, rounds.c.gate_annotators).order_by(rounds.c.id.desc()).limit(1)
        ).first()
        if latest is None:
            raise UserError(
                "there is no calibration round yet to recalibrate after",
                hint="the first opens with the first import when [annotation] "
                "calibration_size is above 0",
            )
        if latest.gate_annotators == 0:
            raise UserError(
                f"calibration round {latest.id} has not been finished by anyone yet: a new "
                "round would replace it unlabeled; nothing changed"
            )
        if same_items:
            round_id, size = _copy_round(conn, latest.id, reason, actor)
            return Recalibration(round_id, size, latest.id)
        round_id = open_round(conn, policy, reason, rng or random.Random(), actor=actor)
        if round_id is None:
            raise UserError(
                "no pair is left that nobody has been handed: nothing to draw a fresh round "
                "from; nothing changed",
                hint="`rlhfkit annotate recalibrate --same-items` labels the latest round's "
                "pairs again; or import more pairs",
            )
        size = conn.execute(select(rounds.c.size).where(rounds.c.id == round_id)).scalar_one()
        return Recalibration(round_id, size, None)

    return store.run(unit)


def _copy_round(conn: Connection, source: int, reason: str, actor: str) -> tuple[int, int]:
    """A new round of copies of round `source`'s pairs (kind `recheck`, id `ID#roundN`)."""
    rows = conn.execute(
        select(
            items.c.external_id,
            items.c.prompt,
            items.c.response_a,
            items.c.response_b,
            items.c.source,
            items.c.extra,
        )
        .where(items.c.round == source)
        .order_by(items.c.id)
    ).all()
    round_id, now = source + 1, time.time()
    taken = set(conn.execute(select(items.c.external_id)).scalars())
    copies = []
    for r in rows:
        original = (r.extra or {}).get("recheck_of", r.external_id)
        new_id = f"{original}#round{round_id}"
        if new_id in taken or len(new_id) > 200:  # an imported id, or too long a one
            new_id = f"{hashlib.sha256(original.encode()).hexdigest()[:16]}#round{round_id}"
        copies.append(
            {
                "external_id": new_id,
                "prompt": r.prompt,
                "response_a": r.response_a,
                "response_b": r.response_b,
                "kind": m.RECHECK,
                "round": round_id,
                "taken": 0,
                "labels": 0,
                "source": r.source,
                "extra": {"recheck_of": original},
                "created_at": now,
            }
        )
    if copies:
        conn.execute(insert(items), copies)
    conn.execute(
        insert(rounds).values(id=round_id, size=len(copies), reason=reason, created_at=now)
    )
    after = conn.execute(select(func.max(labels.c.id))).scalar() or 0
    record_event(
        conn,
        "round_opened",
        actor,
        round=round_id,
        size=len(copies),
        reason=reason,
        after_label=after,
        same_items_as=source,
    )
    return round_id, len(copies)


ADMIN_HASH = (
    select(m.Annotator.token_hash).where(m.Annotator.id == bindparam("a")).with_for_update()
)
