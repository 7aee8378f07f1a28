"""Stage dependencies that cannot go stale: every package module a stage runs is covered by one
of its `deps:` in dvc.yaml (and not hidden by .dvcignore), every params key it reads is among its
`params:` and nothing more is, and the conf files it reads are deps. Imports are found
statically (function-level imports and "medcast.x.y" module strings included); params keys by
running every stage on a tiny study with its configuration wrapped in a recorder."""

from __future__ import annotations

import ast
import dataclasses
import fnmatch
import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import ROOT

SRC = ROOT / "src"
STAGES = ("preprocess", "train", "tune", "evaluate", "export", "plot")


def module_file(name: str) -> Path | None:
    base = SRC / Path(*name.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.exists():
            return candidate
    return None


def _imports(path: Path, module: str) -> set[str]:
    """Modules a file names: import statements anywhere (also inside functions) and string
    constants of the form 'medcast.x.y[:Name]' (the model registry imports by string)."""
    tree = ast.parse(path.read_text(), str(path))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1] + ([base] if base else []))
            found.add(base)
            found |= {f"{base}.{alias.name}" for alias in node.names}
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            text = node.value.partition(":")[0]
            if text.startswith("medcast.") and text.replace(".", "").replace("_", "").isalnum():
                found.add(text)
    return {m for m in found if m.split(".")[0] == "medcast"}


def closure(module: str) -> set[Path]:
    """Every package file that running `python -m <module>` may execute."""
    seen: set[str] = set()
    files: set[Path] = set()
    todo = [module]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        path = module_file(name)
        if path is None:  # "medcast.x.Name": a name inside a module, not a module
            continue
        files.add(path)
        parts = name.split(".")
        todo += [".".join(parts[:i]) for i in range(1, len(parts))]  # parent packages run first
        todo += sorted(_imports(path, name))
    if module_file(module) is None:
        raise AssertionError(f"no module {module}")
    return files


def dvcignored(rel: str, patterns: list[str]) -> bool:
    parts = rel.split("/")
    for pattern in patterns:
        pattern = pattern.rstrip("/")
        if any(fnmatch.fnmatch(part, pattern) for part in parts) or fnmatch.fnmatch(rel, pattern):
            return True
    return False


def missing_modules(pipeline: dict[str, Any], ignore: list[str]) -> dict[str, list[str]]:
    """Per stage, the package files it runs that no dep covers (or .dvcignore hides)."""
    out = {}
    for stage, spec in pipeline["stages"].items():
        module = spec["cmd"].split("-m", 1)[1].split()[0]
        deps = [str(d).rstrip("/") for d in spec.get("deps", []) if "${" not in str(d)]
        missing = []
        for path in sorted(closure(module)):
            rel = path.relative_to(ROOT).as_posix()
            covered = any(rel == d or rel.startswith(f"{d}/") for d in deps)
            if not covered or dvcignored(rel, ignore):
                missing.append(rel)
        if missing:
            out[stage] = missing
    return out


def _pipeline() -> dict[str, Any]:
    return yaml.safe_load((ROOT / "dvc.yaml").read_text())


def _dvcignore() -> list[str]:
    lines = (ROOT / ".dvcignore").read_text().splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


def test_every_module_a_stage_runs_is_one_of_its_deps():
    assert missing_modules(_pipeline(), _dvcignore()) == {}


def test_the_check_catches_a_stage_that_lists_only_its_own_module():
    """What dvc.yaml listed before: a stage's own module and a few others. Function-level and
    by-string imports count too (the model registry, the MLP)."""
    pipeline = _pipeline()
    for stage, spec in pipeline["stages"].items():
        spec["deps"] = [d for d in spec["deps"] if d != "src/medcast"]
        spec["deps"].insert(0, f"src/medcast/{stage}.py")
    missing = missing_modules(pipeline, _dvcignore())
    assert set(missing) == set(STAGES)
    assert "src/medcast/config.py" in missing["preprocess"]
    assert "src/medcast/models/mlp.py" in missing["train"]  # imported by string
    assert "src/medcast/onnx/export.py" in missing["export"]  # imported inside main()
    assert "src/medcast/tracking.py" in missing["tune"]


def test_dvcignore_cannot_hide_a_module_a_stage_runs():
    missing = missing_modules(_pipeline(), [*_dvcignore(), "features.py"])
    assert all("src/medcast/features.py" in files for files in missing.values())


# ---- params: what each stage reads, recorded while it runs -------------------------------------


class Recorder:
    """Wraps the typed configuration; every attribute read (properties included) is recorded as
    a dotted key: 'train.seed', 'dataset.columns', 'models', 'paths.train', …"""

    def __init__(self) -> None:
        self.keys: set[str] = set()

    def wrap(self, obj: Any, prefix: str = "") -> Any:
        if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
            return _Proxy(obj, prefix, self)
        return obj


class _Proxy:
    def __init__(self, obj: Any, prefix: str, recorder: Recorder) -> None:
        object.__setattr__(self, "_obj", obj)
        object.__setattr__(self, "_prefix", prefix)
        object.__setattr__(self, "_recorder", recorder)

    def __getattr__(self, name: str) -> Any:
        obj, prefix, recorder = self._obj, self._prefix, self._recorder
        attr = getattr(type(obj), name, None)
        if isinstance(attr, property):  # a derived value: record what it reads
            return attr.fget(self)
        key = f"{prefix}{name}"
        recorder.keys.add(key)
        return recorder.wrap(getattr(obj, name), key + ".")


def stage_reads(recorded: set[str]) -> tuple[set[str], set[str]]:
    """(params.yaml keys, conf folders) behind the recorded reads. The dataset description is
    chosen by the `dataset` param; model configs and paths come from files."""
    keys = {k for k in recorded if not any(o.startswith(f"{k}.") for o in recorded)}  # leaves
    params, files = set(), set()
    for key in keys:
        head = key.split(".")[0]
        if head == "dataset":
            params.add("dataset")
            files.add("conf/dataset/${dataset}.yaml")
        elif head == "models":
            files.add("conf/model")
        elif head != "paths":
            params.add(key)
    return params, files


def params_problems(spec: dict[str, Any], reads: set[str]) -> list[str]:
    listed = [str(p) for p in spec.get("params", [])]
    problems = [f"reads {k} but does not list it" for k in sorted(reads)
                if not any(k == p or k.startswith(f"{p}.") for p in listed)]
    problems += [f"lists {p} but never reads it" for p in listed
                 if not any(k == p or k.startswith(f"{p}.") for k in reads)]
    return problems


@pytest.fixture(scope="module")
def recorded(tmp_path_factory, monkeypatch_module):
    """Run the six stages in process, in order, on a tiny study copy; record what each reads."""
    import importlib

    from medcast.config import load_params
    from tests.support.repo_copy import make_copy

    repo = make_copy(tmp_path_factory.mktemp("deps") / "repo", **{
        "train.candidates": "[ridge,knn,hist_boosting]", "cv.folds": "3",
        "tune.n_trials": "2"})
    monkeypatch_module.chdir(repo)
    monkeypatch_module.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{repo}/mlflow.db")
    reads = {}
    for stage in STAGES:
        module = importlib.import_module(f"medcast.{stage}")
        recorder = Recorder()
        monkeypatch_module.setattr(module, "load_params",
                                   lambda recorder=recorder: recorder.wrap(load_params()))
        try:
            module.main([]) if stage == "tune" else module.main()
        except SystemExit as err:
            raise AssertionError(f"stage {stage} failed ({err.code})") from None
        reads[stage] = recorder.keys
    return reads


@pytest.fixture(scope="module")
def monkeypatch_module():
    mp = pytest.MonkeyPatch()
    yield mp
    mp.undo()


@pytest.mark.e2e
@pytest.mark.xdist_group("pipeline_deps")
def test_every_stage_lists_the_params_it_reads_and_nothing_more(recorded):
    pipeline = _pipeline()
    problems = {}
    for stage, keys in recorded.items():
        spec = pipeline["stages"][stage]
        params, files = stage_reads(keys)
        found = params_problems(spec, params)
        found += [f"reads {f} but has no such dep" for f in sorted(files)
                  if f not in spec.get("deps", [])]
        if found:
            problems[stage] = found
    assert problems == {}
    assert "cv.folds" in stage_reads(recorded["tune"])[0]  # the recorder sees through calls
    assert "conf/model" in stage_reads(recorded["train"])[1]
    assert "conf/dataset/${dataset}.yaml" in stage_reads(recorded["preprocess"])[1]


@pytest.mark.e2e
@pytest.mark.xdist_group("pipeline_deps")
def test_the_params_check_catches_a_missing_and_a_surplus_key(recorded):
    pipeline = _pipeline()
    tune = dict(pipeline["stages"]["tune"])
    tune["params"] = [p for p in tune["params"] if p != "cv"]  # tune lists the section
    assert "reads cv.folds but does not list it" in params_problems(
        tune, stage_reads(recorded["tune"])[0])
    train = dict(pipeline["stages"]["train"])
    train["params"] = [*train["params"], "plot"]
    assert "lists plot but never reads it" in params_problems(train,
                                                              stage_reads(recorded["train"])[0])


def test_recorder_records_properties_and_nested_reads():
    from tests.conftest import tiny

    recorder = Recorder()
    p = recorder.wrap(tiny())
    assert p.candidates  # a property reading train.candidates and models
    assert p.dataset.features
    assert {"train.candidates", "models", "dataset.columns", "dataset.target"} <= recorder.keys
    json.dumps(sorted(recorder.keys))
