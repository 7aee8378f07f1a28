"""Per-patient explanations of the served model: `POST /predict?explain=true`.

Shapley contributions against the background rows the export drew from the training split and
put in the md5-locked card (`explainer`), computed by medcast.shapley from the served graph
itself: every coalition of every background row in one ONNX Runtime call, on a copy of the graph
cut down to its `prediction` output (the interval's nodes would double the cost and change no
contribution). The export checked the same computation against `shap` (the card's
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
from medcast.onnx.contract import OUTPUT_NAME, column
from serve.schemas import ExplanationOut
from serve.served import ModelError


def prediction_only(model_bytes: bytes) -> bytes:
    """The graph with only the `prediction` output and the nodes and initializers it needs
    (ONNX Runtime runs every node of a graph, whichever outputs are asked for)."""
    import onnx  # only for a model with an explainer

    model = onnx.load_model_from_string(model_bytes)
    graph = model.graph
    needed = {OUTPUT_NAME}
    nodes = []
    for node in reversed(graph.node):
        if any(name in needed for name in node.output):
            nodes.append(node)
            needed.update(name for name in node.input if name)
    kept_outputs = [o for o in graph.output if o.name == OUTPUT_NAME]
    kept_init = [t for t in graph.initializer if t.name in needed]
    del graph.node[:]
    graph.node.extend(reversed(nodes))
    del graph.output[:]
    graph.output.extend(kept_outputs)
    del graph.initializer[:]
    graph.initializer.extend(kept_init)
    return model.SerializeToString()


@dataclass
class Explainer:
    """The served model's explainer: its own ORT session (prediction only), the background as
    graph input columns, and the plan of coalitions."""

    session: Any  # onnxruntime.InferenceSession
    features: tuple[tuple[str, str], ...]  # (name, type) in card order
    background: list[np.ndarray]  # one column per feature, in the feed's dtype
    plan: shapley.Plan
    seconds: float = 0.0  # the warm-up explanation's time

    @property
    def rows(self) -> int:
        return len(self.background[0])

    def _predict(self, columns: list[np.ndarray]) -> np.ndarray:
        feed = {name: col.reshape(-1, 1) for (name, _), col in zip(self.features, columns,
                                                                    strict=True)}
        (out,) = self.session.run([OUTPUT_NAME], feed)
        return np.asarray(out).reshape(-1)

    def explain(self, row: Sequence[Any]) -> ExplanationOut:
        """One patient (a tuple in card feature order, None where missing)."""
        x = [column([value], kind)[0, 0] for value, (_, kind) in zip(row, self.features,
                                                                       strict=True)]
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
                   example: Sequence[Any]) -> Explainer | None:
    """The explainer of a card that has one (None otherwise), warmed up on `example`: its
    contributions must add up to its prediction, else ModelError."""
    if card.explainer is None:
        return None
    import onnxruntime as ort

    start = time.perf_counter()
    try:
        session = ort.InferenceSession(prediction_only(model_bytes), sess_options=session_options,
                                       providers=["CPUExecutionProvider"])
    except Exception as exc:  # noqa: BLE001 - onnx/ORT raise their own types
        raise ModelError(f"cannot build the explainer's graph: {exc}") from None
    features = tuple((f.name, f.type) for f in card.features)
    columns = list(zip(*card.explainer.background, strict=True))
    background = [column(values, kind).reshape(-1) for values, (_, kind) in zip(columns, features,
                                                                                strict=True)]
    plan = shapley.plan(len(features), card.explainer.coalitions, card.explainer.seed)
    explainer = Explainer(session, features, background, plan)
    try:
        out = explainer.explain(example)
    except Exception as exc:  # noqa: BLE001
        raise ModelError(f"the explainer fails on a valid example row: {exc}") from None
    total = out.base_value + sum(out.contributions.values())
    (pred,) = explainer._predict([column([v], kind).reshape(-1)
                                  for v, (_, kind) in zip(example, features, strict=True)] )
    if not np.isfinite(total) or abs(total - pred) > 1e-4 * max(1.0, abs(pred)):
        raise ModelError(f"the explainer's contributions add up to {total}, not to the "
                         f"prediction {pred}: refusing to explain")
    explainer.seconds = time.perf_counter() - start
    return explainer
