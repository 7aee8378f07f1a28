from __future__ import annotations

import copy
import shutil

import pytest
import yaml

from medcast.config import compose, load_params, parse_params
from medcast.errors import ConfigError
from tests.conftest import ROOT


def _leaves(node, prefix=""):
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _leaves(value, f"{prefix}{key}.")
    else:
        yield prefix[:-1]


def test_committed_params_equal_composition_of_conf(base_params):
    committed = yaml.safe_load((ROOT / "params.yaml").read_text())
    assert committed == base_params, "params.yaml is stale: run `python -m medcast.config`"


def test_params_hold_knobs_not_the_dataset_schema_or_file_paths(base_params):
    """What `dvc exp show` lists as params: the dataset's name and the stages' knobs."""
    keys = list(_leaves(base_params))
    assert keys[0] == "dataset" and base_params["dataset"] == "diabetes"
    assert not [k for k in keys if k.startswith(("dataset.", "paths.", "train.models"))]
    assert len(keys) <= 60  # the knobs (46 today), never the schema: it was 223 columns


def test_composition_switches_dataset_by_name():
    params = compose(["dataset=insurance"], config_dir=ROOT / "conf/params")
    assert params["dataset"] == "insurance"
    p = parse_params(params, ROOT)
    assert p.dataset.name == "insurance"
    assert p.dataset.target == "charges"
    assert p.dataset.columns["smoker"].categories == ("no", "yes")


def test_paths_come_from_dvc_yaml_vars():
    p = parse_params(compose(config_dir=ROOT / "conf/params"), ROOT)
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    assert "${paths.metrics}" in stages["evaluate"]["metrics"]
    assert p.paths.metrics == "reports/metrics.json"
    assert p.paths.train.endswith(".parquet")


def test_candidates_all_means_every_model_conf_file(base_params):
    p = parse_params(base_params, ROOT)
    assert p.train.candidates == "all"
    assert p.candidates == sorted(p.candidates) and "hist_boosting" in p.candidates
    assert set(p.candidates) == {f.stem for f in (ROOT / "conf/model").glob("*.yaml")}


def test_load_params_typo_names_key_and_suggestion(base_params, tmp_path):
    bad = copy.deepcopy(base_params)
    bad["cv"]["fold"] = bad["cv"].pop("folds")
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(bad))
    shutil.copytree(ROOT / "conf", tmp_path / "conf")
    shutil.copy(ROOT / "dvc.yaml", tmp_path / "dvc.yaml")
    with pytest.raises(ConfigError, match=r"params.yaml: cv\.fold: unknown key \(did you mean 'folds'\?\)"):
        load_params(path)


@pytest.mark.parametrize(
    ("section", "key", "value", "message"),
    [
        ("preprocess", "test_size", "0.2", "preprocess.test_size: expected a number"),
        ("preprocess", "test_size", 1.5, r"preprocess.test_size: 1.5 is not in \(0, 1\)"),
        ("cv", "folds", 1, "cv.folds: 1 must be at least 2"),
        ("cv", "repeats", 0, "cv.repeats: 0 must be at least 1"),
        ("train", "candidates", ["ridge", "lasoo"], "unknown model 'lasoo' \\(did you mean 'lasso'"),
        ("train", "candidates", "some", "train.candidates: 'all' or a list of model names"),
        ("train", "select", "svr_x", "train.select: 'svr_x' is not in train.candidates"),
        ("tune", "n_trials", 0, "tune.n_trials: must be at least 1"),
        ("train", "rule", "simplest", "train.rule: 'simplest' is not one of best, one_se"),
        ("export", "explain_check_rows", 5, "export.explain_check_rows: 5 must be at least 10"),
        ("plot", "permutation_max_rows", 50, "plot.permutation_max_rows: 50 must be at least 100"),
        ("evaluate", "bootstrap_max_rows", 10, "evaluate.bootstrap_max_rows: 10 must be at least 100"),
        ("evaluate", "bootstrap", 5, "evaluate.bootstrap: 5 refits are too few"),
    ],
)
def test_parse_params_rejects_bad_values(base_params, section, key, value, message):
    bad = copy.deepcopy(base_params)
    bad[section][key] = value
    with pytest.raises(ConfigError, match=message):
        parse_params(bad, ROOT)


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("max_mb", 0, r"train.serving_budget.max_mb: 0 MB must be positive \(null: no limit\)"),
        ("max_ms", -1.5, r"train.serving_budget.max_ms: -1.5 ms must be positive"),
        ("max_ms", "fast", "train.serving_budget.max_ms: expected a number"),
        ("max_sec", 1, r"train.serving_budget.max_sec: unknown key \(did you mean 'max_ms'"),
    ],
)
def test_serving_budget_bad_limits_are_refused_naming_the_key(base_params, key, value, message):
    bad = copy.deepcopy(base_params)
    bad["train"]["serving_budget"][key] = value
    with pytest.raises(ConfigError, match=message):
        parse_params(bad, ROOT)


def test_serving_budget_limits_can_be_turned_off_or_left_out(base_params):
    off = copy.deepcopy(base_params)
    off["train"]["serving_budget"] = {"max_mb": None, "max_ms": None}
    assert not parse_params(off, ROOT).train.serving_budget.active
    absent = copy.deepcopy(base_params)
    del absent["train"]["serving_budget"]
    budget = parse_params(absent, ROOT).train.serving_budget
    assert (budget.max_mb, budget.max_ms) == (50.0, 5.0)


def test_parse_params_reports_missing_section(base_params):
    bad = copy.deepcopy(base_params)
    del bad["tune"]
    with pytest.raises(ConfigError, match="^tune: missing key"):
        parse_params(bad, ROOT)


def test_load_params_missing_file_is_clear(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_params(tmp_path / "params.yaml")


def test_unknown_dataset_lists_known_ones_and_how_to_draft_one(base_params):
    bad = {**base_params, "dataset": "mystudy"}
    with pytest.raises(ConfigError, match=r"no conf/dataset/mystudy.yaml \(known: diabetes, insurance.*medcast.datasets init"):
        parse_params(bad, ROOT)


def test_model_conf_typo_names_file_and_key(base_params, tmp_path):
    shutil.copytree(ROOT / "conf", tmp_path / "conf")
    shutil.copy(ROOT / "dvc.yaml", tmp_path / "dvc.yaml")
    (tmp_path / "conf/model/ridge.yaml").write_text("defaults: {alpha: 1}\nserach_space: {}\n")
    with pytest.raises(ConfigError, match=r"conf/model/ridge.yaml: serach_space: unknown key \(did you mean 'search_space'"):
        parse_params(base_params, tmp_path)


@pytest.mark.parametrize("column", ["sex", "charges"])
def test_cutoffs_need_a_numeric_feature_column(tmp_path, column):
    shutil.copytree(ROOT / "conf", tmp_path / "conf")
    shutil.copy(ROOT / "dvc.yaml", tmp_path / "dvc.yaml")
    path = tmp_path / "conf/dataset/insurance.yaml"
    raw = yaml.safe_load(path.read_text())
    raw["columns"][column]["cutoffs"] = [1]
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    with pytest.raises(ConfigError, match=f"conf/dataset/insurance.yaml: columns.{column}: (min, max and )?cutoffs"):
        parse_params(compose(["dataset=insurance"], config_dir=ROOT / "conf/params"), tmp_path)
