"""Scheduling rules through the real server, on SQLite and PostgreSQL: overlap under
concurrency, calibration first, the gate and its override, anchors, display order,
timeouts, recalibration."""

from __future__ import annotations

import threading
import time
import uuid
from collections import Counter

import pytest
from sqlalchemy import func, select

from rlhfkit.annotate import models as m
from rlhfkit.annotate import open_store
from rlhfkit.annotate.scheduling import expire_abandoned
from tests.annotate.conftest import label_all, pairs, running_team


def db_rows(db: str, statement):
    store = open_store(db)
    try:
        with store.read() as conn:
            return conn.execute(statement).all()
    finally:
        store.close()


def label(client, task, choice="first"):
    r = client.post(
        "/api/labels",
        json={"task_id": task["task_id"], "choice": choice, "client_id": uuid.uuid4().hex},
    )
    assert r.status_code == 201, r.text
    return r


def test_overlap_is_never_exceeded_under_concurrent_requests(db_url, tmp_path):
    names = tuple(f"ann{i}" for i in range(8))
    with running_team(tmp_path, db_url, pairs(15), annotators=names, overlap=3) as team:
        errors = []

        def work(name: str) -> None:
            try:
                label_all(team.client(name), shared=True)
            except Exception as e:  # surfaced below
                errors.append(e)

        threads = [threading.Thread(target=work, args=(n,)) for n in names for _ in range(2)]
        # Two threads per annotator: the same person in two tabs must not get two slots either.
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not errors, errors
        per_item = db_rows(team.db, select(m.Label.item_id, func.count()).group_by(m.Label.item_id))
        assert sorted(n for _, n in per_item) == [3] * 15  # every item exactly at its overlap
        taken = db_rows(team.db, select(m.Item.taken))
        assert all(t == 3 for (t,) in taken)
        pairs_seen = db_rows(team.db, select(m.Label.item_id, m.Label.annotator_id))
        assert len(set(pairs_seen)) == len(pairs_seen) == 45  # nobody labeled an item twice


def test_calibration_first_then_the_gate_then_the_main_queue(db_url, tmp_path):
    with running_team(
        tmp_path, db_url, pairs(10), overlap=2, calibration_size=3, agreement_threshold=0.7
    ) as team:
        ann1, ann2, ann3 = team.client("ann1"), team.client("ann2"), team.client("ann3")
        # Everyone gets the same three calibration items first.
        prompts = {}
        for name, client in (("ann1", ann1), ("ann2", ann2)):
            tasks = []
            for _ in range(3):
                task = client.get("/api/tasks/next").json()
                assert task["phase"] == "calibration"
                tasks.append(task)
                # Both answer by content (response A), whatever order they were shown.
                label(client, task, "first" if task["first"].startswith("Answer A") else "second")
            prompts[name] = sorted(t["prompt"] for t in tasks)
            if name == "ann1":  # alone, ann1 cannot pass a gate: it waits for a second person
                r = ann1.get("/api/tasks/next")
                assert r.status_code == 204 and r.headers["x-rlhfkit-reason"] == "calibration_gate"
        assert prompts["ann1"] == prompts["ann2"] and len(prompts["ann1"]) == 3
        # Two annotators agree fully: the gate passes and the main queue opens.
        task = ann1.get("/api/tasks/next").json()
        assert task["phase"] == "main"
        gate = team.client("admin").get("/api/admin/status").json()["gate"]
        assert gate["main_queue_open"] and gate["rounds"][0]["passed"] is True
        assert gate["rounds"][0]["percent_agreement"] == 1.0
        # ann3 must calibrate too before any main item.
        assert ann3.get("/api/tasks/next").json()["phase"] == "calibration"


def test_a_failed_gate_closes_the_queue_until_an_admin_overrides(db_url, tmp_path):
    with running_team(
        tmp_path, db_url, pairs(8), overlap=2, calibration_size=2, agreement_threshold=0.7
    ) as team:
        ann1, ann2, admin = team.client("ann1"), team.client("ann2"), team.client("admin")
        for client, winner in ((ann1, "Answer A"), (ann2, "Answer B")):  # they always disagree
            for _ in range(2):
                task = client.get("/api/tasks/next").json()
                label(client, task, "first" if task["first"].startswith(winner) else "second")
        r = ann1.get("/api/tasks/next")
        assert r.status_code == 204 and r.headers["x-rlhfkit-reason"] == "calibration_gate"
        assert ann1.get("/api/me").json()["state"] == "waiting_for_gate"
        status = admin.get("/api/admin/status").json()
        assert status["gate"]["rounds"][0]["passed"] is False
        assert status["gate"]["rounds"][0]["percent_agreement"] == 0.0
        # The two calibration pairs, each split 1-1: the most disputed, at agreement 0.
        assert [d["agreement"] for d in status["disputed_items"]] == [0.0, 0.0]
        assert all(sorted(d["votes"].values()) == [1, 1] for d in status["disputed_items"])
        assert admin.post("/api/admin/override", json={"reason": ""}).status_code == 422
        r = admin.post("/api/admin/override", json={"reason": "rubric clarified in a meeting"})
        assert r.status_code == 200 and r.json()["round"] == 1
        task = ann1.get("/api/tasks/next").json()
        assert task["phase"] == "main"
        gate = admin.get("/api/admin/status").json()["gate"]
        assert gate["overridden"] and gate["main_queue_open"]
        assert gate["rounds"][0]["override"]["reason"] == "rubric clarified in a meeting"
        assert gate["rounds"][0]["override"]["by"] == "admin"


def test_anchors_are_mixed_in_at_the_rate_and_recorded(db_url, tmp_path):
    anchors = [dict(p, label="A") for p in pairs(40, "gold")]
    with running_team(
        tmp_path, db_url, pairs(60), anchors=anchors, overlap=1, anchor_rate=0.3
    ) as team:
        tasks = label_all(team.client("ann1"), limit=60)
        anchor_prompts = {a["prompt"] for a in anchors}
        # Prompts repeat between the two files ("Question 3?"), so count in the store.
        kinds = db_rows(
            team.db,
            select(m.Item.kind, func.count())
            .join(m.Label, m.Label.item_id == m.Item.id)
            .group_by(m.Item.kind),
        )
        n = dict(kinds)
        assert len(tasks) == 60 and anchor_prompts
        assert 6 <= n[m.ANCHOR] <= 32, n  # 0.3 of 60 = 18; far outside this is a broken rate


def test_display_order_is_drawn_per_task_and_recorded(sqlite_url, tmp_path):
    with running_team(tmp_path, sqlite_url, pairs(40), overlap=1) as team:
        client = team.client("ann1")
        shown_a_first = 0
        for _ in range(40):
            task = client.get("/api/tasks/next").json()
            a_first = task["first"].startswith("Answer A")
            shown_a_first += a_first
            label(client, task, "first")  # always the left one: all position bias
        assert 8 <= shown_a_first <= 32
        rows = db_rows(team.db, select(m.Label.label, m.Label.shown_first, m.Label.choice))
        assert all(label == shown for label, shown, _ in rows)  # chose first == shown first
        assert Counter(shown for _, shown, _ in rows)["A"] == shown_a_first
        stats = team.client("admin").get("/api/admin/status").json()["annotators"]
        ann1 = next(a for a in stats if a["annotator"] == "ann1")
        assert ann1["chose_first_rate"] == 1.0 and ann1["position_items"] == 40


def test_an_abandoned_task_returns_to_the_pool(db_url, tmp_path):
    with running_team(tmp_path, db_url, pairs(1), overlap=1, task_timeout_s=0.5) as team:
        ann1, ann2 = team.client("ann1"), team.client("ann2")
        abandoned = ann1.get("/api/tasks/next").json()
        assert ann2.get("/api/tasks/next").status_code == 204  # the only slot is taken
        time.sleep(0.7)
        task = ann2.get("/api/tasks/next")
        assert task.status_code == 200 and task.json()["prompt"] == abandoned["prompt"]
        late = ann1.post(
            "/api/labels",
            json={"task_id": abandoned["task_id"], "choice": "first", "client_id": "late"},
        )
        assert late.status_code == 409  # the slot went to ann2
        label(ann2, task.json())
        assert ann1.get("/api/tasks/next").status_code == 204  # never the same item twice


@pytest.mark.parametrize("kind", ["pair", "anchor"])
def test_a_timed_out_main_task_takes_no_label_whatever_its_pair(db_url, tmp_path, kind):
    # A late label accepted only while the pair's slot is free would tell a real pair (409
    # once its slot is gone) from an anchor (no slot: always accepted). So a timed-out
    # main-phase task refuses every late label alike, and the answer is the same text.
    anchors = [dict(p, label="A") for p in pairs(1, "gold")] if kind == "anchor" else None
    with running_team(
        tmp_path, db_url, pairs(20), anchors=anchors, overlap=1, anchor_rate=0.5,
        task_timeout_s=0.4,
    ) as team:
        ann1 = team.client("ann1")
        for _ in range(20):  # the first real pair, or the anchor once it comes
            task = ann1.get("/api/tasks/next").json()
            if kind == "pair" or _is_anchor(team.db, task["task_id"]):
                break
            label(ann1, task)
        assert _is_anchor(team.db, task["task_id"]) == (kind == "anchor")
        time.sleep(0.5)
        store = open_store(team.db)
        try:
            assert expire_abandoned(store) == 1
        finally:
            store.close()
        assert team.client("ann2").get("/api/tasks/next").status_code == 200  # the freed slot
        late = ann1.post(
            "/api/labels", json={"task_id": task["task_id"], "choice": "first", "client_id": "x"}
        )
        assert late.status_code == 409, late.text
        assert "timed out" in late.json()["detail"]
        assert ann1.post(  # the same request again: the same answer
            "/api/labels", json={"task_id": task["task_id"], "choice": "first", "client_id": "x"}
        ).json() == late.json()
        labeled = db_rows(team.db, select(m.Label.assignment_id))
        assert (task["task_id"],) not in labeled


def _is_anchor(db: str, task_id: str) -> bool:
    kind = select(m.Item.kind).join(m.Assignment, m.Assignment.item_id == m.Item.id)
    return db_rows(db, kind.where(m.Assignment.id == task_id)) == [(m.ANCHOR,)]


def test_recalibration_opens_a_new_round_when_due(db_url, tmp_path):
    with running_team(
        tmp_path,
        db_url,
        pairs(12),
        annotators=("ann1", "ann2"),
        overlap=1,
        calibration_size=2,
        recalibrate_every=3,
    ) as team:
        ann1, ann2 = team.client("ann1"), team.client("ann2")
        for client in (ann1, ann2):
            for _ in range(2):
                task = client.get("/api/tasks/next").json()
                assert task["phase"] == "calibration"
                label(client, task, "first" if task["first"].startswith("Answer A") else "second")
        phases = []
        for _ in range(4):
            task = ann1.get("/api/tasks/next").json()
            phases.append(task["phase"])
            label(ann1, task, "first" if task["first"].startswith("Answer A") else "second")
        # Labels count from the end of the round: 3 main labels, then round 2 is due.
        assert phases == ["main", "main", "main", "calibration"]
        rounds = team.client("admin").get("/api/admin/status").json()["gate"]["rounds"]
        assert [r["round"] for r in rounds] == [1, 2]
        assert rounds[1]["reason"].startswith("recalibration: ann1")
        # ann2 is pulled into the new round too, and the old gate result stands meanwhile.
        assert ann2.get("/api/tasks/next").json()["phase"] == "calibration"
