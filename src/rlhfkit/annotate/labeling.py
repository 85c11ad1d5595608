"""Storing labels: durably, exactly once, only on the caller's own tasks.

- The same `client_id` with the same content is a replay: the stored label comes back and
  nothing is written (`created=False`, HTTP 200). The same `client_id` with different
  content is a conflict (409). A unique constraint on (annotator, client_id) makes this
  hold across concurrent requests and crashes, not only in this code.
- Another annotator's task, or an unknown one, is `TaskNotFound` (404): the two look the same.
- A main-phase task that timed out takes no label (409), whatever its pair: its slot went
  back to the pool, and accepting a late label only where the slot is still free would
  answer an anchor (which has no slot) differently from a real pair, telling the annotator
  which it was. A calibration-phase task is reopened on the next request, so a late label
  on one is welcome, anchor or not.
- The caller's token is checked in the label's own transaction, on the annotator's row,
  locked first (`security.verify`): once a revoke or rotation has committed, no label with
  the old token is stored, not even a replay's answer (401).
- The label is stored relative to the stored pair (A, B, tie, both_bad) with the display
  order (`shown_first`), so position bias can be measured.

Statements are built once, at import: on the hot path SQLAlchemy then only binds values.
"""

from __future__ import annotations

import contextlib
import hashlib
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from sqlalchemy import Connection, bindparam, insert, select, update
from sqlalchemy.exc import IntegrityError

from rlhfkit import strict_json
from rlhfkit.annotate import models as m
from rlhfkit.annotate import security
from rlhfkit.annotate.prepared import Prepared
from rlhfkit.annotate.rounds import finish_round
from rlhfkit.annotate.rules import Policy
from rlhfkit.annotate.store import Store

tasks, items, labels, people = (t.__table__ for t in (m.Assignment, m.Item, m.Label, m.Annotator))


@dataclass(frozen=True)
class LabelRequest:
    task_id: str
    choice: str
    """first, second, tie or both_bad, as the annotator saw the pair."""
    client_id: str
    criteria: dict[str, str] | None = None
    rationale: str | None = None

    def digest(self) -> str:
        body = [self.task_id, self.choice, self.criteria or {}, self.rationale or ""]
        return hashlib.sha256(strict_json.dumps(body, sort_keys=True).encode()).hexdigest()


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


RACES = (IntegrityError, _Raced)
"""On PostgreSQL, a concurrent replay of the same request won the race, or a sweep expired
the task under us: the unit runs again (`Store.run`), and finds the label and answers as a
replay, or the task as it now is."""


def submit_label(
    store: Store,
    policy: Policy,
    annotator_id: int,
    req: LabelRequest,
    token_hash: str | None = None,
) -> StoredLabel:
    """Store a label; when this returns it is committed (fsynced on SQLite). With
    `token_hash`, `security.TokenRefused` if the annotator's token is no longer that one."""
    check_choice(policy, req)
    with _gave_up():
        return store.run(_unit(policy, annotator_id, req, token_hash), retry=RACES)


async def submit_label_async(
    store: Store,
    policy: Policy,
    annotator_id: int,
    req: LabelRequest,
    token_hash: str | None = None,
) -> StoredLabel:
    """`submit_label` for the event loop."""
    check_choice(policy, req)
    with _gave_up():
        return await store.arun(_unit(policy, annotator_id, req, token_hash), retry=RACES)


@contextlib.contextmanager
def _gave_up() -> Iterator[None]:
    """Races lost on every attempt `Store.run` made: a 409 the client may retry."""
    try:
        yield
    except RACES:
        raise LabelConflict("the label could not be stored; retry the request") from None


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


# The annotator's row, locked first: a revoke (or rotation) that commits before this unit
# gets the lock is seen, and one that comes after waits for the label. Locking the
# annotator before the task and the item is also the order a revoke takes them in.
ME = select(people.c.token_hash).where(people.c.id == bindparam("a")).with_for_update()
PREVIOUS = select(
    labels.c.id, labels.c.request_hash, labels.c.assignment_id, labels.c.choice
).where(labels.c.annotator_id == bindparam("a"), labels.c.client_id == bindparam("c"))
TASK = (
    select(
        tasks.c.id,
        tasks.c.item_id,
        tasks.c.swap,
        tasks.c.phase,
        tasks.c.status,
        tasks.c.created_at,
        items.c.kind,
        items.c.round,
    )
    .select_from(tasks.join(items, items.c.id == tasks.c.item_id))
    .where(tasks.c.id == bindparam("t"), tasks.c.annotator_id == bindparam("a"))
)
CLOSE = (
    update(tasks)
    .where(tasks.c.id == bindparam("t"), tasks.c.status == bindparam("was"))
    .values(status=m.DONE)
)
INSERT = insert(labels).returning(labels.c.id)
LABEL_COLUMNS = [
    "assignment_id", "item_id", "annotator_id", "choice", "label", "shown_first", "criteria",
    "rationale", "client_id", "request_hash", "phase", "rubric_version", "created_at", "seconds",
]  # fmt: skip
COUNT_ITEM = update(items).where(items.c.id == bindparam("i")).values(labels=items.c.labels + 1)
COUNT_ANNOTATOR = (
    update(people).where(people.c.id == bindparam("a")).values(label_count=people.c.label_count + 1)
)
ME, PREVIOUS, TASK, CLOSE, COUNT_ITEM, COUNT_ANNOTATOR = map(
    Prepared, (ME, PREVIOUS, TASK, CLOSE, COUNT_ITEM, COUNT_ANNOTATOR)
)
INSERT = Prepared(INSERT, LABEL_COLUMNS)


def _unit(
    policy: Policy, annotator_id: int, req: LabelRequest, token_hash: str | None
) -> Callable[[Connection], StoredLabel]:
    return lambda conn: _submit(conn, policy, annotator_id, req, token_hash)


def _submit(
    conn: Connection,
    policy: Policy,
    annotator_id: int,
    req: LabelRequest,
    token_hash: str | None,
) -> StoredLabel:
    security.verify(ME(conn, {"a": annotator_id}).scalar_one(), token_hash)
    now = time.time()
    digest = req.digest()
    replay = _replay(conn, annotator_id, req, digest)
    if replay is not None:
        return replay
    task = TASK(conn, {"t": req.task_id, "a": annotator_id}).first()
    if task is None:
        raise TaskNotFound(req.task_id)
    if task.status == m.DONE:
        return _replay_or_conflict(conn, annotator_id, req, digest, "this task already has a label")
    # A timed-out main-phase task takes no label, anchor or not (see the module docstring).
    if task.status == m.EXPIRED and task.phase == "main":
        why = "this task timed out and went back to the pool; label the next one"
        return _replay_or_conflict(conn, annotator_id, req, digest, why)
    if CLOSE(conn, {"t": task.id, "was": task.status}).rowcount != 1:
        raise _Raced  # a sweep expired it between our read and this write
    criteria = None
    if req.criteria:
        criteria = {k: _relative(v, task.swap) for k, v in req.criteria.items()}
    label_id = INSERT(
        conn,
        {
            "assignment_id": task.id,
            "item_id": task.item_id,
            "annotator_id": annotator_id,
            "choice": req.choice,
            "label": req.choice if req.choice == "both_bad" else _relative(req.choice, task.swap),
            "shown_first": "B" if task.swap else "A",
            "criteria": criteria,
            "rationale": req.rationale or None,
            "client_id": req.client_id,
            "request_hash": digest,
            "phase": task.phase,
            "rubric_version": policy.rubric_version,
            "created_at": now,
            "seconds": max(0.0, now - task.created_at),
        },
    ).scalar_one()
    COUNT_ITEM(conn, {"i": task.item_id})
    COUNT_ANNOTATOR(conn, {"a": annotator_id})
    if task.kind in (m.CALIBRATION, m.RECHECK):  # a pair of a round
        finish_round(conn, policy, annotator_id, task.round)
    return StoredLabel(label_id, task.id, req.choice, created=True)


def _replay(
    conn: Connection, annotator_id: int, req: LabelRequest, digest: str
) -> StoredLabel | None:
    """The stored label if this request was stored before (a replay), else None; a
    conflict if its client id was used for other content."""
    previous = PREVIOUS(conn, {"a": annotator_id, "c": req.client_id}).first()
    if previous is None:
        return None
    if not security.same(previous.request_hash, digest):
        raise LabelConflict(f"client_id {req.client_id!r} was already used for another label")
    return StoredLabel(previous.id, previous.assignment_id, previous.choice, created=False)


def _replay_or_conflict(
    conn: Connection, annotator_id: int, req: LabelRequest, digest: str, why: str
) -> StoredLabel:
    """The task cannot take this label: a conflict, unless a copy of this very request
    took it. On PostgreSQL (READ COMMITTED: each statement sees what was committed before
    it began) that copy may have committed after our first look for it and before we read
    the task, so look again; nothing has been written in this transaction yet."""
    replay = _replay(conn, annotator_id, req, digest)
    if replay is None:
        raise LabelConflict(why)
    return replay


def _relative(choice: str, swap: bool) -> str:
    """A choice as displayed (first / second / tie) -> relative to the stored pair."""
    if choice == "tie":
        return "tie"
    return "A" if (choice == "first") != swap else "B"
