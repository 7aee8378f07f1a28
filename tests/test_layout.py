"""The test suite's layout (tests/README.md): no module under tests/ imports a test module
(helpers shared between test modules live in tests/support/); tests/serve/ mirrors serve/, one
test module per module directly in serve/ (`test_<name>.py`; serve/__main__.py's is
test_main.py; serve/__init__.py has none) and no other; and tests/README.md's table lists every
test module under tests/, and nothing else. And `make test`'s `--dist loadgroup` keeps an
xdist_group on one worker, so a fixture the group shares is built once (pytest 9.2 broke that
silently: pytest-dev/pytest-xdist#1386)."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TESTS = ROOT / "tests"
README = TESTS / "README.md"
# serve/<module>.py → tests/serve/<test file>; None: no test module of its own
SERVE_TESTS = {"__init__": None, "__main__": "test_main.py"}


def all_test_modules() -> list[Path]:
    """Every test module under tests/ (pytest's default pattern, test_*.py), sorted."""
    return sorted(TESTS.rglob("test_*.py"))


def package_of(path: Path) -> list[str]:
    """The dotted package of a file under the repository root, as parts (tests/serve/test_db.py →
    ["tests", "serve"])."""
    return list(path.relative_to(ROOT).parts[:-1])


def imported_test_modules(path: Path, source: str | None = None) -> list[str]:
    """The test modules (`tests.[…].test_*`) that `path` (or `source`, as if it were `path`)
    imports, at any depth (function-level imports too), relative imports resolved; in `from
    PACKAGE import name`, name is a module of that package."""
    tree = ast.parse(source if source is not None else path.read_text(), str(path))
    package = package_of(path)
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = package[:len(package) - node.level + 1] if node.level else []
            module = ".".join([*base, *([node.module] if node.module else [])])
            names = [module]
            if (ROOT / module.replace(".", "/")).is_dir():
                names += [f"{module}.{alias.name}" for alias in node.names]
        else:
            continue
        found.update(name for name in names
                     if name.split(".")[0] == "tests" and name.split(".")[-1].startswith("test_"))
    return sorted(found)


def readme_listed() -> list[str]:
    """The test files tests/README.md's tables list: each row's first cell, a path relative to
    tests/ in backticks."""
    rows = re.findall(r"^\|\s*`([^`]+\.py)`", README.read_text(), flags=re.M)
    return [row for row in rows if Path(row).name.startswith("test_")]


def test_no_module_under_tests_imports_a_test_module() -> None:
    offenders = {str(p.relative_to(ROOT)): found for p in sorted(TESTS.rglob("*.py"))
                 if (found := imported_test_modules(p))}
    assert not offenders, ("test modules import other test modules; move what they share to "
                           f"tests/support/: {offenders}")


# Sources spell the package {T} in `from` imports: a grep of tests/ for real imports of test
# modules then finds none in this file.
@pytest.mark.parametrize(("source", "found"), [
    ("from {T}.test_serve import real_server", ["tests.test_serve"]),
    ("import tests.serve.test_clients", ["tests.serve.test_clients"]),
    ("from tests import test_reliability", ["tests.test_reliability"]),
    ("from tests.serve import test_db as db", ["tests.serve.test_db"]),
    ("from . import test_db", ["tests.serve.test_db"]),
    ("from .test_clients import issue_key", ["tests.serve.test_clients"]),
    ("from ..test_pg_tls import Tls", ["tests.test_pg_tls"]),
    ("def f():\n    from {T}.test_serve import real_server\n", ["tests.test_serve"]),
    ("from tests.support.servers import launch\nfrom tests.conftest import ROOT\n"
     "from devtools.tiny_model import TinyModel\nimport test_helpers", []),
])
def test_the_import_check_sees_every_form_of_import(source: str, found: list[str]) -> None:
    """The check above on sources written for it, as if at tests/serve/test_x.py."""
    source = source.replace("{T}", "tests")
    assert imported_test_modules(TESTS / "serve" / "test_x.py", source) == found


def test_tests_serve_mirrors_serve() -> None:
    expected = {SERVE_TESTS.get(p.stem, f"test_{p.stem}.py")
                for p in (ROOT / "serve").glob("*.py")} - {None}
    present = {p.name for p in (TESTS / "serve").glob("test_*.py")}
    assert not expected - present, f"serve/ modules without tests/serve/: {sorted(expected - present)}"
    assert not present - expected, (f"tests/serve/ modules of no serve/ module: "
                                    f"{sorted(present - expected)} (a flow test goes to tests/)")


def test_readme_lists_every_test_module_once_and_nothing_else() -> None:
    listed = readme_listed()
    present = {str(p.relative_to(TESTS)) for p in all_test_modules()}
    assert len(listed) > 0, "tests/README.md lists no test file (rows: | `path` | … |)"
    twice = sorted({row for row in listed if listed.count(row) > 1})
    assert not twice, f"tests/README.md lists these more than once: {twice}"
    assert not present - set(listed), f"missing from tests/README.md: {sorted(present - set(listed))}"
    assert not set(listed) - present, f"in tests/README.md, but no such file: {sorted(set(listed) - present)}"


def test_an_xdist_group_runs_on_one_worker_and_builds_its_shared_fixture_once(tmp_path: Path) -> None:
    """What the e2e flows rely on (one `dvc repro` per group, not one per worker): six tests of
    one group, interleaved with free tests, under `make test`'s `-n 2 --dist loadgroup`."""
    (tmp_path / "pytest.ini").write_text("[pytest]\n")
    (tmp_path / "test_grouped.py").write_text(textwrap.dedent("""
        import os, time
        import pytest

        @pytest.fixture(scope="session")
        def shared():
            with open("builds.log", "a") as log:
                log.write(f"{os.getpid()}\\n")

        @pytest.mark.parametrize("i", range(6))
        def test_free(i):
            time.sleep(0.05)
    """) + "".join(f"""
@pytest.mark.xdist_group("g")
def test_grouped_{i}(shared):
    time.sleep(0.05)
""" for i in range(6)))
    out = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider",
                          "-p", "no:randomly", "-n", "2", "--dist", "loadgroup", "-v"],
                         cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout[-3000:]
    workers = {line.split()[0] for line in out.stdout.splitlines() if "test_grouped_" in line
               and "PASSED" in line}
    assert len(workers) == 1, f"the group ran on {sorted(workers)}"
    assert len((tmp_path / "builds.log").read_text().split()) == 1
