"""`rlhfkit annotate pilot` through the real CLI: a rubric in code labels a pilot round
through the app, a tiny reward model learns from its labels; bad input is one clear line."""

from __future__ import annotations

import json

import pytest

from rlhfkit.pipeline.pilot import PanelSettings
from rlhfkit.project import Project, load_project
from tests.conftest import run_cli, write_lines
from tests.pipeline.test_pilot import make_pilot_project


@pytest.mark.slow  # trains a reward model
def test_pilot_prints_the_gate_agreement_and_a_reward_model_marked_simulated(tmp_path):
    root = make_pilot_project(tmp_path / "p", pairs=48)
    result = run_cli(
        "annotate", "pilot", "--project", str(root), "--judge", "judge.py:shorter",
        "--noise", "0", "--train-rm", "--model", "tiny-random", "--precision", "fp32",
    )  # fmt: skip
    assert result.code == 0, result.stderr
    out = result.stdout
    assert "SIMULATED pilot (no person labelled): judge judge.py:shorter, 3 simulated" in out
    assert "calibration gate: passes: percent agreement 1.00 on 10 calibration pairs" in out
    assert "agreement: 1.00 percent, Cohen's kappa 1.00, Krippendorff's alpha 1.00" in out
    assert "reward model on the pilot's labels: held-out accuracy" in out
    assert "simulated labels" in result.stderr  # the panel's progress
    pilot = json.loads((root / "artifacts" / "pilot" / "pilot.json").read_text())
    rm = pilot["reward_model"]
    assert pilot["simulated"] is True and rm["trained"] is True
    assert rm["train_pairs"] + rm["heldout_pairs"] == 48 and 0.0 <= rm["heldout_accuracy"] <= 1.0
    assert (root / "artifacts" / "pilot" / "rm" / "final").is_dir()


def test_pilot_shows_the_rubric_prompt_and_refuses_bad_input_in_one_line(tmp_path):
    root = make_pilot_project(tmp_path / "p", pairs=10)
    first = run_cli("annotate", "pilot", "--project", str(root), "--no-train-rm")
    assert first.code == 0, first.stderr
    assert "reward model: not trained (not asked (--no-train-rm))" in first.stdout
    as_json = run_cli("annotate", "pilot", "--project", str(root), "--no-train-rm", "--json")
    assert as_json.code == 0, as_json.stderr
    assert json.loads(as_json.stdout)["simulated"] is True
    before = (root / "artifacts" / "pilot" / "pilot.json").read_text()
    shown = run_cli("annotate", "pilot", "--project", str(root), "--show-prompt")
    assert shown.code == 0 and "- short: One sentence." in shown.stdout
    assert "The team's answer: A, because Shorter." in shown.stdout
    missing = ["--pairs", str(tmp_path / "none.jsonl")]  # the settings are checked first
    bad_pairs = write_lines(  # a second reply missing on every row
        tmp_path / "bad.jsonl", [{"prompt": f"Q{i}", "response_a": "A"} for i in range(40)]
    )
    prompts = write_lines(tmp_path / "prompts.jsonl", [{"prompt": "Q"}])
    for args, message in (
        (["--judge", "nonsense"], "--judge nonsense: give rule"),
        (["--annotator", "sim-2:speed=3", *missing], "'speed' is not one of noise"),
        (missing, "none.jsonl: no such file"),
        (["--precision", "fp8"], "--precision is"),
        (["--n", "0", *missing], "--n 0: a pilot needs at least 2 pairs"),
        (["--annotators", "0", *missing], "--annotators 0: a panel needs at least 1 annotator"),
        (["--annotators", "2", *missing], "fewer than annotation.overlap (3)"),
        (["--noise", "1.5", *missing], "--noise 1.5: give a share within [0, 1]"),
        (["--pairs", str(bad_pairs)], "... and 37 more lines with the same problem as line 3"),
        (["--pairs", str(prompts)], "prompts.jsonl: this is prompt_only (standard); expected"),
    ):
        result = run_cli("annotate", "pilot", "--project", str(root), "--no-train-rm", *args)
        assert result.code == 2, (args, result.stdout, result.stderr)
        assert message in result.stderr and "Traceback" not in result.stderr
        assert len(result.stderr.strip().splitlines()) <= 5, result.stderr  # not a line a row
    # checked before the pilot's folder is touched: the last pilot stays as it was
    assert (root / "artifacts" / "pilot" / "pilot.json").read_text() == before


def test_pilot_and_the_runs_pilot_stage_get_the_same_panel(tmp_path):
    # one definition (PanelSettings.for_project): [run] simulated_annotators and
    # simulated_noise, the panel raised to annotation.overlap; the flags override them
    root = make_pilot_project(tmp_path / "p", pairs=10)
    spec = root / "rlhfkit.toml"
    spec.write_text(spec.read_text() + "\n[run]\nsimulated_annotators = 4\nsimulated_noise = 0.1\n")
    project = load_project(root)
    assert PanelSettings.for_project(project) == PanelSettings(4, {"noise": 0.1})
    assert PanelSettings.for_project(project, 5, {"noise": 0.0}).failings == {"noise": 0.0}
    overlap = project.spec.model_copy(
        update={"annotation": project.spec.annotation.model_copy(update={"overlap": 6})}
    )
    assert PanelSettings.for_project(Project(root, overlap)).annotators == 6
    result = run_cli("annotate", "pilot", "--project", str(root), "--no-train-rm", "--json")
    assert result.code == 0, result.stderr
    panel = json.loads(result.stdout)["annotators"]
    assert [(a["name"], a["noise"]) for a in panel] == [(f"sim-{i}", 0.1) for i in (1, 2, 3, 4)]
