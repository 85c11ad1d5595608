"""An export with nothing to write says why, one case per cause: no labels, only anchors
labeled, every annotator left out for their anchors, only ties and both-bad answers, pairs
short of the overlap, the calibration gate closed. At the store level, and the CLI once."""

from __future__ import annotations

import random
import uuid

import pytest

from rlhfkit.annotate import Policy, add_annotator, export, import_items, open_store
from rlhfkit.annotate.annotators import Authenticator
from rlhfkit.annotate.labeling import LabelRequest, submit_label
from rlhfkit.annotate.scheduling import NoTask, next_task
from rlhfkit.errors import UserError
from rlhfkit.project import load_project
from tests.annotate.conftest import pairs, write_jsonl, write_project
from tests.annotate.test_export import POLICY, choice_for
from tests.conftest import run_cli

VAGUE = "no item has a majority answer"


def policy(**changes) -> Policy:
    return Policy(**{**POLICY.__dict__, **changes})


def label_everything(store, pol, annotator_id, answer, anchor_answer="A") -> int:
    """Label every task handed to this annotator: `answer` for pairs, `anchor_answer` for
    anchors (prompts 'Gold ...')."""
    rng, n = random.Random(annotator_id), 0
    while not isinstance(task := next_task(store, pol, annotator_id, rng), NoTask):
        wanted = anchor_answer if task.prompt.startswith("Gold") else answer
        req = LabelRequest(task.task_id, choice_for(task, wanted), uuid.uuid4().hex)
        submit_label(store, pol, annotator_id, req)
        n += 1
    return n


def gold(n: int) -> list[dict]:
    return [dict(p, prompt=f"Gold {i}?", label="A") for i, p in enumerate(pairs(n, "g"))]


def refusal(store, pol, tmp_path, **kwargs) -> UserError:
    with pytest.raises(UserError) as e:
        export(store, pol, tmp_path / "prefs.jsonl", **kwargs)
    assert not (tmp_path / "prefs.jsonl").exists()
    text = f"{e.value}\n{e.value.hint}"
    assert VAGUE not in text
    return e.value


def test_no_labels_at_all(team, tmp_path):
    store, _ = team
    import_items(store, POLICY, items=write_jsonl(tmp_path / "items.jsonl", pairs(2)))
    e = refusal(store, POLICY, tmp_path)
    assert "no pair has a label yet" in str(e) and "annotate serve" in e.hint


def test_no_pair_to_label_only_anchors(team, tmp_path):
    store, ids = team
    pol = policy(anchor_rate=0.5)
    import_items(store, pol, anchors=write_jsonl(tmp_path / "anchors.jsonl", gold(3)))
    # No pair to label: with done-is-done nobody gets an anchor either, so label directly.
    assert label_everything(store, pol, ids["ann1"], "A") == 0
    e = refusal(store, pol, tmp_path)
    assert "no pair has a label yet" in str(e) and "3 anchors" in str(e)


def test_every_annotator_left_out_for_their_anchors(team, tmp_path):
    store, ids = team
    pol = policy(anchor_rate=1.0, min_anchor_labels=3, overlap=2)
    import_items(
        store,
        pol,
        items=write_jsonl(tmp_path / "items.jsonl", pairs(2)),
        anchors=write_jsonl(tmp_path / "anchors.jsonl", gold(3)),
    )
    for name in ("ann1", "ann2"):
        label_everything(store, pol, ids[name], "A", anchor_answer="B")  # every anchor wrong
    e = refusal(store, pol, tmp_path)
    text = str(e)
    assert "every annotator who labeled pairs is left out" in text
    assert "ann1 0.00 (0 of 3 anchors right)" in text and "ann2 0.00" in text
    assert "below the threshold 0.70" in text
    assert "anchor_accuracy_threshold" in e.hint and "annotate status" in e.hint


def test_only_ties_and_both_bad(team, tmp_path):
    store, ids = team
    pol = policy(overlap=2)
    import_items(store, pol, items=write_jsonl(tmp_path / "items.jsonl", pairs(2)))
    label_everything(store, pol, ids["ann1"], "tie")
    label_everything(store, pol, ids["ann2"], "tie")
    e = refusal(store, pol, tmp_path)
    assert "2 labeled pairs: 2 ties" in str(e)
    assert "say nothing about which reply is better" in e.hint


def test_pairs_short_of_the_overlap(team, tmp_path):
    store, ids = team
    import_items(store, POLICY, items=write_jsonl(tmp_path / "items.jsonl", pairs(2)))
    label_everything(store, POLICY, ids["ann1"], "A")
    e = refusal(store, POLICY, tmp_path)
    assert "2 labeled pairs: 2 with fewer than 3 labels" in str(e)
    assert "--include-incomplete" in e.hint


def test_the_gate_has_not_passed(team, tmp_path):
    store, ids = team
    pol = policy(calibration_size=2, overlap=2)
    import_items(store, pol, items=write_jsonl(tmp_path / "items.jsonl", pairs(4)))
    label_everything(store, pol, ids["ann1"], "A")  # the round's two pairs, then the gate
    e = refusal(store, pol, tmp_path)
    assert "the calibration gate is closed" in str(e)
    assert "round 1 waits for a second annotator" in str(e)
    assert "override-gate" in e.hint


def test_the_cli_says_why_when_everyone_is_left_out(tmp_path):
    project = write_project(
        tmp_path / "p",
        overlap=1,
        anchor_rate=0.5,
        min_anchor_labels=2,
        anchor_accuracy_threshold=0.9,
    )
    args = ["--project", str(project)]
    items, anchors = (
        write_jsonl(tmp_path / "i.jsonl", pairs(10)),
        write_jsonl(tmp_path / "g.jsonl", gold(6)),
    )
    assert run_cli("annotate", "import", str(items), "--anchors", str(anchors), *args).code == 0
    store = open_store(str(project / "artifacts" / "annotations.sqlite"))
    try:
        ann = Authenticator(store)(add_annotator(store, "ann1")).id
        pol = Policy.from_project(load_project(project))
        label_everything(store, pol, ann, "A", anchor_answer="B")
    finally:
        store.close()
    r = run_cli("annotate", "export", str(tmp_path / "out.jsonl"), *args)
    assert r.code == 2 and "Traceback" not in r.stderr
    assert "every annotator who labeled pairs is left out" in r.stderr and VAGUE not in r.stderr
    assert not (tmp_path / "out.jsonl").exists()
