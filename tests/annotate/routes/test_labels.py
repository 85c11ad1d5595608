"""/api/labels against a real server, on SQLite and on PostgreSQL: replays, isolation, refused
input, body limits."""

from __future__ import annotations

import json

import pytest

from tests.annotate.conftest import count_labels, pairs, running_team


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
