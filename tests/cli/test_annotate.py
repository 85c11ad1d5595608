"""`rlhfkit annotate ...` through the real CLI: import, add-annotator, serve, status, export,
and the export read by `data validate`, `agreement` and `train rm`."""

from __future__ import annotations

import getpass
import json
import os
import signal
import subprocess
import time
import uuid

import httpx
import pytest
from sqlalchemy import create_engine, select, text

from rlhfkit.annotate import models as m
from rlhfkit.annotate import open_store
from tests.annotate.conftest import free_port, pairs, write_jsonl, write_project
from tests.conftest import RLHFKIT, run_cli


def project_args(project, db=None):
    return ["--project", str(project)] + (["--db", db] if db else [])


def start_server(project, port, *extra):
    env = {**os.environ, "NO_COLOR": "1"}
    proc = subprocess.Popen(
        [RLHFKIT, "annotate", "serve", "--port", str(port), "--project", str(project), *extra],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            httpx.get(f"http://127.0.0.1:{port}/login", timeout=1)
            return proc
        except httpx.TransportError:
            if proc.poll() is not None:
                raise AssertionError(proc.stderr.read()) from None
            time.sleep(0.1)
    proc.kill()
    raise AssertionError("the server did not start")


@pytest.mark.slow
def test_import_label_status_export_then_validate_agreement_and_train(tmp_path):
    project = write_project(tmp_path / "p", overlap=3, calibration_size=2, anchor_rate=0.2)
    items = write_jsonl(tmp_path / "items.jsonl", pairs(8))
    anchors = write_jsonl(tmp_path / "anchors.jsonl", [dict(p, label="A") for p in pairs(5, "g")])
    r = run_cli("annotate", "import", str(items), "--anchors", str(anchors), *project_args(project))
    assert r.code == 0, r.stderr
    assert "imported 8 pairs, 5 anchors" in r.stdout and "calibration round 1: 2 pairs" in r.stdout
    assert (project / "artifacts" / "annotations.sqlite").exists()
    again = run_cli("annotate", "import", str(items), *project_args(project))
    assert "0 pairs, 0 anchors, 8 already imported" in again.stdout
    tokens = {}
    for name in ("ann1", "ann2", "ann3", "lead"):
        extra = ["--admin"] if name == "lead" else []
        r = run_cli("annotate", "add-annotator", name, *extra, *project_args(project))
        assert r.code == 0, r.stderr
        tokens[name] = r.stdout.strip()
        assert tokens[name].startswith("rlk_") and "\n" not in tokens[name]
        assert "shown once" in r.stderr

    port = free_port()
    server = start_server(project, port)
    try:
        clients = [
            httpx.Client(
                base_url=f"http://127.0.0.1:{port}",
                headers={"Authorization": f"Bearer {tokens[name]}"},
            )
            for name in ("ann1", "ann2", "ann3")
        ]
        busy = True
        while busy:  # round-robin: the gate opens only once two have calibrated
            busy = False
            for client in clients:
                t = client.get("/api/tasks/next")
                if t.status_code == 204:
                    continue
                busy, task = True, t.json()
                # Everyone prefers response A, whichever side it is shown on: full agreement.
                a_first = task["first"].startswith("Answer A")
                body = {"task_id": task["task_id"], "client_id": uuid.uuid4().hex}
                body["choice"] = "first" if a_first else "second"
                assert client.post("/api/labels", json=body).status_code == 201
        for client in clients:
            client.close()
    finally:
        server.send_signal(signal.SIGINT)
        _, err = server.communicate(timeout=20)
    assert server.returncode == 0, err  # Ctrl+C is the normal way to stop
    assert f"http://127.0.0.1:{port}/" in err and "warning" not in err  # loopback by default

    r = run_cli("annotate", "status", "--json", *project_args(project))
    assert r.code == 0, r.stderr
    status = json.loads(r.stdout)
    assert status["progress"]["complete_items"] == 8
    assert status["gate"]["main_queue_open"] is True
    assert status["agreement"]["percent_agreement"] == 1.0
    human = run_cli("annotate", "status", *project_args(project))
    assert human.code == 0 and "8 of 8 pairs have 3 labels" in human.stdout

    out, labels, gold = tmp_path / "prefs.jsonl", tmp_path / "labels.jsonl", tmp_path / "gold.jsonl"
    r = run_cli(
        "annotate", "export", str(out), "--labels", str(labels), "--gold", str(gold),
        *project_args(project),
    )  # fmt: skip
    assert r.code == 0, r.stderr
    assert "8 preference pairs" in r.stdout
    rows = [json.loads(x) for x in out.read_text().splitlines()]
    assert len(rows) == 8
    for row in rows:
        assert row["chosen"].startswith("Answer A") and row["rejected"].startswith("Answer B")
        assert row["margin"] == 1.0 and row["rubric_version"] == "1"
        assert sorted(row["votes"]) == row["annotator_ids"] == ["ann1", "ann2", "ann3"]
        assert set(row["votes"].values()) == {"chosen"} and row["tie"] is row["both_bad"] is False
    manifest = json.loads((tmp_path / "prefs.jsonl.manifest.json").read_text())
    assert manifest["annotation"]["gate"]["rounds"][0]["passed"] is True

    validated = run_cli("data", "validate", str(out))
    assert validated.code == 0 and ", 8 rows" in validated.stdout, validated.stderr
    agreement = run_cli("agreement", str(labels), "--anchors", str(gold), "--json")
    assert agreement.code == 0, agreement.stderr
    summary = json.loads(agreement.stdout)
    assert summary["percent_agreement"] == 1.0
    assert all(a["anchor_accuracy"] in (1.0, None) for a in summary["annotators"])
    assert {a["annotator"] for a in summary["annotators"]} == {"ann1", "ann2", "ann3"}

    rm = run_cli(
        "train", "rm", "--model", "tiny-random", "--data", str(out), "--output-dir",
        str(tmp_path / "rm"), "--precision", "fp32", "--max-steps", "2",
    )  # fmt: skip
    assert rm.code == 0, rm.stderr
    assert (tmp_path / "rm" / "final" / "rlhfkit-manifest.json").exists()


@pytest.mark.slow
def test_a_bad_import_row_fails_with_file_and_line_and_writes_nothing(tmp_path):
    project = write_project(tmp_path / "p")
    good = pairs(2)
    rows = [
        good[0],
        "{not json",
        {"prompt": "p", "response_a": "same", "response_b": "same"},
        good[1],
    ]
    items = write_jsonl(tmp_path / "items.jsonl", rows)
    r = run_cli("annotate", "import", str(items), *project_args(project), own_process=True)
    assert r.code == 2
    assert "items.jsonl:2:" in r.stderr and "items.jsonl:3:" in r.stderr
    assert "Traceback" not in r.stderr
    assert not (project / "artifacts" / "annotations.sqlite").exists()

    no_gold = write_jsonl(tmp_path / "anchors.jsonl", pairs(1, "g"))
    r = run_cli("annotate", "import", "--anchors", str(no_gold), *project_args(project))
    assert (
        r.code == 2 and "anchors.jsonl:1: an anchor needs its known answer in 'label'" in r.stderr
    )
    tie_gold = write_jsonl(tmp_path / "tie.jsonl", [dict(pairs(1, "t")[0], label="tie")])
    r = run_cli("annotate", "import", "--anchors", str(tie_gold), *project_args(project))
    assert r.code == 2 and "does not let annotators give" in r.stderr  # ties are forbidden
    dupes = write_jsonl(tmp_path / "dupes.jsonl", [good[0], good[0]])
    r = run_cli("annotate", "import", str(dupes), *project_args(project))
    assert r.code == 2 and "dupes.jsonl:2: id 'item0' repeats" in r.stderr

    ok = run_cli(
        "annotate", "import", str(write_jsonl(tmp_path / "ok.jsonl", good)), *project_args(project)
    )
    assert ok.code == 0 and "imported 2 pairs, 0 anchors" in ok.stdout, ok.stderr
    changed = write_jsonl(tmp_path / "changed.jsonl", [dict(good[0], response_b="other")])
    r = run_cli("annotate", "import", str(changed), *project_args(project))
    assert r.code == 2 and "already in the store with different content" in r.stderr


def test_refusals_are_clear(tmp_path):
    project = write_project(tmp_path / "p")
    missing = run_cli("annotate", "status", *project_args(project))
    assert missing.code == 2 and "no annotation database here" in missing.stderr
    write_jsonl(tmp_path / "items.jsonl", pairs(2))
    assert (
        run_cli("annotate", "import", str(tmp_path / "items.jsonl"), *project_args(project)).code
        == 0
    )
    twice = [run_cli("annotate", "add-annotator", "ann1", *project_args(project)) for _ in range(2)]
    assert twice[0].code == 0 and twice[1].code == 2 and "already exists" in twice[1].stderr
    bad_name = run_cli("annotate", "add-annotator", "a b", *project_args(project))
    assert bad_name.code == 2 and "annotator name" in bad_name.stderr
    nothing = run_cli("annotate", "export", str(tmp_path / "out.jsonl"), *project_args(project))
    assert nothing.code == 2 and "nothing written" in nothing.stderr
    assert not (tmp_path / "out.jsonl").exists()
    no_round = run_cli("annotate", "override-gate", "--reason", "x", *project_args(project))
    assert no_round.code == 2 and "no calibration round" in no_round.stderr

    # A store written by another schema version is refused, not misread.
    db = project / "artifacts" / "annotations.sqlite"
    engine = create_engine(f"sqlite:///{db}")
    with engine.begin() as conn:
        conn.execute(text("UPDATE rlhfkit_meta SET value = '99' WHERE key = 'schema_version'"))
    engine.dispose()
    r = run_cli("annotate", "status", *project_args(project))
    assert r.code == 2 and "schema version 99; this rlhfkit reads version 2" in r.stderr
    pg = run_cli(
        "annotate", "status", "--db", "postgresql://nobody@127.0.0.1:1/x", *project_args(project)
    )
    assert pg.code == 2 and "cannot open the annotation database" in pg.stderr
    assert "Traceback" not in r.stderr + pg.stderr


def test_recalibrate_remove_and_override_record_who_ran_them(tmp_path):
    project = write_project(tmp_path / "p", calibration_size=2)
    args = project_args(project)
    assert (
        run_cli("annotate", "import", str(write_jsonl(tmp_path / "i.jsonl", pairs(4))), *args).code
        == 0
    )
    which = run_cli("annotate", "recalibrate", "--reason", "x", *args)
    assert which.code == 2 and "--same-items" in which.stderr and "--fresh" in which.stderr
    unfinished = run_cli("annotate", "recalibrate", "--fresh", "--reason", "x", *args)
    assert unfinished.code == 2 and "not been finished by anyone" in unfinished.stderr
    unknown = run_cli("annotate", "remove", "nobody", "--reason", "x", *args)
    assert unknown.code == 2 and "no annotator named 'nobody'" in unknown.stderr
    both = run_cli("annotate", "recalibrate", "--fresh", "--same-items", "--reason", "x", *args)
    assert both.code == 2 and "give one of --same-items" in both.stderr
    never = run_cli("annotate", "override-gate", "--reason", "deadline", *args)
    assert never.code == 2 and "round 1's gate was never evaluated: nobody has labelled" in (
        never.stderr
    )
    assert "--unlabelled" in never.stderr
    override = ("annotate", "override-gate", "--reason", "deadline", "--unlabelled")
    assert run_cli(*override, *args).code == 0
    again = run_cli("annotate", "override-gate", "--reason", "again", "--by", "lead", *args)
    assert again.code == 2, again.stdout  # like a second `remove`
    assert f"round 1's gate was already overridden by {getpass.getuser()} (deadline)" in (
        again.stderr
    )
    events = json.loads(run_cli("annotate", "status", "--json", *args).stdout)["gate"]["rounds"]
    assert events[0]["override"]["reason"] == "deadline"  # the refused one changed nothing
    assert events[0]["opened_by"] == getpass.getuser()  # `annotate import` opened round 1
    store = open_store(str(project / "artifacts" / "annotations.sqlite"))
    try:
        with store.read() as conn:
            actors = (
                conn.execute(
                    select(m.Event.actor)
                    .where(m.Event.kind == "gate_override")
                    .order_by(m.Event.id)
                )
                .scalars()
                .all()
            )
    finally:
        store.close()
    assert actors == [getpass.getuser()]


@pytest.mark.slow
def test_serve_warns_when_bound_beyond_loopback(tmp_path):
    project = write_project(tmp_path / "p")
    write_jsonl(tmp_path / "items.jsonl", pairs(1))
    run_cli("annotate", "import", str(tmp_path / "items.jsonl"), *project_args(project))
    server = start_server(project, free_port(), "--host", "0.0.0.0")
    server.send_signal(signal.SIGINT)
    _, err = server.communicate(timeout=20)
    assert "warning: listening on 0.0.0.0" in err and server.returncode == 0
