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
import pytest
from sqlalchemy import select, update

from rlhfkit.annotate import add_annotator, open_store
from rlhfkit.annotate import models as m
from tests.annotate.conftest import count_labels, new_pg_database, pairs, running_team

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


@pytest.mark.slow
def test_a_deadlock_victim_runs_again_on_postgresql(pg_server):
    # Two units lock two annotator rows in opposite orders, both holding their first lock
    # when they ask for the second: PostgreSQL aborts one as a deadlock victim (after its
    # deadlock_timeout, 1 s). The store runs the victim again, so both complete; before, the
    # victim's error reached the client as a 500 (a label and the same annotator's
    # next-task request on a timed-out task lock their rows in opposite orders).
    store = open_store(new_pg_database(pg_server), create=True)
    people = m.Annotator.__table__
    for name in ("a", "b"):
        add_annotator(store, name)
    barrier, attempts = threading.Barrier(2), {"a": 0, "b": 0}

    def unit(first: str, second: str):
        def run(conn):
            attempts[first] += 1
            bump = update(people).values(label_count=people.c.label_count + 1)
            conn.execute(bump.where(people.c.name == first))
            if attempts[first] == 1:
                barrier.wait()  # both hold their first row now
            conn.execute(bump.where(people.c.name == second))
            return first

        return run

    try:
        with ThreadPoolExecutor(2) as pool:
            done = list(pool.map(lambda pair: store.run(unit(*pair)), [("a", "b"), ("b", "a")]))
        assert done == ["a", "b"]
        # At least one victim, run again. Usually one; both when their deadlock checks run
        # before the first victim's locks are released (seen once under load).
        assert max(attempts.values()) >= 2
        with store.read() as conn:
            counts = conn.execute(select(people.c.label_count)).scalars().all()
        assert counts == [2, 2]
    finally:
        store.close()
