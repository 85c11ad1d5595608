"""A store written by schema version 1 (before annotators could be removed from a round)
opens in this version, on SQLite and PostgreSQL: the new columns are added, every label stays,
and the store works as a new one does."""

from __future__ import annotations

import random

from sqlalchemy import inspect, select, text

from rlhfkit.annotate import Policy, add_annotator, import_items, open_store, status
from rlhfkit.annotate import models as m
from rlhfkit.annotate.annotators import remove_annotator
from tests.annotate.conftest import pairs, write_jsonl
from tests.annotate.test_gate_actions import label_round
from tests.annotate.test_rounds import annotator_id

POLICY = Policy(overlap=2, calibration_size=4, anchor_rate=0.0, recalibrate_every=0)
NEW = ("removed_at", "removed_reason", "removed_by")


def as_version_1(db_url: str) -> None:
    """Make the store what schema version 1 wrote: the annotators table without the columns
    version 2 added, and version 1 recorded."""
    store = open_store(db_url)
    try:
        with store.engine.begin() as conn:
            for column in NEW:
                conn.execute(text(f"ALTER TABLE annotators DROP COLUMN {column}"))
            conn.execute(text("UPDATE rlhfkit_meta SET value = '1' WHERE key = 'schema_version'"))
    finally:
        store.close()


def test_a_version_1_store_opens_and_keeps_its_labels(db_url, tmp_path):
    store = open_store(db_url, create=True)
    try:
        import_items(store, POLICY, items=write_jsonl(tmp_path / "items.jsonl", pairs(6)))
        for name in ("ann1", "ann2", "ann3"):
            add_annotator(store, name)
        for name in ("ann1", "ann2"):
            label_round(store, POLICY, annotator_id(store, name), "A", random.Random(0), limit=4)
    finally:
        store.close()
    as_version_1(db_url)
    store = open_store(db_url)
    try:
        with store.read() as conn:
            columns = {c["name"] for c in inspect(conn).get_columns("annotators")}
            version = conn.execute(
                select(m.Meta.value).where(m.Meta.key == "schema_version")
            ).scalar()
        assert set(NEW) <= columns and version == str(m.SCHEMA_VERSION)
        before = status(store, POLICY, replicates=0)
        assert before["progress"]["labels"] == 8 and before["gate"]["value"] == 1.0
        remove_annotator(store, POLICY, "ann3", "left the team", actor="lead")
    finally:
        store.close()
    again = open_store(db_url)  # opened again: nothing left to migrate
    try:
        rows = {r["annotator"]: r for r in status(again, POLICY, replicates=0)["annotators"]}
    finally:
        again.close()
    assert rows["ann3"]["removed"]["by"] == "lead" and rows["ann1"]["labels"] == 4
