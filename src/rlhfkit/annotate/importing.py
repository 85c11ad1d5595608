"""Importing pairs to label: comparison rows (what `rlhfkit generate` writes), preference rows
(relabeled from scratch), and anchors (either, with a known answer).

Every row is checked before anything is written; one bad row fails the whole import with
``FILE:LINE: reason`` for every problem, and the store is left as it was. Importing the same
file again skips the rows already there (same id, same content); the same id with different
content is an error.

An anchor's answer is the field `label`, as in the gold files `rlhfkit agreement --anchors`
reads: ``A`` (response_a is better), ``B``, ``tie`` or ``both_bad``. A preference row used as
an anchor needs none: its `chosen` is the answer (or its `tie` / `both_bad` flag).
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import func, insert, select

from rlhfkit.annotate import models as m
from rlhfkit.annotate import storable
from rlhfkit.annotate.rounds import open_round
from rlhfkit.annotate.rules import Policy
from rlhfkit.annotate.store import Store, record_event
from rlhfkit.data import Format, load
from rlhfkit.data.formats import split_implicit_prompt
from rlhfkit.errors import Problem, UserError, display_path
from rlhfkit.lineage import sha256_file

PAIR_FORMATS = (Format.COMPARISON, Format.PREFERENCE, Format.PREFERENCE_IMPLICIT)
PAIR_FIELDS = {"prompt", "response_a", "response_b", "chosen", "rejected", "id", "label"}
GOLD = {"a": "A", "b": "B", "tie": "tie", "both_bad": "both_bad"}


@dataclass(frozen=True)
class ImportResult:
    items: int
    """New main items."""
    anchors: int
    skipped: int
    """Rows already in the store (same id, same content)."""
    calibration_round: int | None
    """The round opened by this import (the first import of main items opens round 1)."""
    calibration_items: int


def import_items(
    store: Store,
    policy: Policy,
    items: Path | str | None = None,
    anchors: Path | str | None = None,
    actor: str = "cli",
    seed: int = 0,
) -> ImportResult:
    """Import pairs from `items` and anchors from `anchors` (JSONL or saved datasets), all or
    nothing. `seed` draws the first calibration round from the imported items."""
    return import_rows(store, policy, read_import(policy, items, anchors), actor, seed)


@dataclass(frozen=True)
class ImportBatch:
    """Checked rows, ready for the store (see `read_import`)."""

    rows: list[dict[str, Any]]
    files: list[tuple[Path, str]]
    """(file, item kind) read."""


def read_import(
    policy: Policy, items: Path | str | None = None, anchors: Path | str | None = None
) -> ImportBatch:
    """Read and check every row; raise `UserError` listing every bad row as FILE:LINE."""
    if items is None and anchors is None:
        raise UserError("nothing to import: give a file of pairs, --anchors FILE, or both")
    rows: list[dict[str, Any]] = []
    problems: list[Problem] = []
    files = [(Path(p), kind) for p, kind in ((items, m.MAIN), (anchors, m.ANCHOR)) if p is not None]
    for path, kind in files:
        rows += _read(path, kind, policy, problems)
    seen: dict[str, str] = {}
    for row in rows:
        first = seen.setdefault(row["external_id"], row["source"])
        if first != row["source"]:
            problems.append(_problem(row["source"], f"id {row['external_id']!r} repeats {first}"))
    if problems:
        raise UserError(problems[:50])
    return ImportBatch(rows, files)


def import_rows(
    store: Store, policy: Policy, batch: ImportBatch, actor: str = "cli", seed: int = 0
) -> ImportResult:
    """Write checked rows in one transaction; rows already there (same id and content) are
    skipped, an id already there with other content fails the whole batch."""
    rows, problems = batch.rows, []
    with store.write() as conn:
        existing = _existing(conn, [r["external_id"] for r in rows])
        fresh = []
        for row in rows:
            old = existing.get(row["external_id"])
            if old is None:
                fresh.append(row)
            elif old != _content(row):
                problems.append(
                    _problem(
                        row["source"],
                        f"id {row['external_id']!r} is already in the store with different "
                        "content (give the row another id)",
                    )
                )
        if problems:
            raise UserError(problems[:50])
        now = time.time()
        for start in range(0, len(fresh), 1000):
            conn.execute(
                insert(m.Item),
                [
                    {**r, "created_at": now, "taken": 0, "labels": 0}
                    for r in fresh[start : start + 1000]
                ],
            )
        new_main = sum(r["kind"] == m.MAIN for r in fresh)
        new_anchors = len(fresh) - new_main
        round_id, round_size = None, 0
        rounds = conn.execute(select(func.count()).select_from(m.Round)).scalar_one()
        if new_main and not rounds and policy.calibration_size > 0:
            round_id = open_round(
                conn, policy, "first calibration round", random.Random(seed), actor
            )
            round_size = conn.execute(
                select(m.Round.size).where(m.Round.id == round_id)
            ).scalar_one()
        for path, kind in batch.files:
            record_event(
                conn,
                "import",
                actor,
                file=storable.shown(str(path)),
                sha256=sha256_file(path) if path.is_file() else None,
                item_kind=kind,
                rows=sum(r["kind"] == kind for r in rows),
                new=sum(r["kind"] == kind for r in fresh),
            )
    return ImportResult(new_main, new_anchors, len(rows) - len(fresh), round_id, round_size)


def _read(path: Path, kind: str, policy: Policy, problems: list[Problem]) -> list[dict[str, Any]]:
    dataset = load(path, expect=PAIR_FORMATS)
    # A file name that is not UTF-8 reaches Python with lone surrogates: keep their escapes.
    shown = storable.shown(display_path(path))
    fmt = dataset.kind.format
    out = []
    for row, line in zip(dataset.rows, dataset.lines, strict=True):
        source = f"{shown}:{line}"
        # The API's text rule (see storable): PostgreSQL cannot store a NUL in the id's column,
        # and a lone surrogate cannot even be written out as UTF-8 when the task is served.
        found = storable.first_unstorable(row)
        if found:
            where, why = found
            problems.append(_problem(source, f"{'.'.join(map(str, where))}: text {why}"))
            continue
        if fmt is Format.PREFERENCE_IMPLICIT:
            row = split_implicit_prompt(row, dataset.kind.conversational)
        if fmt is Format.COMPARISON:
            a, b = row["response_a"], row["response_b"]
        else:
            a, b = row["chosen"], row["rejected"]
        ident = row.get("id", f"{storable.shown(path.name)}:{line}")
        if len(str(ident)) > 200:
            problems.append(_problem(source, "id is longer than 200 characters"))
            continue
        gold = None
        if kind == m.ANCHOR:
            gold = _gold(row, fmt, policy, source, problems)
            if gold is None:
                continue
        out.append(
            {
                "external_id": str(ident),
                "prompt": row["prompt"],
                "response_a": a,
                "response_b": b,
                "kind": kind,
                "gold": gold,
                "round": None,
                "source": source,
                "extra": {k: v for k, v in row.items() if k not in PAIR_FIELDS},
            }
        )
    return out


def _gold(
    row: dict[str, Any], fmt: Format, policy: Policy, source: str, problems: list[Problem]
) -> str | None:
    if fmt is Format.COMPARISON:
        raw = row.get("label")
        if raw is None:
            problems.append(
                _problem(
                    source, "an anchor needs its known answer in 'label': A, B, tie or both_bad"
                )
            )
            return None
        gold = GOLD.get(str(raw).lower())
        if gold is None:
            problems.append(
                _problem(source, f"label {raw!r}: an anchor's answer is A, B, tie or both_bad")
            )
            return None
    else:  # a preference row: `chosen` won, unless it is flagged a tie or both bad
        gold = "tie" if row.get("tie") else "both_bad" if row.get("both_bad") else "A"
    allowed = {"tie": "tie", "both_bad": "both_bad"}
    if gold in allowed and allowed[gold] not in policy.choices:
        problems.append(
            _problem(
                source, f"the answer is {gold!r}, which this rubric does not let annotators give"
            )
        )
        return None
    return gold


def _existing(conn: Any, ids: list[str]) -> dict[str, tuple]:
    found: dict[str, tuple] = {}
    for start in range(0, len(ids), 500):
        part = ids[start : start + 500]
        for row in conn.execute(
            select(
                m.Item.external_id,
                m.Item.prompt,
                m.Item.response_a,
                m.Item.response_b,
                m.Item.kind,
                m.Item.gold,
            ).where(m.Item.external_id.in_(part))
        ):
            kind = m.MAIN if row.kind == m.CALIBRATION else row.kind
            found[row.external_id] = (row.prompt, row.response_a, row.response_b, kind, row.gold)
    return found


def _content(row: dict[str, Any]) -> tuple:
    return (row["prompt"], row["response_a"], row["response_b"], row["kind"], row["gold"])


def _problem(source: str, reason: str) -> Problem:
    where, _, line = source.rpartition(":")
    return Problem(where, int(line), reason)
