from __future__ import annotations

import numpy as np
import pytest
from sklearn.base import clone

from medcast import models
from medcast.config import parse_params
from medcast.datasets import validate
from medcast.errors import ArtifactError, ConfigError
from medcast.features import infer_schema, split_xy
from medcast.models.io import load_model, save_model
from tests.conftest import tiny_params
from tests.factories import insurance_frame


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


# Fits and saves models in a fresh process: object ids, uuids, the hash seed and the clock all
# differ between two runs of it.
_SAVE_SCRIPT = """
import sys
from pathlib import Path

import skops.io as sio

from medcast import models
from medcast.config import parse_params
from medcast.datasets import validate
from medcast.features import infer_schema, split_xy
from medcast.models.io import save_model, stable_skops
from tests.conftest import tiny_params
from tests.factories import insurance_frame

out = Path(sys.argv[1])
out.mkdir(parents=True, exist_ok=True)
(out / "set.skops").write_bytes(stable_skops(sio.dumps({"s": {"alpha", "beta", "gamma", "delta"},
                                                        "b": b"raw bytes"})))
p = parse_params(tiny_params("dataset=insurance"))
frame = validate(insurance_frame(160, seed=3).astype(str), p.dataset)
schema = infer_schema(frame, p.dataset)
X, y = split_xy(frame, schema)
for name in sys.argv[2:]:
    save_model(models.build(name, p.train.models[name], schema, seed=0).fit(X, y), out / name,
               {"model": name})
"""


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
    est = models.build("gradient_boosting", p.train.models["gradient_boosting"], schema,
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
