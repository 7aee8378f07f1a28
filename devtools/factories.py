"""Small generated tables with the real datasets' schemas, for tests, benchmarks and the tiny
served model (nothing here reads the shared data folder)."""

from __future__ import annotations

import numpy as np
import pandas as pd


def insurance_frame(n: int = 200, seed: int = 0) -> pd.DataFrame:
    """An insurance-like table: charges rise with age, bmi and, steeply, smoking."""
    rng = np.random.default_rng(seed)
    age = rng.integers(18, 65, n)
    bmi = np.round(rng.normal(30, 6, n).clip(16, 53), 2)
    children = rng.integers(0, 6, n)
    smoker = rng.choice(["no", "yes"], n, p=[0.8, 0.2])
    charges = (
        250 * age + 300 * (bmi - 30) + 500 * children
        + np.where(smoker == "yes", 23_000, 0) + rng.normal(0, 3000, n) + 2000
    ).clip(1100, None)
    return pd.DataFrame({
        "age": age,
        "sex": rng.choice(["female", "male"], n),
        "bmi": bmi,
        "children": children,
        "smoker": smoker,
        "region": rng.choice(["northeast", "northwest", "southeast", "southwest"], n),
        "charges": np.round(charges, 3),
    })


def write_insurance_csv(path, n: int = 200, seed: int = 0) -> pd.DataFrame:
    frame = insurance_frame(n, seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    frame.to_csv(path, index=False)
    return frame


def messy_clinical_frame(n: int = 300, seed: int = 0, coded: bool = False) -> pd.DataFrame:
    """A clinical table as it comes: an id column, two columns nobody wants (free text, a date),
    a dotted column name, 30% missing in two numbers and one category, categories padded with
    spaces, and a few rows without the target. The outcome rises with age, smoking and blood
    pressure, and with hypertension. `coded`: also a trial arm `trt` coded 1/2 (10% missing; the
    outcome 8 lower in arm 2), the other columns as without it."""
    rng = np.random.default_rng(seed)
    age = rng.integers(20, 80, n)
    cig = np.round(rng.gamma(2.0, 6.0, n), 1)
    sbp = np.round(rng.normal(135, 18, n).clip(90, 200), 1)
    hyper = np.where(sbp + rng.normal(0, 10, n) > 140, " Yes", "No ")
    sex = rng.choice(["F", "M"], n)
    outcome = (0.8 * age + 0.5 * cig + 0.3 * (sbp - 135) + np.where(hyper == " Yes", 12.0, 0.0)
               + np.where(sex == "M", 3.0, 0.0) + rng.normal(0, 6, n))
    frame = pd.DataFrame({
        "record id": [f"P{i:05d}" for i in rng.permutation(n)],
        "age": age,
        "BL.Cig.Day": cig,
        "sbp": sbp,
        "Hypertension": hyper,
        "sex": sex,
        "notes": rng.choice(["seen", "phoned", "no show", ""], n),
        "visit date": pd.date_range("2024-01-01", periods=n, freq="D").strftime("%Y-%m-%d"),
        "outcome": np.round(outcome, 3),
    })
    frame["BL.Cig.Day"] = frame["BL.Cig.Day"].astype(object)
    for column in ("BL.Cig.Day", "sbp", "Hypertension"):
        frame.loc[rng.random(n) < 0.3, column] = None
    frame.loc[rng.random(n) < 0.03, "outcome"] = None
    if coded:  # drawn last: the other columns are those of the table without it
        trt = rng.choice([1, 2], n)
        frame["outcome"] = np.round(frame["outcome"] - np.where(trt == 2, 8.0, 0.0), 3)
        frame.insert(frame.columns.get_loc("outcome"), "trt", pd.Series(trt, dtype=object))
        frame.loc[rng.random(n) < 0.1, "trt"] = None  # object column: the CSV holds 1, 2 or ""
    return frame


def messy_clinical_conf(coded: bool = False) -> dict:
    """conf/dataset/trial.yaml for messy_clinical_frame written to data/raw/trial/trial.csv
    (`coded`: with its integer-coded `trt`, its categories written as YAML numbers)."""
    conf = {
        "name": "trial",
        "source": {"format": "csv", "path": "data/raw/trial/trial.csv"},
        "target": "outcome",
        "target_unit": "score",
        "id": "record id",
        "ignore": ["notes", "visit date"],
        "columns": {
            "age": {"type": "int", "min": 0, "max": 120, "unit": "years"},
            "BL.Cig.Day": {"type": "float", "min": 0, "max": 200, "unit": "cigarettes/day",
                           "missing": True},
            "sbp": {"type": "float", "min": 50, "max": 260, "unit": "mmHg", "missing": True},
            "Hypertension": {"type": "category", "categories": ["No", "Yes"], "missing": True},
            "sex": {"type": "category", "categories": ["F", "M"]},
            "outcome": {"type": "float", "min": -100, "max": 400},
        },
    }
    if coded:
        columns = conf["columns"]
        outcome = columns.pop("outcome")
        columns["trt"] = {"type": "category", "categories": [1, 2], "missing": True}
        columns["outcome"] = outcome
    return conf


def messy_clinical_spec(coded: bool = False):
    from medcast.datasets.spec import parse_dataset

    return parse_dataset(messy_clinical_conf(coded), "conf/dataset/trial.yaml", "trial")


def write_messy_clinical_csv(path, n: int = 300, seed: int = 0, coded: bool = False
                             ) -> pd.DataFrame:
    frame = messy_clinical_frame(n, seed, coded)
    path.parent.mkdir(parents=True, exist_ok=True)
    frame.to_csv(path, index=False)
    return frame


def resampled_frame(real: pd.DataFrame, n: int, seed: int = 0, jitter: float = 0.05
                    ) -> pd.DataFrame:
    """n rows of a real table resampled with replacement, each number jittered by `jitter` of
    its column's spread (kept in the column's observed range; integers stay integers), text
    columns kept: the signal and the columns of the real study at any size (the near-copies
    make CV scores optimistic above 1×)."""
    rng = np.random.default_rng(seed)
    rows = real.iloc[rng.integers(0, len(real), n)].reset_index(drop=True)
    for column in rows.columns:
        values = real[column]
        if not pd.api.types.is_numeric_dtype(values) or pd.api.types.is_bool_dtype(values):
            continue
        noise = rng.normal(0.0, jitter * float(values.std()), n)
        moved = (rows[column] + noise).clip(values.min(), values.max())
        rows[column] = (moved.round().astype(values.dtype)
                        if pd.api.types.is_integer_dtype(values) else moved.round(4))
    return rows


def diabetes_frame(n: int = 442, seed: int = 0) -> pd.DataFrame:
    """A diabetes-like table of n rows: scikit-learn's bundled 442 patients (unscaled) resampled
    with replacement, numbers jittered by 5% of each column's spread (sex kept), so the signal
    and the columns stay those of the real study."""
    from sklearn.datasets import load_diabetes

    real = load_diabetes(scaled=False, as_frame=True).frame.rename(columns={"target": "progression"})
    rng = np.random.default_rng(seed)
    rows = real.iloc[rng.integers(0, len(real), n)].reset_index(drop=True)
    for column in rows.columns:
        if column == "sex":
            continue
        noise = rng.normal(0.0, 0.05 * real[column].std(), n)
        rows[column] = (rows[column] + noise).clip(real[column].min(), real[column].max()).round(4)
    rows["sex"] = rows["sex"].astype(int).astype(str)
    return rows


def mixed_frame(n: int = 500, seed: int = 0, signal: bool = False,
                missing: float = 0.1) -> pd.DataFrame:
    """Eight mixed features (four numbers, four categories; `missing` of two numbers and one
    category blank) and a continuous `outcome`: independent of every feature (pure noise) or,
    with `signal`, a strong function of them (R² ≈ 0.8) plus noise."""
    rng = np.random.default_rng(seed)
    x = {
        "age": rng.integers(20, 90, n).astype(float),
        "weight": np.round(rng.normal(75, 12, n), 1),
        "creatinine": np.round(rng.lognormal(0, 0.3, n), 2),
        "score": np.round(rng.uniform(0, 10, n), 1),
        "sex": rng.choice(["F", "M"], n),
        "arm": rng.choice(["A", "B", "C"], n),
        "smoker": rng.choice(["no", "yes"], n, p=[0.7, 0.3]),
        "site": rng.choice([f"S{i}" for i in range(1, 6)], n),
    }
    if signal:
        effect = (0.8 * x["age"] + 0.6 * (x["weight"] - 75) + 15 * x["creatinine"]
                  + np.where(x["smoker"] == "yes", 20.0, 0.0) + np.where(x["arm"] == "B", 8.0, 0.0))
        outcome = effect + rng.normal(0, effect.std() / 2, n)  # R² ≈ 0.8
    else:
        outcome = rng.normal(100, 15, n)
    frame = pd.DataFrame({**x, "outcome": np.round(outcome, 3)})
    for column in ("weight", "creatinine", "arm"):
        frame.loc[rng.random(n) < missing, column] = None
    return frame
