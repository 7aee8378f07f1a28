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
    a = _tree_attributes(hgb)
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
        nodes_treeids=a["tree"], nodes_nodeids=a["node"], nodes_featureids=a["feature"],
        nodes_modes=a["mode"], nodes_values_as_tensor=tensor("values", a["threshold"]),
        nodes_truenodeids=a["true"], nodes_falsenodeids=a["false"],
        nodes_missing_value_tracks_true=a["missing_true"],
        target_treeids=a["leaf_tree"], target_nodeids=a["leaf_node"],
        target_ids=[0] * len(a["leaf_tree"]),
        target_weights_as_tensor=tensor("weights", a["weight"]),
        base_values_as_tensor=tensor("base", baseline),
    )
    emit.node("Cast", [summed], outputs=[operator.outputs[0].full_name], to=emit.proto)


def _tree_attributes(hgb: Any) -> dict[str, list[Any]]:
    """TreeEnsembleRegressor's per-node and per-leaf attribute lists for every tree of `hgb`:
    a branch sends x <= threshold to `true` (left), a missing x where it learned; a leaf
    carries its value as the weight of target 0."""
    a: dict[str, list[Any]] = {k: [] for k in (
        "tree", "node", "feature", "mode", "threshold", "true", "false", "missing_true",
        "leaf_tree", "leaf_node", "weight")}
    for t, (predictor,) in enumerate(hgb._predictors):
        nodes = predictor.nodes
        if nodes["is_categorical"].any():
            raise ArtifactError("HistGradientBoostingRegressor with categorical splits is not "
                                "exported: medcast one-hot encodes categories before it")
        for i, node in enumerate(nodes):
            a["tree"].append(t)
            a["node"].append(i)
            leaf = bool(node["is_leaf"])
            a["feature"].append(0 if leaf else int(node["feature_idx"]))
            a["mode"].append("LEAF" if leaf else "BRANCH_LEQ")
            a["threshold"].append(0.0 if leaf else float(node["num_threshold"]))
            a["true"].append(0 if leaf else int(node["left"]))
            a["false"].append(0 if leaf else int(node["right"]))
            a["missing_true"].append(0 if leaf else int(node["missing_go_to_left"]))
            if leaf:
                a["leaf_tree"].append(t)
                a["leaf_node"].append(i)
                a["weight"].append(float(node["value"]))
    return a
