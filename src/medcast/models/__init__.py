"""Candidate models. Every candidate is a scikit-learn Pipeline: preprocessing fitted on the
training folds only, then a regressor whose target is standardised (so regularisation strengths
mean the same on every dataset)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from medcast.features import FeatureSchema

Builder = Callable[[dict[str, Any], int], Any]


def _linear(p: dict[str, Any], seed: int) -> Any:
    from sklearn.linear_model import LinearRegression

    return LinearRegression(**p)


def _ridge(p: dict[str, Any], seed: int) -> Any:
    from sklearn.linear_model import Ridge

    return Ridge(**p)


def _lasso(p: dict[str, Any], seed: int) -> Any:
    from sklearn.linear_model import Lasso

    return Lasso(max_iter=20_000, random_state=seed, **p)


def _elastic_net(p: dict[str, Any], seed: int) -> Any:
    from sklearn.linear_model import ElasticNet

    return ElasticNet(max_iter=20_000, random_state=seed, **p)


def _spline_ridge(p: dict[str, Any], seed: int) -> Any:
    from sklearn.linear_model import Ridge

    # n_knots configures the SplineTransformer (see build); anything unknown is a TypeError.
    return Ridge(**{k: v for k, v in p.items() if k != "n_knots"})


def _poly_elastic_net(p: dict[str, Any], seed: int) -> Any:
    from sklearn.linear_model import ElasticNet

    # degree configures the PolynomialFeatures step (see build).
    return ElasticNet(max_iter=50_000, random_state=seed,
                      **{k: v for k, v in p.items() if k != "degree"})


def _knn(p: dict[str, Any], seed: int) -> Any:
    from sklearn.neighbors import KNeighborsRegressor

    return KNeighborsRegressor(**p)


def _decision_tree(p: dict[str, Any], seed: int) -> Any:
    from sklearn.tree import DecisionTreeRegressor

    return DecisionTreeRegressor(random_state=seed, **p)


def _random_forest(p: dict[str, Any], seed: int) -> Any:
    from sklearn.ensemble import RandomForestRegressor

    # One job: the stage is already busy on 2 cores, and results must not depend on threads.
    return RandomForestRegressor(random_state=seed, n_jobs=1, **p)


def _gradient_boosting(p: dict[str, Any], seed: int) -> Any:
    from sklearn.ensemble import GradientBoostingRegressor

    return GradientBoostingRegressor(random_state=seed, **p)


def _svr(p: dict[str, Any], seed: int) -> Any:
    from sklearn.svm import SVR

    return SVR(**p)


def _mlp(p: dict[str, Any], seed: int) -> Any:
    from medcast.models.mlp import KerasMLPRegressor

    return KerasMLPRegressor(random_state=seed, **p)


CANDIDATES: dict[str, Builder] = {
    "linear": _linear,
    "ridge": _ridge,
    "lasso": _lasso,
    "elastic_net": _elastic_net,
    "spline_ridge": _spline_ridge,
    "poly_elastic_net": _poly_elastic_net,
    "knn": _knn,
    "decision_tree": _decision_tree,
    "random_forest": _random_forest,
    "gradient_boosting": _gradient_boosting,
    "svr": _svr,
    "mlp": _mlp,
}


def build(name: str, params: dict[str, Any], schema: FeatureSchema, seed: int) -> Any:
    """The full pipeline of candidate `name`: preprocessing → regressor on a standardised target."""
    from sklearn.compose import TransformedTargetRegressor
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import PolynomialFeatures, SplineTransformer, StandardScaler

    from medcast.errors import ConfigError
    from medcast.features import make_preprocessor

    if name not in CANDIDATES:
        raise ConfigError(f"unknown model '{name}' (known: {', '.join(CANDIDATES)})")
    numeric_steps = []
    if name == "spline_ridge":
        numeric_steps = [SplineTransformer(n_knots=int(params.get("n_knots", 3)), degree=3)]
    # Pairwise products and squares of every encoded input (e.g. smoker × bmi>30), rescaled
    # so one penalty fits all of them; the elastic net keeps the few that matter.
    interactions = []
    if name == "poly_elastic_net":
        degree = int(params.get("degree", 2))
        interactions = [("interactions", PolynomialFeatures(degree, include_bias=False)),
                        ("scale", StandardScaler())]
    try:
        regressor = CANDIDATES[name](dict(params), seed)
    except TypeError as err:  # an unknown hyperparameter in params.yaml
        raise ConfigError(f"train.models.{name}: {err}") from None
    return Pipeline(
        [
            ("preprocess", make_preprocessor(schema, numeric_steps)),
            *interactions,
            ("model", TransformedTargetRegressor(regressor=regressor, transformer=StandardScaler())),
        ]
    )
