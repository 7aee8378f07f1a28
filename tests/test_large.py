"""The large-data policy: nothing changes below the thresholds; above them each rule engages
and says why."""

from __future__ import annotations

import numpy as np
import pytest

from medcast.config import parse_params
from medcast.models.large import keep, plan, screening_rows, stratified_subsample
from medcast.params import LargeConfig
from tests.conftest import ROOT, tiny_params

DEFAULTS = LargeConfig(max_rows={"svr": 10000, "random_forest": 50000, "mlp": 50000},
                       hist_boosting_above=20000,
                       mlp_max_steps=64, halving_above=20000, halving_keep=2,
                       expensive_trials=10)
MLP = {"batch_size": 16, "validation_split": 0.2, "epochs": 300}
GB = {"n_estimators": 200, "learning_rate": 0.05, "max_depth": 2, "subsample": 0.8,
      "min_samples_leaf": 10}


@pytest.mark.parametrize("rows", [353, 1070])  # the built-in tables' training rows
@pytest.mark.parametrize("model,hp", [("svr", {}), ("random_forest", {}), ("mlp", MLP),
                                      ("gradient_boosting", GB), ("ridge", {})])
def test_built_in_tables_run_every_candidate_in_full(rows, model, hp):
    p = plan(model, hp, rows, DEFAULTS)
    assert (p.fidelity, p.build_as, p.hp, p.max_rows, p.note) == ("full", model, hp, None, "")


def test_the_shipped_params_hold_these_thresholds():
    assert parse_params(tiny_params(), ROOT).cv.large == DEFAULTS


def test_svr_above_max_rows_is_subsampled():
    p = plan("svr", {"C": 1.0}, 107_040, DEFAULTS)
    assert p.fidelity == "subsampled" and p.max_rows == 10000 and p.hp == {"C": 1.0}
    assert p.note == "fitted on 10000 of 107040 rows: cv.large.max_rows.svr=10000"


def test_gradient_boosting_above_threshold_runs_as_histogram_boosting():
    p = plan("gradient_boosting", GB, 20_001, DEFAULTS)
    assert p.fidelity == "approximated" and p.build_as == "hist_boosting"
    assert p.hp == {"max_iter": 200, "learning_rate": 0.05, "max_depth": 2, "min_samples_leaf": 10}


def test_mlp_batch_grows_so_an_epoch_has_bounded_steps():
    p = plan("mlp", MLP, 40_000, DEFAULTS)
    assert p.fidelity == "approximated" and p.hp["batch_size"] == 500  # ceil(32000 / 64)
    assert 40_000 * 0.8 / p.hp["batch_size"] <= 64


def test_a_capped_mlp_sizes_its_batch_for_the_rows_it_fits():
    """Above cv.large.max_rows.mlp the MLP fits 50,000 rows: its batch gives those rows (not
    the table's) at most mlp_max_steps steps an epoch, so an epoch still has 64 steps."""
    p = plan("mlp", MLP, 1_070_400, DEFAULTS)
    assert p.fidelity == "subsampled" and p.max_rows == 50_000
    assert p.hp["batch_size"] == 625  # ceil(50,000 × 0.8 / 64), not ceil(856,320 / 64)
    assert "batch 16 → 625" in p.note and "fitted on 50000 of 1070400 rows" in p.note
    timed = plan("mlp", MLP, 100, LargeConfig(mlp_time_budget=60.0))
    assert timed.fidelity == "approximated" and timed.hp["time_budget"] == 60.0


def test_skip_above_skips_and_says_why():
    p = plan("knn", {}, 600_000, LargeConfig(skip_above={"knn": 500_000}))
    assert p.fidelity == "skipped" and "skip_above.knn=500000" in p.note


def test_bad_n_jobs_or_cluster_is_one_config_error():
    from medcast.errors import ConfigError

    with pytest.raises(ConfigError, match="cv.n_jobs: 0 must be at least 1"):
        parse_params(tiny_params("cv.n_jobs=0"), ROOT)
    with pytest.raises(ConfigError, match="cv.cluster: 'myhost' is not a scheduler address"):
        parse_params(tiny_params("cv.cluster=myhost"), ROOT)
    with pytest.raises(ConfigError, match="tune.cluster: 'myhost:8786' is not a scheduler address"):
        parse_params(tiny_params("tune.cluster=myhost:8786"), ROOT)


def test_null_turns_a_rule_off_from_the_command_line():
    """`-S cv.large.max_rows.svr=null` (Hydra merges mappings: `{}` would keep the keys)."""
    large = parse_params(tiny_params("cv.large.max_rows.svr=null",
                                     "cv.large.hist_boosting_above=null"), ROOT).cv.large
    assert plan("svr", {}, 107_040, large).fidelity == "full"
    assert plan("gradient_boosting", GB, 107_040, large).fidelity == "full"
    assert plan("random_forest", {}, 107_040, large).fidelity == "subsampled"


def test_screening_engages_only_above_halving_above():
    assert [screening_rows(n, DEFAULTS) for n in (353, 1070, 20_000)] == [None, None, None]
    assert screening_rows(20_001, DEFAULTS) == screening_rows(107_040, DEFAULTS) == 20_000
    assert screening_rows(10**7, LargeConfig(halving_above=None)) is None


def test_stratified_subsample_keeps_the_targets_deciles_and_is_seeded():
    y = np.random.default_rng(0).lognormal(9.0, 1.0, 5000)  # skewed, like charges
    rows = stratified_subsample(y, 500, seed=42)
    assert len(rows) == 500 and list(rows) == sorted(set(rows))
    assert list(rows) == list(stratified_subsample(y, 500, seed=42))
    assert list(rows) != list(stratified_subsample(y, 500, seed=43))
    edges = np.quantile(y, np.linspace(0, 1, 11)[1:-1])
    per_decile = np.bincount(np.searchsorted(edges, y[rows], side="right"), minlength=10)
    assert list(per_decile) == [50] * 10  # a plain random draw is off by ±10 in some decile
    with pytest.raises(ValueError, match="500 rows out of 500"):
        stratified_subsample(y[:500], 500, seed=42)


def test_stratified_subsample_copes_with_a_target_of_few_values():
    y = np.array([1.0] * 300 + [2.0] * 99 + [50.0])  # ties collapse deciles; one lone value
    rows = stratified_subsample(y, 100, seed=0)
    assert len(rows) == 100 and 20 <= int((y[rows] == 2.0).sum()) <= 30


def test_keep_is_the_best_halving_keep_and_a_forced_one():
    assert keep(["a", "b", "c", "d"], DEFAULTS) == ["a", "b"]
    assert keep(["a", "b", "c", "d"], DEFAULTS, forced="d") == ["a", "b", "d"]
    assert keep(["a", "b", "c"], DEFAULTS, forced="b") == ["a", "b"]
    assert keep(["a"], DEFAULTS) == ["a"]


def test_halving_settings_that_cannot_work_are_config_errors():
    from medcast.errors import ConfigError

    with pytest.raises(ConfigError, match="halving_above: 40 rows cannot be cross-validated"):
        parse_params(tiny_params("cv.large.halving_above=40"), ROOT)
    with pytest.raises(ConfigError, match="halving_keep: 0 must be at least 1"):
        parse_params(tiny_params("cv.large.halving_keep=0"), ROOT)
