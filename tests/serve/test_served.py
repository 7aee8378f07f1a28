"""What the service says of the model it serves (serve/served.py): GET /model's
serving.source for a workspace, a revision and a registry load (no alias is made up where the
service did not load by one), and its declared schema (ModelOut in the OpenAPI document)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import msgspec
import pytest

from devtools.tiny_model import TinyModel, md5_file
from serve.served import ModelSource
from tests.support.registry import CHAMPION, Store
from tests.support.serving import serving
from tests.support.settings import client_settings

pytestmark = [
    pytest.mark.timeout(180),
    pytest.mark.filterwarnings("ignore:Hint. Inferred schema contains integer:UserWarning"),
]


def test_a_workspace_load_says_so_and_knows_no_alias(tiny: TinyModel, tmp_path: Path) -> None:
    with serving(client_settings(tiny.root, None, database_url=f"sqlite:///{tmp_path / 'log.db'}")) as client:
        served = client.get("/model").json()
        spec = client.get("/schema/openapi.json").json()
    assert served["serving"]["source"] == {"kind": "workspace", "revision": None, "uri": None,
                                           "name": None, "version": None, "alias": None,
                                           "run_id": None}
    assert served["serving"]["revision"] == "workspace"
    _conforms(served, spec)


class Revision:
    """`medcast.artifacts` at a revision, from the tiny model's files (serve.model.Artifacts)."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def locked_md5(self, path: str, rev: str | None = None, repo: str = ".") -> str:
        return md5_file(self.root / path)

    def read_bytes(self, path: str, rev: str | None = None, remote: str | None = None,
                   repo: str = ".") -> bytes:
        return (self.root / path).read_bytes()


def test_a_revision_load_says_which_revision_and_knows_no_alias(tiny: TinyModel,
                                                                empty: Path) -> None:
    with serving(client_settings(empty, None, model_rev="abc123"), artifacts=Revision(tiny.root)) as client:
        source = client.get("/model").json()["serving"]["source"]
    assert source == {**msgspec.to_builtins(ModelSource("revision")), "revision": "abc123"}


def test_the_registry_source_conforms_to_the_declared_schema(tracking: Store, empty: Path) -> None:
    with serving(client_settings(empty, None, model_uri=CHAMPION)) as client:
        served = client.get("/model").json()
        spec = client.get("/schema/openapi.json").json()
    model = spec["paths"]["/model"]["get"]["responses"]["200"]["content"]["application/json"]
    assert model["schema"] == {"$ref": "#/components/schemas/ModelOut"}
    source = spec["components"]["schemas"]["ModelSource"]
    assert source["properties"]["kind"]["enum"] == ["workspace", "revision", "registry"]
    assert {"name", "version", "alias", "run_id", "uri", "revision"} <= set(source["properties"])
    _conforms(served, spec)


def _conforms(served: dict[str, Any], spec: dict[str, Any]) -> None:
    """GET /model's body validates against the document's ModelOut (every $ref resolved)."""
    import jsonschema

    schema = {"$ref": "#/components/schemas/ModelOut", "components": spec["components"]}
    jsonschema.Draft202012Validator(schema).validate(served)
