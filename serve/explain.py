"""Per-patient explanations of the served model: `POST /predict?explain=true`.

Shapley contributions against the background rows the export drew from the training split and
put in the md5-locked card (`explainer`), computed by medcast.shapley from the served graph
itself: every coalition of every background row in one ONNX Runtime call. The graph is cut
(medcast.onnx.cut) to its `prediction` output and split at its door: the background's numeric
values are converted to the graph's doubles once at load, the patient's once per request, and
only the body runs on the coalitions. Not one bit of a prediction changes (tests/serve/
test_explain.py). The export checked the same computation against `shap` (the card's
`explainer.check`). Nothing here runs unless a request asks for an explanation.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from medcast import shapley
from medcast.card import ModelCard
from medcast.onnx.cut import CutGraph
from serve.answers import ExplanationOut
from serve.served import ModelError


@dataclass
class Explainer:
    """The served model's explainer: the cut graph, the background as the body's input
    columns, and the plan of model rows."""

    graph: CutGraph
    background: list[np.ndarray]  # one body input column per feature
    plan: shapley.Plan
    seconds: float = 0.0  # loading and the warm-up explanation

    @property
    def rows(self) -> int:
        return len(self.background[0])

    def explain(self, row: Sequence[Any]) -> ExplanationOut:
        """One patient (a tuple in card feature order, None where missing)."""
        e = shapley.explain(self.graph.predict(), self.graph.patient(row), self.background,
                            self.plan)
        names = [name for name, _ in self.graph.features]
        margin = (dict(zip(names, e.margin.tolist(), strict=True))
                  if e.margin is not None else None)
        return ExplanationOut(
            base_value=e.base_value,
            contributions=dict(zip(names, e.contributions.tolist(), strict=True)),
            method=e.method,
            missing=[name for name, value in zip(names, row, strict=True) if value is None],
            background_rows=self.rows,
            margin=margin,
        )

    def explain_rows(self, rows: Sequence[Sequence[Any]]) -> list[ExplanationOut]:
        return [self.explain(row) for row in rows]


def load_explainer(model_bytes: bytes, card: ModelCard, session_options: Any,
                   example: Sequence[Any], predicted: float) -> Explainer | None:
    """The explainer of a card that has one (None otherwise), warmed up on `example`, whose
    served prediction is `predicted`: its contributions must add up to it, else ModelError."""
    if card.explainer is None:
        return None
    import onnxruntime as ort

    def session(graph: bytes) -> Any:
        return ort.InferenceSession(graph, sess_options=session_options,
                                    providers=["CPUExecutionProvider"])

    start = time.perf_counter()
    features = tuple((f.name, f.type) for f in card.features)
    try:
        graph = CutGraph.of(model_bytes, features, session)
    except Exception as exc:  # noqa: BLE001 - onnx/ORT raise their own types
        raise ModelError(f"cannot build the explainer's graph: {exc}") from None
    rows = card.explainer.background
    plan = shapley.plan(len(features), card.explainer.coalitions, card.explainer.seed, len(rows))
    try:
        explainer = Explainer(graph, graph.columns(rows), plan)
        out = explainer.explain(example)
    except Exception as exc:  # noqa: BLE001
        raise ModelError(f"the explainer fails on a valid example row: {exc}") from None
    total = out.base_value + sum(out.contributions.values())
    if not np.isfinite(total) or abs(total - predicted) > 1e-4 * max(1.0, abs(predicted)):
        raise ModelError(f"the explainer's contributions add up to {total}, not to the "
                         f"prediction {predicted}: refusing to explain")
    explainer.seconds = time.perf_counter() - start
    return explainer
