"""Throwaway PKI for the local emulators, built on ``trustme``.

Every emulator serves real HTTPS so that clients (MSAL, ``requests``) run the
same code paths as in production. Clients trust the emulators by pointing
``REQUESTS_CA_BUNDLE`` at :attr:`DevCertificateAuthority.ca_bundle_path`.
"""

from __future__ import annotations

import contextlib
import os
import ssl
import tempfile
import threading
from dataclasses import dataclass
from types import TracebackType

import trustme
from cryptography import x509
from cryptography.hazmat.primitives import hashes

__all__ = ["ClientCertificate", "DevCertificateAuthority"]


@dataclass(frozen=True)
class ClientCertificate:
    """An RSA key pair plus certificate, e.g. for MSAL certificate credentials.

    ``sha1_thumbprint`` is the upper-case hex form the Azure portal shows and
    MSAL's ``client_credential={"thumbprint": ...}`` expects.
    """

    private_key_pem: bytes
    certificate_pem: bytes
    sha1_thumbprint: str
    sha256_thumbprint: str

    def msal_credential(self, *, send_x5c: bool = False) -> dict[str, str]:
        """Return an MSAL ``client_credential`` dict for this certificate.

        With ``send_x5c`` MSAL gets the public certificate instead of the
        thumbprint, so it signs with PS256 and sends ``x5t#S256`` and ``x5c``.
        """
        key = self.private_key_pem.decode()
        if send_x5c:
            return {"private_key": key, "public_certificate": self.certificate_pem.decode()}
        return {"private_key": key, "thumbprint": self.sha1_thumbprint}


class DevCertificateAuthority:
    """A private CA that lives as long as the test session or dev stack.

    Nothing here is secret or persistent: the CA key exists only in memory and
    the CA certificate is written to a temporary file for clients to trust.
    """

    def __init__(self) -> None:
        self._ca = trustme.CA()
        self._lock = threading.Lock()
        self._bundle_path: str | None = None

    @property
    def ca_pem(self) -> bytes:
        """The CA certificate in PEM form."""
        return self._ca.cert_pem.bytes()

    @property
    def ca_bundle_path(self) -> str:
        """Path of a PEM file holding the CA certificate (created on first use)."""
        with self._lock:
            if self._bundle_path is None:
                fd, path = tempfile.mkstemp(prefix="devtools-ca-", suffix=".pem")
                with os.fdopen(fd, "wb") as handle:
                    handle.write(self.ca_pem)
                self._bundle_path = path
            return self._bundle_path

    def server_ssl_context(self, *hosts: str) -> ssl.SSLContext:
        """Build a server-side SSL context with a leaf certificate for ``hosts``.

        ``hosts`` may be DNS names or IP addresses (an IP becomes an IP SAN,
        which is what clients check when they connect to ``https://127.x.y.z``).
        """
        if not hosts:
            raise ValueError("at least one host name or IP address is required")
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        self._ca.issue_cert(*hosts).configure_cert(context)
        return context

    def write_server_certificate(self, directory: str, *hosts: str) -> tuple[str, str]:
        """Write a leaf certificate (with its chain) and its key for ``hosts`` as PEM files in ``directory``
        (for servers configured with files, such as redis-server); returns their paths."""
        leaf = self._ca.issue_cert(*hosts)
        cert_path, key_path = os.path.join(directory, "server.pem"), os.path.join(directory, "server.key")
        leaf.private_key_pem.write_to_path(key_path)
        with open(cert_path, "wb") as handle:
            handle.write(b"".join(blob.bytes() for blob in leaf.cert_chain_pems))
        return cert_path, key_path

    def issue_client_certificate(self, common_name: str = "devtools-app") -> ClientCertificate:
        """Issue an RSA certificate usable as an app's client credential.

        RSA because Entra ID client assertions are RS256/PS256 signed.
        """
        leaf = self._ca.issue_cert(
            common_name, common_name=common_name, key_type=trustme.KeyType.RSA
        )
        cert_pem = leaf.cert_chain_pems[0].bytes()
        cert = x509.load_pem_x509_certificate(cert_pem)
        return ClientCertificate(
            private_key_pem=leaf.private_key_pem.bytes(),
            certificate_pem=cert_pem,
            sha1_thumbprint=cert.fingerprint(hashes.SHA1()).hex().upper(),  # noqa: S303 (x5t is SHA-1 by spec)
            sha256_thumbprint=cert.fingerprint(hashes.SHA256()).hex().upper(),
        )

    def close(self) -> None:
        """Remove the temporary CA bundle file, if one was written."""
        with self._lock:
            path, self._bundle_path = self._bundle_path, None
        if path is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)

    def __enter__(self) -> DevCertificateAuthority:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
