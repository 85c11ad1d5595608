"""Statistics: parity with statsmodels, hand-computed values, a known difference is found,
and identical models are 'no significant change' at about the nominal rate."""

import itertools

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from statsmodels.stats.proportion import proportion_confint, proportions_ztest

from rlhfkit import stats as S


@pytest.mark.parametrize(("x", "n"), [(0, 10), (3, 10), (7, 20), (20, 20), (55, 160)])
def test_wilson_matches_statsmodels(x, n):
    lo, hi = S.wilson_interval(x, n)
    ref = proportion_confint(x, n, alpha=0.05, method="wilson")
    assert lo == pytest.approx(ref[0], abs=1e-12) and hi == pytest.approx(ref[1], abs=1e-12)
    lo90, hi90 = S.wilson_interval(x, n, confidence=0.9)
    ref90 = proportion_confint(x, n, alpha=0.1, method="wilson")
    assert (lo90, hi90) == pytest.approx(ref90, abs=1e-12)


@pytest.mark.parametrize(("x1", "x2"), [(7, 12), (30, 41), (0, 5), (19, 20)])
def test_two_proportion_matches_statsmodels(x1, x2):
    _, p = proportions_ztest([x2, x1], [40, 40])
    assert S.two_proportion_p(x1, 40, x2, 40) == pytest.approx(p, abs=1e-12)
    assert S.two_proportion_p(0, 40, 0, 40) == 1.0


def test_sign_flip_p_by_enumeration():
    d = np.array([1.0, -0.5, 0.5, 1.0, 1.0, 0.5, -1.0, 1.0, 0.0])
    nonzero = d[d != 0]
    sums = [abs(np.dot(s, nonzero)) for s in itertools.product((1, -1), repeat=len(nonzero))]
    expected = np.mean(np.array(sums) >= abs(nonzero.sum()) - 1e-12)
    assert S.sign_flip_p(d) == pytest.approx(expected)
    assert S.sign_flip_p(np.zeros(5)) == 1.0
    # all 20 prompts improve: far beyond chance, and Monte Carlo never reports 0
    p = S.sign_flip_p(np.ones(20), resamples=2000)
    assert 0 < p < 0.001


def test_ranks_and_spearman_by_hand():
    assert S.ranks(np.array([10, 20, 20, 5])).tolist() == [2.0, 3.5, 3.5, 1.0]
    assert S.spearman([1, 2, 3, 4], [10, 20, 25, 100]) == pytest.approx(1.0)
    assert S.pearson([1, 1, 1], [1, 2, 3]) is None


def test_a_known_difference_is_detected_with_every_test():
    rng = np.random.default_rng(0)
    before = rng.random((50, 2)) < 0.2
    after = rng.random((50, 2)) < 0.7
    for test in S.TESTS:
        c = S.compare_rates(before, after, test=test, resamples=4000)
        assert c.p_value < 0.001, test
        assert c.diff_ci[0] > 0.2 and c.diff == pytest.approx(after.mean() - before.mean())
        assert S.verdict(c.diff, c.p_value, "increase") == "improved"
        assert S.verdict(c.diff, c.p_value, "decrease") == "regressed"
    assert c.test == S.TEST_NAMES["two_proportion"]


def test_identical_samples_are_no_significant_change():
    x = np.random.default_rng(1).random((20, 2)) < 0.4
    c = S.compare_rates(x, x.copy())
    assert c.p_value == 1.0 and c.diff == 0 and c.diff_ci == (0.0, 0.0)
    assert S.verdict(c.diff, c.p_value, "increase") == "no significant change"


@pytest.mark.parametrize("test", ["permutation", "two_proportion"])
def test_same_model_is_no_significant_change_at_about_the_nominal_rate(test):
    """Two independent sample sets from the same model (each prompt its own pass rate):
    'significant' at alpha 0.05 in at most about 5% of trials. Binary data make the tests
    somewhat conservative, so the rate sits a little below 5%, never far above."""
    rng = np.random.default_rng(7)
    trials, rejected = 400, 0
    for i in range(trials):
        p = rng.uniform(0.1, 0.9, size=(40, 1))  # prompts differ in difficulty
        before, after = rng.random((40, 3)) < p, rng.random((40, 3)) < p
        c = S.compare_rates(before, after, test=test, resamples=1000, seed=i)
        rejected += S.verdict(c.diff, c.p_value, "increase") != "no significant change"
    assert 0.01 <= rejected / trials <= 0.075


def test_compare_means_and_win_rate_by_hand():
    before = np.array([[10.0, 12.0], [20.0, 22.0], [5.0, 5.0]])
    after = before + np.array([[2.0, 2.0], [4.0, 4.0], [0.0, 6.0]])
    c = S.compare_means(before, after, resamples=2000)
    assert c.before == pytest.approx(74 / 6) and c.diff == pytest.approx(3.0)
    # per-prompt differences 2, 4, 3: all positive; 2^3 sign patterns, only 2 reach |9|
    assert c.p_value == pytest.approx(2 / 8)
    outcomes = np.array([[1, 1], [0.5, 0], [1, 1]])
    w = S.win_rate(outcomes, resamples=2000)
    assert w.win_rate == pytest.approx((1 + 0.25 + 1) / 3)
    assert (w.wins, w.losses, w.ties) == (4, 1, 1)
    assert w.ci[0] <= w.win_rate <= w.ci[1]
    even = S.win_rate(np.full((10, 2), 0.5))
    assert even.win_rate == 0.5 and even.p_value == 1.0


def test_bad_shapes_are_refused():
    with pytest.raises(ValueError, match="pair up"):
        S.compare_rates(np.zeros((3, 2)), np.zeros((3, 3)))
    with pytest.raises(ValueError, match="prompts, samples"):
        S.compare_rates(np.zeros(3), np.zeros(3))


# --- constant input: undefined, however the float rounding falls --------------------------------

finite = st.floats(-1e6, 1e6, allow_nan=False, allow_infinity=False)


def test_a_constant_whose_float_std_is_not_zero_is_constant():
    x = np.full(7, 0.1)
    assert np.std(x) > 0  # the mean of seven 0.1s is not 0.1: std is ~1e-17
    y = np.arange(7.0)
    assert S.pearson(x, y) is None and S.pearson(y, x) is None
    assert S.spearman(x, y) is None and S.spearman(y, x) is None


@settings(max_examples=300, deadline=None)
@given(
    st.floats(-1e30, 1e30, allow_nan=False).filter(lambda c: c != 0),  # float32 holds it
    st.lists(st.integers(-3, 3), min_size=2, max_size=40),
    st.integers(0, 2**32 - 1),
    st.sampled_from([np.float64, np.float32]),
)
def test_constant_plus_ulp_noise_has_no_correlation(c, steps, seed, dtype):
    """A constant vector perturbed by a few units in the last place (what sums and means
    of equal numbers produce) is constant: Pearson and Spearman are None, never 0.0."""
    base = dtype(c)
    x = np.array([base] * len(steps), dtype=dtype)
    for i, k in enumerate(steps):
        for _ in range(abs(k)):
            x[i] = np.nextafter(x[i], dtype(np.inf) if k > 0 else dtype(-np.inf))
    y = np.random.default_rng(seed).random(len(steps))
    assert S.pearson(x, y) is None and S.pearson(y, x) is None
    assert S.spearman(x, y) is None and S.spearman(y, x) is None


@settings(max_examples=300, deadline=None)
@given(
    arrays(np.float64, st.integers(3, 30), elements=finite),
    st.integers(0, 2**32 - 1),
    st.floats(1e-3, 1e3),
    st.floats(-1e3, 1e3),
)
def test_pearson_is_invariant_to_positive_affine_maps(x, seed, scale, shift):
    assume(np.ptp(x) > 1e-6 * max(1.0, np.max(np.abs(x))))
    y = np.random.default_rng(seed).normal(size=len(x))
    r = S.pearson(x, y)
    assert r is not None and -1.0 <= r <= 1.0
    assert S.pearson(scale * x + shift, y) == pytest.approx(r, abs=1e-9)
    assert S.pearson(-scale * x + shift, y) == pytest.approx(-r, abs=1e-9)
    mapped = scale * x + shift
    if len(np.unique(mapped)) == len(np.unique(x)):  # rounding can merge close values
        assert S.spearman(mapped, y) == pytest.approx(S.spearman(x, y), abs=1e-12)


def test_correlations_of_non_finite_input_are_undefined():
    assert S.pearson([1.0, float("nan"), 3.0], [1.0, 2.0, 3.0]) is None
    assert S.pearson([1.0, float("inf"), 3.0], [1.0, 2.0, 3.0]) is None
    assert S.spearman([1.0, float("nan"), 3.0], [1.0, 2.0, 3.0]) is None


def test_collapsed_rewards_read_as_undefined_in_eval_rm_and_the_monitor():
    """Every reward 0.1 (a collapsed reward model): the length correlation is n/a, not 0.00."""
    from rlhfkit.evaluate.rm import length_bias
    from rlhfkit.project import MonitorSettings
    from rlhfkit.train.monitors import reward_length_flag

    rows = [{"chosen": "a " * (i + 1), "rejected": "b " * (2 * i + 3)} for i in range(6)]
    bias = length_bias(rows, np.full(6, 0.1), np.full(6, 0.1))
    assert bias.pearson is None and bias.spearman is None
    flag = reward_length_flag(
        [0.1] * 12, [f"w{i} " * (i + 1) for i in range(12)], MonitorSettings()
    )
    assert flag.value is None and "constant" in flag.explanation
