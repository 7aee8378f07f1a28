"""The "your own data" flow end to end, on generated clinical tables (never committed data):
a messy table (an id, ignored columns, a dotted name, 30 % missing in two numbers and one
category, padded categories, rows without a target) through `dvc repro`, the exported ONNX graph
on rows with missing values, and the service answering a patient with null where it may; and
a researcher's second day on a table kept outside the repository (`init`, `make data`, `use`, the
REVIEW marker refused then reviewed, a run with another key that stays on the dataset, a failed
run rolled back)."""

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
                                         "upper", "boot_low", "boot_high"]
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


@pytest.fixture(scope="module")
def second_day(tmp_path_factory):
    """The README's flow on a table kept outside the repository: init, `make data`, `use`,
    commit; a run refused for the draft's REVIEW marker; the marker reviewed; a run with
    another key (-S evaluate.interval_level=0.8), adopted (committed)."""
    tmp = tmp_path_factory.mktemp("second_day")
    repo = make_copy(tmp / "repo", **SMALL)
    export = tmp / "trial_export.csv"
    frame = write_messy_clinical_csv(export, n=240, seed=11)
    mlflow = {"MLFLOW_TRACKING_URI": f"sqlite:///{tmp}/mlflow.db"}
    steps = {"init": run(["python", "-m", "medcast.datasets", "init", str(export), "--name",
                          "trial", "--target", "outcome", "--id", "record id"], repo)}
    steps["again"] = run(["python", "-m", "medcast.datasets", "init", str(export), "--name",
                          "trial", "--target", "outcome"], repo, check=False)
    # What `make data NAME=trial FILE=…` does; then the dataset every run composes.
    (repo / "data/raw/trial").mkdir()
    (repo / "data/raw/trial/trial_export.csv").write_bytes(export.read_bytes())
    run(["dvc", "add", "data/raw/trial/trial_export.csv"], repo)
    steps["use"] = run(["python", "-m", "medcast.datasets", "use", "trial"], repo)
    run(["git", "add", "-A"], repo)
    run(["git", "commit", "-q", "-m", "Dataset trial"], repo)
    steps["unreviewed"] = run(["dvc", "exp", "run"], repo, check=False, **mlflow)
    conf = repo / "conf/dataset/trial.yaml"
    conf.write_text(conf.read_text().replace('"REVIEW: unit of the target"', '"score"'))
    run(["git", "commit", "-q", "-am", "Review trial"], repo)
    steps["run"] = run(["dvc", "exp", "run", "-S", "evaluate.interval_level=0.8"], repo, **mlflow)
    run(["git", "add", "-A"], repo)
    run(["git", "commit", "-q", "-m", "Adopt the run"], repo)
    return repo, frame, steps


@pytest.mark.xdist_group("second_day")
def test_init_drafts_the_messy_table_and_refuses_to_overwrite_it(second_day):
    repo, _, steps = second_day
    assert "make data NAME=trial FILE=" in steps["init"].stdout
    assert "then: python -m medcast.datasets use trial" in steps["init"].stdout
    drafted = yaml.safe_load((repo / "conf/dataset/trial.yaml").read_text())
    assert drafted["columns"]["BL.Cig.Day"]["missing"] is True
    assert drafted["columns"]["Hypertension"]["categories"] == ["No", "Yes"]  # stripped
    assert "visit date" in drafted["ignore"] and drafted["id"] == "record id"
    assert steps["again"].returncode == 2 and "refusing to overwrite" in steps["again"].stderr


@pytest.mark.xdist_group("second_day")
def test_an_unreviewed_draft_is_refused_and_the_reviewed_unit_is_served(second_day):
    repo, _, steps = second_day
    assert steps["unreviewed"].returncode != 0
    assert ("error: conf/dataset/trial.yaml: REVIEW markers left in target_unit: replace each "
            "with the real value (then commit the file), or run anyway with `dvc exp run -S "
            "preprocess.allow_review=true`") in steps["unreviewed"].stderr
    card = json.loads((repo / "models/model.json").read_text())
    assert card["target_unit"] == "score"
    assert "REVIEW" not in (repo / "reports/report.md").read_text()


@pytest.mark.xdist_group("second_day")
def test_a_used_dataset_stays_chosen_when_a_run_sets_another_key(second_day):
    repo, frame, steps = second_day
    assert "conf/params/config.yaml: dataset: diabetes → trial" in steps["use"].stdout
    metrics = json.loads((repo / "reports/metrics.json").read_text())
    assert metrics["dataset.name"] == "trial" and metrics["interval.level"] == 0.8
    assert metrics["n_dropped_missing_target"] == int(frame["outcome"].isna().sum())
    assert "since the last preprocess run" not in steps["run"].stderr


@pytest.mark.xdist_group("second_day")
def test_a_failed_exp_run_is_rolled_back_to_clean_dvc_and_git_status(second_day):
    repo, _, _ = second_day
    failed = run(["dvc", "exp", "run", "-S", "dataset=insurance"], repo, check=False)
    assert "data/raw/insurance/insurance.csv: file not found" in failed.stderr
    assert ("dataset: trial → insurance since the last preprocess run (dvc.lock); every `dvc "
            "exp run -S …` composes conf/params/config.yaml's dataset (trial): `python -m "
            "medcast.datasets use insurance` keeps insurance") in failed.stderr
    assert "deleted" in run(["dvc", "status"], repo).stdout
    out = run(["python", "-m", "medcast.workspace", "rollback"], repo)
    assert out.stdout.splitlines()[0] == "restored from HEAD: params.yaml"
    assert out.stdout.splitlines()[-1] == "dvc status: up to date; git status: clean"
    assert "up to date" in run(["dvc", "status"], repo).stdout
    assert run(["git", "status", "--porcelain"], repo).stdout == ""
    assert yaml.safe_load((repo / "params.yaml").read_text())["dataset"] == "trial"


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
