"""Which tasks belong to a calibration round, on SQLite and PostgreSQL, without trusting that
every server process has the same clock.

Each request may be served by another process, so a round's `created_at` (its opener's clock)
and a task's or label's `created_at` (another process's clock) cannot be compared. A round
whose time lies in the future of its tasks (the opener's clock ran ahead, or NTP stepped
another one back) must change nothing: an abandoned calibration task comes back whether it is
an anchor or a real pair, and `/api/me`'s `done` counts its label. A pair that expired as a
main task and was then drawn into a round is a calibration task like the others.
"""

from __future__ import annotations

import dataclasses
import random
import time
import uuid

import pytest
from sqlalchemy import insert, select, update

from rlhfkit.annotate import Policy, add_annotator, import_items, open_store
from rlhfkit.annotate import models as m
from rlhfkit.annotate.labeling import LabelRequest, submit_label
from rlhfkit.annotate.rounds import open_round
from rlhfkit.annotate.scheduling import Task, expire_abandoned, next_task
from rlhfkit.annotate.status import annotator_progress
from tests.annotate.conftest import pairs, write_jsonl

LATER = 10**6  # seconds: "now" for a sweep that expires every open task


def annotator_id(store, name: str) -> int:
    with store.read() as conn:
        return conn.execute(select(m.Annotator.id).where(m.Annotator.name == name)).scalar_one()


def label(store, policy, who: int, task: Task) -> None:
    req = LabelRequest(task_id=task.task_id, choice="first", client_id=uuid.uuid4().hex)
    assert submit_label(store, policy, who, req).created


def done(store, policy, who: int) -> int:
    return annotator_progress(store, policy, who)["calibration"]["done"]


@pytest.mark.parametrize("kind", ["anchor", "calibration"])
def test_a_round_opened_by_a_clock_ahead_changes_nothing(db_url, tmp_path, kind):
    # anchor_rate 1: the first task of the round is the anchor while one is unseen; 0: a pair.
    policy = Policy(
        overlap=1,
        calibration_size=3,
        anchor_rate=1.0 if kind == "anchor" else 0.0,
        recalibrate_every=0,
    )
    store = open_store(db_url, create=True)
    try:
        anchors = [dict(p, label="A") for p in pairs(1, "gold", start=50)]
        import_items(
            store,
            policy,
            items=write_jsonl(tmp_path / "items.jsonl", pairs(3, start=100)),
            anchors=write_jsonl(tmp_path / "anchors.jsonl", anchors),
        )
        add_annotator(store, "ann1")
        me = annotator_id(store, "ann1")
        with store.write() as conn:  # the round's opener ran an hour ahead of this process
            conn.execute(update(m.Round).values(created_at=time.time() + 3600))
        rng = random.Random(0)
        first = next_task(store, policy, me, rng)
        assert first.phase == "calibration"
        assert ("50" in first.prompt) == (kind == "anchor")
        expire_abandoned(store, now=time.time() + LATER)  # they walked away
        again = next_task(store, policy, me, rng)
        assert (again.task_id, again.prompt, again.phase) == (
            first.task_id,
            first.prompt,
            "calibration",
        )
        assert done(store, policy, me) == 0
        label(store, policy, me, again)
        assert done(store, policy, me) == 1
        for n in (2, 3):  # and so on, one per label, whatever the pair
            label(store, policy, me, next_task(store, policy, me, rng))
            assert done(store, policy, me) == n
    finally:
        store.close()


def test_a_pair_that_expired_as_a_main_task_is_a_calibration_task_in_its_round(db_url, tmp_path):
    policy = Policy(
        overlap=1, calibration_size=0, anchor_rate=0.0, recalibrate_every=0, task_timeout_s=60
    )
    store = open_store(db_url, create=True)
    try:
        import_items(store, policy, items=write_jsonl(tmp_path / "items.jsonl", pairs(2)))
        for name in ("ann1", "ann2"):
            add_annotator(store, name)
        ann1, ann2 = annotator_id(store, "ann1"), annotator_id(store, "ann2")
        rng = random.Random(0)
        walked_away = next_task(store, policy, ann1, rng)
        assert walked_away.phase == "main"
        label(store, policy, ann2, next_task(store, policy, ann2, rng))  # the other pair
        expire_abandoned(store, now=time.time() + LATER)  # its slot goes back to the pool
        # No round takes a pair anyone was handed: it would come back to ann1 there, which an
        # anchor never does. So nothing is left to calibrate on...
        with store.write() as conn:
            calibrating = dataclasses.replace(policy, calibration_size=1)
            assert open_round(conn, calibrating, "test", random.Random(0)) is None
            # ...but a store written before that rule may hold such a round: made by hand.
            mine = select(m.Assignment.item_id).where(m.Assignment.id == walked_away.task_id)
            conn.execute(
                update(m.Item)
                .where(m.Item.id == mine.scalar_subquery())
                .values(kind=m.CALIBRATION, round=1)
            )
            conn.execute(insert(m.Round).values(id=1, size=1, reason="old", created_at=0.0))
        task = next_task(store, policy, ann1, rng)
        assert task.prompt == walked_away.prompt
        assert task.phase == "calibration"  # as shown: it is a calibration task now
        assert done(store, policy, ann1) == 0
        expire_abandoned(store, now=time.time() + LATER)  # they walk away again...
        label(store, policy, ann1, task)  # ...and come back: a late label, welcome in calibration
        assert done(store, policy, ann1) == 1
        with store.read() as conn:
            phases = conn.execute(select(m.Label.phase).where(m.Label.annotator_id == ann1))
            assert phases.scalars().all() == ["calibration"]
            finished = select(m.Annotator.calibrated_round).where(m.Annotator.id == ann1)
            assert conn.execute(finished).scalar_one() == 1  # the label counted for the round
    finally:
        store.close()
