"""The annotation store: a SQLite file (WAL) by default, PostgreSQL by URL for a team server.

`open_store(url)` connects, creates the tables on first use and refuses a database written
by a different schema version. Writes come in two kinds:

- `Store.run(fn)` / `await Store.arun(fn)`: one unit of the server's work, `fn(conn)`, in a
  transaction. On SQLite they all go to one writer thread, which runs whatever has queued
  up in a single transaction (each unit in its own savepoint, so one unit's error rolls back
  only that unit) and commits once: group commit. With ``synchronous=FULL`` a commit is an
  fsync (about 1.5 ms here), and SQLite admits one writer at a time; thirty-two requests
  each taking a lock, committing and fsyncing in turn queue up behind each other, while one
  commit for all of them costs one fsync. No result is handed back before its commit.
  On PostgreSQL each unit is an ordinary transaction on a pooled connection: the server
  does its own group commit, and the scheduler serialises with row locks. Units lock rows
  in one order, the annotator's first, then tasks, then items (a label, a next-task, a
  revoke), so that they cannot deadlock each other. As a backstop, a unit that PostgreSQL
  aborted anyway (a deadlock victim, a serialization failure) runs again, so the client
  sees an answer, not a 500.
- `Store.write()`: a transaction for the CLI and admin actions that lock nothing a unit
  locks (imports, new annotators, overrides). On SQLite it begins with ``BEGIN IMMEDIATE``
  (a deferred transaction that reads, then writes can fail with "database is locked"
  whatever the busy timeout). It is not retried (a with-block cannot run twice): an action
  that locks annotators, tasks or items (revoke, rotate) is a unit, through `run`.

Durability: a unit marked `durable` (a label) commits with ``synchronous=FULL``, so the WAL
is on disk before its 201 goes out; handing out a task uses ``NORMAL``, which survives a
killed process but not a power cut, and costs no fsync.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import Connection, Engine, create_engine, event, insert, inspect, select, update
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, OperationalError

from rlhfkit.annotate import models as m
from rlhfkit.annotate import security
from rlhfkit.errors import UserError, display_path

T = TypeVar("T")
DB_ENV = "RLHFKIT_DB_URL"
DEFAULT_DB = "annotations.sqlite"
RETRIES = 5
"""Attempts at a PostgreSQL unit that was rolled back whole (see `Store.run`)."""


def normalise_url(url: str) -> str:
    """A SQLAlchemy URL from what a user types: a URL, or a path to a SQLite file."""
    if "://" not in url:
        return f"sqlite:///{Path(url).expanduser().resolve()}"
    for plain in ("postgresql://", "postgres://"):
        if url.startswith(plain):
            return "postgresql+psycopg://" + url[len(plain) :]
    return url


def shown_url(url: str) -> str:
    """The URL for messages: without its password."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return url


@dataclass
class Store:
    engine: Engine
    url: str
    secret: str
    """Signs CSRF tokens; random per store, so every server process on it agrees."""
    last_sweep: float = 0.0
    """When this process last expired abandoned tasks (see scheduling.expire_abandoned)."""
    _lock: Any = field(default_factory=threading.Lock)
    _writer: _Writer | None = None

    @property
    def is_sqlite(self) -> bool:
        return self.engine.dialect.name == "sqlite"

    def run(
        self,
        fn: Callable[[Connection], T],
        durable: bool = True,
        retry: tuple[type[Exception], ...] = (),
    ) -> T:
        """Run `fn(conn)` in a write transaction; return its result once committed.

        On PostgreSQL a unit rolled back whole runs again, up to `RETRIES` times in all: a
        deadlock victim or a serialization failure (a backstop: units take their locks in
        one order, see the module docstring), or one that raised one of `retry` (a race
        the unit detected itself). On SQLite a unit runs alone, so nothing changes between
        its reads and its writes, and it runs once."""
        if self.is_sqlite:
            return self._sqlite_writer().submit(fn, durable).result()
        for _ in range(RETRIES - 1):
            try:
                with self.engine.begin() as conn:
                    return fn(conn)
            except Exception as e:
                if not (isinstance(e, retry) or _rolled_back(e)):
                    raise
        with self.engine.begin() as conn:
            return fn(conn)

    async def arun(
        self,
        fn: Callable[[Connection], T],
        durable: bool = True,
        retry: tuple[type[Exception], ...] = (),
    ) -> T:
        """`run` for the event loop: awaits the writer thread instead of blocking."""
        if not self.is_sqlite:
            import anyio

            return await anyio.to_thread.run_sync(lambda: self.run(fn, durable, retry))
        return await asyncio.wrap_future(self._sqlite_writer().submit(fn, durable))

    def _sqlite_writer(self) -> _Writer:
        with self._lock:
            if self._writer is None:
                self._writer = _Writer(self.engine)
            return self._writer

    @contextlib.contextmanager
    def write(self, durable: bool = True) -> Iterator[Connection]:
        """One write transaction; committed (fsynced when `durable`) when the block ends.
        Not retried (see the module docstring): for what locks no row a unit locks."""
        if not self.is_sqlite:
            with self.engine.begin() as conn:
                yield conn
            return
        options = {
            "rlhfkit_begin": "BEGIN IMMEDIATE",
            "rlhfkit_sync": "FULL" if durable else "NORMAL",
        }
        with self._lock, self.engine.connect() as raw:
            conn = raw.execution_options(**options)
            with conn.begin():
                yield conn

    @contextlib.contextmanager
    def read(self) -> Iterator[Connection]:
        """A read-only transaction (a consistent snapshot on both databases)."""
        with self.engine.connect() as conn, conn.begin():
            yield conn

    def close(self) -> None:
        if self._writer is not None:
            self._writer.stop()
            self._writer = None
        self.engine.dispose()


class _Writer:
    """SQLite's single writer: a thread that runs queued units in batches, one commit each.

    WAL checkpoints (copying the log back into the database file, with an fsync) run on a
    second thread every `CHECKPOINT_EVERY_S`: left to the writer, SQLite runs one inside a
    commit every 1000 pages, and every request queued behind it waits (the load benchmark
    showed 350 ms stalls). A passive checkpoint never blocks the writer."""

    MAX_BATCH = 64
    CHECKPOINT_EVERY_S = 1.0

    def __init__(self, engine: Engine):
        self.engine = engine
        self.queue: queue.SimpleQueue = queue.SimpleQueue()
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._loop, name="rlhfkit-sqlite-writer", daemon=True)
        self.checkpointer = threading.Thread(
            target=self._checkpoints, name="rlhfkit-sqlite-checkpoints", daemon=True
        )
        self.thread.start()
        self.checkpointer.start()

    def submit(self, fn: Callable[[Connection], Any], durable: bool) -> Future:
        future: Future = Future()
        self.queue.put((fn, durable, future))
        return future

    def stop(self) -> None:
        self.stopping.set()
        self.queue.put(None)
        self.thread.join(timeout=30)
        self.checkpointer.join(timeout=30)

    def _checkpoints(self) -> None:
        with self.engine.connect() as conn:
            driver = conn.connection.driver_connection
            while not self.stopping.wait(self.CHECKPOINT_EVERY_S):
                with contextlib.suppress(Exception):  # busy now: the next round catches up
                    driver.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()

    def _loop(self) -> None:
        with self.engine.connect() as conn:
            conn.connection.driver_connection.execute("PRAGMA wal_autocheckpoint=0")
            while True:
                first = self.queue.get()
                if first is None:
                    return
                batch = [first]
                while len(batch) < self.MAX_BATCH:
                    try:
                        job = self.queue.get_nowait()
                    except queue.Empty:
                        break
                    if job is None:
                        self.queue.put(None)  # stop after this batch
                        break
                    batch.append(job)
                self._commit(conn, batch)

    def _commit(self, conn: Connection, batch: list) -> None:
        durable = any(job[1] for job in batch)
        conn.execution_options(
            rlhfkit_begin="BEGIN IMMEDIATE", rlhfkit_sync="FULL" if durable else "NORMAL"
        )
        outcomes: list[tuple[bool, Any]] = []
        try:
            with conn.begin():
                # Savepoints on the driver directly: SQLAlchemy's nested transactions cost
                # a few statements' worth of bookkeeping each, twice per unit.
                driver = conn.connection.driver_connection
                for fn, _, _ in batch:
                    driver.execute("SAVEPOINT unit")
                    try:
                        outcomes.append((True, fn(conn)))
                        driver.execute("RELEASE unit")
                    except Exception as e:  # this unit's error: undo it alone
                        driver.execute("ROLLBACK TO unit")
                        driver.execute("RELEASE unit")
                        outcomes.append((False, e))
        except Exception as e:  # the commit itself failed: nothing in the batch happened
            outcomes = [(False, e)] * len(batch)
        for (_, _, future), (ok, value) in zip(batch, outcomes, strict=True):
            if ok:
                future.set_result(value)
            else:
                future.set_exception(value)


def open_store(url: str, create: bool = False, pool_size: int = 40) -> Store:
    """Connect to the store at `url`; with `create`, make its tables when there are none."""
    url = normalise_url(url)
    engine = _engine(url, create, pool_size)
    try:
        with engine.connect() as conn:
            tables = set(inspect(conn).get_table_names())
    except OperationalError as e:
        engine.dispose()
        reason = str(e.orig).strip().splitlines()[0] if e.orig else str(e)
        raise UserError(
            f"{shown_url(url)}: cannot open the annotation database: {reason}"
        ) from None
    if m.Meta.__tablename__ not in tables:
        if not create:
            engine.dispose()
            raise UserError(
                f"{shown_url(url)}: no annotation database here",
                hint="import items first: `rlhfkit annotate import FILE`",
            )
        if tables & set(m.Base.metadata.tables):
            engine.dispose()
            raise UserError(f"{shown_url(url)}: holds annotation tables without a schema version")
        m.Base.metadata.create_all(engine)
        with engine.begin() as conn:
            conn.execute(
                insert(m.Meta),
                [
                    {"key": "schema_version", "value": str(m.SCHEMA_VERSION)},
                    {"key": "secret", "value": security.new_token()},
                    {"key": "created_at", "value": str(time.time())},
                ],
            )
    with engine.connect() as conn:
        meta = dict(conn.execute(select(m.Meta.key, m.Meta.value)).all())
    if meta.get("schema_version") in MIGRATIONS:
        meta["schema_version"] = _migrate(engine)
    if meta.get("schema_version") != str(m.SCHEMA_VERSION):
        engine.dispose()
        raise UserError(
            f"{shown_url(url)}: annotation database schema version "
            f"{meta.get('schema_version', 'unknown')}; this rlhfkit reads version "
            f"{m.SCHEMA_VERSION}",
            hint="use the rlhfkit version that created it, or export with it and import anew",
        )
    return Store(engine, url, meta["secret"])


MIGRATIONS: dict[str, tuple[str, ...]] = {
    # from version: the columns it adds (TABLE.COLUMN, typed as the models declare them)
    "1": ("annotators.removed_at", "annotators.removed_reason", "annotators.removed_by"),
}
"""Additive only: a store of an older version opens, and keeps all it holds."""


def _migrate(engine: Engine) -> str:
    """Bring an older store up to `SCHEMA_VERSION`, in one transaction on the locked version
    row: a second process opening it at the same time waits, then finds it done. Returns
    the version it is at."""
    with engine.connect() as raw:
        conn = raw.execution_options(rlhfkit_begin="BEGIN IMMEDIATE")  # SQLite: write lock now
        with conn.begin():
            key = m.Meta.key == "schema_version"
            version = conn.execute(select(m.Meta.value).where(key).with_for_update()).scalar()
            found = version
            while version in MIGRATIONS:
                for name in MIGRATIONS[version]:
                    table, column = name.split(".")
                    kind = m.Base.metadata.tables[table].c[column].type
                    conn.exec_driver_sql(
                        f"ALTER TABLE {table} ADD COLUMN {column} "
                        f"{kind.compile(dialect=engine.dialect)}"
                    )
                version = str(int(version) + 1)
            if version != found:
                conn.execute(update(m.Meta).where(key).values(value=version))
    return version


def _engine(url: str, create: bool, pool_size: int) -> Engine:
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise UserError(f"{url}: not a database URL (sqlite:///FILE or postgresql://...)") from None
    if parsed.get_backend_name() == "sqlite":
        path = parsed.database
        if not path or path == ":memory:":
            raise UserError("the annotation store must be a file or a server, not :memory:")
        if not Path(path).exists() and not create:
            raise UserError(
                f"{display_path(path)}: no annotation database here",
                hint="import items first: `rlhfkit annotate import FILE`",
            )
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(
            url,
            connect_args={"check_same_thread": False, "timeout": 30},
            pool_size=pool_size,
            max_overflow=16,
        )
        event.listen(engine, "connect", _sqlite_connect)
        event.listen(engine, "begin", _sqlite_begin)
        return engine
    if parsed.get_backend_name() != "postgresql":
        raise UserError(f"{shown_url(url)}: the annotation store is SQLite or PostgreSQL")
    try:
        # Connections above pool_size are closed when returned; size the pool for the
        # server's worker threads (anyio's 40) so that busy moments do not churn them.
        return create_engine(url, pool_size=pool_size, max_overflow=16)
    except ModuleNotFoundError as e:
        raise UserError(f"PostgreSQL needs the psycopg package: {e}") from None


def _rolled_back(e: Exception) -> bool:
    """PostgreSQL rolled the whole transaction back: running the unit again is safe."""
    from psycopg import errors  # here only for a PostgreSQL store, whose driver it is

    retried = (errors.DeadlockDetected, errors.SerializationFailure)
    return isinstance(e, DBAPIError) and isinstance(e.orig, retried)


def _sqlite_connect(dbapi_conn: Any, _record: Any) -> None:
    # The driver's own transaction handling is switched off; `_sqlite_begin` issues BEGIN.
    dbapi_conn.isolation_level = None
    for pragma in ("journal_mode=WAL", "foreign_keys=ON", "synchronous=FULL"):
        dbapi_conn.execute(f"PRAGMA {pragma}")
    _record.info["sync"] = "FULL"


def _sqlite_begin(conn: Connection) -> None:
    options = conn.get_execution_options()
    sync = options.get("rlhfkit_sync", "FULL")
    info = conn.connection.info
    if info.get("sync") != sync:  # a pragma costs a statement; skip it when unchanged
        conn.exec_driver_sql(f"PRAGMA synchronous={sync}")
        info["sync"] = sync
    conn.exec_driver_sql(options.get("rlhfkit_begin", "BEGIN"))


def record_event(conn: Connection, kind: str, actor: str, **detail: Any) -> None:
    conn.execute(insert(m.Event).values(at=time.time(), kind=kind, actor=actor, detail=detail))
