"""The team: adding annotators (a token printed once, its hash stored) and authenticating."""

from __future__ import annotations

import re
import threading
import time
from dataclasses import dataclass

from sqlalchemy import insert, select

from rlhfkit.annotate import models as m
from rlhfkit.annotate import security
from rlhfkit.annotate.store import Store, record_event
from rlhfkit.errors import UserError

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


class Authenticator:
    """Token -> Caller, with a short-lived cache: a cycle of next-task and label would
    otherwise spend a database round trip on each request just to learn who is asking."""

    def __init__(self, store: Store, ttl_s: float = 5.0):
        self.store = store
        self.ttl_s = ttl_s
        self._cache: dict[str, tuple[float, Caller]] = {}
        self._lock = threading.Lock()

    def cached(self, token: str | None) -> Caller | None:
        """The caller if this token was seen in the last `ttl_s` seconds (no database)."""
        if not token or len(token) > 200:
            return None
        hit = self._cache.get(security.hash_token(token))
        if hit and time.monotonic() - hit[0] < self.ttl_s:
            return hit[1]
        return None

    def __call__(self, token: str | None) -> Caller | None:
        if not token or len(token) > 200:
            return None
        cached = self.cached(token)
        if cached is not None:
            return cached
        digest = security.hash_token(token)
        now = time.monotonic()
        with self.store.read() as conn:
            row = conn.execute(
                select(
                    m.Annotator.id, m.Annotator.name, m.Annotator.is_admin, m.Annotator.token_hash
                ).where(m.Annotator.token_hash == digest)
            ).first()
        # The lookup is by an index on the hash; the comparison that decides is constant-time.
        if row is None or not security.same(row.token_hash, digest):
            return None
        caller = Caller(row.id, row.name, bool(row.is_admin), row.token_hash)
        with self._lock:
            if len(self._cache) > 10_000:
                self._cache.clear()
            self._cache[digest] = (now, caller)
        return caller
