"""The JSON API against a real server, on SQLite and on PostgreSQL: task shape, replays,
isolation, admin-only endpoints, refused input, body limits."""

from __future__ import annotations

import json
import uuid

import pytest
from sqlalchemy import func, select

from rlhfkit.annotate import models as m
from rlhfkit.annotate import open_store
from tests.annotate.conftest import label_all, pairs, running_team

TASK_KEYS = {"task_id", "prompt", "first", "second", "phase", "expires_at", "choices", "rubric"}


def count_labels(db: str) -> int:
    store = open_store(db)
    try:
        with store.read() as conn:
            return conn.execute(select(func.count()).select_from(m.Label)).scalar_one()
    finally:
        store.close()


def test_next_task_shows_the_pair_and_hides_anchors_and_votes(db_url, tmp_path):
    anchors = [dict(p, label="B") for p in pairs(3, "gold")]
    with running_team(tmp_path, db_url, pairs(4), anchors=anchors, anchor_rate=0.5) as team:
        ann1, ann2 = team.client("ann1"), team.client("ann2")
        label_all(ann2)  # others' votes exist now
        seen = 0
        while (r := ann1.get("/api/tasks/next")).status_code == 200:
            seen += 1
            task = r.json()
            assert set(task) == TASK_KEYS
            assert {task["first"], task["second"]} == {
                task["prompt"].replace("Question", "Answer A to").rstrip("?") + ".",
                task["prompt"].replace("Question", "Answer B to").rstrip("?") + ".",
            }
            text = r.text.lower()
            for secret in ('"gold"', "anchor", "votes", '"label"', "ann2"):
                assert secret not in text
            assert task["choices"] == ["first", "second", "both_bad"]
            assert [c["name"] for c in task["rubric"]["criteria"]] == ["helpful", "tone", "concise"]
            ann1.post(
                "/api/labels",
                json={"task_id": task["task_id"], "choice": "first", "client_id": uuid.uuid4().hex},
            )
        assert 4 <= seen <= 7  # the 4 main items, and the anchors drawn at rate 0.5


def test_a_task_is_handed_out_again_until_labeled(db_url, tmp_path):
    with running_team(tmp_path, db_url, pairs(3)) as team:
        ann1 = team.client("ann1")
        first = ann1.get("/api/tasks/next").json()
        again = ann1.get("/api/tasks/next").json()
        assert again["task_id"] == first["task_id"]
        assert (again["first"], again["second"]) == (first["first"], first["second"])


def test_a_replayed_label_is_stored_once_and_a_reused_client_id_conflicts(db_url, tmp_path):
    with running_team(tmp_path, db_url, pairs(3)) as team:
        ann1 = team.client("ann1")
        task = ann1.get("/api/tasks/next").json()
        body = {"task_id": task["task_id"], "choice": "second", "client_id": "c-1"}
        created = ann1.post("/api/labels", json=body)
        assert created.status_code == 201
        replay = ann1.post("/api/labels", json=body)
        assert replay.status_code == 200
        assert replay.json()["label_id"] == created.json()["label_id"]
        changed = ann1.post("/api/labels", json=body | {"choice": "first"})
        assert changed.status_code == 409
        second_label = ann1.post("/api/labels", json=body | {"client_id": "c-2"})
        assert second_label.status_code == 409  # the task already has its label
        assert count_labels(team.db) == 1


def test_annotators_are_isolated(db_url, tmp_path):
    with running_team(tmp_path, db_url, pairs(3)) as team:
        ann1, ann2 = team.client("ann1"), team.client("ann2")
        task = ann1.get("/api/tasks/next").json()
        stolen = ann2.post(
            "/api/labels", json={"task_id": task["task_id"], "choice": "first", "client_id": "x"}
        )
        assert stolen.status_code == 404
        assert stolen.json() == {"detail": "no such task"}
        unknown = ann1.post(
            "/api/labels", json={"task_id": "f" * 32, "choice": "first", "client_id": "y"}
        )
        assert unknown.status_code == 404
        mine = ann1.post(
            "/api/labels", json={"task_id": task["task_id"], "choice": "first", "client_id": "x"}
        )
        assert mine.status_code == 201  # ann2's attempt took nothing, not even the client id


def test_tokens_and_admin_endpoints(db_url, tmp_path):
    with running_team(tmp_path, db_url, pairs(3)) as team:
        anonymous = team.client()
        assert anonymous.get("/api/tasks/next").status_code == 401
        assert anonymous.get("/api/me").status_code == 401
        wrong = team.client()
        wrong.headers["Authorization"] = "Bearer rlk_" + "x" * 43
        assert wrong.get("/api/me").status_code == 401
        assert team.client("ann1").get("/api/admin/status").status_code == 403
        assert (
            team.client("ann1").post("/api/admin/override", json={"reason": "x"}).status_code == 403
        )
        status = team.client("admin").get("/api/admin/status")
        assert status.status_code == 200
        assert {
            "progress",
            "gate",
            "agreement",
            "annotators",
            "drift_alerts",
            "disputed_items",
        } <= set(status.json())
        me = team.client("ann1").get("/api/me").json()
        assert me["annotator"] == "ann1" and me["labels"] == 0 and me["state"] == "main"
        # Only hashes are stored.
        store = open_store(team.db)
        with store.read() as conn:
            hashes = conn.execute(select(m.Annotator.token_hash)).scalars().all()
        store.close()
        assert not set(team.tokens.values()) & set(hashes)
        assert all(len(h) == 64 for h in hashes)


@pytest.mark.parametrize(
    "body, code",
    [
        ({"choice": "tie"}, 422),  # the demo rubric forces a choice
        ({"choice": "better"}, 422),
        ({"choice": "first", "criteria": {"style": "first"}}, 422),
        ({"choice": "first", "criteria": {"tone": "both"}}, 422),
        ({"choice": "first", "rationale": "x" * 5001}, 422),
        ({"choice": "first", "extra": 1}, 422),
        ({"choice": "first", "client_id": ""}, 422),
        ({"choice": "first", "task_id": "nope"}, 404),
    ],
)
def test_refused_labels_write_nothing(sqlite_url, tmp_path, body, code):
    with running_team(tmp_path, sqlite_url, pairs(2)) as team:
        ann1 = team.client("ann1")
        task = ann1.get("/api/tasks/next").json()
        r = ann1.post("/api/labels", json={"task_id": task["task_id"], "client_id": "c"} | body)
        assert r.status_code == code, r.text
        assert count_labels(team.db) == 0
        bad_json = ann1.post(
            "/api/labels", content=b"{not json", headers={"content-type": "application/json"}
        )
        assert bad_json.status_code == 422
        ok = ann1.post(
            "/api/labels",
            json={
                "task_id": task["task_id"],
                "choice": "second",
                "client_id": "c",
                "criteria": {"tone": "tie", "helpful": "second"},
                "rationale": "B answers the question.",
            },
        )
        assert ok.status_code == 201


def test_oversized_bodies_are_refused_before_reading(sqlite_url, tmp_path):
    with running_team(tmp_path, sqlite_url, pairs(2)) as team:
        ann1 = team.client("ann1")
        task = ann1.get("/api/tasks/next").json()
        big = {
            "task_id": task["task_id"],
            "choice": "first",
            "client_id": "c",
            "rationale": "x" * 70_000,
        }
        r = ann1.post("/api/labels", json=big)
        assert r.status_code == 413
        chunks = (json.dumps(big)[i : i + 8192].encode() for i in range(0, 80_000, 8192))
        r = ann1.post("/api/labels", content=chunks, headers={"content-type": "application/json"})
        assert r.status_code == 413
        assert count_labels(team.db) == 0


def test_no_work_is_204_with_a_reason(db_url, tmp_path):
    with running_team(tmp_path, db_url, pairs(2)) as team:
        ann1 = team.client("ann1")
        assert len(label_all(ann1)) == 2
        r = ann1.get("/api/tasks/next")
        assert r.status_code == 204 and r.headers["x-rlhfkit-reason"] == "done"
        assert ann1.get("/api/me").json()["state"] == "done"
