"""Criteria that fit real tasks: prompt columns carried through `eval policy`, a criterion
measured only on the prompts it applies to, `--slice COL`, and detectors that see the prompt.
Hand-computed subsets, the reference statistics on them, and a tiny run through the CLI."""

from __future__ import annotations

import io
import json
import re
from pathlib import Path

import numpy as np
import pytest
from rich.console import Console

from rlhfkit import stats
from rlhfkit.cli import evaluate as cli_evaluate
from rlhfkit.criteria import CallableDetector, SuccessCriterion, prompt_columns
from rlhfkit.errors import UserError
from rlhfkit.evaluate import rates, schema
from rlhfkit.evaluate.criteria import detect
from rlhfkit.evaluate.policy import PolicyEvalConfig, evaluate_policy
from rlhfkit.templates import init_project
from tests.conftest import run_cli

HERE = "tests.evaluate.test_subsets"


def quotes_the_topic(prompt, response: str) -> bool:
    """A detector that sees the prompt: the reply repeats a word of the user's message."""
    asked = {w for w in re.findall(r"\w{5,}", prompt[-1]["content"].lower())}
    return any(w in asked for w in re.findall(r"\w+", response.lower()))


def long_reply(response: str) -> bool:
    return len(response.split()) > 3


def _criterion(name: str, direction: str = "increase", **extra) -> SuccessCriterion:
    return SuccessCriterion.model_validate(
        {"name": name, "description": "d", "direction": direction,
         "detector": {"kind": "length", "min": 2}, **extra}
    )  # fmt: skip


def test_a_callable_detector_gets_the_prompt_when_it_takes_two_arguments():
    two = CallableDetector(kind="callable", path=f"{HERE}:quotes_the_topic")
    one = CallableDetector(kind="callable", path=f"{HERE}:long_reply")
    prompt = [{"role": "user", "content": "Where is my parcel?"}]
    assert two.matches("Your parcel left today.", prompt)
    assert not two.matches("It left today.", prompt)
    assert one.matches("It left the depot today.", prompt) and not one.matches("Soon.")
    three = CallableDetector(kind="callable", path="os.path:join")  # *paths: the text alone
    assert three.matches("x")
    bad = CallableDetector(kind="callable", path="rlhfkit.stats:verdict")  # 3 required
    with pytest.raises(UserError, match=r"f\(response\) or f\(prompt, response\)"):
        bad.matches("x")


def test_columns_are_the_rows_scalar_fields_besides_its_texts():
    row = {"prompt": "p", "completion": "c", "kind": "off_topic", "n": 3, "ok": True,
           "votes": {"a": "chosen"}, "annotator_ids": ["a"]}  # fmt: skip
    assert prompt_columns(row) == {"kind": "off_topic", "n": 3, "ok": True}
    flagged = _criterion("c", applies_to={"ok": "true", "n": ["3", "4"]})
    assert flagged.applies({"ok": True, "n": 3}) and not flagged.applies({"ok": False, "n": 3})


def test_a_null_column_is_a_missing_one():
    rows = [{"prompt": "p", "kind": None, "t": "x"}, {"prompt": "q", "kind": "off_topic"}]
    columns = [prompt_columns(r) for r in rows]
    assert columns == [{"t": "x"}, {"kind": "off_topic"}]
    assert not _criterion("c", applies_to={"kind": "None"}).applies(columns[0])
    hits = rates.Hits([_criterion("all")], {"all": [0, 1, 1, 1]}, {"all": [1, 1, 0, 0]},
                      columns, HOW)  # fmt: skip
    assert list(rates.slices(hits, ["kind"])["kind"]) == [rates.MISSING, "off_topic"]


def test_detect_runs_a_criterion_only_where_it_applies():
    off = _criterion("off", applies_to={"kind": "off_topic"})
    columns = [{"kind": "off_topic"}, {"kind": "on_topic"}, {}]
    hits = detect([off, _criterion("all")], ["p"] * 3, ["a b", "a b", "a"], columns=columns)
    assert hits == {"off": [True, None, None], "all": [True, True, False]}


# 4 prompts x 2 samples: prompts 0 and 2 off-topic, 1 and 3 on-topic
COLUMNS = [{"kind": "off_topic", "t": "x"}, {"kind": "on_topic", "t": "x"},
           {"kind": "off_topic", "t": "y"}, {"kind": "on_topic"}]  # fmt: skip
BEFORE = {"declines": [0, 0, None, None, 0, 1, None, None],
          "refuses": [None, None, 1, 1, None, None, 0, 1]}  # fmt: skip
AFTER = {"declines": [1, 1, None, None, 1, 1, None, None],
         "refuses": [None, None, 0, 0, None, None, 0, 0]}  # fmt: skip
CRITERIA = [
    _criterion("declines", applies_to={"kind": "off_topic"}),
    _criterion("refuses", "decrease", applies_to={"kind": "on_topic"}),
]
HOW = rates.RateSettings(samples=2, test="permutation", confidence=0.95, alpha=0.05, seed=0)
HITS = rates.Hits(CRITERIA, BEFORE, AFTER, COLUMNS, HOW)


def test_a_criterion_is_measured_on_its_subset_by_hand_and_against_stats():
    declines, refuses = rates.measure(HITS)
    assert (declines.n_prompts, declines.n_samples) == (2, 4)
    assert declines.before.rate == 0.25 and declines.after.rate == 1.0  # 1/4 -> 4/4
    assert refuses.before.rate == 0.75 and refuses.after.rate == 0.0 and refuses.diff == -0.75
    assert declines.applies_to == {"kind": "off_topic"}
    # the p-value is the reference test's on the subset's [2, 2] grid, nothing else
    ref = stats.compare_rates(np.array([[0, 0], [0, 1]]), np.array([[1, 1], [1, 1]]), seed=0)
    assert declines.p_value == ref.p_value and declines.diff_ci == list(ref.diff_ci)
    assert declines.before.ci == list(ref.before_ci)


def test_slices_split_each_criterion_by_a_column_and_keep_counts():
    by = rates.slices(HITS, ["kind", "t"])
    assert list(by["kind"]) == ["off_topic", "on_topic"]
    assert [c.name for c in by["kind"]["off_topic"]] == ["declines"]  # refuses: not here
    assert [c.name for c in by["kind"]["on_topic"]] == ["refuses"]
    assert list(by["t"]) == ["x", "y", rates.MISSING]
    x = {c.name: c for c in by["t"]["x"]}
    assert x["declines"].n_prompts == 1 and x["declines"].before.rate == 0.0
    assert x["refuses"].n_samples == 2 and x["refuses"].after.rate == 0.0
    (missing,) = by["t"][rates.MISSING]
    assert missing.name == "refuses" and missing.before.rate == 0.5
    # a record with slices writes and reads back as itself; an older file without reads too
    old = json.loads((Path(__file__).parent / "files" / "eval.json").read_text())
    assert "slices" not in old and schema.PolicyEvalResult.parse(old, "eval.json").slices is None


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    """The default project with a criterion on refund requests only, seeing the prompt."""
    root = tmp_path_factory.mktemp("proj") / "p"
    init_project(root)
    spec = root / "rlhfkit.toml"
    spec.write_text(
        spec.read_text().replace(
            "[annotation]",
            '[[success_criteria]]\nname = "quotes_refund"\ndescription = "Repeats a word of a '
            'refund request."\ndirection = "increase"\ndetector = { kind = "callable", path = '
            f'"{HERE}:quotes_the_topic" }}\napplies_to = {{ topic = "refund request" }}\n\n'
            "[annotation]",
        )
    )
    return root


def test_a_criterion_no_prompt_falls_under_fails_before_any_model_loads(project, tmp_path):
    prompts = tmp_path / "p.jsonl"
    prompts.write_text(json.dumps({"prompt": "Hi", "topic": "stock question"}) + "\n")
    base = {"project": project, "before": "tiny-random", "after": "tiny-random",
            "out": tmp_path / "o", "prompts": prompts}  # fmt: skip
    with pytest.raises(UserError, match="'quotes_refund' applies to prompts with topic = refund"):
        evaluate_policy(PolicyEvalConfig(**base))
    with pytest.raises(UserError, match=r"--slice kind: no prompt .* has a .kind. column"):
        evaluate_policy(PolicyEvalConfig(**{**base, "prompts": None}, slice_by=("kind",)))
    assert not (tmp_path / "o").exists()


def test_eval_policy_cli_carries_columns_and_slices(project, tmp_path, monkeypatch):
    out = tmp_path / "eval"
    result = run_cli("eval", "policy", "--project", str(project), "--before", "tiny-random",
                     "--after", "tiny-random", "--out", str(out), "--limit", "6",
                     "--max-new-tokens", "4", "--slice", "topic")  # fmt: skip
    assert result.code == 0, result.stderr
    assert "by topic" in result.stdout and "topic = refund request: 2 prompts" in result.stdout
    r = json.loads((out / "eval.json").read_text())
    quotes = next(c for c in r["criteria"] if c["name"] == "quotes_refund")
    assert quotes["n_prompts"] == 2 and quotes["n_samples"] == 4
    assert quotes["applies_to"] == {"topic": "refund request"}
    assert all(c["n_prompts"] == 6 for c in r["criteria"] if c["name"] != "quotes_refund")
    assert r["settings"]["slice_by"] == ["topic"]
    refunds = r["slices"]["topic"]["refund request"]
    assert [c["name"] for c in refunds][-1] == "quotes_refund"
    assert all(c["n_prompts"] == 1 for c in r["slices"]["topic"]["wrong item"])
    rows = [json.loads(x) for x in (out / "samples.jsonl").read_text().splitlines()]
    assert rows[0]["columns"] == {"topic": "refund request"}
    on = [x["criteria"]["quotes_refund"] for x in rows if x["columns"]["topic"] == "refund request"]
    off = [
        x["criteria"]["quotes_refund"] for x in rows if x["columns"]["topic"] != "refund request"
    ]
    assert all(h["before"] is not None for h in on) and all(h["before"] is None for h in off)
    assert schema.PolicyEvalResult.parse(r, "eval.json").to_json() == r
    # the same result on an 80-column terminal: every name whole (not "quotes_r…"), each
    # slice value and its prompts readable
    narrow = Console(width=80, file=io.StringIO(), color_system=None)
    monkeypatch.setattr(cli_evaluate, "console", narrow)
    cli_evaluate._show(schema.PolicyEvalResult.parse(r, "eval.json"))
    shown = narrow.file.getvalue()
    assert max(len(line) for line in shown.splitlines()) <= 80 and "…" not in shown
    names = [c["name"] for c in r["criteria"]]
    assert all(re.search(rf"^ *(\S+ +)?{n} ", shown, re.M) for n in names), shown
    assert re.search(r"^ refund request +quotes_refund", shown, re.M), shown
    assert "increase, 2 prompts" in shown
