"""Per-patient explanations (serve/explain.py, `?explain=true`) on the tiny models: additivity
against the served prediction, agreement with the Shapley formula evaluated subset by subset on
the full served graph (no code shared with medcast.shapley), missing features, the batch, the
limits, what GET /model hides, and the graph cut to its prediction output."""

from __future__ import annotations

import itertools
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest

from devtools.tiny_model import TinyModel, build_nullable_model, write_lock
from medcast.onnx.contract import feed
from medcast.onnx.cut import at_the_door, prediction_only
from tests.support.serving import log_count, serving
from tests.support.settings import make_settings

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def nullable(tmp_path_factory: pytest.TempPathFactory) -> TinyModel:
    """A pipeline-built model with imputation (missing values) and 5 features."""
    return build_nullable_model(tmp_path_factory.mktemp("nullable"))


def by_definition(root: Path, card: dict[str, Any], patient: dict[str, Any]
                  ) -> tuple[float, dict[str, float]]:
    """The Shapley formula, one subset at a time, on the full served graph and the card's
    background (medcast.onnx.contract's feed; nothing of medcast.shapley)."""
    session = ort.InferenceSession(str(root / "models" / "model.onnx"))
    features = [(f["name"], f["type"]) for f in card["features"]]
    background = card["explainer"]["background"]
    names = [name for name, _ in features]
    m = len(names)

    def v(subset: frozenset[int]) -> float:
        rows = [tuple(patient.get(names[j]) if j in subset else b[j] for j in range(m))
                for b in background]
        out = session.run(["prediction"], feed(features, rows))[0]
        return float(np.mean(np.asarray(out, dtype=np.float64)))

    phi = {}
    for j in range(m):
        others = [i for i in range(m) if i != j]
        phi[names[j]] = sum(
            math.factorial(k) * math.factorial(m - k - 1) / math.factorial(m)
            * (v(frozenset((*s, j))) - v(frozenset(s)))
            for k in range(m) for s in itertools.combinations(others, k))
    return v(frozenset()), phi


def test_explanations_add_up_and_match_the_shapley_formula(tiny: TinyModel, repo: Path) -> None:
    with serving(make_settings(repo)) as client:
        for patient in tiny.examples[:4]:
            r = client.post("/predict?explain=true", json=patient)
            assert r.status_code == 200, r.text
            out = r.json()
            e = out["explanation"]
            assert e["method"] == "exact" and e["margin"] is None
            assert e["missing"] == [] and e["background_rows"] == 20
            assert list(e["contributions"]) == [f["name"] for f in tiny.card["features"]]
            total = e["base_value"] + sum(e["contributions"].values())
            assert total == pytest.approx(out["prediction"], rel=1e-4)
            base, phi = by_definition(repo, tiny.card, patient)
            assert e["base_value"] == pytest.approx(base, rel=1e-6)
            for name, value in phi.items():
                assert e["contributions"][name] == pytest.approx(value, abs=1e-3)


def test_a_missing_feature_gets_a_contribution_and_is_named(nullable: TinyModel,
                                                            tmp_path: Path) -> None:
    import shutil

    root = tmp_path / "repo"
    shutil.copytree(nullable.root, root)
    patient = next(p for p in nullable.examples if p.get("sbp") is not None)
    patient = {**patient, "sbp": None}
    with serving(make_settings(root)) as client:
        out = client.post("/predict?explain=true", json=patient).json()
    e = out["explanation"]
    assert "sbp" in e["missing"] and "sbp" in e["contributions"]
    assert e["base_value"] + sum(e["contributions"].values()) == pytest.approx(
        out["prediction"], rel=1e-4)
    base, phi = by_definition(root, nullable.card, patient)
    assert e["contributions"]["sbp"] == pytest.approx(phi["sbp"], abs=1e-3)


def test_without_explain_nothing_changes(tiny: TinyModel, repo: Path) -> None:
    with serving(make_settings(repo)) as client:
        for query in ("", "?explain=false"):
            out = client.post(f"/predict{query}", json=tiny.examples[0]).json()
            assert set(out) == {"prediction", "interval", "model_version", "request_id"}
            batch = client.post(f"/predict/batch{query}",
                                json={"instances": tiny.examples[:2]}).json()
            assert "explanations" not in batch
        r = client.post("/predict?explain=perhaps", json=tiny.examples[0])
        assert r.status_code == 400 and "explain" in r.text


def test_a_batch_explains_each_row_in_order_and_logs_every_row(tiny: TinyModel,
                                                               repo: Path) -> None:
    settings = make_settings(repo)
    with serving(settings) as client:
        singles = [client.post("/predict?explain=true", json=p).json()["explanation"]
                   for p in tiny.examples[:3]]
        r = client.post("/predict/batch?explain=true", json={"instances": tiny.examples[:3]})
        assert r.status_code == 200, r.text
        assert r.json()["explanations"] == singles
    assert log_count(settings.database_url) == 6


def test_explain_limits_and_an_old_card_answer_422(tiny: TinyModel, repo: Path) -> None:
    with serving(make_settings(repo, max_explain=2)) as client:
        r = client.post("/predict/batch?explain=true", json={"instances": tiny.examples[:3]})
        assert r.status_code == 422 and r.json()["field"] == "explain"
        assert "MEDCAST_MAX_EXPLAIN" in r.json()["detail"]
    card_path = repo / "models" / "model.json"
    card = json.loads(card_path.read_text())
    del card["explainer"]  # a card from before explanations
    card_path.write_text(json.dumps(card, indent=2) + "\n")
    write_lock(repo)
    with serving(make_settings(repo)) as client:
        assert client.post("/predict", json=tiny.examples[0]).status_code == 200
        r = client.post("/predict?explain=true", json=tiny.examples[0])
        assert r.status_code == 422 and r.json()["field"] == "explain"
        assert "no explainer" in r.json()["detail"]


def test_get_model_counts_the_background_rows_without_showing_them(tiny: TinyModel,
                                                                   repo: Path) -> None:
    with serving(make_settings(repo)) as client:
        shown = client.get("/model").json()["explainer"]
    assert "background" not in shown and shown["background_rows"] == 20
    assert shown["method"] == "exact" and shown["coalitions"] == 150


def test_the_prediction_only_graph_predicts_the_same_and_has_no_bounds(tiny: TinyModel) -> None:
    full_bytes = (tiny.root / "models" / "model.onnx").read_bytes()
    full = ort.InferenceSession(full_bytes)
    cut = ort.InferenceSession(prediction_only(full_bytes))
    assert [o.name for o in full.get_outputs()] == ["prediction", "lower", "upper"]
    assert [o.name for o in cut.get_outputs()] == ["prediction"]
    features = [(f["name"], f["type"]) for f in tiny.card["features"]]
    rows = [tuple(p.get(n) for n, _ in features) for p in tiny.examples]
    np.testing.assert_array_equal(cut.run(["prediction"], feed(features, rows))[0],
                                  full.run(["prediction"], feed(features, rows))[0])


def test_the_graph_split_at_its_door_predicts_bit_for_bit(nullable: TinyModel) -> None:
    """door → body gives the full graph's every bit, missing values included."""
    full_bytes = (nullable.root / "models" / "model.onnx").read_bytes()
    cut = at_the_door(full_bytes)
    assert cut.door is not None and set(cut.numeric) == {"age", "BL.Cig.Day", "sbp"}
    door, body = ort.InferenceSession(cut.door), ort.InferenceSession(cut.body)
    features = [(f["name"], f["type"]) for f in nullable.card["features"]]
    rows = [tuple(p.get(n) for n, _ in features) for p in nullable.examples]
    inputs = feed(features, rows)
    doubles = door.run(None, {name: inputs[name] for name in cut.numeric})
    body_feed = {**{k: v for k, v in inputs.items() if k not in cut.numeric},
                 **{f"{name}__f64": d for name, d in zip(cut.numeric, doubles, strict=True)}}
    whole = ort.InferenceSession(full_bytes).run(["prediction"], inputs)[0]
    np.testing.assert_array_equal(body.run(["prediction"], body_feed)[0], whole)
    assert at_the_door((nullable.root / "models" / "model.onnx").read_bytes()).body == cut.body


def test_the_openapi_document_declares_explain_and_the_explanation(tiny: TinyModel,
                                                                   repo: Path) -> None:
    with serving(make_settings(repo)) as client:
        doc = client.get("/schema/openapi.json").json()
    for path in ("/predict", "/predict/batch"):
        params = {p["name"]: p for p in doc["paths"][path]["post"].get("parameters", [])}
        assert params["explain"]["in"] == "query"
        assert params["explain"]["schema"]["type"] == "boolean"
    assert "ExplanationOut" in doc["components"]["schemas"]


@pytest.mark.parametrize("durability", ["ack", "buffered"])
@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_log_explanations_keeps_each_explained_rows_explanation_and_only_those(
        tiny: TinyModel, repo: Path, backend: str, durability: str,
        request: pytest.FixtureRequest) -> None:
    """MEDCAST_LOG_EXPLANATIONS on: an explained prediction's row holds its explanation
    (base_value, contributions, method, margin), as answered; a batch of 40 rows goes through
    PostgreSQL's COPY; a prediction asked without explain=true keeps NULL. GET /predictions
    answers what its OpenAPI schema (PredictionsPage) says."""
    import msgspec

    from serve.answers import PredictionsPage
    from tests.support.serving import written
    from tests.support.settings import KEY

    url = request.getfixturevalue("pg_url") if backend == "postgresql" else (
        f"sqlite:///{repo / 'serve.db'}")
    patients = [tiny.examples[i % len(tiny.examples)] for i in range(40)]
    settings = make_settings(repo, database_url=url, log_durability=durability,
                             log_explanations=True)
    with serving(settings) as client:
        one = client.post("/predict?explain=true", json=patients[0]).json()
        batch = client.post("/predict/batch?explain=true", json={"instances": patients}).json()
        plain = client.post("/predict", json=patients[0]).json()
        written(client, 42)
        r = client.get("/predictions", params={"limit": 100}, headers={"X-API-Key": KEY})
    assert r.status_code == 200
    page = msgspec.json.decode(r.content, type=PredictionsPage)
    assert len(page.items) == 42
    logged = {(row.request_id, row.item): row.explanation for row in page.items}
    answered = {(one["request_id"], 0): one["explanation"],
                **{(batch["request_id"], i): e for i, e in enumerate(batch["explanations"])}}
    for key, e in answered.items():
        kept = msgspec.to_builtins(logged[key])
        assert kept == {k: e[k] for k in ("base_value", "contributions", "method", "margin")}
    assert logged[(plain["request_id"], 0)] is None


def test_without_log_explanations_an_explained_row_keeps_null(tiny: TinyModel,
                                                              repo: Path) -> None:
    from tests.support.serving import written
    from tests.support.settings import KEY

    with serving(make_settings(repo)) as client:
        assert client.post("/predict?explain=true", json=tiny.examples[0]).status_code == 200
        written(client, 1)
        (row,) = client.get("/predictions", headers={"X-API-Key": KEY}).json()["items"]
    assert row["explanation"] is None
