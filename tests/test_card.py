"""medcast.card: the model card's one definition. Built → written → parsed gives the same card
and the same bytes; the builder writes every declared key; the parser refuses what is not
declared (but reads cards of older revisions); and every card field the dashboard (app.js) or
the service reads is declared (the card's in medcast.card, what GET /model adds, `serving`, in
serve.served.ModelOut) and is in what GET /model serves."""

from __future__ import annotations

import ast
import hashlib
import json
import re
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
import pytest

from devtools.tiny_model import TinyModel
from medcast.card import (
    RETIRED,
    CardError,
    ExplainerCard,
    ExplainerCheck,
    ModelCard,
    build_card,
    card_dict,
    card_json,
    parse_card,
)
from medcast.features import Feature, FeatureSchema
from serve.served import ModelOut
from serve.settings import Settings
from tests.conftest import ROOT
from tests.support.serving import serving

APP_JS = ROOT / "serve" / "static" / "app.js"
# Keys written only when their condition holds (the tiny model's card meets every other one).
CONDITIONAL = {"parity.n_tied",  # only when some parity rows tie at a kNN's k-th neighbour
               "parity.sampled_from",  # only when the test split exceeds export.parity_max_rows
               # only with evaluate.interval_groups (Mondrian intervals)
               "interval.groups", "interval.cell_q", "interval.cell_n", "interval.pooled_cells",
               # the export stage's check against shap (the tiny model is built without it)
               "explainer.check", "explainer.check.reference", "explainer.check.n",
               "explainer.check.max_abs_diff", "explainer.check.tolerance",
               "explainer.check.margin_coverage",
               # only when a kNN's coalition rows tie at its k-th neighbour (medcast.explain)
               "explainer.check.n_tied"}


# Keys the service reads but GET /model does not serve (the background rows are patients).
PRIVATE = {"explainer.background"}


def schema(unit: str = "kg/m2") -> FeatureSchema:
    return FeatureSchema("trial", "y", "score", (
        Feature("age", "int", "years", 0, 120, 19.0, 79.0),
        Feature("bmi", "float", unit, 10.0, 80.0, 18.1, 41.3, nullable=True, missing_rate=0.05),
        Feature("smoker", "category", None, categories=("no", "yes")),
    ))


def build(**changes: Any) -> ModelCard:
    """A card from the real builder on small, hand-made stage results."""
    args: dict[str, Any] = {
        "report": {"dataset.name": "trial", "model": "ridge", "test.r2": 0.5, "test.rmse": 2.0,
                   "cv.r2": 0.4, "cv.r2_std": 0.1, "interval.level": 0.9, "n_train": 80},
        "meta": {"model": "ridge", "params": {"alpha": 0.5, "knots": [1, 2]}},
        "schema": schema(),
        "onnx_bytes": b"graph",
        "parity": {"max_abs_diff": 1e-5, "max_rel_diff": 2e-8, "n": 20,
                   "interval_max_rel_diff": 1e-7},
        "train_bytes": b"rows",
        "interval": {"level": 0.9, "method": "adaptive", "q": 2.07, "floor": 11.1,
                     "coverage": 0.91},
        "signal": {"signal": True, "message": "ridge predicts y better than its training mean"},
        "explainer": ExplainerCard([[40.0, None, "no"], [61.0, 27.5, "yes"]], 150, 42, "exact"),
    }
    return build_card(**{**args, **changes})


# ---- round trip ------------------------------------------------------------------------------


def test_built_card_round_trips_through_its_json_to_an_equal_card_and_the_same_bytes() -> None:
    card = build()
    text = card_json(card)
    parsed, raw = parse_card(text.encode())
    assert parsed == card
    assert card_json(parsed) == text
    assert raw == json.loads(text)
    assert list(raw) == list(ModelCard.__struct_fields__)  # keys in the declared order


def test_card_json_is_json_dumps_indent_2_as_the_stage_always_wrote() -> None:
    card = build(schema=schema(unit="kg/m²"))
    text = card_json(card)
    assert text == json.dumps(card_dict(card), indent=2) + "\n"
    assert '"unit": "kg/m\\u00b2"' in text  # non-ASCII escaped, as json.dumps does
    assert text.startswith('{\n  "name": "medcast-trial",\n  "dataset": "trial",')
    assert card.training_data_md5 == hashlib.md5(b"rows").hexdigest()  # DVC's hash
    assert card.features[0].min == 0 and isinstance(card.features[0].min, float)  # declared type


def test_a_graph_without_bounds_has_no_interval_key_and_numpy_scalars_write_as_floats() -> None:
    plain = card_dict(build(interval=None, parity={"max_abs_diff": 0.0, "max_rel_diff": 0.0,
                                                   "n": 3}))
    assert "interval" not in plain and plain["parity"] == {"max_abs_diff": 0.0,
                                                           "max_rel_diff": 0.0, "n": 3}
    q = np.float64(2.074873539)  # round(np.float64, 9) stays a NumPy scalar
    numpy_card = build(interval={"level": 0.9, "method": "constant", "q": q, "floor": 0.0,
                                 "coverage": 0.9})
    assert card_json(numpy_card) == card_json(build(interval={
        "level": 0.9, "method": "constant", "q": 2.074873539, "floor": 0.0, "coverage": 0.9}))


def test_builder_refuses_a_card_the_service_would_refuse() -> None:
    bad = FeatureSchema("trial", "y", "score", (Feature("smoker", "category", None),))
    with pytest.raises(CardError, match="category feature 'smoker' has no categories"):
        build(schema=bad)
    with pytest.raises(TypeError, match="extra"):  # a parity key the card does not declare
        build(parity={"max_abs_diff": 0.0, "max_rel_diff": 0.0, "n": 3, "extra": 1})


# ---- strict parsing --------------------------------------------------------------------------


def _declared(struct: Any, prefix: str = "") -> set[str]:
    """Every key path the card declares: "parity.n", "features.name", "interval.q", …"""
    out = set()
    for field in msgspec.inspect.type_info(struct).fields:
        path = f"{prefix}{field.name}"
        out.add(path)
        inner = _struct_in(field.type)
        if inner is not None:
            out |= _declared(inner, f"{path}.")
    return out


def _struct_in(t: Any) -> type | None:
    """The Struct a field holds (through `| None` and list[...]), if any."""
    inspect = msgspec.inspect
    if isinstance(t, inspect.UnionType):
        found = [s for s in map(_struct_in, t.types) if s is not None]
        return found[0] if found else None
    if isinstance(t, inspect.ListType):
        return _struct_in(t.item_type)
    return t.cls if isinstance(t, inspect.StructType) else None


def _written(value: Any, prefix: str = "") -> set[str]:
    """Every key path of a JSON card; a list of objects (features): the keys every item has."""
    out = set()
    for key, item in value.items():
        path = f"{prefix}{key}"
        out.add(path)
        if isinstance(item, dict) and key not in ("params", "metrics"):
            out |= _written(item, f"{path}.")
        elif isinstance(item, list) and item and all(isinstance(i, dict) for i in item):
            out |= set.intersection(*(_written(i, f"{path}.") for i in item))
    return out


def test_card_from_the_real_builder_decodes_strictly_and_has_every_declared_key(
        tiny: TinyModel) -> None:
    """The tiny model's card is built as `evaluate` builds it (devtools.tiny_model: scikit-learn,
    skl2onnx, parity with bounds, a calibrated interval)."""
    raw = tiny.card_path.read_bytes()
    card, as_dict = parse_card(raw)  # forbids unknown keys: every written key is declared
    assert _written(as_dict) == _declared(ModelCard) - CONDITIONAL
    assert card_json(card).encode() == raw


def _card_text(**changes: Any) -> bytes:
    data = card_dict(build())
    for path, value in changes.items():
        *parents, leaf = path.split("__")
        node: Any = data
        for key in parents:
            node = node[int(key)] if key.isdigit() else node[key]
        if value is msgspec.UNSET:
            del node[leaf]
        else:
            node[leaf] = value
    return json.dumps(data).encode()


@pytest.mark.parametrize(("changes", "message"), [
    ({"extra": 1}, r"unknown field `extra`$"),
    ({"features__1__colour": "red"}, r"unknown field `colour` - at `\$.features\[1\]`"),
    ({"interval__width": 3.0}, r"unknown field `width` - at `\$.interval`"),
    ({"parity__extra": 0}, r"unknown field `extra` - at `\$.parity`"),
    ({"onnx_md5": msgspec.UNSET}, r"missing required field `onnx_md5`"),
    ({"interval__coverage": msgspec.UNSET}, r"missing required field `coverage`"),
    ({"features__0__type": "integer"}, r"Invalid enum value 'integer' - at `\$.features\[0\].type`"),
    ({"interval__level": 1.5}, r"Expected `float` < 1"),
    ({"metrics__test__r2": "0.5"}, r"Expected `float`, got `str` - at `\$.metrics\[...\]\[...\]`"),
])
def test_parse_refuses_unknown_missing_or_mistyped_keys_saying_where(
        changes: dict[str, Any], message: str) -> None:
    with pytest.raises(CardError, match=message):
        parse_card(_card_text(**changes))


def test_card_of_an_older_revision_still_loads() -> None:
    """Before 00fdf1f the card named the git revision, not the training split's md5; before
    92f2a71 features had no nullable/missing_rate. Both load; the retired key is still shown."""
    assert set(RETIRED) == {"training_revision"}
    old = {k: v for k, v in card_dict(build()).items() if k != "training_data_md5"}
    old["training_revision"] = "0123456789abcdef"
    for feature in old["features"]:
        del feature["nullable"], feature["missing_rate"]
    card, as_dict = parse_card(json.dumps(old).encode())
    assert card.training_data_md5 is None and not card.features[1].nullable
    assert as_dict["training_revision"] == "0123456789abcdef"  # GET /model serves it as it is
    assert not hasattr(card, "training_revision")


# ---- what the dashboard and the service read -------------------------------------------------

# `card.<path>` and `feature.<path>` (app.js names them so: see its header), optional chaining too.
_READ = re.compile(r"\b(card|feature)((?:\??\.[A-Za-z_$][\w$]*)+)")
EACH = "[]"  # a path segment: every item of a list (a feature of card.features)


def _app_js() -> str:
    """app.js without its comments."""
    text = re.sub(r"/\*.*?\*/", "", APP_JS.read_text(), flags=re.S)
    return re.sub(r"(^|\s)//.*$", "", text, flags=re.M)


def _js_reads(text: str) -> set[tuple[str, ...]]:
    """Card paths app.js reads: ("interval", "coverage"), ("features", EACH, "observed_min"), …"""
    out = set()
    for root, chain in _READ.findall(text):
        segments = tuple(s for s in chain.replace("?", "").split(".") if s)
        out.add(("features", EACH, *segments) if root == "feature" else segments)
    return out


def _py_reads(path: Path) -> set[tuple[str, ...]]:
    """`<x>.card.<path>` and `card.<path>` attribute reads in a Python module of the service."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        text = ast.unparse(node) if isinstance(node, ast.Attribute) else ""
        if m := re.search(r"(?:^|\.)card((?:\.\w+)+)$", text):
            out.add(tuple(m.group(1).lstrip(".").split(".")))
    return out


def _resolve(path: tuple[str, ...]) -> tuple[str, ...]:
    """The declared part of a read path: descends through Struct fields and stops at a value
    (a string's .slice, a list's .map, a dict's keys are the reader's own); raises KeyError for
    a segment neither the card nor GET /model's `serving` (ModelOut: the card + serving)
    declares."""
    inspect = msgspec.inspect
    t: Any = inspect.type_info(ModelOut)
    for i, segment in enumerate(path):
        while isinstance(t, inspect.UnionType):
            t = next(x for x in t.types if not isinstance(x, inspect.NoneType))
        if isinstance(t, inspect.ListType):
            if segment != EACH:
                return path[:i]  # the list's own .map, .length, …
            t = t.item_type
            continue
        if not isinstance(t, inspect.StructType):
            return path[:i]
        fields = {f.name: f.type for f in t.fields}
        if segment not in fields:
            raise KeyError(f"{'.'.join(path)}: neither card.py nor serve.served.ModelOut declares {segment!r} here")
        t = fields[segment]
    return path


def _present(served: dict[str, Any], path: tuple[str, ...]) -> bool:
    node: Any = served
    for i, segment in enumerate(path):
        if segment == EACH:
            return isinstance(node, list) and all(_present(x, path[i + 1:]) for x in node)
        if not isinstance(node, dict) or segment not in node:
            return False
        node = node[segment]
    return True


def test_app_js_reads_only_declared_card_fields() -> None:
    reads = _js_reads(_app_js())
    assert len(reads) >= 20, f"too few card reads found in app.js: {sorted(reads)}"
    undeclared = []
    for path in sorted(reads):
        try:
            _resolve(path)
        except KeyError as exc:
            undeclared.append(str(exc))
    assert undeclared == []


def test_app_js_reads_the_card_only_through_card_and_feature() -> None:
    """A key only the card has (`observed_min`, `nullable`, …) read through another name would
    escape the checks above."""
    distinctive = {p.rpartition(".")[2] for p in _declared(ModelCard)
                   if "_" in p.rpartition(".")[2]} | {"nullable", "categories"}
    accesses = re.finditer(r"(?=\b([A-Za-z_$][\w$]*)\??\.([A-Za-z_]\w*))", _app_js())
    aliased = [f"{m.group(1)}.{m.group(2)}" for m in accesses
               if m.group(2) in distinctive and m.group(1) not in ("card", "feature")]
    assert aliased == []


def test_every_card_field_app_js_or_the_service_reads_is_served(
        tiny: TinyModel, tmp_path: Path) -> None:
    """Against GET /model of a model whose card the real builder wrote: what the dashboard
    reads is there (for every feature), and so is every `card.<field>` serve/*.py reads."""
    service_reads = set().union(*(_py_reads(p) for p in (ROOT / "serve").glob("*.py")))
    assert {("onnx_md5",), ("interval", "level"), ("features",)} <= service_reads
    reads = {_resolve(p) for p in _js_reads(_app_js()) | service_reads
             if ".".join(p) not in PRIVATE}
    settings = Settings(repo=tiny.root, database_url=f"sqlite:///{tmp_path / 'serve.db'}")
    with serving(settings) as client:
        served = client.get("/model").json()
    missing = sorted(".".join(p) for p in reads if not _present(served, p))
    assert missing == []
    assert {".".join(p) for p in service_reads} & PRIVATE == PRIVATE
    # ... served as their count only: the background rows are training patients
    assert served["explainer"]["background_rows"] == len(tiny.card["explainer"]["background"])


def test_a_mondrian_interval_card_round_trips() -> None:
    """With interval_groups the interval entry carries its cells; the service parses it."""
    cells = {"groups": ["smoker"], "cell_q": {"smoker=no": 1.5, "smoker=yes": 2.5},
             "cell_n": {"smoker=no": 800, "smoker=yes": 200}, "pooled_cells": []}
    card = build(interval={"level": 0.9, "method": "constant", "q": 2.0, "floor": 0.0,
                           "coverage": 0.9, **cells})
    parsed, raw = parse_card(card_json(card).encode())
    assert parsed.interval is not None and parsed.interval.cell_q == cells["cell_q"]
    assert raw["interval"]["groups"] == ["smoker"]


def test_an_explainer_with_the_exports_check_round_trips() -> None:
    """The export's explainer (medcast.explain): background rows with nulls, the sampling plan
    and its check against shap; the same card and bytes back, absent keys not written."""
    check = ExplainerCheck("shap 0.51.0 ExactExplainer, maskers.Independent", 89, 1.339e-06,
                           0.07806, margin_coverage=1.0)
    explainer = ExplainerCard([[40.0, None, "no"], [61.0, 27.5, None]], 150, 42, "sampling",
                              check)
    card = build(explainer=explainer)
    text = card_json(card)
    parsed, raw = parse_card(text.encode())
    assert parsed == card and parsed.explainer == explainer and card_json(parsed) == text
    assert raw["explainer"]["background"][1] == [61.0, 27.5, None]
    assert "n_tied" not in raw["explainer"]["check"]  # written only when some rows tied
    tied = build(explainer=ExplainerCard([[1.0, 2.0, "no"]], 150, 42, "exact",
                                         ExplainerCheck("shap", 3, 0.0, 0.1, n_tied=2)))
    assert parse_card(card_json(tied).encode())[1]["explainer"]["check"]["n_tied"] == 2
    with pytest.raises(CardError, match="rows of 3 values"):
        build(explainer=ExplainerCard([[1.0, "no"]], 150, 42, "exact"))
