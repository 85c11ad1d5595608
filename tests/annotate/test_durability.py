"""Every 201 is durable: 32 clients label through a real `rlhfkit annotate serve` process,
the process is killed with SIGKILL mid-stream, restarted, and every acknowledged label is
there exactly once; requests that were in flight are replayed and stored at most once."""

from __future__ import annotations

import threading
import time
import uuid

import httpx
import pytest
from sqlalchemy import func, select

from rlhfkit.annotate import Policy, add_annotator, import_items, open_store
from rlhfkit.annotate import models as m
from rlhfkit.project import load_project
from tests.annotate.conftest import free_port, pairs, write_jsonl, write_project
from tests.cli.test_annotate import start_server

pytestmark = pytest.mark.slow  # a server process, killed with SIGKILL and restarted

CLIENTS = 32


class Labeler(threading.Thread):
    """One annotator labeling as fast as the server answers, until told to stop or the
    server dies. Remembers what was acknowledged and what was in flight."""

    def __init__(self, base_url: str, token: str):
        super().__init__(daemon=True)
        self.client = httpx.Client(
            base_url=base_url, headers={"Authorization": f"Bearer {token}"}, timeout=10
        )
        self.acknowledged: list[dict] = []
        self.in_flight: dict | None = None
        self.stop = threading.Event()
        self.error: Exception | None = None

    def run(self) -> None:
        try:
            while not self.stop.is_set():
                r = self.client.get("/api/tasks/next")
                if r.status_code == 204:
                    return
                body = {
                    "task_id": r.json()["task_id"],
                    "choice": "first",
                    "client_id": uuid.uuid4().hex,
                }
                self.in_flight = body
                r = self.client.post("/api/labels", json=body)
                assert r.status_code == 201, r.text
                self.acknowledged.append(body)
                self.in_flight = None
        except httpx.TransportError:
            return  # the server was killed
        except Exception as e:
            self.error = e


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_kill_9_loses_no_acknowledged_label_and_stores_none_twice(backend, tmp_path, request):
    project = write_project(tmp_path / "p", overlap=1)
    if backend == "sqlite":
        db = f"sqlite:///{tmp_path / 'annotations.sqlite'}"
    else:
        from tests.annotate.conftest import new_pg_database

        db = new_pg_database(request.getfixturevalue("pg_server"))
    store = open_store(db, create=True)
    policy = Policy.from_project(load_project(project))
    import_items(store, policy, items=write_jsonl(tmp_path / "items.jsonl", pairs(1500)))
    tokens = [add_annotator(store, f"ann{i}") for i in range(CLIENTS)]
    store.close()

    port = free_port()
    server = start_server(project, port, "--db", db)
    url = f"http://127.0.0.1:{port}"
    labelers = [Labeler(url, t) for t in tokens]
    for t in labelers:
        t.start()
    deadline = time.monotonic() + 30
    while sum(len(t.acknowledged) for t in labelers) < 120 and time.monotonic() < deadline:
        time.sleep(0.05)
    server.kill()  # SIGKILL: no shutdown, no flush, nothing after the last commit
    server.wait()
    for t in labelers:
        t.join(timeout=20)
    assert not [t.error for t in labelers if t.error]
    acknowledged = [b for t in labelers for b in t.acknowledged]
    assert len(acknowledged) > 50, "too few labels before the kill to test anything"

    server = start_server(project, port, "--db", db)
    try:
        replayed = []
        for t in labelers:
            for body in t.acknowledged[-3:]:  # an acknowledged label replayed: 200, no copy
                assert t.client.post("/api/labels", json=body).status_code == 200
            if t.in_flight is not None:  # unknown outcome: the replay settles it
                r = t.client.post("/api/labels", json=t.in_flight)
                assert r.status_code in (200, 201), r.text
                replayed.append(t.in_flight)
    finally:
        server.kill()
        server.wait()
        for t in labelers:
            t.client.close()

    store = open_store(db)
    with store.read() as conn:
        stored = conn.execute(select(m.Label.client_id)).scalars().all()
        per_item = conn.execute(select(func.max(m.Item.labels))).scalar_one()
        taken = conn.execute(
            select(func.count()).select_from(m.Item).where(m.Item.taken < m.Item.labels)
        ).scalar_one()
    store.close()
    assert len(stored) == len(set(stored))  # none twice
    expected = {b["client_id"] for b in acknowledged} | {b["client_id"] for b in replayed}
    assert set(stored) == expected  # every acknowledged label, nothing unexplained
    assert per_item == 1 and taken == 0  # counters agree with the labels
