"""The export stage's pure parts (medcast.export): the parity rows. On a large test split the
parity check compares a seeded sample that holds every pattern of missing values, and a graph
broken only on a rare pattern is still caught; the graph's batches run on every core with the
same results as on one."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from devtools.factories import messy_clinical_frame, messy_clinical_spec
from medcast import models
from medcast.datasets import validate
from medcast.errors import ArtifactError
from medcast.export import parity_rows, parity_sample
from medcast.onnx.contract import OUTPUT_NAME
from medcast.onnx.export import to_onnx
from medcast.onnx.parity import check_parity
from medcast.onnx.runtime import inference_session, run_batched
from medcast.preprocess import split
from tests.conftest import tiny


@pytest.fixture(scope="module")
def messy():
    """A ridge on a clinical table with missing values, its graph, its schema and a large test
    split (60,000 rows) in which one pattern of missing values is rare (3 rows)."""
    ds = messy_clinical_spec()
    frame = messy_clinical_frame(400, seed=2)
    train, test, schema = split(validate(frame.astype(object).where(frame.notna(), ""), ds),
                                ds, tiny().preprocess)
    for part in (train, test):  # a missing category is None, as read_split gives it
        for c in schema.categorical:
            part[c] = part[c].astype(object).where(part[c].notna(), None)
    p = tiny()
    est = models.build("ridge", p.models["ridge"].defaults, schema, seed=0)
    est.fit(train[schema.names], train[schema.target])
    X = test[schema.names]
    complete = X.dropna(subset=schema.nullable)
    rare = complete.head(3).copy()
    rare[schema.nullable] = None  # every nullable feature missing: 3 rows of 60,000
    big = pd.concat([complete.sample(60_000 - 3, replace=True, random_state=0), rare],
                    ignore_index=True)
    return est, to_onnx(est, schema), schema, big


def _patterns(X: pd.DataFrame, schema) -> set[tuple[bool, ...]]:
    return set(map(tuple, X[schema.nullable].isna().to_numpy()))


def test_a_small_split_is_compared_whole(messy):
    _, _, schema, big = messy
    small = big.head(300)
    assert parity_sample(small, schema, 5000, seed=1) is small


def test_the_sample_is_bounded_seeded_and_holds_every_missing_pattern(messy):
    _, _, schema, big = messy
    sample = parity_sample(big, schema, 500, seed=1)
    assert len(sample) == 500 and sample.index.is_monotonic_increasing  # test order kept
    assert _patterns(sample, schema) == _patterns(big, schema)
    assert sample.index.equals(parity_sample(big, schema, 500, seed=1).index)
    assert not sample.index.equals(parity_sample(big, schema, 500, seed=2).index)


def test_a_graph_broken_on_a_rare_pattern_is_caught_on_the_sample(messy):
    est, graph, schema, big = messy
    sample = parity_sample(big, schema, 500, seed=1)
    rows = parity_rows(sample, schema)
    assert check_parity(est, graph, rows, workers=2)["n"] == len(rows)

    class Broken:
        """The native model, 5 % off where every nullable feature is missing: as if the graph
        imputed those rows wrongly."""

        def predict(self, X: pd.DataFrame) -> np.ndarray:
            out = est.predict(X)
            return np.where(X[schema.nullable].isna().all(axis=1), out * 1.05, out)

    rare = big[schema.nullable].isna().all(axis=1)
    assert rare.sum() == 3  # 1 in 20,000: a uniform sample of 500 would miss them 93 % of times
    with pytest.raises(ArtifactError, match="differ from scikit-learn"):
        check_parity(Broken(), graph, parity_sample(big, schema, 500, seed=1))
    without = big[~rare].sample(500, random_state=0)  # a sample that misses the pattern
    assert check_parity(Broken(), graph, without)["max_rel_diff"] < 1e-4  # would pass it


def test_batches_on_every_core_give_the_same_results(messy):
    _, graph, _, big = messy
    session = inference_session(graph)
    rows = big.head(3000)
    (one,) = run_batched(session, [OUTPUT_NAME], rows, batch=256, workers=1)
    (many,) = run_batched(session, [OUTPUT_NAME], rows, batch=256, workers=4)
    assert np.array_equal(one, many)


def test_the_served_graph_is_measured_against_the_serving_budget(messy, caplog):
    """export.served_cost measures the graph export writes (here the ridge's) as train measures
    candidates: within the default budget nothing is said beyond the figures; over a limit the
    reason is returned and logged as a warning; without limits nothing is judged."""
    import logging

    from medcast.export import served_cost
    from medcast.params import ServingBudget

    _, graph, schema, X = messy
    data = graph.SerializeToString()
    with caplog.at_level(logging.INFO, logger="medcast.export"):
        assert served_cost(data, schema, X, ServingBudget(max_mb=50, max_ms=1000)) is None
        over = served_cost(data, schema, X, ServingBudget(max_mb=1e-6, max_ms=1000))
        assert served_cost(data, schema, X, ServingBudget(max_mb=None, max_ms=None)) is None
    assert over is not None and over.startswith("ONNX graph ") and "max_mb 1e-06" in over
    mb = f"{len(data) / 1e6:.3g} MB"
    assert sum(f"served graph: {mb}" in r.message for r in caplog.records) == 3
    warnings = [r.message for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings == [f"the served graph is over train.serving_budget: {over}"]
