"""Every null in the annotation status (`rlhfkit annotate status --json`, `/api/admin/status`)
carries its reason, and the status is strict JSON, on SQLite and PostgreSQL, in the states
where statistics are undefined: no labels, one annotator, every label the same, a
calibration round that one annotator has finished.

A null reached through key k of a dict d is explained by d[k + "_note"] or by
d[k + "_notes"][next key], for any d along its path: the agreement package's convention, and
its walker (tests/cli/test_agreement.py)."""

from __future__ import annotations

import random
import uuid

import pytest

from rlhfkit import strict_json
from rlhfkit.annotate import Policy, add_annotator, import_items, open_store, status
from rlhfkit.annotate.annotators import revoke_annotator
from rlhfkit.annotate.labeling import LabelRequest, submit_label
from rlhfkit.annotate.scheduling import NoTask, next_task
from tests.annotate.conftest import label_all, pairs, running_team, write_jsonl
from tests.annotate.test_rounds import annotator_id
from tests.cli.test_agreement import nulls_without_a_reason
from tests.conftest import run_cli


def label_until_done(store, policy, who: int, answer, rng, limit: int = 100) -> int:
    """Label every task `who` gets; `answer(task)` is the choice. Returns how many."""
    n = 0
    for _ in range(limit):
        task = next_task(store, policy, who, rng)
        if isinstance(task, NoTask):
            return n
        req = LabelRequest(task.task_id, answer(task), uuid.uuid4().hex)
        submit_label(store, policy, who, req)
        n += 1
    return n


def always_a(task) -> str:
    """Response A, whichever side it is shown on."""
    return "first" if task.first.startswith("Answer A") else "second"


def by_annotator(task) -> str:
    return "first"


STATES = {
    # name: (policy, who labels, how)
    "no labels": (dict(overlap=2), (), None),
    "one annotator": (dict(overlap=1), ("ann1",), by_annotator),
    "every label the same": (dict(overlap=2), ("ann1", "ann2"), always_a),
    "calibration only": (dict(overlap=2, calibration_size=3), ("ann1",), always_a),
    "calibration, two": (dict(overlap=2, calibration_size=3), ("ann1", "ann2"), always_a),
}


@pytest.mark.parametrize("state", sorted(STATES))
def test_every_null_in_the_status_says_why(db_url, tmp_path, state):
    settings, labelers, answer = STATES[state]
    policy = Policy(anchor_rate=0.0, recalibrate_every=0, calibration_size=0)
    policy = Policy(**{**policy.__dict__, **settings})
    store = open_store(db_url, create=True)
    try:
        anchors = [dict(p, label="A") for p in pairs(2, "gold", start=50)]
        import_items(
            store,
            policy,
            items=write_jsonl(tmp_path / "items.jsonl", pairs(4)),
            anchors=write_jsonl(tmp_path / "anchors.jsonl", anchors),
        )
        for name in ("ann1", "ann2", "ann3"):
            add_annotator(store, name)
        revoke_annotator(store, "ann3")
        rng = random.Random(0)
        for name in labelers:
            label_until_done(store, policy, annotator_id(store, name), answer, rng)
        s = status(store, policy, replicates=20)
    finally:
        store.close()
    missing = nulls_without_a_reason(strict_json.loads(strict_json.dumps(s)))
    assert missing == [], "\n".join(missing)


def test_the_status_route_and_command_give_strict_json_with_every_null_explained(db_url, tmp_path):
    with running_team(tmp_path, db_url, pairs(3), overlap=2, calibration_size=3) as team:
        label_all(team.client("ann1"))  # the round, by one annotator: the gate waits
        r = team.client("admin").get("/api/admin/status")
        assert r.status_code == 200, r.text
        served = strict_json.loads(r.text)
        assert served["gate"]["rounds"][0]["passed"] is None
        assert nulls_without_a_reason(served) == []
    printed = run_cli("annotate", "status", "--json", "--project", str(team.root), "--db", db_url)
    assert printed.code == 0, printed.stderr
    assert nulls_without_a_reason(strict_json.loads(printed.stdout)) == []
