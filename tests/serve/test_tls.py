"""HTTPS in the service (serve/tls.py): certificates from a CA generated in the test
(devtools/certs.py); the real server (`python -m serve`, uvicorn) on a loopback port for the
handshakes; the start-up checks of the certificate files; the security headers every response
carries (over plain HTTP, no HSTS).
"""

from __future__ import annotations

import asyncio
import http.client
import ssl
import subprocess
import sys
from pathlib import Path

import pytest

from devtools.certs import Pair, TestCA
from devtools.service import running, service_env
from devtools.tiny_model import TinyModel
from serve.settings import Settings
from serve.tls import HSTS, TLSError, check, security_headers
from tests.support.serving import serving
from tests.support.settings import client_settings

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def ca(tmp_path: Path) -> TestCA:
    return TestCA(tmp_path / "pki")


def settings(pair: Pair, client_ca: Path | None = None) -> Settings:
    return Settings(tls_cert_file=pair.cert, tls_key_file=pair.key, tls_client_ca_file=client_ca)


def client_context(ca: TestCA, pair: Pair | None = None) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=ca.pem)  # verifies the chain and the host name
    if pair is not None:
        context.load_cert_chain(pair.cert, pair.key)
    return context


def get(port: int, context: ssl.SSLContext | None, path: str = "/health/ready"
        ) -> http.client.HTTPResponse:
    conn = (http.client.HTTPSConnection("127.0.0.1", port, timeout=5, context=context)
            if context is not None else http.client.HTTPConnection("127.0.0.1", port, timeout=5))
    conn.request("GET", path)
    response = conn.getresponse()
    response.read()
    conn.close()
    return response


def tls_env(repo: Path, tmp_path: Path, pycache: Path, pair: Pair, client_ca: Path | None = None
            ) -> dict[str, str]:
    extra = {"MEDCAST_TLS_CLIENT_CA_FILE": str(client_ca)} if client_ca else {}
    return service_env(pycache, MEDCAST_REPO=str(repo), MEDCAST_TLS_CERT_FILE=str(pair.cert),
                       MEDCAST_TLS_KEY_FILE=str(pair.key),
                       MEDCAST_DATABASE_URL=f"sqlite:///{tmp_path / 'log.db'}", **extra)


# ---- the real server ------------------------------------------------------------------------


def test_https_with_verification_works_and_plain_http_to_the_tls_port_fails(
    ca: TestCA, tiny: TinyModel, repo: Path, tmp_path: Path, pycache: Path
) -> None:
    import httpx

    from serve.clients import add_key

    server = ca.server()
    context = client_context(ca)
    key = add_key(tmp_path / "clients", "ward-a")
    env = {**tls_env(repo, tmp_path, pycache, server),
           "MEDCAST_CLIENTS_FILE": str(tmp_path / "clients")}
    with running(env, cwd=tmp_path, log=tmp_path / "serve.log", tls=context) as service:
        assert service.url.startswith("https://")
        r = get(service.port, context)
        assert r.status == 200
        assert r.getheader("Strict-Transport-Security") == "max-age=31536000; includeSubDomains"
        assert r.getheader("X-Content-Type-Options") == "nosniff"
        with httpx.Client(verify=context, timeout=5) as https:  # a prediction with a key
            p = https.post(f"{service.url}/predict", json=tiny.examples[0],
                           headers={"X-API-Key": key})
            assert p.status_code == 200, p.text
            assert https.post(f"{service.url}/predict", json=tiny.examples[0]).status_code == 401
        with pytest.raises((OSError, http.client.HTTPException)):  # no HTTP on the TLS port
            get(service.port, None)
        with pytest.raises(ssl.SSLCertVerificationError):  # a client not trusting our CA
            get(service.port, ssl.create_default_context())
        assert service.stop() == 0


def test_mutual_tls_refuses_a_client_without_a_certificate(
    ca: TestCA, repo: Path, tmp_path: Path, pycache: Path
) -> None:
    server, member = ca.server(), ca.client("ward-a")
    stranger = TestCA(tmp_path / "other-pki").client("intruder")  # a certificate of another CA
    with_cert = client_context(ca, member)
    env = tls_env(repo, tmp_path, pycache, server, client_ca=ca.pem)
    with running(env, cwd=tmp_path, log=tmp_path / "serve.log", tls=with_cert) as service:
        assert get(service.port, with_cert).status == 200
        for refused in (client_context(ca), client_context(ca, stranger)):
            with pytest.raises((ssl.SSLError, ConnectionError)):
                get(service.port, refused)
        assert get(service.port, with_cert).status == 200  # the refusals did not hurt it
        assert service.stop() == 0


def test_expired_server_certificate_stops_startup_with_one_clear_line(
    ca: TestCA, repo: Path, tmp_path: Path, pycache: Path
) -> None:
    expired = ca.server("old", expired=True)
    env = {**tls_env(repo, tmp_path, pycache, expired), "MEDCAST_PORT": "1"}  # never bound
    proc = subprocess.run([sys.executable, "-m", "serve"], env=env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert "MEDCAST_TLS_CERT_FILE" in lines[0] and "expired on" in lines[0]


# ---- the checks before start-up -------------------------------------------------------------


def test_valid_files_pass_the_check(ca: TestCA) -> None:
    check(settings(ca.server(), client_ca=ca.pem))


def test_missing_certificate_is_refused(ca: TestCA, tmp_path: Path) -> None:
    pair = Pair(tmp_path / "nope.pem", ca.server().key)
    with pytest.raises(TLSError, match=r"MEDCAST_TLS_CERT_FILE=.*cannot read \(No such file"):
        check(settings(pair))


def test_unreadable_or_garbage_certificate_is_refused(ca: TestCA, tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a certificate")
    with pytest.raises(TLSError, match="not a PEM certificate"):
        check(settings(Pair(garbage, ca.server().key)))


def test_key_of_another_certificate_is_refused(ca: TestCA) -> None:
    one, other = ca.server("one"), ca.server("other")
    with pytest.raises(TLSError, match="the key does not match the certificate"):
        check(settings(Pair(one.cert, other.key)))


def test_key_file_readable_by_others_is_refused_with_chmod_600(ca: TestCA) -> None:
    pair = ca.server()
    pair.key.chmod(0o640)
    with pytest.raises(TLSError, match=f"MEDCAST_TLS_KEY_FILE=.*run `chmod 600 {pair.key}`"):
        check(settings(pair))


def test_client_ca_must_be_a_ca(ca: TestCA) -> None:
    server = ca.server()
    with pytest.raises(TLSError, match="is not a CA certificate"):
        check(settings(server, client_ca=server.cert))


def test_half_tls_settings_are_refused() -> None:
    from serve.settings import SettingsError

    with pytest.raises(SettingsError, match="both MEDCAST_TLS_CERT_FILE and MEDCAST_TLS_KEY_FILE"):
        Settings.from_env({"MEDCAST_TLS_CERT_FILE": "/x.pem"})


def test_hsts_follows_the_connection_scheme_whichever_server_terminates_tls() -> None:
    """HTTPS from `python -m serve`, from another ASGI server's own TLS flags (uvicorn
    --ssl-certfile) or a trusted proxy all set the scope's scheme: HSTS goes with it."""
    hook = security_headers()
    for scheme, expected in (("https", True), ("http", False)):
        message = {"type": "http.response.start", "headers": [(b"content-type", b"text/plain")]}
        asyncio.run(hook(message, {"scheme": scheme}))
        assert ((b"strict-transport-security", HSTS) in message["headers"]) is expected
        assert (b"x-frame-options", b"DENY") in message["headers"]


def test_security_headers_on_every_response(repo: Path) -> None:
    with serving(client_settings(repo, None)) as client:
        for r in (client.get("/health/live"), client.get("/no-such-page"),
                  client.post("/predict", content=b"{")):
            assert r.headers["X-Content-Type-Options"] == "nosniff"
            assert r.headers["X-Frame-Options"] == "DENY"
            assert "frame-ancestors 'none'" in r.headers["Content-Security-Policy"]
            assert r.headers["Referrer-Policy"] == "no-referrer"
            assert "Strict-Transport-Security" not in r.headers  # plain HTTP: meaningless
