"""Input drift between the training data and what the service saw: PSI per feature (binned on
training quantiles; categories as their own bins, a missing category as one more), the
two-sample KS test for numbers (on the values present), and the missing rate per feature."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from medcast.datasets.spec import MISSING_LEVEL
from medcast.features import FeatureSchema

# Conventional PSI reading: < 0.1 stable, 0.1–0.25 moderate shift, > 0.25 major shift.
PSI_MODERATE = 0.1
PSI_MAJOR = 0.25
_EPS = 1e-4  # floor for empty bins so log() stays finite


def _psi_from_shares(expected: np.ndarray, actual: np.ndarray) -> float:
    e = np.clip(expected, _EPS, None)
    a = np.clip(actual, _EPS, None)
    return float(np.sum((a - e) * np.log(a / e)))


def psi_numeric(expected: Any, actual: Any, bins: int = 10) -> float:
    """Population stability index with bin edges at the expected sample's quantiles."""
    exp = np.asarray(expected, dtype=float)
    act = np.asarray(actual, dtype=float)
    if len(exp) == 0 or len(act) == 0:
        raise ValueError("psi needs two non-empty samples")
    edges = np.unique(np.quantile(exp, np.linspace(0, 1, bins + 1)[1:-1]))
    e_counts = np.bincount(np.searchsorted(edges, exp, side="right"), minlength=len(edges) + 1)
    a_counts = np.bincount(np.searchsorted(edges, act, side="right"), minlength=len(edges) + 1)
    return _psi_from_shares(e_counts / len(exp), a_counts / len(act))


def psi_categorical(expected: Any, actual: Any) -> float:
    exp = pd.Series(expected, dtype=object).fillna(MISSING_LEVEL).astype(str)
    act = pd.Series(actual, dtype=object).fillna(MISSING_LEVEL).astype(str)
    levels = sorted(set(exp) | set(act))
    e = exp.value_counts(normalize=True).reindex(levels, fill_value=0).to_numpy()
    a = act.value_counts(normalize=True).reindex(levels, fill_value=0).to_numpy()
    return _psi_from_shares(e, a)


def level(psi: float) -> str:
    if psi >= PSI_MAJOR:
        return "major"
    return "moderate" if psi >= PSI_MODERATE else "stable"


def drift_table(train: pd.DataFrame, served: pd.DataFrame, schema: FeatureSchema) -> pd.DataFrame:
    """One row per feature: PSI, its reading, and for numbers the KS statistic and p-value."""
    from scipy.stats import ks_2samp

    rows = []
    for f in schema.features:
        if f.type == "category":
            psi = psi_categorical(train[f.name], served[f.name])
            ks_stat, ks_p = float("nan"), float("nan")
        else:
            seen = pd.to_numeric(train[f.name], errors="coerce").dropna()
            now = pd.to_numeric(served[f.name], errors="coerce").dropna()
            if seen.empty or now.empty:  # all missing on one side: nothing to compare
                psi, ks_stat, ks_p = float("nan"), float("nan"), float("nan")
                rows.append({"feature": f.name, "psi": psi, "drift": "n/a",
                             "ks_statistic": ks_stat, "ks_pvalue": ks_p,
                             "n_train": len(train), "n_served": len(served)})
                continue
            psi = psi_numeric(seen, now)
            ks = ks_2samp(seen, now)
            ks_stat, ks_p = float(ks.statistic), float(ks.pvalue)
        rows.append({"feature": f.name, "psi": psi, "drift": level(psi),
                     "ks_statistic": ks_stat, "ks_pvalue": ks_p,
                     "n_train": len(train), "n_served": len(served)})
    return pd.DataFrame(rows)


def missing_rates(train: pd.DataFrame, served: pd.DataFrame, schema: FeatureSchema) -> pd.DataFrame:
    """Per feature: the share of missing values in training and in served requests (a field
    sent as null or left out), and whether the feature may be missing at all."""
    rows = []
    for f in schema.features:
        served_col = served[f.name] if f.name in served.columns else pd.Series([None] * len(served))
        rows.append({
            "feature": f.name,
            "nullable": f.nullable,
            "missing_train": float(train[f.name].isna().mean()) if len(train) else float("nan"),
            "missing_served": float(served_col.isna().mean()) if len(served) else float("nan"),
        })
    table = pd.DataFrame(rows)
    table["change"] = table["missing_served"] - table["missing_train"]
    return table
