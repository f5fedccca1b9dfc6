"""TLS for the apps: DICOM TLS (PS3.15 Annex B, through pynetdicom's ``ssl_context``/``tls_args``)
and HTTPS for the browser views.

One set of files, three flags: ``--tls-cert`` (PEM certificate chain), ``--tls-key`` (its PEM
private key) and ``--tls-ca`` (PEM CA bundle that peers' certificates must chain to).  TLS 1.2 is
the lowest version offered.  A server given ``--tls-ca`` requires and verifies the client's
certificate (mutual TLS); a client verifies the server's certificate and host name against
``--tls-ca`` (the system CAs without it) and presents ``--tls-cert`` when given.
"""

from __future__ import annotations

import ipaddress
import ssl
from dataclasses import dataclass
from pathlib import Path

from medge.common.errors import UsageError

HANDSHAKE_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class TlsFiles:
    """The PEM files of ``--tls-cert``, ``--tls-key`` and ``--tls-ca`` (any may be None)."""

    cert: Path | None = None
    key: Path | None = None
    ca: Path | None = None

    @property
    def enabled(self) -> bool:
        """Whether any TLS flag was given."""
        return any((self.cert, self.key, self.ca))

    def check(self) -> None:
        """One-line UsageError when a file is missing or the certificate comes without its key."""
        if (self.cert is None) != (self.key is None):
            raise UsageError("--tls-cert and --tls-key go together; pass both PEM files")
        for flag, path in (("--tls-cert", self.cert), ("--tls-key", self.key), ("--tls-ca", self.ca)):
            if path is not None and not Path(path).is_file():
                raise UsageError(f"{flag} {path}: no such file; pass a PEM file")

    def _load(self, ctx: ssl.SSLContext) -> ssl.SSLContext:
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        try:
            if self.cert is not None:
                ctx.load_cert_chain(str(self.cert), str(self.key))
            if self.ca is not None:
                ctx.load_verify_locations(cafile=str(self.ca))
        except (ssl.SSLError, ValueError) as exc:
            raise UsageError(f"cannot load the TLS files ({getattr(exc, 'reason', None) or exc}); pass a PEM "
                             "certificate with --tls-cert, its private key with --tls-key and a PEM CA with --tls-ca") \
                from None
        return ctx

    def server_context(self) -> ssl.SSLContext:
        """A server context; with ``--tls-ca`` the client must present a certificate it signed."""
        self.check()
        if self.cert is None:
            raise UsageError("--tls-ca needs --tls-cert and --tls-key: a TLS server presents its own certificate")
        ctx = self._load(_HandshakeTimeoutContext(ssl.PROTOCOL_TLS_SERVER))
        if self.ca is not None:
            ctx.verify_mode = ssl.CERT_REQUIRED
        return ctx

    def client_context(self) -> ssl.SSLContext:
        """A client context verifying the server (``--tls-ca`` or the system CAs), with our certificate if given."""
        self.check()
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # verifies the certificate and the host name
        if self.ca is None:
            ctx.load_default_certs()
        return self._load(ctx)


def is_loopback(host: str) -> bool:
    """Whether `host` (an address or ``localhost``) only reaches this machine."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


class _HandshakeTimeoutContext(ssl.SSLContext):
    """A server context whose handshake on an accepted socket gives up after `HANDSHAKE_TIMEOUT_S`.

    pynetdicom's server handshakes in its accept loop, on a blocking socket: a peer that connects
    and sends nothing would stop every other association.  The timeout bounds that; the socket is
    blocking again once the handshake is done.
    """

    def wrap_socket(self, sock, *args, **kwargs):  # type: ignore[override]
        if not kwargs.get("server_side"):
            return super().wrap_socket(sock, *args, **kwargs)
        previous = sock.gettimeout()
        sock.settimeout(HANDSHAKE_TIMEOUT_S)
        wrapped = super().wrap_socket(sock, *args, **kwargs)
        wrapped.settimeout(previous)
        return wrapped
