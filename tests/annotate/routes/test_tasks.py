"""/api/tasks/next against a real server, on SQLite and on PostgreSQL: the task's shape, what it
hides, handing a task out again until it is labeled, and no work as 204 with a reason."""

from __future__ import annotations

import uuid

from tests.annotate.conftest import label_all, pairs, running_team

TASK_KEYS = {"task_id", "prompt", "first", "second", "phase", "expires_at", "choices", "rubric"}


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


def test_no_work_is_204_with_a_reason(db_url, tmp_path):
    with running_team(tmp_path, db_url, pairs(2)) as team:
        ann1 = team.client("ann1")
        assert len(label_all(ann1)) == 2
        r = ann1.get("/api/tasks/next")
        assert r.status_code == 204 and r.headers["x-rlhfkit-reason"] == "done"
        assert ann1.get("/api/me").json()["state"] == "done"
