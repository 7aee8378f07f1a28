from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pandas as pd
import yaml

from devtools.factories import write_insurance_csv
from medcast.datasets import load_raw, validate
from medcast.preprocess import split
from tests.conftest import tiny, tiny_params, venv_env


def test_split_is_seeded_and_sized():
    p = tiny()
    frame = validate(load_raw(p.dataset), p.dataset)
    train, test, schema = split(frame, p.dataset, p.preprocess)
    again, _, _ = split(frame, p.dataset, p.preprocess)
    assert (len(train), len(test)) == (353, 89)
    assert train.index.equals(again.index)
    assert schema.names == p.dataset.features
    bmi = next(f for f in schema.features if f.name == "bmi")
    assert bmi.observed_min == train["bmi"].min() and bmi.allowed_max == 80


def _run_stage(tmp_path, params):
    """`python -m medcast.preprocess` in a folder holding params.yaml and the conf files."""
    from tests.conftest import ROOT

    if not (tmp_path / "conf").exists():
        shutil.copytree(ROOT / "conf", tmp_path / "conf")
        shutil.copy(ROOT / "dvc.yaml", tmp_path / "dvc.yaml")
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    return subprocess.run([sys.executable, "-m", "medcast.preprocess"], cwd=tmp_path,
                          capture_output=True, text=True, env=venv_env(), timeout=120)


def test_main_writes_splits_and_schema(tmp_path):
    write_insurance_csv(tmp_path / "data/raw/insurance/insurance.csv", n=100)
    out = _run_stage(tmp_path, tiny_params("dataset=insurance"))
    assert out.returncode == 0, out.stderr
    train = pd.read_parquet(tmp_path / "data/processed/train.parquet")
    assert len(train) == 80
    schema = json.loads((tmp_path / "data/processed/schema.json").read_text())
    smoker = next(f for f in schema["features"] if f["name"] == "smoker")
    assert smoker["categories"] == ["no", "yes"]


def test_main_on_bad_data_exits_2_with_one_message_and_no_traceback(tmp_path):
    frame = write_insurance_csv(tmp_path / "data/raw/insurance/insurance.csv", n=40)
    frame.loc[6, "smoker"] = "maybe"
    frame.to_csv(tmp_path / "data/raw/insurance/insurance.csv", index=False)
    out = _run_stage(tmp_path, tiny_params("dataset=insurance"))
    assert out.returncode == 2
    assert "column 'smoker': unknown category ['maybe'] in row 7" in out.stderr
    assert "Traceback" not in out.stderr
    assert not (tmp_path / "data/processed/train.parquet").exists()


def test_main_with_typo_in_params_exits_2(tmp_path):
    params = tiny_params()
    params["preprocess"]["tests_size"] = params["preprocess"].pop("test_size")
    out = _run_stage(tmp_path, params)
    assert out.returncode == 2
    assert "preprocess.tests_size: unknown key (did you mean 'test_size'?)" in out.stderr


def test_schema_keeps_the_declared_cutoffs_through_a_round_trip(tmp_path):
    from devtools.factories import insurance_frame
    from medcast.features import encoded_name, load_schema, save_schema

    p = tiny("dataset=insurance")
    _, _, schema = split(validate(insurance_frame(100, seed=4).astype(str), p.dataset), p.dataset,
                         p.preprocess)
    save_schema(schema, tmp_path / "schema.json")
    again = load_schema(tmp_path / "schema.json")
    assert again == schema
    assert {f.name: f.cutoffs for f in again.features if f.cutoffs} == {"bmi": (30.0,)}
    assert [encoded_name(n) for n in ("num__age", "cat__smoker_yes", "bmi>30__bmi")] == [
        "age", "smoker_yes", "bmi>30"]


def test_main_on_a_messy_table_drops_rows_without_target_and_keeps_the_id(tmp_path):
    from devtools.factories import messy_clinical_conf, write_messy_clinical_csv

    frame = write_messy_clinical_csv(tmp_path / "data/raw/trial/trial.csv", n=200, seed=4)
    _run_stage(tmp_path, tiny_params())  # copies conf/ first
    (tmp_path / "conf/dataset/trial.yaml").write_text(yaml.safe_dump(messy_clinical_conf(), sort_keys=False))
    out = _run_stage(tmp_path, tiny_params("dataset=trial"))
    assert out.returncode == 0, out.stderr
    dropped = int(frame["outcome"].isna().sum())
    assert dropped > 0
    schema = json.loads((tmp_path / "data/processed/schema.json").read_text())
    assert schema["n_dropped_missing_target"] == dropped
    assert schema["id"] == "record id"
    nullable = {f["name"] for f in schema["features"] if f["nullable"]}
    assert nullable == {"BL.Cig.Day", "sbp", "Hypertension"}
    train = pd.read_parquet(tmp_path / "data/processed/train.parquet")
    test = pd.read_parquet(tmp_path / "data/processed/test.parquet")
    assert len(train) + len(test) == len(frame) - dropped
    assert list(train.columns) == ["record id", "age", "BL.Cig.Day", "sbp", "Hypertension",
                                   "sex", "outcome"]
    assert train["BL.Cig.Day"].isna().any() and train["Hypertension"].isna().any()
    assert "dropped" in out.stderr


def _refused(tmp_path, *overrides):
    """The stage run on tiny params with `overrides`: exit 2, no traceback; its stderr lines."""
    out = _run_stage(tmp_path, tiny_params(*overrides))
    assert out.returncode == 2 and "Traceback" not in out.stderr, out.stderr
    return out.stderr.strip().splitlines()


def test_main_without_the_raw_file_says_which_and_how_to_get_it(tmp_path):
    assert _refused(tmp_path, "dataset=insurance") == [
        "error: data/raw/insurance/insurance.csv: file not found. Get the insurance table with "
        "`make data NAME=insurance FILE=<your copy of insurance.csv>` (or `dvc pull "
        "data/raw/insurance/insurance.csv.dvc` if a colleague pushed it), then run again"]


def test_main_with_an_unknown_dataset_lists_the_known_ones(tmp_path):
    stderr = "\n".join(_refused(tmp_path, "dataset=nosuch"))
    assert "dataset: no conf/dataset/nosuch.yaml (known: diabetes, insurance" in stderr
    assert "python -m medcast.datasets init" in stderr


def _unreviewed_trial(tmp_path):
    """The messy trial table with a description as `init` drafts it: REVIEW markers left."""
    from devtools.factories import messy_clinical_conf, write_messy_clinical_csv

    write_messy_clinical_csv(tmp_path / "data/raw/trial/trial.csv", n=60, seed=4)
    _run_stage(tmp_path, tiny_params())  # copies conf/ first
    shutil.rmtree(tmp_path / "data/processed")
    conf = messy_clinical_conf()
    conf["target_unit"] = "REVIEW: unit of the target"
    conf["columns"]["sbp"]["unit"] = "REVIEW: unit"
    (tmp_path / "conf/dataset/trial.yaml").write_text(yaml.safe_dump(conf, sort_keys=False))


def test_main_refuses_review_markers_naming_the_file_every_key_and_the_fixes(tmp_path):
    _unreviewed_trial(tmp_path)
    assert _refused(tmp_path, "dataset=trial") == [
        "error: conf/dataset/trial.yaml: REVIEW markers left in target_unit, columns.sbp.unit: "
        "replace each with the real value (then commit the file), or run anyway with "
        "`dvc exp run -S preprocess.allow_review=true`"]
    assert not (tmp_path / "data/processed/train.parquet").exists()


def test_main_with_allow_review_warns_with_the_same_keys_and_runs(tmp_path):
    _unreviewed_trial(tmp_path)
    out = _run_stage(tmp_path, tiny_params("dataset=trial", "preprocess.allow_review=true"))
    assert out.returncode == 0, out.stderr
    assert ("WARNING conf/dataset/trial.yaml: REVIEW markers left in target_unit, "
            "columns.sbp.unit: they reach the model card and reports as written "
            "(preprocess.allow_review: true)") in out.stderr
    assert (tmp_path / "data/processed/train.parquet").exists()


def test_main_says_in_one_line_when_the_dataset_differs_from_its_last_run(tmp_path):
    write_insurance_csv(tmp_path / "data/raw/insurance/insurance.csv", n=40)
    lock = {"stages": {"preprocess": {"params": {"params.yaml": {"dataset": "insurance"}}}}}
    (tmp_path / "dvc.lock").write_text(yaml.safe_dump(lock))
    out = _run_stage(tmp_path, tiny_params())  # diabetes, as conf/params/config.yaml composes
    assert out.returncode == 0, out.stderr
    said = [line for line in out.stderr.splitlines() if "since the last preprocess run" in line]
    assert len(said) == 1 and said[0].endswith(
        "WARNING dataset: insurance → diabetes since the last preprocess run (dvc.lock); every "
        "`dvc exp run -S …` composes conf/params/config.yaml's dataset (diabetes): if you meant "
        "insurance, `python -m medcast.datasets use insurance`")
    out = _run_stage(tmp_path, tiny_params("dataset=insurance"))
    assert out.returncode == 0 and "since the last preprocess run" not in out.stderr
