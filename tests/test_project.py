"""The project spec: the example is valid, mistakes name their field, detectors by hand."""

import re

import pytest

from rlhfkit.criteria import (
    EndsWithDetector,
    KeywordsDetector,
    LengthDetector,
    RegexDetector,
    StartsWithDetector,
)
from rlhfkit.errors import UserError
from rlhfkit.project import load_project, parse_spec
from rlhfkit.templates import init_project


@pytest.fixture(scope="module")
def example_text(tmp_path_factory):
    root = tmp_path_factory.mktemp("p") / "proj"
    init_project(root)
    return (root / "rlhfkit.toml").read_text()


def errors_of(text: str) -> list[str]:
    with pytest.raises(UserError) as info:
        parse_spec(text)
    return [p.reason for p in info.value.problems]


def test_init_writes_a_valid_project(tmp_path):
    project = init_project(tmp_path / "p")
    assert project.spec.name == "support-replies"
    loaded = load_project(tmp_path / "p")
    assert loaded.spec == project.spec
    for name in ("prompts", "sft", "eval_prompts", "anchors"):
        assert loaded.data_path(name).exists()


def test_init_writes_the_demos_anchors(tmp_path):
    """The anchors are the demo's (64, seed 1): the demo's results must not change."""
    from rlhfkit.data import load
    from rlhfkit.templates.support_replies import anchor_items

    project = init_project(tmp_path / "p")
    assert load(project.data_path("anchors")).rows == anchor_items(64, seed=1)


def test_init_refuses_a_non_empty_folder_and_writes_nothing(tmp_path):
    (tmp_path / "p").mkdir()
    (tmp_path / "p" / "notes.txt").write_text("mine")
    with pytest.raises(UserError, match="not empty"):
        init_project(tmp_path / "p")
    assert [f.name for f in (tmp_path / "p").iterdir()] == ["notes.txt"]
    assert sorted(f.name for f in tmp_path.iterdir()) == ["p"]


def test_example_prompt_pools_are_disjoint(tmp_path):
    from rlhfkit.templates.support_replies import build

    prompts, eval_prompts, sft = build()
    emails = [r["prompt"][-1]["content"] for r in prompts]
    held_out = {r["prompt"][-1]["content"] for r in eval_prompts}
    sft_emails = {r["prompt"][-1]["content"] for r in sft}
    assert len(set(emails)) == len(emails) == 240
    assert not held_out & set(emails) and not sft_emails & (held_out | set(emails))
    assert all(r["completion"][0]["content"].endswith("Northwind Support Team") for r in sft)


def test_the_example_sft_data_is_a_mixed_archive(tmp_path):
    """The scaffolded SFT rows are the ideal replies as a team's archive holds them: each
    solves the problem, some sign off, some hedge, some pad (the rates SFT starts from)."""
    from rlhfkit.data import load
    from rlhfkit.templates.support_replies import FILLER, HEDGES, SIGN_OFF

    project = init_project(tmp_path / "p")
    replies = [r["completion"][0]["content"] for r in load(project.data_path("sft")).rows]
    share = lambda hit: sum(map(hit, replies)) / len(replies)  # noqa: E731
    assert 0.3 < share(lambda t: t.endswith(SIGN_OFF)) < 0.5
    assert 0.1 < share(lambda t: any(h in t for h in HEDGES)) < 0.3
    assert 0.15 < share(lambda t: FILLER in t) < 0.35


def test_missing_and_unknown_fields_name_their_path(example_text):
    text = example_text.replace('name = "support-replies"\n', "")
    assert "name: Field required" in errors_of(text)
    text = example_text.replace("overlap = 3", "overlapp = 3")
    assert "annotation.overlapp: unknown field" in errors_of(text)


def test_rubric_needs_two_or_three_criteria(example_text):
    one = re.sub(r'\[\[rubric\.criteria\]\]\nname = "tone".*?\n\n', "", example_text, flags=re.S)
    one = re.sub(r'\[\[rubric\.criteria\]\]\nname = "concise".*?\n\n', "", one, flags=re.S)
    assert "rubric.criteria: needs at least 2 items" in errors_of(one)


def test_bad_detector_and_direction(example_text):
    text = example_text.replace('direction = "decrease"', 'direction = "down"')
    problems = errors_of(text)
    assert any(p.startswith("success_criteria[1].direction: Input should be") for p in problems)
    text = example_text.replace(
        'kind = "length", unit = "words", max = 60', 'kind = "length", unit = "words"'
    )
    assert "success_criteria[2].detector: a length detector needs 'min', 'max' or both" in (
        errors_of(text)
    )
    text = example_text.replace('kind = "regex", pattern = \'', 'kind = "regex", pattern = \'(')
    assert any("not a valid regular expression" in p for p in errors_of(text))


def test_criteria_need_both_directions(example_text):
    text = example_text.replace('direction = "decrease"', 'direction = "increase"')
    assert any("one that should decrease" in p for p in errors_of(text))


def test_tie_policy_contradicted_by_an_example(example_text):
    text = example_text.replace('preferred = "a"', 'preferred = "tie"')
    text = text.replace('tie_policy = "allow"', 'tie_policy = "force_choice"')
    assert any("tie_policy forbids ties" in p for p in errors_of(text))


def test_toml_syntax_error_has_a_line(example_text):
    lines = example_text.splitlines()
    lines[3] = "oops = "
    with pytest.raises(UserError) as info:
        parse_spec("\n".join(lines), "spec.toml")
    assert str(info.value).startswith("spec.toml:4: not valid TOML")


def test_criteria_hash_changes_only_with_the_criteria(example_text):
    spec = parse_spec(example_text)
    renamed = parse_spec(example_text.replace('task = """', 'task = """Also: '))
    changed = parse_spec(example_text.replace("max = 60", "max = 50"))
    assert spec.criteria_hash() == renamed.criteria_hash() != changed.criteria_hash()


def test_detectors_by_hand():
    signoff = RegexDetector(kind="regex", pattern=r"regards,?\s*(\n[^\n]{0,60})?\s*$")
    assert signoff.matches("Done.\n\nBest regards,\nThe Team")
    assert not signoff.matches("Best regards, and then more text follows here.")
    hedge = KeywordsDetector(kind="keywords", any=["maybe", "I think"])
    assert hedge.matches("It will, I THINK, arrive.") and not hedge.matches("Maybelline lipstick")
    short = LengthDetector(kind="length", unit="words", max=3)
    assert short.matches("one two three") and not short.matches("one two three four")
    assert LengthDetector(kind="length", unit="chars", min=3).matches("abc")
    assert StartsWithDetector(kind="starts_with", prefixes=["Dear"]).matches("  dear Sam")
    assert EndsWithDetector(kind="ends_with", suffixes=["Team"], ignore_case=False).matches(
        "The Team \n"
    )
    assert not EndsWithDetector(kind="ends_with", suffixes=["team"], ignore_case=False).matches(
        "The Team"
    )


def test_callable_detector(example_text):
    spec = parse_spec(
        example_text.replace(
            'kind = "length", unit = "words", max = 60', 'kind = "callable", path = "os.path:isabs"'
        )
    )
    detector = spec.success_criteria[2].detector
    assert detector.matches("/abs") and not detector.matches("rel")
    bad = parse_spec(
        example_text.replace(
            'kind = "length", unit = "words", max = 60',
            'kind = "callable", path = "no_such_module:f"',
        )
    )
    with pytest.raises(UserError, match="cannot be imported"):
        bad.success_criteria[2].detector.matches("x")


@pytest.mark.parametrize(
    ("old", "new", "path"),
    [
        ("n = 3", 'n = "3"', "generate.n"),
        ("overlap = 3", "overlap = true", "annotation.overlap"),
        ("temperature = 0.9", "temperature = inf", "generate.temperature"),
        ("temperature = 0.9", "temperature = 0.0", "generate.temperature"),
        ("min_anchor_labels = 5", "min_anchor_labels = 0", "annotation.min_anchor_labels"),
    ],
)
def test_wrong_types_are_not_coerced(example_text, old, new, path):
    assert any(p.startswith(path) for p in errors_of(example_text.replace(old, new)))
