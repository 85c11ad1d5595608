"""The stage log: what finished with which inputs, what changed, what reruns."""

from __future__ import annotations

import time

import pytest

from rlhfkit.pipeline.log import StageLog


def test_stage_log_skips_finished_stages_and_notices_changed_inputs(tmp_path):
    log = StageLog.open(tmp_path / "stages.json")
    calls = []
    assert log.run("a", {"x": 1}, lambda: calls.append(1))
    assert not log.run("a", {"x": 1}, lambda: calls.append(2))
    assert log.changed("a", {"x": 2}) and not log.changed("a", {"x": 1})
    assert not log.changed("never", {"x": 1})
    again = StageLog.open(tmp_path / "stages.json")  # the record survives a restart
    assert not again.run("a", {"x": 1}, lambda: calls.append(3))
    out = tmp_path / "out.txt"
    assert again.run("b", {}, lambda: out.write_text("made"), outputs=(out,))
    out.unlink()  # an output that disappeared makes the stage run again
    assert again.run("b", {}, lambda: out.write_text("made"), outputs=(out,))
    assert calls == [1] and set(again.seconds()) == {"a", "b"}


def test_a_stage_killed_midway_resumes_unless_its_inputs_changed(tmp_path):
    log = StageLog.open(tmp_path / "stages.json")

    def killed():
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        log.run("train", {"lr": 1}, killed)
    restarted = StageLog.open(tmp_path / "stages.json")
    assert not restarted.done("train", {"lr": 1})  # it has to run (and resume) again
    assert not restarted.changed("train", {"lr": 1})  # ... from its checkpoints
    assert restarted.changed("train", {"lr": 2})  # other inputs: its leftovers are stale
    assert restarted.seconds() == {}
    restarted.run("train", {"lr": 1}, lambda: None)
    first = restarted.output_key("train")
    time.sleep(1.1)
    restarted.run("train", {"lr": 1}, lambda: None, outputs=(tmp_path / "gone",))
    assert restarted.output_key("train") != first  # downstream stages see the rerun


def test_it_names_what_changed_since_a_stage_ran(tmp_path):
    log = StageLog.open(tmp_path / "stages.json")
    inputs = {"config": {"beta": 0.1, "epochs": 1.0}, "after": {"annotate": "k1"}}
    log.run("dpo", inputs, lambda: None)
    again = StageLog.open(tmp_path / "stages.json")
    changed = {"config": {"beta": 0.2, "epochs": 1.0}, "after": {"annotate": "k2"}}
    assert again.changes("dpo", changed) == ["after.annotate", "config.beta"]
    assert again.changes("dpo", inputs) == []
    assert again.changes("never", inputs) == []
