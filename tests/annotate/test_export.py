"""Export aggregation by hand-computed cases, at the store level (no server): majority,
margins, ties and both-bad counted, incomplete items, annotators failing their anchors."""

from __future__ import annotations

import json
import random
import uuid

import pytest

from rlhfkit.annotate import Policy, add_annotator, export, import_items, open_store, status
from rlhfkit.annotate.annotators import Authenticator
from rlhfkit.annotate.labeling import LabelRequest, submit_label
from rlhfkit.annotate.scheduling import NoTask, next_task
from rlhfkit.data import validate
from rlhfkit.errors import UserError
from tests.annotate.conftest import pairs, write_jsonl

POLICY = Policy(
    overlap=3,
    calibration_size=0,
    anchor_rate=0.0,
    anchor_accuracy_threshold=0.7,
    choices=("first", "second", "tie", "both_bad"),
    criteria=("helpful", "tone"),
    rubric_version="2",
)


def choice_for(task, wanted: str) -> str:
    """The button that gives `wanted` (A, B, tie, both_bad) for this display order."""
    if wanted in ("tie", "both_bad"):
        return wanted
    a_first = task.first.startswith("Answer A")
    return "first" if (wanted == "A") == a_first else "second"


def labels_by(store, policy, annotator_id, wanted: dict[str, str], anchor_answer=None) -> None:
    """Label every task this annotator is given: `wanted[prompt]` for items, `anchor_answer`
    for anchors (prompts starting 'Gold')."""
    rng = random.Random(0)
    while not isinstance(task := next_task(store, policy, annotator_id, rng), NoTask):
        answer = wanted.get(task.prompt)
        if answer is None:
            answer = anchor_answer if task.prompt.startswith("Gold") else "A"
        req = LabelRequest(task.task_id, choice_for(task, answer), uuid.uuid4().hex)
        submit_label(store, policy, annotator_id, req)


def q(i: int) -> str:
    return f"Question {i}?"


def test_majority_margins_ties_both_bad_and_incomplete(team, tmp_path):
    store, ids = team
    import_items(store, POLICY, items=write_jsonl(tmp_path / "items.jsonl", pairs(6)))
    votes = {  # item -> (ann1, ann2, ann3)
        0: ("A", "A", "B"),  # A wins 2-1: margin (2-1)/3
        1: ("B", "B", "B"),  # B unanimous: margin 1
        2: ("tie", "tie", "A"),  # a tie: counted, not written
        3: ("both_bad", "both_bad", "A"),  # both bad: counted, not written
        4: ("A", "B", "tie"),  # no majority
        5: ("A", "A", None),  # only two labels: incomplete
    }
    for k, name in enumerate(("ann1", "ann2", "ann3")):
        wanted = {q(i): v[k] for i, v in votes.items() if v[k] is not None}
        rng = random.Random(k)
        while not isinstance(task := next_task(store, POLICY, ids[name], rng), NoTask):
            if task.prompt not in wanted:
                break  # ann3 leaves item 5 open
            choice = choice_for(task, wanted[task.prompt])
            submit_label(
                store, POLICY, ids[name], LabelRequest(task.task_id, choice, uuid.uuid4().hex)
            )

    out = tmp_path / "prefs.jsonl"
    result = export(store, POLICY, out, labels_out=tmp_path / "labels.jsonl")
    assert (result.rows, result.ties, result.both_bad, result.no_majority, result.incomplete) == (
        2, 1, 1, 1, 1,
    )  # fmt: skip
    rows = {r["id"]: r for r in map(json.loads, out.read_text().splitlines())}
    assert (
        rows["item0"]["chosen"] == "Answer A to 0."
        and rows["item0"]["rejected"] == "Answer B to 0."
    )
    assert rows["item0"]["margin"] == pytest.approx(1 / 3)
    assert rows["item0"]["votes"] == {"ann1": "chosen", "ann2": "chosen", "ann3": "rejected"}
    assert rows["item1"]["chosen"] == "Answer B to 1." and rows["item1"]["margin"] == 1.0
    assert rows["item1"]["rubric_version"] == "2"
    dataset, problems = validate(out)
    assert not problems and dataset.kind.format.value == "preference"
    assert dataset.metadata_fields() == [
        "id", "annotator_ids", "votes", "tie", "both_bad", "rubric_version", "margin",
    ]  # fmt: skip
    labels = [json.loads(x) for x in (tmp_path / "labels.jsonl").read_text().splitlines()]
    assert len(labels) == 17
    assert {(r["item"], r["annotator"]): r["label"] for r in labels}[
        ("item3", "ann2")
    ] == "both_bad"

    both = export(store, POLICY, tmp_path / "all.jsonl", include_incomplete=True)
    assert both.rows == 3 and both.incomplete == 0
    row5 = [json.loads(x) for x in (tmp_path / "all.jsonl").read_text().splitlines()][-1]
    assert (
        row5["id"] == "item5"
        and row5["margin"] == 1.0
        and row5["annotator_ids"] == ["ann1", "ann2"]
    )


def test_annotators_who_fail_their_anchors_are_left_out(team, tmp_path):
    store, ids = team
    # anchors first, all of them; four anchor answers are enough evidence here
    policy = Policy(**{**POLICY.__dict__, "anchor_rate": 1.0, "min_anchor_labels": 4})
    anchors = [dict(p, prompt=f"Gold {i}?", label="A") for i, p in enumerate(pairs(4, "g"))]
    import_items(
        store,
        policy,
        items=write_jsonl(tmp_path / "items.jsonl", pairs(2)),
        anchors=write_jsonl(tmp_path / "anchors.jsonl", anchors),
    )
    # ann1 and ann2 get the anchors right and prefer B; ann3 gets them wrong and prefers A.
    labels_by(store, policy, ids["ann1"], {q(0): "B", q(1): "B"}, anchor_answer="A")
    labels_by(store, policy, ids["ann2"], {q(0): "B", q(1): "A"}, anchor_answer="A")
    labels_by(store, policy, ids["ann3"], {q(0): "A", q(1): "A"}, anchor_answer="B")
    result = export(store, policy, tmp_path / "prefs.jsonl", gold_out=tmp_path / "gold.jsonl")
    assert result.excluded_annotators == ["ann3"]
    rows = [json.loads(x) for x in (tmp_path / "prefs.jsonl").read_text().splitlines()]
    # item0: B,B (ann3's A left out) -> B, margin 1. item1: B vs A, no majority without ann3.
    assert [(r["id"], r["chosen"], r["margin"]) for r in rows] == [("item0", "Answer B to 0.", 1.0)]
    assert rows[0]["annotator_ids"] == ["ann1", "ann2"]
    assert result.no_majority == 1
    gold = [json.loads(x) for x in (tmp_path / "gold.jsonl").read_text().splitlines()]
    assert gold == [{"item": f"g{i}", "label": "A"} for i in range(4)]
    manifest = json.loads((tmp_path / "prefs.jsonl.manifest.json").read_text())
    assert manifest["annotation"]["counts"]["excluded_annotators"] == ["ann3"]
    # the default asks for five: four wrong anchors flag ann3 in status, nobody is left out
    default = Policy(**{**policy.__dict__, "min_anchor_labels": 5})
    assert export(store, default, tmp_path / "all.jsonl").excluded_annotators == []
    ann3 = {a["annotator"]: a for a in status(store, default)["annotators"]}["ann3"]
    assert ann3["anchor_accuracy"] == 0.0 and not ann3["excluded_from_export"]


def test_export_refuses_a_non_jsonl_target_and_an_empty_result(team, tmp_path):
    store, _ = team
    import_items(store, POLICY, items=write_jsonl(tmp_path / "items.jsonl", pairs(1)))
    with pytest.raises(UserError, match=r"export to a \.jsonl file"):
        export(store, POLICY, tmp_path / "prefs.csv")
    with pytest.raises(UserError, match="nothing written"):
        export(store, POLICY, tmp_path / "prefs.jsonl")
    assert not (tmp_path / "prefs.jsonl").exists()


def test_a_closed_gate_exports_no_preference_but_writes_the_labels_for_agreement(team, tmp_path):
    # a calibration round of 2 pairs on which the three disagree: the gate fails (percent
    # agreement 0), the main queue stays closed, and no calibration pair has a majority
    store, ids = team
    policy = Policy(**{**POLICY.__dict__, "calibration_size": 2, "agreement_threshold": 0.65})
    import_items(store, policy, items=write_jsonl(tmp_path / "items.jsonl", pairs(4)))
    for name, answer in (("ann1", "A"), ("ann2", "B"), ("ann3", "tie")):
        labels_by(store, policy, ids[name], {q(i): answer for i in range(4)})
    gate = status(store, policy)["gate"]
    assert gate["passed"] is False and gate["main_queue_open"] is False
    prefs, labels, gold = (tmp_path / f for f in ("prefs.jsonl", "labels.jsonl", "gold.jsonl"))
    with pytest.raises(UserError) as refused:
        export(store, policy, prefs, labels, gold)
    message = str(refused.value)
    assert "the calibration gate is closed" in message
    assert f"no preferences written; written all the same: {labels} (6 labels)" in message
    assert not prefs.exists()  # labels are no training data: those are written, prefs not
    rows = [json.loads(x) for x in labels.read_text().splitlines()]
    given = sorted((r["annotator"], r["label"]) for r in rows)  # the labels as given
    assert given == [("ann1", "A")] * 2 + [("ann2", "B")] * 2 + [("ann3", "tie")] * 2
    assert all(r["gate"] and r["round"] == 1 for r in rows)
    manifest = json.loads((tmp_path / "labels.jsonl.manifest.json").read_text())
    assert manifest["annotation"]["gate"]["passed"] is False  # what `rlhfkit agreement` reads
    assert gold.read_text() == ""  # no anchors here: an empty file, written all the same


def test_chat_pairs_round_trip_as_conversational_preferences(sqlite_url, tmp_path):
    """Pairs as `rlhfkit generate` writes them for a chat model: messages, extra fields."""
    store = open_store(sqlite_url, create=True)
    policy = Policy(**{**POLICY.__dict__, "overlap": 1})
    rows = [
        {
            "id": f"p{i:05d}-0-1",
            "prompt": [{"role": "user", "content": f"Where is order #{i}?"}],
            "response_a": [{"role": "assistant", "content": f"Answer A to {i}."}],
            "response_b": [{"role": "assistant", "content": f"Answer B to {i}."}],
            "truncated": [False, True],
            "source_row": i + 1,
        }
        for i in range(3)
    ]
    import_items(store, policy, items=write_jsonl(tmp_path / "candidates.jsonl", rows))
    annotator = Authenticator(store)(add_annotator(store, "ann1")).id
    rng = random.Random(0)
    while not isinstance(task := next_task(store, policy, annotator, rng), NoTask):
        assert task.prompt == [{"role": "user", "content": task.prompt[0]["content"]}]
        a_first = task.first[0]["content"].startswith("Answer A")
        req = LabelRequest(task.task_id, "first" if a_first else "second", uuid.uuid4().hex)
        submit_label(store, policy, annotator, req)
    export(store, policy, tmp_path / "prefs.jsonl")
    store.close()
    dataset, problems = validate(tmp_path / "prefs.jsonl")
    assert not problems and dataset.kind.conversational
    assert [r["chosen"][0]["content"] for r in dataset.rows] == [
        f"Answer A to {i}." for i in range(3)
    ]
