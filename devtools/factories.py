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
