"""Tokens and the admin-only endpoints against a real server, on SQLite and on PostgreSQL."""

from __future__ import annotations

from sqlalchemy import select

from rlhfkit.annotate import models as m
from rlhfkit.annotate import open_store
from tests.annotate.conftest import pairs, running_team


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
