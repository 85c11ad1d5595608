"""The annotation checks on planted failures: many ties, and a calibration gate failed by one
careless annotator, who is named with the gate's value without them."""

from __future__ import annotations

from rlhfkit.doctor.annotation import check_gate, check_ties, gate_drivers
from tests.doctor.plant import labels, status


def _calibration(careless: int) -> list[tuple[str, str, str]]:
    """alice and bob answer A on 10 items; carol answers B on the first `careless`."""
    rows = []
    for i in range(10):
        item = f"c{i}"
        rows += [(item, "alice", "A"), (item, "bob", "A")]
        rows.append((item, "carol", "B" if i < careless else "A"))
    return rows


def test_one_careless_annotator_drives_a_failed_gate(tmp_path):
    # by hand: 6 items where 1 of 3 label pairs agree, 4 where all do: (6/3 + 4) / 10 = 0.6
    lab = labels(tmp_path / "labels.jsonl", _calibration(6), phase="calibration")
    check = check_gate(status(tmp_path / "status.json", 0.6, False), lab)
    assert check.verdict == "fail" and "0.60 against 0.65" in check.evidence
    top = check.numbers["annotators"][0]
    # without carol every item is unanimous (1.0); carol agrees with the others on 4 of 10
    assert top == {"annotator": "carol", "agreement": 0.4, "without": 1.0}
    assert check.action.startswith("carol drives the disagreement")
    # without alice (or bob): the other two agree on 4 of 10 items
    assert [d["without"] for d in check.numbers["annotators"][1:]] == [0.4, 0.4]


def test_drivers_match_a_hand_count_whoever_is_careless():
    """Invariance: renaming the annotators renames the driver, nothing else."""
    rows = [(i, {"carol": "zed"}.get(a, a), v) for i, a, v in _calibration(6)]
    found = gate_drivers(
        [{"item": i, "annotator": a, "label": v, "phase": "calibration"} for i, a, v in rows],
        0.65,
    )
    assert found[0]["annotator"] == "zed" and found[0]["without"] == 1.0


def test_an_overridden_gate_warns_a_passed_one_is_ok_and_none_is_not_measurable(tmp_path):
    lab = labels(tmp_path / "labels.jsonl", _calibration(6), phase="calibration")
    override = {"reason": "deadline", "by": "lead", "at": "2026-01-01"}
    over = check_gate(status(tmp_path / "s1.json", 0.6, False, override), lab)
    assert over.verdict == "warn" and "(overridden)" in over.evidence
    passed = check_gate(status(tmp_path / "s2.json", 0.93, True), lab)
    assert passed.verdict == "ok" and passed.action == ""
    assert check_gate(tmp_path / "absent.json", None).verdict == "not yet measurable"


def test_many_ties_fail_some_warn_few_pass(tmp_path):
    def tied(n: int) -> list:
        return [(f"i{k}", "alice", "tie" if k < n else "A") for k in range(10)]

    many = check_ties(labels(tmp_path / "a.jsonl", [*tied(5), ("i0", "bob", "both_bad")]))
    assert many.verdict == "fail" and many.numbers == {
        "labels": 11, "tie": 5, "both_bad": 1, "share": 6 / 11,
    }  # fmt: skip
    assert check_ties(labels(tmp_path / "b.jsonl", tied(3))).verdict == "warn"
    few = check_ties(labels(tmp_path / "c.jsonl", tied(1)))
    assert few.verdict == "ok" and few.numbers["share"] == 0.1
    assert check_ties(None).verdict == "not yet measurable"
