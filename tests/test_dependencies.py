"""The dependency contract (pyproject.toml, uv.lock, the Makefile): the lock matches pyproject.toml,
a drifted lock stops `make install`, and the `serve` extra alone runs the service without the lab.

Every install uses uv's cache (warm after `make install`); only the serve-only test may reach the
package index, and it skips, saying so, where the index is unreachable and the cache lacks a wheel.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tomllib
import urllib.request
from pathlib import Path

import httpx
import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from devtools.tiny_model import TinyModel
from tests.support.servers import real_server

ROOT = Path(__file__).resolve().parents[1]
UV = Path(sys.executable).parent / "uv"  # pinned and installed by the Makefile
SERVE_VENV_MAX_MB = 400
# The research stack by import name: the serve-only install must not be able to import any.
# (`onnx`, the format's own library, is in both: the service cuts the graph it explains with it,
# serve/explain.py; `shap` only in the pipeline: the service computes Shapley values itself.)
PIPELINE_MODULES = ("tensorflow", "keras", "mlflow", "optuna", "dvc", "sklearn", "scipy", "pandas",
                    "matplotlib", "skl2onnx", "tf2onnx", "shap", "hydra", "skops")
# Heavy distributions that come into the pipeline indirectly (not named in pyproject.toml).
PIPELINE_TRANSITIVE = {"tensorflow", "keras", "mlflow-skinny", "flask", "gunicorn", "dvc-s3"}
# Pipeline requirements the service may hold anyway, because a serving package needs them.
SHARED_WITH_SERVE = {"httpx"}  # Litestar's own dependency (its test client)


def uv_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH")}
    env["UV_PYTHON_DOWNLOADS"] = "never"  # the interpreter is this one, never a download
    env.update(extra)
    return env


def extras() -> dict[str, set[str]]:
    """Distribution names per extra of pyproject.toml; "" holds the base dependencies."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    groups = {"": project["dependencies"], **project["optional-dependencies"]}
    return {k: {canonicalize_name(Requirement(r).name) for r in v} for k, v in groups.items()}


def drifted_copy(dest: Path) -> Path:
    """pyproject.toml, uv.lock and the Makefile, with one dependency added to `serve` but not
    locked (tqdm: already in the lock, through DVC)."""
    dest.mkdir()
    for name in ("pyproject.toml", "uv.lock", "Makefile"):
        shutil.copy2(ROOT / name, dest / name)
    text = (dest / "pyproject.toml").read_text()
    anchor = '"prometheus-client>=0.20",\n'
    assert anchor in text, "pyproject.toml's serve extra changed: update drifted_copy()"
    (dest / "pyproject.toml").write_text(text.replace(anchor, anchor + '    "tqdm>=4.66",\n', 1))
    return dest


@pytest.mark.timeout(60)
def test_lock_matches_pyproject() -> None:
    out = subprocess.run([str(UV), "lock", "--check", "--offline"], cwd=ROOT, env=uv_env(),
                         capture_output=True, text=True, timeout=50)
    assert out.returncode == 0, f"uv.lock has drifted from pyproject.toml (run `make lock`):\n{out.stderr}"


@pytest.mark.timeout(60)
def test_sync_locked_refuses_a_lock_that_drifted_from_pyproject(tmp_path: Path) -> None:
    project = drifted_copy(tmp_path / "project")
    out = subprocess.run(
        # Not --offline: the drift makes uv re-resolve for every platform, which needs the
        # metadata of packages this machine never installed (win32 wheels): from PyPI, or the
        # error would depend on what uv's cache happens to hold.
        [str(UV), "sync", "--locked", "--extra", "serve", "--dry-run"],
        cwd=project, env=uv_env(UV_PROJECT_ENVIRONMENT=str(tmp_path / "venv")),
        capture_output=True, text=True, timeout=50,
    )
    assert out.returncode != 0
    # uv wraps its messages to the terminal's width
    assert "needs to be updated, but `--locked` was provided" in " ".join(out.stderr.split()), \
        out.stderr


@pytest.mark.timeout(90)
def test_make_install_stops_on_a_drifted_lock_and_says_run_make_lock(tmp_path: Path) -> None:
    project = drifted_copy(tmp_path / "project")
    uv_stamp = tmp_path / "uv-installed"
    uv_stamp.touch()  # uv is already in this virtualenv: skip the pip bootstrap
    # The project environment would be project/.venv (uv's default), never this virtualenv.
    out = subprocess.run(
        ["make", "--no-print-directory", "install", f"BIN={UV.parent}", f"UV_STAMP={uv_stamp}",
         f"STAMP={tmp_path / 'installed'}"],
        cwd=project, env=uv_env(), capture_output=True, text=True, timeout=80,
    )
    assert out.returncode != 0, out.stdout + out.stderr
    assert "run 'make lock', then commit uv.lock" in out.stderr, out.stderr
    assert not (project / ".venv").exists() and not (tmp_path / "installed").exists()


def pipeline_packages() -> set[str]:
    """Distributions a serve-only install must not hold: what only the pipeline asks for."""
    groups = extras()
    return (groups["pipeline"] - groups["serve"] - groups[""] - SHARED_WITH_SERVE) | PIPELINE_TRANSITIVE


def locked_closure(roots: set[str]) -> set[str]:
    """Every distribution uv.lock may install for `roots` (names, or "medcast[extra]"), on any
    platform: markers are ignored, so the answer can only be too large, never too small."""
    lock = tomllib.loads((ROOT / "uv.lock").read_text())
    by_name: dict[str, list[dict]] = {}
    for package in lock["package"]:
        by_name.setdefault(package["name"], []).append(package)
    seen: set[str] = set()
    todo = [(name.split("[")[0], name.partition("[")[2].rstrip("]")) for name in roots]
    while todo:
        name, extra = todo.pop()
        key = f"{name}[{extra}]"
        if key in seen:
            continue
        seen.add(key)
        for package in by_name[name]:
            deps = package.get("optional-dependencies", {}).get(extra, []) if extra else \
                package.get("dependencies", [])
            for dep in deps:
                todo.append((dep["name"], ""))
                todo.extend((dep["name"], e) for e in dep.get("extra", []))
        if extra:
            todo.append((name, ""))
    return {key.split("[")[0] for key in seen} - {"medcast"}


def test_lock_resolves_the_serve_extra_to_no_pipeline_package() -> None:
    serve = locked_closure({"medcast", "medcast[serve]"})
    assert {"litestar", "onnxruntime", "sqlalchemy", "prometheus-client"} <= serve
    assert not serve & pipeline_packages(), f"the serve extra pulls {serve & pipeline_packages()}"
    assert {"tensorflow-cpu", "mlflow", "dvc"} <= locked_closure({"medcast[pipeline]"})


def dir_megabytes(root: Path) -> float:
    """Apparent size of a folder (files hard-linked from uv's cache count once, as `du`)."""
    seen: set[int] = set()
    total = 0
    for dirpath, _, files in os.walk(root):
        for name in files:
            st = os.lstat(os.path.join(dirpath, name))
            if st.st_ino not in seen:
                seen.add(st.st_ino)
                total += st.st_size
    return total / 1e6


def index_reachable() -> bool:
    try:
        with urllib.request.urlopen("https://pypi.org/simple/", timeout=10):  # nosec B310
            return True
    except OSError:
        return False


@pytest.mark.timeout(600)
def test_serve_extra_alone_runs_the_service_without_the_pipeline_in_400_mb(
    tiny: TinyModel, tmp_path: Path, pycache: Path
) -> None:
    venv = tmp_path / "serve-venv"
    sync = subprocess.run(
        [str(UV), "sync", "--locked", "--extra", "serve", "--compile-bytecode",
         "--python", sys.executable],
        cwd=ROOT, env=uv_env(UV_PROJECT_ENVIRONMENT=str(venv)), capture_output=True, text=True,
        timeout=480,
    )
    if sync.returncode != 0 and not index_reachable():
        pytest.skip("the package index (pypi.org) is unreachable and uv's cache lacks a wheel of "
                    f"the serve extra: {sync.stderr.strip().splitlines()[-1]}")
    assert sync.returncode == 0, sync.stderr[-3000:]
    python = venv / "bin" / "python"

    listed = subprocess.run([str(UV), "pip", "list", "--python", str(python), "--format", "json"],
                            env=uv_env(), capture_output=True, text=True, timeout=60, check=True)
    installed = {canonicalize_name(p["name"]) for p in json.loads(listed.stdout)}
    groups = extras()
    megabytes = dir_megabytes(venv)
    print(f"\nserve-only virtualenv: {len(installed)} packages, {megabytes:.0f} MB: "
          f"{', '.join(sorted(installed))}")
    assert groups["serve"] | groups[""] <= installed
    assert not installed & pipeline_packages(), f"pipeline packages: {installed & pipeline_packages()}"
    assert megabytes <= SERVE_VENV_MAX_MB, f"{megabytes:.0f} MB > {SERVE_VENV_MAX_MB} MB"

    env = {k: v for k, v in uv_env().items() if not k.startswith("MEDCAST_")}
    env.pop("PYTHONDONTWRITEBYTECODE", None)

    def run(*args: str, **medcast: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(python), *args], cwd=tmp_path, capture_output=True, text=True,
                              timeout=120, env={**env, **medcast})

    probe = run("-c", "import importlib.util as u, sys; "
                f"print(' '.join(m for m in {PIPELINE_MODULES!r} if u.find_spec(m)))")
    assert probe.returncode == 0 and probe.stdout.strip() == "", probe.stdout + probe.stderr

    helped = run("-m", "serve", "--help")
    assert helped.returncode == 0 and "MEDCAST_MODEL_REV" in helped.stdout, helped.stderr

    checked = run("-m", "serve", "--check", MEDCAST_REPO=str(tiny.root))
    assert checked.returncode == 0, checked.stderr[-3000:]
    assert checked.stdout.startswith("ok: ") and tiny.md5 in checked.stdout

    # By git revision the model comes through DVC, which this install lacks: one clear line.
    by_rev = run("-m", "serve", "--check", MEDCAST_REPO=str(tiny.root), MEDCAST_MODEL_REV="v1")
    assert by_rev.returncode == 1
    assert "Traceback" not in by_rev.stderr and len(by_rev.stderr.strip().splitlines()) == 1, \
        by_rev.stderr
    assert "pip install 'medcast[pipeline]'" in by_rev.stderr

    # The service itself: migrations, the log, /metrics, one prediction, a clean stop.
    db_url = f"sqlite:///{tmp_path / 'serve.db'}"
    with real_server(tmp_path, tiny.root, db_url, pycache, python=str(python)) as (port, _):
        base = f"http://127.0.0.1:{port}"
        r = httpx.post(f"{base}/predict", json=tiny.examples[0], timeout=10)
        assert r.status_code == 200, r.text
        assert r.json()["prediction"] == pytest.approx(tiny.expected[0], rel=1e-4)
        # Explanations without shap or scikit-learn: the service's own Shapley values
        explained = httpx.post(f"{base}/predict?explain=true", json=tiny.examples[0], timeout=10)
        assert explained.status_code == 200, explained.text
        e = explained.json()["explanation"]
        assert e["base_value"] + sum(e["contributions"].values()) == pytest.approx(
            r.json()["prediction"], rel=1e-4)
        assert httpx.get(f"{base}/metrics", timeout=10).status_code == 200


def test_the_registry_extra_adds_mlflow_skinny_and_no_research_package() -> None:
    """What `medcast[registry]` may install beyond the service (uv.lock, markers ignored): MLflow's
    client, never the pipeline's heavy packages (they stay out of a serving install)."""
    import tomllib

    from tests.conftest import ROOT

    lock = tomllib.loads((ROOT / "uv.lock").read_text())
    packages = {p["name"]: p for p in lock["package"]}
    extra = packages["medcast"]["optional-dependencies"]["registry"]
    assert [d["name"] for d in extra] == ["mlflow-skinny"]
    closure, todo = set(), ["mlflow-skinny"]
    while todo:
        name = todo.pop()
        if name not in closure:
            closure.add(name)
            todo.extend(d["name"] for d in packages[name].get("dependencies", []))
    heavy = {"mlflow", "tensorflow-cpu", "keras", "scikit-learn", "scipy", "pandas", "pyarrow",
             "matplotlib", "dvc", "optuna", "flask", "gunicorn", "skops", "onnx"}
    assert not closure & heavy, closure & heavy
