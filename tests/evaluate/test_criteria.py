"""Detectors by hand, context detectors through `detect`, and freezing the criteria."""

import json
import re

import pytest

from rlhfkit.criteria import (
    JudgeDetector,
    RefusalDetector,
    RewardModelDetector,
    SuccessCriterion,
    is_refusal,
)
from rlhfkit.errors import UserError
from rlhfkit.evaluate.criteria import DetectContext, criteria_status, detect, freeze_criteria
from rlhfkit.project import load_project, parse_spec
from rlhfkit.templates import init_project


def test_refusal_detection_by_hand():
    refusals = [
        "I'm sorry, but I can't help with that.",
        "I cannot provide legal advice.",
        "As an AI, I do not have access to your order.",
        "I must decline this request.",
        "That is outside our scope, I am afraid.",
        "I\u2019m not able to process refunds.",  # curly apostrophe
        "I won't be able to help you with this one.",
    ]
    fine = [
        "We can't wait to see you again!",
        "I have refunded order #4821; it cannot take more than 3 days.",
        "Your replacement ships today.",
        "Declined payments are retried automatically.",
    ]
    assert all(is_refusal(t) for t in refusals)
    assert not any(is_refusal(t) for t in fine)
    d = RefusalDetector(kind="refusal", also=["contact a lawyer"])
    assert d.matches("Please contact a lawyer.") and not d.matches("Your lawyer called.")


def _criterion(detector: dict) -> SuccessCriterion:
    return SuccessCriterion.model_validate(
        {"name": "c", "description": "d", "direction": "increase", "detector": detector}
    )


class YesIfShort:
    def __init__(self):
        self.asked = []

    def ask(self, question, prompt, response):
        self.asked.append((question, prompt, response))
        return len(response.split()) < 4


def test_context_detectors_need_context_and_use_it():
    rm = _criterion({"kind": "reward_model", "model": "rm/final", "min": 0.5})
    judge = _criterion({"kind": "judge", "question": "Is it short?"})
    text = _criterion({"kind": "length", "max": 3})
    prompts, responses = ["p1", "p2", "p3"], ["a b", "a b c d e", "x"]
    assert detect([text], prompts, responses) == {"c": [True, False, True]}
    with pytest.raises(UserError, match="needs the prompt and a model"):
        detect([rm], prompts, responses)
    with pytest.raises(UserError, match="needs the prompt and a model"):
        rm.detector.matches("x")

    def fake_rm(ps, rs):  # reward = number of words minus 1
        assert ps == prompts
        return [len(r.split()) - 1 for r in rs]

    ctx = DetectContext(reward_models={"rm/final": fake_rm}, question_judge=YesIfShort())
    assert detect([rm], prompts, responses, ctx) == {"c": [True, True, False]}
    assert detect([judge], prompts, responses, ctx) == {"c": [True, False, True]}
    assert ctx.question_judge.asked[0] == ("Is it short?", "p1", "a b")
    with pytest.raises(UserError, match="asks a judge"):
        detect([judge], prompts, responses, DetectContext())
    assert RewardModelDetector(kind="reward_model", model="m", max=1.0).within(1.0)
    assert JudgeDetector(kind="judge", question="q").kind == "judge"


def test_new_detectors_parse_from_the_spec_and_bad_ones_name_their_field(tmp_path):
    root = tmp_path / "p"
    init_project(root)
    text = (root / "rlhfkit.toml").read_text()
    new = text.replace(
        'kind = "length", unit = "words", max = 60', 'kind = "judge", question = "Helpful?"'
    )
    # the second criterion (no_next_step, a regex written over two keys) becomes a refusal
    new, swapped = re.subn(
        r'detector\.kind = "regex"\n(?:#.*\n)*detector\.pattern = .*\n',
        'detector = { kind = "refusal" }\n',
        new,
    )
    assert swapped == 1
    spec = parse_spec(new)
    assert [c.detector.kind for c in spec.success_criteria] == ["regex", "refusal", "judge"]
    assert [c.text_only for c in spec.success_criteria] == [True, True, False]
    bad = text.replace(
        'kind = "length", unit = "words", max = 60', 'kind = "reward_model", model = "x"'
    )
    with pytest.raises(UserError) as info:
        parse_spec(bad)
    expected = "success_criteria[2].detector: a reward_model detector needs 'min', 'max' or both"
    assert expected in str(info.value)


def test_monitor_thresholds_have_defaults_and_are_checked(tmp_path):
    root = tmp_path / "p"
    init_project(root)
    text = (root / "rlhfkit.toml").read_text()
    assert parse_spec(text).monitors.length_inflation == 1.5
    spec = parse_spec(text + "\n[monitors]\nhedging = 0.1\n")
    assert spec.monitors.hedging == 0.1
    with pytest.raises(UserError, match=r"monitors\.length_collapse"):
        parse_spec(text + "\n[monitors]\nlength_collapse = 2.0\n")


def test_freezing_records_once_and_a_later_edit_is_loud(tmp_path):
    root = tmp_path / "p"
    project = init_project(root)
    status = criteria_status(project)
    assert status.frozen_hash is None and not status.changed
    assert "never frozen" in status.message()
    # a recorded hash (e.g. from a model's manifest) stands in when there is no lock file
    assert criteria_status(project, "0" * 16).changed

    frozen = freeze_criteria(project, "sft")
    assert frozen.frozen_hash == project.spec.criteria_hash() and not frozen.changed
    lock = json.loads(project.artifacts("criteria.lock.json").read_text())
    assert lock["frozen_by"] == "sft" and len(lock["criteria"]) == 3

    spec_path = root / "rlhfkit.toml"
    spec_path.write_text(spec_path.read_text().replace("max = 60", "max = 80"))
    edited = load_project(root)
    again = freeze_criteria(edited, "ppo")  # the first record stands
    assert again.frozen_by == "sft" and again.changed
    assert again.changes == ("concise: detector edited",)
    assert "CHANGED after training started" in again.message()
    assert again.to_json()["changed"] is True


@pytest.mark.parametrize(
    "refused",
    [
        {"epochs": 0},  # the settings
        {"precision": "fp16"},
        {"learning_rate": -1.0},
        "earlier run",  # the output folder holds an earlier run
    ],
)
def test_a_training_run_refused_before_it_starts_freezes_nothing(tmp_path, refused):
    """The caller freezes the criteria before training, but only after every check that
    could refuse the run: a user mistake leaves no lock behind."""
    from rlhfkit.evaluate.criteria import freeze_for_training
    from rlhfkit.train.configs import DPOConfig, SFTConfig

    project = init_project(tmp_path / "p")
    out = tmp_path / "run"
    settings = {"model": "x", "data": tmp_path / "d.jsonl", "output_dir": out}
    if refused == "earlier run":
        out.mkdir()
        (out / "metrics.jsonl").write_text("{}\n")
    else:
        settings |= refused
    with pytest.raises(UserError):
        freeze_for_training(SFTConfig(project=project.root, **settings))
    assert not project.artifacts("criteria.lock.json").exists()

    # the same run once it is fixed: the first training stage records the criteria
    fixed = DPOConfig(project=project.root, model="x", data=tmp_path / "d.jsonl",
                      output_dir=tmp_path / "other")  # fmt: skip
    assert freeze_for_training(fixed) == project.spec.criteria_hash()
    lock = json.loads(project.artifacts("criteria.lock.json").read_text())
    assert lock["frozen_by"] == "dpo"
    assert freeze_for_training(SFTConfig(project=None, model="x", data=out)) is None


def test_applies_to_selects_prompts_by_column_and_leaves_old_hashes_alone():
    from rlhfkit.criteria import SuccessCriterion, hash_criteria

    base = {"name": "declines", "description": "d", "direction": "increase"}
    plain = SuccessCriterion.model_validate({**base, "detector": {"kind": "refusal"}})
    scoped = SuccessCriterion.model_validate(
        {**base, "detector": {"kind": "refusal"}, "applies_to": {"kind": ["off_topic", "x"]}}
    )
    assert plain.applies(None) and plain.applies({"kind": "on_topic"})
    assert scoped.applies({"kind": "off_topic"}) and scoped.applies({"kind": "x"})
    assert not scoped.applies({"kind": "on_topic"}) and not scoped.applies({})
    # The hash of a criterion without applies_to is what it was before the field existed.
    old = {**base, "detector": plain.detector.model_dump(mode="json")}
    assert hash_criteria([plain.dump()]) == hash_criteria([old])
    assert hash_criteria([scoped.dump()]) != hash_criteria([plain.dump()])
