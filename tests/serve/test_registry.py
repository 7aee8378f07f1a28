"""Serving a registered version (MEDCAST_MODEL_URI, serve/registry.py), against a real MLflow
SQLite store in a temporary folder (tests/support/registry.py; fixtures in tests/serve/conftest.py).

The service loads `models:/…@champion` and `models:/…/1` with no model files in its repository;
refuses a tampered file, an untagged version, an unknown alias, a missing store, a missing
MLflow, each saying why; `--check` exits 1 with one line; MODEL_URI and MODEL_REV together are
a settings error (exit 2). What GET /model says of the source: tests/serve/test_served.py; the
dashboard's "loaded from" line: tests/serve/test_dashboard.py.
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import sqlalchemy as sa

from devtools.service import service_env
from devtools.tiny_model import TinyModel
from serve.model import ModelError, load_model
from serve.served import ModelSource
from serve.settings import Settings, SettingsError
from tests.support.registry import CHAMPION, NAME, Store, md5s, publish
from tests.support.serving import serving
from tests.support.settings import client_settings

pytestmark = [
    pytest.mark.timeout(180),
    # MLflow's hint while register() infers the signature from the examples' integer columns
    pytest.mark.filterwarnings("ignore:Hint. Inferred schema contains integer:UserWarning"),
]


def refused(s: Settings, match: str) -> str:
    with pytest.raises(ModelError, match=match) as caught:
        load_model(s)
    return str(caught.value)


# ---- registration --------------------------------------------------------------------------


def test_register_tags_each_version_with_the_md5s_of_the_served_files(
        tiny: TinyModel, tracking: Store) -> None:
    from mlflow import MlflowClient

    client = MlflowClient(tracking.uri)
    version = client.get_model_version_by_alias(NAME, "champion")
    assert str(version.version) == "1"
    assert {k: version.tags[k] for k in ("onnx_md5", "card_md5")} == md5s(tiny)
    logged = {f.path for f in client.list_artifacts(version.run_id, "serving")}
    assert logged == {"serving/model.onnx", "serving/model.json"}


# ---- loading from the registry ---------------------------------------------------------------


def test_the_champion_is_served_and_get_model_says_which_version(
        tiny: TinyModel, tracking: Store, empty: Path) -> None:
    s = client_settings(empty, None, model_uri=CHAMPION)
    with serving(s) as client:
        assert client.get("/health/ready").status_code == 200, client.get("/health/ready").json()
        served = client.get("/model").json()
        r = client.post("/predict", json=tiny.examples[0])
        assert r.status_code == 200 and r.json()["model_version"] == tiny.md5
        assert r.json()["prediction"] == pytest.approx(tiny.expected[0], rel=1e-4)
    assert served["serving"]["source"] == {
        "kind": "registry", "revision": None, "uri": CHAMPION, "name": NAME, "version": "1",
        "alias": "champion", "run_id": tracking.run_id}
    assert served["serving"]["md5"] == tiny.md5 and served["onnx_md5"] == tiny.md5
    # the log keeps the version the alias resolved to (the alias may move later)
    assert served["serving"]["revision"] == f"models:/{NAME}/1"
    engine = sa.create_engine(s.db_url)
    with engine.connect() as conn:
        logged = conn.execute(sa.text("SELECT model_revision FROM predictions")).scalar()
    engine.dispose()
    assert logged == f"models:/{NAME}/1"


def test_a_version_number_is_served_with_no_alias(tiny: TinyModel, tracking: Store,
                                                  empty: Path) -> None:
    model = load_model(client_settings(empty, None, model_uri=f"models:/{NAME}/1"))
    assert model.md5 == tiny.md5
    assert model.source == ModelSource("registry", uri=f"models:/{NAME}/1", name=NAME,
                                       version="1", alias=None, run_id=tracking.run_id)
    assert model.source.describe() == f"{NAME} version 1"


def test_a_tampered_file_in_the_store_is_refused(tiny: TinyModel, own_store: str,
                                                 empty: Path) -> None:
    version, artifacts = publish(own_store, [tiny.onnx, tiny.card_path], md5s(tiny))
    onnx = artifacts / "serving" / "model.onnx"
    onnx.write_bytes(onnx.read_bytes() + b"\0")
    tampered = hashlib.md5(onnx.read_bytes(), usedforsecurity=False).hexdigest()
    message = refused(client_settings(empty, None, model_uri=f"models:/{NAME}/{version}"),
                      "refusing to serve a model that is not the registered one")
    assert message == (f"serving/model.onnx of {NAME} version {version} (run "
                       f"{artifacts.parent.name}) has md5 {tampered} but the version's tag "
                       f"onnx_md5 records {tiny.md5}: refusing to serve a model that is not the "
                       "registered one")
    with serving(client_settings(empty, None, model_uri=f"models:/{NAME}/{version}")) as client:
        ready = client.get("/health/ready")
        assert ready.status_code == 503 and "not the registered one" in ready.json()["reason"]
        assert client.get("/model").status_code == 503


def test_a_version_registered_before_md5_tags_is_refused_saying_what_to_do(
        tiny: TinyModel, own_store: str, empty: Path) -> None:
    version, _ = publish(own_store, [tiny.onnx, tiny.card_path], {"validated": "true"})
    message = refused(client_settings(empty, None, model_uri=f"models:/{NAME}/{version}"), "carries no")
    assert message == (f"{NAME} version {version} carries no onnx_md5 or card_md5 tag: "
                       "registered before md5 tags; re-run export or load by revision "
                       "(MEDCAST_MODEL_REV)")


def test_a_missing_served_file_is_refused(tiny: TinyModel, own_store: str, empty: Path) -> None:
    version, _ = publish(own_store, [tiny.onnx], md5s(tiny))  # no card logged
    refused(client_settings(empty, None, model_uri=f"models:/{NAME}/{version}"),
            rf"cannot download serving/model.json of {NAME} version {version} \(run \w+\)")


@pytest.mark.parametrize(("uri", "reason"), [
    (f"models:/{NAME}@nope", "Registered model alias nope not found"),
    (f"models:/{NAME}/99", f"Model Version (name={NAME}, version=99) not found"),
    ("models:/medcast-other@champion", "Registered Model with name=medcast-other not found"),
])
def test_an_unknown_alias_version_or_name_is_one_clear_reason(
        tracking: Store, empty: Path, uri: str, reason: str) -> None:
    message = refused(client_settings(empty, None, model_uri=uri), "MEDCAST_MODEL_URI")
    assert message.startswith(f"MEDCAST_MODEL_URI={uri!r}: {reason}"), message
    assert message.endswith(f"(MLflow store {tracking.uri})") and "\n" not in message


def test_no_store_at_the_default_place_is_refused_and_none_is_created(
        empty: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    message = refused(client_settings(empty, None, model_uri=CHAMPION), "no MLflow store at")
    assert str(empty / "mlflow.db") in message and "MLFLOW_TRACKING_URI" in message
    assert not (empty / "mlflow.db").exists()


def test_without_mlflow_the_reason_names_the_extra(
        empty: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util

    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "mlflow" else find_spec(name, *a))
    message = refused(client_settings(empty, None, model_uri=CHAMPION), "not installed")
    assert "install the registry extra (pip install 'medcast[registry]')" in message


def test_an_unreachable_or_unsupported_store_is_one_reason_without_its_password(
        empty: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from devtools.ports import free_port

    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")  # nothing listens: fail at once
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://me:s3cret@127.0.0.1:{free_port()}/")
    message = refused(client_settings(empty, None, model_uri=CHAMPION), "API request to http://me:\\*\\*\\*@")
    assert "s3cret" not in message and "(MLflow store http://me@127.0.0.1:" in message
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "foo://bar")
    refused(client_settings(empty, None, model_uri=CHAMPION), "unsupported URI 'foo://bar'")


# ---- settings --------------------------------------------------------------------------------


def test_model_uri_and_model_rev_together_are_a_settings_error() -> None:
    with pytest.raises(SettingsError, match="set MEDCAST_MODEL_URI .* or MEDCAST_MODEL_REV .*, "
                                            "not both"):
        Settings.from_env({"MEDCAST_MODEL_URI": CHAMPION, "MEDCAST_MODEL_REV": "v1"})


def test_model_uri_forms(tmp_path: Path) -> None:
    (tmp_path / "uri").write_text(f"{CHAMPION}\n")
    s = Settings.from_env({"MEDCAST_MODEL_URI_FILE": str(tmp_path / "uri")})
    assert s.registered is not None and (s.registered.name, s.registered.alias) == (NAME, "champion")
    by_number = Settings.from_env({"MEDCAST_MODEL_URI": f"models:/{NAME}/12"}).registered
    assert by_number is not None and (by_number.version, by_number.alias) == ("12", None)
    for bad in ("runs:/abc/model", f"models:/{NAME}/latest", f"models:/{NAME}", f"models:/{NAME}/0",
                f"models:/{NAME}@champion/model.onnx", "models:/" + "n" * 81 + "/1"):
        with pytest.raises(SettingsError, match="MEDCAST_MODEL_URI="):
            Settings.from_env({"MEDCAST_MODEL_URI": bad})
    with pytest.raises(SettingsError, match="not both"):
        Settings.from_env({"MEDCAST_MODEL_URI": CHAMPION, "MEDCAST_MODEL_URI_FILE": "x"})


# ---- `python -m serve --check` and the serving process ---------------------------------------


def check(repo: Path, pycache: Path, tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "serve", "--check"], cwd=tmp_path,
                          env=service_env(pycache, MEDCAST_REPO=str(repo), **env),
                          capture_output=True, text=True, timeout=120)


def test_check_loads_the_champion_and_refuses_an_unknown_alias_in_one_line(
        tiny: TinyModel, store: Store, empty: Path, tmp_path: Path, pycache: Path) -> None:
    ok = check(empty, pycache, tmp_path, MEDCAST_MODEL_URI=CHAMPION, MLFLOW_TRACKING_URI=store.uri)
    assert ok.returncode == 0, ok.stderr[-3000:]
    assert ok.stdout.startswith(f"ok: {NAME} ({NAME} version 1 (@champion)) md5 {tiny.md5}")
    bad = check(empty, pycache, tmp_path, MEDCAST_MODEL_URI=f"models:/{NAME}@nope",
                MLFLOW_TRACKING_URI=store.uri)
    assert bad.returncode == 1 and "Traceback" not in bad.stderr
    assert bad.stderr.strip().splitlines() == [
        f"refused: MEDCAST_MODEL_URI='models:/{NAME}@nope': Registered model alias nope not "
        f"found. (MLflow store {store.uri})"], bad.stderr
    both = check(empty, pycache, tmp_path, MEDCAST_MODEL_URI=CHAMPION, MEDCAST_MODEL_REV="v1")
    assert both.returncode == 2 and both.stderr.startswith("medcast serve: set MEDCAST_MODEL_URI")


def test_a_registry_load_imports_no_tensorflow_sklearn_or_unpickling(
        tiny: TinyModel, store: Store, empty: Path, tmp_path: Path, pycache: Path) -> None:
    """As for a workspace load (tests/serve/test_main.py): MLflow's client, not its flavours."""
    script = textwrap.dedent(f"""
        import pickle, sys
        def refuse(*a, **k):
            raise AssertionError("something tried to unpickle")
        pickle.load = pickle.loads = refuse
        from pathlib import Path
        from litestar.testing import TestClient
        from serve.app import create_app
        from serve.settings import Settings
        settings = Settings(repo=Path({str(empty)!r}), model_uri={CHAMPION!r},
                            database_url="sqlite:///{tmp_path / 'x.db'}")
        with TestClient(create_app(settings)) as client:
            r = client.post("/predict", json={tiny.examples[0]!r})
            assert r.status_code == 200, r.text
        loaded = [m for m in ("tensorflow", "keras", "sklearn", "skl2onnx", "dvc", "joblib",
                              "skops", "torch") if m in sys.modules]
        assert not loaded, loaded
        assert "mlflow" in sys.modules
        print("clean")
    """)
    out = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True,
                         text=True, timeout=120,
                         env=service_env(pycache, MLFLOW_TRACKING_URI=store.uri))
    assert out.returncode == 0 and "clean" in out.stdout, out.stderr[-3000:]
