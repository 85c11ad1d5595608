"""Who labels what next: overlap, calibration rounds, the gate, anchors, timeouts.

The rules, in the order `next_task` applies them to one annotator:

1. An open task of theirs that has not timed out is handed out again (a reload shows the same
   pair). Tasks past `task_timeout_s` expire; a main item's slot returns to the pool.
2. Calibration: while they have not finished the latest calibration round, they get its
   items (every annotator labels every item of a round).
3. The gate: the main queue is open only while the latest evaluated round passed the
   agreement threshold, or an admin overrode it (recorded with the reason). A round is
   evaluated each time an annotator finishes it, once two have.
4. Recalibration: after `recalibrate_every` labels since their last round, a new round is
   opened (fresh, unlabeled items) for the whole team, unless one is already waiting.
5. Anchors, items with a known answer, replace a task at `anchor_rate` in both phases;
   nothing in the task tells them apart.
6. Main items: those with fewer than `overlap` slots taken, nearly finished ones first. A
   slot is taken with a conditional update (``taken < overlap``), which PostgreSQL re-checks
   after a concurrent writer commits: an item never gets more than `overlap` labels.

Nobody sees an item twice (a unique constraint), and the display order is drawn per task and
stored (position-bias statistics need it).
"""

from __future__ import annotations

import hashlib
import json
import random
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, and_, exists, func, insert, select, update
from sqlalchemy.exc import IntegrityError

from rlhfkit.annotate import models as m
from rlhfkit.annotate import security
from rlhfkit.annotate.policy import Policy
from rlhfkit.annotate.store import Store, record_event

SWEEP_EVERY_S = 5.0


@dataclass(frozen=True)
class Task:
    task_id: str
    prompt: Any
    first: Any
    second: Any
    phase: str
    """'calibration' or 'main' (anchors look like either)."""
    expires_at: float


@dataclass(frozen=True)
class NoTask:
    reason: str
    """'calibration_gate' (waiting for the gate), 'done' (no work left for this annotator)."""


@dataclass(frozen=True)
class LabelRequest:
    task_id: str
    choice: str
    client_id: str
    criteria: dict[str, str] | None = None
    rationale: str | None = None

    def digest(self) -> str:
        body = [self.task_id, self.choice, self.criteria or {}, self.rationale or ""]
        return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


@dataclass(frozen=True)
class StoredLabel:
    label_id: int
    task_id: str
    choice: str
    created: bool
    """False: the same request was replayed and the stored label is returned."""


class TaskNotFound(LookupError):
    """No such task for this annotator (another annotator's task looks the same: 404)."""


class LabelConflict(Exception):
    """409: the client id was used for different content, or the task cannot take a label."""


class InvalidLabel(ValueError):
    """422: a choice or criterion the rubric does not allow."""


class _Raced(Exception):
    """A row changed between our read and our write; the transaction is retried."""


# --- handing out tasks ------------------------------------------------------------------------


def next_task(
    store: Store, policy: Policy, annotator_id: int, rng: random.Random | None = None
) -> Task | NoTask:
    rng = rng or random.Random()
    now = time.time()
    if now - store.last_sweep > min(SWEEP_EVERY_S, policy.task_timeout_s / 4):
        expire_abandoned(store, now)
    with store.write(durable=False) as conn:
        me = conn.execute(
            select(m.Annotator).where(m.Annotator.id == annotator_id).with_for_update()
        ).one()
        current = conn.execute(
            select(m.Assignment).where(
                m.Assignment.annotator_id == annotator_id, m.Assignment.status == m.OPEN
            )
        ).first()
        if current is not None:
            if current.expires_at > now:
                return _task(conn, current)
            _expire(conn, [current.id])
        round_id = _latest_round(conn)
        if round_id and me.calibrated_round < round_id:
            task = _calibration_task(conn, policy, me, round_id, now, rng)
            if task is not None:
                return task
        if not gate_open(conn):
            return NoTask("calibration_gate")
        since = me.label_count - me.labels_at_calibration
        if (
            policy.recalibrate_every
            and policy.calibration_size
            and since >= policy.recalibrate_every
        ):
            new_round = open_round(
                conn, policy, f"recalibration: {me.name} reached {since} labels", rng
            )
            if new_round and me.calibrated_round < new_round:
                task = _calibration_task(conn, policy, me, new_round, now, rng)
                if task is not None:
                    return task
        if rng.random() < policy.anchor_rate:
            anchor = _anchor(conn, annotator_id)
            if anchor is not None:
                return _assign(conn, policy, anchor, annotator_id, "main", now, rng)
        item = _take_main_item(conn, policy, annotator_id)
        if item is None:
            return NoTask("done")
        return _assign(conn, policy, item, annotator_id, "main", now, rng)


def _calibration_task(
    conn: Connection, policy: Policy, me: Any, round_id: int, now: float, rng: random.Random
) -> Task | None:
    """Their next item of the round (or an anchor); None when they have labeled them all."""
    if rng.random() < policy.anchor_rate:
        anchor = _anchor(conn, me.id)
        if anchor is not None:
            return _assign(conn, policy, anchor, me.id, "calibration", now, rng)
    unlabeled = (
        select(m.Item.id)
        .where(m.Item.round == round_id)
        .where(~exists().where(m.Label.item_id == m.Item.id, m.Label.annotator_id == me.id))
        .order_by(m.Item.id)
        .limit(1)
    )
    item_id = conn.execute(unlabeled).scalar()
    if item_id is None:  # finished (normally recorded when the last label came in)
        _finish_round(conn, policy, me.id, round_id)
        return None
    # An abandoned calibration task of theirs is reopened: everyone must label every item.
    mine = conn.execute(
        select(m.Assignment).where(
            m.Assignment.item_id == item_id, m.Assignment.annotator_id == me.id
        )
    ).first()
    if mine is not None:
        expires = now + policy.task_timeout_s
        conn.execute(
            update(m.Assignment)
            .where(m.Assignment.id == mine.id)
            .values(status=m.OPEN, expires_at=expires)
        )
        return _task(conn, mine, expires)
    return _assign(conn, policy, item_id, me.id, "calibration", now, rng)


def _anchor(conn: Connection, annotator_id: int) -> int | None:
    unseen = (
        select(m.Item.id)
        .where(m.Item.kind == m.ANCHOR)
        .where(
            ~exists().where(
                m.Assignment.item_id == m.Item.id, m.Assignment.annotator_id == annotator_id
            )
        )
        .order_by(func.random())
        .limit(1)
    )
    return conn.execute(unseen).scalar()


def _take_main_item(conn: Connection, policy: Policy, annotator_id: int) -> int | None:
    candidates = (
        select(m.Item.id)
        .where(m.Item.kind == m.MAIN, m.Item.taken < policy.overlap)
        .where(
            ~exists().where(
                m.Assignment.item_id == m.Item.id, m.Assignment.annotator_id == annotator_id
            )
        )
        .order_by(m.Item.taken.desc(), m.Item.id)
        .limit(8)
    )
    for _ in range(20):  # each miss means another server filled that slot in between
        ids = conn.execute(candidates).scalars().all()
        if not ids:
            return None
        for item_id in ids:
            took = conn.execute(
                update(m.Item)
                .where(m.Item.id == item_id, m.Item.taken < policy.overlap)
                .values(taken=m.Item.taken + 1)
            )
            if took.rowcount == 1:
                return item_id
    return None


def _assign(
    conn: Connection,
    policy: Policy,
    item_id: int,
    annotator_id: int,
    phase: str,
    now: float,
    rng: random.Random,
) -> Task:
    row = {
        "id": security.new_task_id(),
        "item_id": item_id,
        "annotator_id": annotator_id,
        "swap": rng.random() < 0.5,
        "phase": phase,
        "status": m.OPEN,
        "created_at": now,
        "expires_at": now + policy.task_timeout_s,
    }
    conn.execute(insert(m.Assignment).values(**row))
    item = conn.execute(
        select(m.Item.prompt, m.Item.response_a, m.Item.response_b).where(m.Item.id == item_id)
    ).one()
    a, b = (item.response_b, item.response_a) if row["swap"] else (item.response_a, item.response_b)
    return Task(row["id"], item.prompt, a, b, phase, row["expires_at"])


def _task(conn: Connection, assignment: Any, expires_at: float | None = None) -> Task:
    item = conn.execute(
        select(m.Item.prompt, m.Item.response_a, m.Item.response_b).where(
            m.Item.id == assignment.item_id
        )
    ).one()
    a, b = (item.response_a, item.response_b)
    if assignment.swap:
        a, b = b, a
    expires = assignment.expires_at if expires_at is None else expires_at
    return Task(assignment.id, item.prompt, a, b, assignment.phase, expires)


# --- timeouts -------------------------------------------------------------------------------


def expire_abandoned(store: Store, now: float | None = None) -> int:
    """Expire open tasks past their deadline; their main items' slots return to the pool."""
    now = time.time() if now is None else now
    store.last_sweep = now
    with store.write(durable=False) as conn:
        ids = (
            conn.execute(
                select(m.Assignment.id).where(
                    m.Assignment.status == m.OPEN, m.Assignment.expires_at < now
                )
            )
            .scalars()
            .all()
        )
        return _expire(conn, ids)


def _expire(conn: Connection, ids: list[str]) -> int:
    if not ids:
        return 0
    # Only rows still open are expired and counted: a concurrent sweep cannot free a slot twice.
    gone = (
        conn.execute(
            update(m.Assignment)
            .where(m.Assignment.id.in_(ids), m.Assignment.status == m.OPEN)
            .values(status=m.EXPIRED)
            .returning(m.Assignment.item_id)
        )
        .scalars()
        .all()
    )
    for item_id, n in Counter(gone).items():
        conn.execute(
            update(m.Item)
            .where(m.Item.id == item_id, m.Item.kind == m.MAIN)
            .values(taken=m.Item.taken - n)
        )
    return len(gone)


# --- labels ---------------------------------------------------------------------------------


def submit_label(store: Store, policy: Policy, annotator_id: int, req: LabelRequest) -> StoredLabel:
    """Store a label durably (committed and fsynced when this returns).

    The same `client_id` with the same content returns the stored label (`created=False`);
    with different content it is a `LabelConflict`."""
    check_choice(policy, req)
    for _ in range(3):
        try:
            return _submit(store, policy, annotator_id, req)
        except (IntegrityError, _Raced):
            # A concurrent replay of the same request won the race (PostgreSQL); the next
            # attempt finds its label and answers as a replay.
            continue
    raise LabelConflict("the label could not be stored; retry the request")


def check_choice(policy: Policy, req: LabelRequest) -> None:
    if req.choice not in policy.choices:
        raise InvalidLabel(
            f"choice {req.choice!r} is not allowed; this rubric allows {', '.join(policy.choices)}"
        )
    for name, value in (req.criteria or {}).items():
        if name not in policy.criteria:
            raise InvalidLabel(
                f"criterion {name!r} is not in the rubric ({', '.join(policy.criteria)})"
            )
        if value not in ("first", "second", "tie"):
            raise InvalidLabel(f"criterion {name!r}: choose first, second or tie, not {value!r}")


def _submit(store: Store, policy: Policy, annotator_id: int, req: LabelRequest) -> StoredLabel:
    now = time.time()
    with store.write(durable=True) as conn:
        previous = conn.execute(
            select(m.Label.id, m.Label.request_hash, m.Label.assignment_id, m.Label.choice).where(
                m.Label.annotator_id == annotator_id, m.Label.client_id == req.client_id
            )
        ).first()
        if previous is not None:
            if not security.same(previous.request_hash, req.digest()):
                raise LabelConflict(
                    f"client_id {req.client_id!r} was already used for another label"
                )
            return StoredLabel(previous.id, previous.assignment_id, previous.choice, created=False)
        task = conn.execute(
            select(m.Assignment, m.Item.kind, m.Item.round)
            .join(m.Item, m.Item.id == m.Assignment.item_id)
            .where(m.Assignment.id == req.task_id, m.Assignment.annotator_id == annotator_id)
        ).first()
        if task is None:
            raise TaskNotFound(req.task_id)
        if task.status == m.DONE:
            raise LabelConflict("this task already has a label")
        if task.status == m.EXPIRED and task.kind == m.MAIN:
            # Late but welcome, if nobody has taken the slot it freed in the meantime.
            took = conn.execute(
                update(m.Item)
                .where(m.Item.id == task.item_id, m.Item.taken < policy.overlap)
                .values(taken=m.Item.taken + 1)
            )
            if took.rowcount != 1:
                raise LabelConflict("this task timed out and its item went to other annotators")
        closed = conn.execute(
            update(m.Assignment)
            .where(m.Assignment.id == task.id, m.Assignment.status == task.status)
            .values(status=m.DONE)
        )
        if closed.rowcount != 1:  # a sweep expired it between our read and this write
            raise _Raced
        shown_first = "B" if task.swap else "A"
        label = req.choice if req.choice == "both_bad" else _relative(req.choice, task.swap)
        criteria = None
        if req.criteria:
            criteria = {k: _relative(v, task.swap) for k, v in req.criteria.items()}
        result = conn.execute(
            insert(m.Label)
            .values(
                assignment_id=task.id,
                item_id=task.item_id,
                annotator_id=annotator_id,
                choice=req.choice,
                label=label,
                shown_first=shown_first,
                criteria=criteria,
                rationale=req.rationale or None,
                client_id=req.client_id,
                request_hash=req.digest(),
                phase=task.phase,
                rubric_version=policy.rubric_version,
                created_at=now,
                seconds=max(0.0, now - task.created_at),
            )
            .returning(m.Label.id)
        )
        label_id = result.scalar_one()
        conn.execute(
            update(m.Item).where(m.Item.id == task.item_id).values(labels=m.Item.labels + 1)
        )
        conn.execute(
            update(m.Annotator)
            .where(m.Annotator.id == annotator_id)
            .values(label_count=m.Annotator.label_count + 1)
        )
        if task.kind == m.CALIBRATION:
            _finish_round(conn, policy, annotator_id, task.round)
        return StoredLabel(label_id, task.id, req.choice, created=True)


def _relative(choice: str, swap: bool) -> str:
    if choice == "tie":
        return "tie"
    first = choice == "first"
    return "A" if first != swap else "B"


# --- calibration rounds and the gate -------------------------------------------------------


def _latest_round(conn: Connection) -> int:
    return conn.execute(select(func.max(m.Round.id))).scalar() or 0


def gate_open(conn: Connection) -> bool:
    """Open when there is no round at all, or the latest evaluated (or overridden) round
    passed (or was overridden). A round waiting for its second annotator does not count."""
    rounds = conn.execute(
        select(m.Round.gate_passed, m.Round.override_reason).order_by(m.Round.id.desc())
    ).all()
    if not rounds:
        return True
    for passed, override in rounds:
        if override is not None:
            return True
        if passed is not None:
            return bool(passed)
    return False


def _finish_round(conn: Connection, policy: Policy, annotator_id: int, round_id: int) -> None:
    """When this annotator has labeled every item of the round: record it and re-evaluate
    the gate on everyone who has."""
    size = conn.execute(
        select(m.Round.size).where(m.Round.id == round_id).with_for_update()
    ).scalar_one()
    done = conn.execute(
        select(func.count())
        .select_from(m.Label)
        .join(m.Item, m.Item.id == m.Label.item_id)
        .where(m.Label.annotator_id == annotator_id, m.Item.round == round_id)
    ).scalar_one()
    if done < size:
        return
    conn.execute(
        update(m.Annotator)
        .where(m.Annotator.id == annotator_id, m.Annotator.calibrated_round < round_id)
        .values(calibrated_round=round_id, labels_at_calibration=m.Annotator.label_count)
    )
    evaluate_gate(conn, policy, round_id)


def evaluate_gate(conn: Connection, policy: Policy, round_id: int) -> None:
    from rlhfkit.agreement import Labels, calibration_gate

    rows = conn.execute(
        select(m.Label.item_id, m.Label.annotator_id, m.Label.label)
        .join(m.Item, m.Item.id == m.Label.item_id)
        .where(m.Item.round == round_id)
    ).all()
    size = conn.execute(select(m.Round.size).where(m.Round.id == round_id)).scalar_one()
    per_annotator = Counter(r.annotator_id for r in rows)
    finished = {a for a, n in per_annotator.items() if n >= size}
    rows = [r for r in rows if r.annotator_id in finished]
    values: dict[str, Any] = {"gate_annotators": len(finished), "evaluated_at": time.time()}
    if len(finished) >= 2:
        labels = Labels.from_records(
            [r.item_id for r in rows],
            [str(r.annotator_id) for r in rows],
            [r.label for r in rows],
            order=list(m.LABEL_VALUES),
        )
        gate = calibration_gate(labels, None, policy.agreement_threshold)
        values |= {"gate_value": gate.value, "gate_passed": gate.passed}
    conn.execute(update(m.Round).where(m.Round.id == round_id).values(**values))


def open_round(
    conn: Connection, policy: Policy, reason: str, rng: random.Random, actor: str = "scheduler"
) -> int | None:
    """Open a calibration round of up to `calibration_size` untouched main items; returns the
    round waiting for the team (an existing one that nobody has finished), or None when no
    item is left to calibrate on."""
    # One opener at a time, on every database: lock the store's `rounds` meta row.
    conn.execute(select(m.Meta.value).where(m.Meta.key == "schema_version").with_for_update())
    latest = conn.execute(select(m.Round).order_by(m.Round.id.desc()).limit(1)).first()
    if latest is not None and latest.gate_annotators == 0:
        return latest.id
    fresh = (
        conn.execute(
            select(m.Item.id).where(m.Item.kind == m.MAIN, m.Item.taken == 0).order_by(m.Item.id)
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
                update(m.Item)
                .where(and_(m.Item.id.in_(part), m.Item.kind == m.MAIN, m.Item.taken == 0))
                .values(kind=m.CALIBRATION, round=round_id)
                .returning(m.Item.id)
            ).all()
        )
    if size == 0:
        return None
    conn.execute(
        insert(m.Round).values(id=round_id, size=size, reason=reason, created_at=time.time())
    )
    record_event(conn, "round_opened", actor, round=round_id, size=size, reason=reason)
    return round_id


def override_gate(store: Store, reason: str, actor: str = "cli") -> int:
    """Open the main queue although the latest round did not pass; the reason is kept with
    the round and shown in status, exports and reports. Returns the round overridden."""
    from rlhfkit.errors import UserError

    if not reason.strip():
        raise UserError("an override needs a reason (it is recorded and shown in exports)")
    with store.write() as conn:
        round_id = _latest_round(conn)
        if not round_id:
            raise UserError("there is no calibration round to override (nothing imported yet)")
        conn.execute(
            update(m.Round)
            .where(m.Round.id == round_id)
            .values(override_reason=reason.strip(), override_by=actor, override_at=time.time())
        )
        record_event(conn, "gate_override", actor, round=round_id, reason=reason.strip())
    return round_id
