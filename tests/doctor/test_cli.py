"""`rlhfkit doctor RUN_DIR` through the real CLI on hand-built run folders, the report's
Doctor section, and `rlhfkit run` stopping before people label pairs the tiny model wrote
(it never declines) until --ignore-doctor, which is recorded."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from rlhfkit.pipeline.doctor import after_stage
from rlhfkit.pipeline.layout import RunPaths
from rlhfkit.pipeline.summary import summary
from rlhfkit.project import load_project
from rlhfkit.report.html import write_report
from rlhfkit.report.inputs import load_run
from tests.conftest import run_cli, write_lines
from tests.doctor.plant import ANSWER, candidates
from tests.pipeline.test_run import make_project

FIXTURE = Path(__file__).parents[1] / "report" / "files" / "run"
DECLINES = """[[success_criteria]]
name = "declines"
description = "Declines off-topic requests."
direction = "increase"
detector = { kind = "refusal" }
applies_to = { kind = "off_topic" }
"""


def _project(root: Path, people: bool) -> Path:
    """test_run's one-liners project, its 'short' criterion replaced by one that the tiny
    random model never shows: declining off-topic requests (half the prompts)."""
    project = make_project(root)
    spec = project / "rlhfkit.toml"
    text = spec.read_text()
    start = text.index('[[success_criteria]]\nname = "short"')
    end = text.index("[[success_criteria]]", start + 1)
    text = text[:start] + DECLINES + "\n" + text[end:]
    if people:  # and fewer candidates: the run stops before anything reads many
        text = text.replace('labeler = "judge.py:shorter"\n', "").replace("limit = 16", "limit = 6")
    spec.write_text(text)
    for name in ("prompts", "eval"):  # the evaluation's too: `run` checks applies_to there
        path = project / "data" / f"{name}.jsonl"
        prompts = [json.loads(x) for x in path.read_text().splitlines()]
        rows = [r | {"kind": "off_topic" if i % 2 else "on_topic"} for i, r in enumerate(prompts)]
        write_lines(path, rows)
    return project


@pytest.fixture
def planted(tmp_path) -> Path:
    """A run folder with failing candidates (the SFT model never declines) and the report's
    healthy reward model and PPO evaluation."""
    project = _project(tmp_path / "proj", people=False)
    run = project / "run"
    (run / "annotation").mkdir(parents=True)
    replies = [(f"{ANSWER} {p}a", f"No idea, {p}.", f"Maybe {p}, who knows.") for p in range(6)]
    candidates(run / "annotation" / "candidates.jsonl", [("off_topic", list(r)) for r in replies])
    shutil.copytree(FIXTURE / "rm", run / "rm")
    return run


def test_doctor_names_the_failure_and_exits_1(planted):
    result = run_cli("doctor", str(planted))
    assert result.code == 1, result.stderr
    out = " ".join(result.stdout.split())
    assert "FAIL the trained model shows 'declines' before people label" in out
    assert "0 of 12 (0%)" in out and "--ignore-doctor" in out
    assert "n/a ppo: reward rose with the criteria" in out
    record = json.loads((planted / "doctor.json").read_text())
    assert record["counts"]["fail"] == 1 and record["overrides"] == []
    as_json = run_cli("doctor", str(planted), "--json")
    verdicts = {c["name"]: c["verdict"] for c in json.loads(as_json.stdout)["checks"]}
    assert verdicts["sft_never_shows:declines"] == "fail" and verdicts["rm_chance"] == "ok"
    assert verdicts["gate"] == "not yet measurable"


def test_a_healthy_run_folder_exits_0_and_a_missing_one_2(planted, tmp_path):
    (planted / "annotation" / "candidates.jsonl").unlink()  # nothing fails; the rest is n/a
    assert run_cli("doctor", str(planted)).code == 0
    missing = run_cli("doctor", str(tmp_path / "nowhere"))
    assert missing.code == 2 and "no such run folder" in missing.stderr
    # the hint says where a run folder comes from, not the table of checks
    assert "rlhfkit run --project PROJECT" in missing.stderr and "Checks" not in missing.stderr
    assert len(missing.stderr.strip().splitlines()) == 2


def test_a_folder_no_run_wrote_is_refused_and_left_alone(tmp_path, planted):
    empty = tmp_path / "empty"
    empty.mkdir()
    for args in ((str(empty),), (str(empty), "--project", str(planted.parent))):
        refused = run_cli("doctor", *args)
        assert refused.code == 2 and "not a run folder" in refused.stderr
        assert len(refused.stderr.strip().splitlines()) == 1 and "Traceback" not in refused.stderr
        assert list(empty.iterdir()) == []  # no doctor.json written there


def test_the_report_and_summary_json_carry_the_doctors_verdicts(planted):
    run_cli("doctor", str(planted))
    written = write_report(load_run(planted), planted / "report.html")
    page, md = written.html.read_text(), written.markdown.read_text()
    assert '<h2 id="doctor">Doctor</h2>' in page and '<td class="bad">FAIL</td>' in page
    assert "## Doctor" in md and "**FAIL** the trained model shows 'declines'" in md
    doctor = summary(RunPaths(planted, planted.parent), {})["doctor"]
    assert doctor["checks"]["sft_never_shows:declines"]["verdict"] == "fail"
    assert doctor["counts"]["fail"] == 1 and doctor["overrides"] == []
    (planted / "doctor.json").unlink()
    assert summary(RunPaths(planted, planted.parent), {})["doctor"] is None
    again = write_report(load_run(planted), planted / "report.html").html.read_text()
    assert "no doctor.json: `rlhfkit doctor RUN_DIR` checks the run" in again


def test_run_stops_before_people_label_until_told_to_go_on(tmp_path, monkeypatch):
    monkeypatch.delenv("RLHFKIT_DB_URL", raising=False)
    project = _project(tmp_path / "proj", people=True)
    args = ("run", "--project", str(project), "--precision", "fp32", "--until", "annotate")
    stopped = run_cli(*args)
    assert stopped.code == 1, stopped.stderr
    out = " ".join(stopped.stdout.split())
    assert "doctor, after candidates" in out and "The doctor stopped the run" in out
    run = project / "run"
    assert "annotate" not in json.loads((run / "stages.json").read_text())
    assert not (run / "annotation" / "imported.json").exists()  # nothing went to people

    going = run_cli(*args, "--ignore-doctor")
    assert going.code == 0, going.stderr
    assert "rlhfkit annotate serve" in going.stdout  # waiting for people now
    record = json.loads((run / "doctor.json").read_text())
    (override,) = record["overrides"]
    assert override["failed"] == ["sft_never_shows:declines"] and override["by"]
    again = run_cli(*args)  # the same candidates, overridden once: no second stop
    assert again.code == 0 and len(json.loads((run / "doctor.json").read_text())["overrides"]) == 1


def test_the_stop_only_when_people_label_next_and_not_once_they_have_the_pairs(planted):
    """`after_stage` on the planted candidates (hand-built, no model): the stop, and each
    reason not to stop."""
    project = load_project(planted.parent)
    paths = RunPaths(planted, project.root)
    _, stop = after_stage(paths, project, "candidates", people_next=True, ignore=False)
    assert stop and "sft_never_shows:declines failed" in stop
    _, stop = after_stage(paths, project, "candidates", people_next=False, ignore=False)
    assert stop is None  # --until candidates, or a simulated panel: shown, not stopped
    checks, stop = after_stage(paths, project, "rm", people_next=True, ignore=False)
    assert stop is None and [c.name for c in checks] == ["rm_chance", "rm_length"]
    (planted / "annotation" / "imported.json").write_text("{}")
    _, stop = after_stage(paths, project, "candidates", people_next=True, ignore=False)
    assert stop is None  # people already have these pairs
    assert json.loads((planted / "doctor.json").read_text())["overrides"] == []
