"""``--tls-self-signed``: a throwaway certificate for development, made at start.

The certificate is self-signed, valid for ``localhost``, ``127.0.0.1`` and ``::1`` for a few
days, with a fresh P-256 key; both are written to a private temporary folder that is removed
when the process that made them exits. Browsers and clients do not trust it: trust it for a
test (``curl --cacert FILE``), or accept the warning. The folder's path travels to the
processes this one starts (the workers of ``--workers``, the server of ``--reload``) in
:data:`DEV_CERT_ENV`, so that all of them serve the same certificate.

The ``cryptography`` package writes it (OpenSSL has no certificate builder in Python's
``ssl``).
"""

from __future__ import annotations

import atexit
import datetime
import ipaddress
import os
import shutil
import tempfile
from dataclasses import replace

from ..config import ServerConfig

__all__ = ["DEV_CERT_ENV", "make_certificate", "with_dev_certificate"]

#: The folder holding ``cert.pem`` and ``key.pem``, for the processes this one starts.
DEV_CERT_ENV = "PLEZI_TLS_DEV_DIR"
_CERT, _KEY = "cert.pem", "key.pem"
#: How long the certificate is valid: long enough for a day's work, short enough to be thrown
#: away.
_DAYS = 7


def make_certificate(folder: str) -> tuple[str, str]:
    """Write a self-signed certificate for localhost and its key into ``folder``; return
    their paths ``(cert, key)``."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "plezi development"),
            x509.NameAttribute(NameOID.COMMON_NAME, "localhost"),
        ]
    )
    now = datetime.datetime.now(datetime.UTC)
    names: list[x509.GeneralName] = [
        x509.DNSName("localhost"),
        x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
        x509.IPAddress(ipaddress.ip_address("::1")),
    ]
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))  # clocks disagree a little
        .not_valid_after(now + datetime.timedelta(days=_DAYS))
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = os.path.join(folder, _CERT), os.path.join(folder, _KEY)
    with open(cert_path, "wb") as f:
        f.write(cert.public_bytes(serialization.Encoding.PEM))
    fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
    return cert_path, key_path


def with_dev_certificate(config: ServerConfig) -> tuple[ServerConfig, bool]:
    """``config`` with ``tls_cert``/``tls_key`` set to the development certificate, when it
    asks for one (``tls_self_signed``); and whether this process made it (and must say so).

    A process started by one that made it (a worker, the server under ``--reload``) uses the
    same files; otherwise they are made now, in a temporary folder removed at exit."""
    if not config.tls_self_signed:
        return config, False
    folder = os.environ.get(DEV_CERT_ENV)
    if folder and not os.path.isfile(os.path.join(folder, _KEY)):
        folder = None  # left by a process that is gone (its folder with it): make our own
    made = not folder
    if not folder:
        folder = tempfile.mkdtemp(prefix="plezi-tls-")
        atexit.register(shutil.rmtree, folder, ignore_errors=True)
        make_certificate(folder)
        os.environ[DEV_CERT_ENV] = folder  # inherited by the processes this one starts
    cert, key = os.path.join(folder, _CERT), os.path.join(folder, _KEY)
    return replace(config, tls_cert=cert, tls_key=key, tls_self_signed=False), made
