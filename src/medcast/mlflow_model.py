"""MLflow 'model from code': the registered model loads medcast's safe artifacts (skops and
.keras) at serving time instead of unpickling anything. Used by evaluate.register()."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import mlflow
import pandas as pd
from mlflow.pyfunc import PythonModel


class MedcastModel(PythonModel):
    def load_context(self, context: Any) -> None:
        from medcast.models.io import load_model

        self.estimator = load_model(Path(context.artifacts["model_dir"]))

    def predict(self, context: Any, model_input: pd.DataFrame, params: Any = None) -> Any:
        return self.estimator.predict(model_input)


mlflow.models.set_model(MedcastModel())
