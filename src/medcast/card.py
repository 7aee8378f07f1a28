"""The model card (`models/model.json`): its one typed definition, the builder the pipeline calls
and the parser the service calls.

The card says what the served ONNX graph takes and what it is: dataset, target and unit, model
and hyperparameters, every feature (type, unit, allowed and observed range, categories, whether
it may be missing), test and CV scores, the md5s of the training split and of the graph, the
graph's parity with the native model and, for a graph with `lower`/`upper` outputs, the
conformal interval (level, method, q, floor, test coverage), and whether any candidate beat the
null model (`signal`). The service validates requests
with it (serve.schemas), serves it at GET /model, and the dashboard (serve/static/app.js) reads
it there; tests/test_card.py checks what app.js reads against these Structs.

Reads and writes no file: `build_card()` makes a ModelCard from the evaluate stage's results,
`card_json()` gives the file's text, `parse_card()` validates a file's bytes. Guarantees:
* the same inputs give the same bytes: nothing from the clock or the git revision (which changes
  when dvc.lock is committed) goes in; the training split is named by its md5 (DVC's hash;
  `git log -S <md5> dvc.lock` finds the revisions) and the revision goes to MLflow instead;
* keys are written in the order of the Structs' fields, as `json.dumps(…, indent=2)` (the bytes
  the stage has always written); `interval` only for a graph that has the bounds;
* the builder writes every declared key and returns the card as the service parses it, so the
  pipeline never writes a card the service refuses, and a card re-encodes to its own bytes;
* the parser is strict: a wrong type, a missing required key or an unknown key is refused, with
  the key's path. Keys written by every card since the first (d6aa5f4) are required; a key
  added later has a default, so the card of an older revision still loads (MEDCAST_MODEL_REV);
  a key the pipeline stopped writing is listed in RETIRED and ignored.

msgspec only at import (the service imports it); the builder imports medcast.metrics lazily.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import TYPE_CHECKING, Annotated, Any, Literal

import msgspec

if TYPE_CHECKING:
    from medcast.features import FeatureSchema

# Keys an earlier pipeline wrote and this one does not, with the revision that stopped: read and
# ignored (GET /model still shows them), so those cards still load.
RETIRED = {
    # The git revision made the card's bytes depend on the commit (00fdf1f): the card names the
    # training split by `training_data_md5` and MLflow keeps the revision (tag git_revision).
    "training_revision": "00fdf1f",
}


class Feature(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """One input of the graph and of a request, named as in the training data."""

    name: str
    type: Literal["int", "float", "category"]
    unit: str | None
    min: float | None  # the allowed range (the dataset's description): requests outside: 422
    max: float | None
    observed_min: float | None  # the range of the training split
    observed_max: float | None
    categories: list[str] | None  # a category feature's levels
    # May be missing: a request may send null or leave the field out; the graph imputes it.
    nullable: bool = False
    missing_rate: float | None = None  # share missing in the training split


class IntervalCard(msgspec.Struct, frozen=True, forbid_unknown_fields=True, omit_defaults=True):
    """The conformal interval the graph's `lower`/`upper` outputs give: ŷ ∓ q·max(σ(x), floor)
    (adaptive) or ŷ ∓ q (constant); medcast.intervals. With evaluate.interval_groups
    (Mondrian conformal, medcast.mondrian) q is per cell of those features' levels."""

    level: Annotated[float, msgspec.Meta(gt=0, lt=1)]
    method: Literal["adaptive", "constant"]
    q: Annotated[float, msgspec.Meta(ge=0)]  # conformal quantile of the scores (pooled)
    floor: Annotated[float, msgspec.Meta(ge=0)]  # lower bound of σ(x); 0 for constant width
    coverage: Annotated[float, msgspec.Meta(ge=0, le=1)]  # share of test rows inside
    # Written only with interval_groups: the features, q and training rows per cell
    # ("sex=2, smoker=yes"), and the cells that use the pooled q (too few rows).
    groups: list[str] | None = None
    cell_q: dict[str, float] | None = None
    cell_n: dict[str, int] | None = None
    pooled_cells: list[str] | None = None


class Parity(msgspec.Struct, frozen=True, forbid_unknown_fields=True, omit_defaults=True):
    """The graph against the native model on the parity rows (medcast.onnx.parity)."""

    max_abs_diff: float
    max_rel_diff: float
    n: int  # rows compared
    # test rows the compared ones were sampled from (export.parity_max_rows); written if sampled
    sampled_from: int | None = None
    n_tied: int | None = None  # rows left out (a kNN tie at the k-th neighbour); written if any
    interval_max_rel_diff: float | None = None  # the bounds' difference; written with intervals


class SignalCard(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Whether any candidate predicts better than the training mean (medcast.selection): when
    `signal` is false the predictions carry no information beyond the average, and the service
    and dashboard say so."""

    signal: bool
    message: str  # the one line the stage log, report.md and the dashboard show


class ExplainerCheck(msgspec.Struct, frozen=True, forbid_unknown_fields=True, omit_defaults=True):
    """The export's check of the service's explanations (medcast.shapley on the graph) against
    the reference library on test rows (medcast.export): exact contributions against `shap`'s
    on the same background; `margin_coverage` for a sampling plan: the share of the served
    contributions within their stated 95 % margin of the exact ones."""

    reference: str  # e.g. "shap 0.51.0 ExactExplainer, maskers.Independent"
    n: int  # test rows compared
    max_abs_diff: float  # exact contributions, graph vs reference, in target units
    tolerance: float  # the stage fails above it: 1e-3 × the target's standard deviation
    margin_coverage: float | None = None  # sampling plan only
    # rows with a kNN tie at the k-th neighbour in one of their coalition rows, where the
    # reference took the graph's neighbour (either is the model's: medcast.explain); if any
    n_tied: int | None = None


class ExplainerCard(msgspec.Struct, frozen=True, forbid_unknown_fields=True, omit_defaults=True):
    """What the service needs to explain a prediction (medcast.shapley): the background rows
    (training rows drawn by the export, features in card order, null where missing; not shown
    at GET /model: they are patients), the budget of coalitions per explanation (exact if
    2^features ≤ it, else antithetic permutation sampling), the orders' seed, the method that
    budget gives this card's features, and the export's check against the reference."""

    background: list[list[float | str | None]]
    coalitions: Annotated[int, msgspec.Meta(ge=2)]
    seed: int
    method: Literal["exact", "sampling"]
    check: ExplainerCheck | None = None


class ModelCard(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """`models/model.json`, its keys in the order written."""

    name: str  # medcast-<dataset>
    dataset: str
    target: str
    target_unit: str | None
    model: str  # the candidate's name (medcast.models)
    params: dict[str, Any]  # its tuned hyperparameters
    features: list[Feature]
    metrics: dict[str, dict[str, float]]  # {"test": {"r2": …}, "cv": {"r2": …, "r2_std": …}}
    signal: SignalCard | None = None  # (issue 23) None: a card from before the null model
    training_data_md5: str | None = None  # (00fdf1f) DVC's md5 of the training split
    onnx_md5: str  # DVC's md5 of the graph: the service checks the bytes it loads against it
    parity: Parity
    interval: IntervalCard | None = None  # None (key absent): a graph without `lower`/`upper`
    explainer: ExplainerCard | None = None  # (issue 25) None: no per-patient explanations


class CardError(ValueError):
    """The card is unusable (malformed JSON, unknown or missing keys, bad feature definitions)."""


def build_card(report: Mapping[str, Any], meta: Mapping[str, Any], schema: FeatureSchema,
               onnx_bytes: bytes, parity: Mapping[str, Any], train_bytes: bytes,
               interval: Mapping[str, Any] | None = None,
               signal: Mapping[str, Any] | None = None,
               explainer: ExplainerCard | None = None) -> ModelCard:
    """The card of a graph exported by the evaluate stage: `report` is reports/metrics.json's
    content (medcast.evaluate.metrics_report), `meta` the tuned model's (`model`, `params`),
    `parity` medcast.onnx.parity.check_parity's result, `interval` the IntervalModel's card()
    with the test coverage (None: a graph without bounds), `signal` train's verdict on the null
    model (models/selection.json's `signal`), `explainer` the background and budget of the
    per-patient explanations (None: none). Raises CardError if the service
    would refuse the card (e.g. a category feature without categories)."""
    from medcast.metrics import split_scores

    card = ModelCard(
        name=f"medcast-{schema.dataset}",
        dataset=schema.dataset,
        target=schema.target,
        target_unit=schema.target_unit,
        model=report["model"],
        params=dict(meta["params"]),
        features=[_feature(f) for f in schema.features],
        metrics=split_scores(dict(report)),
        signal=SignalCard(bool(signal["signal"]), str(signal["message"])) if signal else None,
        training_data_md5=md5_hex(train_bytes),
        onnx_md5=md5_hex(onnx_bytes),
        parity=Parity(**_python(parity)),
        interval=IntervalCard(**_python(interval)) if interval else None,
        explainer=explainer,
    )
    # Read back as the service reads it: CardError where the service would refuse it, and the
    # declared types (an int allowed range becomes a float), so the card re-encodes to its bytes.
    return parse_card(card_json(card).encode())[0]


def card_dict(card: ModelCard) -> dict[str, Any]:
    """The card as the JSON object written: builtins in field order; no `interval` key for a
    graph without bounds, no `parity.n_tied` without ties."""
    out = msgspec.to_builtins(card)
    for key in ("interval", "signal", "explainer"):
        if getattr(card, key) is None:
            del out[key]
    return out


def card_json(card: ModelCard) -> str:
    """models/model.json's text. json.dumps, not msgspec's encoder: the bytes the stage has
    always written (non-ASCII escaped, Python's float repr), so dvc.lock's md5s stay."""
    return json.dumps(card_dict(card), indent=2) + "\n"


def parse_card(raw: bytes) -> tuple[ModelCard, dict[str, Any]]:
    """The card, validated, and the JSON object as read (RETIRED keys kept: GET /model serves
    it). Raises CardError saying what is wrong and where (`$.features[2].type`)."""
    try:
        as_dict = msgspec.json.decode(raw)
        if not isinstance(as_dict, dict):
            raise CardError("model card is invalid: expected a JSON object")
        current = {k: v for k, v in as_dict.items() if k not in RETIRED}
        card = msgspec.convert(current, ModelCard)
    except msgspec.DecodeError as exc:  # ValidationError is a subclass
        raise CardError(f"model card is invalid: {exc}") from None
    names = [f.name for f in card.features]
    if not names:
        raise CardError("model card lists no features")
    if len(set(names)) != len(names):
        raise CardError(f"model card repeats a feature name: {names}")
    for f in card.features:
        if f.type == "category" and not f.categories:
            raise CardError(f"model card: category feature {f.name!r} has no categories")
        if f.min is not None and f.max is not None and f.min > f.max:
            raise CardError(f"model card: feature {f.name!r} has min > max")
    if card.explainer is not None:
        rows = card.explainer.background
        if not rows or any(len(r) != len(names) for r in rows):
            raise CardError(f"model card: explainer.background must hold rows of {len(names)} "
                            "values, one per feature")
    return card, as_dict


def _feature(f: Any) -> Feature:
    """A card feature from a medcast.features.Feature (its allowed range is the card's min/max)."""
    return Feature(f.name, f.type, f.unit, f.allowed_min, f.allowed_max, f.observed_min,
                   f.observed_max, list(f.categories) if f.categories else None, f.nullable,
                   f.missing_rate)


def md5_hex(data: bytes) -> str:
    """DVC's hash of a file's bytes (an identity, not security): what dvc.lock, the card, the
    registry's tags and the service's checks compare."""
    return hashlib.md5(data, usedforsecurity=False).hexdigest()


def _python(values: Mapping[str, Any] | None) -> dict[str, Any]:
    """NumPy scalars (a rounded np.float64) as the Python numbers json.dumps writes for them."""
    return {k: v.item() if hasattr(v, "item") else v for k, v in (values or {}).items()}
