"""Who labels what next: overlap, calibration rounds, the gate, anchors, timeouts.

The rules, in the order `next_task` applies them to one annotator:

0. An annotator removed from the round (`rlhfkit annotate remove`) gets nothing.
1. An open task of theirs that has not timed out is handed out again (a reload shows the same
   pair). Tasks past `task_timeout_s` expire; a main item's slot returns to the pool.
2. Calibration: while they have not finished the latest calibration round, they get its
   items (every annotator labels every item of a round; see `rounds`). A calibration task
   they abandoned, anchor or not, comes back first. Nothing here compares times written by
   different server processes (their clocks may differ).
3. The gate: the main queue is open only while the latest evaluated round passed the
   agreement threshold, or an admin overrode it.
4. Recalibration: after `recalibrate_every` labels since their last round, a new round is
   opened (fresh, unlabeled items) for the whole team, unless one is already waiting.
5. Anchors, items with a known answer, replace a task at `anchor_rate` in both phases, but
   only while a real item is left for them: when the round's items or the main queue are
   used up, so are the anchors. Done is done.
6. Main items: those with fewer than `overlap` slots taken, nearly finished ones first. A
   slot is taken with a conditional update (``taken < overlap``), which PostgreSQL re-checks
   after a concurrent writer commits: an item never gets more than `overlap` labels.

Anchors stay secret: nothing an annotator sees may depend on which items are anchors. An
anchor task looks like any other, is abandoned and handed back like any other of its phase,
and the draw takes as many random numbers whatever it finds, so that two stores differing
only in whether one item is an anchor show a seeded annotator the same tasks in the same
order (tests/annotate/test_anchor_secrecy.py). `status.annotator_progress` counts tasks
alike for the same reason.

Nobody sees an item twice (a unique constraint), and the display order is drawn per task and
stored (position-bias statistics need it). Labels are stored by `labeling`.

Statements are built once, at import: on the hot path SQLAlchemy then only binds values.
"""

from __future__ import annotations

import hashlib
import random
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, bindparam, exists, insert, select, update

from rlhfkit.annotate import models as m
from rlhfkit.annotate import security
from rlhfkit.annotate.prepared import Prepared
from rlhfkit.annotate.rounds import finish_round, gate_state, open_round
from rlhfkit.annotate.rules import Policy
from rlhfkit.annotate.security import verify
from rlhfkit.annotate.store import Store

SWEEP_EVERY_S = 5.0
tasks, items, labels, people = (t.__table__ for t in (m.Assignment, m.Item, m.Label, m.Annotator))


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
    """'calibration_gate' (waiting for the gate), 'done' (no work left for this annotator),
    'removed' (taken off the team's work by `rlhfkit annotate remove`)."""


def next_task(
    store: Store,
    policy: Policy,
    annotator_id: int,
    rng: random.Random | None = None,
    token_hash: str | None = None,
) -> Task | NoTask:
    """The annotator's next task (see the module docstring for the rules). With
    `token_hash`, `security.TokenRefused` if the annotator's token is no longer that one."""
    return store.run(_unit(store, policy, annotator_id, rng, token_hash), durable=False)


async def next_task_async(
    store: Store,
    policy: Policy,
    annotator_id: int,
    rng: random.Random | None = None,
    token_hash: str | None = None,
) -> Task | NoTask:
    """`next_task` for the event loop."""
    unit = _unit(store, policy, annotator_id, rng, token_hash)
    return await store.arun(unit, durable=False)


def _unit(
    store: Store,
    policy: Policy,
    annotator_id: int,
    rng: random.Random | None,
    token_hash: str | None,
) -> Callable[[Connection], Task | NoTask]:
    rng = rng or random.Random()

    def unit(conn: Connection) -> Task | NoTask:
        now = time.time()
        sweep = now - store.last_sweep > min(SWEEP_EVERY_S, policy.task_timeout_s / 4)
        if sweep:
            store.last_sweep = now
        return _next_task(conn, policy, annotator_id, rng, now, token_hash, sweep)

    return unit


ME = (
    select(
        people.c.id,
        people.c.name,
        people.c.label_count,
        people.c.labels_at_calibration,
        people.c.calibrated_round,
        people.c.token_hash,
        people.c.removed_at,
    )
    .where(people.c.id == bindparam("a"))
    .with_for_update()  # PostgreSQL: one next-task at a time per annotator (two open tabs)
)
OPEN_TASK = select(
    tasks.c.id, tasks.c.item_id, tasks.c.swap, tasks.c.phase, tasks.c.expires_at
).where(tasks.c.annotator_id == bindparam("a"), tasks.c.status == m.OPEN)
TEXT = select(items.c.prompt, items.c.response_a, items.c.response_b).where(
    items.c.id == bindparam("i")
)
NOT_SEEN = ~exists().where(tasks.c.item_id == items.c.id, tasks.c.annotator_id == bindparam("a"))
UNSEEN_ANCHORS = select(items.c.id, items.c.external_id).where(items.c.kind == m.ANCHOR, NOT_SEEN)
# A calibration task of theirs that timed out before they labeled it (a label closes a task,
# so an expired one has none), from this round or one they did not finish: a task carries no
# round, and its time, from whichever process handed it out, cannot be compared with the
# round's (see `_calibration_task`).
ABANDONED = (
    select(tasks.c.id, tasks.c.item_id, tasks.c.swap)
    .where(
        tasks.c.annotator_id == bindparam("a"),
        tasks.c.status == m.EXPIRED,
        tasks.c.phase == "calibration",
    )
    .order_by(tasks.c.created_at, tasks.c.id)
    .limit(1)
)
NEXT_IN_ROUND = (
    select(items.c.id)
    .where(
        items.c.round == bindparam("r"),
        ~exists().where(labels.c.item_id == items.c.id, labels.c.annotator_id == bindparam("a")),
    )
    .order_by(items.c.id)
    .limit(1)
)
MY_TASK_FOR = select(tasks.c.id, tasks.c.item_id, tasks.c.swap).where(
    tasks.c.item_id == bindparam("i"), tasks.c.annotator_id == bindparam("a")
)
REOPEN = (  # always as a calibration task (see `_calibration_task`)
    update(tasks)
    .where(tasks.c.id == bindparam("t"))
    .values(status=m.OPEN, expires_at=bindparam("e"), phase="calibration")
)
CANDIDATES = (
    select(items.c.id)
    .where(items.c.kind == m.MAIN, items.c.taken < bindparam("k"), NOT_SEEN)
    .order_by(items.c.taken.desc(), items.c.id)
)
# PostgreSQL: lock one candidate, skipping rows that other requests hold, so 32 concurrent
# requests spread over 32 items instead of queueing on the first. SQLite has one writer at a
# time and renders no lock clause.
CANDIDATE_UNLOCKED = CANDIDATES.limit(1).with_for_update(skip_locked=True, of=items)
SOME_CANDIDATES = CANDIDATES.limit(8)
MAIN_LEFT = CANDIDATES.limit(1)
TAKE = (
    update(items)
    .where(items.c.id == bindparam("i"), items.c.taken < bindparam("k"))
    .values(taken=items.c.taken + 1)
)
ASSIGN = insert(tasks)
EXPIRED = select(tasks.c.id).where(tasks.c.status == m.OPEN, tasks.c.expires_at < bindparam("now"))
EXPIRE = (
    update(tasks)
    .where(tasks.c.id.in_(bindparam("ids", expanding=True)), tasks.c.status == m.OPEN)
    .values(status=m.EXPIRED)
    .returning(tasks.c.item_id)
)
RELEASE = (
    update(items)
    .where(items.c.id == bindparam("i"), items.c.kind == m.MAIN)
    .values(taken=items.c.taken - bindparam("n"))
)
ME, OPEN_TASK, TEXT, UNSEEN_ANCHORS, NEXT_IN_ROUND, MY_TASK_FOR, REOPEN = map(
    Prepared, (ME, OPEN_TASK, TEXT, UNSEEN_ANCHORS, NEXT_IN_ROUND, MY_TASK_FOR, REOPEN)
)
ABANDONED, MAIN_LEFT = map(Prepared, (ABANDONED, MAIN_LEFT))
CANDIDATE_UNLOCKED, SOME_CANDIDATES, TAKE, EXPIRED, RELEASE = map(
    Prepared, (CANDIDATE_UNLOCKED, SOME_CANDIDATES, TAKE, EXPIRED, RELEASE)
)
ASSIGN = Prepared(
    ASSIGN,
    ["id", "item_id", "annotator_id", "swap", "phase", "status", "created_at", "expires_at"],
)


def _next_task(
    conn: Connection,
    policy: Policy,
    annotator_id: int,
    rng: random.Random,
    now: float,
    token_hash: str | None,
    sweep: bool = False,
) -> Task | NoTask:
    me = ME(conn, {"a": annotator_id}).one()
    verify(me.token_hash, token_hash)  # revoked or rotated since this process last looked
    if me.removed_at is not None:  # `annotate remove`: their open tasks went back then
        return NoTask("removed")
    if sweep:  # after the annotator's row: rows are locked annotator, task, item (`store`)
        _sweep(conn, now)
    current = OPEN_TASK(conn, {"a": annotator_id}).first()
    if current is not None:
        if current.expires_at > now:
            return _task(
                conn, current.id, current.item_id, current.swap, current.phase, current.expires_at
            )
        _expire(conn, [current.id])
    gate = gate_state(conn)
    if gate.latest_round and me.calibrated_round < gate.latest_round:
        task = _calibration_task(conn, policy, me, gate.latest_round, now, rng)
        if task is not None:
            return task
    if not gate.main_queue_open:
        return NoTask("calibration_gate")
    since = me.label_count - me.labels_at_calibration
    if policy.recalibrate_every and policy.calibration_size and since >= policy.recalibrate_every:
        reason = f"recalibration: {me.name} reached {since} labels"
        new_round = open_round(conn, policy, reason, rng, now=now)
        if new_round and me.calibrated_round < new_round:
            task = _calibration_task(conn, policy, me, new_round, now, rng)
            if task is not None:
                return task
    params = {"a": annotator_id, "k": policy.overlap}
    if _anchor_slot(policy, rng):
        # Only while a main item is left: an anchor after the queue's end would be the one
        # task that could only be an anchor.
        if MAIN_LEFT(conn, params).first() is None:
            return NoTask("done")
        anchor = _unseen_anchor(conn, annotator_id)
        if anchor is not None:
            return _assign(conn, policy, anchor, annotator_id, "main", now, rng)
    item = _take_main_item(conn, policy, annotator_id)
    if item is None:
        return NoTask("done")
    return _assign(conn, policy, item, annotator_id, "main", now, rng)


def _calibration_task(
    conn: Connection, policy: Policy, me: Any, round_id: int, now: float, rng: random.Random
) -> Task | None:
    """Their next task of the round (an item or an anchor); None when they have labeled all
    its items."""
    # An abandoned calibration task comes back first, anchor or not: everyone must label
    # every item, and an anchor that never came back would be told apart by that. Any such
    # task, whatever its time: comparing it with the round's would compare two processes'
    # clocks, and a skewed one would leave out the anchor while the real pair came back
    # below. (One from a round they did not finish, a newer round having opened, comes back
    # as well, anchor or not: its label is welcome.)
    mine = ABANDONED(conn, {"a": me.id}).first()
    if mine is not None:
        return _reopen(conn, policy, mine, now)
    item_id = NEXT_IN_ROUND(conn, {"r": round_id, "a": me.id}).scalar()
    if item_id is None:  # finished (normally recorded when the last label came in)
        finish_round(conn, policy, me.id, round_id)
        return None
    if _anchor_slot(policy, rng):
        anchor = _unseen_anchor(conn, me.id)
        if anchor is not None:
            return _assign(conn, policy, anchor, me.id, "calibration", now, rng)
    # A task of theirs for this item from before the round (a main task that expired, then
    # the item was drawn for the round) is reopened: one task per item and annotator. It is
    # reopened as a calibration task, which it now is: shown as such, its label counts for
    # the round, and a late label is welcome as on any other calibration task.
    mine = MY_TASK_FOR(conn, {"i": item_id, "a": me.id}).first()
    if mine is not None:
        return _reopen(conn, policy, mine, now)
    return _assign(conn, policy, item_id, me.id, "calibration", now, rng)


def _reopen(conn: Connection, policy: Policy, task: Any, now: float) -> Task:
    """Hand out a calibration task of theirs again (abandoned, or a main task from before its
    item was drawn for the round)."""
    expires = now + policy.task_timeout_s
    REOPEN(conn, {"t": task.id, "e": expires})
    return _task(conn, task.id, task.item_id, task.swap, "calibration", expires)


def _anchor_slot(policy: Policy, rng: random.Random) -> bool:
    """Whether this task is an anchor's, if one is left: drawn before looking at what is
    left, so every task takes the same random numbers whatever it turns out to be."""
    return bool(policy.anchor_rate) and rng.random() < policy.anchor_rate


def _unseen_anchor(conn: Connection, annotator_id: int) -> int | None:
    """The next anchor this annotator has not seen, in an order of their own: by a hash of
    their id and the anchor's id. The order does not depend on which other items are
    anchors or on how many there are (a draw from the list would), nor on SQL's random()."""
    rows = UNSEEN_ANCHORS(conn, {"a": annotator_id}).all()
    if not rows:
        return None
    return min(rows, key=lambda r: _anchor_key(annotator_id, r.external_id)).id


def _anchor_key(annotator_id: int, external_id: str) -> bytes:
    return hashlib.sha256(f"{annotator_id}\0{external_id}".encode()).digest()


def _take_main_item(conn: Connection, policy: Policy, annotator_id: int) -> int | None:
    params = {"a": annotator_id, "k": policy.overlap}
    item_id = CANDIDATE_UNLOCKED(conn, params).scalar()
    if item_id is not None and TAKE(conn, {"i": item_id, "k": policy.overlap}).rowcount:
        return item_id
    for _ in range(20):  # each miss means another server filled that slot in between
        ids = SOME_CANDIDATES(conn, params).scalars().all()
        if not ids:
            return None
        for item_id in ids:
            if TAKE(conn, {"i": item_id, "k": policy.overlap}).rowcount == 1:
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
    ASSIGN(conn, row)
    return _task(conn, row["id"], item_id, row["swap"], phase, row["expires_at"])


def _task(
    conn: Connection, task_id: str, item_id: int, swap: bool, phase: str, expires_at: float
) -> Task:
    item = TEXT(conn, {"i": item_id}).one()
    a, b = (item.response_b, item.response_a) if swap else (item.response_a, item.response_b)
    return Task(task_id, item.prompt, a, b, phase, expires_at)


# --- timeouts -------------------------------------------------------------------------------


def expire_abandoned(store: Store, now: float | None = None) -> int:
    """Expire open tasks past their deadline; their main items' slots return to the pool."""
    now = time.time() if now is None else now
    store.last_sweep = now
    return store.run(lambda conn: _sweep(conn, now), durable=False)


def release_open_tasks(conn: Connection, annotator_id: int) -> int:
    """Expire every open task of this annotator now (their token was revoked): main items'
    slots return to the pool. Returns how many were released."""
    open_ids = conn.execute(
        select(tasks.c.id).where(tasks.c.annotator_id == annotator_id, tasks.c.status == m.OPEN)
    )
    return _expire(conn, open_ids.scalars().all())


def _sweep(conn: Connection, now: float) -> int:
    return _expire(conn, EXPIRED(conn, {"now": now}).scalars().all())


def _expire(conn: Connection, ids: list[str]) -> int:
    if not ids:
        return 0
    # Only rows still open are expired and counted: a concurrent sweep cannot free a slot twice.
    gone = conn.execute(EXPIRE, {"ids": list(ids)}).scalars().all()
    for item_id, n in Counter(gone).items():
        RELEASE(conn, {"i": item_id, "n": n})
    return len(gone)
