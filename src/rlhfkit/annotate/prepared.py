"""Prepared statements for the server's hot path (next task, label) on SQLite.

Profiling the load benchmark showed SQLAlchemy's per-execution bookkeeping at about 90 µs a
statement, several times SQLite's own work, and a cycle of next-task + label runs about
fifteen statements, all on the one writer thread. A `Prepared` statement is compiled once
for the dialect and run on the driver's cursor directly: values are bound in the compiled
order, JSON columns are encoded and decoded here, rows come back as named tuples. On any
other database it is an ordinary `conn.execute` (PostgreSQL's driver is not the bottleneck
there, and its type handling differs).

The statements stay SQLAlchemy expressions, written against the models' tables, so the SQL
is still generated, checked and portable; only the execution path is shortened.
"""

from __future__ import annotations

import json
from collections import namedtuple
from typing import Any

from sqlalchemy import Connection, Executable
from sqlalchemy.exc import NoResultFound
from sqlalchemy.sql import sqltypes

from rlhfkit import strict_json


class Prepared:
    def __init__(self, statement: Executable, insert_keys: list[str] | None = None):
        self.statement = statement
        self.insert_keys = insert_keys
        """For an INSERT without `.values()`: the columns each execution supplies."""
        self._sqlite: tuple | None = None

    def __call__(self, conn: Connection, params: dict[str, Any] | None = None) -> Any:
        params = params or {}
        if conn.dialect.name != "sqlite":
            return conn.execute(self.statement, params)
        sql, names, defaults, json_binds, row_type, json_columns = self._sqlite or self._compile(
            conn
        )
        values = []
        for name in names:
            value = params[name] if name in params else defaults[name]
            values.append(strict_json.dumps(value) if name in json_binds else value)
        cursor = conn.connection.driver_connection.execute(sql, values)
        return _Result(cursor, row_type, json_columns)

    def _compile(self, conn: Connection) -> tuple:
        compiled = self.statement.compile(dialect=conn.dialect, column_keys=self.insert_keys)
        names = list(compiled.positiontup or [])
        json_binds = {n for n in names if isinstance(compiled.binds[n].type, sqltypes.JSON)}
        columns = list(getattr(self.statement, "exported_columns", []))
        row_type = namedtuple("Row", [c.key for c in columns]) if columns else None
        json_columns = [i for i, c in enumerate(columns) if isinstance(c.type, sqltypes.JSON)]
        self._sqlite = (compiled.string, names, compiled.params, json_binds, row_type, json_columns)
        return self._sqlite


class _Result:
    """The part of SQLAlchemy's Result that the hot path uses; rows are fetched at once
    (a RETURNING statement must be read to the end before the transaction commits)."""

    def __init__(self, cursor: Any, row_type: Any, json_columns: list[int]):
        self.rowcount = cursor.rowcount
        raw = cursor.fetchall() if row_type is not None else []
        if json_columns:
            raw = [_decode(r, json_columns) for r in raw]
        self.rows = [row_type._make(r) for r in raw] if row_type is not None else []

    def first(self) -> Any:
        return self.rows[0] if self.rows else None

    def one(self) -> Any:
        if len(self.rows) != 1:
            raise NoResultFound(f"expected one row, got {len(self.rows)}")
        return self.rows[0]

    def all(self) -> list:
        return self.rows

    def scalar(self) -> Any:
        return self.rows[0][0] if self.rows else None

    def scalar_one(self) -> Any:
        return self.one()[0]

    def scalars(self) -> _Result:
        scalars = object.__new__(_Result)
        scalars.rowcount, scalars.rows = self.rowcount, [r[0] for r in self.rows]
        return scalars


def _decode(row: tuple, json_columns: list[int]) -> tuple:
    values = list(row)
    for i in json_columns:
        if values[i] is not None:
            values[i] = json.loads(values[i])
    return tuple(values)
