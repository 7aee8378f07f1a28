"""HistGradientBoostingRegressor: skl2onnx 1.20 fails to build its TreeEnsembleRegressor node
(numpy integer attributes). Exported here with double thresholds (ai.onnx.ml 3) and the learned
direction of missing values (nodes_missing_value_tracks_true). Delete when upstream's converts a
fitted model at ai.onnx.ml 3 and matches it (test_onnx_converters checks it)."""

from __future__ import annotations

from typing import Any

import numpy as np

from medcast.errors import ArtifactError
from medcast.onnx.converters.common import Emitter, column_shape

ALIAS = "MedcastHistGradientBoostingRegressor"


def register() -> None:
    from skl2onnx import update_registered_converter
    from sklearn.ensemble import HistGradientBoostingRegressor

    update_registered_converter(HistGradientBoostingRegressor, ALIAS, column_shape,
                                _convert_hist_boosting)


def _convert_hist_boosting(scope: Any, operator: Any, container: Any) -> None:
    """TreeEnsembleRegressor with double thresholds (ai.onnx.ml 3): x <= threshold goes left;
    a missing x goes where the split learned (missing_go_to_left)."""
    from onnx import numpy_helper

    hgb = operator.raw_operator
    if type(hgb._loss.link).__name__ != "IdentityLink" or hgb.n_trees_per_iteration_ != 1:
        raise ArtifactError("HistGradientBoostingRegressor export supports the squared-error "
                            f"loss only, got loss={hgb.loss!r}")
    nodes_t: list[int] = []
    nodes_n: list[int] = []
    feature: list[int] = []
    modes: list[str] = []
    values: list[float] = []
    true_ids: list[int] = []
    false_ids: list[int] = []
    missing_true: list[int] = []
    leaf_t: list[int] = []
    leaf_n: list[int] = []
    weights: list[float] = []
    for t, (predictor,) in enumerate(hgb._predictors):
        nodes = predictor.nodes
        if nodes["is_categorical"].any():
            raise ArtifactError("HistGradientBoostingRegressor with categorical splits is not "
                                "exported: medcast one-hot encodes categories before it")
        for i, node in enumerate(nodes):
            nodes_t.append(t)
            nodes_n.append(i)
            if node["is_leaf"]:
                feature.append(0)
                modes.append("LEAF")
                values.append(0.0)
                true_ids.append(0)
                false_ids.append(0)
                missing_true.append(0)
                leaf_t.append(t)
                leaf_n.append(i)
                weights.append(float(node["value"]))
            else:
                feature.append(int(node["feature_idx"]))
                modes.append("BRANCH_LEQ")
                values.append(float(node["num_threshold"]))
                true_ids.append(int(node["left"]))
                false_ids.append(int(node["right"]))
                missing_true.append(int(node["missing_go_to_left"]))
    baseline = np.asarray(hgb._baseline_prediction, dtype=np.float64).reshape(-1)
    emit = Emitter(scope, container, operator.inputs[0])
    if emit.dtype is not np.float64:
        raise ArtifactError("HistGradientBoostingRegressor export expects double inputs")

    def tensor(name: str, data: list[float] | np.ndarray) -> Any:
        return numpy_helper.from_array(np.asarray(data, dtype=np.float64), name)

    # TreeEnsembleRegressor (ai.onnx.ml 3) outputs float whatever its input: cast back.
    summed = scope.get_unique_variable_name("hgb_sum")
    container.add_node(
        "TreeEnsembleRegressor", [operator.inputs[0].full_name],
        [summed], op_domain="ai.onnx.ml", op_version=3,
        name=scope.get_unique_operator_name("TreeEnsembleRegressor"),
        n_targets=1, aggregate_function="SUM", post_transform="NONE",
        nodes_treeids=nodes_t, nodes_nodeids=nodes_n, nodes_featureids=feature,
        nodes_modes=modes, nodes_values_as_tensor=tensor("values", values),
        nodes_truenodeids=true_ids, nodes_falsenodeids=false_ids,
        nodes_missing_value_tracks_true=missing_true,
        target_treeids=leaf_t, target_nodeids=leaf_n, target_ids=[0] * len(leaf_t),
        target_weights_as_tensor=tensor("weights", weights),
        base_values_as_tensor=tensor("base", baseline),
    )
    emit.node("Cast", [summed], outputs=[operator.outputs[0].full_name], to=emit.proto)
