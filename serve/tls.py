"""HTTPS in the service: the checks of the certificate files before anything listens, the TLS
options handed to uvicorn, and the security headers every response carries.

`check()` reads MEDCAST_TLS_CERT_FILE / _KEY_FILE (/ _CLIENT_CA_FILE) with `cryptography` and
the `ssl` module and raises TLSError with one line for: a missing or unreadable file, a key file
group or others may read (`chmod 600`), a certificate not valid yet or expired, a key that does
not belong to the certificate, a client CA that is not a CA certificate. With a client CA,
client certificates are required (mutual TLS): the handshake fails without one.
"""

from __future__ import annotations

import ssl
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from serve.clients import ClientsError, check_private
from serve.settings import Settings

HSTS = b"max-age=31536000; includeSubDomains"  # one year; sent only over HTTPS (RFC 6797 7.2)
SECURITY_HEADERS = [
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"content-security-policy", b"frame-ancestors 'none'"),
    (b"referrer-policy", b"no-referrer"),
]


class TLSError(ValueError):
    """A TLS file is missing, unreadable, unsafe, expired or does not match."""


def _read(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise TLSError(f"{what}={str(path)!r}: cannot read ({exc.strerror})") from exc


def _certificates(path: Path, what: str) -> list[Any]:
    from cryptography import x509

    data = _read(path, what)
    try:
        certs = x509.load_pem_x509_certificates(data)
    except ValueError:
        raise TLSError(f"{what}={str(path)!r}: not a PEM certificate") from None
    return certs


def check(settings: Settings, now: datetime | None = None) -> None:
    """TLSError (one line) unless the TLS files are usable; nothing to do without TLS."""
    if settings.tls_cert_file is None or settings.tls_key_file is None:
        return
    now = now or datetime.now(UTC)
    cert_path, key_path = settings.tls_cert_file, settings.tls_key_file
    leaf = _certificates(cert_path, "MEDCAST_TLS_CERT_FILE")[0]
    subject = leaf.subject.rfc4514_string()
    if now < leaf.not_valid_before_utc:
        raise TLSError(f"MEDCAST_TLS_CERT_FILE={str(cert_path)!r}: certificate {subject} is not "
                       f"valid before {leaf.not_valid_before_utc:%Y-%m-%d %H:%M} UTC")
    if now >= leaf.not_valid_after_utc:
        raise TLSError(f"MEDCAST_TLS_CERT_FILE={str(cert_path)!r}: certificate {subject} expired "
                       f"on {leaf.not_valid_after_utc:%Y-%m-%d %H:%M} UTC")
    try:
        check_private(key_path, "MEDCAST_TLS_KEY_FILE")
    except ClientsError as exc:
        raise TLSError(str(exc)) from None
    _read(key_path, "MEDCAST_TLS_KEY_FILE")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        context.load_cert_chain(cert_path, key_path)
    except ssl.SSLError as exc:
        reason = "the key does not match the certificate" if "KEY_VALUES_MISMATCH" in str(exc) \
            else f"not a usable certificate and key ({exc.reason or exc})"
        raise TLSError(f"MEDCAST_TLS_KEY_FILE={str(key_path)!r}: {reason} "
                       f"(MEDCAST_TLS_CERT_FILE={str(cert_path)!r})") from None
    ca_path = settings.tls_client_ca_file
    if ca_path is not None:
        from cryptography import x509

        for ca in _certificates(ca_path, "MEDCAST_TLS_CLIENT_CA_FILE"):
            try:
                is_ca = ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
            except x509.ExtensionNotFound:
                is_ca = False
            if not is_ca:
                raise TLSError(f"MEDCAST_TLS_CLIENT_CA_FILE={str(ca_path)!r}: "
                               f"{ca.subject.rfc4514_string()} is not a CA certificate")
            if now >= ca.not_valid_after_utc:
                raise TLSError(f"MEDCAST_TLS_CLIENT_CA_FILE={str(ca_path)!r}: CA "
                               f"{ca.subject.rfc4514_string()} expired on "
                               f"{ca.not_valid_after_utc:%Y-%m-%d %H:%M} UTC")


def uvicorn_tls_options(settings: Settings) -> dict[str, Any]:
    """uvicorn.Config's TLS keyword arguments, after `check()`; {} without TLS."""
    check(settings)
    if not settings.tls:
        return {}
    options: dict[str, Any] = {"ssl_certfile": str(settings.tls_cert_file),
                               "ssl_keyfile": str(settings.tls_key_file)}
    if settings.tls_client_ca_file is not None:
        options.update(ssl_ca_certs=str(settings.tls_client_ca_file),
                       ssl_cert_reqs=ssl.CERT_REQUIRED)
    return options


def security_headers() -> Any:
    """A Litestar `before_send` hook adding SECURITY_HEADERS to every response — errors and 404s
    included, which route middleware would not see — and HSTS to those sent over HTTPS (the
    connection's scheme: `python -m serve` with MEDCAST_TLS_*, another ASGI server's own TLS
    flags, or a TLS proxy whose X-Forwarded-Proto the server trusts)."""
    plain = list(SECURITY_HEADERS)
    secure = [*SECURITY_HEADERS, (b"strict-transport-security", HSTS)]
    names = {name for name, _ in secure}

    async def add_headers(message: Any, scope: Any) -> None:
        if message["type"] == "http.response.start":
            extra = secure if scope.get("scheme") == "https" else plain
            headers = list(message.get("headers", ()))
            # ASGI header names are lowercase bytes (Litestar encodes them so)
            present = names.intersection([name for name, _ in headers])
            # a route's own stricter value (the dashboard's full CSP) wins
            message["headers"] = headers + ([h for h in extra if h[0] not in present]
                                            if present else extra)

    return add_headers
