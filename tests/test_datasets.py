from __future__ import annotations

import numpy as np
import pytest

from devtools.factories import insurance_frame
from medcast.config import parse_params
from medcast.datasets import load_raw, validate
from medcast.errors import DataValidationError
from tests.conftest import tiny_params


@pytest.fixture(scope="module")
def insurance_ds():
    return parse_params(tiny_params("dataset=insurance")).dataset


@pytest.fixture(scope="module")
def diabetes_ds():
    return parse_params(tiny_params()).dataset


def as_text(frame):
    """The CSV loader reads every cell as text; mirror that."""
    return frame.astype(str)


def test_diabetes_loads_unscaled_in_clinical_units(diabetes_ds):
    frame = validate(load_raw(diabetes_ds), diabetes_ds)
    assert frame.shape == (442, 11)
    assert list(frame.columns) == [*diabetes_ds.features, "progression"]
    assert frame["age"].between(19, 79).all()
    assert set(frame["sex"].unique()) == {1.0, 2.0}
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
        (lambda f: f.insert(0, "patient_id", "x"), r"unexpected column\(s\) \['patient_id'\]"),
        (lambda f: f.loc.__setitem__((3, "age"), "forty"), r"column 'age': not a number \(\['forty'\]\) in row 4"),
        (lambda f: f.loc.__setitem__((2, "bmi"), ""), r"column 'bmi': missing, NaN or infinite value in row 3"),
        (lambda f: f.loc.__setitem__((5, "bmi"), "nan"), r"column 'bmi': missing, NaN or infinite value in row 6"),
        (lambda f: f.loc.__setitem__((7, "charges"), "inf"), r"column 'charges': missing, NaN or infinite value in row 8"),
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


def test_validate_numeric_frame_with_nan(diabetes_ds):
    frame = load_raw(diabetes_ds)
    frame.loc[10, "s5"] = np.nan
    with pytest.raises(DataValidationError, match=r"column 's5': missing, NaN or infinite value in row 11"):
        validate(frame, diabetes_ds)


def test_missing_csv_says_where_to_get_it(insurance_ds, tmp_path):
    with pytest.raises(DataValidationError, match="file not found.*README"):
        load_raw(insurance_ds, root=tmp_path)
