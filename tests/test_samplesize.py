"""medcast.samplesize against pmsampsize's published answers for continuous outcomes, and each
criterion's boundary checked directly with scipy.stats.

Where the numbers come from:
- Riley et al., Statistics in Medicine 2019 (Part I, continuous outcomes), abstract and applied
  example: a model of lung function (FEV1) in African-American women with 25 predictor
  parameters, anticipated adjusted R² 0.2, mean 1.9, SD 0.6 "requires at least 918 subjects …
  at least 36.7 subjects per predictor parameter". This is also the continuous example in
  pmsampsize's documentation (`pmsampsize(type="c", rsquared=0.2, parameters=25,
  intercept=1.9, sd=0.6)`).
- pmsampsize 1.1.3 (CRAN), tests/testthat/test_cont.R, "Test 2.1" to "Test 2.7": the sample
  size and SPP of each criterion and the final one; Test 2.7 also the shrinkage column.
"""

from __future__ import annotations

import math

import pytest
from scipy import stats

from medcast.samplesize import expected_shrinkage, riley_continuous

# (rsquared, parameters, intercept, sd, shrinkage) → n per criterion 1–4 and final, SPP of each.
PMSAMPSIZE_TESTS = [
    ((0.2, 25, 1.9, 0.6, 0.9), [918, 401, 259, 918, 918], [36.72, 16.04, 10.36, 36.72, 36.72]),  # 2.1
    ((0.3, 25, 1.9, 0.6, 0.9), [574, 351, 259, 574, 574], [22.96, 14.04, 10.36, 22.96, 22.96]),  # 2.2
    ((0.2, 50, 1.9, 0.6, 0.9), [1924, 801, 284, 1924, 1924], [38.48, 16.02, 5.68, 38.48, 38.48]),  # 2.3
    ((0.2, 25, 10, 0.6, 0.9), [918, 401, 259, 918, 918], [36.72, 16.04, 10.36, 36.72, 36.72]),  # 2.4
    ((0.2, 25, 1.9, 2, 0.9), [918, 401, 259, 918, 918], [36.72, 16.04, 10.36, 36.72, 36.72]),  # 2.5
    ((0.5, 100, 1.9, 2, 0.9), [1264, 1001, 334, 1264, 1264], [12.64, 10.01, 3.34, 12.64, 12.64]),  # 2.6
    ((0.89, 30, 3.3, 1.1, 0.84), [32, 67, 264, 264, 264], [1.07, 2.23, 8.8, 8.8, 8.8]),  # 2.7
]


def sizes(out):
    return [c["n"] for c in out["criteria"]] + [out["n"]]


def spps(out):
    return [round(c["spp"], 2) for c in out["criteria"]] + [round(out["spp"], 2)]


def test_the_published_lung_function_example_needs_918_subjects_36_7_per_parameter():
    out = riley_continuous(parameters=25, r2=0.2, intercept=1.9, sd=0.6)
    assert out["n"] == 918
    assert round(out["spp"], 1) == 36.7
    assert [c["name"] for c in out["criteria"]] == ["shrinkage", "r2 optimism", "residual sd", "intercept"]


@pytest.mark.parametrize("args, expected_n, expected_spp", PMSAMPSIZE_TESTS)
def test_riley_continuous_reproduces_pmsampsize_test_cont(args, expected_n, expected_spp):
    r2, parameters, intercept, sd, shrinkage = args
    out = riley_continuous(parameters, r2, intercept, sd, shrinkage=shrinkage)
    assert sizes(out) == expected_n
    assert spps(out) == expected_spp


def test_riley_continuous_reproduces_pmsampsize_shrinkage_column_of_test_2_7():
    out = riley_continuous(30, 0.89, 3.3, 1.1, shrinkage=0.84)
    shrink = [round(c["shrinkage"], 3) for c in out["criteria"]] + [round(out["shrinkage"], 3)]
    assert shrink == [0.845, 0.851, 0.954, 0.954, 0.954]


def test_criterion_1_is_the_first_n_from_p_plus_2_whose_expected_shrinkage_reaches_the_target():
    n1 = riley_continuous(25, 0.2, 1.9, 0.6)["criteria"][0]["n"]
    p, r2 = 25, 0.2

    def s(n):  # written out again: 1 + (p − 2)/(n ln(1 − R²_app))
        apparent = (r2 * (n - p - 1) + p) / (n - 1)
        return 1 + (p - 2) / (n * math.log(1 - apparent))

    assert s(n1) >= 0.9 > s(n1 - 1)
    assert all(s(n) < 0.9 for n in range(p + 2, n1))
    assert float(expected_shrinkage(n1, p, r2)) == pytest.approx(s(n1), rel=1e-14)


def test_criterion_2_bounds_the_gap_between_apparent_and_adjusted_r2():
    p, r2 = 25, 0.2
    n2 = riley_continuous(p, r2, 1.9, 0.6)["criteria"][1]["n"]

    def gap(n):  # R²_app − R²_adj with R²_adj = r2 and R²_app = (r2(n − p − 1) + p)/(n − 1)
        return (r2 * (n - p - 1) + p) / (n - 1) - r2

    assert gap(n2) <= 0.05 + 1e-12 and gap(n2 - 1) > 0.05


@pytest.mark.parametrize("parameters", [1, 10, 25, 60])
def test_criterion_3_is_234_plus_p_for_a_ten_percent_margin_on_the_residual_sd(parameters):
    n3 = riley_continuous(parameters, 0.3, 5.0, 1.0)["criteria"][2]["n"]
    assert n3 == 234 + parameters  # pmsampsize 1.1.3's fixed value

    def margin(df):  # the 95% chi-square interval of σ, as multiples of σ̂
        low, high = stats.chi2.interval(0.95, df)
        return max(math.sqrt(df / low), math.sqrt(high / df))

    df = n3 - parameters - 1
    assert margin(df) <= 1.1 < margin(df - 1)


def test_criterion_4_iterates_until_the_mean_is_precise_enough():
    # A mean of 0.05 with SD 2: the interval at max(n1, n2, n3) = 918 is far too wide.
    # (pmsampsize 1.1.3 answers 919 here: its loop adds qt(0.025) < 0 and stops at once.)
    p, r2, mean, sd = 25, 0.2, 0.05, 2.0
    out = riley_continuous(p, r2, mean, sd)
    n4 = out["criteria"][3]["n"]

    def half(n):
        return stats.t.ppf(0.975, n - p - 1) * math.sqrt(sd**2 * (1 - r2) / n)

    assert half(n4) <= 0.1 * mean < half(n4 - 1)
    assert out["n"] == n4 > 918
    assert (out["intercept_low"], out["intercept_high"]) == pytest.approx((mean - half(n4), mean + half(n4)))
    negative = riley_continuous(p, r2, -mean, sd)  # a negative mean needs the same precision
    assert negative["n"] == n4


def test_the_intercept_interval_of_the_lung_function_example():
    out = riley_continuous(25, 0.2, 1.9, 0.6)
    half = stats.t.ppf(0.975, 918 - 26) * math.sqrt(0.36 * 0.8 / 918)
    assert (round(out["intercept_low"], 2), round(out["intercept_high"], 2)) == (1.87, 1.93)
    assert out["intercept_high"] == pytest.approx(1.9 + half, rel=1e-12)


@pytest.mark.parametrize("kwargs, message", [
    ({"r2": 0.0}, "r2"), ({"r2": 1.0}, "r2"), ({"r2": -0.1}, "r2"),
    ({"parameters": 0}, "parameters"), ({"parameters": 2.5}, "parameters"),
    ({"sd": 0.0}, "sd"), ({"sd": -1.0}, "sd"),
    ({"intercept": 0.0}, "intercept"),
    ({"shrinkage": 1.0}, "shrinkage"), ({"mmoe": 1.0}, "mmoe"),
])
def test_riley_continuous_rejects_impossible_inputs(kwargs, message):
    args = {"parameters": 25, "r2": 0.2, "intercept": 1.9, "sd": 0.6, **kwargs}
    with pytest.raises(ValueError, match=message):
        riley_continuous(**args)


def test_all_problems_are_reported_in_one_message():
    with pytest.raises(ValueError, match="parameters.*r2.*sd"):
        riley_continuous(parameters=0, r2=2.0, intercept=1.0, sd=-1.0)
