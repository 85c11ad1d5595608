"""A failed calibration gate the team can act on, through the real store (SQLite and
PostgreSQL) and the real app: one gate number on every surface (`annotate status`,
`rlhfkit agreement` on the export's labels, the report), who drives the disagreement, and the
two ways on besides an override: remove the annotator who drives it, or recalibrate.

The team: ann1-ann3 always prefer response A; ann4 always prefers B. Every calibration pair
then has 3 of its 6 annotator pairs agreeing (0.5, below the 0.65 threshold); without ann4,
every pair is unanimous (1.0); ann4 agrees with nobody (0.0 pairwise)."""

from __future__ import annotations

import getpass
import json
import random
import uuid

import pytest
from sqlalchemy import select

from rlhfkit import strict_json
from rlhfkit.annotate import Policy, add_annotator, export, import_items, open_store, status
from rlhfkit.annotate import models as m
from rlhfkit.annotate.labeling import LabelRequest, submit_label
from rlhfkit.annotate.rounds import override_gate, recalibrate
from rlhfkit.annotate.scheduling import NoTask, next_task
from rlhfkit.errors import UserError
from rlhfkit.report.sections import _annotators, _gate
from tests.annotate.conftest import pairs, running_team, write_jsonl, write_project
from tests.annotate.routes.test_pages import login
from tests.annotate.test_rounds import annotator_id
from tests.cli.test_agreement import nulls_without_a_reason
from tests.conftest import run_cli

POLICY = Policy(overlap=2, calibration_size=10, anchor_rate=0.0, recalibrate_every=0)


def answer(task, prefers: str) -> str:
    """The display choice that picks response `prefers` (A or B), whichever side it is on."""
    return "first" if task.first.startswith("Answer A") == (prefers == "A") else "second"


def label_round(store, policy, who: int, prefers: str, rng, limit: int = 100) -> int:
    """Label every task `who` gets (up to `limit`); returns how many."""
    n = 0
    while n < limit:
        task = next_task(store, policy, who, rng)
        if isinstance(task, NoTask):
            break
        submit_label(
            store,
            policy,
            who,
            LabelRequest(task.task_id, answer(task, prefers), "c" + uuid.uuid4().hex),
        )
        n += 1
    return n


def failed_round(store, tmp_path, policy=POLICY) -> dict[str, int]:
    """12 pairs (10 in round 1), ann1-ann4 finish the round, ann5 labels 3 of its pairs (A),
    and an admin labels nothing. Returns the annotator ids."""
    import_items(store, policy, items=write_jsonl(tmp_path / "items.jsonl", pairs(12)))
    for name in ("ann1", "ann2", "ann3", "ann4", "ann5"):
        add_annotator(store, name)
    add_annotator(store, "lead", admin=True)
    ids = {n: annotator_id(store, n) for n in ("ann1", "ann2", "ann3", "ann4", "ann5", "lead")}
    rng = random.Random(0)
    # ann4 second: the gate is evaluated as each one finishes, and fails from then on.
    for name, prefers in (("ann1", "A"), ("ann4", "B"), ("ann2", "A"), ("ann3", "A")):
        assert label_round(store, policy, ids[name], prefers, rng) == 10
    assert label_round(store, policy, ids["ann5"], "A", rng, limit=3) == 3
    return ids


def failed_status(db_url: str, tmp_path, labels_out=None) -> dict:
    """The status after `failed_round`; with `labels_out`, the export's labels file too."""
    store = open_store(db_url, create=True)
    try:
        failed_round(store, tmp_path)
        if labels_out is not None:
            export(store, POLICY, tmp_path / "prefs.jsonl", labels_out)
        return status(store, POLICY, replicates=0)
    finally:
        store.close()


def test_one_gate_number_and_verdict_on_every_surface(sqlite_url, tmp_path):
    labels = tmp_path / "labels.jsonl"
    s = failed_status(sqlite_url, tmp_path, labels)
    gate = s["gate"]
    want = {"round": 1, "value": 0.5, "passed": False, "verdict": "failed", "pairs": 10}
    assert {k: gate[k] for k in want} == want
    assert gate["annotators"] == 4  # ann5 has not finished the round: not counted
    # The overall figure is another number (ann5's labels, all unanimous with ann1-3's A).
    assert s["agreement"]["percent_agreement"] != 0.5
    r = run_cli("agreement", str(labels), "--json")
    assert r.code == 0, r.stderr
    computed = json.loads(r.stdout)["calibration_gate"]
    want = {"value": 0.5, "passed": False, "scope": "calibration round", "items": 10}
    assert {k: computed[k] for k in want} == want and computed["annotators"] == 4
    shown = run_cli("agreement", str(labels))
    assert "percent agreement 0.500 on the calibration round's labels" in shown.stdout
    assert "over every label (not the gate)" in shown.stdout
    project = write_project(tmp_path / "project", overlap=2, calibration_size=10, anchor_rate=0)
    printed = run_cli("annotate", "status", "--project", str(project), "--db", sqlite_url)
    assert printed.code == 0, printed.stderr
    line = "calibration gate: percent agreement 0.50 on round 1 (10 pairs, 4 annotators)"
    assert line in printed.stdout and "(every label, not the gate)" in printed.stdout
    # The report: the same number and verdict from either file, or both.
    reported = [_gate(computed, gate), _gate(None, gate), _gate(computed, None)]
    assert {(g["value"], g["passed"]) for g in reported} == {("50.0%", False)}
    assert {g["verdict"] for g in reported} == {"failed: the main queue stayed closed"}


def test_status_names_who_drives_the_disagreement_and_what_to_do(sqlite_url, tmp_path):
    s = failed_status(sqlite_url, tmp_path)
    d = s["gate"]["disagreement"]
    first = d["annotators"][0]
    assert first["annotator"] == "ann4" and first["gate_without"] == 1.0
    assert first["pairwise"] == {"ann1": 0.0, "ann2": 0.0, "ann3": 0.0}
    # Without ann1 (or ann2, ann3): ann4 against two who agree, 1 of 3 pairs per item.
    assert [(x["annotator"], x["gate_without"]) for x in d["annotators"][1:]] == [
        ("ann1", pytest.approx(1 / 3)),
        ("ann2", pytest.approx(1 / 3)),
        ("ann3", pytest.approx(1 / 3)),
    ]
    assert d["remove"] == "ann4" and "rlhfkit annotate remove ann4" in d["action"]
    rows = {r["annotator"]: r for r in s["annotators"]}
    assert rows["lead"]["in_calibration"] is False  # an admin who labels nothing
    assert rows["ann5"]["in_calibration"] is True
    assert nulls_without_a_reason(strict_json.loads(strict_json.dumps(s))) == []
    reported = [r["name"] for r in _annotators({}, s, [])]  # the report's annotator table
    assert reported == ["ann1", "ann2", "ann3", "ann4", "ann5"]


def test_no_single_culprit_recommends_recalibrating(sqlite_url, tmp_path):
    store = open_store(sqlite_url, create=True)
    try:
        import_items(store, POLICY, items=write_jsonl(tmp_path / "items.jsonl", pairs(12)))
        ids = {}
        for name in ("ann1", "ann2", "ann3", "ann4"):
            add_annotator(store, name)
            ids[name] = annotator_id(store, name)
        rng = random.Random(0)
        for name, prefers in (("ann1", "A"), ("ann3", "B"), ("ann2", "A"), ("ann4", "B")):
            assert label_round(store, POLICY, ids[name], prefers, rng) == 10
        d = status(store, POLICY, replicates=0)["gate"]["disagreement"]
    finally:
        store.close()
    # Two against two: without anyone, 1 of 3 pairs agree on every item.
    assert [x["gate_without"] for x in d["annotators"]] == [pytest.approx(1 / 3)] * 4
    assert d["remove"] is None and "recalibrate --fresh" in d["action"]


def test_removing_the_driver_opens_the_main_queue_for_the_rest(db_url, tmp_path):
    with running_team(
        tmp_path, db_url, pairs(12), annotators=("ann1", "ann2", "ann3", "ann4"),
        overlap=2, calibration_size=10, anchor_rate=0.0,
    ) as team:  # fmt: skip
        clients = {n: team.client(n) for n in ("ann1", "ann4", "ann2", "ann3")}
        for name, client in clients.items():
            label_all_preferring(client, "B" if name == "ann4" else "A")
        for client in clients.values():  # the gate failed: nobody gets a pair
            r = client.get("/api/tasks/next")
            assert (r.status_code, r.headers["x-rlhfkit-reason"]) == (204, "calibration_gate")
        dashboard = login(team, "admin").get("/admin").text
        assert (
            "Gate: percent agreement <strong>0.50</strong> on round 1 (10 pairs, 4 annotators)"
            in dashboard
        )
        assert "<strong>What to do:</strong> remove ann4" in dashboard
        args = ["--project", str(team.root), "--db", db_url]
        removed = run_cli("annotate", "remove", "ann4", "--reason", "labels B throughout", *args)
        assert removed.code == 0, removed.stderr
        assert "0.50 -> 1.00" in removed.stdout and "main queue open" in removed.stdout
        assert clients["ann1"].get("/api/tasks/next").status_code == 200
        r = clients["ann4"].get("/api/tasks/next")
        assert (r.status_code, r.headers["x-rlhfkit-reason"]) == (204, "removed")
        assert clients["ann4"].get("/api/me").json()["state"] == "removed"
        again = run_cli("annotate", "remove", "ann4", "--reason", "twice", *args)
        assert again.code == 2 and "already removed" in again.stderr
        s = json.loads(run_cli("annotate", "status", "--json", *args).stdout)
        assert "removed</span> by" in login(team, "admin").get("/admin").text
    assert (s["gate"]["value"], s["gate"]["passed"], s["gate"]["annotators"]) == (1.0, True, 3)
    row = next(r for r in s["annotators"] if r["annotator"] == "ann4")
    assert row["removed"]["reason"] == "labels B throughout"
    assert row["removed"]["by"] == getpass.getuser()  # who ran the command
    assert row["labels"] == 10  # nothing deleted
    reported = next(r for r in _annotators({}, s, []) if r["name"] == "ann4")
    assert reported["flagged"] and reported["removed"].endswith(": labels B throughout")
    store = open_store(db_url)
    try:
        result = export(store, POLICY, tmp_path / "prefs.jsonl")
        with store.read() as conn:
            event = conn.execute(
                select(m.Event.actor, m.Event.detail).where(m.Event.kind == "annotator_removed")
            ).one()
    finally:
        store.close()
    assert result.removed_annotators == ["ann4"]
    assert event.actor == getpass.getuser() and event.detail["gate_after"] == 1.0
    rows = [json.loads(x) for x in (tmp_path / "prefs.jsonl").read_text().splitlines()]
    assert rows and all("ann4" not in r["annotator_ids"] for r in rows)


def label_all_preferring(client, prefers: str) -> int:
    n = 0
    while (r := client.get("/api/tasks/next")).status_code == 200:
        task = r.json()
        a_first = task["first"].startswith("Answer A")
        body = {
            "task_id": task["task_id"],
            "choice": "first" if a_first == (prefers == "A") else "second",
            "client_id": uuid.uuid4().hex,
        }
        assert client.post("/api/labels", json=body).status_code == 201
        n += 1
    return n


def test_recalibrating_on_the_same_pairs_lets_the_team_pass(db_url, tmp_path):
    store = open_store(db_url, create=True)
    try:
        ids = failed_round(store, tmp_path)
        r = recalibrate(store, POLICY, same_items=True, reason="rubric clarified", actor="lead")
        assert (r.round, r.size, r.same_items_as) == (2, 10, 1)
        rng = random.Random(1)
        seen = {}
        for name in ("ann1", "ann2", "ann3", "ann4"):  # ann4 has read the new rubric
            task = next_task(store, POLICY, ids[name], rng)
            assert task.phase == "calibration"
            seen[name] = task.prompt
            submit_label(
                store,
                POLICY,
                ids[name],
                LabelRequest(task.task_id, answer(task, "A"), uuid.uuid4().hex),
            )
            assert label_round(store, POLICY, ids[name], "A", rng, limit=9) == 9
        s = status(store, POLICY, replicates=0)
        result = export(store, POLICY, tmp_path / "prefs.jsonl")
        with store.read() as conn:
            originals = set(conn.execute(select(m.Item.prompt).where(m.Item.round == 1)).scalars())
    finally:
        store.close()
    assert set(seen.values()) <= originals  # the same pairs, shown again
    gate = s["gate"]
    assert (gate["round"], gate["value"], gate["passed"], gate["main_queue_open"]) == (
        2,
        1.0,
        True,
        True,
    )
    assert (
        gate["rounds"][1]["opened_by"] == "lead"
        and gate["rounds"][1]["reason"] == "rubric clarified"
    )
    assert s["progress"]["items"] == 12  # the copies are not more pairs to label
    assert result.rows == 10  # round 1's pairs once each (ann4 outvoted); no copy exported


def test_with_two_annotators_nobody_can_tell_whose_labels_are_off(sqlite_url, tmp_path):
    store = open_store(sqlite_url, create=True)
    try:
        import_items(store, POLICY, items=write_jsonl(tmp_path / "items.jsonl", pairs(12)))
        for name, prefers in (("ann1", "A"), ("ann2", "B")):
            add_annotator(store, name)
            label_round(store, POLICY, annotator_id(store, name), prefers, random.Random(0))
        s = status(store, POLICY, replicates=0)
    finally:
        store.close()
    d = s["gate"]["disagreement"]
    assert [x["gate_without"] for x in d["annotators"]] == [None, None]
    assert d["remove"] is None and "add a third" in d["action"]
    assert nulls_without_a_reason(strict_json.loads(strict_json.dumps(s))) == []


def test_recalibrate_fresh_and_its_refusals(sqlite_url, tmp_path):
    store = open_store(sqlite_url, create=True)
    try:
        import_items(store, POLICY, items=write_jsonl(tmp_path / "items.jsonl", pairs(12)))
        with pytest.raises(UserError, match="not been finished by anyone"):
            recalibrate(store, POLICY, same_items=False, reason="x", actor="lead")
        add_annotator(store, "ann1")
        label_round(store, POLICY, annotator_id(store, "ann1"), "A", random.Random(0))
        with pytest.raises(UserError, match="needs a reason"):
            recalibrate(store, POLICY, same_items=False, reason=" ", actor="lead")
        r = recalibrate(store, POLICY, same_items=False, reason="new round", actor="lead")
        assert (r.round, r.size, r.same_items_as) == (2, 2, None)  # the 2 pairs left
        label_round(store, POLICY, annotator_id(store, "ann1"), "A", random.Random(0))
        with pytest.raises(UserError, match="nothing to draw a fresh round from"):
            recalibrate(store, POLICY, same_items=False, reason="again", actor="lead")
    finally:
        store.close()


def test_an_admin_removes_and_recalibrates_through_the_api(sqlite_url, tmp_path):
    with running_team(
        tmp_path, sqlite_url, pairs(12), annotators=("ann1", "ann4", "ann2"),
        overlap=2, calibration_size=10, anchor_rate=0.0,
    ) as team:  # fmt: skip
        for name in ("ann1", "ann4", "ann2"):
            label_all_preferring(team.client(name), "B" if name == "ann4" else "A")
        admin, ann1 = team.client("admin"), team.client("ann1")
        body = {"reason": "labels B throughout"}
        assert ann1.post("/api/admin/annotators/ann4/remove", json=body).status_code == 403
        assert admin.post("/api/admin/annotators/nobody/remove", json=body).status_code == 404
        r = admin.post("/api/admin/annotators/ann4/remove", json=body)
        assert r.status_code == 200, r.text
        assert r.json() | {"gate_before": pytest.approx(1 / 3)} == {
            "annotator": "ann4",
            "released_tasks": 0,
            "gate_before": pytest.approx(1 / 3),  # ann4 against two who agree
            "gate_after": 1.0,
            "main_queue_open": True,
            "by": "admin",
        }
        again = admin.post("/api/admin/annotators/ann4/remove", json=body)
        assert again.status_code == 409 and "already removed" in again.json()["detail"]
        assert ann1.get("/api/tasks/next").status_code == 200  # the main queue
        r = admin.post("/api/admin/recalibrate", json={"same_items": False, "reason": "v2"})
        assert r.status_code == 200, r.text
        # 2 pairs were left out of round 1; ann1 has just been handed one of them
        assert r.json() == {"round": 2, "size": 1, "same_items_as": None, "by": "admin"}


def test_a_careful_override_needs_a_label_and_happens_once(sqlite_url, tmp_path):
    # `rlhfkit annotate override-gate` (careful): a round with one annotator's labels (its
    # gate not evaluated: that takes two) may be overridden; the same round again may not
    store = open_store(sqlite_url, create=True)
    try:
        import_items(store, POLICY, items=write_jsonl(tmp_path / "items.jsonl", pairs(12)))
        add_annotator(store, "ann1")
        with pytest.raises(UserError, match="round 1's gate was never evaluated"):
            override_gate(store, "deadline", actor="lead", careful=True)
        assert label_round(store, POLICY, annotator_id(store, "ann1"), "A", random.Random(0), 1)
        assert override_gate(store, "one annotator", actor="lead", careful=True) == 1
        with pytest.raises(UserError, match="already overridden by lead \\(one annotator\\)"):
            override_gate(store, "again", actor="ann1", careful=True, unlabelled=True)
        assert override_gate(store, "the app's admin", actor="lead") == 1  # not careful
    finally:
        store.close()
