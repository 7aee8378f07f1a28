from __future__ import annotations

import json
import subprocess
import sys

import pandas as pd
import yaml

from devtools.factories import write_insurance_csv
from medcast.config import parse_params
from medcast.datasets import load_raw, validate
from medcast.preprocess import split
from tests.conftest import tiny_params, venv_env


def test_split_is_seeded_and_sized():
    p = parse_params(tiny_params())
    frame = validate(load_raw(p.dataset), p.dataset)
    train, test, schema = split(frame, p.dataset, p.preprocess)
    again, _, _ = split(frame, p.dataset, p.preprocess)
    assert (len(train), len(test)) == (353, 89)
    assert train.index.equals(again.index)
    assert schema.names == p.dataset.features
    bmi = next(f for f in schema.features if f.name == "bmi")
    assert bmi.observed_min == train["bmi"].min() and bmi.allowed_max == 80


def _run_stage(tmp_path, params):
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    return subprocess.run([sys.executable, "-m", "medcast.preprocess"], cwd=tmp_path,
                          capture_output=True, text=True, env=venv_env(), timeout=120)


def test_main_writes_splits_and_schema(tmp_path):
    write_insurance_csv(tmp_path / "data/raw/insurance.csv", n=100)
    out = _run_stage(tmp_path, tiny_params("dataset=insurance"))
    assert out.returncode == 0, out.stderr
    train = pd.read_csv(tmp_path / "data/processed/train.csv")
    assert len(train) == 80
    schema = json.loads((tmp_path / "data/processed/schema.json").read_text())
    smoker = next(f for f in schema["features"] if f["name"] == "smoker")
    assert smoker["categories"] == ["no", "yes"]


def test_main_on_bad_data_exits_2_with_one_message_and_no_traceback(tmp_path):
    frame = write_insurance_csv(tmp_path / "data/raw/insurance.csv", n=40)
    frame.loc[6, "smoker"] = "maybe"
    frame.to_csv(tmp_path / "data/raw/insurance.csv", index=False)
    out = _run_stage(tmp_path, tiny_params("dataset=insurance"))
    assert out.returncode == 2
    assert "column 'smoker': unknown category ['maybe'] in row 7" in out.stderr
    assert "Traceback" not in out.stderr
    assert not (tmp_path / "data/processed/train.csv").exists()


def test_main_with_typo_in_params_exits_2(tmp_path):
    params = tiny_params()
    params["preprocess"]["tests_size"] = params["preprocess"].pop("test_size")
    out = _run_stage(tmp_path, params)
    assert out.returncode == 2
    assert "preprocess.tests_size: unknown key (did you mean 'test_size'?)" in out.stderr


def test_schema_keeps_the_declared_cutoffs_through_a_round_trip(tmp_path):
    from devtools.factories import insurance_frame
    from medcast.features import encoded_name, load_schema, save_schema

    p = parse_params(tiny_params("dataset=insurance"))
    _, _, schema = split(validate(insurance_frame(100, seed=4).astype(str), p.dataset), p.dataset,
                         p.preprocess)
    save_schema(schema, tmp_path / "schema.json")
    again = load_schema(tmp_path / "schema.json")
    assert again == schema
    assert {f.name: f.cutoffs for f in again.features if f.cutoffs} == {"bmi": (30.0,)}
    assert [encoded_name(n) for n in ("num__age", "cat__smoker_yes", "bmi>30__bmi")] == [
        "age", "smoker_yes", "bmi>30"]
