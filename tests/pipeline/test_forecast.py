"""`rlhfkit plan`: base rates on the starting model's samples, the power of the evaluation's own
test, the warning on a criterion that cannot move, and each stage's measured cost; end to end
through the CLI on the tiny model, and the criteria part on planted replies."""

from __future__ import annotations

import json
import math
import re
import shutil
from collections import Counter
from pathlib import Path

import pytest

from rlhfkit import stats
from rlhfkit.criteria import SuccessCriterion
from rlhfkit.errors import UserError
from rlhfkit.evaluate.configs import PolicyEvalConfig
from rlhfkit.pipeline.forecast import criterion_plan
from tests.conftest import run_cli, write_lines
from tests.pipeline.test_run import make_project

EVAL = ("--set", "eval.limit=32", "--set", "eval.samples=2")
HEDGING = {"kind": "keywords", "any": ["maybe", "I think"]}


def _cfg(**kw) -> PolicyEvalConfig:
    return PolicyEvalConfig(project=Path("."), before="a", after="b", out=Path("o"), **kw)


def _criterion(direction: str = "decrease", **kw) -> SuccessCriterion:
    return SuccessCriterion.model_validate(
        {"name": "hedging", "description": "hedges", "direction": direction,
         "detector": HEDGING, **kw}
    )  # fmt: skip


def test_one_hedge_in_64_replies_cannot_move_and_the_plan_says_what_would():
    texts = [["Done: refund sent.", "Sent today."] for _ in range(32)]
    texts[5][1] = "I think maybe tomorrow."
    found = criterion_plan(_criterion(), _cfg(samples=2), ["q"] * 32, texts, [{}] * 32, 100)
    assert (found.hits, found.base_rate, found.prompts, found.samples) == (1, 1 / 64, 32, 2)
    assert found.status == "undetectable" and found.rate_after is None
    # after = 0: one prompt differs, the sign-flip p is at best 2 / 2^k: six such prompts are
    # needed, and at 1.6% of replies 32 prompts x 2 rarely have them
    q = 1 - (1 - 1 / 64) ** 2
    hand = sum(math.comb(32, k) * q**k * (1 - q) ** (32 - k) for k in range(6, 33))
    assert found.power_at_extreme == pytest.approx(hand, abs=0.002)
    to_zero = stats.prompts_needed("permutation", 1 / 64, 0.0, 2)
    assert found.prompts_needed["to 0"] == to_zero and 200 < to_zero < 320
    assert found.prompts_needed["halved"] > to_zero
    assert "CANNOT MOVE DETECTABLY at 32 prompts x 2 samples" in found.advice
    assert f"drop to 0: {to_zero}" in found.advice and "the held-out file has 100" in found.advice


def test_a_common_behavior_is_detectable_and_an_absent_one_has_nothing_to_move():
    texts = [["maybe so", "sent"] for _ in range(32)]  # 50% hedge
    found = criterion_plan(_criterion(), _cfg(samples=2), ["q"] * 32, texts, [{}] * 32, 32)
    assert found.status == "detectable" and found.base_rate == 0.5
    assert 0.2 < found.rate_after < 0.4  # a decrease to this is detected in 80% of runs
    never = [["sent", "sent"] for _ in range(32)]
    gone = criterion_plan(_criterion(), _cfg(samples=2), ["q"] * 32, never, [{}] * 32, 32)
    assert gone.status == "absent" and "nothing to decrease" in gone.advice
    assert "'regressed'" in gone.advice and "guard" not in gone.advice  # a verdict that exists
    always = criterion_plan(
        _criterion("increase"), _cfg(samples=2), ["q"] * 32, texts_all_hedge(), [{}] * 32, 32
    )
    assert always.status == "absent" and "cannot increase" in always.advice


def texts_all_hedge() -> list[list[str]]:
    return [["maybe", "I think"] for _ in range(32)]


def test_a_criterion_with_applies_to_is_measured_on_its_prompts_only():
    columns = [{"kind": "off_topic" if i % 2 else "on_topic"} for i in range(40)]
    texts = [["maybe", "maybe"] if i % 2 else ["sent", "sent"] for i in range(40)]
    only = _criterion(applies_to={"kind": "off_topic"})
    found = criterion_plan(only, _cfg(samples=2), ["q"] * 40, texts, columns, 40)
    assert (found.prompts, found.hits, found.base_rate) == (20, 40, 1.0)
    nowhere = _criterion(applies_to={"kind": "elsewhere"})
    with pytest.raises(
        UserError, match=r"no prompt has kind = elsewhere \(its values: off_topic, on_topic\)"
    ):
        criterion_plan(nowhere, _cfg(samples=2), ["q"] * 40, texts, columns, 40)


def _rarest_word(samples_file: Path) -> tuple[str, int]:
    """A word that occurs in the fewest of the cached replies, and in how many."""
    texts = [t for row in json.loads(samples_file.read_text())["texts"] for t in row]
    counts = Counter(w for t in texts for w in set(re.findall(r"[A-Za-z]{4,}", t)))
    word = min(counts, key=lambda w: (counts[w], w))
    return word, counts[word]


@pytest.fixture(scope="module")
def planned(tmp_path_factory):
    """A project with 32 held-out prompts and conversational training prompts, planned once
    (timing on) on the tiny model."""
    project = make_project(tmp_path_factory.mktemp("plan") / "p")
    # conversations, as the bundled templates' prompts are: the stand-in pairs must be too
    chats = [{"prompt": [{"role": "user", "content": f"What is {i} minus 1?"}]} for i in range(20)]
    write_lines(project / "data" / "prompts.jsonl", chats)
    write_lines(
        project / "data" / "eval.jsonl", [{"prompt": f"What is {i} times 3?"} for i in range(40)]
    )
    result = run_cli("plan", "--project", str(project), *EVAL)
    return project, result


def test_plan_measures_each_stage_and_keeps_what_it_measured(planned):
    project, result = planned
    assert result.code == 0, result.stderr
    out = " ".join(result.stdout.split())
    assert (
        "the evaluation: 32 prompts x 2 samples" in out and "permutation test at alpha 0.05" in out
    )
    again = run_cli("plan", "--project", str(project), *EVAL, "--json")
    assert again.code == 0, again.stderr
    found = json.loads(again.stdout)
    assert found["cached"] is True and found["prompts"] == 32 and found["samples"] == 2
    stages = {s["name"]: s for s in found["stages"]}
    for name in ("sft", "candidates", "rm", "ppo", "dpo", "eval_ppo", "eval_dpo"):
        assert stages[name]["seconds"] > 0 and stages[name]["peak_mb"] > 100, name
    assert stages["sft"]["work"] == "2 steps x 4 examples"  # [train.sft] max_steps, batch_size
    assert stages["annotate"]["seconds"] is None  # labels are people's or a judge's time
    kept = sorted(p.name for p in (project / "artifacts" / "plan").iterdir())
    assert [k.split("-")[1] for k in kept if k.startswith("cost-")] == sorted(
        ["candidates", "dpo", "ppo", "rm", "sft"]
    )


def test_plan_warns_on_a_planted_rare_criterion_and_dry_run_repeats_it(planned):
    project, _ = planned
    dry = run_cli("run", "--project", str(project), "--dry-run", *EVAL)
    assert dry.code == 0, dry.stderr
    assert "Power and cost (rlhfkit plan, 32 prompts x 2 samples)" in " ".join(dry.stdout.split())
    samples = next((project / "artifacts" / "plan").glob("samples-*.json"))
    word, hits = _rarest_word(samples)
    assert hits <= 2  # random tokens: some word is in only one or two replies
    spec = project / "rlhfkit.toml"
    spec.write_text(
        spec.read_text().replace(
            "[annotation]",
            '[[success_criteria]]\nname = "planted"\ndescription = "A rare word."\n'
            f'direction = "decrease"\ndetector = {{ kind = "keywords", any = ["{word}"] }}\n\n'
            "[annotation]",
        )
    )
    result = run_cli("plan", "--project", str(project), *EVAL, "--no-timing", "--json")
    assert result.code == 0, result.stderr
    planted = next(c for c in json.loads(result.stdout)["criteria"] if c["name"] == "planted")
    assert planted["hits"] == hits and planted["status"] == "undetectable"
    needed = stats.prompts_needed("permutation", hits / 64, 0.0, 2)
    assert planted["prompts_needed"]["to 0"] == needed
    text = run_cli("plan", "--project", str(project), *EVAL, "--no-timing")
    words = " ".join(text.stdout.split())
    assert "warning: planted: CANNOT MOVE DETECTABLY at 32 prompts x 2 samples" in words
    assert f"drop to 0: {needed}" in words and "Raise [eval] limit" in words
    dry = run_cli("run", "--project", str(project), "--dry-run", *EVAL)
    line = " ".join(dry.stdout.split()).split("CANNOT MOVE: ")[1]
    assert "planted (undetectable)" in line.split(";")[0]


def test_plan_reads_a_prompts_columns_as_eval_policy_does(planned, tmp_path):
    # one definition (criteria.prompt_columns): a null column is a missing one, so a criterion
    # on `kind = "None"` applies nowhere, in the plan as in the evaluation: refused, exit 2
    project = tmp_path / "p"
    shutil.copytree(planned[0], project)  # the cached samples: the prompts are the same
    kinds = ["a", None, "absent"]
    rows = []
    for i in range(40):
        row = {"prompt": f"What is {i} times 3?", "kind": kinds[i % 3]}
        rows.append({k: v for k, v in row.items() if v != "absent"})
    write_lines(project / "data" / "eval.jsonl", rows)
    spec = project / "rlhfkit.toml"
    criterion = (
        '[[success_criteria]]\nname = "{}"\ndescription = "d"\ndirection = "decrease"\n'
        'detector = {{ kind = "length", min = 1 }}\napplies_to = {{ kind = "{}" }}\n\n'
    )
    text = spec.read_text()
    spec.write_text(text.replace("[annotation]", criterion.format("on_a", "a") + "[annotation]"))
    result = run_cli("plan", "--project", str(project), *EVAL, "--no-timing", "--json")
    assert result.code == 0, result.stderr
    found = {c["name"]: c for c in json.loads(result.stdout)["criteria"]}
    assert found["on_a"]["prompts"] == len(range(0, 32, 3)) == 11
    spec.write_text(
        text.replace("[annotation]", criterion.format("on_null", "None") + "[annotation]")
    )
    refused = run_cli("plan", "--project", str(project), *EVAL, "--no-timing", "--json")
    assert refused.code == 2 and not refused.stdout
    assert "applies_to: no prompt of " in refused.stderr
    assert "has kind = None (its values: a)" in refused.stderr


def test_dry_run_without_a_plan_says_how_to_get_one(tmp_path):
    project = make_project(tmp_path / "p")
    dry = run_cli("run", "--project", str(project), "--dry-run")
    assert dry.code == 0, dry.stderr
    assert f"Power and cost: not measured yet. `rlhfkit plan --project {project}`" in " ".join(
        dry.stdout.split()
    )
    assert not (project / "artifacts" / "plan").exists()  # a dry run samples nothing


def test_a_bad_setting_fails_with_its_line_before_any_model_loads(tmp_path):
    project = make_project(tmp_path / "p")
    bad = run_cli("plan", "--project", str(project), "--set", "eval.samplez=2")
    assert bad.code == 2 and "eval.samplez: unknown setting; did you mean samples?" in bad.stderr
    assert "Traceback" not in bad.stderr and not (project / "artifacts" / "plan").exists()


def test_init_suggests_plan_before_the_run(tmp_path):
    result = run_cli("init", str(tmp_path / "shop"))
    assert result.code == 0, result.stderr
    out = " ".join(result.stdout.split())
    assert f"rlhfkit plan --project {tmp_path / 'shop'}" in out
    assert out.index("rlhfkit plan") < out.index("rlhfkit run --project")
    assert "`rlhfkit plan --project .`" in (tmp_path / "shop" / "README.md").read_text()


def test_plan_without_timing_describes_no_times_and_adds_up_none(tmp_path):
    project = make_project(tmp_path / "p")  # 6 held-out prompts; [eval] limit 4, 1 sample
    text = run_cli("plan", "--project", str(project), "--no-timing")
    assert text.code == 0, text.stderr
    words = " ".join(text.stdout.split())
    assert "Timing not measured (--no-timing)" in words
    assert "each trainer ran 2 steps" not in words and "Projected machine time" not in words
    found = json.loads(run_cli("plan", "--project", str(project), "--no-timing", "--json").stdout)
    assert found["timed"] is False
    assert {s["name"] for s in found["stages"] if s["seconds"] is None} >= {"sft", "rm", "dpo"}
    dry = " ".join(run_cli("run", "--project", str(project), "--dry-run").stdout.split())
    assert "machine time not measured (plan ran with --no-timing)" in dry
    assert "projected machine time" not in dry
