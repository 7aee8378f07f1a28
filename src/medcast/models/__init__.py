"""Candidate models, one record each in REGISTRY. Every candidate is a scikit-learn Pipeline:
preprocessing (imputation, scaling, one-hot, cut-offs) fitted on the training folds only, then a
regressor whose target is standardised (so regularisation strengths mean the same on every
dataset).

Adding a candidate is one record here, its place in SIMPLEST_FIRST, plus its
`conf/model/<name>.yaml` (defaults and search space); the ONNX export and the safe loader read
what they need from the record. The null model (NULL_MODEL, predicting the training mean) is
scored beside them by train and never selected.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from medcast.errors import ConfigError
from medcast.features import FeatureSchema, make_preprocessor


@dataclass(frozen=True)
class Candidate:
    """One candidate model: how to build it, and what the export and the loader must know."""

    # "module:Class" of the regressor; built with the conf/model defaults (minus `step_params`)
    # plus `fixed` arguments.
    regressor: str
    fixed: dict[str, Any] = field(default_factory=dict)
    # Pass the study's seed as this argument (None: the regressor is deterministic).
    seed_arg: str | None = None
    # Hyperparameters that configure pipeline steps (below), not the regressor.
    step_params: tuple[str, ...] = ()
    # Extra numeric steps after scaling (e.g. splines), and steps after the preprocessor.
    numeric_steps: Callable[[dict[str, Any]], list[Any]] | None = None
    after_steps: Callable[[dict[str, Any]], list[tuple[str, Any]]] | None = None
    # The regressor takes NaN itself: missing numbers are not imputed for it.
    native_missing: bool = False
    # Inside the ONNX graph the regressor is fed float32 features, as scikit-learn or Keras
    # feed it (trees cast X to float32; ONNX Runtime's SVM has no double kernel).
    onnx_float32: bool = False
    # Fully qualified types besides sklearn/numpy/scipy.sparse that its saved pipeline holds
    # (the skops allow-list, medcast.models.io).
    safe_types: tuple[str, ...] = ()
    # On large tables (cv.large.hist_boosting_above rows), built as this cheaper record of the
    # same family, its hyperparameters translated by `approximate_params`.
    approximate_as: str | None = None
    approximate_params: Callable[[dict[str, Any]], dict[str, Any]] | None = None
    # Trains in minibatch epochs (batch_size, validation_split, time_budget): the
    # cv.large.mlp_* rules bound its steps per epoch and its seconds per fit.
    epochs: bool = False
    # Its fits take far longer than the rest (seconds, not milliseconds): scheduled first, so a
    # worker process that loaded its framework keeps it.
    expensive: bool = False


def _splines(p: dict[str, Any]) -> list[Any]:
    from sklearn.preprocessing import SplineTransformer

    return [SplineTransformer(n_knots=int(p.get("n_knots", 3)), degree=3)]


def _interactions(p: dict[str, Any]) -> list[tuple[str, Any]]:
    # Pairwise products and squares of every encoded input (e.g. smoker × bmi>30), rescaled
    # so one penalty fits all of them; the elastic net keeps the few that matter.
    from sklearn.preprocessing import PolynomialFeatures, StandardScaler

    return [("interactions", PolynomialFeatures(int(p.get("degree", 2)), include_bias=False)),
            ("scale", StandardScaler())]


def _as_hist_boosting(hp: dict[str, Any]) -> dict[str, Any]:
    """GradientBoostingRegressor's settings in HistGradientBoostingRegressor's names (the row
    subsample has no counterpart and is left out)."""
    names = {"n_estimators": "max_iter", "learning_rate": "learning_rate",
             "max_depth": "max_depth", "min_samples_leaf": "min_samples_leaf",
             "max_features": "max_features"}
    return {names[k]: v for k, v in hp.items() if k in names}


_TREE_FLOAT32 = {"onnx_float32": True}
REGISTRY: dict[str, Candidate] = {
    "linear": Candidate("sklearn.linear_model:LinearRegression"),
    "ridge": Candidate("sklearn.linear_model:Ridge"),
    "lasso": Candidate("sklearn.linear_model:Lasso", {"max_iter": 20_000}, "random_state"),
    "elastic_net": Candidate("sklearn.linear_model:ElasticNet", {"max_iter": 20_000},
                             "random_state"),
    "spline_ridge": Candidate(
        "sklearn.linear_model:Ridge", step_params=("n_knots",), numeric_steps=_splines,
        # SplineTransformer keeps scipy B-splines.
        safe_types=("scipy.interpolate._bsplines.BSpline",
                    "scipy._lib.array_api_compat.numpy._aliases.asarray"),
    ),
    "poly_elastic_net": Candidate("sklearn.linear_model:ElasticNet", {"max_iter": 50_000},
                                  "random_state", step_params=("degree",),
                                  after_steps=_interactions),
    "knn": Candidate("sklearn.neighbors:KNeighborsRegressor"),
    "decision_tree": Candidate("sklearn.tree:DecisionTreeRegressor", seed_arg="random_state",
                               **_TREE_FLOAT32),
    # One job: the stage is already busy on 2 cores, and results must not depend on threads.
    "random_forest": Candidate("sklearn.ensemble:RandomForestRegressor", {"n_jobs": 1},
                               "random_state", **_TREE_FLOAT32),
    "gradient_boosting": Candidate("sklearn.ensemble:GradientBoostingRegressor",
                                   seed_arg="random_state", approximate_as="hist_boosting",
                                   approximate_params=_as_hist_boosting, **_TREE_FLOAT32),
    # Histogram boosting computes in float64 and learns where missing values go: no imputation.
    "hist_boosting": Candidate("sklearn.ensemble:HistGradientBoostingRegressor",
                               seed_arg="random_state", native_missing=True),
    "svr": Candidate("sklearn.svm:SVR", onnx_float32=True),
    "mlp": Candidate("medcast.models.mlp:KerasMLPRegressor", seed_arg="random_state",
                     onnx_float32=True, safe_types=("medcast.models.mlp.KerasMLPRegressor",),
                     epochs=True, expensive=True),
}


# The one-standard-error rule (train.rule: one_se) takes the first of these that is within one
# standard error of the best: fewest effective parameters and most readable first (a linear
# model a clinician can read off, then penalised and spline variants, then local and tree
# models, ensembles, and the network last).
SIMPLEST_FIRST = ("linear", "ridge", "lasso", "elastic_net", "spline_ridge", "poly_elastic_net",
                  "knn", "decision_tree", "svr", "random_forest", "gradient_boosting",
                  "hist_boosting", "mlp")

# The null model: every candidate is compared with it in the same folds; it is in the
# leaderboard, never selected, tuned or exported (it has no conf/model file).
NULL_MODEL = "mean"
BASELINES: dict[str, Candidate] = {
    NULL_MODEL: Candidate("sklearn.dummy:DummyRegressor", {"strategy": "mean"}),
}


def regressor_class(candidate: Candidate) -> type:
    module, _, name = candidate.regressor.partition(":")
    cls: type = getattr(importlib.import_module(module), name)
    return cls


def get(name: str) -> Candidate:
    """A candidate's record, or the null model's."""
    found = REGISTRY.get(name) or BASELINES.get(name)
    if found is None:
        raise ConfigError(f"unknown model '{name}' (known: {', '.join(REGISTRY)})")
    return found


def check_configs(names: list[str] | tuple[str, ...]) -> None:
    """Every conf/model/<name>.yaml has a record here, and every record has a file."""
    unknown = [n for n in names if n not in REGISTRY]
    absent = [n for n in REGISTRY if n not in names]
    if unknown or absent:
        raise ConfigError(
            f"conf/model/ and medcast.models.REGISTRY differ: files without a model {unknown}, "
            f"models without a file {absent}"
        )


def build(name: str, params: dict[str, Any], schema: FeatureSchema, seed: int) -> Any:
    """The full pipeline of candidate `name`: preprocessing → regressor on a standardised target."""
    from sklearn.compose import TransformedTargetRegressor
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler

    candidate = get(name)
    params = dict(params)
    kwargs = {k: v for k, v in params.items() if k not in candidate.step_params}
    if candidate.seed_arg:
        kwargs[candidate.seed_arg] = seed
    try:
        regressor = regressor_class(candidate)(**{**candidate.fixed, **kwargs})
    except TypeError as err:  # an unknown hyperparameter in conf/model/<name>.yaml
        raise ConfigError(f"conf/model/{name}.yaml: {err}") from None
    numeric_steps = candidate.numeric_steps(params) if candidate.numeric_steps else []
    after = candidate.after_steps(params) if candidate.after_steps else []
    return Pipeline(
        [
            ("preprocess", make_preprocessor(schema, numeric_steps,
                                             impute=not candidate.native_missing)),
            *after,
            ("model", TransformedTargetRegressor(regressor=regressor, transformer=StandardScaler())),
        ]
    )
