"""Everything rlhfkit writes as JSON is strict JSON (RFC 8259: no NaN, no Infinity)."""

import ast
import json
import math
from pathlib import Path

import numpy as np
import pytest

from rlhfkit import strict_json
from tests.conftest import run_cli

SRC = Path(__file__).parents[1] / "src" / "rlhfkit"


def strict_loads(text: str):
    def refuse(token):
        raise ValueError(f"{token} is not JSON")

    return json.loads(text, parse_constant=refuse)


def test_nulled_replaces_non_finite_numbers_and_says_which():
    record = {
        "step": 3,
        "loss": float("nan"),
        "kl": np.float64("inf"),
        "reward": np.float32(0.5),
        "nested": {"grad_norm": -math.inf, "ok": 1.0},
        "history": [1.0, float("nan"), {"x": float("nan")}],
        "flag": True,
    }
    out = strict_json.nulled(record)
    assert strict_loads(strict_json.dumps(out)) == {
        "step": 3,
        "loss": None,
        "kl": None,
        "reward": 0.5,
        "nested": {"grad_norm": None, "ok": 1.0, "non_finite": {"grad_norm": "-Infinity"}},
        "history": [1.0, None, {"x": None, "non_finite": {"x": "NaN"}}],
        "flag": True,
        "non_finite": {"loss": "NaN", "kl": "Infinity"},
    }
    assert math.isnan(record["loss"])  # the input is left as it was


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf"), np.float64("nan")])
def test_dumps_refuses_what_json_cannot_say(bad):
    with pytest.raises(ValueError):
        strict_json.dumps({"learning_rate": bad})
    with pytest.raises(ValueError):
        strict_json.dump([bad], open("/dev/null", "w"))  # noqa: SIM115


def json_writes(tree: ast.AST) -> list[ast.Call]:
    return [
        node
        for node in ast.walk(tree)
        if isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr in ("dump", "dumps")
        and isinstance(node.func.value, ast.Name)
        and node.func.value.id == "json"
    ]


def test_no_writer_calls_the_lenient_json_module_directly():
    """Every json.dump(s) in src/ goes through rlhfkit.strict_json (allow_nan=False), so a
    new writer cannot bring NaN back; the annotation app's included."""
    offenders = []
    for path in SRC.rglob("*.py"):
        rel = path.relative_to(SRC).as_posix()
        if rel == "strict_json.py":
            continue
        for call in json_writes(ast.parse(path.read_text(encoding="utf-8"))):
            offenders.append(f"{rel}:{call.lineno}")
    assert offenders == []


def test_training_metrics_with_a_diverged_loss_are_strict_json(tmp_path):
    from rlhfkit.train.checkpoint import MetricsLog

    log = MetricsLog(tmp_path / "metrics.jsonl")
    log.write({"step": 1, "loss": 0.5})
    log.write({"step": 2, "loss": float("nan"), "grad_norm": float("inf")})
    rows = [strict_loads(line) for line in log.path.read_text().splitlines()]
    assert rows[1]["loss"] is None and rows[1]["non_finite"] == {
        "loss": "NaN",
        "grad_norm": "Infinity",
    }
    log.truncate_after(1)
    assert len(log.path.read_text().splitlines()) == 1


def test_a_manifest_refuses_a_non_finite_config(tmp_path):
    from rlhfkit.lineage import config_hash, write_manifest

    with pytest.raises(ValueError):
        config_hash({"learning_rate": float("nan")})
    with pytest.raises(ValueError):
        write_manifest(tmp_path / "a.jsonl", kind="x", inputs={}, config={"beta": math.inf})
    assert not list(tmp_path.iterdir())  # nothing half-written


@pytest.mark.parametrize("value", ["nan", "inf", "-inf"])
def test_a_non_finite_float_option_is_a_user_error(tmp_path, value):
    result = run_cli(
        "train", "sft", "--data", str(tmp_path / "none.jsonl"), "--learning-rate", value
    )
    assert result.code == 2, result.stderr
    assert "--learning-rate must be a finite number" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_reward_model_scoring_nan_is_a_user_error_not_a_cache_entry(tmp_path):
    from rlhfkit.errors import UserError
    from rlhfkit.evaluate.configs import PolicyEvalConfig
    from rlhfkit.evaluate.policy import _rewards

    class BrokenJudge:
        def scores(self, prompts, texts):
            return [0.5, float("nan")]

    rm = tmp_path / "rm"
    rm.mkdir()
    (rm / "model.safetensors").write_bytes(b"0")
    cfg = PolicyEvalConfig(
        project=tmp_path,
        before="a",
        after="b",
        out=tmp_path / "out",
        reward_model=str(rm),
        sample_cache=tmp_path / "cache",
    )
    with pytest.raises(UserError, match="scored response 1 nan"):
        _rewards(BrokenJudge(), cfg, ["p", "q"], ["x", "y"])
    assert not (tmp_path / "cache").exists() or not list((tmp_path / "cache").iterdir())


def nested(depth: int, leaf):
    """[[...[leaf]...]], `depth` lists deep, built without recursion."""
    value = leaf
    for _ in range(depth):
        value = [value]
    return value


def test_non_finite_at_walks_values_of_any_depth():
    """Values nested deeper than Python's recursion limit (json reads a few hundred levels
    from any stack depth; a caller may build deeper): found, and in document order."""
    deep = nested(100_000, math.nan)
    assert strict_json.non_finite_at(deep) == ("[0]" * 100_000, "NaN")
    assert strict_json.non_finite_at({"a": nested(100_000, 1.0)}) is None
    value = {"a": [1, {"b": math.inf}], "c": -math.inf, "d": [10**400]}
    assert strict_json.non_finite_at(value) == ("a[1].b", "Infinity")
    assert strict_json.non_finite_at({"d": [1, 10**400]}) == ("d[1]", "too large for a float")
    assert strict_json.non_finite_at(math.nan) == ("the value", "NaN")
