"""GET /model's response (ModelOut): the model card (medcast.card) as the export wrote it, and
`serving`: how the service serves it and where the model came from (ModelSource: the workspace,
a git revision, or a registered MLflow version). Also why a model is refused (ModelError) and
every source is verified by its md5 (medcast.card.md5_hex). Declared for the
OpenAPI document, and for tests/test_card.py, which checks every field the dashboard reads
against ModelOut.
"""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec

from medcast.card import ExplainerCheck, ModelCard


class ModelError(RuntimeError):
    """The model cannot be served; the message is the reason shown by /health/ready."""


class ModelSource(msgspec.Struct, frozen=True):
    """Where the served model came from. Only a registry load knows a registered version (and an
    alias, when one was asked for); a workspace or revision load does not, and its registry
    fields are null rather than a guess."""

    kind: Annotated[Literal["workspace", "revision", "registry"], msgspec.Meta(
        description="workspace: models/ verified against dvc.lock; revision: a git revision "
                    "(MEDCAST_MODEL_REV) through DVC; registry: a registered MLflow version "
                    "(MEDCAST_MODEL_URI), verified against its md5 tags")]
    revision: Annotated[str | None, msgspec.Meta(
        description="the git revision asked for (kind revision)")] = None
    uri: Annotated[str | None, msgspec.Meta(
        description="MEDCAST_MODEL_URI as given (kind registry)",
        examples=["models:/medcast-diabetes@champion"])] = None
    name: Annotated[str | None, msgspec.Meta(description="the registered model")] = None
    version: Annotated[str | None, msgspec.Meta(
        description="the registered version loaded (an alias resolved at load time)")] = None
    alias: Annotated[str | None, msgspec.Meta(
        description="the alias the version was loaded by; null: loaded by version number, or "
                    "not from the registry (then the service cannot know it)")] = None
    run_id: Annotated[str | None, msgspec.Meta(
        description="the MLflow run whose serving/ files were loaded")] = None

    def describe(self) -> str:
        """One line for logs and `--check` (the dashboard writes its own, serve/static/app.js)."""
        if self.kind == "registry":
            return f"{self.name} version {self.version}" + (f" (@{self.alias})" if self.alias else "")
        return f"revision {self.revision}" if self.kind == "revision" else "workspace"


class ServingOut(msgspec.Struct, frozen=True):
    """What GET /model adds to the card: how the service serves it."""

    md5: Annotated[str, msgspec.Meta(description="md5 of the ONNX graph; every prediction's "
                                                 "model_version")]
    revision: Annotated[str, msgspec.Meta(
        description="the prediction log's model_revision: 'workspace', the git revision, or "
                    "models:/<name>/<version>")]
    load_ms: float
    max_batch: int
    source: ModelSource


class ExplainerOut(msgspec.Struct, frozen=True, omit_defaults=True):
    """The card's `explainer` as GET /model shows it: the background rows are training
    patients, so only their number is shown."""

    background_rows: int
    coalitions: int
    seed: int
    method: Literal["exact", "sampling"]
    check: ExplainerCheck | None = None


class ModelOut(ModelCard, frozen=True, kw_only=True):
    """GET /model: the model card (medcast.card) and `serving`."""

    explainer: ExplainerOut | None = None  # the card's, without its background rows
    serving: ServingOut
