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
from medcast.onnx.contract import DOUBLE_SUFFIX, OUTPUT_NAME, column
from serve.schemas import ExplanationOut
from serve.served import ModelError


@dataclass
class Explainer:
    """The served model's explainer: the cut graph's sessions, the background as the body's
    input columns, and the plan of coalitions."""

    body: Any  # onnxruntime.InferenceSession: body inputs → prediction
    door: Any | None  # onnxruntime.InferenceSession: float32 numeric inputs → doubles
    features: tuple[tuple[str, str], ...]  # (name, type) in card order
    numeric: tuple[str, ...]  # the features the door converts (the body takes their doubles)
    background: list[np.ndarray]  # one body input column per feature
    plan: shapley.Plan
    seconds: float = 0.0  # loading and the warm-up explanation

    @property
    def rows(self) -> int:
        return len(self.background[0])

    def _body_names(self) -> list[str]:
        return [name + DOUBLE_SUFFIX if name in self.numeric else name
                for name, _ in self.features]

    def body_columns(self, rows: Sequence[Sequence[Any]]) -> list[np.ndarray]:
        """The body's input columns for rows in card feature order (None where missing):
        the feed's columns, the numeric ones through the door."""
        cols = [column([r[i] for r in rows], kind).reshape(-1)
                for i, (_, kind) in enumerate(self.features)]
        if self.door is not None:
            index = {name: i for i, (name, _) in enumerate(self.features)}
            feed = {name: cols[index[name]].reshape(-1, 1) for name in self.numeric}
            for name, out in zip(self.numeric, self.door.run(None, feed), strict=True):
                cols[index[name]] = np.asarray(out).reshape(-1)
        return cols

    def _predict(self, columns: list[np.ndarray]) -> np.ndarray:
        feed = {name: col.reshape(-1, 1) for name, col in zip(self._body_names(), columns,
                                                              strict=True)}
        (out,) = self.body.run([OUTPUT_NAME], feed)
        return np.asarray(out).reshape(-1)

    def explain(self, row: Sequence[Any]) -> ExplanationOut:
        """One patient (a tuple in card feature order, None where missing)."""
        x = [col[0] for col in self.body_columns([row] * 2)]  # two rows: see LoadedModel._run
        e = shapley.explain(self._predict, x, self.background, self.plan)
        names = [name for name, _ in self.features]
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

    from medcast.onnx.cut import at_the_door

    start = time.perf_counter()
    try:
        cut = at_the_door(model_bytes)
        body = ort.InferenceSession(cut.body, sess_options=session_options,
                                    providers=["CPUExecutionProvider"])
        door = (ort.InferenceSession(cut.door, sess_options=session_options,
                                     providers=["CPUExecutionProvider"])
                if cut.door is not None else None)
    except Exception as exc:  # noqa: BLE001 - onnx/ORT raise their own types
        raise ModelError(f"cannot build the explainer's graph: {exc}") from None
    features = tuple((f.name, f.type) for f in card.features)
    plan = shapley.plan(len(features), card.explainer.coalitions, card.explainer.seed)
    explainer = Explainer(body, door, features, cut.numeric, [], plan)
    try:
        explainer.background = explainer.body_columns(card.explainer.background)
        out = explainer.explain(example)
    except Exception as exc:  # noqa: BLE001
        raise ModelError(f"the explainer fails on a valid example row: {exc}") from None
    total = out.base_value + sum(out.contributions.values())
    if not np.isfinite(total) or abs(total - predicted) > 1e-4 * max(1.0, abs(predicted)):
        raise ModelError(f"the explainer's contributions add up to {total}, not to the "
                         f"prediction {predicted}: refusing to explain")
    explainer.seconds = time.perf_counter() - start
    return explainer
