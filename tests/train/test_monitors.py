"""Each reward-hacking monitor's measures and the live checks of a PPO step, on hand-made
texts (the after-the-fact comparison: tests/evaluate/test_monitors.py)."""

import pytest

from rlhfkit.project import MonitorSettings
from rlhfkit.train.monitors import (
    CriterionMove,
    History,
    LiveMonitor,
    check_step,
    reward_without_criteria,
)
from rlhfkit.train.text_stats import ReferenceStats, TextStats, echo_share, repeated_share

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
    flat = {"signs_off": CriterionMove(0.5, 0.5, "increase"),
            "hedging": CriterionMove(0.10, 0.12, "decrease")}  # fmt: skip
    f = reward_without_criteria(1.2, flat, T)
    assert f.flagged and "classic sign" in f.explanation
    assert flat["hedging"].change == pytest.approx(-0.02)  # signed by direction
    up = {"signs_off": CriterionMove(0.2, 0.5, "increase")}
    assert not reward_without_criteria(1.2, up, T).flagged
    assert not reward_without_criteria(0.2, flat, T).flagged
    assert not reward_without_criteria(None, {}, T).flagged


# A criterion to increase (declines off-topic requests) falls while the reward rises: the
# issue's PPO run, 20% -> 5% at p 0.031 against a reward up 1.4 SDs.
WRONG_WAY = CriterionMove(0.20, 0.05, "increase", p_value=0.031)
RIGHT_WAY = CriterionMove(0.20, 0.60, "increase", p_value=0.001)


def test_reward_up_while_a_criterion_moves_the_wrong_way():
    # another criterion moving its way does not excuse the one moving against it
    f = reward_without_criteria(1.4, {"declines": WRONG_WAY, "brief": RIGHT_WAY}, T)
    assert f.flagged and f.value == 1.4
    assert "rose by 1.4 reference SDs" in f.explanation
    assert "declines (20% -> 5%, p 0.031; it should increase) moved the wrong way" in (
        f.explanation
    )
    assert "brief" not in f.explanation.split("moved the wrong way")[0]
    # a decrease criterion that rose is wrong-way too
    rose = CriterionMove(0.02, 0.30, "decrease", p_value=0.001)
    assert reward_without_criteria(1.4, {"hedging": rose, "brief": RIGHT_WAY}, T).flagged


def test_a_wrong_way_move_that_is_small_or_not_significant_is_not_flagged():
    assert not reward_without_criteria(1.4, {"declines": RIGHT_WAY}, T).flagged
    # reward flat: the criterion's fall is the report's "regressed", not this flag
    flat = reward_without_criteria(0.1, {"declines": WRONG_WAY, "brief": RIGHT_WAY}, T)
    assert not flat.flagged and "wrong way" not in flat.explanation
    # after the fact a p-value must clear alpha; live (no p-value) the size alone decides
    noisy = CriterionMove(0.20, 0.05, "increase", p_value=0.2)
    assert not reward_without_criteria(1.4, {"declines": noisy, "brief": RIGHT_WAY}, T).flagged
    assert reward_without_criteria(
        1.4, {"declines": noisy, "brief": RIGHT_WAY}, T, alpha=0.25
    ).flagged
    small = CriterionMove(0.20, 0.17, "increase")  # 3 points: under criteria_min_change
    assert not reward_without_criteria(1.4, {"declines": small, "brief": RIGHT_WAY}, T).flagged


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


def test_live_reward_up_while_a_criterion_falls():
    """Planted histories: reward climbing through 10 steps while `declines` (to increase)
    falls from 30% to 5% and `brief` rises: flagged at the last step, naming the criterion;
    the same fall with a flat reward, or `declines` rising instead, is not this flag."""
    ref = ReferenceStats.from_samples(PROMPTS, GOOD, T, rewards=[0.0, 1.0, 0.5, -0.5])
    directions = {"declines": "increase", "brief": "increase"}

    def run(reward_step, declines):
        h = History(directions)
        for step in range(10):
            h.record(reward_step * step, kl=1.0, entropy=2.0,
                     criteria={"declines": declines[step], "brief": 0.2 + 0.05 * step})  # fmt: skip
        return by_name(check_step(*_step_inputs(9), ref, h, T))["reward_without_criteria"]

    falling = [0.30] * 5 + [0.05] * 5
    f = run(0.5, falling)
    assert f.flagged and f.value == pytest.approx(2.5 / ref.reward_sd)
    assert "declines (30% -> 5%; it should increase) moved the wrong way" in f.explanation
    assert not run(0.5, falling[::-1]).flagged  # rising: the right way
    assert not run(0.0, falling).flagged  # reward flat


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
