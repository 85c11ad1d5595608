"""The annotation checks on planted failures: many ties, and a calibration gate failed by one
careless annotator, who is named with the gate's value without them (the store's own
status, from a real SQLite store)."""

from __future__ import annotations

import json
from pathlib import Path

from rlhfkit.doctor.annotation import check_gate, check_ties
from tests.annotate.test_gate_actions import failed_status
from tests.doctor.plant import labels


def _store_status(tmp_path) -> Path:
    """status.json of a real store whose round 1 failed: ann1-ann3 always prefer A, ann4
    always B (gate 0.5; without ann4 1.0) — `tests.annotate.test_gate_actions`' team."""
    s = failed_status(f"sqlite:///{tmp_path / 'annotations.sqlite'}", tmp_path)
    out = tmp_path / "status.json"
    out.write_text(json.dumps(s))
    return out


def test_one_careless_annotator_drives_a_failed_gate(tmp_path):
    check = check_gate(_store_status(tmp_path))
    assert check.verdict == "fail" and "0.50 against 0.65" in check.evidence
    # the store's one number and its leave-one-out, not a second computation
    top = max(check.numbers["annotators"], key=lambda d: d["gate_without"])
    assert top["annotator"] == "ann4" and top["gate_without"] == 1.0
    assert "ann4 agrees with each other annotator 0% of the time" in check.evidence
    assert "without them the gate would be 1.00" in check.evidence
    assert check.action.startswith("remove ann4")


def test_an_overridden_gate_warns_a_passed_one_is_ok_and_none_is_not_measurable(tmp_path):
    path = _store_status(tmp_path)
    s = json.loads(path.read_text())
    s["gate"]["verdict"], s["gate"]["overridden"] = "failed, overridden by lead", True
    (tmp_path / "over.json").write_text(json.dumps(s))
    over = check_gate(tmp_path / "over.json")
    assert over.verdict == "warn" and "(overridden)" in over.evidence
    s["gate"].update(value=0.93, passed=True, verdict="passed", overridden=False)
    (tmp_path / "passed.json").write_text(json.dumps(s))
    passed = check_gate(tmp_path / "passed.json")
    assert passed.verdict == "ok" and passed.action == ""
    assert check_gate(tmp_path / "absent.json").verdict == "not yet measurable"
    s["gate"].update(value=None)
    (tmp_path / "open.json").write_text(json.dumps(s))
    assert check_gate(tmp_path / "open.json").verdict == "not yet measurable"


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
