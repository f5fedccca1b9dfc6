"""Health probes of a deployed app, made from this machine through an SSH port forward.

``http``: the browser view's ``/stats`` answers (200; a 401 means the view runs with a token, which
is an answer too).  ``echo``: a DICOM C-ECHO to the X-ray SCP succeeds.
"""

from __future__ import annotations

import ssl
import urllib.error
import urllib.request

from medge.deploy.service import AppSpec, option_value
from medge.common.registry import import_optional


def probe(kind: str, port: int, spec: AppSpec, timeout_s: float = 3.0) -> tuple[bool, str]:
    """(ok, detail) of one health probe of the app behind local `port`."""
    return _http(port, spec, timeout_s) if kind == "http" else _echo(port, spec, timeout_s)


def _http(port: int, spec: AppSpec, timeout_s: float) -> tuple[bool, str]:
    https = option_value(list(spec.app_args), "--tls-cert") is not None
    url = f"{'https' if https else 'http'}://127.0.0.1:{port}/stats"
    context = ssl._create_unverified_context() if https else None  # a loopback tunnel to our own device
    try:
        with urllib.request.urlopen(url, timeout=timeout_s, context=context) as response:
            response.read(1 << 16)
            return response.status == 200, f"/stats answered {response.status}"
    except urllib.error.HTTPError as exc:
        return exc.code == 401, f"/stats answered {exc.code}" + (" (the view needs its token)" if exc.code == 401 else "")
    except (OSError, ValueError) as exc:
        return False, f"/stats did not answer ({type(exc).__name__})"


def _echo(port: int, spec: AppSpec, timeout_s: float) -> tuple[bool, str]:
    pynetdicom = import_optional("pynetdicom", what="the X-ray health check (C-ECHO)")
    called = option_value(list(spec.app_args), "--ae-title") or "MEDGE"
    ae = pynetdicom.AE(ae_title="MEDGE-SCU")
    ae.add_requested_context("1.2.840.10008.1.1")  # Verification SOP Class
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = timeout_s
    assoc = ae.associate("127.0.0.1", port, ae_title=called)
    if not assoc.is_established:
        return False, f"C-ECHO: {called} did not accept an association"
    try:
        status = assoc.send_c_echo()
    finally:
        assoc.release()
    code = getattr(status, "Status", None)
    return code == 0, f"C-ECHO to {called} answered status 0x{code:04X}" if code is not None else "C-ECHO: no answer"
