"""Typed, strict view of a study's configuration, read from:

* `params.yaml` — what an experimenter varies (composed by Hydra from `conf/params/`; DVC shows
  each key as a column of `dvc exp show`): the dataset's name and one section per stage;
* `conf/dataset/<name>.yaml` — the dataset named in params.yaml (medcast.datasets.spec);
* `conf/model/<name>.yaml` — each candidate's default hyperparameters and search space;
* `dvc.yaml` — the file locations, once (`vars: - paths: {...}`).

The conf files are file dependencies of the stages in dvc.yaml, so editing one reruns what it
feeds. Every stage reads its configuration through `load_params()`; a typo fails at start.
params.yaml's sections (one dataclass per stage) live in medcast.params; this module reads
the files into them, ties them to the conf files and dvc.yaml, and composes params.yaml
(`python -m medcast.config`).
"""

from __future__ import annotations

import difflib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from medcast.datasets.spec import DatasetConfig, dataset_config
from medcast.errors import ConfigError
from medcast.params import (
    SECTIONS,
    CVConfig,
    EvaluateConfig,
    ExportConfig,
    PlotConfig,
    PreprocessConfig,
    StudyParams,
    TrainConfig,
    TuneConfig,
)
from medcast.typed import build

PARAMS_FILE = "params.yaml"
HYDRA_DIR = "conf/params"  # Hydra's config_dir (.dvc/config): composed into params.yaml
MODEL_DIR = "conf/model"
PIPELINE_FILE = "dvc.yaml"


@dataclass(frozen=True)
class ModelConfig:
    """conf/model/<name>.yaml: defaults (what train scores) and the space tune searches."""

    defaults: dict[str, Any] = field(default_factory=dict)
    # float/int {low, high, log}, or {choices: [...]}, per hyperparameter.
    search_space: dict[str, dict[str, Any]] = field(default_factory=dict)
    description: str | None = None


@dataclass(frozen=True)
class PathsConfig:
    train: str
    test: str
    schema: str
    leaderboard: str
    leaderboard_csv: str
    cv_scores: str
    selection: str
    model_dir: str
    interval_model: str
    tuning: str
    history: str
    onnx: str
    card: str
    metrics: str
    intervals: str
    validation: str
    calibration: str
    calibration_curve: str
    instability: str
    predictions: str
    importance: str
    explanations: str
    figures: str
    report: str
    tripod: str


@dataclass(frozen=True)
class Params:
    """Everything a stage may read: params.yaml plus the files it names."""

    dataset: DatasetConfig
    models: dict[str, ModelConfig]
    paths: PathsConfig
    preprocess: PreprocessConfig
    cv: CVConfig
    train: TrainConfig
    tune: TuneConfig
    evaluate: EvaluateConfig = field(default_factory=EvaluateConfig)
    export: ExportConfig = field(default_factory=ExportConfig)
    plot: PlotConfig = field(default_factory=PlotConfig)

    @property
    def trial_cluster(self) -> str | None:
        """Where tune's trials fit their folds: tune.cluster, or else where every stage's do."""
        return self.tune.cluster or self.cv.cluster

    @property
    def candidates(self) -> list[str]:
        """The candidates train scores, in order."""
        if isinstance(self.train.candidates, str):
            return list(self.models)
        return list(self.train.candidates)


def _read_yaml(path: Path, what: str) -> Any:
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{path}: not found ({what})") from None
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML: {err}") from None


def load_models(root: Path = Path(".")) -> dict[str, ModelConfig]:
    """conf/model/*.yaml by name (sorted). That each name is a known model is checked against
    the registry by the stages (medcast.models.check_configs)."""
    folder = root / MODEL_DIR
    files = sorted(folder.glob("*.yaml"))
    if not files:
        raise ConfigError(f"{folder}: no model configuration (conf/model/<name>.yaml)")
    models = {}
    for path in files:
        raw = _read_yaml(path, "model configuration")
        try:
            models[path.stem] = build(ModelConfig, raw)
        except ConfigError as err:
            raise ConfigError(f"{path}: {err}") from None
    return models


def load_paths(root: Path = Path(".")) -> PathsConfig:
    """File locations: `vars: - paths: {...}` in dvc.yaml, their one home."""
    doc = _read_yaml(root / PIPELINE_FILE, "the DVC pipeline") or {}
    found = [v["paths"] for v in doc.get("vars") or [] if isinstance(v, dict) and "paths" in v]
    if len(found) != 1:
        raise ConfigError(f"{root / PIPELINE_FILE}: expected one `vars: - paths: {{...}}` entry")
    try:
        return build(PathsConfig, found[0], "paths")
    except ConfigError as err:
        raise ConfigError(f"{root / PIPELINE_FILE}: vars: {err}") from None


def parse_study(raw: Any, label: str = "") -> StudyParams:
    """params.yaml's own keys, checked; `label` (the file) prefixes messages."""
    try:
        study = build(StudyParams, raw)
        for name in SECTIONS:
            getattr(study, name).check()
    except ConfigError as err:
        raise ConfigError(f"{label}: {err}" if label else str(err)) from None
    return study


def parse_params(raw: dict[str, Any], root: str | os.PathLike[str] = ".",
                 models: dict[str, ModelConfig] | None = None, label: str = "") -> Params:
    """Validate a params mapping (as in params.yaml) and read the files it names under `root`
    (conf/dataset/<dataset>.yaml, conf/model/, dvc.yaml); `models` replaces conf/model/.
    `label` (the params file) prefixes messages about params keys; conf files name themselves."""
    root = Path(root)
    study = parse_study(raw, label)
    params = Params(
        dataset=dataset_config(study.dataset, root),
        models=load_models(root) if models is None else models,
        paths=load_paths(root), **{name: getattr(study, name) for name in SECTIONS},
    )
    for name in params.candidates:
        if name not in params.models:
            close = difflib.get_close_matches(name, list(params.models), n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            raise ConfigError(f"{label + ': ' if label else ''}train.candidates: unknown model "
                              f"'{name}'{hint}")
    if params.train.select is not None and params.train.select not in params.candidates:
        raise ConfigError(f"{label + ': ' if label else ''}train.select: "
                          f"'{params.train.select}' is not in train.candidates")
    params.evaluate.check_groups(params.dataset, label)
    return params


def load_params(path: str | os.PathLike[str] = PARAMS_FILE) -> Params:
    """Read and validate params.yaml and the conf files it names (beside it)."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{path}: not found (run from the repository root)") from None
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML: {err}") from None
    return parse_params(raw, path.parent, label=str(path))


def compose_yaml(overrides: list[str] | None = None, config_dir: str | Path = HYDRA_DIR) -> str:
    """Compose conf/params/ with Hydra and render it byte-for-byte as `dvc exp run` writes
    params.yaml."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from omegaconf import OmegaConf

    with initialize_config_dir(config_dir=str(Path(config_dir).resolve()), version_base=None):
        cfg = hydra_compose(config_name="config", overrides=overrides or [])
    OmegaConf.resolve(cfg)
    return OmegaConf.to_yaml(cfg)


def compose(overrides: list[str] | None = None,
            config_dir: str | Path = HYDRA_DIR) -> dict[str, Any]:
    """The composed params as a mapping (see compose_yaml)."""
    return yaml.safe_load(compose_yaml(overrides, config_dir))


def main(argv: list[str] | None = None) -> None:
    """`python -m medcast.config [override ...]`: rewrite params.yaml from conf/params/ (as
    `dvc exp run -S` does), after checking the result and the conf files it names."""
    import sys

    text = compose_yaml(sys.argv[1:] if argv is None else argv)
    parse_params(yaml.safe_load(text))
    Path(PARAMS_FILE).write_text(text, encoding="utf-8")
    print(f"wrote {PARAMS_FILE}")


if __name__ == "__main__":
    from medcast.errors import cli

    cli(main)()
