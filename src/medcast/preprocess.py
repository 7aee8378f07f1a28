"""Stage preprocess: read and validate the raw table (conf/dataset/<name>.yaml), drop the rows
without a target, split train/test (seeded), write data/processed/{train,test}.parquet and the
feature schema."""

from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd

from medcast.config import load_params
from medcast.datasets import DatasetConfig, drop_missing_target, load_raw, validate
from medcast.datasets.choice import dataset_change
from medcast.datasets.spec import dataset_file, review_markers
from medcast.errors import ConfigError, DataValidationError, cli
from medcast.features import FeatureSchema, infer_schema, save_schema
from medcast.params import PreprocessConfig

log = logging.getLogger("medcast.preprocess")


def split(
    frame: pd.DataFrame, ds: DatasetConfig, cfg: PreprocessConfig
) -> tuple[pd.DataFrame, pd.DataFrame, FeatureSchema]:
    """Drop rows without a target, then a seeded train/test split of the rest, and the schema
    of its training part (which records how many rows were dropped)."""
    from sklearn.model_selection import train_test_split

    kept, dropped = drop_missing_target(frame, ds)
    if len(kept) < 10:
        raise DataValidationError(
            f"{ds.raw}: only {len(kept)} rows have a target ('{ds.target}'); at least 10 are "
            "needed to split and cross-validate"
        )
    train, test = train_test_split(kept, test_size=cfg.test_size, random_state=cfg.seed)
    return train, test, infer_schema(train, ds, dropped)


def write_split(part: pd.DataFrame, path: Path) -> None:
    """Parquet keeps types and missing values exactly (no text round trip)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    part.reset_index(drop=True).to_parquet(path, index=False)


def check_reviewed(ds: DatasetConfig, cfg: PreprocessConfig) -> None:
    """No REVIEW marker of `init` may reach the model card and reports: stop naming every key
    (preprocess.allow_review: true only warns)."""
    markers = review_markers(ds)
    if not markers:
        return
    where = f"{dataset_file(ds.name)}: REVIEW markers left in {', '.join(markers)}"
    if cfg.allow_review:
        log.warning("%s: they reach the model card and reports as written "
                    "(preprocess.allow_review: true)", where)
        return
    raise ConfigError(f"{where}: replace each with the real value (then commit the file), or "
                      "run anyway with `dvc exp run -S preprocess.allow_review=true`")


@cli
def main() -> None:
    params = load_params()
    ds, paths = params.dataset, params.paths
    if change := dataset_change(ds.name):
        log.warning("%s", change)
    check_reviewed(ds, params.preprocess)
    frame = validate(load_raw(ds), ds)
    train, test, schema = split(frame, ds, params.preprocess)
    write_split(train, Path(paths.train))
    write_split(test, Path(paths.test))
    save_schema(schema, Path(paths.schema))
    dropped = f"; {schema.n_dropped_missing_target} without a target dropped" \
        if schema.n_dropped_missing_target else ""
    log.info("%s: %d rows valid%s → train %d, test %d", ds.name, len(frame), dropped, len(train),
             len(test))


if __name__ == "__main__":
    main()
