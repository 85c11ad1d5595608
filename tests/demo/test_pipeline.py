"""The demo: `rlhfkit run` on the bundled project with the simulated panel. Every stage after
SFT runs for real on the tiny random model (with candidate replies written from the example's
templates, since a random model's own replies are all 'both bad' to the rubric)."""

from __future__ import annotations

import json
import random
import time

import pytest

from rlhfkit.demo.pipeline import PANEL, QUICK, DemoConfig, scaffold
from rlhfkit.pipeline.plan import RunOptions
from rlhfkit.pipeline.run import plan_run, run_pipeline
from rlhfkit.pipeline.stages import run_stage
from rlhfkit.templates.support_replies import SIGN_OFF, build
from tests.conftest import run_cli, write_lines

TINY = {
    **QUICK,
    "train.sft.max_steps": 2,
    "generate.max_new_tokens": 8,
    "annotation.calibration_size": 8,
    "train.ppo.max_new_tokens": 8,
    "train.dpo.epochs": 1.0,
    "eval.limit": 4,
    "eval.max_new_tokens": 8,
}


def _template_candidates(n: int, seed: int = 0) -> list[dict]:
    """Comparison pairs of the kinds a half-trained policy writes: the same helpful reply
    with or without a sign-off, with hedging, padded, or a useless apology."""
    rng = random.Random(seed)
    _prompts, _, sft = build()
    variants = (
        lambda r: r,
        lambda r: r.removesuffix("\n\n" + SIGN_OFF),
        lambda r: r.removesuffix("\n\n" + SIGN_OFF) + " I think that should help, maybe.",
        lambda r: "I'm sorry about that. We value your feedback.",
    )
    rows = []
    for i, row in enumerate(sft[:n]):
        reply = row["completion"][0]["content"]
        a, b = rng.sample(variants, 2)
        rows.append(
            {
                "id": f"c{i}",
                "prompt": row["prompt"],
                "response_a": [{"role": "assistant", "content": a(reply)}],
                "response_b": [{"role": "assistant", "content": b(reply)}],
                "topic": row["topic"],
            }
        )
    return rows


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """Every stage from annotation to the report, on the tiny model, as the demo runs them."""
    cfg = DemoConfig(root=tmp_path_factory.mktemp("demo"), quick=True)
    options = RunOptions(model="tiny-random", precision="fp32")
    plan = plan_run(scaffold(cfg), cfg.root, labeler=PANEL, options=options, overrides=TINY)
    run_pipeline(plan, until="sft")
    paths = plan.paths
    paths.candidates.parent.mkdir(parents=True, exist_ok=True)
    write_lines(paths.candidates, _template_candidates(24))
    panel = run_stage(plan, plan.stage("annotate"), None, {})
    for name in ("rm", "ppo", "dpo", "eval_ppo", "eval_dpo"):
        run_stage(plan, plan.stage(name), None, {})
    html = run_stage(plan, plan.stage("report"), None, {"sft": 1.0, "rm": 2.0})
    summary = json.loads((paths.root / "summary.json").read_text())
    return paths, panel, html, summary


@pytest.mark.slow  # the `run` fixture trains every stage
def test_the_panel_labels_through_the_app_and_the_export_trains(run):
    paths, panel, _, _ = run
    assert panel["simulated"] and all(a["name"].startswith("sim-") for a in panel["annotators"])
    assert panel["train_pairs"] > 0 and panel["heldout_pairs"] > 0
    status = json.loads((paths.annotation / "status.json").read_text())
    gate = status["gate"]
    first = gate["rounds"][0]  # evaluated (True or False, not None), by the threshold
    assert first["passed"] is (first["percent_agreement"] >= gate["threshold"])
    result = run_cli("data", "validate", str(paths.prefs))
    assert result.code == 0, result.stderr
    exported = len(paths.prefs.read_text().splitlines())
    assert f"preference (conversational), {exported} rows" in result.stdout
    assert (paths.final("rm") / "config.json").exists()
    assert (paths.rm / "eval_rm.json").exists()


@pytest.mark.slow  # the `run` fixture trains every stage
def test_summary_json_has_the_promised_keys(run):
    paths, _, html, summary = run
    assert html.exists() and (paths.root / "report.md").exists()
    on_disk = json.loads((paths.root / "summary.json").read_text())
    assert on_disk == json.loads(json.dumps(summary))
    for key in (
        "rm_heldout_accuracy",
        "calibration_gate",
        "flagged_annotators",
        "ppo",
        "dpo",
        "stage_seconds",
    ):
        assert key in on_disk, key
    assert set(on_disk["calibration_gate"]) >= {"statistic", "value", "threshold", "passed"}
    for policy in ("ppo", "dpo"):
        ev = on_disk[policy]
        assert set(ev["criteria"]) == {"signs_off", "no_next_step", "concise"}
        for c in ev["criteria"].values():
            assert {"before", "after", "p_value", "verdict"} <= set(c)
        # same tokenizer: the KL estimate exists, the mean of the per-sample log-ratios
        samples = [json.loads(x) for x in (paths.eval(policy) / "samples.jsonl").open()]
        assert ev["kl"] == pytest.approx(sum(r["kl"] for r in samples) / len(samples))
        assert isinstance(ev["hacking_flags"], list)
    assert on_disk["stage_seconds"] == {"sft": 1.0, "rm": 2.0}


@pytest.mark.slow
def test_the_cli_demo_stops_clearly_and_resumes_without_redoing_stages(tmp_path):
    """A random model's replies are (nearly) all 'both bad' to the panel, so the tiny demo
    stops at annotation with a plain reason (exit 2: nothing to train on). The panel takes
    turns against a seeded server, so the rerun labels the same way and stops at the same
    place, without redoing a finished stage."""
    args = ("demo", "--quick", "--dir", str(tmp_path / "d"), "--model", "tiny-random")
    first = run_cli(*args)
    assert first.code == 2, first.stderr
    # the tiny random model's replies decide where it stops: another torch build could
    # sample replies that give a majority somewhere and stop at the reward model instead
    assert "error: nothing to export" in first.stderr
    assert "Traceback" not in first.stderr
    records = json.loads((tmp_path / "d" / "stages.json").read_text())
    assert list(records) == ["project", "sft", "candidates", "annotate"]
    finished = {name: r for name, r in records.items() if "finished" in r}
    assert set(finished) == {"project", "sft", "candidates"}
    started = time.time()
    again = run_cli(*args)
    assert again.code == 2 and "Traceback" not in again.stderr
    assert again.stderr.splitlines()[-2:] == first.stderr.splitlines()[-2:]  # same labels
    rerun = json.loads((tmp_path / "d" / "stages.json").read_text())
    assert {name: rerun[name] for name in finished} == finished  # not one of them ran again
    assert time.time() - started < 60


def test_the_demo_refuses_an_unknown_precision_before_it_starts(tmp_path):
    result = run_cli("demo", "--quick", "--dir", str(tmp_path / "d"), "--precision", "fp16")
    assert result.code == 2 and "--precision is auto, bf16 or fp32" in result.stderr
    assert not (tmp_path / "d").exists()
