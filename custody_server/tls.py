"""TLS for ``custody serve``: TLS 1.3 only, and the verified client certificate in the scope.

:func:`server_context` builds the server's :class:`ssl.SSLContext`: ``minimum_version`` is
TLS 1.3, so a client that offers only TLS 1.2 or lower fails the handshake and never reaches
the application. With a client CA, the server asks every client for a certificate
(``CERT_OPTIONAL``: bearer-token clients need none); a certificate that does not chain to
that CA fails the handshake.

No Python ASGI server yet passes the verified client certificate to the application (the
ASGI TLS extension is specified but not implemented by uvicorn). :class:`PeerCertProtocol`
is the hook: a subclass of uvicorn's h11 protocol that, once the handshake is done, reads the
peer's certificate from the transport's ``ssl_object`` (only ever a certificate the
handshake verified against the client CA) and hands the application a scope with
``scope["extensions"]["tls"]`` filled in as the ASGI TLS extension describes
(``client_cert_chain``: PEM strings, ``client_cert_name``: the subject, ``tls_version``).
:func:`peer_identity` reads the principal name back out of such a scope.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
from collections.abc import Awaitable, Callable, MutableMapping
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.x509.oid import NameOID
from uvicorn.protocols.http.h11_impl import H11Protocol

from custody.errors import ConfigError

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
App = Callable[[Scope, Receive, Send], Awaitable[None]]
TLS13 = 0x0304  # the ASGI TLS extension's tls_version for TLS 1.3


def server_context(cert: Path, key: Path, client_ca: Path | None = None) -> ssl.SSLContext:
    """A server context that speaks TLS 1.3 and nothing older.

    Raises:
        ConfigError: the certificate, key or CA cannot be loaded.
    """
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.maximum_version = ssl.TLSVersion.MAXIMUM_SUPPORTED
    ctx.options |= ssl.OP_NO_COMPRESSION | ssl.OP_NO_RENEGOTIATION
    try:
        ctx.load_cert_chain(str(cert), str(key))
        if client_ca is not None:
            ctx.load_verify_locations(cafile=str(client_ca))
            ctx.verify_mode = ssl.CERT_OPTIONAL
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(
            "Cannot load the server's TLS certificate, key or client CA",
            f"Check --cert, --key and --client-ca ({type(exc).__name__}).",
        ) from exc
    return ctx


def _tls_extension(der: bytes | None, version: str | None) -> dict[str, Any]:
    chain: list[str] = []
    name: str | None = None
    if der:
        cert = x509.load_der_x509_certificate(der)
        chain = [ssl.DER_cert_to_PEM_cert(der)]
        name = cert.subject.rfc4514_string()
    return {
        "server_cert": None,
        "client_cert_chain": chain,
        "client_cert_name": name,
        "client_cert_error": None,
        "tls_version": TLS13 if version == "TLSv1.3" else None,
        "cipher_suite": None,
    }


def with_tls_scope(app: App, extension: dict[str, Any]) -> App:
    """*app* with ``scope["extensions"]["tls"] = extension`` on every HTTP request."""

    async def wrapped(scope: Scope, receive: Receive, send: Send) -> None:
        if scope.get("type") == "http":
            scope = dict(scope)
            scope["extensions"] = {**(scope.get("extensions") or {}), "tls": extension}
        await app(scope, receive, send)

    return wrapped


class PeerCertProtocol(H11Protocol):
    """uvicorn's h11 protocol, with the connection's verified client certificate in scope.

    asyncio calls :meth:`connection_made` after the TLS handshake has completed, so the
    transport's ``ssl_object`` already knows the peer certificate (or that there is none).
    """

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            # a response is two TLS records (head, body): without NODELAY the second waits
            # for the client's delayed ACK (40 ms on Linux)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sslobj = transport.get_extra_info("ssl_object")
        der = sslobj.getpeercert(binary_form=True) if sslobj is not None else None
        version = sslobj.version() if sslobj is not None else None
        self.app = with_tls_scope(self.config.loaded_app, _tls_extension(der, version))


def peer_identity(scope: Scope) -> str | None:
    """The principal a verified client certificate names (its subject's common name), or
    None when the connection carried no certificate."""
    tls = (scope.get("extensions") or {}).get("tls") or {}
    chain = tls.get("client_cert_chain") or []
    if not chain:
        return None
    cert = x509.load_pem_x509_certificate(chain[0].encode())
    cns = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    if len(cns) != 1:
        return None
    cn = cns[0].value
    return cn if isinstance(cn, str) and cn else None
