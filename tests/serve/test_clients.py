"""Per-client keys (serve/clients.py) and the audit trail they feed: the clients file, the
`python -m serve keys` commands, 401s that leave the log untouched, revocation, rotation,
reloading (mtime and SIGHUP), the client name on every log row and `GET /predictions` filters.
"""

from __future__ import annotations

import io
import signal
import stat
from pathlib import Path

import pytest

from devtools.service import running, service_env
from devtools.tiny_model import TinyModel
from serve import clients as clientsmod
from serve.__main__ import main
from serve.app import create_app
from serve.clients import Clients, ClientsError
from tests.support.clients import issue_key
from tests.support.serving import log_count, serving, wait_until, written
from tests.support.settings import client_settings

pytestmark = pytest.mark.timeout(120)


# ---- the file and the commands --------------------------------------------------------------


def test_keys_add_prints_the_key_once_and_stores_only_its_hash_mode_600(
    keys: tuple[Path, dict[str, str]],
) -> None:
    path, issued = keys
    text = path.read_text()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    for name, key in issued.items():
        assert len(key) >= 40 and key not in text
        assert f"{name} {clientsmod.key_hash(key)}" in text
    assert Clients(path).name_of(issued["ward-b"]) == "ward-b"


def test_keys_revoke_removes_a_name_or_one_key(tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str],
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "clients"
    old, new, other = (issue_key(path, "a", capsys), issue_key(path, "a", capsys),
                       issue_key(path, "b", capsys))
    monkeypatch.setattr("sys.stdin", io.StringIO(old + "\n"))
    assert main(["keys", "revoke", "a", "--key", "-", "--file", str(path)]) == 0
    c = Clients(path)
    assert (c.name_of(old), c.name_of(new), c.name_of(other)) == (None, "a", "b")
    assert main(["keys", "revoke", "a", "--file", str(path)]) == 0
    assert Clients(path).name_of(new) is None
    assert main(["keys", "revoke", "a", "--file", str(path)]) == 1  # nothing left to revoke
    assert "no key for 'a'" in capsys.readouterr().err


def test_roles_an_old_file_is_of_clients_and_a_name_keeps_its_role(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
) -> None:
    path = tmp_path / "clients"
    ward = issue_key(path, "ward-a", capsys)
    assert path.read_text() == f"ward-a {clientsmod.key_hash(ward)}\n"  # the format before roles
    assert main(["keys", "add", "audit", "--role", "auditor", "--file", str(path)]) == 0
    audit = capsys.readouterr().out.strip()
    second = issue_key(path, "audit", capsys)  # a new key of a known name: its role
    c = Clients(path)
    assert [(c.lookup(k).name, c.lookup(k).role) for k in (ward, audit, second)] == [
        ("ward-a", "client"), ("audit", "auditor"), ("audit", "auditor")]
    assert main(["keys", "add", "ward-a", "--role", "auditor", "--file", str(path)]) == 2
    assert "'ward-a' is a client: a name has one role" in capsys.readouterr().err
    assert main(["keys", "list", "--file", str(path)]) == 0
    assert capsys.readouterr().out.splitlines() == ["ward-a 1", "audit 2 role=auditor"]
    monkeypatch.setattr("sys.stdin", io.StringIO(audit + "\n"))  # revoking keeps the role
    assert main(["keys", "revoke", "audit", "--key", "-", "--file", str(path)]) == 0
    assert (Clients(path).lookup(audit), Clients(path).name_of(second)) == (None, "audit")


def test_keys_without_a_file_or_with_a_bad_name_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("MEDCAST_CLIENTS_FILE", raising=False)
    assert main(["keys", "add", "x"]) == 2
    assert "--file" in capsys.readouterr().err
    assert main(["keys", "add", "bad name!", "--file", str(tmp_path / "c")]) == 2
    assert "client name" in capsys.readouterr().err


@pytest.mark.parametrize(("content", "line"), [
    ("# ok\n\nward-a " + "0" * 64 + "\nward-b not-a-hash\n", "line 4"),
    ("ward-a " + "0" * 63 + "\n", "line 1"),
    ("ward a " + "0" * 64 + "\n", "line 1"),
    ("audit " + "0" * 64 + " role=admin\n", "line 1"),
    ("audit " + "0" * 64 + " auditor\n", "line 1"),
    ("audit " + "0" * 64 + " role=auditor x\n", "line 1"),
    ("audit " + "0" * 64 + " role=auditor\naudit " + "1" * 64 + "\n", "line 2: 'audit' is a client"),
])
def test_bad_line_is_a_startup_error_naming_the_line(tmp_path: Path, content: str,
                                                     line: str) -> None:
    path = tmp_path / "clients"
    path.write_text(content)
    path.chmod(0o600)
    with pytest.raises(ClientsError, match=line):
        create_app(client_settings(tmp_path, path))


def test_clients_file_readable_by_others_is_refused_with_chmod_600(
    keys: tuple[Path, dict[str, str]], repo: Path, tmp_path: Path, pycache: Path,
) -> None:
    path, _ = keys
    path.chmod(0o644)
    with pytest.raises(ClientsError, match=f"chmod 600 {path}"):
        create_app(client_settings(repo, path))
    # the real command: one line, exit 2, no traceback
    import subprocess
    import sys

    env = service_env(pycache, MEDCAST_REPO=str(repo), MEDCAST_CLIENTS_FILE=str(path))
    proc = subprocess.run([sys.executable, "-m", "serve"], env=env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().endswith(f"run `chmod 600 {path}`")
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


# ---- requests -------------------------------------------------------------------------------


def test_no_key_or_a_wrong_key_gets_401_and_the_log_is_untouched(
    tiny: TinyModel, repo: Path, keys: tuple[Path, dict[str, str]]
) -> None:
    path, issued = keys
    settings = client_settings(repo, path)
    body = tiny.examples[0]
    with serving(settings) as client:
        answers = [
            client.post("/predict", json=body),
            client.post("/predict", json=body, headers={"X-API-Key": "wrong"}),
            client.post("/predict", json=body, headers={"X-API-Key": issued["ward-a"] + "x"}),
            client.post("/predict/batch", json={"instances": [body]}),
            client.get("/predictions"),
            client.get("/predictions", headers={"X-API-Key": "wrong"}),
        ]
        assert [r.status_code for r in answers] == [401] * 6
        assert len({r.json()["detail"] for r in answers}) == 1  # no hint which part was wrong
        ok = client.post("/predict", json=body, headers={"X-API-Key": issued["ward-a"]})
        assert ok.status_code == 200
        written(client, 1)
        assert client.get("/health/ready").status_code == 200  # probes need no key
        spec = client.get("/schema/openapi.json").json()  # the document says a key is needed
    for path in ("/predict", "/predict/batch"):
        operation = spec["paths"][path]["post"]
        assert operation["security"] == [{"ApiKey": []}] and "401" in operation["responses"]
    assert log_count(settings.db_url) == 1


def test_revoked_key_gets_401_after_the_file_changes(
    tiny: TinyModel, repo: Path, keys: tuple[Path, dict[str, str]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(clientsmod, "RECHECK_S", 0.0)
    path, issued = keys
    with serving(client_settings(repo, path)) as client:
        a = {"X-API-Key": issued["ward-a"]}
        assert client.post("/predict", json=tiny.examples[0], headers=a).status_code == 200
        assert main(["keys", "revoke", "ward-a", "--file", str(path)]) == 0
        assert client.post("/predict", json=tiny.examples[0], headers=a).status_code == 401
        b = {"X-API-Key": issued["ward-b"]}
        assert client.post("/predict", json=tiny.examples[0], headers=b).status_code == 200


def test_rotation_with_two_keys_keeps_serving(
    tiny: TinyModel, repo: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(clientsmod, "RECHECK_S", 0.0)
    path = tmp_path / "clients"
    old = issue_key(path, "lab", capsys)
    with serving(client_settings(repo, path)) as client:
        def status(key: str) -> int:
            return client.post("/predict", json=tiny.examples[0],
                               headers={"X-API-Key": key}).status_code

        assert status(old) == 200
        new = issue_key(path, "lab", capsys)  # both valid while the caller moves over
        assert (status(old), status(new)) == (200, 200)
        assert main(["keys", "revoke", "lab", "--key", old, "--file", str(path)]) == 0
        assert (status(old), status(new)) == (401, 200)
        written(client, 4)
        rows = client.get("/predictions", headers={"X-API-Key": new}).json()["items"]
        assert [r["client"] for r in rows] == ["lab"] * 4


def test_invalid_edit_keeps_the_previous_keys(
    tiny: TinyModel, repo: Path, keys: tuple[Path, dict[str, str]],
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setattr(clientsmod, "RECHECK_S", 0.0)
    path, issued = keys
    with serving(client_settings(repo, path)) as client:
        path.write_text(path.read_text() + "half-written line\n")
        r = client.post("/predict", json=tiny.examples[0], headers={"X-API-Key": issued["ward-a"]})
        assert r.status_code == 200
    assert any("NOT reloaded" in rec.getMessage() and "line 3" in rec.getMessage()
               for rec in caplog.records)


def test_rows_carry_the_client_name_and_predictions_filter_by_client_and_time(
    tiny: TinyModel, repo: Path, keys: tuple[Path, dict[str, str]]
) -> None:
    path, issued = keys
    auditor = clientsmod.add_key(path, "audit", clientsmod.AUDITOR)  # reads every client's rows
    with serving(client_settings(repo, path)) as client:
        for i, name in enumerate(["ward-a", "ward-b", "ward-a"]):
            r = client.post("/predict", json=tiny.examples[i], headers={"X-API-Key": issued[name]})
            assert r.status_code == 200
        r = client.post("/predict/batch", json={"instances": tiny.examples[:2]},
                        headers={"X-API-Key": issued["ward-b"]})
        assert r.status_code == 200
        written(client, 5)
        h = {"X-API-Key": auditor}
        rows = client.get("/predictions", headers=h).json()["items"]
        assert [r["client"] for r in rows] == ["ward-a", "ward-b", "ward-a", "ward-b", "ward-b"]
        only_a = client.get("/predictions?client=ward-a", headers=h).json()["items"]
        assert [r["id"] for r in only_a] == [rows[0]["id"], rows[2]["id"]]
        assert client.get("/predictions?client=nobody", headers=h).json()["items"] == []
        # time window: since ≤ created_at < until
        t = rows[3]["created_at"]
        since = client.get("/predictions", params={"since": t}, headers=h).json()["items"]
        assert [r["id"] for r in since] == [r["id"] for r in rows[3:]]
        until = client.get("/predictions", params={"until": t}, headers=h).json()["items"]
        assert [r["id"] for r in until] == [r["id"] for r in rows[:3]]
        naive = t.removesuffix("+00:00")  # no offset: UTC
        assert client.get("/predictions", params={"since": naive},
                          headers=h).json()["items"] == since
        for bad in ({"since": "yesterday"}, {"until": "2026-13-01"}):
            r = client.get("/predictions", params=bad, headers=h)
            assert r.status_code == 422 and r.json()["field"] == next(iter(bad))


def test_predictions_page_newest_first_with_a_before_cursor(
    tiny: TinyModel, repo: Path, keys: tuple[Path, dict[str, str]]
) -> None:
    path, issued = keys
    h = {"X-API-Key": issued["ward-a"]}
    with serving(client_settings(repo, path)) as client:
        for body in tiny.examples[:5]:
            assert client.post("/predict", json=body, headers=h).status_code == 200
        written(client, 5)
        ids = [r["id"] for r in client.get("/predictions", headers=h).json()["items"]]
        first = client.get("/predictions?order=desc&limit=2", headers=h).json()
        assert [r["id"] for r in first["items"]] == ids[::-1][:2]
        assert first["next_before"] == ids[-2] and "next_after" not in first
        seen = [r["id"] for r in first["items"]]
        cursor = first["next_before"]
        while cursor is not None:
            page = client.get(f"/predictions?order=desc&limit=2&before={cursor}",
                              headers=h).json()
            seen += [r["id"] for r in page["items"]]
            cursor = page["next_before"]
        assert seen == ids[::-1]
        # both bounds apply in either order
        window = client.get(f"/predictions?after={ids[0]}&before={ids[3]}&order=desc",
                            headers=h).json()["items"]
        assert [r["id"] for r in window] == [ids[2], ids[1]]
        window = client.get(f"/predictions?after={ids[0]}&before={ids[3]}",
                            headers=h).json()["items"]
        assert [r["id"] for r in window] == [ids[1], ids[2]]


def test_admin_key_still_reads_the_log_beside_client_keys(
    tiny: TinyModel, repo: Path, keys: tuple[Path, dict[str, str]]
) -> None:
    path, issued = keys
    with serving(client_settings(repo, path, api_key="reader-key")) as client:
        assert client.get("/predictions", headers={"X-API-Key": "reader-key"}).status_code == 200
        # the log reader's key is not a client key: it cannot predict
        assert client.post("/predict", json=tiny.examples[0],
                           headers={"X-API-Key": "reader-key"}).status_code == 401


def test_sighup_reloads_the_keys_of_the_running_server(
    tiny: TinyModel, repo: Path, tmp_path: Path, pycache: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    import httpx

    path = tmp_path / "clients"
    issue_key(path, "first", capsys)
    env = service_env(pycache, MEDCAST_REPO=str(repo), MEDCAST_CLIENTS_FILE=str(path),
                      MEDCAST_DATABASE_URL=f"sqlite:///{tmp_path / 'log.db'}")
    with running(env, cwd=tmp_path, log=tmp_path / "serve.log") as service:
        key = issue_key(path, "second", capsys)
        service.proc.send_signal(signal.SIGHUP)
        wait_until(lambda: "re-reading the client keys" in service.output(), what="SIGHUP")
        wait_until(lambda: "reloaded" in service.output(), what="reload")
        r = httpx.post(f"{service.url}/predict", json=tiny.examples[0],
                       headers={"X-API-Key": key}, timeout=5)
        assert r.status_code == 200, service.output()
        assert service.stop() == 0


def test_a_new_key_never_begins_with_a_dash_and_one_that_does_is_revoked_as_key_equals(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
) -> None:
    """argparse reads `--key -abc` as two options: a new key never begins with '-' (drawn
    again), and a key from before that does is revoked with `--key=KEY`."""
    path = tmp_path / "clients"
    tokens = iter(["-first", "second"])
    monkeypatch.setattr(clientsmod.secrets, "token_urlsafe", lambda n: next(tokens))
    assert clientsmod.add_key(path, "lab") == "second"
    path.write_text(path.read_text() + f"lab {clientsmod.key_hash('-older')}\n")
    assert main(["keys", "revoke", "lab", "--key=-older", "--file", str(path)]) == 0
    text = path.read_text()
    assert clientsmod.key_hash("-older") not in text and clientsmod.key_hash("second") in text
