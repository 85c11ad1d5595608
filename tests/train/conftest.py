"""Helpers the training tests share: the support-reply preference rows, the common command-line
arguments, loss curves read back from a run's metrics, and the PPO tests' tiny policy with its
rule reward (`setup`)."""

import json
from pathlib import Path

import pytest
import torch

from rlhfkit.models import tiny_model
from tests.conftest import messages, run_cli, write_lines

RULES = '''
TARGET = {target!r}


def count(prompts, responses):
    """The rule: how often the response says TARGET."""
    return [float(r.count(TARGET)) for r in responses]


def broken(prompts, responses):
    return [1.0]


def offset(prompts, responses):
    """The same rule far below zero, as a reward model's arbitrary offset can put it."""
    return [r - 5.0 for r in count(prompts, responses)]
'''


def support_pairs(n, offset=0):
    rows = []
    for i in range(offset, offset + n):
        email = f"Hello, order #{4000 + 7 * i} for a lamp is late. Ticket {i}."
        rows.append({
            "prompt": messages(("user", email)),
            "chosen": messages(("assistant", "Sorry for the wait. It ships today.\n\nBest "
                                             "regards,\nThe Support Team")),
            "rejected": messages(("assistant", "I think maybe it might come, perhaps, I am not "
                                               "sure.")),
            "rubric_version": "1",
        })
    return rows


def common(out, data, *extra):
    return ["--model", "tiny-random", "--data", str(data), "--output-dir", str(out),
            "--precision", "fp32", *extra]


def curve(out):
    lines = (out / "metrics.jsonl").read_text().splitlines()
    return [json.loads(x)["loss"] for x in lines]


def train(tmp_path, command, name, data, *extra):
    out = tmp_path / name
    result = run_cli("train", command, "--model", "tiny-random", "--data", str(data),
                     "--output-dir", str(out), "--precision", "fp32", "--batch-size", "4",
                     "--max-steps", "4", "--learning-rate", "1e-3", "--save-every", "0", *extra)
    assert result.code == 0, result.stderr
    return curve(out)


def close(a, b, tol=1e-5):
    return len(a) == len(b) and all(abs(x - y) < tol for x, y in zip(a, b, strict=True))


def preferences(n=24):
    return [
        {"prompt": messages(("user", f"Customer {i}: my order #{1000 + 37 * i} is late.")),
         "chosen": messages(("assistant", f"Sorry! Order #{1000 + 37 * i} ships today.\n\nBest "
                                          "regards,\nThe Team")),
         "rejected": messages(("assistant", "I think maybe it will arrive, perhaps." + " x" * i))}
        for i in range(n)
    ]


def losses(out: Path) -> list[tuple[int, float]]:
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return [(r["step"], r["loss"]) for r in rows]


def train_args(data, out, *extra):
    return ["train", "dpo", "--model", "tiny-random", "--data", str(data), "--output-dir",
            str(out), "--precision", "fp32", "--batch-size", "4", "--learning-rate", "1e-3",
            "--save-every", "3", *extra]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """A tiny random model with peaked next-token distributions (a plain random init samples
    near-uniformly from 49k tokens, where no rule would ever fire), its prompts, and a rule
    rewarding a token it samples now and then."""
    root = tmp_path_factory.mktemp("ppo")
    model, tok = tiny_model(seed=3)
    with torch.no_grad():
        weights = model.model.embed_tokens.weight
        weights.normal_(0.0, 0.2, generator=torch.Generator().manual_seed(3))
    model.save_pretrained(root / "model")
    tok.save_pretrained(root / "model")
    prompts = [{"prompt": f"Order {i} is late because"} for i in range(16)]
    data = write_lines(root / "prompts.jsonl", prompts)
    # the rewarded token: one that shows up in some, not most, sampled responses
    enc = tok([p["prompt"] for p in prompts], return_tensors="pt", padding=True,
              padding_side="left")
    torch.manual_seed(0)
    out = model.generate(**enc, do_sample=True, max_new_tokens=12, top_k=None,
                         pad_token_id=tok.pad_token_id)[:, enc["input_ids"].shape[1]:]
    counts = torch.bincount(out.flatten(), minlength=len(tok))
    counts[tok.eos_token_id] = 0
    target_id = int(counts.argsort(descending=True)[1])
    target = tok.decode([target_id])
    (root / "rules.py").write_text(RULES.format(target=target))
    return root, data
