"""`rlhfkit annotate pilot` through the real CLI: a rubric in code labels a pilot round
through the app, a tiny reward model learns from its labels; bad input is one clear line."""

from __future__ import annotations

import json

import pytest

from rlhfkit.data import load
from rlhfkit.pipeline.pilot import PanelSettings
from rlhfkit.pipeline.pilot_judges import RuleJudge
from rlhfkit.pipeline.simulated import response_text
from rlhfkit.project import Project, load_project
from tests.conftest import run_cli, write_lines
from tests.pipeline.test_pilot import BAD_JUDGES, make_pilot_project
from tests.pipeline.test_run import make_project


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
    (root / "bad.py").write_text(BAD_JUDGES)
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
        (["--judge", "bad.py:one"], "--judge bad.py:one: one(prompt) cannot be called with"),
        (["--judge", "bad.py:boom"], "raised ValueError on borderline example 1: kaboom"),
        (["--annotator", "sim-9:noise=0.5", *missing], "the panel has 3 annotators (sim-1 to"),
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


def _decline_template(root):
    """The decline-off-topic template as `rlhfkit init` writes it, and pairs of its own
    prompts (their columns kind, on_topic, topic carried, as `generate` does): the help
    desk archive's reply against a decline."""
    made = run_cli("init", str(root), "--template", "decline-off-topic")
    assert made.code == 0, made.stderr
    decline = [{"role": "assistant", "content": "I am sorry, I can only help with the shop."}]
    rows = []
    for i, row in enumerate(load(root / "data" / "sft.jsonl").rows):
        reply = row.pop("completion")
        a, b = (reply, decline) if i % 2 else (decline, reply)
        rows.append(row | {"id": f"p{i}", "response_a": a, "response_b": b})
    return write_lines(root / "pairs.jsonl", rows)


def test_the_rule_judge_pilots_the_decline_template_by_each_pairs_own_columns(tmp_path):
    root = tmp_path / "dot"
    pairs = _decline_template(root)
    # every anchor row carries its kind: on-topic anchors are judged by refuses_on_topic,
    # off-topic ones by declines_off_topic (none of them is in data/prompts.jsonl)
    project = load_project(root)
    judge, anchors = RuleJudge.from_project(project), load(root / "data" / "anchors.jsonl").rows
    judge.see_pairs(anchors)
    said = [judge(r["prompt"], *(response_text(r[k]) for k in ("response_a", "response_b")))[0]
            for r in anchors]  # fmt: skip
    assert [s.upper() for s in said] == [r["label"] for r in anchors]  # 48 of 48
    result = run_cli(
        "annotate", "pilot", "--project", str(root), "--pairs", str(pairs), "--n", "80",
        "--noise", "0", "--model", "tiny-random", "--precision", "fp32",
    )  # fmt: skip
    assert result.code == 0, result.stderr
    pilot = json.loads((root / "artifacts" / "pilot" / "pilot.json").read_text())
    assert pilot["anchor_accuracy"] == 1.0 and pilot["anchor_labels"] >= 5
    assert pilot["export"]["rows"] > 0 and not any("anchor" in w for w in pilot["warnings"])
    assert pilot["reward_model"]["trained"] is True  # on the tiny random model, from 80 pairs
    # the spec's borderline examples have no columns: criteria with applies_to leave them,
    # and the pilot says so beside the check
    assert pilot["borderline_examples"]["left_out"] == ["declines_off_topic", "refuses_on_topic"]
    out = " ".join(result.stdout.split())
    assert "(judged without declines_off_topic, refuses_on_topic: no prompt columns)" in out
    assert "anchors: accuracy 1.00" in out
    # one progress line to start and one to end off a terminal, not one per turn
    progress = [x for x in result.stderr.splitlines() if "simulated labels" in x]
    assert 1 <= len(progress) <= 3, progress
    done = progress[-1].split()[3]  # "pilot simulated labels N/N  1 s"
    assert done == f"{sum(pilot['labels'].values())}/{sum(pilot['labels'].values())}"


LONGER = "def longer(prompt, a, b):\n    return ('a' if len(a) > len(b) else 'b'), 'the longer'\n"


def test_a_pilot_with_an_empty_export_says_why_and_writes_the_labels_for_agreement(tmp_path):
    # a judge that prefers the longer reply, anchors whose answer is the shorter: every
    # annotator falls below anchor_accuracy_threshold, and the export is left with no row
    root = make_pilot_project(tmp_path / "p", pairs=40)
    spec = root / "rlhfkit.toml"
    spec.write_text(
        spec.read_text().replace("[annotation]\n", "[annotation]\nmin_anchor_labels = 1\n")
    )
    (root / "longer.py").write_text(LONGER)
    args = ("--project", str(root), "--judge", "longer.py:longer", "--noise", "0")
    result = run_cli("annotate", "pilot", *args, "--model", "tiny-random")
    assert result.code == 0, result.stderr
    out = " ".join(result.stdout.split())
    assert "reward model: not trained (the export has no rows: see the warning below)" in out
    assert "warning: anchor accuracy 0.00 over" in out
    assert (
        "warning: the export is empty, no pair to learn from: every annotator who labeled "
        "pairs is left out for low anchor accuracy"
    ) in out
    pilot = root / "artifacts" / "pilot"
    assert not (pilot / "preferences.jsonl").exists() and not (pilot / "rm").exists()
    # the labels are written all the same: the full statistics of a failed round
    agreement = run_cli(
        "agreement", str(pilot / "labels.jsonl"), "--anchors", str(pilot / "gold.jsonl")
    )
    assert agreement.code == 0, agreement.stderr
    # and `annotate export --labels` on the pilot's store writes them too
    db = ["--project", str(root), "--db", str(pilot / "annotations.sqlite")]
    labels = tmp_path / "labels.jsonl"
    exported = run_cli(
        "annotate", "export", str(tmp_path / "prefs.jsonl"), "--labels", str(labels), *db
    )
    assert exported.code == 2 and "no preferences written; written all the same" in exported.stderr
    assert labels.read_text() == (pilot / "labels.jsonl").read_text()
    assert not (tmp_path / "prefs.jsonl").exists()


def test_pilot_finds_the_runs_candidates_and_says_so(tmp_path):
    root = make_pilot_project(tmp_path / "p", pairs=10)
    ran = root / "run" / "annotation" / "candidates.jsonl"
    ran.parent.mkdir(parents=True)
    (root / "artifacts" / "candidates.jsonl").rename(ran)
    result = run_cli("annotate", "pilot", "--project", str(root), "--no-train-rm")
    assert result.code == 0, result.stderr
    assert (
        f"pairs: {ran}, the run's candidates (no {root / 'artifacts' / 'candidates.jsonl'})"
        in result.stderr
    )
    pilot = json.loads((root / "artifacts" / "pilot" / "pilot.json").read_text())
    assert pilot["pairs"]["source"] == str(ran) and pilot["pairs"]["drawn"] == 10
    ran.unlink()  # neither: the hint names both places before it suggests sampling
    missing = run_cli("annotate", "pilot", "--project", str(root), "--no-train-rm")
    assert missing.code == 2 and "candidates.jsonl: no such file" in missing.stderr
    assert "RUN/annotation/candidates.jsonl" in " ".join(missing.stderr.split())


def test_run_refuses_a_bad_pilot_judge_before_any_stage(tmp_path):
    project = make_project(tmp_path / "p")
    (project / "bad.py").write_text(BAD_JUDGES)
    for value, message in (
        ("garbage", '[run] pilot = "garbage": give rule'),
        ("bad.py:one", '[run] pilot = "bad.py:one": one(prompt) cannot be called with'),
    ):
        bad = run_cli("run", "--project", str(project), "--set", f"run.pilot={value}")
        assert bad.code == 2 and message in bad.stderr, bad.stderr
        assert "Traceback" not in bad.stderr and "--judge" not in bad.stderr
    assert not (project / "run").exists()  # refused before any stage ran
