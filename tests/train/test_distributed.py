"""The cross-process figures: two data-parallel shards give what one process holding both
would, and one process's figures are its own; DDP over two CPU processes changes nothing but
the speed."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from rlhfkit.train import losses as L
from rlhfkit.train.distributed import (
    any_process,
    mean_over_processes,
    response_means,
    sum_over_processes,
    token_mean,
    whiten,
)
from tests.conftest import run_cli, write_lines
from tests.train.conftest import losses, preferences, train_args


class TwoShards:
    """An accelerator of two processes, seen from the first: `reduce` adds what the second
    sends, queued in order."""

    num_processes = 2
    device = torch.device("cpu")

    def __init__(self, *other: torch.Tensor):
        self.other = list(other)

    def reduce(self, x: torch.Tensor, op: str) -> torch.Tensor:
        assert op == "sum"
        return x + self.other.pop(0)


class One:
    num_processes = 1
    device = torch.device("cpu")

    def reduce(self, x, op):
        raise AssertionError("one process reduces nothing")


def test_one_process_keeps_its_own_figures():
    x = torch.tensor([1.0, 2.0, 6.0])
    assert torch.equal(sum_over_processes(One(), x), x)
    assert mean_over_processes(One(), 0.25) == 0.25
    assert any_process(One(), True) and not any_process(One(), False)
    assert response_means(One(), {"r": x}) == {"r": 3.0}
    assert token_mean(One(), 6.0, 4.0) == 1.5
    mask = torch.tensor([[1.0, 1.0, 0.0], [1.0, 0.0, 0.0]])
    y = torch.tensor([[1.0, 3.0, 9.0], [8.0, 9.0, 9.0]])
    assert torch.equal(whiten(y, mask, One()), L.masked_whiten(y, mask))


def test_two_shards_give_the_figures_of_both_together():
    a, b = torch.tensor([1.0, 2.0, 4.0]), torch.tensor([8.0])
    both = torch.cat([a, b])
    got = response_means(TwoShards(torch.tensor([b.sum(), 1.0])), {"r": a})
    assert abs(got["r"] - float(both.mean())) < 1e-6
    assert token_mean(TwoShards(torch.tensor([9.0, 6.0])), 6.0, 4.0) == 1.5
    assert mean_over_processes(TwoShards(torch.tensor(0.75)), 0.25) == 0.5
    assert any_process(TwoShards(torch.tensor(1.0)), False)
    assert not any_process(TwoShards(torch.tensor(0.0)), False)
    # whitening: the statistics of both shards' masked entries, applied to this shard's
    x, mx = torch.tensor([[1.0, 3.0, 5.0]]), torch.tensor([[1.0, 1.0, 0.0]])
    y, my = torch.tensor([[2.0, 7.0, 0.0]]), torch.tensor([[1.0, 1.0, 1.0]])
    theirs = torch.stack([(y * my).sum(), (y * y * my).sum(), my.sum()])
    for shift in (True, False):
        got = whiten(x, mx, TwoShards(theirs), shift_mean=shift)
        want = L.masked_whiten(torch.cat([x, y]), torch.cat([mx, my]), shift_mean=shift)[:1]
        torch.testing.assert_close(got, want)


@pytest.mark.slow  # training runs in two processes: DDP over two CPU ranks
def test_two_processes_match_one(tmp_path):
    """DDP over 2 CPU processes (gloo) with the same global batch gives the same loss curve."""
    data = write_lines(tmp_path / "prefs.jsonl", preferences())
    args = train_args(data, tmp_path / "one", "--max-steps", "6", "--save-every", "0")
    single = run_cli(*args)
    assert single.code == 0, single.stderr
    accelerate = str(Path(sys.executable).parent / "accelerate")
    config = Path(__file__).parents[2] / "configs" / "accelerate" / "ddp-cpu.yaml"
    launch = [accelerate, "launch", "--config_file", str(config), "--main_process_port", "29517",
              "-m", "rlhfkit.cli"]
    two = subprocess.run(
        launch + train_args(data, tmp_path / "two", "--max-steps", "6", "--save-every", "0"),
        capture_output=True, text=True, timeout=600,
        env={**os.environ, "CUDA_VISIBLE_DEVICES": ""},
    )
    assert two.returncode == 0, two.stderr[-3000:]
    for (s1, a), (s2, b) in zip(losses(tmp_path / "one"), losses(tmp_path / "two"), strict=True):
        assert s1 == s2 and abs(a - b) < 1e-5
    manifest = json.loads((tmp_path / "two" / "final" / "rlhfkit-manifest.json").read_text())
    assert manifest["kind"] == "dpo"
