"""Security of the browser views: HTTPS, a token (bearer, basic or session cookie), the bind rule,
and the response headers.

* ``--tls-cert/--tls-key``: the view speaks HTTPS only.
* ``--auth-token-file FILE``: every route but ``/login`` needs the token, sent as
  ``Authorization: Bearer TOKEN``, as HTTP basic auth (any user name, the token as password: the
  browser's own prompt), or as the ``medge_view`` session cookie.  The app prints
  ``…/login#token=TOKEN``; that page (no data in it) moves the token from the URL fragment, which a
  browser never sends, into an ``Authorization`` header once, gets the cookie (HttpOnly,
  SameSite=Strict, Secure over HTTPS; it holds a hash of the token, not the token), drops the
  fragment from the history, and opens the view, whose ``<img>`` and ``EventSource`` then send the
  cookie by themselves.
* A view bound to an address other than loopback without a token is refused unless
  ``--insecure-bind`` is given (the page streams patient images).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import ssl
from dataclasses import dataclass
from pathlib import Path

from medge.apps.tls import TlsFiles, is_loopback
from medge.common.console import warn
from medge.common.errors import UsageError

COOKIE = "medge_view"
MIN_TOKEN_CHARS = 16
BASE_HEADERS = {"X-Content-Type-Options": "nosniff", "X-Frame-Options": "DENY", "Referrer-Policy": "no-referrer",
                "Cache-Control": "no-store"}
NONE = "'none'"
DATA_CSP = "default-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"

LOGIN_PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>medge view: sign in</title></head>
<body><p id="status">signing in…</p>
<script>
const token = new URLSearchParams(location.hash.slice(1)).get("token");
history.replaceState(null, "", location.pathname);
const status = document.getElementById("status");
if (!token) {
  status.textContent = "Open the link the app printed (it ends in #token=…), or reload / and sign in with the token as password.";
} else {
  fetch("/session", {headers: {"Authorization": "Bearer " + token}, credentials: "same-origin"}).then((r) => {
    if (r.ok) location.replace("/"); else status.textContent = "wrong token (" + r.status + ")";
  });
}
</script></body></html>
"""


def read_token(path: Path) -> str:
    """The token in `path` (surrounding whitespace removed); one-line error when missing or short."""
    try:
        token = Path(path).read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"--auth-token-file {path}: cannot read it ({getattr(exc, 'strerror', None) or exc}); "
                         "pass a file holding one token") from None
    if len(token) < MIN_TOKEN_CHARS or any(c.isspace() for c in token):
        raise UsageError(f"--auth-token-file {path}: the token must be one word of at least {MIN_TOKEN_CHARS} "
                         "characters; make one with: python -c 'import secrets; print(secrets.token_urlsafe(32))' > FILE")
    return token


@dataclass(frozen=True)
class ViewSecurity:
    """How a browser view protects itself: TLS files, token file, and the insecure-bind override."""

    tls: TlsFiles = TlsFiles()
    token_file: Path | None = None
    insecure_bind: bool = False

    def check_bind(self, host: str, flag: str = "--view") -> None:
        """Refuse a non-loopback bind without a token unless ``--insecure-bind``; warn on what stays open."""
        if is_loopback(host):
            return
        if self.token_file is None and not self.insecure_bind:
            raise UsageError(f"{flag} binds {host}, reachable from the network, without authentication, and the "
                             "page streams patient images; pass --auth-token-file FILE (and --tls-cert/--tls-key), "
                             "or --insecure-bind to accept the risk")
        if self.token_file is None:
            warn(f"the view on {host} is open to anyone on the network (--insecure-bind)")
        elif self.tls.cert is None:
            warn(f"the view on {host} sends the token and the images unencrypted; add --tls-cert/--tls-key")


class Guard:
    """The started view's TLS context and token check (built once, used by every request)."""

    def __init__(self, security: ViewSecurity) -> None:
        self.ssl_context: ssl.SSLContext | None = (security.tls.server_context()
                                                   if security.tls.enabled else None)
        self.token = read_token(security.token_file) if security.token_file is not None else None
        self.session = hashlib.sha256(f"medge-view-session\0{self.token}".encode()).hexdigest() if self.token else ""

    @property
    def scheme(self) -> str:
        """``https`` with TLS, else ``http``."""
        return "https" if self.ssl_context is not None else "http"

    def url_suffix(self) -> str:
        """What to append to the view's base URL so that a browser signs in by opening it."""
        return f"login#token={self.token}" if self.token else ""

    def authorised(self, authorization: str | None, cookie: str | None) -> bool:
        """Whether the request carries the token (bearer or basic) or the session cookie."""
        if self.token is None:
            return True
        scheme, _, value = (authorization or "").partition(" ")
        if scheme.lower() == "bearer" and hmac.compare_digest(value.strip().encode(), self.token.encode()):
            return True
        if scheme.lower() == "basic":
            try:
                password = base64.b64decode(value.strip(), validate=True).decode().partition(":")[2]
            except (ValueError, UnicodeDecodeError):
                password = ""
            if hmac.compare_digest(password.encode(), self.token.encode()):
                return True
        found = re.search(rf"(?:^|;\s*){COOKIE}=([0-9a-f]+)", cookie or "")
        return bool(found) and hmac.compare_digest(found.group(1).encode(), self.session.encode())

    def session_cookie(self) -> str:
        """The ``Set-Cookie`` value given by ``/session`` to a request with the token."""
        secure = "; Secure" if self.ssl_context is not None else ""
        return f"{COOKIE}={self.session}; Path=/; HttpOnly; SameSite=Strict{secure}"


def page_csp(page: str) -> str:
    """A Content-Security-Policy allowing exactly the page's inline scripts (by hash), nothing from elsewhere."""
    bodies = re.findall(r"<script>(.*?)</script>", page, flags=re.S)
    scripts = " ".join(f"'sha256-{base64.b64encode(hashlib.sha256(b.encode()).digest()).decode()}'" for b in bodies)
    return (f"default-src 'none'; img-src 'self'; connect-src 'self'; script-src {scripts or NONE}; "
            "style-src 'unsafe-inline'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'")
