from __future__ import annotations

from datetime import UTC, datetime, timedelta

import sqlalchemy as sa

from medcast.monitoring import hourly, read_log


def _log_db(tmp_path, rows):
    url = f"sqlite:///{tmp_path}/log.db"
    engine = sa.create_engine(url)
    meta = sa.MetaData()
    table = sa.Table(
        "predictions", meta,
        sa.Column("id", sa.Integer, primary_key=True), sa.Column("request_id", sa.String),
        sa.Column("item", sa.Integer), sa.Column("created_at", sa.DateTime(timezone=True)),
        sa.Column("model_md5", sa.String), sa.Column("model_revision", sa.String),
        sa.Column("dataset", sa.String), sa.Column("features", sa.JSON),
        sa.Column("prediction", sa.Float), sa.Column("latency_ms", sa.Float),
    )
    meta.create_all(engine)
    with engine.begin() as conn:
        conn.execute(table.insert(), rows)
    engine.dispose()
    return url


def test_read_log_expands_features_and_filters_dataset(tmp_path):
    start = datetime(2026, 11, 22, 8, tzinfo=UTC)
    rows = [{"request_id": f"r{i}", "item": 0, "created_at": start + timedelta(minutes=20 * i),
             "model_md5": "m", "model_revision": "workspace", "dataset": "diabetes" if i < 5 else "insurance",
             "features": {"bmi": 20.0 + i, "age": 40}, "prediction": 100.0 + i, "latency_ms": 1.0 + i}
            for i in range(7)]
    url = _log_db(tmp_path, rows)
    log = read_log(url, dataset="diabetes")
    assert list(log["request_id"]) == ["r0", "r1", "r2", "r3", "r4"]
    assert list(log["bmi"]) == [20.0, 21.0, 22.0, 23.0, 24.0]
    per_hour = hourly(log)
    assert list(per_hour["predictions"]) == [3, 2]
    assert per_hour["latency_p50_ms"].iloc[0] == 2.0


def test_read_log_without_table_is_empty(tmp_path):
    assert read_log(f"sqlite:///{tmp_path}/empty.db").empty
