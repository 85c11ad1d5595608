"""Per-annotator statistics, the calibration gate, drift alerts and recalibration, by hand."""

import math

import numpy as np
import pytest

from rlhfkit.agreement import (
    Labels,
    anchor_drift,
    annotator_stats,
    calibration_gate,
    gate_of,
    read_labels,
    recalibration_due,
    who_drives,
)


def by_name(stats):
    return {s.annotator: s for s in stats}


def test_majority_agreement_position_bias_ties_and_speed():
    # three annotators, four items; "c" always picks whatever was shown first
    item = [0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 3]
    who = ["a", "b", "c"] * 4
    label = ["A", "A", "B", "B", "B", "A", "tie", "tie", "A", "A", "A", "B"]
    shown = ["A", "B", "B", "A", "A", "A", "A", "B", "A", "B", "A", "B"]
    stamps = [0, 0, 0, 1800, 1800, 1800, 3600, 3600, 3600, 5400, 5400, 5400]
    stats = by_name(annotator_stats(Labels.from_records(item, who, label, shown, stamps)))
    # "a": the other two (b, c) split on every item, so there is never a majority to match
    assert math.isnan(stats["a"].majority_agreement) and stats["a"].majority_items == 0
    # "c": item 0 others A,A -> A (c said B), item 1 B,B (c said A), item 2 tie,tie (c: A),
    # item 3 A,A (c: B): never with the majority
    assert stats["c"].majority_agreement == 0.0 and stats["c"].majority_items == 4
    assert stats["c"].chose_first_rate == 1.0 and stats["c"].position_items == 4
    # "b" shown B, A, (B), A first, chose A, B, (tie), A: the first one once in three
    assert stats["b"].chose_first_rate == pytest.approx(1 / 3) and stats["b"].position_items == 3
    assert stats["a"].tie_rate == 0.25 and stats["a"].both_bad_rate == 0.0
    assert stats["a"].labels_per_hour == pytest.approx(4 / 1.5)


def test_anchor_accuracy_needs_gold():
    labels = Labels.from_records(
        [0, 1, 2, 0, 1, 2], ["a"] * 3 + ["b"] * 3, ["A", "B", "A", "A", "A", "A"]
    )
    gold = {0: labels.code_of("A"), 1: labels.code_of("B")}
    stats = by_name(annotator_stats(labels, gold))
    assert stats["a"].anchor_accuracy == 1.0 and stats["a"].anchor_items == 2
    assert stats["b"].anchor_accuracy == 0.5
    assert math.isnan(by_name(annotator_stats(labels))["a"].anchor_accuracy)


def test_calibration_gate_passes_and_fails_at_the_threshold_and_names_the_culprits():
    # four annotators on five items; "d" disagrees with everyone on every item
    item, who, label = [], [], []
    for i in range(5):
        for name in "abc":
            item.append(i), who.append(name), label.append("A" if i % 2 else "B")
        item.append(i), who.append("d"), label.append("B" if i % 2 else "A")
    labels = Labels.from_records(item, who, label)
    gate = calibration_gate(labels, threshold=0.5)  # each item: 3 of 6 pairs agree
    assert gate.value == pytest.approx(0.5) and gate.passed
    assert not calibration_gate(labels, threshold=0.65).passed
    assert gate.annotator_agreement["d"] == 0.0 and gate.annotator_agreement["a"] == 1.0
    assert len(gate.disputed_items) == 5 and gate.incomplete == {}
    only_two = calibration_gate(labels, calibration_items=["0", "1"], threshold=0.65)
    assert only_two.items == 2


def test_who_drives_the_disagreement_by_leaving_each_annotator_out():
    # items 0-3: a, b, c say A; d says B on all four and c says B on item 3 as well
    item = [i for i in range(4) for _ in "abcd"]
    who = list("abcd") * 4
    label = ["A", "A", "A", "B"] * 3 + ["A", "A", "B", "B"]
    drivers = who_drives(Labels.from_records(item, who, label))
    by = {d.annotator: d for d in drivers}
    # without d: items 0-2 unanimous (1), item 3 A, A, B: 1 of 3 pairs -> (3 + 1/3) / 4
    assert drivers[0].annotator == "d" and by["d"].without == pytest.approx((3 + 1 / 3) / 4)
    # without a: items 0-2 A, A, B (1/3 each), item 3 A, B, B (1/3)
    assert by["a"].without == pytest.approx(1 / 3)
    # without c: items 0-3 all A, A, B: 1/3
    assert by["c"].without == pytest.approx(1 / 3)
    assert by["d"].pairwise == {"a": 0.0, "b": 0.0, "c": 0.25}
    assert by["c"].pairwise == {"a": 0.75, "b": 0.75, "d": 0.25}
    assert by["c"].mean_pairwise == pytest.approx(7 / 12)
    # two annotators: without either, one person's labels cannot disagree
    two = who_drives(Labels.from_records([0, 0], ["a", "b"], ["A", "B"]))
    assert all(math.isnan(d.without) for d in two) and two[0].pairwise == {"b": 0.0}


def test_the_gate_is_computed_on_the_labels_marked_as_the_gates(tmp_path):
    path = tmp_path / "labels.csv"
    # item 0 is the calibration pair (marked): a and b disagree; item 1 they agree on.
    path.write_text("item,annotator,label,gate\n0,a,A,true\n0,b,B,TRUE\n1,a,A,\n1,b,A,0\n")
    labels = read_labels(path)
    assert labels.gate.tolist() == [True, True, False, False]
    marked = gate_of(labels, 0.65)
    assert (marked.value, marked.items, marked.scope) == (0.0, 1, "calibration round")
    path.write_text("item,annotator,label\n0,a,A\n0,b,B\n1,a,A\n1,b,A\n")
    unmarked = gate_of(read_labels(path), 0.65)
    assert (unmarked.value, unmarked.items, unmarked.scope) == (0.5, 2, "all labels")
    assert "not the annotation store's gate" in unmarked.as_dict()["scope_note"]


def test_calibration_gate_reports_annotators_who_have_not_finished():
    labels = Labels.from_records([0, 0, 1, 1, 2], ["a", "b", "a", "b", "a"], ["A"] * 5)
    assert calibration_gate(labels).incomplete == {"b": 1}


def test_drift_alert_when_anchor_accuracy_falls():
    rng = np.random.default_rng(0)
    n = 60
    gold_answers = rng.choice(["A", "B"], n)
    item, who, label, stamps = [], [], [], []
    for i in range(n):
        for name in ("steady", "drifter"):
            wrong = name == "drifter" and i >= 40  # the last third: always wrong
            item.append(i), who.append(name), stamps.append(i * 60.0)
            label.append(("B" if gold_answers[i] == "A" else "A") if wrong else gold_answers[i])
    labels = Labels.from_records(item, who, label, timestamp=stamps)
    gold = {labels.item_names().index(str(i)): labels.code_of(gold_answers[i]) for i in range(n)}
    series, alerts = anchor_drift(labels, gold, window=20, threshold=0.7)
    acc = {s.annotator: s.accuracy for s in series}
    assert acc["steady"] == [1.0, 1.0, 1.0] and acc["drifter"] == [1.0, 1.0, 0.0]
    assert [(a.annotator, a.window) for a in alerts] == [("drifter", 2)]
    # a drop below the baseline alerts even above the threshold
    _, alerts = anchor_drift(
        labels, gold, window=20, threshold=0.0, baseline={"drifter": 1.0}, max_drop=0.15
    )
    assert alerts and "fell" in alerts[0].reason


def test_recalibration_due_after_labels_or_days():
    assert recalibration_due(500, 1.0, every_labels=500)[0]
    assert recalibration_due(10, 15.0, every_days=14)[0]
    due, why = recalibration_due(10, 1.0)
    assert not due and why is None
