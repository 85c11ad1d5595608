"""Revoking and rotating tokens, through the real server on SQLite and PostgreSQL and the
real CLI: the old token is refused on the very next request (bearer and page cookie alike),
labels stay, a revoked annotator's open tasks go back to the pool, the events show in the
status and the export's manifest; refusals are clear. Admins do the same on the dashboard."""

from __future__ import annotations

import json
import uuid

import httpx

from rlhfkit.annotate import security
from tests.annotate.conftest import pairs, running_team
from tests.annotate.routes.test_pages import _secret, login
from tests.conftest import run_cli


def cli(team, *args):
    return run_cli("annotate", *args, "--project", str(team.root), "--db", team.db)


def label(client: httpx.Client, task: dict, **headers) -> httpx.Response:
    body = {"task_id": task["task_id"], "choice": "first", "client_id": uuid.uuid4().hex}
    return client.post("/api/labels", json=body, headers=headers)


def test_rotate_refuses_the_old_token_at_once_and_keeps_the_work(db_url, tmp_path):
    with running_team(tmp_path, db_url, pairs(4), overlap=1) as team:
        old = team.client("ann1")
        assert label(old, old.get("/api/tasks/next").json()).status_code == 201
        task = old.get("/api/tasks/next").json()  # open when the token changes
        page = login(team, "ann1")
        assert page.get("/label").status_code == 200
        assert page.get("/api/me").status_code == 200  # both are warm in any cache

        r = cli(team, "rotate", "ann1")
        assert r.code == 0, r.stderr
        new_token = r.stdout.strip()
        assert new_token.startswith("rlk_") and "\n" not in new_token
        assert new_token != team.tokens["ann1"] and "shown once" in r.stderr

        for call in (old.get("/api/me"), old.get("/api/tasks/next"), label(old, task)):
            assert call.status_code == 401, call.text
        assert page.get("/api/me").status_code == 401
        assert page.get("/label").headers["location"] == "/login"
        again = team.client(follow_redirects=False).post(
            "/login", data={"token": team.tokens["ann1"]}
        )
        assert again.status_code == 401

        team.tokens["ann1"] = new_token
        new = team.client("ann1")
        assert new.get("/api/me").json()["labels"] == 1  # their labels stay
        assert new.get("/api/tasks/next").json()["task_id"] == task["task_id"]  # and their task
        assert label(new, task).status_code == 201


def test_revoke_releases_open_tasks_and_is_recorded(db_url, tmp_path):
    with running_team(tmp_path, db_url, pairs(2), overlap=1) as team:
        ann1, ann2 = team.client("ann1"), team.client("ann2")
        assert label(ann1, ann1.get("/api/tasks/next").json()).status_code == 201
        held = ann1.get("/api/tasks/next").json()
        assert ann2.get("/api/tasks/next").status_code == 204  # ann1 holds the last slot

        r = cli(team, "revoke", "ann1")
        assert r.code == 0, r.stderr
        assert "ann1" in r.stdout and "1 open task released" in r.stdout
        assert ann1.get("/api/me").status_code == 401
        assert label(ann1, held).status_code == 401
        freed = ann2.get("/api/tasks/next")
        assert freed.status_code == 200 and freed.json()["prompt"] == held["prompt"]

        twice = cli(team, "revoke", "ann1")
        assert twice.code == 2 and "already revoked" in twice.stderr
        for command in ("revoke", "rotate"):
            unknown = cli(team, command, "nobody")
            assert unknown.code == 2 and "no annotator named 'nobody'" in unknown.stderr
            assert "Traceback" not in unknown.stderr
        rotate = cli(team, "rotate", "ann1")
        assert rotate.code == 2 and "revoked" in rotate.stderr and not rotate.stdout.strip()

        status = json.loads(cli(team, "status", "--json").stdout)
        events = status["token_events"]
        assert [(e["annotator"], e["event"], e["by"]) for e in events] == [
            ("ann1", "revoked", "cli")
        ]
        assert events[0]["at"] > 0
        row = {a["annotator"]: a for a in status["annotators"]}["ann1"]
        assert row["revoked"] is True and row["labels"] == 1  # the label stays
        human = cli(team, "status")
        assert "ann1's token revoked" in human.stdout and " UTC" in human.stdout

        label(ann2, freed.json())
        out = tmp_path / "prefs.jsonl"
        assert cli(team, "export", str(out)).code == 0
        manifest = json.loads((tmp_path / "prefs.jsonl.manifest.json").read_text())
        assert [e["event"] for e in manifest["annotation"]["token_events"]] == ["revoked"]
        assert {r["annotator_ids"][0] for r in map(json.loads, out.read_text().splitlines())} == {
            "ann1",
            "ann2",
        }


def test_admins_revoke_and_rotate_on_the_dashboard(db_url, tmp_path):
    with running_team(tmp_path, db_url, pairs(3)) as team:
        ann1, ann2, ann3 = team.client("ann1"), team.client("ann2"), team.client("ann3")
        admin = team.client("admin")
        for c in (ann1, ann2, ann3):
            assert c.get("/api/me").status_code == 200
        assert ann1.post("/api/admin/annotators/ann2/revoke").status_code == 403
        r = admin.post("/api/admin/annotators/ann2/revoke")
        assert r.status_code == 200 and r.json()["annotator"] == "ann2"
        assert ann2.get("/api/me").status_code == 401
        assert admin.post("/api/admin/annotators/ann2/revoke").status_code == 409
        assert admin.post("/api/admin/annotators/nobody/rotate").status_code == 404
        rotated = admin.post("/api/admin/annotators/ann1/rotate").json()
        assert ann1.get("/api/me").status_code == 401
        fresh = team.client()
        fresh.headers["Authorization"] = f"Bearer {rotated['token']}"
        assert fresh.get("/api/me").json()["annotator"] == "ann1"

        # The page: forms with the CSRF token; the new token is shown once.
        browser = login(team, "admin")
        page = browser.get("/admin").text
        assert 'action="/admin/annotators/revoke"' in page and "revoked" in page
        csrf = security.csrf_token(_secret(team), security.hash_token(team.tokens["admin"]))
        form = {"name": "ann3", "csrf": csrf}
        assert (
            browser.post("/admin/annotators/rotate", data=form | {"csrf": "x"}).status_code == 403
        )
        shown = browser.post("/admin/annotators/rotate", data=form)
        assert shown.status_code == 200 and "rlk_" in shown.text
        assert ann3.get("/api/me").status_code == 401
        assert browser.post("/admin/annotators/revoke", data=form).status_code == 200
        unknown = browser.post("/admin/annotators/revoke", data=form | {"name": "nobody"})
        assert unknown.status_code == 422 and "no annotator named" in unknown.text
        # cookie API calls need the CSRF header too
        assert browser.post("/api/admin/annotators/ann1/revoke").status_code == 403
