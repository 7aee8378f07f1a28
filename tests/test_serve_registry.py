"""Serving a registered version (MEDCAST_MODEL_URI, serve/registry.py) and saying where the
served model came from (GET /model's serving.source, the dashboard's "loaded from" line).

Against a real MLflow SQLite store in a temporary folder (MLFLOW_TRACKING_URI): the tiny model
(devtools/tiny_model.py) registered by the pipeline's own `medcast.registry.register` (which
tags the served files' md5s), or published by hand where a test needs a version to differ
(untagged, tampered). The service loads `models:/…@champion` and `models:/…/1` with no model
files in its repository; refuses a tampered file, an untagged version, an unknown alias, a
missing store, a missing MLflow, each saying why; `--check` exits 1 with one line; MODEL_URI and
MODEL_REV together are a settings error (exit 2).
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit
from urllib.request import url2pathname

import msgspec
import pytest
import sqlalchemy as sa

from devtools.service import running, service_env
from devtools.tiny_model import TinyModel, md5_file
from serve.model import ModelError, load_model
from serve.served import ModelSource
from serve.settings import Settings, SettingsError
from tests.support.browser import chromium_page, require_browser
from tests.support.serving import serving

pytestmark = [
    pytest.mark.timeout(180),
    # MLflow's hint while register() infers the signature from the examples' integer columns
    pytest.mark.filterwarnings("ignore:Hint. Inferred schema contains integer:UserWarning"),
]

NAME = "medcast-insurance"  # the tiny model's dataset is "insurance"
CHAMPION = f"models:/{NAME}@champion"
# A models-from-code pyfunc for register(): it must be loadable, never runs here.
PYFUNC = '''
import mlflow
import pandas as pd
from mlflow.pyfunc import PythonModel


class Zero(PythonModel):
    def predict(self, context, model_input: pd.DataFrame, params=None):
        return [0.0] * len(model_input)


mlflow.models.set_model(Zero())
'''


@dataclass(frozen=True)
class Store:
    uri: str  # MLFLOW_TRACKING_URI
    root: Path  # its folder (the database and the artifacts)
    run_id: str  # the run of version 1 (registered by register())


def settings(repo: Path, **overrides: Any) -> Settings:
    base: dict[str, Any] = dict(repo=repo, database_url=f"sqlite:///{repo / 'serve.db'}",
                                rate_limit=None, log_flush_ms=5, log_drain_s=5)
    return Settings(**{**base, **overrides})


@pytest.fixture(scope="module")
def store(tiny: TinyModel, tmp_path_factory: pytest.TempPathFactory) -> Store:
    """A store holding version 1 of medcast-insurance, registered as the export stage does:
    champion (the first version), tagged with the served files' md5s."""
    import numpy as np
    import pandas as pd

    from medcast.registry import register

    root = tmp_path_factory.mktemp("mlflow-store")
    (root / "pyfunc.py").write_text(PYFUNC)
    uri = f"sqlite:///{root / 'mlflow.db'}"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_TRACKING_URI", uri)
        mp.chdir(root)  # the experiment's artifacts: ./mlruns under the store's folder
        version = register(
            {"dataset.name": "insurance", "model": "ridge", "test.r2": 0.5},
            {"alpha": 1.0}, {"card": str(tiny.card_path)}, pd.DataFrame(tiny.examples[:3]),
            np.zeros(3), [str(tiny.onnx), str(tiny.card_path)],
            {"dataset": "insurance", "training_data_md5": "a" * 32, "cv_rmse": "5.0",
             "signal": "true"},
            str(root / "pyfunc.py"), ("test",))
    assert version == "1"
    from mlflow import MlflowClient

    run_id = MlflowClient(uri).get_model_version(NAME, "1").run_id
    return Store(uri, root, run_id)


@pytest.fixture
def tracking(store: Store, monkeypatch: pytest.MonkeyPatch) -> Store:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store.uri)
    return store


@pytest.fixture
def empty(tmp_path: Path) -> Path:
    """A repository folder without models/ or dvc.lock: a registry load needs neither."""
    folder = tmp_path / "repo"
    folder.mkdir()
    return folder


def publish(uri: str, files: list[Path], tags: dict[str, str], name: str = NAME) -> tuple[str, Path]:
    """A version by hand (what register() does, minus the pyfunc): the files logged under the
    run's serving/, the version created from the run with `tags`. Returns the version and the
    run's artifact folder."""
    from mlflow import MlflowClient

    client = MlflowClient(uri)
    if not client.search_registered_models(f"name='{name}'"):
        client.create_registered_model(name)
    experiment = client.get_experiment_by_name("by-hand")
    experiment_id = experiment.experiment_id if experiment else client.create_experiment(
        "by-hand", artifact_location=(Path(url2pathname(urlsplit(uri).path)).parent / "art").as_uri())
    run = client.create_run(experiment_id)
    for path in files:
        client.log_artifact(run.info.run_id, str(path), "serving")
    client.set_terminated(run.info.run_id)
    version = client.create_model_version(name, f"runs:/{run.info.run_id}/serving",
                                          run_id=run.info.run_id, tags=tags)
    return str(version.version), Path(url2pathname(urlsplit(run.info.artifact_uri).path))


@pytest.fixture
def own_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """An empty store of this test's own (its versions may be tampered with)."""
    uri = f"sqlite:///{tmp_path / 'own' / 'mlflow.db'}"
    (tmp_path / "own").mkdir()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    return uri


def md5s(tiny: TinyModel) -> dict[str, str]:
    return {"onnx_md5": tiny.md5, "card_md5": md5_file(tiny.card_path)}


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
    s = settings(empty, model_uri=CHAMPION)
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
    model = load_model(settings(empty, model_uri=f"models:/{NAME}/1"))
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
    message = refused(settings(empty, model_uri=f"models:/{NAME}/{version}"),
                      "refusing to serve a model that is not the registered one")
    assert message == (f"serving/model.onnx of {NAME} version {version} (run "
                       f"{artifacts.parent.name}) has md5 {tampered} but the version's tag "
                       f"onnx_md5 records {tiny.md5}: refusing to serve a model that is not the "
                       "registered one")
    with serving(settings(empty, model_uri=f"models:/{NAME}/{version}")) as client:
        ready = client.get("/health/ready")
        assert ready.status_code == 503 and "not the registered one" in ready.json()["reason"]
        assert client.get("/model").status_code == 503


def test_a_version_registered_before_md5_tags_is_refused_saying_what_to_do(
        tiny: TinyModel, own_store: str, empty: Path) -> None:
    version, _ = publish(own_store, [tiny.onnx, tiny.card_path], {"validated": "true"})
    message = refused(settings(empty, model_uri=f"models:/{NAME}/{version}"), "carries no")
    assert message == (f"{NAME} version {version} carries no onnx_md5 or card_md5 tag: "
                       "registered before md5 tags; re-run export or load by revision "
                       "(MEDCAST_MODEL_REV)")


def test_a_missing_served_file_is_refused(tiny: TinyModel, own_store: str, empty: Path) -> None:
    version, _ = publish(own_store, [tiny.onnx], md5s(tiny))  # no card logged
    refused(settings(empty, model_uri=f"models:/{NAME}/{version}"),
            rf"cannot download serving/model.json of {NAME} version {version} \(run \w+\)")


@pytest.mark.parametrize(("uri", "reason"), [
    (f"models:/{NAME}@nope", "Registered model alias nope not found"),
    (f"models:/{NAME}/99", f"Model Version (name={NAME}, version=99) not found"),
    ("models:/medcast-other@champion", "Registered Model with name=medcast-other not found"),
])
def test_an_unknown_alias_version_or_name_is_one_clear_reason(
        tracking: Store, empty: Path, uri: str, reason: str) -> None:
    message = refused(settings(empty, model_uri=uri), "MEDCAST_MODEL_URI")
    assert message.startswith(f"MEDCAST_MODEL_URI={uri!r}: {reason}"), message
    assert message.endswith(f"(MLflow store {tracking.uri})") and "\n" not in message


def test_no_store_at_the_default_place_is_refused_and_none_is_created(
        empty: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    message = refused(settings(empty, model_uri=CHAMPION), "no MLflow store at")
    assert str(empty / "mlflow.db") in message and "MLFLOW_TRACKING_URI" in message
    assert not (empty / "mlflow.db").exists()


def test_without_mlflow_the_reason_names_the_extra(
        empty: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util

    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "mlflow" else find_spec(name, *a))
    message = refused(settings(empty, model_uri=CHAMPION), "not installed")
    assert "install the registry extra (pip install 'medcast[registry]')" in message


def test_an_unreachable_or_unsupported_store_is_one_reason_without_its_password(
        empty: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from devtools.ports import free_port

    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")  # nothing listens: fail at once
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://me:s3cret@127.0.0.1:{free_port()}/")
    message = refused(settings(empty, model_uri=CHAMPION), "API request to http://me:\\*\\*\\*@")
    assert "s3cret" not in message and "(MLflow store http://me@127.0.0.1:" in message
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "foo://bar")
    refused(settings(empty, model_uri=CHAMPION), "unsupported URI 'foo://bar'")


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
    """As for a workspace load (tests/test_serve.py): MLflow's client, not its flavours."""
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


# ---- GET /model for the other sources, and its declared schema ------------------------------


def test_a_workspace_load_says_so_and_knows_no_alias(tiny: TinyModel, tmp_path: Path) -> None:
    with serving(settings(tiny.root, database_url=f"sqlite:///{tmp_path / 'log.db'}")) as client:
        served = client.get("/model").json()
        spec = client.get("/schema/openapi.json").json()
    assert served["serving"]["source"] == {"kind": "workspace", "revision": None, "uri": None,
                                           "name": None, "version": None, "alias": None,
                                           "run_id": None}
    assert served["serving"]["revision"] == "workspace"
    _conforms(served, spec)


class Revision:
    """`medcast.artifacts` at a revision, from the tiny model's files (serve.model.Artifacts)."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def locked_md5(self, path: str, rev: str | None = None, repo: str = ".") -> str:
        return md5_file(self.root / path)

    def read_bytes(self, path: str, rev: str | None = None, remote: str | None = None,
                   repo: str = ".") -> bytes:
        return (self.root / path).read_bytes()


def test_a_revision_load_says_which_revision_and_knows_no_alias(tiny: TinyModel,
                                                                empty: Path) -> None:
    with serving(settings(empty, model_rev="abc123"), artifacts=Revision(tiny.root)) as client:
        source = client.get("/model").json()["serving"]["source"]
    assert source == {**msgspec.to_builtins(ModelSource("revision")), "revision": "abc123"}


def test_the_registry_source_conforms_to_the_declared_schema(tracking: Store, empty: Path) -> None:
    with serving(settings(empty, model_uri=CHAMPION)) as client:
        served = client.get("/model").json()
        spec = client.get("/schema/openapi.json").json()
    model = spec["paths"]["/model"]["get"]["responses"]["200"]["content"]["application/json"]
    assert model["schema"] == {"$ref": "#/components/schemas/ModelOut"}
    source = spec["components"]["schemas"]["ModelSource"]
    assert source["properties"]["kind"]["enum"] == ["workspace", "revision", "registry"]
    assert {"name", "version", "alias", "run_id", "uri", "revision"} <= set(source["properties"])
    _conforms(served, spec)


def _conforms(served: dict[str, Any], spec: dict[str, Any]) -> None:
    """GET /model's body validates against the document's ModelOut (every $ref resolved)."""
    import jsonschema

    schema = {"$ref": "#/components/schemas/ModelOut", "components": spec["components"]}
    jsonschema.Draft202012Validator(schema).validate(served)


# ---- the dashboard ---------------------------------------------------------------------------


@pytest.fixture
def real_service(store: Store, empty: Path, tmp_path: Path, pycache: Path) -> Iterator[str]:
    """`python -m serve` serving the champion from the store; yields its base URL."""
    env = service_env(pycache, MEDCAST_REPO=str(empty), MEDCAST_MODEL_URI=CHAMPION,
                      MLFLOW_TRACKING_URI=store.uri,
                      MEDCAST_DATABASE_URL=f"sqlite:///{tmp_path / 'log.db'}",
                      MEDCAST_FIGURES_DIR=str(tmp_path / "figures"), MEDCAST_LOG_LEVEL="WARNING")
    with running(env, cwd=tmp_path, log=tmp_path / "serve.log") as service:
        yield service.url
        assert service.stop() == 0 and "Traceback" not in service.output(), service.output(3000)


def answer(body: dict[str, Any]) -> Any:
    """A Playwright route handler answering `body` as JSON."""
    return lambda route: route.fulfill(json=body)


def test_dashboard_shows_the_registered_version_and_alias(real_service: str) -> None:
    """The real service's card; then the same card as a workspace and a revision load would
    serve it (GET /model answered by the test): no version or alias is made up."""
    sync_api = require_browser()
    expect = sync_api.expect
    with chromium_page(sync_api) as page:
        page.goto(f"{real_service}/dashboard", timeout=15_000)
        line = page.locator("#model-source")
        expect(line).to_have_text(f"{NAME} version 1 (@champion)", timeout=10_000)
        expect(page.locator("#card-facts dt").filter(has_text="loaded from")).to_have_count(1)
        served = json.loads(page.evaluate("fetch('/model').then(r => r.text())"))
        assert served["serving"]["source"]["alias"] == "champion"
        for source, text in (
                (ModelSource("workspace"), "workspace model (not loaded from the registry)"),
                (ModelSource("revision", revision="abc123"),
                 "revision abc123 (not loaded from the registry)"),
                (ModelSource("registry", uri=f"models:/{NAME}/1", name=NAME, version="1"),
                 f"{NAME} version 1 (by version number)")):
            body = {**served, "serving": {**served["serving"],
                                          "source": msgspec.to_builtins(source)}}
            page.unroute("**/model")
            page.route("**/model", answer(body))
            page.reload()
            expect(line).to_have_text(text)


# ---- the registry extra ----------------------------------------------------------------------


def test_the_registry_extra_adds_mlflow_skinny_and_no_research_package() -> None:
    """What `medcast[registry]` may install beyond the service (uv.lock, markers ignored): MLflow's
    client, never the pipeline's heavy packages (they stay out of a serving install)."""
    import tomllib

    from tests.conftest import ROOT

    lock = tomllib.loads((ROOT / "uv.lock").read_text())
    packages = {p["name"]: p for p in lock["package"]}
    extra = packages["medcast"]["optional-dependencies"]["registry"]
    assert [d["name"] for d in extra] == ["mlflow-skinny"]
    closure, todo = set(), ["mlflow-skinny"]
    while todo:
        name = todo.pop()
        if name not in closure:
            closure.add(name)
            todo.extend(d["name"] for d in packages[name].get("dependencies", []))
    heavy = {"mlflow", "tensorflow-cpu", "keras", "scikit-learn", "scipy", "pandas", "pyarrow",
             "matplotlib", "dvc", "optuna", "flask", "gunicorn", "skops", "onnx"}
    assert not closure & heavy, closure & heavy
