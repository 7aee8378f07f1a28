"""A category value as the service takes it (serve/schemas.py): as training reads a raw table's
cell (medcast.cells) — surrounding whitespace is no part of it, and integer codes may come as
JSON numbers — on /predict, /predict/batch and in the OpenAPI document, logged as the card's
level; every other value a 422 naming the field. And the flow it serves: a client sends the rows
of the raw table, as its file holds them, to the real service, and gets the pipeline's
predictions.

Nullable features (a card whose model imputes missing values): null or an absent field is taken
for them and refused for any other, and the request's JSON schema makes them optional and
nullable.
"""

from __future__ import annotations

import csv
import json
import math
import re
from pathlib import Path
from typing import Any

import jsonschema
import msgspec
import pytest

from devtools.service import running, service_env
from devtools.tiny_model import TinyModel, build_nullable_model
from medcast.card import Feature, ModelCard, Parity
from serve.schemas import InputError, RequestSchema, integer_coded
from serve.settings import Settings
from tests.support.serving import serving, written

pytestmark = pytest.mark.timeout(120)

KEY = "log-reader-key"
# Characters str.strip() removes, from both ends of a level (the pipeline strips so too).
PADDINGS = [" ", "\t", "  \t", "\u00a0", "\u3000", "\u2009"]


def schema_of(*features: Feature, max_batch: int = 10) -> RequestSchema:
    card = ModelCard(name="m", dataset="trial", target="y", target_unit=None, model="ridge",
                     params={}, metrics={}, onnx_md5="0" * 32, parity=Parity(0.0, 0.0, 1),
                     features=list(features))
    return RequestSchema.from_card(card, max_batch)


def category(name: str, levels: list[str], nullable: bool = False) -> Feature:
    return Feature(name, "category", None, None, None, None, None, levels, nullable=nullable)


AGE = Feature("age", "int", None, 0, 120, None, None, None)
TRIAL = schema_of(AGE, category("Hypertension", ["No", "Yes"], nullable=True),
                  category("trt", ["1", "2"], nullable=True))


def decoded(schema: RequestSchema, **values: Any) -> dict[str, Any]:
    """The patient as the service passes it on (feature → value), or InputError."""
    patient = schema.decode_one(json.dumps({"age": 40, **values}).encode())
    return msgspec.to_builtins(patient)


def refused(schema: RequestSchema, **values: Any) -> InputError:
    with pytest.raises(InputError) as err:
        decoded(schema, **values)
    return err.value


# ---- category values ------------------------------------------------------------------------


@pytest.mark.parametrize("pad", PADDINGS)
def test_padded_level_is_the_level_the_pipelines_validator_reads(pad: str) -> None:
    from devtools.factories import messy_clinical_frame, messy_clinical_spec
    from medcast.datasets import validate

    frame = messy_clinical_frame(3, seed=1).astype(object)
    frame = frame.where(frame.notna(), "")
    frame.loc[0, "Hypertension"] = f"{pad}Yes{pad}"
    assert validate(frame, messy_clinical_spec())["Hypertension"][0] == "Yes"
    assert decoded(TRIAL, Hypertension=f"{pad}Yes{pad}")["Hypertension"] == "Yes"
    assert decoded(TRIAL, Hypertension=f"Yes{pad}")["Hypertension"] == "Yes"


@pytest.mark.parametrize(("sent", "level"), [
    ("1", "1"), (1, "1"), (2, "2"), (" 2\t", "2"),
    (1.0, "1"),  # a whole number: a pandas column with a gap holds codes as floats
    (2e0, "2"), (None, None),
])
def test_integer_codes_take_the_number_or_the_text(sent: Any, level: str | None) -> None:
    assert decoded(TRIAL, trt=sent)["trt"] == level


@pytest.mark.parametrize("sent", [
    1.5, 3, 0, -1, True, False,
    "01", "1.0", "+1", "", " ", "one",  # text: only a level's own text, as in the raw table
    [1], {"code": 1},
])
def test_anything_else_for_an_integer_code_is_a_422_naming_the_field(sent: Any) -> None:
    error = refused(TRIAL, trt=sent)
    assert (error.status, error.field) == (422, "trt")
    assert "`$.trt`" in error.detail


@pytest.mark.parametrize(("levels", "coded"), [
    (["1", "2"], True), (["0", "1"], True), (["-1", "0", "1", "10"], True),
    (["01", "02"], False), (["1.0", "2.0"], False), (["0", "1", "unknown"], False),
    (["No", "Yes"], False),
])
def test_a_feature_is_integer_coded_when_every_level_is_an_integers_text(
        levels: list[str], coded: bool) -> None:
    assert integer_coded(levels) is coded
    schema = schema_of(AGE, category("x", levels))
    if coded:
        assert decoded(schema, x=int(levels[-1]))["x"] == levels[-1]
    else:
        assert refused(schema, x=1).field == "x"


def test_text_levels_take_no_numbers_and_no_other_text() -> None:
    assert refused(TRIAL, Hypertension=1).field == "Hypertension"
    assert refused(TRIAL, Hypertension=True).field == "Hypertension"
    for sent in ("yes", "YES", "Ye s", "", "\ufeffYes"):  # case, inner space, a BOM: no levels
        error = refused(TRIAL, Hypertension=sent)
        assert (error.status, error.field) == (422, "Hypertension")
        assert "expected one of 'No', 'Yes'" in error.detail


def test_other_errors_are_unchanged_by_a_padded_category() -> None:
    assert refused(TRIAL, Hypertension=" Yes", age="old").field == "age"
    assert refused(TRIAL, Hypertension=" Yes", weight=80).field == "weight"
    assert refused(TRIAL, Hypertension=" Yes", age=121).field == "age"


def test_the_cards_own_form_takes_the_one_strict_decode() -> None:
    exact = TRIAL.decode_one(b'{"age": 40, "Hypertension": "Yes", "trt": "2"}')
    assert type(exact) is TRIAL.patient_type
    other = TRIAL.decode_one(b'{"age": 40, "Hypertension": " Yes", "trt": 2}')
    assert msgspec.to_builtins(other) == msgspec.to_builtins(exact)


def test_batch_reads_every_row_and_names_the_row_of_a_bad_value() -> None:
    rows = [{"age": 40, "trt": 1}, {"age": 41, "Hypertension": "No "}, {"age": 42, "trt": "2"}]
    patients = TRIAL.decode_batch(json.dumps({"instances": rows}).encode())
    assert [msgspec.structs.astuple(p)[1:] for p in patients] == [
        (None, "1"), ("No", None), (None, "2")]
    bad = [*rows, {"age": 43, "trt": 3}]
    with pytest.raises(InputError) as err:
        TRIAL.decode_batch(json.dumps({"instances": bad}).encode())
    assert (err.value.status, err.value.field) == (422, "instances[3].trt")
    small = schema_of(AGE, category("trt", ["1", "2"]), max_batch=2)
    with pytest.raises(InputError) as err:
        small.decode_batch(json.dumps({"instances": [{"age": 1, "trt": 1}] * 3}).encode())
    assert err.value.field == "instances" and "at most 2" in err.value.detail


# ---- the OpenAPI document says what is taken ----------------------------------------------


def test_openapi_lists_codes_as_text_and_numbers() -> None:
    trt = TRIAL.patient_json_schema()["properties"]["trt"]
    assert trt["anyOf"][0] == {"enum": ["1", "2", 1, 2, None]}
    assert "'1' or 1 alike" in trt["description"]
    hypertension = TRIAL.patient_json_schema()["properties"]["Hypertension"]
    assert hypertension["anyOf"][0] == {"enum": ["No", "Yes", None]}
    assert "surrounding whitespace is ignored" in hypertension["description"]


@pytest.mark.parametrize("value", [
    "Yes", " Yes", "Yes\u3000", "\tNo\n", "\u00a0No", "\ufeffYes", "yes", "Ye s", "", "Yes!",
    "1", " 2 ", 1, 2, 1.0, 1.5, 3, "01", "1.0", True, None,
])
def test_openapi_schema_takes_exactly_what_the_service_takes(value: Any) -> None:
    """The document is checked against the service value by value (jsonschema reads the pattern
    with Python's re; its \\uXXXX escapes read alike in ECMA-262, JSON Schema's dialect)."""
    properties = TRIAL.patient_json_schema()["properties"]
    for name in ("Hypertension", "trt"):
        documented = jsonschema.Draft202012Validator(properties[name]).is_valid(value)
        try:
            decoded(TRIAL, **{name: value})
            taken = True
        except InputError:
            taken = False
        assert documented == taken, (name, value)


def test_the_whitespace_the_schema_names_is_all_that_strip_removes() -> None:
    from serve.schemas import _whitespace

    # Every code point through the compiled pattern (what jsonschema's `pattern` runs: re.search),
    # and the validator itself on every whitespace character and a stride of the rest (the
    # validator on all 1.1 million took 50 s).
    regex = re.compile(f"^{_whitespace()}$")
    assert all(bool(regex.search(chr(i))) == chr(i).isspace() for i in range(0x110000))
    pattern = jsonschema.Draft202012Validator({"type": "string", "pattern": f"^{_whitespace()}$"})
    sample = sorted({*range(0, 0x110000, 211), *(i for i in range(0x3001) if chr(i).isspace())})
    assert all(pattern.is_valid(chr(i)) == chr(i).isspace() for i in sample)


# ---- the service: answered and logged as the level --------------------------------------


@pytest.fixture(scope="module")
def coded(tmp_path_factory: pytest.TempPathFactory) -> TinyModel:
    """medcast's own pipeline on the messy table with the integer-coded arm `trt`."""
    return build_nullable_model(tmp_path_factory.mktemp("coded") / "model", coded=True)


def settings(root: Path, db: Path) -> Settings:
    return Settings(repo=root, database_url=f"sqlite:///{db}", api_key=KEY, rate_limit=None,
                    log_flush_ms=5, log_drain_s=5)


def test_padded_and_numeric_values_are_answered_and_logged_as_the_levels(
        coded: TinyModel, tmp_path: Path) -> None:
    canonical = {"age": 50, "BL.Cig.Day": 10.0, "sbp": 130.0, "Hypertension": "Yes",
                 "sex": "F", "trt": "2"}
    sent = {**canonical, "Hypertension": " Yes", "sex": "F\t", "trt": 2}
    with serving(settings(coded.root, tmp_path / "log.db")) as client:
        exact = client.post("/predict", json=canonical).json()["prediction"]
        r = client.post("/predict", json=sent)
        assert r.status_code == 200, r.text
        assert r.json()["prediction"] == exact
        batch = client.post("/predict/batch", json={"instances": [sent, {**sent, "trt": 1.0}]})
        assert batch.status_code == 200, batch.text
        assert batch.json()["predictions"][0] == exact
        bad = client.post("/predict/batch", json={"instances": [sent, {**sent, "trt": "01"}]})
        assert bad.status_code == 422 and bad.json()["field"] == "instances[1].trt"
        written(client, 4)
        rows = client.get("/predictions", headers={"X-API-Key": KEY}).json()["items"]
    assert [r["features"]["Hypertension"] for r in rows] == ["Yes"] * 4
    assert [r["features"]["sex"] for r in rows] == ["F"] * 4
    assert [r["features"]["trt"] for r in rows] == ["2", "2", "2", "1"]


def as_a_client_sends_it(cell: str) -> Any:
    """A CSV cell as JSON the way a client turns a table into requests: blank → null, a number →
    a number (a code too: the file holds 1, not "1"), any other text exactly as it is."""
    if cell == "":
        return None
    for number in (int, float):
        try:
            return number(cell)
        except ValueError:
            pass
    return cell


def test_the_raw_tables_rows_as_its_file_holds_them_get_the_pipelines_predictions(
        coded: TinyModel, tmp_path: Path, pycache: Path) -> None:
    """Every row of the messy CSV (padded categories, blanks, a 1/2-coded arm, rows without the
    target) is answered 200 by the real service, one by one and in one batch, with the
    prediction the pipeline's native model gives for the row as the pipeline reads it; the log
    holds the rows as the pipeline reads them."""
    import httpx

    assert coded.raw is not None
    names = [f["name"] for f in coded.card["features"]]
    with coded.raw.open(newline="") as handle:
        rows = [{n: as_a_client_sends_it(row[n]) for n in names} for row in csv.DictReader(handle)]
    assert any(isinstance(r["Hypertension"], str) and r["Hypertension"] != r["Hypertension"].strip()
               for r in rows) and {type(r["trt"]) for r in rows} == {int, type(None)}
    env = service_env(pycache, MEDCAST_REPO=str(coded.root), MEDCAST_API_KEY=KEY,
                      MEDCAST_DATABASE_URL=f"sqlite:///{tmp_path / 'log.db'}",
                      MEDCAST_LOG_LEVEL="WARNING", MEDCAST_RATE_LIMIT="off")
    with running(env, cwd=tmp_path, log=tmp_path / "serve.log") as service, \
            httpx.Client(base_url=service.url, timeout=10) as client:
        answers = [client.post("/predict", json=row) for row in rows]
        assert [r.status_code for r in answers] == [200] * len(rows), answers[0].text
        batch = client.post("/predict/batch", json={"instances": rows})
        assert batch.status_code == 200, batch.text
        logged = client.get("/predictions", params={"limit": len(rows)},
                            headers={"X-API-Key": KEY}).json()["items"]
        assert service.stop() == 0
    for i, (answer, expected) in enumerate(zip(answers, coded.expected, strict=True)):
        got = answer.json()["prediction"]
        assert math.isclose(got, expected, rel_tol=1e-4, abs_tol=1e-3), (i, rows[i])
        assert batch.json()["predictions"][i] == pytest.approx(got, rel=1e-6)
    assert [r["features"] for r in logged] == coded.examples


# ---- nullable features (a card whose model imputes missing values) --------------------------


def _nullable_schema() -> Any:
    from medcast.card import Feature, ModelCard, Parity
    from serve.schemas import RequestSchema

    card = ModelCard(name="m", dataset="trial", target="y", target_unit=None, model="ridge",
                     params={}, metrics={}, onnx_md5="0" * 32, parity=Parity(0.0, 0.0, 1),
                     features=[
                         Feature("age", "int", None, 0, 120, None, None, None),
                         Feature("BL.Cig.Day", "float", None, 0, 200, None, None, None,
                                 nullable=True),
                         Feature("Hypertension", "category", None, None, None, None, None,
                                 ["No", "Yes"], nullable=True),
                     ])
    return RequestSchema.from_card(card, max_batch=10)


def test_nullable_feature_takes_null_or_an_absent_field_and_others_refuse_null() -> None:
    import msgspec

    from serve.schemas import InputError

    schema = _nullable_schema()
    sent = schema.decode_one(b'{"age": 40, "BL.Cig.Day": null, "Hypertension": "Yes"}')
    absent = schema.decode_one(b'{"age": 40, "Hypertension": null}')
    assert msgspec.structs.astuple(sent) == (40, None, "Yes")
    assert msgspec.structs.astuple(absent) == (40, None, None)
    with pytest.raises(InputError) as err:
        schema.decode_one(b'{"age": null, "BL.Cig.Day": 3}')
    assert err.value.status == 422 and err.value.field == "age"
    with pytest.raises(InputError) as err:
        schema.decode_one(b'{"BL.Cig.Day": 3}')
    assert err.value.status == 422 and err.value.field == "age"
    with pytest.raises(InputError) as err:
        schema.decode_one(b'{"age": 40, "Hypertension": "maybe"}')
    assert err.value.field == "Hypertension"


def test_nullable_features_are_optional_and_nullable_in_openapi() -> None:
    js = _nullable_schema().patient_json_schema()
    assert js["required"] == ["age"]
    assert js["properties"]["BL.Cig.Day"]["type"] == ["number", "null"]
    assert js["properties"]["Hypertension"]["anyOf"][0]["enum"] == ["No", "Yes", None]
