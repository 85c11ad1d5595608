"""`--precision auto` and RLHFKIT_FP32_ONLY: with the variable at 1, auto resolves as on a host
without native bf16 (an AVX2-only CPU picks fp32), so that host's runs can be reproduced on
one that would pick bf16; an explicit --precision is still honoured."""

import json

import pytest
import torch

from rlhfkit.errors import UserError
from rlhfkit.train import loop
from rlhfkit.train.loop import FP32_ONLY, resolve_precision
from tests.conftest import run_cli, write_lines


@pytest.fixture
def bf16_host(monkeypatch):
    """A CPU host where bf16 won the race, whatever this machine has."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(loop, "_BF16_FASTER", True)
    monkeypatch.delenv(FP32_ONLY, raising=False)


def test_fp32_only_makes_auto_fp32_and_passes_explicit_choices_through(bf16_host, monkeypatch):
    assert resolve_precision("auto") == "bf16"
    monkeypatch.setenv(FP32_ONLY, "1")
    assert resolve_precision("auto") == "fp32"
    assert resolve_precision("bf16") == "bf16"
    assert resolve_precision("fp32") == "fp32"
    monkeypatch.setenv(FP32_ONLY, "0")
    assert resolve_precision("auto") == "bf16"
    monkeypatch.setenv(FP32_ONLY, "yes")
    with pytest.raises(UserError, match="RLHFKIT_FP32_ONLY is 1"):
        resolve_precision("auto")


@pytest.mark.slow
@pytest.mark.parametrize(("precision", "expected"), [("auto", "fp32"), ("bf16", "bf16")])
def test_a_training_command_records_the_precision_it_ran_in(
    bf16_host, monkeypatch, tmp_path, precision, expected
):
    monkeypatch.setenv(FP32_ONLY, "1")
    rows = [{"prompt": "Where is my order?", "completion": "It ships today."}] * 4
    data = write_lines(tmp_path / "sft.jsonl", rows)
    result = run_cli("train", "sft", "--model", "tiny-random", "--data", str(data),
                     "--output-dir", str(tmp_path / "sft"), "--max-steps", "1",
                     "--batch-size", "2", "--precision", precision)
    assert result.code == 0, result.stderr
    manifest = json.loads((tmp_path / "sft" / "final" / "rlhfkit-manifest.json").read_text())
    assert manifest["config"]["precision"] == expected
