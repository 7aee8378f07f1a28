"""Stage preprocess: validate the raw table, split train/test (seeded), write
data/processed/{train,test}.csv and the feature schema."""

from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd

from medcast.config import DatasetConfig, PreprocessConfig, load_params
from medcast.datasets import load_raw, validate
from medcast.errors import cli
from medcast.features import FeatureSchema, infer_schema, save_schema

log = logging.getLogger("medcast.preprocess")


def split(
    frame: pd.DataFrame, ds: DatasetConfig, cfg: PreprocessConfig
) -> tuple[pd.DataFrame, pd.DataFrame, FeatureSchema]:
    """Seeded train/test split of a validated table, and the schema of its training part."""
    from sklearn.model_selection import train_test_split

    train, test = train_test_split(frame, test_size=cfg.test_size, random_state=cfg.seed)
    return train, test, infer_schema(train, ds)


@cli
def main() -> None:
    params = load_params()
    ds, paths = params.dataset, params.paths
    frame = validate(load_raw(ds), ds)
    train, test, schema = split(frame, ds, params.preprocess)
    for path, part in ((paths.train, train), (paths.test, test)):
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        part.to_csv(path, index=False)
    save_schema(schema, Path(paths.schema))
    log.info("%s: %d rows valid → train %d, test %d", ds.name, len(frame), len(train), len(test))


if __name__ == "__main__":
    main()
