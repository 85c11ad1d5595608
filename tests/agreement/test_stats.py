"""Agreement statistics against reference implementations, published examples, and edges."""

import math

import krippendorff
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.metrics import cohen_kappa_score
from statsmodels.stats.inter_rater import fleiss_kappa as sm_fleiss

from rlhfkit.agreement import (
    LEVELS,
    Labels,
    bootstrap_intervals,
    cohen_kappa_pairs,
    fleiss_kappa,
    krippendorff_alpha,
    percent_agreement,
)
from rlhfkit.agreement.stats import _fleiss


def from_matrix(m: np.ndarray) -> Labels:
    """[annotators, items] with nan for missing -> long-format labels."""
    a, u = np.nonzero(~np.isnan(m))
    return Labels.from_records(u, a, m[a, u])


@st.composite
def reliability(draw, complete=False):
    annotators = draw(st.integers(2, 6))
    items = draw(st.integers(2, 25))
    categories = draw(st.integers(2, 5))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    m = rng.integers(1, categories + 1, size=(annotators, items)).astype(float)
    if not complete:
        m[rng.random(m.shape) < draw(st.floats(0.0, 0.6))] = np.nan
    return m


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # the package divides 0 by 0
@settings(max_examples=150, deadline=None)
@given(reliability())
def test_alpha_equals_the_krippendorff_package_at_every_level(m):
    labels = from_matrix(m)
    for level in LEVELS:
        try:
            expected = krippendorff.alpha(reliability_data=m, level_of_measurement=level)
        except (ValueError, ZeroDivisionError):
            expected = math.nan
        ours = krippendorff_alpha(labels, level)
        if math.isnan(expected) or not math.isfinite(expected):
            assert math.isnan(ours)
        else:
            assert ours == pytest.approx(expected, abs=1e-9)


@pytest.mark.filterwarnings("ignore::UserWarning")  # scikit-learn on one-label pairs
@settings(max_examples=150, deadline=None)
@given(reliability())
def test_cohen_kappa_equals_scikit_learn_for_every_pair(m):
    labels = from_matrix(m)
    pairs = cohen_kappa_pairs(labels)
    for a in range(m.shape[0]):
        for b in range(a + 1, m.shape[0]):
            both = ~np.isnan(m[a]) & ~np.isnan(m[b])
            key = (str(a), str(b))
            if both.sum() < 2:
                assert key not in pairs
                continue
            with np.errstate(invalid="ignore", divide="ignore"):
                expected = cohen_kappa_score(m[a, both], m[b, both])
            if math.isnan(expected):
                assert math.isnan(pairs[key])
            else:
                assert pairs[key] == pytest.approx(expected, abs=1e-9)


@settings(max_examples=150, deadline=None)
@given(reliability(complete=True))
def test_fleiss_kappa_equals_statsmodels(m):
    labels = from_matrix(m)
    ours, reason = fleiss_kappa(labels)
    table = labels.counts()
    if (table.sum(axis=0) > 0).sum() == 1:  # one label throughout: 0/0, and it says so
        assert "no variation" in reason
    else:
        assert reason is None
    with np.errstate(invalid="ignore", divide="ignore"):
        expected = sm_fleiss(table, method="fleiss")
    if math.isnan(expected):
        assert math.isnan(ours)
    else:
        assert ours == pytest.approx(expected, abs=1e-9)


# --- published worked examples ----------------------------------------------------------------

# Krippendorff (2011), "Computing Krippendorff's Alpha-Reliability", section E: 4 observers,
# 12 units, values 1-5, missing data.
KRIPPENDORFF_2011 = np.array(
    [
        [1, 2, 3, 3, 2, 1, 4, 1, 2, np.nan, np.nan, np.nan],
        [1, 2, 3, 3, 2, 2, 4, 1, 2, 5, np.nan, 3],
        [np.nan, 3, 3, 3, 2, 3, 4, 2, 2, 5, 1, np.nan],
        [1, 2, 3, 3, 2, 4, 4, 1, 2, 5, 1, np.nan],
    ]
)


@pytest.mark.parametrize(
    ("level", "published"),
    [("nominal", 0.743), ("ordinal", 0.815), ("interval", 0.849), ("ratio", 0.797)],
)
def test_krippendorffs_own_example(level, published):
    assert round(krippendorff_alpha(from_matrix(KRIPPENDORFF_2011), level), 3) == published


def test_cohens_textbook_example():
    # 50 proposals, two readers: 20 yes/yes, 5 yes/no, 10 no/yes, 15 no/no -> kappa 0.4
    a = ["yes"] * 25 + ["no"] * 25
    b = ["yes"] * 20 + ["no"] * 5 + ["yes"] * 10 + ["no"] * 15
    labels = Labels.from_records(list(range(50)) * 2, ["r1"] * 50 + ["r2"] * 50, a + b)
    assert cohen_kappa_pairs(labels)[("r1", "r2")] == pytest.approx(0.4)
    assert percent_agreement(labels) == pytest.approx(0.7)


def test_fleiss_textbook_example():
    # Fleiss (1971) as worked on Wikipedia: 10 subjects, 14 raters, 5 categories -> 0.210
    table = np.array(
        [
            [0, 0, 0, 0, 14],
            [0, 2, 6, 4, 2],
            [0, 0, 3, 5, 6],
            [0, 3, 9, 2, 0],
            [2, 2, 8, 1, 1],
            [7, 7, 0, 0, 0],
            [3, 2, 6, 3, 0],
            [2, 5, 3, 2, 2],
            [6, 5, 2, 1, 0],
            [0, 2, 2, 3, 7],
        ]
    )
    assert round(_fleiss(table.astype(float)), 3) == 0.210
    item, rater, label = [], [], []
    for i, row in enumerate(table):
        votes = [c for c, n in enumerate(row) for _ in range(n)]
        item += [i] * 14
        rater += list(range(14))
        label += votes
    assert round(fleiss_kappa(Labels.from_records(item, rater, label))[0], 3) == 0.210


# --- edges ------------------------------------------------------------------------------------


def test_perfect_agreement_with_variation_is_alpha_one():
    labels = Labels.from_records(
        [0, 0, 1, 1, 2, 2], ["a", "b"] * 3, ["A", "A", "B", "B", "tie", "tie"]
    )
    assert krippendorff_alpha(labels) == 1.0
    assert percent_agreement(labels) == 1.0
    assert cohen_kappa_pairs(labels)[("a", "b")] == 1.0


def test_everyone_giving_the_same_label_leaves_alpha_undefined():
    """No variation: expected disagreement is 0 and alpha is 0/0 — reported as NaN, not 1."""
    labels = Labels.from_records([0, 0, 1, 1], ["a", "b"] * 2, ["A"] * 4)
    assert math.isnan(krippendorff_alpha(labels))
    assert percent_agreement(labels) == 1.0
    assert math.isnan(cohen_kappa_pairs(labels)[("a", "b")])


def test_one_annotator_gives_nothing_to_compare():
    labels = Labels.from_records([0, 1, 2], ["a"] * 3, ["A", "B", "A"])
    assert math.isnan(krippendorff_alpha(labels)) and math.isnan(percent_agreement(labels))
    assert cohen_kappa_pairs(labels) == {}
    assert fleiss_kappa(labels)[1] == "every item has a single label"


def test_items_with_a_single_label_are_left_out():
    base = Labels.from_records([0, 0, 1, 1], ["a", "b", "a", "b"], ["A", "B", "B", "B"])
    extra = Labels.from_records(
        [0, 0, 1, 1, 2], ["a", "b", "a", "b", "a"], ["A", "B", "B", "B", "A"]
    )
    assert krippendorff_alpha(extra) == krippendorff_alpha(base)
    assert percent_agreement(extra) == percent_agreement(base) == 0.5
    assert "between 1 and 2" in fleiss_kappa(extra)[1]


def test_labels_as_strings_and_as_numbers_agree_nominally():
    m = KRIPPENDORFF_2011
    a, u = np.nonzero(~np.isnan(m))
    as_numbers = Labels.from_records(u, a, m[a, u])
    as_strings = Labels.from_records(u, a, [f"v{int(x)}" for x in m[a, u]])
    assert as_numbers.numeric and not as_strings.numeric
    assert krippendorff_alpha(as_numbers) == pytest.approx(krippendorff_alpha(as_strings))
    with pytest.raises(ValueError, match="numeric"):
        krippendorff_alpha(as_strings, "interval")


def test_duplicate_labels_are_refused():
    with pytest.raises(ValueError, match="more than once"):
        Labels.from_records([0, 0], ["a", "a"], ["A", "B"])


def test_bootstrap_intervals_bracket_the_estimate_and_shrink_with_more_items():
    rng = np.random.default_rng(1)

    def panel(items):
        truth = rng.integers(0, 3, items)
        m = np.array(
            [np.where(rng.random(items) < 0.8, truth, rng.integers(0, 3, items)) for _ in range(4)],
            dtype=float,
        )
        return from_matrix(m)

    small, large = panel(40), panel(400)
    ci_small = bootstrap_intervals(small, replicates=300)
    ci_large = bootstrap_intervals(large, replicates=300)
    for labels, ci in ((small, ci_small), (large, ci_large)):
        assert (
            ci["krippendorff_alpha"].low
            <= krippendorff_alpha(labels)
            <= (ci["krippendorff_alpha"].high)
        )
        assert (
            ci["percent_agreement"].low
            <= percent_agreement(labels)
            <= (ci["percent_agreement"].high)
        )
    width = lambda ci: ci["krippendorff_alpha"].high - ci["krippendorff_alpha"].low  # noqa: E731
    assert width(ci_large) < width(ci_small) / 2
    again = bootstrap_intervals(small, replicates=300)
    assert again["krippendorff_alpha"] == ci_small["krippendorff_alpha"]  # seeded
