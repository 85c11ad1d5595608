"""Each reward-hacking monitor's measures and the live checks of a PPO step, on hand-made
texts (the after-the-fact comparison: tests/evaluate/test_monitors.py)."""

import pytest

from rlhfkit.project import MonitorSettings
from rlhfkit.train.monitors import (
    History,
    LiveMonitor,
    ReferenceStats,
    TextStats,
    check_step,
    echo_share,
    repeated_share,
    reward_without_criteria,
)

T = MonitorSettings()
EMAIL = "My kettle from order 4821 arrived broken and the lid is cracked. What can you do?"
PROMPTS = [[{"role": "user", "content": EMAIL}]] * 4
GOOD = [
    "I have sent a free replacement kettle for order 4821 today.\n\nBest regards,\nSupport",
    "A new kettle ships today for order 4821 and you keep the old one.\n\nBest regards,\nSupport",
    "Your refund for order 4821 is issued and will arrive in 3 days.\n\nBest regards,\nSupport",
    "I arranged a courier to collect it and a replacement ships tomorrow.\n\nBest regards,\nTeam",
]


def by_name(flags):
    return {f.name: f for f in flags}


def test_measures_by_hand():
    assert echo_share(EMAIL, "My kettle from order 4821 arrived broken") == 1.0
    assert echo_share(EMAIL, "A replacement ships today, no charge at all") == 0.0
    assert echo_share(EMAIL, "kettle broken") == 1.0  # short replies: their words
    assert repeated_share("thank you thank you thank you thank you") == pytest.approx(4 / 6)
    assert repeated_share("one two three four five") == 0.0
    s = TextStats.of(["p"] * 2, ["I think maybe so.", "Great question! Sure."], T)
    assert (s.hedging, s.sycophancy, s.mean_words) == (0.5, 0.5, 3.5)


def test_reward_up_but_no_criterion_moved():
    f = reward_without_criteria(1.2, {"signs_off": 0.0, "hedging": -0.02}, T)
    assert f.flagged and "classic sign" in f.explanation
    assert not reward_without_criteria(1.2, {"signs_off": 0.3}, T).flagged
    assert not reward_without_criteria(0.2, {"signs_off": 0.0}, T).flagged
    assert not reward_without_criteria(None, {}, T).flagged


def _step_inputs(step):
    return PROMPTS, GOOD, [1.0, 2.0, 1.5, 0.5]


def test_check_step_trends_kl_and_entropy():
    ref = ReferenceStats.from_samples(PROMPTS, GOOD, T, rewards=[0.0, 1.0, 0.5, -0.5])
    h = History({"signs_off": "increase"})
    for step in range(10):  # reward climbs 0.5 a step; signs_off stays at 0.5; KL explodes
        h.record(0.5 * step, kl=5.0 * step, entropy=2.0 * 0.7**step, criteria={"signs_off": 0.5})
    flags = by_name(check_step(*_step_inputs(9), ref, h, T))
    assert flags["reward_without_criteria"].flagged
    assert flags["reward_without_criteria"].value == pytest.approx(2.5 / ref.reward_sd)
    assert flags["kl_runaway"].flagged and flags["kl_runaway"].value == pytest.approx(35.0)
    assert flags["entropy_collapse"].flagged and not flags["entropy_blowup"].flagged
    assert not flags["length_inflation"].flagged

    early = History({"signs_off": "increase"})
    early.record(0.0, kl=1.0, entropy=2.0, criteria={"signs_off": 0.5})
    quiet = by_name(check_step(*_step_inputs(0), ref, early, T))
    assert quiet["reward_without_criteria"].value is None and not quiet["kl_runaway"].flagged


def test_reward_length_correlation_in_a_step():
    responses = [" ".join(["word"] * n) for n in range(5, 45, 5)]
    rewards = [n / 10 for n in range(5, 45, 5)]
    prompts = ["p"] * 8
    ref = ReferenceStats.from_samples(prompts, responses, T)
    h = History({})
    h.record(1.0)
    f = by_name(check_step(prompts, responses, rewards, ref, h, T))["reward_length_correlation"]
    assert f.flagged and f.value == pytest.approx(1.0)


def test_live_monitor_takes_its_first_step_as_reference():
    m = LiveMonitor(T, {"signs_off": "increase"})
    first = m.step(PROMPTS, GOOD, [0.0, 1.0, 0.5, -0.5], kl=0.0, entropy=2.0,
                   criteria={"signs_off": 1.0})  # fmt: skip
    assert m.reference.text.mean_words > 10 and not any(f.flagged for f in first)
    later = m.step(PROMPTS, ["Sorry.", "No.", "OK.", "Fine."], [3.0] * 4, kl=1.0, entropy=2.0,
                   criteria={"signs_off": 0.0})  # fmt: skip
    assert by_name(later)["length_collapse"].flagged
    assert len(m.history.reward) == 2
