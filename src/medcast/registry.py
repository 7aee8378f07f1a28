"""The MLflow model registry: every export registers a version of `medcast-<dataset>`; the
`champion` alias moves to it only when it is better.

A new version becomes champion when there is none yet, or when it beats the current champion on
the same training data (the `training_data_md5` tag: same dataset, same rows) by the selection
metric (the tuned model's mean CV RMSE, tag `cv_rmse`, lower wins, a tie keeps the champion),
and only if some candidate beat the null model (tag `signal`). Anything else keeps the alias
where it is, and the log says why and how to move it anyway:

    python -m medcast.registry promote VERSION [--name medcast-<dataset>]
    python -m medcast.registry list [--name medcast-<dataset>]

Every version carries those tags and the run's (medcast.tracking.run_tags), so the decision
can be read back from the registry; and the md5 of each file the service loads (`onnx_md5`,
`card_md5`: SERVED_FILES), logged under the run's `serving/`, so the service can verify a
version it loads from the registry (serve/registry.py, MEDCAST_MODEL_URI).
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any

from medcast.card import md5_hex
from medcast.errors import ConfigError, cli

log = logging.getLogger("medcast.registry")

CHAMPION = "champion"
# Version tags the decision reads (strings, as MLflow stores tags).
DECISION_TAGS = ("dataset", "training_data_md5", "cv_rmse", "signal")
# The served files, logged under SERVING_DIR of the version's run: file name → the version tag
# holding its md5 (what the service checks the downloaded bytes against).
SERVING_DIR = "serving"
SERVED_FILES = {"model.onnx": "onnx_md5", "model.json": "card_md5"}
# What the registered pyfunc (medcast.mlflow_model) needs to load and run the model, pinned to
# the installed versions (Keras' only for a model saved with a .keras file). Stated, not
# inferred: MLflow's inference loads the model in a subprocess (8 s of a 20 s export) and
# listed pytest and IPython for one model and no scikit-learn for another. medcast itself is
# not on PyPI: `mlflow models serve --env-manager local` runs in this virtualenv.
PYFUNC_REQUIREMENTS = ("mlflow", "numpy", "pandas", "scikit-learn", "skops")
KERAS_REQUIREMENTS = ("tensorflow-cpu", "keras")


def pip_requirements(model_dir: str | Path | None) -> list[str]:
    """The pinned requirements of the pyfunc over the saved model in `model_dir` (None: no
    saved model among its artifacts)."""
    from importlib.metadata import version

    keras = model_dir is not None and any(Path(model_dir).glob("*.keras"))
    return [f"{name}=={version(name)}"
            for name in (*PYFUNC_REQUIREMENTS, *(KERAS_REQUIREMENTS if keras else ()))]


def served_tags(served: list[str]) -> dict[str, str]:
    """{"onnx_md5": …, "card_md5": …}: the md5 of each served file (by its name, SERVED_FILES)."""
    out = {}
    for path in served:
        tag = SERVED_FILES.get(Path(path).name)
        if tag is not None:
            out[tag] = md5_hex(Path(path).read_bytes())
    return out


def model_name(dataset: str) -> str:
    return f"medcast-{dataset}"


def verdict(champion: tuple[str, dict[str, str]] | None, version: str,
            tags: dict[str, str]) -> tuple[bool, str]:
    """Whether version `version` (its `tags`) takes the alias from `champion` (its version and
    tags; None: no champion yet), and why, in one sentence."""
    promote = f"python -m medcast.registry promote {version}"
    if tags.get("signal") == "false":
        return False, f"no candidate beats the mean: not made champion ({promote} to force it)"
    if champion is None:
        return True, "no champion yet"
    current, theirs = champion
    if "cv_rmse" not in theirs or "training_data_md5" not in theirs:
        return True, f"champion version {current} carries no CV RMSE to compare (registered " \
                     "before this rule)"
    if theirs["training_data_md5"] != tags["training_data_md5"]:
        return False, (f"champion version {current} was trained on other data (training data "
                       f"md5 {theirs['training_data_md5'][:12]} against "
                       f"{tags['training_data_md5'][:12]}): the CV scores do not compare; "
                       f"{promote} to switch")
    new, old = float(tags["cv_rmse"]), float(theirs["cv_rmse"])
    if new < old:
        return True, f"CV RMSE {new:.6g} beats champion version {current}'s {old:.6g}"
    return False, (f"CV RMSE {new:.6g} does not beat champion version {current}'s {old:.6g}; "
                   f"{promote} to switch anyway")


def decide(client: Any, name: str, version: str) -> tuple[bool, str]:
    """Apply verdict() to the registry: move the alias or leave it; returns the decision."""
    champion = None
    try:
        current = client.get_model_version_by_alias(name, CHAMPION)
        champion = (str(current.version), dict(current.tags))
    except Exception:  # noqa: BLE001 - MLflow raises MlflowException when the alias is unset
        champion = None
    tags = dict(client.get_model_version(name, version).tags)
    moved, why = verdict(champion, version, tags)
    if moved:
        client.set_registered_model_alias(name, CHAMPION, version)
    return moved, why


def register(report: dict[str, Any], hyperparameters: dict[str, Any], artifacts: dict[str, str],
             example: Any, predicted: Any, served: list[str], decision_tags: dict[str, str],
             pyfunc: str, logged: tuple[str, ...]) -> str | None:
    """Log the tuned model (a code-based pyfunc `pyfunc` over `artifacts`: nothing pickled),
    the files the service loads (`served`) and metrics.json's numbers of the families `logged`
    under their own names; register it as a new version of medcast-<dataset> with the run's tags,
    `decision_tags` and the served files' md5s (served_tags), then decide whether it becomes
    champion (decide). Returns the version."""
    from medcast import tracking

    dataset = report["dataset.name"]
    md5s = served_tags(served)  # the bytes logged below
    mlflow = tracking.start(dataset)
    name = model_name(dataset)
    tags = tracking.run_tags("export", candidate=report["model"])
    with mlflow.start_run(run_name=f"final-{report['model']}", tags=tags):
        mlflow.log_params({"dataset": dataset, "model": report["model"],
                           **{k: report[k] for k in ("interval.method",) if k in report},
                           **tracking.flat("hp", hyperparameters)})
        # metrics.json's numbers under metrics.json's names (`signal` as 1.0 or 0.0)
        mlflow.log_metrics({**{k: v for k, v in report.items() if isinstance(v, float)
                               and k.partition(".")[0] in logged},
                            **({"signal": float(report["signal"])} if "signal" in report else {})})
        info = mlflow.pyfunc.log_model(
            name="model", python_model=pyfunc, artifacts=artifacts, registered_model_name=name,
            signature=mlflow.models.infer_signature(example, predicted), input_example=example,
            pip_requirements=pip_requirements(artifacts.get("model_dir")))
        for path in served:  # the exact ONNX graph and card the service loads
            mlflow.log_artifact(path, artifact_path=SERVING_DIR)
    version = info.registered_model_version
    if version is None:
        return None
    client = mlflow.MlflowClient()
    for key, value in {**tags, **decision_tags, **md5s, "validated": "true"}.items():
        client.set_model_version_tag(name, str(version), key, value)
    moved, why = decide(client, name, str(version))
    if moved:
        log.info("registered %s version %s; champion now: %s", name, version, why)
    else:
        log.warning("registered %s version %s; champion unchanged: %s", name, version, why)
    return str(version)


def _name(given: str | None) -> str:
    if given:
        return given
    from medcast.config import load_params

    return model_name(load_params().dataset.name)


@cli
def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m medcast.registry", description=(
        "The MLflow registry's champion: list a model's versions, or promote one by hand."))
    sub = ap.add_subparsers(dest="command", required=True)
    promote = sub.add_parser("promote", help="make VERSION the champion")
    promote.add_argument("version")
    listing = sub.add_parser("list", help="versions with their decision tags")
    for parser in (promote, listing):
        parser.add_argument("--name", help="registered model (default: medcast-<params' dataset>)")
    args = ap.parse_args(argv)
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    from medcast import tracking

    client, name = MlflowClient(tracking.tracking_uri()), _name(args.name)
    try:
        if args.command == "promote":
            client.get_model_version(name, args.version)
            client.set_registered_model_alias(name, CHAMPION, args.version)
            print(f"{name} version {args.version} is now the champion (promoted by hand)")
            return
        versions = client.search_model_versions(f"name='{name}'")
        aliases = client.get_registered_model(name).aliases  # {alias: version}
    except MlflowException as err:
        raise ConfigError(f"{name}: {err.message}") from None
    for v in sorted(versions, key=lambda v: int(v.version)):
        marks = " ".join(f"@{a}" for a, n in sorted(aliases.items()) if str(n) == str(v.version))
        facts = ", ".join(f"{k}={v.tags[k]}" for k in DECISION_TAGS if k in v.tags)
        print(f"{v.version:>4} {marks:10} {facts}")


if __name__ == "__main__":
    main()
