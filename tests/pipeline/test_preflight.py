"""What `project check`, `run` and `plan` refuse before the first stage: a function the spec
names that cannot be imported or called as it will be (a detector, the labeler, an [eval]
judge), and an applies_to that no evaluation prompt is in. One line each, naming the spec's
line, exit code 2, nothing run. And applies_to values that are TOML numbers and booleans,
matched by hand against the prompts' JSON values."""

from __future__ import annotations

from pathlib import Path

import pytest

from rlhfkit.criteria import SuccessCriterion, hash_criteria
from tests.conftest import run_cli, write_lines
from tests.pipeline.test_run import make_project

DETECTORS = """
def three(a, b, c):
    return True

def two(prompt, response):
    return "sorry" in response
"""


@pytest.fixture(autouse=True)
def _importable(tmp_path, monkeypatch):
    """mydet.py, as a module on the path (as PYTHONPATH would put it)."""
    (tmp_path / "mydet.py").write_text(DETECTORS)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(__import__("sys").modules, "mydet", raising=False)


def _project(tmp_path: Path) -> Path:
    project = make_project(tmp_path / "p")
    (project / "mydet.py").write_text(DETECTORS)
    rows = [
        {"prompt": f"What is {i} plus {i}?", "kind": "maths", "level": i % 3, "hard": i > 22}
        for i in range(20, 26)
    ]
    write_lines(project / "data" / "eval.jsonl", rows)
    return project


def _edit(project: Path, old: str, new: str) -> int:
    """Replace `old` in the spec; the line `new` starts on."""
    spec = project / "rlhfkit.toml"
    text = spec.read_text()
    assert old in text
    text = text.replace(old, new, 1)
    spec.write_text(text)
    return text[: text.index(new)].count("\n") + 1


LENGTH = 'detector = { kind = "length", unit = "words", max = 12 }'


def _refused_with_line(tmp_path: Path, old: str, new: str, field: str, why: str) -> None:
    """`old` in the spec becomes `new`: refused everywhere, naming the line of `field`'s key."""
    project = _project(tmp_path)
    line = _edit(project, old, new) + new.count("\n")
    _refused_everywhere(project, f"rlhfkit.toml:{line}: {field}: ")
    assert why in run_cli("project", "check", str(project), cwd=project).stderr


def _refused_everywhere(project: Path, expected: str) -> None:
    """`project check`, `run`, `run --dry-run` and `plan` each fail with `expected`, exit 2,
    before anything runs."""
    for command in (
        ("project", "check", str(project)),
        ("run", "--project", str(project), "--precision", "fp32"),
        ("run", "--project", str(project), "--dry-run"),
        ("plan", "--project", str(project), "--no-timing"),
    ):
        result = run_cli(*command, cwd=project)
        assert result.code == 2, (command, result.stdout, result.stderr)
        assert expected in result.stderr, (command, result.stderr)
        assert "Traceback" not in result.stderr
    assert not (project / "run").exists() and not (project / "artifacts" / "plan").exists()


BROKEN = {  # a detector's path -> why it is refused
    "mydet:three": "detector 'mydet:three' takes 3 required arguments; a detector is "
    "f(response) or f(prompt, response)",
    "mydet.py:three": "takes 3 required arguments",
    "nomod:two": "detector 'nomod:two': 'nomod' cannot be imported",
    "mydet.py:nosuch": "has no function 'nosuch'",
}


@pytest.mark.parametrize(("path", "why"), list(BROKEN.items()))
def test_a_broken_callable_detector_is_refused_before_anything_runs(tmp_path, path, why):
    detector = f'detector = {{ kind = "callable", path = "{path}" }}'
    _refused_with_line(tmp_path, LENGTH, detector, "success_criteria[0].detector", why)


def test_a_good_callable_detector_passes_the_check(tmp_path):
    project = _project(tmp_path)
    _edit(project, LENGTH, 'detector = { kind = "callable", path = "mydet:two" }')
    result = run_cli("project", "check", str(project), cwd=project)
    assert result.code == 0, result.stderr


def test_a_labeler_or_eval_judge_with_the_wrong_arity_is_refused_with_its_line(tmp_path):
    project = _project(tmp_path)
    (project / "judge.py").write_text("def shorter(prompt, a):\n    return 'a'\n")
    line = _edit(project, 'labeler = "judge.py:shorter"', 'labeler = "judge.py:shorter"')
    expected = (
        f"rlhfkit.toml:{line}: [run] labeler: takes 2 required arguments; a judge is "
        "f(prompt, response_a, response_b)"
    )
    _refused_everywhere(project, expected)
    (project / "judge.py").write_text("def shorter(prompt, a, b):\n    return 'a'\n")
    line = _edit(project, "limit = 4\n", 'limit = 4\njudges = ["callable:mydet:two"]\n')
    result = run_cli("project", "check", str(project), cwd=project)
    assert result.code == 2
    assert f"rlhfkit.toml:{line + 1}: eval.judges: callable:mydet:two: takes 2" in result.stderr


@pytest.mark.parametrize(
    ("applies_to", "why"),
    [
        ('{ knd = "maths" }', "no prompt of data/eval.jsonl (its first 4, [eval] limit) has a "
         "'knd' column (its columns: hard, kind, level)"),
        ('{ kind = "math" }', "has kind = math (its values: maths)"),
        ("{ level = 7 }", "has level = 7 (its values: 0, 1, 2)"),
        ("{ hard = true, level = 0 }", "has hard = true, level = 0 all at once"),
    ],
)  # fmt: skip
def test_an_applies_to_no_evaluation_prompt_is_in_fails_at_the_start(tmp_path, applies_to, why):
    new = f'direction = "decrease"\napplies_to = {applies_to}'
    _refused_with_line(
        tmp_path, 'direction = "decrease"', new, "success_criteria[1].applies_to", why
    )


@pytest.mark.parametrize(
    "applies_to", ["{ hard = true }", "{ level = [0, 2] }", '{ kind = ["x", "maths"] }']
)
def test_toml_numbers_and_booleans_select_prompts_in_the_check(tmp_path, applies_to):
    project = _project(tmp_path)
    _edit(
        project, 'direction = "decrease"\n', f'direction = "decrease"\napplies_to = {applies_to}\n'
    )
    result = run_cli("project", "check", str(project), cwd=project)
    assert result.code == 0, result.stderr


def _criterion(applies_to) -> SuccessCriterion:
    return SuccessCriterion.model_validate(
        {"name": "x", "description": "d", "direction": "increase",
         "detector": {"kind": "refusal"}, "applies_to": applies_to}
    )  # fmt: skip


def test_applies_to_matches_json_values_as_the_readme_says():
    # by hand: each row and whether the criterion is measured on it
    off = _criterion({"on_topic": False})
    assert [off.applies(r) for r in ({"on_topic": False}, {"on_topic": True}, {})] == [
        True, False, False]  # fmt: skip
    assert off.applies({"on_topic": "false"})  # the written form matches, as a string did
    level = _criterion({"level": 3})
    assert [level.applies({"level": v}) for v in (3, 3.0, "3", 4, True)] == [
        True, True, True, False, False]  # fmt: skip
    mixed = _criterion({"kind": ["off_topic", 3]})
    assert [mixed.applies({"kind": v}) for v in ("off_topic", 3, "on_topic", 2)] == [
        True, True, False, False]  # fmt: skip
    assert mixed.subset() == "kind = off_topic or 3"
    assert _criterion({"flag": True}).applies({"flag": True})
    assert not _criterion({"flag": True}).applies({"flag": 1})  # true is not 1


def test_a_bad_applies_to_value_is_one_clear_reason():
    for bad in ({"kind": {"a": 1}}, {"kind": []}, {"kind": [["x"]]}):
        with pytest.raises(Exception, match="kind: give a string, a number or true/false"):
            _criterion(bad)


def test_the_criteria_hash_of_a_string_only_spec_is_unchanged():
    declines = _criterion({"kind": "off_topic", "topic": ["a", "b"]}).model_copy(
        update={"name": "declines"}
    )
    long = SuccessCriterion.model_validate(
        {"name": "long", "description": "d", "direction": "decrease",
         "detector": {"kind": "length", "min": 30}}
    )  # fmt: skip
    # the hash the same two criteria had before applies_to took numbers and booleans
    assert hash_criteria([declines.dump(), long.dump()]) == "066b9683229a37eb"
