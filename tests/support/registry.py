"""A real MLflow store (SQLite, in a temporary folder) holding the tiny model
(devtools/tiny_model.py) as a registered version, for the tests of the service's registry
loading (tests/serve/): `registered_store` registers it through the pipeline's own
`medcast.registry.register` (which tags the served files' md5s); `publish` makes a version by
hand where a test needs one to differ (untagged, tampered, a file missing)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit
from urllib.request import url2pathname

import pytest

from devtools.tiny_model import TinyModel, md5_file

NAME = "medcast-insurance"  # the tiny model's dataset is "insurance"
CHAMPION = f"models:/{NAME}@champion"
# A models-from-code pyfunc for register(): it must be loadable, never runs here.
PYFUNC = '''
import mlflow
import pandas as pd
from mlflow.pyfunc import PythonModel


class Zero(PythonModel):
    def predict(self, context, model_input: pd.DataFrame, params=None):
        return [0.0] * len(model_input)


mlflow.models.set_model(Zero())
'''


@dataclass(frozen=True)
class Store:
    uri: str  # MLFLOW_TRACKING_URI
    root: Path  # its folder (the database and the artifacts)
    run_id: str  # the run of version 1 (registered by register())


def registered_store(tiny: TinyModel, root: Path) -> Store:
    """A store holding version 1 of medcast-insurance, registered as the export stage does:
    champion (the first version), tagged with the served files' md5s."""
    import numpy as np
    import pandas as pd

    from medcast.registry import register

    (root / "pyfunc.py").write_text(PYFUNC)
    uri = f"sqlite:///{root / 'mlflow.db'}"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_TRACKING_URI", uri)
        mp.chdir(root)  # the experiment's artifacts: ./mlruns under the store's folder
        version = register(
            {"dataset.name": "insurance", "model": "ridge", "test.r2": 0.5},
            {"alpha": 1.0}, {"card": str(tiny.card_path)}, pd.DataFrame(tiny.examples[:3]),
            np.zeros(3), [str(tiny.onnx), str(tiny.card_path)],
            {"dataset": "insurance", "training_data_md5": "a" * 32, "cv_rmse": "5.0",
             "signal": "true"},
            str(root / "pyfunc.py"), ("test",))
    assert version == "1"
    from mlflow import MlflowClient

    run_id = MlflowClient(uri).get_model_version(NAME, "1").run_id
    return Store(uri, root, run_id)


def publish(uri: str, files: list[Path], tags: dict[str, str], name: str = NAME) -> tuple[str, Path]:
    """A version by hand (what register() does, minus the pyfunc): the files logged under the
    run's serving/, the version created from the run with `tags`. Returns the version and the
    run's artifact folder."""
    from mlflow import MlflowClient

    client = MlflowClient(uri)
    if not client.search_registered_models(f"name='{name}'"):
        client.create_registered_model(name)
    experiment = client.get_experiment_by_name("by-hand")
    experiment_id = experiment.experiment_id if experiment else client.create_experiment(
        "by-hand", artifact_location=(Path(url2pathname(urlsplit(uri).path)).parent / "art").as_uri())
    run = client.create_run(experiment_id)
    for path in files:
        client.log_artifact(run.info.run_id, str(path), "serving")
    client.set_terminated(run.info.run_id)
    version = client.create_model_version(name, f"runs:/{run.info.run_id}/serving",
                                          run_id=run.info.run_id, tags=tags)
    return str(version.version), Path(url2pathname(urlsplit(run.info.artifact_uri).path))


def md5s(tiny: TinyModel) -> dict[str, str]:
    return {"onnx_md5": tiny.md5, "card_md5": md5_file(tiny.card_path)}
