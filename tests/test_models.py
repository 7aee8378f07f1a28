from __future__ import annotations

import numpy as np
import pytest
from sklearn.base import clone

from devtools.factories import insurance_frame
from medcast import models
from medcast.config import parse_params
from medcast.datasets import validate
from medcast.errors import ArtifactError, ConfigError
from medcast.features import infer_schema, split_xy
from medcast.models.io import load_model, save_model
from tests.conftest import tiny_params


@pytest.fixture(scope="module")
def insurance():
    p = parse_params(tiny_params("dataset=insurance"))
    frame = validate(insurance_frame(160, seed=3).astype(str), p.dataset)
    schema = infer_schema(frame, p.dataset)
    X, y = split_xy(frame, schema)
    return p, schema, X, y


@pytest.mark.parametrize("name", [n for n in models.CANDIDATES if n != "mlp"])
def test_every_sklearn_candidate_fits_and_predicts_in_target_units(insurance, name):
    p, schema, X, y = insurance
    est = models.build(name, p.train.models[name], schema, seed=0).fit(X, y)
    pred = est.predict(X)
    assert pred.shape == (len(X),)
    assert np.isfinite(pred).all()
    assert 0 < np.median(pred) < 100_000  # charges in USD, not standardised units


def test_smokers_are_predicted_to_cost_more(insurance):
    """Behaviour that must hold for any sensible medical-cost model."""
    p, schema, X, y = insurance
    est = models.build("ridge", p.train.models["ridge"], schema, seed=0).fit(X, y)
    smokers, non_smokers = X.copy(), X.copy()
    smokers["smoker"], non_smokers["smoker"] = "yes", "no"
    assert (est.predict(smokers) > est.predict(non_smokers)).all()


def test_unknown_hyperparameter_is_a_config_error(insurance):
    _, schema, _, _ = insurance
    with pytest.raises(ConfigError, match=r"train.models.ridge: .*alpah"):
        models.build("ridge", {"alpah": 1.0}, schema, seed=0)


def test_mlp_is_a_sklearn_regressor_and_deterministic(insurance):
    p, schema, X, y = insurance
    est = models.build("mlp", p.train.models["mlp"], schema, seed=7)
    twin = clone(est)
    assert twin.get_params()["model__regressor__units"] == [64, 32]
    a = est.fit(X, y).predict(X)
    b = twin.fit(X, y).predict(X)
    np.testing.assert_array_equal(a, b)
    mlp = est.named_steps["model"].regressor_
    # one-hot widens inputs (+3), and the "bmi>30" cut-off adds one
    assert mlp.first_layer_weights().shape == (X.shape[1] + 3 + 1, 64)
    assert set(mlp.history_) >= {"loss", "val_loss", "mae", "val_mae", "learning_rate"}


@pytest.mark.parametrize("name", ["spline_ridge", "gradient_boosting", "mlp"])
def test_save_and_load_round_trip_predicts_identically(insurance, tmp_path, name):
    p, schema, X, y = insurance
    est = models.build(name, p.train.models[name], schema, seed=0).fit(X, y)
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
