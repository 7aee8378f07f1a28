from __future__ import annotations

import subprocess
import sys
import textwrap
from datetime import UTC, datetime, timedelta

import pandas as pd
import pytest

from medcast.monitoring import hourly, join_outcomes, read_log, read_outcomes, realised_coverage
from serve import db as servedb
from serve import migrate as servemigrate


def _log_db(tmp_path, rows):
    """A prediction log written as the service writes it (its migrations, its insert path)."""
    url = f"sqlite:///{tmp_path}/log.db"
    engine = servedb.make_engine(url)
    try:
        servemigrate.ensure_schema(engine)
        servedb.insert_rows(engine, rows)
    finally:
        engine.dispose()
    return url


def _rows(n, start):
    return [servedb.LogRow(request_id=f"r{i}", item=0, created_at=start + timedelta(minutes=20 * i),
                           model_md5="m", model_revision="workspace",
                           dataset="diabetes" if i < 5 else "insurance",
                           features={"bmi": 20.0 + i, "age": 40}, prediction=100.0 + i,
                           latency_ms=1.0 + i, lower=90.0 + i, upper=110.0 + i)
            for i in range(n)]


def test_read_log_expands_features_and_filters_dataset(tmp_path):
    start = datetime(2026, 11, 22, 8, tzinfo=UTC)
    url = _log_db(tmp_path, _rows(7, start))
    log = read_log(url, dataset="diabetes")
    assert list(log["request_id"]) == ["r0", "r1", "r2", "r3", "r4"]
    assert list(log["bmi"]) == [20.0, 21.0, 22.0, 23.0, 24.0]
    per_hour = hourly(log)
    assert list(per_hour["predictions"]) == [3, 2]
    assert per_hour["latency_p50_ms"].iloc[0] == 2.0


def test_read_log_has_every_column_of_the_log_table(tmp_path):
    url = _log_db(tmp_path, _rows(2, datetime(2026, 11, 22, 8, tzinfo=UTC)))
    log = read_log(url)
    columns = {c.name for c in servedb.predictions.columns} - {"features"}
    assert set(log.columns) == columns | {"bmi", "age"}
    assert str(log["created_at"].dt.tz) == "UTC"


def test_read_log_without_table_is_empty(tmp_path):
    assert read_log(f"sqlite:///{tmp_path}/empty.db").empty


def test_read_log_imports_no_web_framework(tmp_path):
    """A notebook helper: the log's table definition comes without Litestar or the service."""
    url = _log_db(tmp_path, _rows(1, datetime(2026, 11, 22, 8, tzinfo=UTC)))
    script = textwrap.dedent(f"""
        import sys
        from medcast.monitoring import read_log
        assert len(read_log({url!r})) == 1
        heavy = [m for m in ("litestar", "uvicorn", "onnxruntime", "serve.app", "prometheus_client")
                 if m in sys.modules]
        assert not heavy, heavy
        print("light")
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0 and "light" in out.stdout, out.stderr[-3000:]


def test_outcomes_join_by_request_id_and_give_realised_coverage_per_day(tmp_path):
    start = datetime(2026, 11, 22, 8, tzinfo=UTC)
    rows = _rows(4, start) + _rows(2, start + timedelta(days=1))
    for i, row in enumerate(rows[4:]):
        row.request_id = f"d2-{i}"
    url = _log_db(tmp_path, rows)
    # r0 inside, r1 outside, r2 on the upper bound, r3 no outcome; day 2: one inside
    (tmp_path / "outcomes.csv").write_text(
        "request_id,actual\nr0,100\nr1,150\nr2,112\nd2-0,95\nnot-logged,1\n")
    outcomes = read_outcomes(tmp_path / "outcomes.csv")
    joined = join_outcomes(read_log(url), outcomes)
    assert sorted(joined["request_id"]) == ["d2-0", "r0", "r1", "r2"]
    assert dict(zip(joined["request_id"], joined["covered"], strict=True)) == {
        "r0": 1.0, "r1": 0.0, "r2": 1.0, "d2-0": 1.0}
    daily = realised_coverage(joined)
    assert list(daily["outcomes"]) == [3, 1]
    assert list(daily["coverage"]) == pytest.approx([2 / 3, 1.0])
    assert list(daily["mean_width"]) == pytest.approx([20.0, 20.0])


def test_outcomes_file_without_its_columns_is_refused(tmp_path):
    path = tmp_path / "outcomes.csv"
    pd.DataFrame({"id": ["r0"], "actual": [1.0]}).to_csv(path, index=False)
    with pytest.raises(ValueError, match=r"missing \['request_id'\]"):
        read_outcomes(path)


def test_served_card_is_the_logged_models_never_another(tmp_path, monkeypatch):
    """Notebook 03's interval level comes from the card of the model the log names (its md5
    and revision): the workspace's card only when it is that model's, else the card at the
    logged revision; no card at all rather than another model's."""
    import json

    from medcast import monitoring

    start = datetime(2026, 1, 1, tzinfo=UTC)
    log = read_log(_log_db(tmp_path, _rows(3, start)))
    card_path = "models/model.json"
    (tmp_path / "models").mkdir()
    (tmp_path / card_path).write_text(json.dumps({"onnx_md5": "m", "interval": {"level": 0.9}}))
    card, where = monitoring.served_card(log, card_path, str(tmp_path))
    assert card["interval"]["level"] == 0.9 and "from the workspace" in where

    (tmp_path / card_path).write_text(json.dumps({"onnx_md5": "other", "interval": {"level": 0.8}}))
    card, where = monitoring.served_card(log, card_path, str(tmp_path))
    assert card == {} and "no card of the served model m (workspace)" in where
    assert "its card is of model other" in where

    log.loc[:, "model_revision"] = "v1.0"  # served with MEDCAST_MODEL_REV=v1.0
    asked = []

    def card_at(path, revision, repo):
        asked.append((path, revision))
        return json.dumps({"onnx_md5": "m", "interval": {"level": 0.95}}).encode()

    monkeypatch.setattr(monitoring, "_card_at", card_at)
    card, where = monitoring.served_card(log, card_path, str(tmp_path))
    assert card["interval"]["level"] == 0.95 and "from revision v1.0" in where
    assert asked == [(card_path, "v1.0")]
    assert monitoring.served_card(log.iloc[:0], card_path, str(tmp_path)) == ({}, "nothing logged yet")


def _explained_log(tmp_path):
    """Four logged predictions: two explained by model m, one not explained, one explained by
    another model; written through the service's insert path."""
    from serve.answers import LoggedExplanation

    start = datetime(2026, 12, 1, 8, tzinfo=UTC)
    rows = _rows(4, start)
    explained = {0: ("m", {"bmi": 10.0, "age": -2.0}), 1: ("m", {"bmi": 20.0, "age": 4.0}),
                 3: ("other", {"bmi": 99.0, "age": 99.0})}
    for i, (md5, contributions) in explained.items():
        rows[i].model_md5 = md5
        rows[i].explanation = LoggedExplanation(base_value=100.0, contributions=contributions,
                                                method="exact", margin=None)
        rows[i].prediction = 100.0 + sum(contributions.values())
    return read_log(_log_db(tmp_path, rows))


def test_logged_contributions_are_the_kept_explanations_of_one_model(tmp_path):
    from medcast.monitoring import logged_contributions

    log = _explained_log(tmp_path)
    table = logged_contributions(log, model_md5="m")
    assert list(table.columns) == ["bmi", "age", "base_value", "prediction"]
    assert table.to_dict("list") == {"bmi": [10.0, 20.0], "age": [-2.0, 4.0],
                                     "base_value": [100.0, 100.0], "prediction": [108.0, 124.0]}
    assert len(logged_contributions(log)) == 3  # every model's
    nothing = logged_contributions(log.assign(explanation=None))
    assert nothing.empty and logged_contributions(pd.DataFrame()).empty


def test_contribution_drift_is_served_minus_test_mean_per_feature_largest_first(tmp_path):
    from medcast.monitoring import contribution_drift, logged_contributions

    served = logged_contributions(_explained_log(tmp_path), model_md5="m")
    # as reports/explanations.csv: contributions, base_value, prediction, value:<feature>
    reference = pd.DataFrame({"age": [1.0, 3.0, 2.0], "bmi": [14.0, 16.0, 15.0],
                              "base_value": [100.0] * 3, "prediction": [115.0, 119.0, 117.0],
                              "value:age": [40, 50, 60], "value:bmi": [20.0, 25.0, 30.0]})
    drift = contribution_drift(served, reference)
    assert list(drift.columns) == ["feature", "served", "test", "difference"]
    assert drift["feature"].tolist() == ["age", "bmi"]  # |−1| > |0|
    assert drift.set_index("feature")["served"].to_dict() == {"age": 1.0, "bmi": 15.0}
    assert drift.set_index("feature")["test"].to_dict() == {"age": 2.0, "bmi": 15.0}
    assert drift.set_index("feature")["difference"].to_dict() == {"age": -1.0, "bmi": 0.0}
    # one model, one base value: the shift of the mean prediction is the sum of the differences
    shift = served["prediction"].mean() - reference["prediction"].mean()
    assert drift["difference"].sum() == pytest.approx(shift)


def test_contribution_drift_refuses_what_it_cannot_compare():
    from medcast.monitoring import contribution_drift

    reference = pd.DataFrame({"age": [1.0], "bmi": [2.0], "base_value": [0.0],
                              "prediction": [3.0]})
    with pytest.raises(ValueError, match="the log kept none"):
        contribution_drift(pd.DataFrame(columns=["age", "bmi"]), reference)
    with pytest.raises(ValueError, match=r"lack the reference's features \['bmi'\]"):
        contribution_drift(pd.DataFrame({"age": [1.0]}), reference)
    with pytest.raises(ValueError, match="no rows or no feature columns"):
        contribution_drift(pd.DataFrame({"age": [1.0]}), reference.iloc[:0])
