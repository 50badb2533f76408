"""TLS on the native server: the server's SSL context, read from PEM files at start.

The context speaks TLS 1.2 and 1.3 only, without renegotiation, and offers one application
protocol by ALPN, ``http/1.1`` (the server has no HTTP/2). A file that cannot be read, is not
PEM, holds an encrypted key, or a key that does not belong to the certificate is a
:class:`~plezi.errors.ServerStartError` naming the file: the server never starts half
configured. The handshake itself is bounded by the server (``ssl_handshake_timeout``, see
:mod:`.server`), so a client that opens a connection and stalls in the handshake holds it for
``Limits.header_timeout`` at most.
"""

from __future__ import annotations

import os
import ssl

from ..config import ServerConfig
from ..errors import ServerStartError

__all__ = ["ALPN", "server_context"]

#: The application protocols offered by ALPN, in order of preference.
ALPN = ("http/1.1",)


def _refuse_password() -> str:
    # Without a callback, OpenSSL would prompt for the pass phrase on the terminal and block.
    raise ServerStartError("the key is encrypted: give plezi a key without a pass phrase")


def server_context(config: ServerConfig) -> ssl.SSLContext | None:
    """The SSL context for ``config.tls_cert`` and ``config.tls_key``; ``None`` without TLS.

    Raises :class:`ServerStartError` with the file's name when a file is missing or unreadable,
    is not PEM, or when the key does not match the certificate.
    """
    cert, key = config.tls_cert, config.tls_key
    if cert is None:
        return None
    for what, path in (("certificate", cert), ("key", key)):
        if path is not None and not os.path.isfile(path):
            raise ServerStartError(f"TLS {what} {path}: no such file")
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    # TLS 1.2 renegotiation lets a client make us redo a handshake's costly half at will.
    ctx.options |= ssl.OP_NO_RENEGOTIATION
    ctx.set_alpn_protocols(list(ALPN))
    try:
        ctx.load_cert_chain(cert, key, password=_refuse_password)
    except ServerStartError as exc:
        raise ServerStartError(f"TLS key {key or cert}: {exc}") from None
    except ssl.SSLError as exc:
        raise ServerStartError(_explain(exc, cert, key)) from None
    except OSError as exc:
        raise ServerStartError(f"TLS files {cert}, {key}: {exc.strerror or exc}") from None
    return ctx


def _explain(exc: ssl.SSLError, cert: str, key: str | None) -> str:
    """A one-line reason for a certificate/key pair OpenSSL refused."""
    reason = exc.reason or ""
    if reason == "KEY_VALUES_MISMATCH":
        return f"TLS key {key or cert} does not match the certificate {cert}"
    if key is None:
        return f"TLS certificate {cert}: no certificate and private key in it ({reason or exc})"
    # OpenSSL reads the certificate first: a PEM error in it names no key yet.
    try:
        ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_verify_locations(cert)
    except ssl.SSLError:
        return f"TLS certificate {cert}: not a PEM certificate ({reason or exc})"
    return f"TLS key {key}: not a PEM private key ({reason or exc})"
