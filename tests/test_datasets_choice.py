"""`python -m medcast.datasets use NAME` makes NAME the dataset every `dvc exp run -S` composes
(the `dataset:` line of conf/params/config.yaml, nothing else of it touched) and recomposes
params.yaml, saying what changed and what to commit; `dataset_change` is the one line preprocess
logs when the dataset differs from dvc.lock's record, read defensively."""

from __future__ import annotations

import shutil

import pytest
import yaml

from devtools.factories import messy_clinical_conf
from medcast.config import compose_yaml
from medcast.datasets.__main__ import main
from medcast.datasets.choice import dataset_change
from tests.conftest import ROOT

CONFIG = "conf/params/config.yaml"


@pytest.fixture
def study(tmp_path, monkeypatch):
    """conf/, dvc.yaml and params.yaml of this repository, and a reviewed dataset 'trial'."""
    shutil.copytree(ROOT / "conf", tmp_path / "conf")
    for name in ("dvc.yaml", "params.yaml"):
        shutil.copy(ROOT / name, tmp_path / name)
    (tmp_path / "conf/dataset/trial.yaml").write_text(yaml.safe_dump(messy_clinical_conf()))
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _use(name, capsys):
    try:
        main(["use", name])
        code = 0
    except SystemExit as stop:
        code = stop.code
    out = capsys.readouterr()
    return code, out.out.splitlines(), out.err


def test_use_changes_only_the_dataset_line_and_recomposes_params(study, capsys):
    before = (study / CONFIG).read_text().splitlines()
    code, lines, err = _use("trial", capsys)
    assert code == 0, err
    assert lines == [
        "conf/params/config.yaml: dataset: diabetes → trial (what every `dvc exp run -S "
        "key=value` composes)",
        "wrote params.yaml: dataset: diabetes → trial",
        "next: git add conf/params/config.yaml params.yaml && git commit -m 'Use dataset trial'",
        "then: dvc exp run   # on trial, as is every `dvc exp run -S key=value`",
    ]
    after = (study / CONFIG).read_text().splitlines()
    assert [(a, b) for a, b in zip(before, after, strict=True) if a != b] == [
        ("dataset: diabetes", "dataset: trial")]
    assert (study / "params.yaml").read_text() == compose_yaml(config_dir=study / "conf/params")
    assert yaml.safe_load((study / "params.yaml").read_text())["dataset"] == "trial"
    assert _use("trial", capsys)[1] == [
        "trial is already the dataset conf/params/config.yaml composes, and params.yaml is its "
        "composition: nothing to do"]


def test_use_of_a_dataset_without_description_exits_2_naming_init_and_writes_nothing(
        study, capsys):
    config, params = (study / CONFIG).read_text(), (study / "params.yaml").read_text()
    code, lines, err = _use("ward7", capsys)
    assert code == 2 and lines == []
    assert err.strip() == (
        "error: dataset: no conf/dataset/ward7.yaml (known: diabetes, insurance, trial); draft "
        "one from your table with `python -m medcast.datasets init FILE --name ward7 --target "
        "COLUMN`")
    assert (study / CONFIG).read_text() == config and (study / "params.yaml").read_text() == params


def test_use_after_an_applied_experiment_names_the_other_values_it_resets(study, capsys):
    applied = yaml.safe_load((study / "params.yaml").read_text())
    applied["dataset"] = "trial"
    applied["tune"]["n_trials"] = 10  # as `dvc exp apply` of `-S tune.n_trials=10` leaves it
    (study / "params.yaml").write_text(yaml.safe_dump(applied, sort_keys=False))
    code, lines, err = _use("trial", capsys)
    assert code == 0, err
    assert lines[1:3] == [
        "wrote params.yaml (dataset: trial, as before)",
        "params.yaml also took conf/params/config.yaml's values: tune.n_trials 10 → 40 (to keep "
        "a value, set it in conf/params/config.yaml and run this again)",
    ]


def test_use_of_an_unreviewed_draft_says_preprocess_refuses_it(study, capsys):
    conf = messy_clinical_conf()
    conf["target_unit"] = "REVIEW: unit of the target"
    (study / "conf/dataset/trial.yaml").write_text(yaml.safe_dump(conf))
    code, lines, _ = _use("trial", capsys)
    assert code == 0
    assert ("note: conf/dataset/trial.yaml still holds REVIEW markers in target_unit: replace "
            "each with the real value (preprocess refuses them)") in lines


@pytest.mark.parametrize("lock", [None, "", "stages: {}\n", "stages: {preprocess: {cmd: x}}\n",
                                  "{not yaml", "[1, 2]\n"])
def test_dataset_change_is_silent_without_a_readable_record(tmp_path, lock):
    if lock is not None:
        (tmp_path / "dvc.lock").write_text(lock)
    assert dataset_change("trial", tmp_path) is None


def _locked(root, dataset):
    entry = {"cmd": "python -m medcast.preprocess",
             "params": {"params.yaml": {"dataset": dataset, "preprocess": {"seed": 42}}}}
    (root / "dvc.lock").write_text(yaml.safe_dump({"schema": "2.0", "stages": {"preprocess": entry}}))


def test_dataset_change_says_which_dataset_every_run_composes_and_how_to_keep_the_other(study):
    _locked(study, "trial")
    assert dataset_change("trial", study) is None
    assert dataset_change("diabetes", study) == (
        "dataset: trial → diabetes since the last preprocess run (dvc.lock); every `dvc exp run "
        "-S …` composes conf/params/config.yaml's dataset (diabetes): if you meant trial, "
        "`python -m medcast.datasets use trial`")
    _locked(study, "diabetes")
    assert dataset_change("trial", study) == (
        "dataset: diabetes → trial since the last preprocess run (dvc.lock); every `dvc exp run "
        "-S …` composes conf/params/config.yaml's dataset (diabetes): `python -m "
        "medcast.datasets use trial` keeps trial")
