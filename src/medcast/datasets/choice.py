"""Which dataset the study runs on. Every `dvc exp run -S key=value` recomposes params.yaml from
conf/params/config.yaml, so its `dataset:` line is the dataset of every run that does not name
one: `python -m medcast.datasets use NAME` (`use`) points that line at NAME, comments kept, and
recomposes params.yaml. `dataset_change` is the line the preprocess stage logs when params.yaml
names another dataset than dvc.lock's record of its last run (DVC rewrites dvc.lock only after
the stage): it reads dvc.lock and conf/params/config.yaml for that log line alone, which is
why neither is a dependency of the stage."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import yaml

from medcast.config import HYDRA_DIR, PARAMS_FILE, compose_yaml, parse_params
from medcast.datasets.spec import check_name, dataset_config, dataset_file, review_markers
from medcast.errors import ConfigError

CONFIG_FILE = f"{HYDRA_DIR}/config.yaml"
LOCK_FILE = "dvc.lock"
# The top-level `dataset:` line: its value and an end-of-line comment, if any.
DATASET_LINE = re.compile(r"^dataset:[ \t]*(?P<value>[^#\n]*?)[ \t]*(?P<comment>#[^\n]*)?$",
                          re.MULTILINE)


def _yaml_value(name: str) -> str:
    """`name` as a YAML scalar that reads back as that text ('123', 'null' and 'true' quoted)."""
    return name if yaml.safe_load(name) == name else json.dumps(name)


def composed_default(root: Path = Path(".")) -> str | None:
    """The dataset conf/params/config.yaml names (None if it cannot be read)."""
    try:
        doc = yaml.safe_load((root / CONFIG_FILE).read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError):
        return None
    value = doc.get("dataset") if isinstance(doc, dict) else None
    return value if isinstance(value, str) else None


def locked_dataset(root: Path = Path(".")) -> str | None:
    """The dataset of the preprocess run dvc.lock records (None: no dvc.lock, or no entry)."""
    try:
        doc = yaml.safe_load((root / LOCK_FILE).read_text(encoding="utf-8"))
        value = doc["stages"]["preprocess"]["params"][PARAMS_FILE]["dataset"]
    except (OSError, yaml.YAMLError, KeyError, TypeError):
        return None
    return value if isinstance(value, str) else None


def dataset_change(current: str, root: Path = Path(".")) -> str | None:
    """One line when `current` differs from the dataset of the last preprocess run, saying which
    dataset every `dvc exp run -S` composes and the command that keeps the other; else None."""
    before = locked_dataset(root)
    if before is None or before == current:
        return None
    default = composed_default(root)
    line = f"dataset: {before} → {current} since the last preprocess run (dvc.lock)"
    if default is None:
        return line
    line += f"; every `dvc exp run -S …` composes {CONFIG_FILE}'s dataset ({default})"
    if default == current:
        return f"{line}: if you meant {before}, `python -m medcast.datasets use {before}`"
    return f"{line}: `python -m medcast.datasets use {current}` keeps {current}"


def _set_default_line(text: str, name: str, where: str) -> tuple[str, str]:
    """(the config text with `dataset: name`, the value it had)."""
    found = list(DATASET_LINE.finditer(text))
    if len(found) != 1:
        raise ConfigError(f"{where}: expected one top-level `dataset:` line, found {len(found)}")
    match = found[0]
    line = f"dataset: {_yaml_value(name)}"
    if match["comment"]:
        line += f"  {match['comment']}"
    return text[:match.start()] + line + text[match.end():], match["value"]


def _flat(tree: Any, prefix: str = "") -> dict[str, Any]:
    """{"tune.n_trials": 40, …}: every leaf of a nested mapping by its dotted key."""
    out: dict[str, Any] = {}
    for key, value in (tree or {}).items():
        if isinstance(value, dict) and value:
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def _read_params(path: Path) -> dict[str, Any]:
    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError):
        return {}
    return doc if isinstance(doc, dict) else {}


def _shown(value: Any) -> str:
    return "null" if value is None else str(value)


def use(name: str, root: Path = Path(".")) -> list[str]:
    """Make `name` the dataset conf/params/config.yaml composes, recompose params.yaml; the
    lines saying what changed and what to commit. Nothing is written when the dataset's
    description is missing or invalid, or the composition fails its checks."""
    ds = dataset_config(check_name(name), root)  # missing: says how to draft one
    config, params = root / CONFIG_FILE, root / PARAMS_FILE
    text, old = _set_default_line(config.read_text(encoding="utf-8"), name, CONFIG_FILE)
    composed = compose_yaml([f"dataset='{name}'"], root / HYDRA_DIR)
    after = yaml.safe_load(composed)
    parse_params(after, root, label=f"{PARAMS_FILE} (composed)")
    before = _read_params(params)
    try:
        old_name = yaml.safe_load(old) if old else None
    except yaml.YAMLError:
        old_name = old
    if old_name == name and before == after:
        return [f"{name} is already the dataset {CONFIG_FILE} composes, and {PARAMS_FILE} is "
                "its composition: nothing to do"]
    config.write_text(text, encoding="utf-8")
    params.write_text(composed, encoding="utf-8")
    lines = [f"{CONFIG_FILE}: dataset: {_shown(old_name)} → {name} (what every `dvc exp run -S "
             "key=value` composes)" if old_name != name else f"{CONFIG_FILE}: dataset: {name} "
             "(unchanged)",
             f"wrote {PARAMS_FILE}: dataset: {_shown(before.get('dataset'))} → {name}"
             if before.get("dataset") != name else f"wrote {PARAMS_FILE} (dataset: {name}, as before)"]
    flat_before, flat_after = _flat(before), _flat(after)
    reset = [f"{key} {_shown(flat_before[key])} → {_shown(flat_after.get(key))}"
             for key in flat_before if key != "dataset" and flat_before[key] != flat_after.get(key)]
    if reset:
        lines.append(f"{PARAMS_FILE} also took {CONFIG_FILE}'s values: {', '.join(reset)} (to "
                     f"keep a value, set it in {CONFIG_FILE} and run this again)")
    markers = review_markers(ds)
    if markers:
        lines.append(f"note: {dataset_file(name)} still holds REVIEW markers in "
                     f"{', '.join(markers)}: replace each with the real value (preprocess refuses "
                     "them)")
    lines.append(f"next: git add {CONFIG_FILE} {PARAMS_FILE} && git commit -m 'Use dataset {name}'")
    lines.append(f"then: dvc exp run   # on {name}, as is every `dvc exp run -S key=value`")
    return lines
