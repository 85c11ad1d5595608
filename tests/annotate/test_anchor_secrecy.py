"""Anchors stay secret: nothing an annotator can see depends on which pairs are anchors.

The property, through the real server on SQLite and PostgreSQL: two stores that differ only
in whether one pair X is an anchor or a real pair (of the phase it is shown in), served by
the same seeded scheduler, show the annotator the same transcript: every task, every label
answer, every `/api/me` (with the progress text the labeling page shows), every 204 and its
reason, every header, task ids and deadlines aside. Then the named classes: done is done (no
anchor after the main queue ends), an abandoned calibration pair comes back whatever it is,
and progress counts every task alike.
"""

from __future__ import annotations

import contextlib
import itertools
import re
import time
import uuid
from pathlib import Path

import httpx
import pytest
from hypothesis import HealthCheck, Phase, assume, event, given, settings
from hypothesis import strategies as st

from rlhfkit.annotate import Policy, add_annotator, import_items, open_store
from rlhfkit.project import load_project
from tests.annotate.conftest import label_all, new_pg_database, pairs, running_team, write_jsonl
from tests.annotate.conftest import write_project as project_with

ROUND_START, ANCHOR_START = 100, 50  # prompts "Question 100?"..., "Question 50?"...


def kind_of(prompt: str) -> str:
    n = int(re.search(r"\d+", prompt).group())
    return "calibration" if n >= ROUND_START else "anchor" if n >= ANCHOR_START else "main"


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.slow)])
def new_db(request, tmp_path):
    """A factory of fresh, empty store locations on one database."""
    if request.param == "sqlite":
        return lambda: f"sqlite:///{tmp_path / uuid.uuid4().hex}.sqlite"
    server = request.getfixturevalue("pg_server")
    return lambda: new_pg_database(server)


@contextlib.contextmanager
def world(root: Path, db: str, round_items, main_items, anchors, seed: int, rate: float):
    """A store (round items imported first, so they are the whole first round), ann1 and an
    admin, and a server whose scheduler is seeded with `seed`."""
    from rlhfkit.annotate.server import serve_in_background

    project_with(root, overlap=1, calibration_size=10 if round_items else 0, anchor_rate=rate)
    policy = Policy.from_project(load_project(root))
    store = open_store(db, create=True)
    try:
        if round_items:
            import_items(store, policy, items=write_jsonl(root / "round.jsonl", round_items))
        import_items(
            store,
            policy,
            items=write_jsonl(root / "items.jsonl", main_items),
            anchors=write_jsonl(root / "anchors.jsonl", anchors) if anchors else None,
        )
        tokens = {n: add_annotator(store, n, admin=n == "admin") for n in ("ann1", "admin")}
    finally:
        store.close()
    with serve_in_background(db, root, seed=seed) as url:
        yield url, tokens


def transcript(url: str, tokens: dict[str, str]) -> tuple[list, list[str]]:
    """Drive ann1 until done: the normalised transcript, and the prompts shown in order. When
    the gate holds the annotator, the admin overrides it (that is not ann1's to see)."""
    auth = {"Authorization": f"Bearer {tokens['ann1']}"}
    admin = {"Authorization": f"Bearer {tokens['admin']}"}
    ids: dict[str, str] = {}
    out: list = []
    shown: list[str] = []

    def norm(value):
        if isinstance(value, dict):
            return {k: norm(v) for k, v in value.items() if k != "expires_at"}
        if isinstance(value, list):
            return [norm(v) for v in value]
        if isinstance(value, str) and re.fullmatch(r"[0-9a-f]{32}", value):
            return ids.setdefault(value, f"task{len(ids)}")
        return value

    def seen(r: httpx.Response) -> tuple:
        headers = {k: v for k, v in r.headers.items() if k not in ("date", "content-length")}
        body = norm(r.json()) if r.content else None
        return (r.request.method, r.request.url.path, r.status_code, headers, body)

    with httpx.Client(base_url=url, headers=auth, timeout=30) as client:
        page = client.get("/label").text
        out.append(re.sub(r'name="csrf-token" content="\w*"', "", page))
        overridden = False
        for _ in range(100):
            out.append(seen(client.get("/api/me")))
            r = client.get("/api/tasks/next")
            out.append(seen(r))
            if r.status_code == 204:
                if r.headers["x-rlhfkit-reason"] == "calibration_gate" and not overridden:
                    why = {"reason": "test"}
                    assert client.post("/api/admin/override", json=why, headers=admin).is_success
                    overridden = True
                    continue
                break
            task = r.json()
            shown.append(task["prompt"])
            body = {"task_id": task["task_id"], "choice": "first", "client_id": uuid.uuid4().hex}
            out.append(seen(client.post("/api/labels", json=body)))
        out += [seen(client.get("/api/tasks/next")) for _ in range(3)]  # done stays done
        out.append(seen(client.get("/api/me")))
    return out, shown


@pytest.mark.slow  # starts two servers per example
@settings(
    max_examples=8,
    deadline=None,
    phases=[Phase.explicit, Phase.generate],  # each example starts two servers: no shrinking
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.filter_too_much],
)
@given(
    seed=st.integers(0, 2**20),
    rate=st.sampled_from([0.25, 0.35, 0.5]),
    n_main=st.integers(5, 10),
    n_round=st.sampled_from([0, 3]),
    n_anchors=st.integers(1, 3),
)
def test_whether_a_pair_is_an_anchor_changes_nothing_the_annotator_sees(
    new_db, tmp_path, seed, rate, n_main, n_round, n_anchors
):
    case = tmp_path / uuid.uuid4().hex
    round_items = pairs(n_round, start=ROUND_START)
    main_items = pairs(n_main)
    anchors = [dict(p, label="A") for p in pairs(n_anchors, "gold", start=ANCHOR_START)]
    with world(case / "a", new_db(), round_items, main_items, anchors, seed, rate) as served:
        told_a, shown = transcript(*served)
    # X: the last anchor shown. Every anchor must have been shown before it, so that where
    # world A draws X, world B (X a real pair) has no anchor left to draw.
    shown_anchors = [p for p in shown if kind_of(p) == "anchor"]
    assume(len(shown_anchors) == n_anchors)
    x_prompt = shown_anchors[-1]
    at = shown.index(x_prompt)
    # X becomes a real pair of the phase it was shown in, after the real pairs shown before
    # it there: the scheduler hands those out in import order.
    last_round_pair = max(
        (i for i, p in enumerate(shown) if kind_of(p) == "calibration"), default=-1
    )
    x = next(
        {k: v for k, v in a.items() if k != "label"} for a in anchors if a["prompt"] == x_prompt
    )
    rest = [a for a in anchors if a["prompt"] != x_prompt]
    round_b, main_b = round_items, main_items
    event(f"X shown in {'calibration' if at < last_round_pair else 'the main phase'}")
    if at < last_round_pair:
        j = sum(kind_of(p) == "calibration" for p in shown[:at])
        round_b = [*round_items[:j], x, *round_items[j:]]
    else:
        j = sum(kind_of(p) == "main" for p in shown[:at])
        main_b = [*main_items[:j], x, *main_items[j:]]
    with world(case / "b", new_db(), round_b, main_b, rest, seed, rate) as served:
        told_b, shown_b = transcript(*served)
    assert shown_b == shown  # the same pairs in the same order...
    assert told_b == told_a  # ...and nothing else differs either


def test_done_is_done_no_anchor_comes_after_the_main_queue_ends(db_url, tmp_path):
    anchors = [dict(p, label="A") for p in pairs(30, "gold", start=ANCHOR_START)]
    with running_team(
        tmp_path, db_url, pairs(3), anchors=anchors, overlap=1, anchor_rate=0.5
    ) as team:
        ann1 = team.client("ann1")
        label_all(ann1)  # until the first 204
        again = [ann1.get("/api/tasks/next") for _ in range(30)]
        assert [(r.status_code, r.headers.get("x-rlhfkit-reason")) for r in again] == [
            (204, "done")
        ] * 30
        assert ann1.get("/api/me").json()["state"] == "done"


def test_an_abandoned_calibration_pair_comes_back_whether_or_not_it_is_an_anchor(db_url, tmp_path):
    anchors = [dict(p, label="A") for p in pairs(20, "gold", start=ANCHOR_START)]
    with running_team(
        tmp_path,
        db_url,
        pairs(3, start=ROUND_START),  # the whole first round
        anchors=anchors,
        overlap=1,
        calibration_size=3,
        anchor_rate=0.5,
        task_timeout_s=0.3,
    ) as team:
        ann1 = team.client("ann1")
        abandoned, back = [], []
        while (r := ann1.get("/api/tasks/next")).status_code == 200:
            task = r.json()
            assert task["phase"] == "calibration"
            if task["prompt"] not in abandoned:
                abandoned.append(task["prompt"])  # walk away; the task times out
                time.sleep(0.4)
                continue
            back.append(task["prompt"])
            body = {"task_id": task["task_id"], "choice": "first", "client_id": uuid.uuid4().hex}
            assert ann1.post("/api/labels", json=body).status_code == 201
        assert r.headers["x-rlhfkit-reason"] == "calibration_gate"
        assert {kind_of(p) for p in abandoned} >= {"calibration"}
        assert back == abandoned, [(p, kind_of(p)) for p in abandoned]


def test_progress_counts_every_task_alike(db_url, tmp_path):
    """After each label, /api/me moves by the same step whatever the pair was."""
    anchors = [dict(p, label="A") for p in pairs(6, "gold", start=ANCHOR_START)]
    round_items = pairs(3, start=ROUND_START)
    with world(tmp_path, db_url, round_items, pairs(6), anchors, seed=1, rate=0.5) as (url, tokens):
        ann1 = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {tokens['ann1']}"})
        admin = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {tokens['admin']}"})
        kinds, views = [], [ann1.get("/api/me").json()]
        for _ in range(40):
            r = ann1.get("/api/tasks/next")
            if r.status_code == 204:
                if r.headers["x-rlhfkit-reason"] == "done":
                    break
                admin.post("/api/admin/override", json={"reason": "one annotator"})
                continue
            task = r.json()
            kinds.append(kind_of(task["prompt"]))
            body = {"task_id": task["task_id"], "choice": "first", "client_id": uuid.uuid4().hex}
            assert ann1.post("/api/labels", json=body).status_code == 201
            views.append(ann1.get("/api/me").json())
        assert "anchor" in kinds and "main" in kinds
        assert [v["labels"] for v in views] == list(range(len(views)))
        for before, after in itertools.pairwise(views):
            assert "remaining" not in after  # a count of what is left would tell kinds apart
            if after["state"] == before["state"] == "calibration":
                assert after["calibration"]["done"] == before["calibration"]["done"] + 1
            assert after["progress"]["text"] != before["progress"]["text"]
