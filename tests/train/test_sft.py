"""`rlhfkit train sft`, then `train rm` and `eval rm`, end to end on the tiny model."""

import json

import pytest

from tests.conftest import run_cli, write_lines
from tests.train.conftest import common, support_pairs


@pytest.mark.slow
def test_sft_then_rm_then_eval(tmp_path):
    sft_rows = [{"prompt": r["prompt"], "completion": r["chosen"]} for r in support_pairs(16)]
    sft_data = write_lines(tmp_path / "sft.jsonl", sft_rows)
    result = run_cli("train", "sft", *common(tmp_path / "sft", sft_data, "--max-steps", "4"))
    assert result.code == 0, result.stderr
    final = tmp_path / "sft" / "final"
    assert (final / "model.safetensors").exists() and (final / "tokenizer.json").exists()
    manifest = json.loads((final / "rlhfkit-manifest.json").read_text())
    assert manifest["kind"] == "sft" and manifest["inputs"]["data"]["sha256"]
    metrics = [json.loads(x) for x in (tmp_path / "sft" / "metrics.jsonl").read_text().splitlines()]
    assert metrics[-1]["loss"] < metrics[0]["loss"]

    prefs = write_lines(tmp_path / "prefs.jsonl", support_pairs(32))
    held_out = write_lines(tmp_path / "held.jsonl", support_pairs(16, offset=100))
    rm = run_cli("train", "rm", *common(tmp_path / "rm", prefs, "--epochs", "2",
                                        "--learning-rate", "1e-3"))
    assert rm.code == 0, rm.stderr
    manifest = json.loads((tmp_path / "rm" / "final" / "rlhfkit-manifest.json").read_text())
    assert manifest["rubric_version"] == "1"
    ev = run_cli("eval", "rm", "--model", str(tmp_path / "rm" / "final"), "--data",
                 str(held_out), "--json")
    assert ev.code == 0, ev.stderr
    figures = json.loads(ev.stdout)
    assert figures["pairs"] == 16 and figures["accuracy"] == 1.0
