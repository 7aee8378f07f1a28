from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from devtools.factories import insurance_frame, messy_clinical_frame, messy_clinical_spec
from medcast.datasets import drop_missing_target, load_raw, validate
from medcast.datasets.spec import ColumnSpec, SourceConfig, parse_dataset, review_markers
from medcast.errors import ConfigError, DataValidationError
from tests.conftest import tiny


@pytest.fixture(scope="module")
def insurance_ds():
    return tiny("dataset=insurance").dataset


@pytest.fixture(scope="module")
def diabetes_ds():
    return tiny().dataset


def as_text(frame):
    """The CSV loader reads every cell as text; mirror that."""
    return frame.astype(str)


def test_diabetes_loads_unscaled_in_clinical_units_with_sex_as_a_code(diabetes_ds):
    frame = validate(load_raw(diabetes_ds), diabetes_ds)
    assert frame.shape == (442, 11)
    assert list(frame.columns) == [*diabetes_ds.features, "progression"]
    assert frame["age"].between(19, 79).all()
    assert set(frame["sex"].unique()) == {"1", "2"}  # a category: no sex 1.5
    assert frame["bmi"].between(18, 43).all()


def test_valid_insurance_table_gets_declared_dtypes(insurance_ds):
    frame = validate(as_text(insurance_frame(50)), insurance_ds)
    assert str(frame["age"].dtype) == "int64"
    assert str(frame["bmi"].dtype) == "float64"
    assert set(frame["smoker"]) <= {"no", "yes"}


def _broken(mutate):
    frame = as_text(insurance_frame(20))
    mutate(frame)
    return frame


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda f: f.drop(columns="bmi", inplace=True), r"missing column\(s\) \['bmi'\]"),
        (lambda f: f.insert(0, "patient_id", "x"),
         r"unexpected column\(s\) \['patient_id'\]: list them under `ignore:` in conf/dataset/insurance.yaml"),
        (lambda f: f.loc.__setitem__((3, "age"), "forty"), r"column 'age': not a number \(\['forty'\]\) in row 4"),
        (lambda f: f.loc.__setitem__((2, "bmi"), ""), r"column 'bmi': missing value in row 3 \(if it may be missing, declare `missing: true`"),
        (lambda f: f.loc.__setitem__((5, "bmi"), "NaN"), r"column 'bmi': missing value in row 6"),
        (lambda f: f.loc.__setitem__((7, "charges"), "inf"), r"column 'charges': infinite value in row 8"),
        (lambda f: f.loc.__setitem__((1, "age"), "250"), r"column 'age': out of range \[0.0, 120.0\] years in row 2"),
        (lambda f: f.loc.__setitem__((0, "children"), "1.5"), r"column 'children': expected whole numbers.* in row 1"),
        (lambda f: f.loc.__setitem__((4, "smoker"), "sometimes"), r"column 'smoker': unknown category \['sometimes'\] in row 5"),
        (lambda f: f.loc.__setitem__((9, "region"), ""), r"column 'region': missing value in row 10"),
    ],
    ids=["missing-col", "extra-col", "wrong-type", "empty", "nan", "inf", "out-of-range",
         "fraction-in-int", "unknown-category", "missing-category"],
)
def test_validate_rejects_bad_data_naming_column_and_rows(insurance_ds, mutate, message):
    with pytest.raises(DataValidationError, match=message):
        validate(_broken(mutate), insurance_ds, source="insurance.csv")


def test_validate_lists_many_rows_compactly(insurance_ds):
    frame = as_text(insurance_frame(30))
    frame.loc[:9, "bmi"] = "-1"
    with pytest.raises(DataValidationError, match=r"rows 1, 2, 3, 4, 5 and 5 more"):
        validate(frame, insurance_ds)


def test_validate_finds_every_problem_in_one_pass(insurance_ds):
    frame = as_text(insurance_frame(20))
    frame.loc[3, "age"] = "forty"
    frame.loc[4, "smoker"] = "maybe"
    with pytest.raises(DataValidationError) as err:
        validate(frame, insurance_ds)
    assert "column 'age'" in str(err.value) and "column 'smoker'" in str(err.value)


def test_validate_numeric_frame_with_nan(diabetes_ds):
    raw = load_raw(diabetes_ds)
    raw.frame.loc[10, "s5"] = None
    with pytest.raises(DataValidationError, match=r"column 's5': missing value in row 11"):
        validate(raw, diabetes_ds)


def test_missing_file_says_which_and_the_command_that_gets_it(insurance_ds, tmp_path):
    with pytest.raises(DataValidationError,
                       match=r"data/raw/insurance/insurance.csv: file not found. Get the insurance table "
                             r"with `make data NAME=insurance FILE="):
        load_raw(insurance_ds, root=tmp_path)


def test_missing_target_is_allowed_then_dropped_and_counted(insurance_ds):
    frame = as_text(insurance_frame(30))
    frame.loc[[2, 7, 11], "charges"] = ["", "NA", "."]
    clean = validate(frame, insurance_ds)
    kept, dropped = drop_missing_target(clean, insurance_ds)
    assert dropped == 3 and len(kept) == 27
    assert kept["charges"].notna().all()


# ---- a messy clinical table: chosen columns, ignored ones, an id, missing values, dots


def test_messy_table_validates_with_nulls_where_declared(tmp_path):
    frame = messy_clinical_frame(200, seed=3)
    ds = messy_clinical_spec()
    clean = validate(frame.astype(object).where(frame.notna(), ""), ds)
    assert list(clean.columns) == ds.used  # id first, ignored columns gone
    assert clean["BL.Cig.Day"].isna().mean() > 0.2
    assert clean["Hypertension"].isna().mean() > 0.2
    assert set(clean["Hypertension"].dropna()) <= {"No", "Yes"}  # "No " and " Yes" stripped
    assert clean["record id"].is_unique


def test_undeclared_missing_values_name_column_and_rows():
    frame = messy_clinical_frame(60, seed=1).astype(object)
    ds = messy_clinical_spec()
    ds = dataclasses.replace(ds, columns={**ds.columns,
                                          "BL.Cig.Day": ColumnSpec("float", 0, 200)})
    with pytest.raises(DataValidationError, match=r"column 'BL.Cig.Day': missing value in rows"):
        validate(frame.where(frame.notna(), "NA"), ds)


def test_ignored_column_that_does_not_exist_is_reported():
    frame = messy_clinical_frame(30, seed=1).astype(object)
    ds = messy_clinical_spec()
    ds = dataclasses.replace(ds, ignore=(*ds.ignore, "no_such_column"))
    with pytest.raises(DataValidationError, match=r"`ignore:` names column\(s\) \['no_such_column'\]"):
        validate(frame.where(frame.notna(), ""), ds)


def test_id_must_be_unique_and_present():
    frame = messy_clinical_frame(30, seed=1).astype(object)
    frame = frame.where(frame.notna(), "")
    frame.loc[5, "record id"] = frame.loc[4, "record id"]
    with pytest.raises(DataValidationError, match=r"id column 'record id': repeated value"):
        validate(frame, messy_clinical_spec())


def test_custom_na_tokens_replace_the_defaults():
    frame = messy_clinical_frame(40, seed=2).astype(object)
    frame = frame.where(frame.notna(), "-999")
    ds = dataclasses.replace(messy_clinical_spec(), na_values=("-999",))
    clean = validate(frame, ds)
    assert clean["BL.Cig.Day"].isna().any()


def test_csv_with_semicolons_decimal_commas_and_latin1(tmp_path):
    raw = tmp_path / "data/raw/t/t.csv"
    raw.parent.mkdir(parents=True)
    raw.write_bytes("pid;âge;poids;y\n1;40;70,5;1,25\n2;51;;2,5\n3;62;80,25;\n".encode("latin-1"))
    ds = parse_dataset({
        "name": "t", "source": {"format": "csv", "path": "data/raw/t/t.csv", "delimiter": ";",
                                "decimal": ",", "encoding": "latin-1"},
        "target": "y", "target_unit": "u", "id": "pid",
        "columns": {"âge": {"type": "int"}, "poids": {"type": "float", "missing": True},
                    "y": {"type": "float"}},
    }, "t.yaml")
    clean = validate(load_raw(ds, tmp_path), ds)
    assert clean["poids"].tolist()[0] == 70.5 and np.isnan(clean["poids"].tolist()[1])
    assert clean["y"].tolist()[:2] == [1.25, 2.5]
    assert drop_missing_target(clean, ds)[1] == 1


def _latin1_table(tmp_path, text="a,y\n\xe9,1\n", encoding="latin-1"):
    raw = tmp_path / "data/raw/t/t.csv"
    raw.parent.mkdir(parents=True)
    raw.write_bytes(text.encode(encoding))
    return {"name": "t", "source": {"format": "csv", "path": "data/raw/t/t.csv"},
            "target": "y", "target_unit": "u",
            "columns": {"a": {"type": "category", "categories": ["é"]}, "y": {"type": "float"}}}


def test_wrong_encoding_names_the_conf_key_that_fixes_it_and_the_fix_reads_it(tmp_path):
    conf = _latin1_table(tmp_path)
    ds = parse_dataset(conf, "t.yaml")
    with pytest.raises(DataValidationError) as err:
        validate(load_raw(ds, tmp_path), ds)
    assert str(err.value) == (
        "data/raw/t/t.csv: not utf-8 text (byte 0xe9: invalid continuation byte); set "
        "`encoding: latin-1` under `source:` in conf/dataset/t.yaml (or the file's own "
        "encoding, if you know it)")
    conf["source"]["encoding"] = "latin-1"
    fixed = parse_dataset(conf, "t.yaml")
    assert validate(load_raw(fixed, tmp_path), fixed)["a"].tolist() == ["é"]


def test_windows_quotes_suggest_cp1252_and_a_byte_order_mark_utf16(tmp_path):
    ds = parse_dataset(_latin1_table(tmp_path, "a,y\n\u201cé\u201d,1\n", "cp1252"), "t.yaml")
    with pytest.raises(DataValidationError, match=r"set `encoding: cp1252` under `source:`"):
        load_raw(ds, tmp_path)
    (tmp_path / "data/raw/t/t.csv").write_bytes("a,y\né,1\n".encode("utf-16"))
    with pytest.raises(DataValidationError, match=r"set `encoding: utf-16` under `source:`"):
        load_raw(ds, tmp_path)


def test_decimal_commas_read_with_a_point_name_the_conf_key(tmp_path):
    ds = parse_dataset({"name": "t", "source": {"format": "csv", "path": "data/raw/t/t.csv",
                                                "delimiter": ";"},
                        "target": "y", "target_unit": "u",
                        "columns": {"w": {"type": "float"}, "y": {"type": "float"}}}, "t.yaml")
    frame = pd.DataFrame({"w": ["70,5", "81,25", "66"], "y": ["1", "2", "3"]})
    with pytest.raises(DataValidationError, match=r"column 'w': not a number \(\['70,5', '81,25'\]\) "
                       r"in rows 1, 2 \(a decimal comma: set `decimal: \",\"` under `source:` in "
                       r"conf/dataset/t.yaml\)"):
        validate(frame, ds)


def test_review_markers_are_named_by_their_dotted_keys():
    ds = parse_dataset({"name": "t", "source": {"format": "csv", "path": "data/raw/t/t.csv"},
                        "target": "y", "target_unit": "REVIEW: unit of the target",
                        "description": "from the ward; REVIEW the dates",
                        "columns": {"a.b": {"type": "float", "unit": "REVIEW: unit"},
                                    "c": {"type": "category", "categories": ["x", "y"]},
                                    "y": {"type": "float", "unit": "mmol/l"}}}, "t.yaml")
    assert review_markers(ds) == ["target_unit", "columns.a.b.unit", "description"]
    assert review_markers(dataclasses.replace(ds, target_unit="mg", description=None,
                                              columns={"y": ds.columns["y"]})) == []


def test_parquet_source_reads_only_the_used_columns(tmp_path):
    frame = messy_clinical_frame(80, seed=5)
    path = tmp_path / "data/raw/trial/trial.parquet"
    path.parent.mkdir(parents=True)
    frame.to_parquet(path)
    ds = dataclasses.replace(messy_clinical_spec(),
                             source=SourceConfig("parquet", "data/raw/trial/trial.parquet"))
    raw = load_raw(ds, tmp_path)
    assert set(raw.frame.columns) == set(ds.used)
    assert set(raw.header) == set(frame.columns)
    clean = validate(raw, ds)
    assert clean["BL.Cig.Day"].isna().sum() == frame["BL.Cig.Day"].isna().sum()


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"source": {"format": "csv", "path": "elsewhere/t.csv"}}, r"source.path: 'elsewhere/t.csv' is not in data/raw/t/"),
        ({"id": "y"}, r"id: 'y' is also listed under columns"),
        ({"ignore": ["a"]}, r"ignore: \['a'\] also used"),
        ({"columns": {"a": {"type": "category", "categories": ["(missing)"]}, "y": {"type": "float"}}},
         r"'\(missing\)' is reserved"),
        ({"columns": {"a": {"type": "float"}, "y": {"type": "category", "categories": ["p"]}}},
         r"the target must be a number"),
        ({"columns": {"a": {"type": "category", "categories": ["No", " Yes"]}, "y": {"type": "float"}}},
         r"columns.a: category ' Yes' is padded with spaces; write 'Yes'"),
    ],
)
def test_dataset_description_errors_name_the_key(change, message):
    base = {"name": "t", "source": {"format": "csv", "path": "data/raw/t/t.csv"}, "target": "y",
            "target_unit": "u", "columns": {"a": {"type": "float"}, "y": {"type": "float"}}}
    with pytest.raises(ConfigError, match=message):
        parse_dataset({**base, **change}, "conf/dataset/t.yaml")


def test_categories_given_as_numbers_in_yaml_are_text():
    ds = parse_dataset({"name": "t", "source": {"format": "csv", "path": "data/raw/t/t.csv"},
                        "target": "y", "target_unit": "u",
                        "columns": {"sex": {"type": "category", "categories": [1, 2]},
                                    "y": {"type": "float"}}}, "t.yaml")
    assert ds.columns["sex"].categories == ("1", "2")
    clean = validate(pd.DataFrame({"sex": ["1", " 2"], "y": ["3", "4"]}), ds)
    assert clean["sex"].tolist() == ["1", "2"]


def test_a_table_added_under_another_name_is_said_with_what_to_do(tmp_path):
    """`make data NAME=insurance FILE=other.csv` keeps the file's name: the description still
    reads insurance.csv, so `check-source` (run by `make data`) says so and what to do."""
    import subprocess
    import sys

    from medcast.datasets.spec import source_mismatch

    conf = tmp_path / "conf" / "dataset"
    conf.mkdir(parents=True)
    (conf / "insurance.yaml").write_text(
        "name: insurance\nsource: {format: csv, path: data/raw/insurance/insurance.csv}\n")
    added = Path("data/raw/insurance/other-name.csv")
    warning = source_mismatch("insurance", added, tmp_path)
    assert warning is not None
    assert "reads data/raw/insurance/insurance.csv, not the table just added" in warning
    assert "source: {path: data/raw/insurance/other-name.csv}" in warning
    assert "named insurance.csv" in warning
    assert source_mismatch("insurance", Path("data/raw/insurance/insurance.csv"), tmp_path) is None
    assert source_mismatch("trial", added, tmp_path) is None  # no description yet: init names it
    out = subprocess.run([sys.executable, "-m", "medcast.datasets", "check-source", "insurance",
                          str(added)], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0
    assert out.stderr.startswith("warning: conf/dataset/insurance.yaml reads data/raw/insurance/"
                                 "insurance.csv, not the table just added"), out.stderr
