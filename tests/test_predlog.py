"""medcast.predlog: the prediction log's one table and one URL rule, shared by the service and
the lab; and the rule that the lab (src/) never imports the service (serve/)."""

from __future__ import annotations

import ast
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from medcast import predlog
from serve import db as servedb
from serve.settings import Settings, SettingsError
from tests.conftest import ROOT

URL = "postgresql+psycopg://u:p%40ss@db/x"


def _env(tmp_path: Path, case: str) -> dict[str, str]:
    """The environment of one case of the URL rule (a secret file written under tmp_path)."""
    secret = tmp_path / "url"
    secret.write_text(f"  {URL}\n")
    return {
        "value": {"MEDCAST_DATABASE_URL": f" {URL} "},
        "file": {"MEDCAST_DATABASE_URL_FILE": str(secret)},
        "both": {"MEDCAST_DATABASE_URL": URL, "MEDCAST_DATABASE_URL_FILE": str(secret)},
        "unreadable": {"MEDCAST_DATABASE_URL_FILE": str(tmp_path / "missing")},
        "empty": {"MEDCAST_DATABASE_URL": ""},
        "neither": {},
    }[case]


@pytest.mark.parametrize(("case", "expected"), [
    ("value", URL), ("file", URL), ("empty", "default"), ("neither", "default"),
])
def test_log_url_is_the_value_or_the_file_stripped_else_the_repo_sqlite_file(
        tmp_path: Path, case: str, expected: str) -> None:
    repo = tmp_path / "repo"
    default = f"sqlite:///{(repo / 'serve.db').resolve()}"
    url = predlog.log_url(repo, _env(tmp_path, case))
    assert url == (default if expected == "default" else expected)
    # the service's settings follow the same rule, from the same function
    settings = Settings.from_env({"MEDCAST_REPO": str(repo), **_env(tmp_path, case)})
    assert settings.db_url == url


@pytest.mark.parametrize(("case", "message"), [
    ("both", "set MEDCAST_DATABASE_URL or MEDCAST_DATABASE_URL_FILE, not both"),
    ("unreadable", "MEDCAST_DATABASE_URL_FILE='.*missing': cannot read \\(No such file"),
])
def test_log_url_with_both_variables_or_an_unreadable_file_is_an_error_the_service_repeats(
        tmp_path: Path, case: str, message: str) -> None:
    with pytest.raises(predlog.LogURLError, match=message):
        predlog.log_url(tmp_path, _env(tmp_path, case))
    with pytest.raises(SettingsError, match=message):
        Settings.from_env({"MEDCAST_REPO": str(tmp_path), **_env(tmp_path, case)})


def test_log_url_reads_the_process_environment_by_default(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MEDCAST_DATABASE_URL", URL)
    assert predlog.log_url(tmp_path) == URL
    from medcast.monitoring import log_url

    assert log_url(tmp_path) == URL


def test_service_writes_the_table_predlog_defines() -> None:
    assert servedb.predictions is predlog.predictions
    assert servedb.COLUMNS == predlog.COLUMNS == tuple(
        c.name for c in predlog.predictions.columns if c.name != "id")


def _imports_of_serve(path: Path) -> list[str]:
    """`import serve…`, `from serve… import`, importlib.import_module("serve…") and
    __import__("serve…") anywhere in the file (inside functions too)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        elif isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant):
            func = node.func
            called = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            if called in ("import_module", "__import__") and isinstance(node.args[0].value, str):
                names = [node.args[0].value]
        found += [f"{path}:{node.lineno}: {n}" for n in names if n.split(".")[0] == "serve"]
    return found


def test_the_lab_never_imports_the_service() -> None:
    files = sorted((ROOT / "src").rglob("*.py"))
    assert len(files) > 40
    offenders = [hit for path in files for hit in _imports_of_serve(path)]
    assert offenders == [], "src/ must not import serve/ (shared definitions live in medcast):\n" \
        + "\n".join(offenders)


def test_the_import_check_sees_imports_inside_functions(tmp_path: Path) -> None:
    sample = tmp_path / "sample.py"
    sample.write_text(textwrap.dedent("""
        import importlib
        def f():
            from serve.db import predictions
            import serve.settings
            return importlib.import_module("serve.model"), __import__("serve")
        from medcast import serve_like  # not the service
    """))
    assert [h.split(": ")[1] for h in _imports_of_serve(sample)] == [
        "serve.db", "serve.settings", "serve.model", "serve"]


def test_read_log_runs_without_msgspec_litestar_or_the_service(tmp_path: Path) -> None:
    """What a pipeline-only install has: the log read with those three unimportable."""
    db = tmp_path / "log.db"
    code = textwrap.dedent(f"""
        import sys
        from datetime import UTC, datetime

        class Block:
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in ("msgspec", "litestar", "serve"):
                    raise ImportError(f"{{name}} is blocked: a pipeline-only install")

        sys.meta_path.insert(0, Block())
        import sqlalchemy as sa
        from medcast import predlog
        from medcast.monitoring import read_log

        engine = sa.create_engine("sqlite:///{db}")
        predlog.metadata.create_all(engine)
        with engine.begin() as conn:
            conn.execute(predlog.predictions.insert(), [dict(
                request_id="r", item=i, created_at=datetime.now(UTC), model_md5="0" * 32,
                model_revision="workspace", dataset="insurance", features={{"age": 40 + i}},
                prediction=1.0, latency_ms=0.5, client=None, lower=0.5, upper=1.5)
                for i in range(3)])
        log = read_log("sqlite:///{db}", dataset="insurance")
        print(len(log), list(log["age"]))
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["3", "[40,", "41,", "42]"]


def test_service_settings_import_predlog_only_when_they_need_the_url() -> None:
    """`python -m serve --help` and a settings error stay fast: no SQLAlchemy at import (the
    virtualenv has no .pyc files; SQLAlchemy alone compiles for over a second here)."""
    code = "import sys, serve.settings; print('sqlalchemy' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                         cwd=ROOT)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"
