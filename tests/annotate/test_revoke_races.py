"""Revoking a token while its holder is mid-request, on SQLite and PostgreSQL.

Once a revocation (or rotation) has committed, nothing done with the old token may commit
after it: a label racing the revoke is either stored before it or refused with 401, and an
admin revoked mid-action does not complete the action. A label and a revoke take their row
locks in one order (annotator, task, item), so on PostgreSQL they never deadlock.

The deterministic tests hold a competing transaction open (one that revokes, as the admin
API would) until the request under test is waiting for it, then commit it.
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
import time
import uuid
from collections.abc import Iterator

import httpx
import pytest
from sqlalchemy import event, select

from rlhfkit.annotate import Policy, add_annotator, import_items, open_store, security
from rlhfkit.annotate import models as m
from rlhfkit.annotate.annotators import revoke_annotator
from rlhfkit.annotate.labeling import LabelRequest, submit_label
from rlhfkit.annotate.scheduling import next_task
from tests.annotate.conftest import pairs, running_team, write_jsonl, write_project

# --- a competing transaction, held open -------------------------------------------------------


def _is_sqlite(db: str) -> bool:
    return db.startswith("sqlite")


def _connect(db: str):
    if _is_sqlite(db):
        conn = sqlite3.connect(db.removeprefix("sqlite:///"), timeout=30, isolation_level=None)
        conn.execute("BEGIN IMMEDIATE")  # the one write lock: every writer now waits for us
        return conn
    import psycopg

    return psycopg.connect(db)


@contextlib.contextmanager
def held(db: str, *statements: tuple[str, tuple]) -> Iterator[None]:
    """A transaction that runs `statements` ('?' placeholders), stays open for the block,
    then commits. SQLite has one lock for the whole file: every writer waits for it."""
    conn = _connect(db)
    try:
        for sql, args in statements:
            if _is_sqlite(db):  # BEGIN IMMEDIATE took the only lock there is
                conn.execute(sql.removesuffix(" FOR UPDATE"), args)
            else:
                conn.execute(sql.replace("?", "%s"), args)
        yield
        conn.commit() if not _is_sqlite(db) else conn.execute("COMMIT")
    finally:
        conn.close()


def wait_until_blocked(db: str, n: int = 1) -> None:
    """Until `n` other sessions wait for a lock (PostgreSQL); SQLite shows no waiters, so
    give the request time to reach its busy wait."""
    if _is_sqlite(db):
        time.sleep(0.7)
        return
    import psycopg

    with psycopg.connect(db, autocommit=True) as conn:
        for _ in range(500):
            waiting = conn.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
                " AND datname = current_database()"
            ).fetchone()[0]
            if waiting >= n:
                return
            time.sleep(0.01)
    raise AssertionError(f"fewer than {n} sessions waited for a lock")


def revoke_sql(name: str) -> list[tuple[str, tuple]]:
    """What a revoke writes: a hash nobody's token has, the open tasks expired."""
    gone = security.hash_token(security.new_token())
    return [
        ("UPDATE annotators SET token_hash = ? WHERE name = ?", (gone, name)),
        (
            "UPDATE assignments SET status = 'expired' WHERE status = 'open' AND annotator_id ="
            " (SELECT id FROM annotators WHERE name = ?)",
            (name,),
        ),
    ]


def in_thread(fn) -> tuple[threading.Thread, dict]:
    out: dict = {}

    def run():
        try:
            out["value"] = fn()
        except Exception as e:  # the test asserts on it
            out["error"] = e

    t = threading.Thread(target=run)
    t.start()
    return t, out


def labels_of(db: str, name: str) -> list:
    store = open_store(db)
    try:
        with store.read() as conn:
            return conn.execute(
                select(m.Label.id, m.Label.created_at)
                .join(m.Annotator, m.Annotator.id == m.Label.annotator_id)
                .where(m.Annotator.name == name)
            ).all()
    finally:
        store.close()


def post_label(client: httpx.Client, task: dict) -> httpx.Response:
    body = {"task_id": task["task_id"], "choice": "first", "client_id": uuid.uuid4().hex}
    return client.post("/api/labels", json=body)


# --- a label against a revoke ----------------------------------------------------------------


@pytest.mark.parametrize("phase", ["calibration", "main"])
def test_a_label_waiting_on_a_revoke_is_refused_and_not_stored(db_url, tmp_path, phase):
    # Calibration: revoke expires the task, and an expired calibration task takes a late
    # label, so the label was stored after the revoke (201). Main: 409 'timed out', not 401.
    size = 2 if phase == "calibration" else 0
    with running_team(tmp_path, db_url, pairs(4), calibration_size=size) as team:
        ann1 = team.client("ann1")
        task = ann1.get("/api/tasks/next").json()
        assert task["phase"] == phase
        with held(db_url, *revoke_sql("ann1")):
            thread, out = in_thread(lambda: post_label(ann1, task))
            wait_until_blocked(db_url)
        thread.join(timeout=60)
        assert out["value"].status_code == 401, out["value"].text
        assert labels_of(db_url, "ann1") == []


def test_labels_racing_revokes_are_stored_before_or_refused(db_url, tmp_path):
    """The real endpoints, raced: after a revoke commits, no label of that token is stored;
    the label is 201 (stored first) or 401; nothing answers 500."""
    names = tuple(f"r{i}" for i in range(12))
    with running_team(tmp_path, db_url, pairs(6), names, calibration_size=3) as team:
        admin = team.client("admin")
        outcomes = []
        for name in names:
            client = team.client(name)
            task = client.get("/api/tasks/next").json()
            go = threading.Barrier(2)

            def label(client=client, task=task, go=go):
                go.wait()
                return post_label(client, task)

            def revoke(name=name, go=go):
                go.wait()
                return admin.post(f"/api/admin/annotators/{name}/revoke")

            (tl, lab), (tr, rev) = in_thread(label), in_thread(revoke)
            tl.join(timeout=60)
            tr.join(timeout=60)
            assert rev["value"].status_code == 200, rev["value"].text
            assert lab["value"].status_code in (201, 401), lab["value"].text
            outcomes.append(lab["value"].status_code)
            revoked_at = rev["value"].json()["revoked_at"]
            stored = labels_of(team.db, name)
            assert len(stored) == (lab["value"].status_code == 201)
            assert all(row.created_at < revoked_at for row in stored)
        print("label outcomes:", {c: outcomes.count(c) for c in set(outcomes)})


@pytest.mark.slow
def test_a_label_and_a_revoke_take_their_locks_in_one_order(pg_server, tmp_path):
    """A label locked its task, then its item, then its annotator; a revoke locks the
    annotator, then the task: with the label held up at the item, the two deadlocked."""
    from tests.annotate.conftest import new_pg_database

    db = new_pg_database(pg_server)
    write_project(tmp_path / "project", overlap=1)
    from rlhfkit.project import load_project

    policy = Policy.from_project(load_project(tmp_path / "project"))
    store = open_store(db, create=True)
    deadlocks = []
    event.listen(
        store.engine,
        "handle_error",
        lambda ctx: (
            deadlocks.append(ctx.original_exception)
            if "deadlock" in str(ctx.original_exception).lower()
            else None
        ),
    )
    try:
        import_items(store, policy, items=write_jsonl(tmp_path / "items.jsonl", pairs(2)))
        token = add_annotator(store, "ann1")
        with store.read() as conn:
            me = conn.execute(select(m.Annotator.id).where(m.Annotator.name == "ann1")).scalar()
        task = next_task(store, policy, me)
        with store.read() as conn:
            item = conn.execute(
                select(m.Assignment.item_id).where(m.Assignment.id == task.task_id)
            ).scalar()
        req = LabelRequest(task.task_id, "first", "c1")
        with held(db, ("SELECT id FROM items WHERE id = ? FOR UPDATE", (item,))):
            tl, lab = in_thread(lambda: submit_label(store, policy, me, req))
            wait_until_blocked(db, 1)
            tr, rev = in_thread(lambda: revoke_annotator(store, "ann1"))
            wait_until_blocked(db, 2)
        tl.join(timeout=60)
        tr.join(timeout=60)
        assert "error" not in lab and "error" not in rev, (lab, rev)
        assert deadlocks == []
        assert lab["value"].created and rev["value"].released == 0
        assert token
    finally:
        store.close()


# --- an admin revoked mid-action -------------------------------------------------------------


@pytest.mark.parametrize("action", ["revoke", "rotate"])
def test_an_admin_revoked_mid_action_does_nothing(db_url, tmp_path, action):
    """The admin's token passed the check, then the admin was revoked while the action
    waited for the store: the action must not happen (401)."""
    with running_team(tmp_path, db_url, pairs(2)) as team:
        admin = team.client("admin")
        ann1 = team.client("ann1")
        assert ann1.get("/api/me").status_code == 200
        statements = [("SELECT id FROM annotators WHERE name = ? FOR UPDATE", ("ann1",))]
        with held(db_url, *statements, *revoke_sql("admin")):
            thread, out = in_thread(lambda: admin.post(f"/api/admin/annotators/ann1/{action}"))
            wait_until_blocked(db_url)
        thread.join(timeout=60)
        assert out["value"].status_code == 401, out["value"].text
        assert ann1.get("/api/me").status_code == 200  # ann1's token still works


@pytest.mark.parametrize("action", ["revoke", "rotate"])
def test_an_admin_revoked_mid_action_on_the_dashboard_does_nothing(db_url, tmp_path, action):
    from tests.annotate.routes.test_pages import _secret, login

    with running_team(tmp_path, db_url, pairs(2)) as team:
        browser = login(team, "admin")
        ann1 = team.client("ann1")
        csrf = security.csrf_token(_secret(team), security.hash_token(team.tokens["admin"]))
        statements = [("SELECT id FROM annotators WHERE name = ? FOR UPDATE", ("ann1",))]
        with held(db_url, *statements, *revoke_sql("admin")):
            thread, out = in_thread(
                lambda: browser.post(
                    f"/admin/annotators/{action}", data={"name": "ann1", "csrf": csrf}
                )
            )
            wait_until_blocked(db_url)
        thread.join(timeout=60)
        assert out["value"].status_code in (303, 401, 403), out["value"].text
        assert "rlk_" not in out["value"].text
        assert ann1.get("/api/me").status_code == 200


def test_an_admin_revoked_mid_override_does_nothing(db_url, tmp_path):
    with running_team(tmp_path, db_url, pairs(4), calibration_size=2) as team:
        admin = team.client("admin")
        statements = [("SELECT id FROM rounds FOR UPDATE", ())]
        with held(db_url, *statements, *revoke_sql("admin")):
            thread, out = in_thread(lambda: admin.post("/api/admin/override", json={"reason": "x"}))
            wait_until_blocked(db_url)
        thread.join(timeout=60)
        assert out["value"].status_code == 401, out["value"].text
