from __future__ import annotations

import numpy as np
import pytest
from sklearn.base import clone

from devtools.factories import insurance_frame
from medcast import models
from medcast.datasets import validate
from medcast.errors import ArtifactError, ConfigError
from medcast.features import infer_schema, split_xy
from medcast.models.io import load_model, save_model
from tests.conftest import tiny


@pytest.fixture(scope="module")
def insurance():
    p = tiny("dataset=insurance")
    frame = validate(insurance_frame(160, seed=3).astype(str), p.dataset)
    schema = infer_schema(frame, p.dataset)
    X, y = split_xy(frame, schema)
    return p, schema, X, y


@pytest.mark.parametrize("name", [n for n in models.REGISTRY if n != "mlp"])
def test_every_sklearn_candidate_fits_and_predicts_in_target_units(insurance, name):
    p, schema, X, y = insurance
    est = models.build(name, p.models[name].defaults, schema, seed=0).fit(X, y)
    pred = est.predict(X)
    assert pred.shape == (len(X),)
    assert np.isfinite(pred).all()
    assert 0 < np.median(pred) < 100_000  # charges in USD, not standardised units


def test_smokers_are_predicted_to_cost_more(insurance):
    """Behaviour that must hold for any sensible medical-cost model."""
    p, schema, X, y = insurance
    est = models.build("ridge", p.models["ridge"].defaults, schema, seed=0).fit(X, y)
    smokers, non_smokers = X.copy(), X.copy()
    smokers["smoker"], non_smokers["smoker"] = "yes", "no"
    assert (est.predict(smokers) > est.predict(non_smokers)).all()


def test_unknown_hyperparameter_is_a_config_error(insurance):
    _, schema, _, _ = insurance
    with pytest.raises(ConfigError, match=r"conf/model/ridge.yaml: .*alpah"):
        models.build("ridge", {"alpah": 1.0}, schema, seed=0)


def test_mlp_is_a_sklearn_regressor_and_deterministic(insurance):
    p, schema, X, y = insurance
    est = models.build("mlp", p.models["mlp"].defaults, schema, seed=7)
    twin = clone(est)
    assert twin.get_params()["model__regressor__units"] == [64, 32]
    a = est.fit(X, y).predict(X)
    b = twin.fit(X, y).predict(X)
    np.testing.assert_array_equal(a, b)
    mlp = est.named_steps["model"].regressor_
    # one-hot widens inputs (+3), and the "bmi>30" cut-off adds one
    assert mlp.first_layer_weights().shape == (X.shape[1] + 3 + 1, 64)
    assert set(mlp.history_) >= {"loss", "val_loss", "mae", "val_mae", "learning_rate"}


def test_mlp_steps_per_execution_changes_no_weight(insurance, monkeypatch):
    """Several train steps per compiled call (mlp.STEPS_PER_EXECUTION) is a speed-up only: the
    same steps in the same order give the same predictions as one step per call."""
    from medcast.models import mlp as mlp_module

    p, schema, X, y = insurance
    hp = {**p.models["mlp"].defaults, "epochs": 6, "batch_size": 16}  # 8 steps an epoch
    fused = models.build("mlp", hp, schema, seed=7).fit(X, y).predict(X)
    monkeypatch.setattr(mlp_module, "STEPS_PER_EXECUTION", 1)
    np.testing.assert_array_equal(models.build("mlp", hp, schema, seed=7).fit(X, y).predict(X),
                                  fused)
    monkeypatch.setattr(mlp_module, "STEPS_PER_EXECUTION", 3)  # not a divisor of 8
    np.testing.assert_array_equal(models.build("mlp", hp, schema, seed=7).fit(X, y).predict(X),
                                  fused)


def test_mlp_stops_on_its_time_budget(insurance):
    """cv.large.mlp_time_budget: a fit stops after the first epoch that ends past it."""
    p, schema, X, y = insurance
    hp = {**p.models["mlp"].defaults, "epochs": 50, "patience": 50, "time_budget": 0.0}
    mlp = models.build("mlp", hp, schema, seed=7).fit(X, y).named_steps["model"].regressor_
    assert mlp.n_epochs_ == 1


@pytest.mark.parametrize("name", ["spline_ridge", "gradient_boosting", "mlp"])
def test_save_and_load_round_trip_predicts_identically(insurance, tmp_path, name):
    p, schema, X, y = insurance
    est = models.build(name, p.models[name].defaults, schema, seed=0).fit(X, y)
    save_model(est, tmp_path, {"model": name})
    loaded = load_model(tmp_path)
    np.testing.assert_allclose(loaded.predict(X), est.predict(X), rtol=1e-6)
    assert not list(tmp_path.glob("*.pkl")) and not list(tmp_path.glob("*.joblib"))


class Sneaky:
    """Not on the allow-list: loading must refuse it before anything is constructed."""


def test_load_refuses_untrusted_types(tmp_path):
    import skops.io as sio

    sio.dump({"payload": Sneaky()}, tmp_path / "pipeline.skops")
    with pytest.raises(ArtifactError, match="untrusted types.*Sneaky"):
        load_model(tmp_path)


def test_load_refuses_garbage_file(tmp_path):
    (tmp_path / "pipeline.skops").write_bytes(b"\x80\x04not a zip")
    with pytest.raises(ArtifactError, match="not a valid skops file"):
        load_model(tmp_path)


def test_every_model_record_has_its_conf_file_and_back():
    from medcast.config import load_models
    from tests.conftest import ROOT

    models.check_configs(list(load_models(ROOT)))  # raises on any difference
    with pytest.raises(ConfigError, match=r"files without a model \['rigde'\]"):
        models.check_configs([*models.REGISTRY, "rigde"])


@pytest.fixture(scope="module")
def messy():
    from devtools.factories import messy_clinical_frame, messy_clinical_spec
    from medcast.features import infer_schema, split_xy

    ds = messy_clinical_spec()
    frame = validate(messy_clinical_frame(240, seed=2).astype(object), ds)
    frame = frame[frame["outcome"].notna()]
    schema = infer_schema(frame, ds)
    X, y = split_xy(frame, schema)
    return schema, X, y


@pytest.mark.parametrize("name", list(models.REGISTRY))
def test_every_candidate_takes_missing_values(messy, name):
    from tests.conftest import tiny_models

    schema, X, y = messy
    assert X.isna().any().sum() == 3
    est = models.build(name, tiny_models()[name].defaults, schema, seed=0).fit(X, y)
    pred = est.predict(X)
    assert np.isfinite(pred).all()
    blank = X.head(3).copy()
    blank[schema.nullable] = None
    assert np.isfinite(est.predict(blank)).all()


def test_imputation_is_learned_from_the_rows_it_is_fitted_on(messy):
    """A missing number becomes the median of the rows the pipeline was fitted on, not of the
    rows it predicts: what makes imputation inside CV folds leak-free."""
    schema, X, y = messy
    est = models.build("ridge", {}, schema, seed=0).fit(X.iloc[:150], y.iloc[:150])
    prep = est.named_steps["preprocess"]
    shifted = X.iloc[150:].copy()
    shifted["sbp"] = shifted["sbp"] + 500  # would move a median taken over these rows
    row = shifted.head(1).copy()
    row["sbp"] = None
    as_median = row.copy()
    as_median["sbp"] = float(X.iloc[:150]["sbp"].median())
    names = list(prep.get_feature_names_out())
    col = names.index("num__sbp")
    np.testing.assert_allclose(prep.transform(row)[:, col], prep.transform(as_median)[:, col])


def test_cross_validation_imputes_inside_each_fold(messy):
    """medcast's CV scores equal a by-hand CV whose imputer sees only each training fold, and
    differ from the leaky variant that imputes the whole table first."""
    from sklearn.base import clone
    from sklearn.model_selection import KFold

    from medcast.metrics import cross_validate, scores

    schema, X, y = messy
    est = models.build("ridge", {}, schema, seed=0)
    ours = [f["rmse"] for f in cross_validate(est, X, y, 4, seed=1)]
    in_fold, leaky = [], []
    leaked = X.copy()
    for name in ("BL.Cig.Day", "sbp"):
        leaked[name] = leaked[name].fillna(leaked[name].median())
    for fit, val in KFold(4, shuffle=True, random_state=1).split(X):
        model = clone(est).fit(X.iloc[fit], y.iloc[fit])
        in_fold.append(scores(y.iloc[val], model.predict(X.iloc[val]))["rmse"])
        model = clone(est).fit(leaked.iloc[fit], y.iloc[fit])
        leaky.append(scores(y.iloc[val], model.predict(leaked.iloc[val]))["rmse"])
    np.testing.assert_allclose(ours, in_fold)
    assert not np.allclose(ours, leaky)


# Fits and saves models in a fresh process: object ids, uuids, the hash seed and the clock all
# differ between two runs of it.
_SAVE_SCRIPT = """
import sys
from pathlib import Path

import skops.io as sio

from medcast import models
from medcast.datasets import validate
from medcast.features import infer_schema, split_xy
from medcast.models.io import save_model, stable_skops
from devtools.factories import insurance_frame
from tests.conftest import tiny

out = Path(sys.argv[1])
out.mkdir(parents=True, exist_ok=True)
(out / "set.skops").write_bytes(stable_skops(sio.dumps({"s": {"alpha", "beta", "gamma", "delta"},
                                                        "b": b"raw bytes"})))
p = tiny("dataset=insurance")
frame = validate(insurance_frame(160, seed=3).astype(str), p.dataset)
schema = infer_schema(frame, p.dataset)
X, y = split_xy(frame, schema)
for name in sys.argv[2:]:
    save_model(models.build(name, p.models[name].defaults, schema, seed=0).fit(X, y), out / name,
               {"model": name})
"""


@pytest.mark.slow
def test_saved_model_bytes_depend_only_on_the_model_not_on_the_process(tmp_path):
    import subprocess
    import sys
    import time

    from tests.conftest import ROOT, venv_env

    names = ["spline_ridge", "random_forest", "mlp"]
    for run, seed in (("a", "1"), ("b", "2")):
        out = subprocess.run([sys.executable, "-c", _SAVE_SCRIPT, str(tmp_path / run), *names],
                             cwd=ROOT, env=venv_env(PYTHONHASHSEED=seed, PYTHONPATH=str(ROOT)),
                             capture_output=True, text=True, timeout=300)
        assert out.returncode == 0, out.stderr
        time.sleep(2)  # a zip stores times to 2 s: the second run is saved at another time
    files = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*") if p.is_file())
    assert {str(f) for f in files} >= {"set.skops", "mlp/mlp.keras", "mlp/pipeline.skops",
                                       "random_forest/pipeline.skops"}
    for rel in files:
        assert (tmp_path / "a" / rel).read_bytes() == (tmp_path / "b" / rel).read_bytes(), rel


def test_stable_skops_renumbers_ids_keeps_shared_objects_and_loads_the_same(insurance):
    import io
    import json
    import re
    import zipfile

    import skops.io as sio

    from medcast.models.io import stable_skops

    p, schema, X, y = insurance
    est = models.build("gradient_boosting", p.models["gradient_boosting"].defaults, schema,
                       seed=0).fit(X, y)
    raw = sio.dumps(est)
    stable = stable_skops(raw)

    def ids(data: bytes) -> list[int]:
        text = zipfile.ZipFile(io.BytesIO(data)).read("schema.json").decode()
        return [int(i) for i in re.findall(r'"__id__": (\d+)', text)]

    before, after = ids(raw), ids(stable)
    assert len(after) == len(before)
    assert len(set(after)) == len(set(before))  # the same objects are shared
    assert sorted(set(after)) == list(range(1, len(set(after)) + 1))  # 0 is falsy to skops
    archive = zipfile.ZipFile(io.BytesIO(stable))
    assert archive.namelist() == sorted(archive.namelist())
    assert all(i.date_time == (1980, 1, 1, 0, 0, 0) for i in archive.infolist())
    assert all(re.fullmatch(r"\d{1,6}\.npy|schema\.json", n) for n in archive.namelist())
    assert json.loads(archive.read("schema.json"))["__class__"] == "Pipeline"
    np.testing.assert_array_equal(sio.loads(stable, trusted=sio.get_untrusted_types(data=stable))
                                  .predict(X), est.predict(X))
