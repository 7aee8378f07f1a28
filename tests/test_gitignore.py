"""Patient data never reaches git: the tables a researcher drops into the repository (exports/,
its root, data/raw/NAME/ before `dvc add`) are git-ignored, the pointers DVC needs are not, and
DVC's own matcher agrees, so that it still finds every data/raw/NAME/*.dvc (a folder it took for
ignored would hide them, and `dvc exp run` would delete the table as an unused link)."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from tests.conftest import ROOT
from tests.support.repo_copy import run

IGNORED = ["exports/trial.csv", "private/ward7.xlsx", "trial.csv", "extract.sav",
           "data/raw/trial/trial.csv", "data/raw/trial/part/visits.parquet"]
KEPT = ["data/raw/trial/trial.csv.dvc", "data/raw/diabetes/README.md", "data/raw/README.md",
        "src/medcast/datasets/spec.py", "bench/data.csv"]


@pytest.fixture
def repo(tmp_path):
    run(["git", "init", "-q", "-b", "main"], tmp_path)
    run(["dvc", "init", "-q"], tmp_path)
    shutil.copy(ROOT / ".gitignore", tmp_path / ".gitignore")
    for name in IGNORED + KEPT:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("x\n")
    return tmp_path


def test_raw_tables_in_the_repository_are_ignored_and_dvc_pointers_are_not(repo):
    checked = subprocess.run(["git", "check-ignore", *IGNORED, *KEPT], cwd=repo,
                             capture_output=True, text=True, check=False)
    assert checked.stdout.split() == IGNORED


def test_dvc_sees_the_raw_folders_as_not_ignored(repo):
    from dvc.repo import Repo

    scm = Repo(str(repo)).scm
    assert not scm.is_ignored(f"{repo}/data/raw/trial/")
    assert not scm.is_ignored(f"{repo}/data/raw/trial/trial.csv.dvc")
    assert scm.is_ignored(f"{repo}/data/raw/trial/trial.csv")
