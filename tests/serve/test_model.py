"""Verified loading (serve/model.py): the model and its card are served only when they match
dvc.lock (the workspace) or come through medcast.artifacts (a git revision, DVC needed); a
tampered or missing model or card, a card that describes another model or promises an interval
the graph lacks, or a pickle, HDF5 or .keras file put in place of the ONNX graph leaves the
service alive but unready (503, with the reason), and nothing in it is executed. The serving
process never imports TensorFlow or scikit-learn, nor unpickles.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from devtools.service import service_env
from devtools.tiny_model import TinyModel, build_tiny_model, md5_file, write_lock
from serve.model import ModelError, load_model
from tests.support.serving import scraped, serving
from tests.support.settings import make_settings

pytestmark = pytest.mark.timeout(120)


def test_card_stating_an_interval_the_graph_lacks_is_refused(tmp_path: Path) -> None:
    root = tmp_path / "plain"
    build_tiny_model(root, n=120, interval=None)
    card = json.loads((root / "models/model.json").read_text())
    card["interval"] = {"level": 0.9, "method": "constant", "q": 1.0, "floor": 0.0, "coverage": 0.9}
    (root / "models/model.json").write_text(json.dumps(card))
    write_lock(root)
    with pytest.raises(ModelError, match="no outputs"):
        load_model(make_settings(root))


def _assert_refused(repo: Path, reason: str, rev: str | None = None, **kwargs: Any) -> None:
    with serving(make_settings(repo, model_rev=rev), **kwargs) as client:
        assert client.get("/health/live").status_code == 200
        r = client.get("/health/ready")
        assert r.status_code == 503
        assert reason in r.json()["reason"], r.json()
        p = client.post("/predict", json={"age": 30})
        assert p.status_code == 503 and reason in p.json()["detail"]
        assert client.post("/predict/batch", json={"instances": []}).status_code == 503
        assert client.get("/model").status_code == 503
        assert scraped(client, "medcast_model_ready") == 0


def test_tampered_model_is_refused(repo: Path, caplog: pytest.LogCaptureFixture) -> None:
    onnx = repo / "models" / "model.onnx"
    onnx.write_bytes(onnx.read_bytes() + b"\0")
    with caplog.at_level("ERROR", logger="medcast.serve"):
        _assert_refused(repo, "dvc.lock records")
    assert any("model NOT loaded" in r.getMessage() for r in caplog.records)
    assert "Traceback" not in caplog.text


def test_card_that_does_not_describe_the_model_is_refused(repo: Path) -> None:
    card_path = repo / "models" / "model.json"
    card = json.loads(card_path.read_text())
    card["onnx_md5"] = "0" * 32
    card_path.write_text(json.dumps(card))
    write_lock(repo)  # locked, but inconsistent with the model
    _assert_refused(repo, "describes a model with md5")


def test_tampered_card_is_refused(repo: Path) -> None:
    card_path = repo / "models" / "model.json"
    card = json.loads(card_path.read_text())
    card["features"][0]["max"] = 1000  # widen a range without going through the pipeline
    card_path.write_text(json.dumps(card))
    _assert_refused(repo, "model.json")


def test_model_missing_from_the_lock_is_refused(repo: Path) -> None:
    (repo / "dvc.lock").write_text("schema: '2.0'\nstages: {}\n")
    _assert_refused(repo, "has no md5")


def test_model_missing_is_refused(repo: Path) -> None:
    (repo / "models" / "model.onnx").unlink()
    _assert_refused(repo, "cannot read")


class FakeArtifacts:
    """`medcast.artifacts` at a revision, from a dict: path → (bytes, locked md5)."""

    def __init__(self, files: dict[str, tuple[bytes, str]], fail: str | None = None) -> None:
        self.files, self.fail, self.calls = files, fail, []

    def locked_md5(self, path: str, rev: str | None = None, repo: str = ".") -> str:
        self.calls.append(("locked_md5", path, rev))
        if self.fail:
            raise RuntimeError(self.fail)
        return self.files[path][1]

    def read_bytes(self, path: str, rev: str | None = None, remote: str | None = None,
                   repo: str = ".") -> bytes:
        self.calls.append(("read_bytes", path, rev))
        return self.files[path][0]


def test_model_by_revision_comes_through_artifacts(tiny: TinyModel, tmp_path: Path) -> None:
    files = {
        "models/model.onnx": (tiny.onnx.read_bytes(), tiny.md5),
        "models/model.json": (tiny.card_path.read_bytes(), md5_file(tiny.card_path)),
    }
    fake = FakeArtifacts(files)
    settings = make_settings(tmp_path, model_rev="v1.2")  # no model files in tmp_path
    with serving(settings, artifacts=fake) as client:
        assert client.get("/health/ready").status_code == 200
        assert client.get("/model").json()["serving"]["revision"] == "v1.2"
        assert client.post("/predict", json=tiny.examples[0]).status_code == 200
    assert ("read_bytes", "models/model.onnx", "v1.2") in fake.calls
    engine = sa.create_engine(settings.db_url)
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT model_revision FROM predictions")).scalar() == "v1.2"
    engine.dispose()


def test_model_by_revision_with_a_wrong_md5_is_refused(tiny: TinyModel, tmp_path: Path) -> None:
    files = {
        "models/model.onnx": (tiny.onnx.read_bytes() + b"x", tiny.md5),
        "models/model.json": (tiny.card_path.read_bytes(), md5_file(tiny.card_path)),
    }
    _assert_refused(tmp_path, "dvc.lock records", rev="v1.2", artifacts=FakeArtifacts(files))
    _assert_refused(tmp_path, "the DVC remote is unreachable", rev="v1.2",
                    artifacts=FakeArtifacts(files, fail="the DVC remote is unreachable"))


def test_model_by_revision_without_dvc_installed_names_the_extra(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A serve-only install (`medcast[serve]`) has no DVC: say which extra brings it."""
    import importlib.util

    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "dvc" else find_spec(name, *a))
    _assert_refused(tmp_path, "install the pipeline extra (pip install 'medcast[pipeline]')",
                    rev="v1.2")


def test_serving_process_imports_no_tensorflow_sklearn_or_unpickling(
    tiny: TinyModel, tmp_path: Path, pycache: Path
) -> None:
    script = textwrap.dedent(f"""
        import pickle, sys
        def refuse(*a, **k):
            raise AssertionError("something tried to unpickle")
        pickle.load = pickle.loads = refuse
        from pathlib import Path
        from litestar.testing import TestClient
        from serve.app import create_app
        from serve.settings import Settings
        settings = Settings(repo=Path({str(tiny.root)!r}),
                            database_url="sqlite:///{tmp_path / 'x.db'}")
        with TestClient(create_app(settings)) as client:
            r = client.post("/predict", json={tiny.examples[0]!r})
            assert r.status_code == 200, r.text
            assert client.post("/predict/batch",
                               json={{"instances": [{tiny.examples[1]!r}]}}).status_code == 200
        loaded = [m for m in ("tensorflow", "keras", "sklearn", "skl2onnx", "dvc", "joblib",
                              "skops", "torch") if m in sys.modules]
        assert "tensorflow" not in sys.modules and "sklearn" not in sys.modules, loaded
        assert not loaded, loaded
        print("clean")
    """)
    out = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True,
                         text=True, timeout=60, env=service_env(pycache))
    assert out.returncode == 0 and "clean" in out.stdout, out.stderr[-3000:]


class _Payload:
    """Unpickling this would create a marker file: proof that nothing was executed."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        return (Path.touch, (self.marker,))


def _unsafe_bytes(kind: str, marker: Path) -> bytes:
    import io
    import pickle  # nosec B403 - builds the hostile file the service must refuse
    import zipfile

    if kind == "pickle":
        return pickle.dumps(_Payload(marker))
    if kind == "h5":  # an HDF5 signature, as Keras 2 wrote models
        return b"\x89HDF\r\n\x1a\n" + b"\0" * 512
    buffer = io.BytesIO()  # a .keras archive with a Lambda layer (stored code)
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("config.json", json.dumps({"class_name": "Lambda", "config": {
            "function": {"class_name": "__lambda__", "config": {"code": "touch marker"}}}}))
        archive.writestr("metadata.json", "{}")
    return buffer.getvalue()


@pytest.mark.parametrize("kind", ["pickle", "h5", "keras"])
def test_unsafe_artifact_in_place_of_the_model_is_refused_unexecuted(
        repo: Path, tmp_path: Path, kind: str) -> None:
    """Even a file DVC has locked (someone committed it) is only ever parsed as ONNX."""
    marker = tmp_path / "executed"
    (repo / "models" / "model.onnx").write_bytes(_unsafe_bytes(kind, marker))
    card_path = repo / "models" / "model.json"
    card = json.loads(card_path.read_text())
    card["onnx_md5"] = md5_file(repo / "models" / "model.onnx")
    card_path.write_text(json.dumps(card))
    write_lock(repo)
    with serving(make_settings(repo)) as client:
        ready = client.get("/health/ready")
        assert ready.status_code == 503, ready.json()
        assert "ONNX Runtime cannot load the model" in ready.json()["reason"]
        assert client.post("/predict", json={"age": 30}).status_code == 503
    assert not marker.exists()


def test_batch_invariance_is_checked_bit_for_bit(tiny: TinyModel, repo: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """The tiny model answers every row the same alone (a lone row runs twice: ORT's
    one-row path differs in the last bit) and in a call of any size; a model whose answers
    move with the batch is found out, and then predicts every request alone."""
    from serve.model import batch_invariant, synthetic_rows

    model = load_model(make_settings(repo))
    assert model.batch_invariant and batch_invariant(model)
    rows = synthetic_rows(model.card.features, 200, seed=1)
    by_name = {f.name: f for f in model.card.features}
    for name, f in by_name.items():
        values = [r[name] for r in rows]
        if f.type == "category":
            assert set(values) <= set(f.categories or [])
        else:
            assert min(values) >= f.observed_min and max(values) <= f.observed_max
    real = model.predict_with_bounds

    def drifting(rows: list[tuple[Any, ...]]) -> Any:
        values, lower, upper = real(rows)
        return [v + 1e-3 * len(rows) for v in values], lower, upper

    monkeypatch.setattr(model, "predict_with_bounds", drifting)
    assert not batch_invariant(model)
