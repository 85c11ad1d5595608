"""The team: adding annotators (a token printed once, its hash stored), revoking and rotating
their tokens, and authenticating.

Revoking and rotating both replace the stored hash: rotating with the hash of a new token,
printed once; revoking with the hash of one nobody is ever shown. The old token then matches
no annotator, so it is refused on its next request, by this server and by any other
process on the store, and by an older rlhfkit too (the schema does not change). Who was
revoked, when and by whom is in the audit log (`events`), which `status` and the export's
manifest show; their labels stay.
"""

from __future__ import annotations

import re
import sqlite3
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import anyio
from sqlalchemy import Connection, bindparam, insert, or_, select, update
from sqlalchemy.dialects import sqlite as sqlite_dialect

from rlhfkit.annotate import models as m
from rlhfkit.annotate import security
from rlhfkit.annotate.prepared import Prepared
from rlhfkit.annotate.rounds import checked_reason, evaluate_gate, gate_state
from rlhfkit.annotate.rules import Policy
from rlhfkit.annotate.scheduling import release_open_tasks
from rlhfkit.annotate.security import verify
from rlhfkit.annotate.store import Store, record_event
from rlhfkit.errors import UserError

REVOKED, ROTATED, REMOVED = "token_revoked", "token_rotated", "annotator_removed"

NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}$")


@dataclass(frozen=True)
class Caller:
    """Who sent a request."""

    id: int
    name: str
    is_admin: bool
    token_hash: str


def add_annotator(store: Store, name: str, admin: bool = False, actor: str = "cli") -> str:
    """Create an annotator and return their login token. Show it to them once: only its hash
    is stored, so it cannot be recovered later."""
    if not NAME.match(name):
        raise UserError(
            f"annotator name {name!r}: use 1-64 letters, digits, '_', '.', '@' or '-', "
            "starting with a letter or digit"
        )
    token = security.new_token()
    with store.write() as conn:
        taken = conn.execute(select(m.Annotator.id).where(m.Annotator.name == name)).first()
        if taken:
            raise UserError(f"annotator {name!r} already exists")
        conn.execute(
            insert(m.Annotator).values(
                name=name,
                token_hash=security.hash_token(token),
                is_admin=admin,
                created_at=time.time(),
                label_count=0,
                calibrated_round=0,
                labels_at_calibration=0,
            )
        )
        record_event(conn, "annotator_added", actor, name=name, admin=admin)
    return token


class UnknownAnnotator(UserError):
    """No annotator has this name (404 on the admin API)."""


@dataclass(frozen=True)
class Revocation:
    name: str
    at: float
    released: int
    """Open tasks of theirs returned to the pool."""
    labels: int
    """Their labels, which stay."""


def revoke_annotator(
    store: Store, name: str, actor: str = "cli", by: Caller | None = None
) -> Revocation:
    """Refuse this annotator's token from the next request on (page sessions too); their
    open tasks return to the pool, their labels stay. Revoking twice is an error. `by`: the
    admin asking, whose own token is checked in the same transaction (`TokenRefused`)."""

    def unit(conn: Connection) -> Revocation:
        me = _lock(conn, name, by)
        _refuse_if_revoked(conn, name, f"{name}'s token was already revoked")
        _replace_hash(conn, me.id, security.new_token())  # a token nobody is ever shown
        released = release_open_tasks(conn, me.id)
        now = time.time()
        record_event(conn, REVOKED, actor, name=name, released_tasks=released)
        return Revocation(name, now, released, me.label_count)

    return store.run(unit)


def rotate_token(store: Store, name: str, actor: str = "cli", by: Caller | None = None) -> str:
    """Give this annotator a new token and return it (show it once: only its hash is
    stored); the old one is refused from the next request on. Their tasks and labels stay.
    `by`: as for `revoke_annotator`."""
    token = security.new_token()

    def unit(conn: Connection) -> None:
        me = _lock(conn, name, by)
        _refuse_if_revoked(
            conn, name, f"{name}'s token was revoked: a revoked annotator gets no new token"
        )
        _replace_hash(conn, me.id, token)
        record_event(conn, ROTATED, actor, name=name)

    store.run(unit)
    return token


@dataclass(frozen=True)
class Removal:
    name: str
    released: int
    """Open tasks of theirs returned to the pool."""
    round: int
    """The latest calibration round when they were removed (0: none)."""
    gate_before: float | None
    gate_after: float | None
    """The deciding round's gate number before and after (None: not evaluated)."""
    main_queue_open: bool


def remove_annotator(
    store: Store,
    policy: Policy,
    name: str,
    reason: str,
    actor: str = "cli",
    by: Caller | None = None,
) -> Removal:
    """Take an annotator off the team's work: they get no more tasks (204 `removed`), their
    open tasks return to the pool, and their labels leave every round's gate, which is
    evaluated again (if it now passes, the main queue opens for the others) and the export.
    Nothing is deleted; who, why and when are recorded. Removing twice is an error. `by`:
    as for `revoke_annotator`."""
    reason = checked_reason(reason, "removal")

    def unit(conn: Connection) -> Removal:
        me = _lock(conn, name, by)
        if me.removed_at is not None:
            raise UserError(f"{name} was already removed ({utc(me.removed_at)}); nothing changed")
        before = _deciding_value(conn)
        conn.execute(
            update(m.Annotator)
            .where(m.Annotator.id == me.id)
            .values(removed_at=time.time(), removed_reason=reason, removed_by=actor)
        )
        released = release_open_tasks(conn, me.id)
        # The rounds' rows, locked as a finishing label locks its round's: on PostgreSQL a
        # gate evaluated at the same time waits for this one and then sees the removal.
        every_round = select(m.Round.id).order_by(m.Round.id).with_for_update()
        for round_id in conn.execute(every_round).scalars().all():
            evaluate_gate(conn, policy, round_id)
        state = gate_state(conn)
        after = _deciding_value(conn)
        record_event(
            conn,
            REMOVED,
            actor,
            name=name,
            reason=reason,
            round=state.latest_round,
            released_tasks=released,
            gate_before=before,
            gate_after=after,
        )
        return Removal(name, released, state.latest_round, before, after, state.main_queue_open)

    return store.run(unit)


def _deciding_value(conn: Connection) -> float | None:
    """The gate number of the round that decides whether the main queue is open."""
    round_id = gate_state(conn).deciding_round
    if not round_id:
        return None
    value = conn.execute(select(m.Round.gate_value).where(m.Round.id == round_id)).scalar()
    return None if value is None or value != value else float(value)


def token_events(conn: Connection) -> list[dict[str, Any]]:
    """Every revocation and rotation, oldest first: annotator, event, at (and in UTC), by."""
    rows = conn.execute(
        select(m.Event.at, m.Event.kind, m.Event.actor, m.Event.detail)
        .where(m.Event.kind.in_([REVOKED, ROTATED]))
        .order_by(m.Event.id)
    ).all()
    return [
        {
            "annotator": r.detail["name"],
            "event": "revoked" if r.kind == REVOKED else "rotated",
            "at": r.at,
            "at_utc": utc(r.at),
            "by": r.actor,
        }
        for r in rows
    ]


def utc(at: float) -> str:
    return datetime.fromtimestamp(at, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _lock(conn: Connection, name: str, by: Caller | None) -> Any:
    """Lock the annotator's row (and the asking admin's, with `by`: both in one statement,
    by id, so that two admins acting on each other cannot deadlock), check the admin's
    token, return the annotator's row. Annotator rows are locked before tasks and items,
    the order every unit keeps (see `store`)."""
    wanted = m.Annotator.name == name
    rows = conn.execute(
        select(
            m.Annotator.id,
            m.Annotator.name,
            m.Annotator.label_count,
            m.Annotator.token_hash,
            m.Annotator.removed_at,
        )
        .where(or_(wanted, m.Annotator.id == by.id) if by else wanted)
        .order_by(m.Annotator.id)
        .with_for_update()
    ).all()
    if by is not None:
        admin = next((r for r in rows if r.id == by.id), None)
        verify(admin.token_hash if admin else "", by.token_hash)
    me = next((r for r in rows if r.name == name), None)
    if me is None:
        raise UnknownAnnotator(
            f"no annotator named {name!r}", hint="`rlhfkit annotate status` lists the team"
        )
    return me


def _refuse_if_revoked(conn: Connection, name: str, message: str) -> None:
    for e in reversed(token_events(conn)):
        if e["annotator"] == name and e["event"] == "revoked":
            raise UserError(
                f"{message} ({e['at_utc']}, by {e['by']}); nothing changed",
                hint="someone returning can be added again under a new name "
                "(`rlhfkit annotate add-annotator NAME`)",
            )


def _replace_hash(conn: Connection, annotator_id: int, token: str) -> None:
    conn.execute(
        update(m.Annotator)
        .where(m.Annotator.id == annotator_id)
        .values(token_hash=security.hash_token(token))
    )


LOOKUP = Prepared(
    select(m.Annotator.id, m.Annotator.name, m.Annotator.is_admin, m.Annotator.token_hash).where(
        m.Annotator.token_hash == bindparam("h")
    )
)
# The same query for the SQLite connections of `Authenticator`, which are outside SQLAlchemy.
LOOKUP_SQL = str(LOOKUP.statement.compile(dialect=sqlite_dialect.dialect()))
MAX_TOKEN = 200
"""Longer is no token of ours (ours are 47 characters): refused without hashing."""


class Authenticator:
    """Token -> Caller. A token revoked or rotated by the CLI or another server process must
    be refused on its very next request, which no cache in this process can promise alone:
    `check` looks the token up on every request (one indexed read, on a worker thread);
    `claimed` answers from this process's memory for the routes that verify the token in
    their own transaction anyway (next task, /api/me and a label read or lock the
    annotator's row, see `security.verify`), which spares the busiest requests a read and a
    thread hop. A check outside the transaction that acts would not do for a write: a
    revoke could commit between the two.

    On SQLite each thread reads on a connection of its own, outside the pool (~7 µs, where a
    pooled one cost ~35 µs); `close` closes them all. PostgreSQL reads on a pooled
    connection."""

    def __init__(self, store: Store):
        self.store = store
        self._local = threading.local()
        self._claims: dict[str, Caller] = {}
        self._connections: list[sqlite3.Connection] = []
        self._connections_lock = threading.Lock()

    def __call__(self, token: str | None) -> Caller | None:
        digest = _digest(token)
        if digest is None:
            return None
        row = self._lookup(digest)
        # The lookup is by an index on the hash; the comparison that decides is constant-time.
        if row is None or not security.same(row[3], digest):
            return None
        return Caller(row[0], row[1], bool(row[2]), row[3])

    async def check(self, token: str | None) -> Caller | None:
        """`self(token)` on a worker thread: the event loop must not wait for it (the driver
        gives up the GIL for the read, and taking it back on a busy server takes longer than
        the read: inline, the load benchmark spent 40% of its time in 35 µs reads)."""
        caller = await anyio.to_thread.run_sync(self, token)
        if caller is not None:
            if len(self._claims) > 10_000:
                self._claims.clear()
            self._claims[caller.token_hash] = caller
        return caller

    async def claimed(self, token: str | None) -> Caller | None:
        """Who this token says it is, from memory if it was seen before: only for a route
        that then calls `security.verify` in its own transaction."""
        digest = _digest(token)
        if digest is None:
            return None
        caller = self._claims.get(digest)
        return caller if caller is not None else await self.check(token)

    def forget(self, caller: Caller) -> None:
        self._claims.pop(caller.token_hash, None)

    def close(self) -> None:
        """Close the per-thread SQLite connections (at shutdown, after the last request)."""
        with self._connections_lock:
            for conn in self._connections:
                conn.close()
            self._connections.clear()

    def _lookup(self, digest: str) -> Any:
        if not self.store.is_sqlite:
            with self.store.engine.connect() as conn:
                return LOOKUP(conn, {"h": digest}).first()
        conn = self._local.__dict__.get("conn")
        if conn is None:
            path = Path(self.store.engine.url.database).resolve()
            # autocommit; closed by `close`, from another thread
            conn = sqlite3.connect(path, timeout=30, isolation_level=None, check_same_thread=False)
            conn.execute("PRAGMA query_only=ON")
            self._local.conn = conn
            with self._connections_lock:
                self._connections.append(conn)
        return conn.execute(LOOKUP_SQL, (digest,)).fetchone()


def _digest(token: str | None) -> str | None:
    if not token or len(token) > MAX_TOKEN:
        return None
    return security.hash_token(token)
