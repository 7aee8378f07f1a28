"""The sections of params.yaml, one typed dataclass each: what an experimenter varies per stage
(`preprocess`, `cv`, `train`, `tune`, `evaluate`, `export`, `plot`) and `StudyParams`, the file
itself. Each section checks its own values (`check()`), naming the key; medcast.config reads
params.yaml into them (medcast.typed.build: unknown keys and wrong types fail at start) and
adds what the conf files and dvc.yaml say.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields

from medcast.datasets.spec import DatasetConfig
from medcast.errors import ConfigError


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


# The stage sections, in params.yaml order: what medcast.config checks and hands to a stage.
SECTIONS = tuple(f.name for f in fields(StudyParams) if f.name != "dataset")
