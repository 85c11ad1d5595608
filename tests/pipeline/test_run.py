"""`rlhfkit run` end to end on the tiny model, through the real CLI, over a project that is not
the demo's: its own task, data, criteria, and a judge (FILE.py:function) standing in for
people. Then one [train.dpo] value changes, and exactly dpo, its evaluation and the report
run again."""

from __future__ import annotations

import getpass
import json
import shutil
from pathlib import Path

import pytest

from tests.conftest import run_cli, write_lines

SPEC = """
name = "one-liners"
task = "Answer each question in one short sentence."
base_model = "tiny-random"

[data]
prompts = "data/prompts.jsonl"
sft = "data/sft.jsonl"
eval_prompts = "data/eval.jsonl"
anchors = "data/anchors.jsonl"

[rubric]
version = "1"
tie_policy = "allow"

[[rubric.criteria]]
name = "short"
description = "One sentence."

[[rubric.criteria]]
name = "answers"
description = "Answers the question."

[[rubric.borderline_examples]]
prompt = "What is 2+2?"
response_a = "4."
response_b = "It is 4, because two and two make four, as everyone knows."
preferred = "a"
why = "Shorter."

[[success_criteria]]
name = "short"
description = "At most 12 words."
direction = "increase"
detector = { kind = "length", unit = "words", max = 12 }

[[success_criteria]]
name = "rambles"
description = "More than 30 words."
direction = "decrease"
detector = { kind = "length", unit = "words", min = 31 }

[annotation]
calibration_size = 4
overlap = 2

[generate]
n = 2
max_new_tokens = 8
limit = 16
start_samples = 1

[train.sft]
max_steps = 2
batch_size = 4

[train.reward]
epochs = 1.0
batch_size = 4

[train.ppo]
max_steps = 1
batch_size = 2
max_new_tokens = 8

[train.dpo]
epochs = 1.0
batch_size = 4
beta = 0.1

[eval]
limit = 4
samples = 1
max_new_tokens = 8

[run]
labeler = "judge.py:shorter"
pilot = "rule"
simulated_annotators = 2
simulated_noise = 0.0
heldout_share = 0.25
"""

JUDGE = '''
def shorter(prompt, response_a, response_b):
    """The shorter reply wins; the same length is a tie."""
    if len(response_a) == len(response_b):
        return "tie"
    return "a" if len(response_a) < len(response_b) else "b"
'''


def make_project(root: Path) -> Path:
    (root / "data").mkdir(parents=True)
    (root / "rlhfkit.toml").write_text(SPEC)
    (root / "judge.py").write_text(JUDGE)
    questions = [f"What is {i} plus {i}?" for i in range(30)]
    write_lines(root / "data" / "prompts.jsonl", [{"prompt": q} for q in questions[:20]])
    write_lines(root / "data" / "eval.jsonl", [{"prompt": q} for q in questions[20:26]])
    write_lines(
        root / "data" / "sft.jsonl",
        [{"prompt": q, "completion": f"{2 * i}."} for i, q in enumerate(questions[:8])],
    )
    write_lines(
        root / "data" / "anchors.jsonl",
        [
            {
                "id": f"a{i}",
                "prompt": q,
                "response_a": f"{2 * i}.",
                "response_b": f"Well, {i} plus {i} is {2 * i}, I think, maybe.",
                "label": "A",
            }
            for i, q in enumerate(questions[26:30])
        ],
    )
    return root


def _finished(run_dir: Path) -> dict[str, str]:
    records = json.loads((run_dir / "stages.json").read_text())
    return {name: r.get("finished") for name, r in records.items()}


def _rerun(project: Path, *args: str) -> set[str]:
    """Run again (fp32); the stages that ran, by their finish times in stages.json."""
    before = _finished(project / "run")
    result = run_cli("run", "--project", str(project), "--precision", "fp32", *args)
    assert result.code == 0, result.stderr
    after = _finished(project / "run")
    return {name for name in after if after[name] != before[name]}


@pytest.fixture(scope="module")
def first_run(tmp_path_factory):
    project = make_project(tmp_path_factory.mktemp("run") / "one-liners")
    result = run_cli("run", "--project", str(project), "--precision", "fp32", cwd=project)
    return project, result


def test_run_takes_a_new_project_from_its_spec_to_the_report(first_run):
    project, result = first_run
    assert result.code == 0, result.stderr
    run_dir = project / "run"
    finished = _finished(run_dir)
    assert list(finished) == [
        "sft", "candidates", "pilot", "annotate", "rm", "ppo", "dpo", "eval_ppo", "eval_dpo",
        "report",
    ]  # fmt: skip
    assert all(finished.values())
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["simulated_annotators"] is True
    # the rubric's pilot (here the rule judge) ran before annotate, and says it was simulated
    assert summary["pilot"]["simulated"] is True and summary["pilot"]["gate"]["value"] is not None
    assert "SIMULATED pilot (no person labelled): judge rule" in result.stdout
    # the stage doctor's verdicts, counted as summary.json counts them, close the output
    c = summary["doctor"]["counts"]
    assert f"stage doctor: {c['fail']} fail, {c['warn']} warn, {c['ok']} ok" in result.stdout
    assert set(summary["dpo"]["criteria"]) == {"short", "rambles"}
    assert (run_dir / "report.html").exists() and (run_dir / "rm" / "eval_rm.json").exists()
    panel = json.loads((run_dir / "annotation" / "panel.json").read_text())
    assert [a["name"] for a in panel["annotators"]] == ["sim-1", "sim-2"]
    assert panel["anchor_pairs"] == 4  # the anchors' answers joined the training pairs
    # the effective config of each stage is what ran: the spec's table, the run's paths
    records = json.loads((run_dir / "stages.json").read_text())
    dpo = records["dpo"]["inputs"]["config"]
    assert (dpo["beta"], dpo["epochs"], dpo["batch_size"]) == (0.1, 1.0, 4)
    assert dpo["data"].endswith("preferences.dpo.jsonl") and dpo["precision"] == "fp32"
    manifest = json.loads((run_dir / "dpo" / "final" / "rlhfkit-manifest.json").read_text())
    assert manifest["config"]["beta"] == 0.1


def test_changing_one_dpo_value_reruns_dpo_its_evaluation_and_the_report_only(first_run):
    project, _ = first_run
    spec = project / "rlhfkit.toml"
    spec.write_text(spec.read_text().replace("beta = 0.1", "beta = 0.25"))
    dry = run_cli("run", "--project", ".", "--dry-run", "--precision", "fp32", cwd=project)
    assert dry.code == 0, dry.stderr  # the same folder by another name: the same stages
    assert "changed: config.beta" in dry.stdout
    assert dry.stdout.count("skip (done)") == 7
    assert _rerun(project) == {"dpo", "eval_dpo", "report"}
    manifest = json.loads((project / "run" / "dpo" / "final" / "rlhfkit-manifest.json").read_text())
    assert manifest["config"]["beta"] == 0.25


def test_until_and_from_bound_the_run(first_run):
    project, _ = first_run
    assert _rerun(project, "--from", "rm", "--until", "rm") == {"rm"}
    dry = run_cli("run", "--project", str(project), "--dry-run", "--precision", "fp32")
    assert "rm ran again since" in dry.stdout  # what read the new reward model is stale


def test_a_bad_stage_name_or_setting_fails_before_anything_runs(tmp_path):
    project = make_project(tmp_path / "p")
    bad = run_cli("run", "--project", str(project), "--until", "ppo2")
    assert bad.code == 2 and "--until ppo2: this project's stages are sft," in bad.stderr
    typo = run_cli("run", "--project", str(project), "--set", "train.dpo.bta=0.2")
    assert typo.code == 2 and "train.dpo.bta: unknown setting; did you mean beta?" in typo.stderr
    assert "Traceback" not in typo.stderr and not (project / "run").exists()


def test_project_check_lists_every_problem_with_its_line(tmp_path):
    project = make_project(tmp_path / "p")
    ok = run_cli("project", "check", str(project))
    assert ok.code == 0, ok.stderr
    assert "data.prompts: data/prompts.jsonl, 20 rows" in ok.stdout.replace(str(project) + "/", "")
    spec = project / "rlhfkit.toml"
    spec.write_text(spec.read_text().replace("beta = 0.1", "beta = 0.1\nbta = 1"))
    with (project / "data" / "sft.jsonl").open("a") as f:
        f.write('{"prompt": "x"}\n')
    bad = run_cli("project", "check", str(project))
    assert bad.code == 2
    line = spec.read_text().splitlines().index("bta = 1") + 1
    assert f"rlhfkit.toml:{line}: train.dpo.bta: unknown setting" in bad.stderr
    assert "sft.jsonl:9:" in bad.stderr  # and the data file's bad row, in the same run


@pytest.mark.parametrize("flag", [(), ("--max-steps", "1")])
def test_train_with_a_project_reads_its_train_table_and_a_flag_beats_it(tmp_path, flag):
    project = make_project(tmp_path / "p")
    out = tmp_path / "sft"
    result = run_cli(
        "train", "sft", "--data", str(project / "data" / "sft.jsonl"), "--project",
        str(project), "--model", "tiny-random", "--output-dir", str(out), "--precision",
        "fp32", *flag,
    )  # fmt: skip
    assert result.code == 0, result.stderr
    config = json.loads((out / "final" / "rlhfkit-manifest.json").read_text())["config"]
    assert config["batch_size"] == 4  # [train.sft] batch_size = 4, the class says 8
    assert config["max_steps"] == (1 if flag else 2)
    assert config["learning_rate"] == 1e-3  # in neither: the measured LoRA default


def test_with_people_run_stops_at_annotate_and_says_what_to_do(tmp_path, monkeypatch):
    monkeypatch.delenv("RLHFKIT_DB_URL", raising=False)
    project = make_project(tmp_path / "p")
    spec = project / "rlhfkit.toml"
    spec.write_text(spec.read_text().replace('labeler = "judge.py:shorter"', ""))
    result = run_cli("run", "--project", str(project), "--precision", "fp32")
    assert result.code == 0, result.stderr
    out = " ".join(result.stdout.split())
    assert "waiting for people to label: 0 of" in out
    assert f"rlhfkit annotate serve --project {project}" in out
    assert "Then run the same `rlhfkit run` again" in out
    assert f"That is: rlhfkit run --project {project} --precision fp32" in out
    records = json.loads((project / "run" / "stages.json").read_text())
    assert "finished" in records["candidates"] and "finished" not in records["annotate"]
    assert (project / "artifacts" / "annotations.sqlite").exists()  # the project's store
    state = run_cli("annotate", "status", "--json", "--project", str(project))
    opened = json.loads(state.stdout)["gate"]["rounds"][0]["opened_by"]
    assert opened == getpass.getuser()  # who ran `rlhfkit run`, as the gate actions record
    again = run_cli("run", "--project", str(project), "--precision", "fp32")
    assert again.code == 0 and "waiting for people to label" in again.stdout
    assert json.loads((project / "run" / "stages.json").read_text())["sft"] == records["sft"]


def test_a_simulated_panel_smaller_than_the_overlap_is_refused_before_it_runs(tmp_path):
    project = make_project(tmp_path / "p")
    args = ("--set", "run.simulated_annotators=1")
    for command in (("project", "check", str(project)), ("run", "--project", str(project))):
        result = run_cli(*command, *args)
        assert result.code == 2, result.stdout
        assert "run.simulated_annotators is 1, fewer than annotation.overlap (2)" in result.stderr
    assert not (project / "run").exists()


def test_a_judge_that_raises_is_named_without_a_traceback(tmp_path):
    project = make_project(tmp_path / "p")
    (project / "judge.py").write_text("def shorter(prompt, a, b):\n    return 1 / 0\n")
    result = run_cli("run", "--project", str(project), "--precision", "fp32")
    assert result.code == 2
    assert "labeler 'shorter' raised ZeroDivisionError: division by zero" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_moved_project_or_another_policy_list_reruns_nothing_it_does_not_feed(first_run):
    project, _ = first_run
    moved = project.parent / "renamed-project"
    shutil.copytree(project, moved)

    def plan_table(folder: Path, *args: str) -> list[str]:
        """The dry run's stage table, without its title (which names the folder)."""
        dry = run_cli("run", "--project", str(folder), "--dry-run", "--precision", "fp32", *args)
        assert dry.code == 0, dry.stderr
        return dry.stdout.split("The settings")[0].splitlines()[1:]

    # paths are fingerprinted relative to the run: the copy is as done as the original
    assert plan_table(moved) == plan_table(project)
    rows = plan_table(moved, "--set", 'run.policies=["dpo"]')
    assert not any("│ ppo" in row or "eval_ppo" in row for row in rows)
    annotate = next(row for row in rows if "│ annotate" in row)
    assert "skip (done)" in annotate  # the policy list does not feed the labels
    late = run_cli("run", "--project", str(moved), "--from", "report", "--until", "rm")
    assert late.code == 2 and "--from report comes after --until rm" in late.stderr
    refused = run_cli("run", "--project", str(moved), "--set", "monitors.kl_max=3")
    assert refused.code == 2 and "--set monitors.kl_max: the stages read it" in refused.stderr
