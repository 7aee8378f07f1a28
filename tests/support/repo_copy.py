"""Throwaway copies of this repository for end-to-end flows (dvc repro, dvc exp run)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import yaml

from tests.conftest import ROOT, TINY_MODELS, TINY_OVERRIDES, venv_env

GIT_ID = {
    "GIT_AUTHOR_NAME": "medcast tests", "GIT_AUTHOR_EMAIL": "tests@medcast.invalid",
    "GIT_COMMITTER_NAME": "medcast tests", "GIT_COMMITTER_EMAIL": "tests@medcast.invalid",
}


def run(cmd: list[str], cwd: Path, timeout: float = 600, check: bool = True,
        unset: tuple[str, ...] = (), **env: str) -> subprocess.CompletedProcess[str]:
    full_env = venv_env(**GIT_ID, **env)
    for name in unset:
        full_env.pop(name, None)
    out = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout,
                         env=full_env)
    if check and out.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({out.returncode}):\n{out.stdout}\n{out.stderr}")
    return out


def tracked_files() -> list[str]:
    """What a clone of the working tree would hold: tracked plus new, non-ignored files."""
    out = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=ROOT,
                         capture_output=True, text=True, check=True)
    return [f for f in out.stdout.split("\0") if f and (ROOT / f).is_file()]


def tiny_conf(conf: Path, extra: dict[str, Any] | None = None) -> None:
    """Bake the tiny overrides into conf/ (so `dvc exp run -S` composes tiny params too):
    dotted params keys into conf/params/config.yaml, `model.<name>.<key>` into the defaults of
    conf/model/<name>.yaml."""
    cfg_path = conf / "params/config.yaml"
    cfg = yaml.safe_load(cfg_path.read_text())
    models: dict[str, dict[str, Any]] = {k: dict(v) for k, v in TINY_MODELS.items()}
    for item in [*TINY_OVERRIDES, *[f"{k}={v}" for k, v in (extra or {}).items()]]:
        dotted, value = item.split("=", 1)
        if dotted.startswith("model."):
            _, name, key = dotted.split(".", 2)
            models.setdefault(name, {})[key] = yaml.safe_load(value)
            continue
        *parents, leaf = dotted.split(".")
        node = cfg
        for key in parents:
            node = node[key]
        node[leaf] = yaml.safe_load(value)
    cfg_path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    for name, changes in models.items():
        path = conf / "model" / f"{name}.yaml"
        model = yaml.safe_load(path.read_text())
        model["defaults"] = {**(model.get("defaults") or {}), **changes}
        path.write_text(yaml.safe_dump(model, sort_keys=False))


def make_copy(dest: Path, **conf_overrides: Any) -> Path:
    """A git+DVC repository at dest with this project's files, tiny config and params.yaml
    composed from it, committed. Local S3/remote settings are not copied."""
    for rel in tracked_files():
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / rel, target)
    (dest / ".dvc" / "config.local").unlink(missing_ok=True)
    (dest / "dvc.lock").unlink(missing_ok=True)
    tiny_conf(dest / "conf", conf_overrides)
    run(["python", "-m", "medcast.config"], dest)
    run(["git", "init", "-q", "-b", "main"], dest)
    run(["git", "add", "-A"], dest)
    run(["git", "commit", "-q", "-m", "copy"], dest)
    return dest
