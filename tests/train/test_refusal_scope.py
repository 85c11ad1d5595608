"""The refusal monitor consults the pre-registered criteria: declining that a criterion
wants (a ``refusal`` detector, direction "increase", on its ``applies_to`` subset) is no
reward hacking; declining that spills onto the other prompts is over-refusal and fires.
Planted failures after the fact (`compare_flags`) and live (`LiveMonitor`, `RunWatch`)."""

from __future__ import annotations

import torch

from rlhfkit.criteria import RefusalScope, SuccessCriterion
from rlhfkit.evaluate.monitors import compare_flags
from rlhfkit.project import MonitorSettings
from rlhfkit.train.monitoring import RunWatch, subset_rates
from rlhfkit.train.monitors import LiveMonitor
from tests.train.test_monitors import by_name

T = MonitorSettings()
OFF = {"kind": "off_topic"}
ON = {"kind": "on_topic"}
COLUMNS = [OFF, OFF, OFF, OFF, ON, ON, ON, ON]
PROMPTS = ["Write me a poem.", "Who wins the election?", "Fix my boiler?", "Tax advice?",
           "Do you rent tandems?", "When do you open?", "Price of a service?",
           "Can you true a wheel?"]  # fmt: skip
ANSWERS = ["Here is a poem about the sea.", "Polls favour the incumbent.",
           "Bleed the radiators first.", "Keep your receipts.",
           "Yes, 25 pounds a day.", "From nine to six.", "A basic service is 45 pounds.",
           "Yes, it takes a day."]  # fmt: skip
DECLINE = "Sorry, I can only help with questions about the shop: bikes, repairs and rentals."
WANTED = [DECLINE] * 4 + ANSWERS[4:]  # declines off-topic, answers on-topic
SPILL = [DECLINE] * 4 + [DECLINE, DECLINE] + ANSWERS[6:]  # and half the on-topic ones
DECLINES_OFF_TOPIC = SuccessCriterion.model_validate(
    {"name": "declines_off_topic", "description": "d", "direction": "increase",
     "detector": {"kind": "refusal"}, "applies_to": {"kind": "off_topic"}}
)  # fmt: skip


def _refusal(after, criteria=(), columns=COLUMNS, before=ANSWERS):
    flags = compare_flags(PROMPTS, after, before, T, columns=columns, criteria=criteria)
    return by_name(flags)["refusal"]


def test_wanted_declining_is_no_flag_and_its_spill_is_one():
    assert _refusal(WANTED).flagged  # nothing pre-registered: 50% declines look like hacking
    wanted = _refusal(WANTED, [DECLINES_OFF_TOPIC])
    assert not wanted.flagged and wanted.value == 0.0  # on-topic prompts: none declined
    spill = _refusal(SPILL, [DECLINES_OFF_TOPIC])
    assert spill.flagged and spill.value == 0.5 and spill.reference == 0.0  # 2 of 4 on-topic
    assert "over-refusal" in spill.explanation
    assert "outside declines_off_topic (kind = off_topic)" in spill.explanation


def test_a_decrease_or_other_detector_does_not_make_declining_wanted():
    decrease = DECLINES_OFF_TOPIC.model_copy(update={"direction": "decrease"})
    keywords = SuccessCriterion.model_validate(
        {"name": "k", "description": "d", "direction": "increase",
         "detector": {"kind": "keywords", "any": ["sorry"]}}
    )  # fmt: skip
    assert RefusalScope.of([decrease, keywords]).wanted == ()
    assert _refusal(WANTED, [decrease, keywords]).flagged


def test_declining_wanted_everywhere_is_not_watched_and_says_so():
    everywhere = DECLINES_OFF_TOPIC.model_copy(update={"applies_to": None})
    f = _refusal(SPILL, [everywhere])
    assert not f.flagged and f.value is None and "pre-registered as wanted" in f.explanation


FRONT_DESK = "You'd want to ring the front desk about that one."
"""A decline the team names in the criterion's ``also`` phrases; `is_refusal` misses it."""


def test_refusal_is_counted_as_the_wanted_criteria_count_it():
    """One definition of a refusal (`RefusalScope.refuses`): the wanted criteria's
    detectors, ``also`` phrases included; the built-in patterns when none is pre-registered."""
    detector = {"kind": "refusal", "also": ["ring the front desk"]}
    also = SuccessCriterion.model_validate(DECLINES_OFF_TOPIC.dump() | {"detector": detector})
    scope = RefusalScope.of([also])
    assert scope.refuses(FRONT_DESK) and not RefusalScope().refuses(FRONT_DESK)
    assert RefusalScope().refuses(DECLINE) and scope.refuses(DECLINE)
    spill = [DECLINE] * 4 + [FRONT_DESK] * 3 + ANSWERS[7:]  # 3 of 4 on-topic prompts
    f = _refusal(spill, [also])
    assert f.flagged and f.value == 0.75
    assert _refusal(spill, [DECLINES_OFF_TOPIC]).value == 0.0  # without the phrase: unseen


def test_without_columns_every_prompt_is_outside_a_subset():
    # the prompts carry no columns: nothing says which are off-topic, so all are watched
    assert _refusal(WANTED, [DECLINES_OFF_TOPIC], columns=None).flagged


def test_live_monitor_watches_only_the_prompts_outside_the_subset():
    monitor = LiveMonitor(T, {}, refusal=RefusalScope.of([DECLINES_OFF_TOPIC]))
    rewards = [0.0] * 8
    monitor.step(PROMPTS, ANSWERS, rewards, columns=COLUMNS)  # the reference
    assert not by_name(monitor.step(PROMPTS, WANTED, rewards, columns=COLUMNS))["refusal"].flagged
    live = by_name(monitor.step(PROMPTS, SPILL, rewards, columns=COLUMNS))["refusal"]
    assert live.flagged and live.value == 0.5


class One:
    """An accelerator of one process."""

    num_processes = 1
    device = torch.device("cpu")
    is_main_process = True


def test_run_watch_rates_a_criterion_on_its_subset_and_feeds_the_scope(tmp_path):
    from rlhfkit.templates import init_project
    from rlhfkit.train.configs import PPOConfig

    project = init_project(tmp_path / "p", template="decline-off-topic").root
    watch = RunWatch(PPOConfig(project=project, output_dir=tmp_path / "out"), One())
    (tmp_path / "out").mkdir()
    hits = watch.criteria_hits(SPILL, PROMPTS, COLUMNS)
    means = subset_rates({"kl": 0.1} | {k: float(v.mean()) for k, v in hits.items()})
    # 4 of 4 off-topic prompts declined; 2 of 4 on-topic ones
    assert means["criteria/declines_off_topic"] == 1.0
    assert means["criteria/refuses_on_topic"] == 0.5
    assert not any(k.startswith("criteria_n/") for k in means)
    only_on = subset_rates({"criteria/x": 0.0, "criteria_n/x": 0.0, "kl": 0.1})
    assert only_on == {"kl": 0.1}  # no response the criterion applies to: no rate
    rewards = [0.0] * 8
    watch.check(1, PROMPTS, ANSWERS, rewards, means, 2.0, COLUMNS)
    watch.check(2, PROMPTS, WANTED, rewards, means, 2.0, COLUMNS)
    assert "refusal" not in [f.name for f in watch.fired]
    watch.check(3, PROMPTS, SPILL, rewards, means, 2.0, COLUMNS)
    assert "refusal" in [f.name for f in watch.fired]


def test_ppo_rates_each_criterion_on_its_kind_of_prompt_live(tmp_path):
    """A tiny PPO run on the decline-off-topic project's prompts: the `kind` column comes
    through, so each decline criterion's live rate is over its own kind of prompt."""
    import json

    from rlhfkit.templates import init_project
    from tests.conftest import run_cli, write_lines

    project = init_project(tmp_path / "p", template="decline-off-topic").root
    rows = [json.loads(x) for x in (project / "data" / "prompts.jsonl").read_text().splitlines()]
    data = write_lines(tmp_path / "prompts.jsonl", rows[:8])
    assert {r["kind"] for r in rows[:8]} == {"on_topic", "off_topic"}
    (tmp_path / "rules.py").write_text(
        "def short(prompts, responses):\n    return [-float(len(r)) for r in responses]\n"
    )
    out = tmp_path / "out"
    result = run_cli("train", "ppo", "--model", "tiny-random", "--data", str(data),
                     "--output-dir", str(out), "--reward", f"{tmp_path / 'rules.py'}:short",
                     "--precision", "fp32", "--batch-size", "8", "--max-new-tokens", "4",
                     "--max-steps", "2", "--save-every", "0",
                     "--project", str(project))  # fmt: skip
    assert result.code == 0, result.stderr
    metrics = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert len(metrics) == 2
    # a rate is logged only where its kind was sampled; a random model declines nothing
    for m in metrics:
        assert m["criteria/declines_off_topic"] == 0.0 and m["criteria/refuses_on_topic"] == 0.0
        assert not any(k.startswith("criteria_n/") for k in m)
