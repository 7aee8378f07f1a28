"""Typed, strict view of params.yaml: every stage reads its section through here."""

from __future__ import annotations

import dataclasses
import difflib
import os
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from medcast.errors import ConfigError

PARAMS_FILE = "params.yaml"


@dataclass(frozen=True)
class ColumnSpec:
    type: Literal["int", "float", "category"]
    min: float | None = None
    max: float | None = None
    categories: tuple[str, ...] | None = None
    unit: str | None = None
    # Clinical cut-offs of a numeric column (e.g. BMI 30, obesity): each adds the indicator
    # "value > cut-off" to every model's inputs, computed inside the model's pipeline.
    cutoffs: tuple[float, ...] | None = None


@dataclass(frozen=True)
class DatasetConfig:
    name: str
    source: Literal["sklearn", "csv"]
    raw: str
    target: str
    target_unit: str
    columns: dict[str, ColumnSpec]

    @property
    def features(self) -> list[str]:
        return [c for c in self.columns if c != self.target]


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
    tuning: str
    history: str
    onnx: str
    card: str
    metrics: str
    predictions: str
    importance: str
    figures: str
    report: str


@dataclass(frozen=True)
class PreprocessConfig:
    test_size: float
    seed: int


@dataclass(frozen=True)
class TrainConfig:
    seed: int
    cv_folds: int
    select: str | None
    candidates: list[str]
    models: dict[str, dict[str, Any]]


@dataclass(frozen=True)
class TuneConfig:
    seed: int
    n_trials: int
    timeout: float | None
    storage: str
    search_spaces: dict[str, dict[str, dict[str, Any]]]
    # Distributed tuning (workers joining through a shared storage): a running trial records a
    # heartbeat every heartbeat_interval s; one silent for grace_period s is failed and retried
    # (at most max_retry times); a worker waits up to worker_wait s for the stage's study.
    heartbeat_interval: int = 10
    grace_period: int = 30
    max_retry: int = 2
    worker_wait: float = 600.0


@dataclass(frozen=True)
class EvaluateConfig:
    # ONNX and native predictions must agree to this relative difference on every test row.
    parity_rtol: float = 1e-4


@dataclass(frozen=True)
class PlotConfig:
    seed: int
    permutation_repeats: int


@dataclass(frozen=True)
class Params:
    dataset: DatasetConfig
    paths: PathsConfig
    preprocess: PreprocessConfig
    train: TrainConfig
    tune: TuneConfig
    evaluate: EvaluateConfig = field(default_factory=EvaluateConfig)
    plot: PlotConfig = field(default_factory=lambda: PlotConfig(seed=42, permutation_repeats=10))


def _check_type(value: Any, hint: Any, where: str) -> Any:
    """Convert/validate one value against a type hint; raise ConfigError naming the key."""
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if dataclasses.is_dataclass(hint):
        return _build(hint, value, where)
    if hint is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in (a for a in args if a is not type(None)):
            try:
                return _check_type(value, arg, where)
            except ConfigError as err:
                errors.append(str(err))
        raise ConfigError(errors[0])
    if origin is Literal:
        if value not in args:
            raise ConfigError(f"{where}: {value!r} is not one of {list(args)}")
        return value
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        return [_check_type(v, args[0], f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is tuple:
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        return tuple(_check_type(v, args[0], f"{where}[{i}]") for i, v in enumerate(value))
    if origin is dict:
        if value is None:
            value = {}
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        return {k: _check_type(v, args[1], f"{where}.{k}") for k, v in value.items()}
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return value
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return value
    raise TypeError(f"unsupported type hint {hint!r}")  # a bug in this module, not user input


def _build(cls: type, data: Any, where: str) -> Any:
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = [k for k in data if k not in fields]
    if unknown:
        key = unknown[0]
        close = difflib.get_close_matches(key, list(fields), n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else f" (known: {', '.join(fields)})"
        raise ConfigError(f"{where}.{key}: unknown key{hint}".lstrip("."))
    kwargs = {}
    for name, f in fields.items():
        key_where = f"{where}.{name}".lstrip(".")
        if name not in data:
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise ConfigError(f"{key_where}: missing key")
            continue
        kwargs[name] = _check_type(data[name], hints[name], key_where)
    return cls(**kwargs)


def parse_params(raw: dict[str, Any]) -> Params:
    """Validate a params mapping (as in params.yaml) into typed sections."""
    params: Params = _build(Params, raw, "")
    _check_consistency(params)
    return params


def _check_consistency(p: Params) -> None:
    ds = p.dataset
    if ds.target not in ds.columns:
        raise ConfigError(f"dataset.target: '{ds.target}' is not among dataset.columns")
    for name, spec in ds.columns.items():
        if spec.type == "category" and not spec.categories:
            raise ConfigError(f"dataset.columns.{name}: a category column needs 'categories'")
        if spec.min is not None and spec.max is not None and spec.min > spec.max:
            raise ConfigError(f"dataset.columns.{name}: min {spec.min} > max {spec.max}")
        if spec.cutoffs and (spec.type == "category" or name == ds.target):
            raise ConfigError(f"dataset.columns.{name}: cutoffs need a numeric feature column")
    t = p.tune
    if t.heartbeat_interval < 1 or t.grace_period <= t.heartbeat_interval or t.max_retry < 0:
        raise ConfigError(
            f"tune: need heartbeat_interval ≥ 1 s < grace_period and max_retry ≥ 0, got "
            f"{t.heartbeat_interval}, {t.grace_period}, {t.max_retry}"
        )
    if not 0.0 < p.preprocess.test_size < 1.0:
        raise ConfigError(f"preprocess.test_size: {p.preprocess.test_size} is not in (0, 1)")
    if p.train.cv_folds < 2:
        raise ConfigError(f"train.cv_folds: {p.train.cv_folds} must be at least 2")
    if not p.train.candidates:
        raise ConfigError("train.candidates: empty; name at least one model")
    from medcast.models import CANDIDATES  # cheap: no heavy imports at module level

    for name in p.train.candidates:
        if name not in CANDIDATES:
            close = difflib.get_close_matches(name, list(CANDIDATES), n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            raise ConfigError(f"train.candidates: unknown model '{name}'{hint}")
    if p.train.select is not None and p.train.select not in p.train.candidates:
        raise ConfigError(f"train.select: '{p.train.select}' is not in train.candidates")
    if p.tune.n_trials < 1:
        raise ConfigError("tune.n_trials: must be at least 1")


def load_params(path: str | os.PathLike[str] = PARAMS_FILE) -> Params:
    """Read and validate params.yaml; a missing file or bad key is a ConfigError."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{path}: not found (run from the repository root)") from None
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML: {err}") from None
    try:
        return parse_params(raw)
    except ConfigError as err:
        raise ConfigError(f"{path}: {err}") from None


def compose_yaml(overrides: list[str] | None = None, config_dir: str | Path = "conf") -> str:
    """Compose conf/ with Hydra and render it byte-for-byte as `dvc exp run` writes params.yaml."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from omegaconf import OmegaConf

    with initialize_config_dir(config_dir=str(Path(config_dir).resolve()), version_base=None):
        cfg = hydra_compose(config_name="config", overrides=overrides or [])
    OmegaConf.resolve(cfg)
    return OmegaConf.to_yaml(cfg)


def compose(overrides: list[str] | None = None, config_dir: str | Path = "conf") -> dict[str, Any]:
    """The composed params as a mapping (see compose_yaml)."""
    return yaml.safe_load(compose_yaml(overrides, config_dir))


def main(argv: list[str] | None = None) -> None:
    """`python -m medcast.config [override ...]`: rewrite params.yaml from conf/ (as dvc exp run)."""
    import sys

    text = compose_yaml(sys.argv[1:] if argv is None else argv)
    parse_params(yaml.safe_load(text))
    Path(PARAMS_FILE).write_text(text, encoding="utf-8")
    print(f"wrote {PARAMS_FILE}")


if __name__ == "__main__":
    from medcast.errors import cli

    cli(main)()
