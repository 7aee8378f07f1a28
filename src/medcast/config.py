"""Typed, strict view of a study's configuration, read from:

* `params.yaml` — what an experimenter varies (composed by Hydra from `conf/params/`; DVC shows
  each key as a column of `dvc exp show`): the dataset's name and one section per stage;
* `conf/dataset/<name>.yaml` — the dataset named in params.yaml (medcast.datasets.spec);
* `conf/model/<name>.yaml` — each candidate's default hyperparameters and search space;
* `dvc.yaml` — the file locations, once (`vars: - paths: {...}`).

The conf files are file dependencies of the stages in dvc.yaml, so editing one reruns what it
feeds. Every stage reads its configuration through `load_params()`; a typo fails at start.
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
class PreprocessConfig:
    test_size: float
    seed: int
    # Run on a dataset description that still holds `init`'s REVIEW markers (warn instead of
    # stopping): for a first look at a table, never for a result to share.
    allow_review: bool = False

    def check(self) -> None:
        if not 0.0 < self.test_size < 1.0:
            raise ConfigError(f"preprocess.test_size: {self.test_size} is not in (0, 1)")


@dataclass(frozen=True)
class LargeConfig:
    """cv.large: what candidates whose cost outgrows the rows do on large tables (train and
    tune apply it alike; medcast.models.large). Every threshold is in fit rows."""

    # Fit on a seeded subsample of at most this many rows (validation still scores every row);
    # null for a model turns its rule off (`-S cv.large.max_rows.svr=null`).
    max_rows: dict[str, int | None] = field(default_factory=dict)
    # Not run above this many rows (a leaderboard row says so); null: always run.
    skip_above: dict[str, int | None] = field(default_factory=dict)
    # gradient_boosting runs as HistGradientBoosting above this many rows (null: never).
    hist_boosting_above: int | None = None
    # The MLP's batch grows so that an epoch is at most this many steps (null: never).
    mlp_max_steps: int | None = None
    # Seconds per MLP fit, then it stops with its best weights (null: no limit). Depends on the
    # machine's speed: an MLP that stops on it is not byte-stable.
    mlp_time_budget: float | None = None
    # Multi-fidelity selection above this many rows (null: never): every candidate (and every
    # tune trial) is cross-validated on a seeded stratified subsample of this many rows, and
    # only the best halving_keep are cross-validated again on all rows.
    halving_above: int | None = None
    halving_keep: int = 2
    # Above halving_above rows, tune runs at most this many trials of an expensive candidate
    # (the registry's `expensive`: the MLP), whose fits cost seconds where the others' cost
    # milliseconds (null: tune.n_trials, whatever the rows).
    expensive_trials: int | None = None

    def check(self, folds: int) -> None:
        if self.halving_above is not None and self.halving_above < 10 * folds:
            raise ConfigError(f"cv.large.halving_above: {self.halving_above} rows cannot be "
                              f"cross-validated in {folds} folds (at least {10 * folds}; null: "
                              "off)")
        if self.halving_keep < 1:
            raise ConfigError(f"cv.large.halving_keep: {self.halving_keep} must be at least 1")
        if self.expensive_trials is not None and self.expensive_trials < 1:
            raise ConfigError(f"cv.large.expensive_trials: {self.expensive_trials} must be at "
                              "least 1 (null: tune.n_trials)")


@dataclass(frozen=True)
class CVConfig:
    """params.yaml `cv`: the resampling every stage that refits shares (train's comparison,
    tune's trials, evaluate's out-of-fold residuals), and where its fits run."""

    seed: int
    folds: int
    # Repeats of the K-fold split, each reshuffled (scikit-learn's RepeatedKFold, seeded): the
    # first repeat is the plain seeded KFold.
    repeats: int = 1
    # Processes for the fits (null: every core); the scores do not depend on it.
    n_jobs: int | None = None
    # null: local processes; a Dask scheduler (tcp://host:8786) runs the fits, tune's too
    # unless tune.cluster names another.
    cluster: str | None = None
    large: LargeConfig = field(default_factory=LargeConfig)

    def check(self) -> None:
        if self.folds < 2:
            raise ConfigError(f"cv.folds: {self.folds} must be at least 2")
        if self.repeats < 1:
            raise ConfigError(f"cv.repeats: {self.repeats} must be at least 1")
        if self.n_jobs is not None and self.n_jobs < 1:
            raise ConfigError(f"cv.n_jobs: {self.n_jobs} must be at least 1 (null: every core)")
        check_cluster("cv.cluster", self.cluster, "local processes")
        self.large.check(self.folds)


def check_cluster(key: str, address: str | None, null: str) -> None:
    """A Dask scheduler address (cv.cluster, tune.cluster), or null (meaning `null`)."""
    if address is not None and "://" not in address:
        raise ConfigError(f"{key}: '{address}' is not a scheduler address like "
                          f"tcp://host:8786 (null: {null})")


@dataclass(frozen=True)
class ServingBudget:
    """train.serving_budget: what a served prediction may cost. A candidate whose ONNX graph
    (medcast.serving_cost) is larger, or whose single-row prediction is slower, is not
    selected; null turns a limit off."""

    max_mb: float | None = 50.0
    max_ms: float | None = 5.0

    @property
    def active(self) -> bool:
        return self.max_mb is not None or self.max_ms is not None

    def check(self) -> None:
        for key, limit, unit in (("max_mb", self.max_mb, "MB"), ("max_ms", self.max_ms, "ms")):
            if limit is not None and not limit > 0:
                raise ConfigError(f"train.serving_budget.{key}: {limit:g} {unit} must be "
                                  "positive (null: no limit)")


@dataclass(frozen=True)
class TrainConfig:
    # null: the candidate train.rule picks; a name forces that candidate.
    select: str | None = None
    # "all": every model with a conf/model/<name>.yaml (by name); or a list of names.
    candidates: str | list[str] = "all"
    # best: the lowest mean CV RMSE; one_se: the simplest within one standard error of it
    # (medcast.selection).
    rule: str = "best"
    # Stop the stage (exit 2) when no candidate beats predicting the mean.
    require_signal: bool = False
    # The served cost a selected candidate may have (medcast.serving_cost).
    serving_budget: ServingBudget = field(default_factory=ServingBudget)

    def check(self) -> None:
        if isinstance(self.candidates, str) and self.candidates != "all":
            raise ConfigError(f"train.candidates: 'all' or a list of model names, got "
                              f"{self.candidates!r}")
        if self.rule not in ("best", "one_se"):
            raise ConfigError(f"train.rule: {self.rule!r} is not one of best, one_se")
        self.serving_budget.check()
        if self.candidates == []:
            raise ConfigError("train.candidates: empty; name at least one model")


@dataclass(frozen=True)
class TuneConfig:
    seed: int
    n_trials: int
    timeout: float | None
    storage: str
    # Distributed tuning (workers joining through a shared storage): a running trial records a
    # heartbeat every heartbeat_interval s; one silent for grace_period s is failed and retried
    # (at most max_retry times); a worker waits up to worker_wait s for the stage's study.
    heartbeat_interval: int = 10
    grace_period: int = 30
    max_retry: int = 2
    worker_wait: float = 600.0
    # A Dask scheduler for the trials' CV folds; null: where cv's fits run (cv.cluster).
    cluster: str | None = None

    def check(self) -> None:
        if (self.heartbeat_interval < 1 or self.grace_period <= self.heartbeat_interval
                or self.max_retry < 0):
            raise ConfigError(
                f"tune: need heartbeat_interval ≥ 1 s < grace_period and max_retry ≥ 0, got "
                f"{self.heartbeat_interval}, {self.grace_period}, {self.max_retry}")
        if self.n_trials < 1:
            raise ConfigError("tune.n_trials: must be at least 1")
        check_cluster("tune.cluster", self.cluster, "as cv.cluster")


@dataclass(frozen=True)
class EvaluateConfig:
    # Conformal prediction intervals (medcast.intervals) cover the true value this often.
    interval_level: float = 0.9
    # Bootstrap refits of the tuned model for its internal validation (medcast.validation).
    bootstrap: int = 200
    # Above this many training rows the refits run on a seeded sample of this many (null:
    # never): a conservative optimism (medcast.validation.internal_validation).
    bootstrap_max_rows: int | None = 20000
    # Categorical features whose levels (crossed) each get their own conformal quantile, so
    # that the level holds within each (Mondrian conformal; medcast.mondrian); (): one for all.
    interval_groups: tuple[str, ...] = ()
    # Folds of the out-of-fold residuals the intervals are calibrated on (an expensive
    # candidate uses cv.folds).
    interval_folds: int = 20
    # Above this many training rows the intervals are calibrated within a seeded sample of this
    # many (null: never): wider, never narrower (medcast.evaluate.calibrate).
    interval_max_rows: int | None = 100000

    def check(self) -> None:
        if self.interval_folds < 2:
            raise ConfigError(f"evaluate.interval_folds: {self.interval_folds} must be at least 2")
        if self.bootstrap < 10:
            raise ConfigError(f"evaluate.bootstrap: {self.bootstrap} refits are too few for an "
                              "optimism estimate (at least 10; 200 is usual)")
        if self.bootstrap_max_rows is not None and self.bootstrap_max_rows < 100:
            raise ConfigError(f"evaluate.bootstrap_max_rows: {self.bootstrap_max_rows} must be "
                              "at least 100 (null: every training row)")
        if self.interval_max_rows is not None and self.interval_max_rows < 1000:
            raise ConfigError(f"evaluate.interval_max_rows: {self.interval_max_rows} must be at "
                              "least 1000 (fewer conformal scores move the coverage by points; "
                              "null: every training row)")
        if not 0.0 < self.interval_level < 1.0:
            raise ConfigError(f"evaluate.interval_level: {self.interval_level} is not in (0, 1)")

    def check_groups(self, ds: DatasetConfig, label: str) -> None:
        """Each name in interval_groups is a categorical feature of the dataset, once."""
        groups = self.interval_groups
        categorical = [c for c in ds.features if ds.columns[c].type == "category"]
        where = f"{label + ': ' if label else ''}evaluate.interval_groups"
        for name in groups:
            if name not in categorical:
                kind = ("the target" if name == ds.target else
                        "a numeric feature" if name in ds.features else "not a feature")
                raise ConfigError(f"{where}: column '{name}' is {kind} of dataset '{ds.name}'; "
                                  f"its categorical features: {', '.join(categorical) or 'none'}")
        repeated = sorted({name for name in groups if groups.count(name) > 1})
        if repeated:
            raise ConfigError(f"{where}: {', '.join(repeated)} listed more than once")


@dataclass(frozen=True)
class ExportConfig:
    # ONNX and native predictions must agree to this relative difference on every parity row.
    parity_rtol: float = 1e-4
    # The parity rows: every test row up to this many, else a seeded sample of this size with
    # every pattern of missing values (medcast.export.parity_sample).
    parity_max_rows: int = 5000
    # Per-patient explanations (medcast.shapley): training rows in the background, and the
    # coalitions one explanation evaluates (exact if 2^features ≤ it, else sampling).
    explain_background: int = 25
    explain_coalitions: int = 300
    # Test rows explained as the service would and checked against shap (a seeded sample with
    # every pattern of missing values, as the parity rows; medcast.explain).
    explain_check_rows: int = 200

    def check(self) -> None:
        if self.parity_max_rows < 100:
            raise ConfigError(f"export.parity_max_rows: {self.parity_max_rows} must be at least "
                              "100 (the parity check needs rows to find a broken graph)")
        if self.explain_background < 1:
            raise ConfigError(f"export.explain_background: {self.explain_background} must be "
                              "at least 1 (the rows an explanation is measured against)")
        if self.explain_coalitions < 2:
            raise ConfigError(f"export.explain_coalitions: {self.explain_coalitions} must be at "
                              "least 2 (the empty and the full coalition)")
        if self.explain_check_rows < 10:
            raise ConfigError(f"export.explain_check_rows: {self.explain_check_rows} must be at "
                              "least 10 (the rows the explanations are checked on)")


@dataclass(frozen=True)
class PlotConfig:
    seed: int = 42
    permutation_repeats: int = 10
    # Test rows the permutation importance is computed on: all of them up to this many, else a
    # seeded sample of this size (medcast.plot.permutation_table).
    permutation_max_rows: int = 10000

    def check(self) -> None:
        if self.permutation_max_rows < 100:
            raise ConfigError(f"plot.permutation_max_rows: {self.permutation_max_rows} must be "
                              "at least 100 (the size of the sample the importance is scored on)")


@dataclass(frozen=True)
class StudyParams:
    """params.yaml itself: the knobs of an experiment."""

    dataset: str
    preprocess: PreprocessConfig
    cv: CVConfig
    train: TrainConfig
    tune: TuneConfig
    evaluate: EvaluateConfig = field(default_factory=EvaluateConfig)
    export: ExportConfig = field(default_factory=ExportConfig)
    plot: PlotConfig = field(default_factory=PlotConfig)


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
        for section in (study.preprocess, study.cv, study.train, study.tune, study.evaluate,
                        study.export, study.plot):
            section.check()
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
        paths=load_paths(root), preprocess=study.preprocess, cv=study.cv, train=study.train,
        tune=study.tune, evaluate=study.evaluate, export=study.export, plot=study.plot,
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
