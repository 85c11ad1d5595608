"""Replays of one label racing each other, on SQLite and on PostgreSQL.

A client that times out resends its label with the same `client_id`; a flaky network can
deliver several copies at once. Whatever the interleaving, the first copy stored is 201, every
other copy is 200 with the same label id, and exactly one label is stored. On PostgreSQL
(READ COMMITTED) a copy may read the task after another copy has committed: the answer must
still be "a replay", not "this task already has a label".
"""

from __future__ import annotations

import threading
import uuid
from concurrent.futures import ThreadPoolExecutor

import httpx

from tests.annotate.conftest import pairs, running_team
from tests.annotate.test_api import count_labels

COPIES, TRIALS = 8, 24


def fire_at_once(clients: list[httpx.Client], body: dict) -> list[httpx.Response]:
    """Each client posts `body` on its own connection, all released by one barrier."""
    barrier = threading.Barrier(len(clients))

    def post(client: httpx.Client) -> httpx.Response:
        barrier.wait()
        return client.post("/api/labels", json=body)

    with ThreadPoolExecutor(len(clients)) as pool:
        return list(pool.map(post, clients))


def test_concurrent_replays_are_one_201_and_the_rest_200(db_url, tmp_path):
    with running_team(tmp_path, db_url, pairs(TRIALS), annotators=("ann1",)) as team:
        clients = [team.client("ann1") for _ in range(COPIES)]
        for client in clients:  # open every connection before the race
            assert client.get("/api/me").status_code == 200
        outcomes = []
        for trial in range(TRIALS):
            task = clients[0].get("/api/tasks/next").json()
            body = {
                "task_id": task["task_id"],
                "choice": "second",
                "client_id": uuid.uuid4().hex,
                "criteria": {"tone": "first"},
                "rationale": f"trial {trial}",
            }
            answers = fire_at_once(clients, body)
            codes = sorted(r.status_code for r in answers)
            outcomes.append(codes)
            assert codes == [200] * (COPIES - 1) + [201], (
                f"trial {trial}: {codes} {[r.text for r in answers if r.status_code != 200]}"
            )
            assert len({r.json()["label_id"] for r in answers}) == 1
            assert count_labels(team.db) == trial + 1
        assert clients[0].get("/api/tasks/next").status_code == 204
