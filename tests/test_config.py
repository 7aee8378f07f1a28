from __future__ import annotations

import copy

import pytest
import yaml

from medcast.config import compose, load_params, parse_params
from medcast.errors import ConfigError
from tests.conftest import ROOT


def test_committed_params_equal_composition_of_conf(base_params):
    committed = yaml.safe_load((ROOT / "params.yaml").read_text())
    assert committed == base_params, "params.yaml is stale: run `python -m medcast.config`"


def test_composition_switches_dataset_group():
    params = compose(["dataset=insurance"], config_dir=ROOT / "conf")
    p = parse_params(params)
    assert p.dataset.name == "insurance"
    assert p.dataset.target == "charges"
    assert p.dataset.columns["smoker"].categories == ("no", "yes")


def test_load_params_typo_names_key_and_suggestion(base_params, tmp_path):
    bad = copy.deepcopy(base_params)
    bad["train"]["cv_fold"] = bad["train"].pop("cv_folds")
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(bad))
    with pytest.raises(ConfigError, match=r"train\.cv_fold: unknown key \(did you mean 'cv_folds'\?\)"):
        load_params(path)


@pytest.mark.parametrize(
    ("section", "key", "value", "message"),
    [
        ("preprocess", "test_size", "0.2", "preprocess.test_size: expected a number"),
        ("preprocess", "test_size", 1.5, r"preprocess.test_size: 1.5 is not in \(0, 1\)"),
        ("train", "cv_folds", 1, "train.cv_folds: 1 must be at least 2"),
        ("train", "candidates", ["ridge", "lasoo"], "unknown model 'lasoo' \\(did you mean 'lasso'"),
        ("train", "select", "svr_x", "train.select: 'svr_x' is not in train.candidates"),
        ("tune", "n_trials", 0, "tune.n_trials: must be at least 1"),
    ],
)
def test_parse_params_rejects_bad_values(base_params, section, key, value, message):
    bad = copy.deepcopy(base_params)
    bad[section][key] = value
    with pytest.raises(ConfigError, match=message):
        parse_params(bad)


def test_parse_params_reports_missing_section(base_params):
    bad = copy.deepcopy(base_params)
    del bad["tune"]
    with pytest.raises(ConfigError, match="^tune: missing key"):
        parse_params(bad)


def test_load_params_missing_file_is_clear(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_params(tmp_path / "params.yaml")


@pytest.mark.parametrize("column", ["sex", "charges"])
def test_cutoffs_need_a_numeric_feature_column(column):
    raw = compose(["dataset=insurance"], config_dir=ROOT / "conf")
    raw["dataset"]["columns"][column]["cutoffs"] = [1]
    with pytest.raises(ConfigError, match=f"dataset.columns.{column}: cutoffs need a numeric feature"):
        parse_params(raw)
