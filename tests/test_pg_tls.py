"""TLS to PostgreSQL: `sslmode=verify-full` through the service's own engine and the real service.

A private cluster (tests/support/pg_cluster.py; never the machine's shared server) is configured for
SSL only (`hostssl` lines, no plain `host` line) with certificates made here: a CA, a server
certificate for localhost/127.0.0.1 signed by it, one for another host (db.invalid) signed by
it too, and a second CA that signed neither. verify-full must connect with the right CA and
name, and refuse the wrong host name, the wrong CA and a connection without TLS.

A flow test, at tests/ top level rather than under tests/serve/: the guarantee spans
serve/db.py's engine, serve/migrate.py's migrations and the running service, against a
PostgreSQL cluster of its own.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from devtools.tiny_model import TinyModel
from tests.support.pg_cluster import PgCluster, cluster_maker
from tests.support.pg_cluster import pg_cluster_factory as pg_cluster_factory  # noqa: F401  (fixture)
from tests.support.servers import launch

ROOT = Path(__file__).resolve().parents[1]
# One worker holds the module's cluster; every test is bounded.
pytestmark = [pytest.mark.timeout(90), pytest.mark.xdist_group("pg_tls")]


# ---- certificates ---------------------------------------------------------------------------


@dataclass
class Pem:
    cert: bytes
    key: bytes


def _name(cn: str) -> object:
    from cryptography import x509
    from cryptography.x509.oid import NameOID

    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "medcast tests"),
                      x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _pem(cert: object, key: object) -> Pem:
    from cryptography.hazmat.primitives import serialization

    return Pem(cert.public_bytes(serialization.Encoding.PEM),  # type: ignore[attr-defined]
               key.private_bytes(serialization.Encoding.PEM,  # type: ignore[attr-defined]
                                 serialization.PrivateFormat.PKCS8,
                                 serialization.NoEncryption()))


def make_ca(cn: str) -> tuple[Pem, object, object]:
    """A self-signed CA: (PEM, certificate, key)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec

    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(cn)).issuer_name(_name(cn))  # type: ignore[arg-type]
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False,
                                     key_encipherment=False, data_encipherment=False,
                                     key_agreement=False, key_cert_sign=True, crl_sign=True,
                                     encipher_only=False, decipher_only=False), critical=True)
        .add_extension(ski, critical=False)
        .sign(key, hashes.SHA256())
    )
    return _pem(cert, key), cert, key


def make_server_cert(ca_cert: object, ca_key: object, dns: list[str], ips: list[str]) -> Pem:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID

    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    san = [x509.DNSName(d) for d in dns] + [x509.IPAddress(ipaddress.ip_address(i)) for i in ips]
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(dns[0])).issuer_name(ca_cert.subject)  # type: ignore[attr-defined, arg-type]
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName(san), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
            ca_key.public_key()), critical=False)  # type: ignore[attr-defined]
        .sign(ca_key, hashes.SHA256())  # type: ignore[arg-type]
    )
    return _pem(cert, key)


@dataclass
class Tls:
    cluster: PgCluster
    ca: Path  # the CA that signed the server's certificate (for sslrootcert)
    rogue_ca: Path  # a CA that signed nothing the server presents
    wrong_host: Pem  # signed by `ca`, for db.invalid only

    def url(self, host: str = "localhost", root: Path | None = None, **query: str) -> str:
        q = {"sslmode": "verify-full", "sslrootcert": str(root or self.ca), **query}
        return self.cluster.url(host=host, **q)


def configure_tls(cluster: PgCluster, server: Pem) -> None:
    """SSL on with `server`'s certificate; pg_hba: TLS only on loopback (and the Unix socket)."""
    cert = cluster.write_private("server.crt", server.cert, 0o644)
    key = cluster.write_private("server.key", server.key, 0o600)
    cluster.configure(ssl="on", ssl_cert_file=f"'{cert}'", ssl_key_file=f"'{key}'",
                      ssl_min_protocol_version="'TLSv1.2'")
    cluster.hba = ["local all all trust", "hostssl all all 127.0.0.1/32 trust"]


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Tls]:
    folder = tmp_path_factory.mktemp("pg-tls")  # client side: only the CA certificates
    ca_pem, ca_cert, ca_key = make_ca("medcast test CA")
    rogue_pem, _, _ = make_ca("medcast rogue CA")
    (folder / "ca.pem").write_bytes(ca_pem.cert)
    (folder / "rogue-ca.pem").write_bytes(rogue_pem.cert)
    good = make_server_cert(ca_cert, ca_key, ["localhost"], ["127.0.0.1"])
    wrong = make_server_cert(ca_cert, ca_key, ["db.invalid"], [])
    with cluster_maker() as make:
        cluster = make()
        configure_tls(cluster, good)
        cluster.start()
        yield Tls(cluster, folder / "ca.pem", folder / "rogue-ca.pem", wrong)


# Every client connection runs in a fresh interpreter, as the service's own does: in a process
# that has loaded TensorFlow (other tests in the same pytest worker), psycopg-binary's TLS
# handshake segfaults (two OpenSSL builds in one process; seen with psycopg 3.3.9).
_CLIENT = """
import datetime as dt, json, sys
import sqlalchemy as sa
from serve import db as servedb
from serve import service as serveservice
from serve import migrate as servemigrate

action, url = sys.argv[1], sys.argv[2]
out = {}
try:
    if action == "select":
        engine = servedb.make_engine(url)
        with engine.connect() as conn:
            out["one"] = conn.execute(sa.text("SELECT 1")).scalar()
            out["ssl"], out["version"] = conn.execute(sa.text(
                "SELECT ssl, version FROM pg_stat_ssl WHERE pid = pg_backend_pid()")).one()
    elif action == "prepare":
        database = serveservice.Database(url)
        database.prepare()
        row = servedb.LogRow(request_id="a" * 32, item=0, created_at=dt.datetime.now(dt.UTC),
                             model_md5="0" * 32, model_revision="workspace", dataset="insurance",
                             features={"age": 40}, prediction=1.5, latency_ms=0.1)
        out["status"] = database.schema_status is not None
        out["written"] = [database.write([row]), database.write([row])]
        out["count"] = servedb.count_rows(database.engine)
        out["at_head"] = servemigrate.current_revision(database.engine) == servemigrate.HEAD
    elif action == "rows":
        engine = servedb.make_engine(url)
        with engine.connect() as conn:
            out["ids"] = list(conn.execute(sa.select(servedb.predictions.c.request_id)).scalars())
    elif action == "app_ssl":
        engine = servedb.make_engine(url)
        with engine.connect() as conn:
            out["ssl"] = list(conn.execute(sa.text(
                "SELECT s.ssl FROM pg_stat_activity a JOIN pg_stat_ssl s USING (pid) "
                "WHERE a.application_name = :app"), {"app": sys.argv[3]}).scalars())
except sa.exc.OperationalError as err:
    out["error"] = str(err.orig)
print(json.dumps(out))
"""


def client(action: str, url: str, *args: str) -> dict[str, Any]:
    """Run one client action (see _CLIENT) in a fresh interpreter; its JSON result."""
    done = subprocess.run([sys.executable, "-c", _CLIENT, action, url, *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def connect_error(url: str) -> str:
    """The error text of one connection attempt through serve.db.make_engine (must fail)."""
    result = client("select", url)
    assert "error" in result, f"connected: {result}"
    return result["error"]


# ---- tests ----------------------------------------------------------------------------------


@pytest.mark.parametrize("host", ["localhost", "127.0.0.1"])
def test_verify_full_connects_through_the_service_engine(tls: Tls, host: str) -> None:
    result = client("select", tls.url(host))
    print(f"\nverify-full to {host}: {result}")
    assert result.get("one") == 1, result
    assert result["ssl"] and result["version"] in ("TLSv1.2", "TLSv1.3")


def test_migrations_and_log_writes_over_verify_full(tls: Tls) -> None:
    """The service's own path: Database.prepare() (Alembic upgrade), write, count_rows."""
    result = client("prepare", tls.url())
    # a retried write skips the existing row: one row in the table
    assert result == {"status": True, "written": [1, 1], "count": 1, "at_head": True}, result


def test_a_certificate_for_another_host_is_refused(
    tls: Tls, pg_cluster_factory: Callable[[], PgCluster]  # noqa: F811
) -> None:
    cluster = pg_cluster_factory()  # its own cluster: the module's keeps the right certificate
    configure_tls(cluster, tls.wrong_host)
    cluster.start()
    wrong = Tls(cluster, tls.ca, tls.rogue_ca, tls.wrong_host)
    for host in ("localhost", "127.0.0.1"):
        err = connect_error(wrong.url(host))
        print(f"\nwrong host certificate, {host}: {err.strip().splitlines()[-1]}")
        # libpq ≥ 17 may add "(and N other names)" after the first name it compared
        assert re.search(rf'server certificate for "db\.invalid"( \(and \d+ other names?\))? '
                         rf'does not match host name "{re.escape(host)}"', err), err
    # the same server passes with sslmode=verify-ca: the name check is what refused it
    assert client("select", wrong.url(sslmode="verify-ca")).get("one") == 1


def test_a_certificate_from_another_ca_is_refused(tls: Tls) -> None:
    err = connect_error(tls.url(root=tls.rogue_ca))
    print(f"\nother CA: {err.strip().splitlines()[-1]}")
    assert "certificate verify failed" in err, err


def test_connections_without_tls_are_refused(tls: Tls) -> None:
    err = connect_error(tls.cluster.url(sslmode="disable"))
    print(f"\nno TLS: {err.strip().splitlines()[-1]}")
    assert "no pg_hba.conf entry" in err and "no encryption" in err, err


def test_the_service_logs_predictions_over_verify_full(
    tls: Tls, tiny: TinyModel, repo: Path, tmp_path: Path, pycache: Path
) -> None:
    """`python -m serve` with MEDCAST_DATABASE_URL = the verify-full URL: migrates, predicts,
    logs the row; its connections are TLS ones (pg_stat_ssl)."""
    import httpx

    app = "medcast-tls-service"
    url = tls.url(application_name=app)
    with launch(repo, url, pycache, tmp_path) as (port, proc):
        r = httpx.post(f"http://127.0.0.1:{port}/predict", content=json.dumps(tiny.examples[0]),
                       headers={"Content-Type": "application/json"}, timeout=5)
        assert r.status_code == 200, r.text
        rid = r.json()["request_id"]
        deadline = time.monotonic() + 10
        while rid not in client("rows", tls.url())["ids"]:
            assert time.monotonic() < deadline, "the row never reached the database"
            time.sleep(0.1)
        ssl = client("app_ssl", tls.url(), app)["ssl"]
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=20)
    err = proc.stderr_path.read_text()  # type: ignore[attr-defined]
    print(f"\nservice over verify-full: row {rid} logged; its connections' ssl: {ssl}")
    assert ssl and all(ssl), ssl
    assert "Traceback" not in err and proc.returncode == 0, err[-3000:]
