"""Read the service's prediction log (any SQLAlchemy URL) as a DataFrame with one column per
input feature, for monitoring notebooks: volume, latency and drift against the training data;
join true outcomes, once known, to it by request id and measure the realised coverage of the
served prediction intervals over time; compare the mean contribution per feature of the served
patients' logged explanations (MEDCAST_LOG_EXPLANATIONS) with the test set's
(reports/explanations.csv).
The log's table and URL rule come from medcast.predlog (SQLAlchemy only): the lab never imports
the service, so a pipeline-only install reads the log."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pandas as pd

OUTCOMES_ENV = "MEDCAST_OUTCOMES"  # where notebook 03 looks for the outcomes file


def log_url(repo: Path | None = None) -> str:
    """The service's log as the service finds it (medcast.predlog.log_url): MEDCAST_DATABASE_URL,
    or the file MEDCAST_DATABASE_URL_FILE names, else sqlite:///<repo>/serve.db."""
    from medcast.predlog import log_url as url_of
    from medcast.tracking import repo_root

    return url_of(repo or repo_root())


def read_log(url: str, dataset: str | None = None, limit: int = 200_000) -> pd.DataFrame:
    """The latest `limit` logged predictions (oldest first), features expanded into columns."""
    import sqlalchemy as sa

    from medcast.predlog import predictions as table

    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            if not sa.inspect(conn).has_table(table.name):
                return pd.DataFrame()
            query = sa.select(table)
            if dataset is not None:
                query = query.where(table.c.dataset == dataset)
            query = query.order_by(table.c.id.desc()).limit(limit)
            frame = pd.DataFrame(conn.execute(query).mappings().all())
    finally:
        engine.dispose()
    if frame.empty:
        return frame
    frame = frame.iloc[::-1].reset_index(drop=True)
    frame["created_at"] = pd.to_datetime(frame["created_at"], utc=True)
    features = pd.DataFrame([_as_dict(f) for f in frame.pop("features")])
    return pd.concat([frame, features], axis=1)


def served_card(log: pd.DataFrame, card_path: str, repo: str = ".") -> tuple[dict[str, Any], str]:
    """The model card of the model that answered the latest logged prediction, and where it
    was read: the service may serve another model than the workspace's (MEDCAST_MODEL_REV, a
    registered version), and the card's interval level is the served one's. The log names the
    model by its graph's md5 and revision (the service's `model_revision`):
    - the workspace's card, if its `onnx_md5` is the logged md5;
    - else the card at the logged git revision (DVC, md5-verified: medcast.artifacts);
    - else, for `models:/<name>/<version>`, the card the registered version serves (MLflow).
    ({}, reason) when none of these is the served model's card (never another model's)."""
    if log.empty:
        return {}, "nothing logged yet"
    latest = log.iloc[-1]
    md5, revision = str(latest["model_md5"]), str(latest["model_revision"])
    shown = f"model {md5} ({revision})"
    candidates: list[tuple[str, Any]] = [("the workspace", lambda: Path(repo, card_path).read_bytes())]
    if revision.startswith("models:/"):
        candidates.append((revision, lambda: _registered_card(revision, repo)))
    elif revision != "workspace":
        candidates.append((f"revision {revision}", lambda: _card_at(card_path, revision, repo)))
    reasons = []
    for where, read in candidates:
        try:
            card = json.loads(read())
        except Exception as exc:  # noqa: BLE001 - the next place, or the reasons say why
            reasons.append(f"{where}: {type(exc).__name__}: {str(exc).splitlines()[0][:200]}")
            continue
        if card.get("onnx_md5") == md5:
            return card, f"the card of {shown}, from {where}"
        reasons.append(f"{where}: its card is of model {card.get('onnx_md5')}")
    return {}, f"no card of the served {shown} found ({'; '.join(reasons)})"


def _card_at(card_path: str, revision: str, repo: str) -> bytes:
    from medcast.artifacts import read_verified

    return read_verified(card_path, rev=revision, repo=repo)


def _registered_card(uri: str, repo: str) -> bytes:
    """The card a registered version serves (models:/<name>/<version>; its run's served files)."""
    import tempfile

    from mlflow import MlflowClient

    from medcast.registry import SERVING_DIR
    from medcast.tracking import tracking_uri

    name, _, version = uri.removeprefix("models:/").rpartition("/")
    client = MlflowClient(tracking_uri(Path(repo).resolve()))  # as the export registered it
    run_id = client.get_model_version(name, version).run_id
    with tempfile.TemporaryDirectory(prefix="medcast-card-") as folder:
        return Path(client.download_artifacts(run_id, f"{SERVING_DIR}/model.json",
                                              folder)).read_bytes()


def _as_dict(value: Any) -> dict[str, Any]:
    return json.loads(value) if isinstance(value, str | bytes) else dict(value)


def hourly(log: pd.DataFrame) -> pd.DataFrame:
    """Predictions per hour with median and 99th-percentile latency."""
    grouped = log.set_index("created_at").resample("1h")
    return pd.DataFrame({
        "predictions": grouped["prediction"].count(),
        "latency_p50_ms": grouped["latency_ms"].median(),
        "latency_p99_ms": grouped["latency_ms"].quantile(0.99),
    })


def read_outcomes(path: str | os.PathLike[str]) -> pd.DataFrame:
    """True outcomes of served predictions, from a CSV or Parquet file with columns

    * `request_id` — the id the service answered with (`X-Request-ID`, `request_id`);
    * `item` — optional: the row of a batch request (0-based; 0 for `POST /predict`);
    * `actual` — the observed value, in the target's units.

    Other columns are kept. Raises ValueError naming what is missing."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no outcomes file")
    frame = pd.read_parquet(path) if path.suffix == ".parquet" else pd.read_csv(path)
    missing = [c for c in ("request_id", "actual") if c not in frame.columns]
    if missing:
        raise ValueError(f"{path}: outcomes need columns request_id and actual; missing {missing}")
    if "item" not in frame.columns:
        frame["item"] = 0
    frame["request_id"] = frame["request_id"].astype(str)
    frame["item"] = frame["item"].astype(int)
    frame["actual"] = pd.to_numeric(frame["actual"], errors="raise").astype(float)
    return frame


def join_outcomes(log: pd.DataFrame, outcomes: pd.DataFrame) -> pd.DataFrame:
    """Logged predictions that have an outcome (inner join on request_id and item), with
    `covered`: whether the outcome fell inside the served interval [lower, upper] (NaN where
    the model served none)."""
    keep = [c for c in outcomes.columns if c not in log.columns or c in ("request_id", "item")]
    joined = log.merge(outcomes[keep], on=["request_id", "item"], how="inner")
    has_interval = joined["lower"].notna() & joined["upper"].notna()
    inside = (joined["lower"] <= joined["actual"]) & (joined["actual"] <= joined["upper"])
    joined["covered"] = inside.astype(float).where(has_interval)
    return joined


def realised_coverage(joined: pd.DataFrame, freq: str = "1D") -> pd.DataFrame:
    """Per period of `freq` (by prediction time): outcomes known, share inside the served
    interval, and mean interval width."""
    rows = joined[joined["covered"].notna()].set_index("created_at")
    grouped = rows.resample(freq)
    return pd.DataFrame({
        "outcomes": grouped["covered"].count(),
        "coverage": grouped["covered"].mean(),
        "mean_width": (rows["upper"] - rows["lower"]).resample(freq).mean(),
    })


# Columns of an explanations table that are no feature's contribution (reports/explanations.csv
# also holds the explained rows' values as `value:<feature>`).
NOT_CONTRIBUTIONS = ("base_value", "prediction")
VALUE_PREFIX = "value:"


def logged_contributions(log: pd.DataFrame, model_md5: str | None = None) -> pd.DataFrame:
    """The logged explanations as a table shaped like reports/explanations.csv: one row per
    logged prediction that kept its explanation (optionally only the model `model_md5`'s),
    one column per feature holding its contribution, then base_value and prediction. Empty
    (no rows) when none was kept: MEDCAST_LOG_EXPLANATIONS was off or nobody asked
    ?explain=true."""
    if log.empty or "explanation" not in log.columns:
        return pd.DataFrame(columns=list(NOT_CONTRIBUTIONS))
    rows = log[log["explanation"].notna()]
    if model_md5 is not None:
        rows = rows[rows["model_md5"] == model_md5]
    if rows.empty:
        return pd.DataFrame(columns=list(NOT_CONTRIBUTIONS))
    explanations = [_as_dict(e) for e in rows["explanation"]]
    table = pd.DataFrame([e["contributions"] for e in explanations], dtype="float64")
    table["base_value"] = [float(e["base_value"]) for e in explanations]
    table["prediction"] = rows["prediction"].astype(float).to_numpy()
    return table


def contribution_columns(table: pd.DataFrame) -> list[str]:
    """The features of an explanations table: every column but base_value, prediction and the
    `value:<feature>` columns."""
    return [c for c in table.columns
            if c not in NOT_CONTRIBUTIONS and not str(c).startswith(VALUE_PREFIX)]


def contribution_drift(logged: pd.DataFrame, reference: pd.DataFrame) -> pd.DataFrame:
    """Per feature of `reference` (the test set's explanations, reports/explanations.csv), its
    mean contribution over the served patients (`logged`, e.g. logged_contributions(log)) and
    over the test patients, and the difference served − test (target units), largest
    |difference| first; with the base values, a shift of the mean prediction splits exactly
    into these differences. ValueError when either table is empty or `logged` lacks one of
    the reference's features."""
    features = contribution_columns(reference)
    if not features or reference.empty:
        raise ValueError("the reference explanations have no rows or no feature columns")
    if logged.empty:
        raise ValueError("no served explanation to compare: the log kept none")
    absent = [f for f in features if f not in logged.columns]
    if absent:
        raise ValueError(f"the logged explanations lack the reference's features {absent}: "
                         "another model's? compare explanations of one model")
    served = logged[features].astype(float).mean()
    test = reference[features].astype(float).mean()
    table = pd.DataFrame({"feature": features, "served": served.to_numpy(),
                          "test": test.to_numpy()})
    table["difference"] = table["served"] - table["test"]
    order = table["difference"].abs().sort_values(ascending=False, kind="stable").index
    return table.loc[order].reset_index(drop=True)
