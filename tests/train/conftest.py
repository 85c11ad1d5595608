"""Helpers the training tests share: the support-reply preference rows, the common command-line
arguments, and loss curves read back from a run's metrics."""

import json
from pathlib import Path

from tests.conftest import messages, run_cli


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
