"""The "your own data" flow end to end, on generated clinical tables (never committed data):
a messy table (an id, ignored columns, a dotted name, 30 % missing in two numbers and one
category, padded categories, rows without a target) through `dvc repro`, the exported ONNX graph
on rows with missing values, and the service answering a patient with null where it may; and
`python -m medcast.datasets init`, its REVIEW marker replaced, `use`, then a `dvc exp run -S`
of another key that stays on the dataset."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import yaml

from devtools.factories import messy_clinical_conf, write_messy_clinical_csv
from devtools.service import running
from tests.conftest import venv_env
from tests.support.repo_copy import make_copy, run

pytestmark = pytest.mark.e2e
SMALL = {"train.candidates": "[ridge,hist_boosting,random_forest]", "cv.folds": "3",
         "tune.n_trials": "2"}


@pytest.fixture(scope="module")
def messy_repo(tmp_path_factory):
    """A study copy whose dataset is the messy trial table, built with `dvc repro`."""
    tmp = tmp_path_factory.mktemp("messy")
    repo = make_copy(tmp / "repo", **SMALL)
    frame = write_messy_clinical_csv(repo / "data/raw/trial/trial.csv", n=300, seed=7)
    (repo / "conf/dataset/trial.yaml").write_text(yaml.safe_dump(messy_clinical_conf(),
                                                                 sort_keys=False))
    run(["python", "-m", "medcast.config", "dataset=trial"], repo)
    run(["dvc", "add", "data/raw/trial/trial.csv"], repo)
    run(["git", "add", "-A"], repo)
    run(["git", "commit", "-q", "-m", "trial data"], repo)
    run(["dvc", "repro"], repo, MLFLOW_TRACKING_URI=f"sqlite:///{tmp}/mlflow.db")
    return repo, frame


@pytest.mark.xdist_group("messy_repo")
def test_repro_on_a_messy_table_reports_drops_and_traces_every_prediction(messy_repo):
    repo, frame = messy_repo
    metrics = json.loads((repo / "reports/metrics.json").read_text())
    dropped = int(frame["outcome"].isna().sum())
    assert metrics["n_dropped_missing_target"] == dropped > 0
    assert metrics["n_train"] + metrics["n_test"] == len(frame) - dropped
    assert metrics["test.r2"] > 0.5  # the imputed features still carry the signal
    schema = json.loads((repo / "data/processed/schema.json").read_text())
    assert schema["n_dropped_missing_target"] == dropped
    report = (repo / "reports/report.md").read_text()
    assert f"rows without a target dropped (never imputed): {dropped}" in report
    predictions = pd.read_csv(repo / "reports/predictions.csv")
    assert list(predictions.columns) == ["record id", "actual", "predicted", "residual", "lower",
                                         "upper"]
    assert (predictions["lower"] <= predictions["predicted"]).all()
    assert (predictions["predicted"] <= predictions["upper"]).all()
    assert set(predictions["record id"]) <= set(frame["record id"])
    assert len(predictions) == metrics["n_test"]
    card = json.loads((repo / "models/model.json").read_text())
    nullable = {f["name"] for f in card["features"] if f["nullable"]}
    assert nullable == {"BL.Cig.Day", "sbp", "Hypertension"}
    assert "up to date" in run(["dvc", "status"], repo).stdout


@pytest.mark.xdist_group("messy_repo")
def test_onnx_graph_matches_the_pipeline_on_rows_with_missing_values(messy_repo):
    import onnxruntime as ort

    from medcast.features import load_schema, read_split
    from medcast.models.io import load_model
    from medcast.onnx.runtime import onnx_inputs

    repo, _ = messy_repo
    schema = load_schema(repo / "data/processed/schema.json")
    X, _ = read_split(repo / "data/processed/test.parquet", schema)
    blank = X.head(8).copy()
    blank[["BL.Cig.Day", "sbp"]] = np.nan
    blank["Hypertension"] = None
    rows = pd.concat([X, blank], ignore_index=True)
    assert rows.isna().any(axis=1).sum() >= 8
    native = load_model(repo / "models/tuned").predict(rows)
    session = ort.InferenceSession(str(repo / "models/model.onnx"),
                                   providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == schema.names  # dots and spaces kept
    (served,) = session.run(["prediction"], onnx_inputs(rows, schema))
    np.testing.assert_allclose(served.reshape(-1), native, rtol=1e-4)


@pytest.mark.xdist_group("messy_repo")
def test_service_takes_null_for_a_nullable_feature_and_refuses_it_for_others(messy_repo, tmp_path):
    import httpx

    repo, _ = messy_repo
    env = venv_env(MEDCAST_DATABASE_URL=f"sqlite:///{tmp_path}/log.db")
    with running(env, cwd=repo, log=tmp_path / "serve.log", timeout=60) as service:
        base = service.url
        patient = {"age": 61, "BL.Cig.Day": None, "sbp": 150.5, "Hypertension": None, "sex": "F"}
        answer = httpx.post(f"{base}/predict", json=patient, timeout=5)
        assert answer.status_code == 200, answer.text
        absent = {k: v for k, v in patient.items() if k != "BL.Cig.Day"}
        assert httpx.post(f"{base}/predict", json=absent, timeout=5).json()["prediction"] == \
            answer.json()["prediction"]  # an absent nullable field is a null one
        refused = httpx.post(f"{base}/predict", json={**patient, "age": None}, timeout=5)
        assert refused.status_code == 422 and refused.json()["field"] == "age"
        missing = httpx.post(f"{base}/predict", json={k: v for k, v in patient.items()
                                                        if k != "sex"}, timeout=5)
        assert missing.status_code == 422 and missing.json()["field"] == "sex"
        batch = httpx.post(f"{base}/predict/batch", json={"instances": [patient, absent]},
                           timeout=5)
        assert batch.status_code == 200 and batch.json()["count"] == 2
        schema = httpx.get(f"{base}/schema/openapi.json", timeout=5).json()
        body = schema["paths"]["/predict"]["post"]["requestBody"]["content"]
        patient_schema = body["application/json"]["schema"]
        assert "BL.Cig.Day" in patient_schema["properties"]
        assert "BL.Cig.Day" not in patient_schema["required"]
        assert "age" in patient_schema["required"]


def test_init_review_use_then_a_run_with_another_key_stays_on_the_dataset(tmp_path):
    repo = make_copy(tmp_path / "repo", **SMALL)
    export = tmp_path / "trial_export.csv"
    frame = write_messy_clinical_csv(export, n=240, seed=11)
    out = run(["python", "-m", "medcast.datasets", "init", str(export), "--name", "trial",
               "--target", "outcome", "--id", "record id"], repo)
    assert "wrote conf/dataset/trial.yaml" in out.stdout
    assert "make data NAME=trial FILE=" in out.stdout
    drafted = yaml.safe_load((repo / "conf/dataset/trial.yaml").read_text())
    assert drafted["columns"]["BL.Cig.Day"]["missing"] is True
    assert drafted["columns"]["Hypertension"]["categories"] == ["No", "Yes"]  # stripped
    assert "visit date" in drafted["ignore"] and drafted["id"] == "record id"
    again = run(["python", "-m", "medcast.datasets", "init", str(export), "--name", "trial",
                 "--target", "outcome"], repo, check=False)
    assert again.returncode == 2 and "refusing to overwrite" in again.stderr

    # The README's review: the one value init cannot know (preprocess refuses its marker).
    assert "preprocess refuses the file while a value holds one (target_unit)" in out.stdout
    conf = repo / "conf/dataset/trial.yaml"
    conf.write_text(conf.read_text().replace('"REVIEW: unit of the target"', '"score"'))
    # What `make data NAME=trial FILE=…` does; `use` makes trial the dataset every run composes.
    (repo / "data/raw/trial").mkdir()
    (repo / "data/raw/trial/trial_export.csv").write_bytes(export.read_bytes())
    run(["dvc", "add", "data/raw/trial/trial_export.csv"], repo)
    used = run(["python", "-m", "medcast.datasets", "use", "trial"], repo)
    assert "conf/params/config.yaml: dataset: diabetes → trial" in used.stdout
    run(["git", "add", "-A"], repo)
    run(["git", "commit", "-q", "-m", "trial"], repo)
    # Another key only: params.yaml is recomposed from conf/params/config.yaml, now trial's.
    run(["dvc", "exp", "run", "-S", "evaluate.interval_level=0.8"], repo,
        MLFLOW_TRACKING_URI=f"sqlite:///{tmp_path}/mlflow.db")
    metrics = json.loads((repo / "reports/metrics.json").read_text())
    assert metrics["dataset.name"] == "trial" and metrics["interval.level"] == 0.8
    assert metrics["n_dropped_missing_target"] == int(frame["outcome"].isna().sum())


def test_init_names_an_unknown_column_and_a_text_target(tmp_path):
    repo = make_copy(tmp_path / "repo")
    export = tmp_path / "t.csv"
    write_messy_clinical_csv(export, n=50, seed=1)
    out = run(["python", "-m", "medcast.datasets", "init", str(export), "--name", "t",
               "--target", "outcom"], repo, check=False)
    assert out.returncode == 2
    assert "no column 'outcom' (did you mean 'outcome'?)" in out.stderr
    assert "Traceback" not in out.stderr
    out = run(["python", "-m", "medcast.datasets", "init", str(export), "--name", "t",
               "--target", "sex"], repo, check=False)
    assert out.returncode == 2 and "target 'sex' is not numeric" in out.stderr
