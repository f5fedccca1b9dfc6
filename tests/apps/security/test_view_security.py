"""Security of the browser views (medge.apps.view, shared by `medge ultrasound` and `medge ecg
stream`): HTTPS, the token (bearer, basic, session cookie), the non-loopback bind rule, security
headers and GET/HEAD only; the ECG app's HTTPS view signed in and streaming in headless Chromium."""

from __future__ import annotations

import base64
import http.client
import json
import os
import re
import shutil
import ssl
import subprocess
import threading
import time
from pathlib import Path

import pytest
from fixtures.cli_checks import assert_one_line_error, spawn_medge

from medge.apps.tls import TlsFiles
from medge.apps.view import BrowserView
from medge.apps.view_security import ViewSecurity

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
TOKEN = "s3cret-token-for-the-view-0123456789"


@pytest.fixture
def token_file(tmp_path) -> Path:
    path = tmp_path / "view.token"
    path.write_text(TOKEN + "\n")
    return path


def _request(view: BrowserView, pki, method: str, path: str, headers: dict | None = None,
             conn: http.client.HTTPConnection | None = None):
    conn = conn or http.client.HTTPSConnection("127.0.0.1", view.port, timeout=10,
                                               context=ssl.create_default_context(cafile=str(pki.ca)))
    conn.request(method, path, headers=headers or {})
    resp = conn.getresponse()
    return resp, resp.read(), conn


def test_https_view_needs_the_token_sends_security_headers_and_answers_get_head_only(pki, token_file):
    security = ViewSecurity(TlsFiles(pki.server_chain, pki.server_key), token_file)
    with BrowserView("127.0.0.1", 0, title="t", stats=lambda: {"frames": {"in": 1}}, security=security) as view:
        view.publish(b"\xff\xd8jpeg")
        assert view.url.startswith("https://127.0.0.1:") and TOKEN not in view.url
        assert view.open_url == view.url + "login#token=" + TOKEN

        for path in ("/", "/stats", "/frame.jpg", "/stream", "/events"):
            resp, body, _ = _request(view, pki, "GET", path)
            assert resp.status == 401, path
            assert resp.headers["WWW-Authenticate"].startswith("Basic ") and b"token" in body
        resp, _, _ = _request(view, pki, "GET", "/stats", {"Authorization": "Bearer wrong-token-0123456789"})
        assert resp.status == 401

        bearer = {"Authorization": f"Bearer {TOKEN}"}
        resp, body, conn = _request(view, pki, "GET", "/stats", bearer)
        assert resp.status == 200 and json.loads(body)["frames"] == {"in": 1}
        basic = base64.b64encode(f"anyone:{TOKEN}".encode()).decode()
        resp, body, _ = _request(view, pki, "GET", "/frame.jpg", {"Authorization": f"Basic {basic}"})
        assert resp.status == 200 and body == b"\xff\xd8jpeg"

        resp, _, _ = _request(view, pki, "GET", "/session", bearer)
        cookie = resp.headers["Set-Cookie"]
        assert resp.status == 204 and all(a in cookie for a in ("HttpOnly", "SameSite=Strict", "Secure"))
        assert TOKEN not in cookie
        resp, _, _ = _request(view, pki, "GET", "/stats", {"Cookie": cookie.split(";")[0]})
        assert resp.status == 200
        resp, body, _ = _request(view, pki, "GET", "/login")  # the sign-in page itself needs no token
        assert resp.status == 200 and b"/session" in body and TOKEN.encode() not in body

        resp, body, conn = _request(view, pki, "HEAD", "/stats", bearer, conn)  # keep-alive: then a GET on it
        assert resp.status == 200 and body == b""
        resp, body, _ = _request(view, pki, "GET", "/stats", bearer, conn)
        assert resp.status == 200 and body
        resp, body, _ = _request(view, pki, "HEAD", "/stream", bearer)
        assert resp.status == 200 and body == b""

        resp, _, _ = _request(view, pki, "GET", "/", bearer)
        csp = resp.headers["Content-Security-Policy"]
        assert re.search(r"script-src 'sha256-[A-Za-z0-9+/=]+'", csp) and "frame-ancestors 'none'" in csp
        assert "unsafe-inline" not in csp.split("script-src")[1].split(";")[0]
        for name, value in {"X-Content-Type-Options": "nosniff", "X-Frame-Options": "DENY",
                            "Referrer-Policy": "no-referrer", "Cache-Control": "no-store"}.items():
            assert resp.headers[name] == value, name
        for method in ("POST", "PUT", "DELETE", "OPTIONS", "TRACE", "PATCH", "BREW"):
            resp, _, _ = _request(view, pki, method, "/stats", bearer)
            assert resp.status == 405 and resp.headers["Allow"] == "GET, HEAD", method

        plain = http.client.HTTPConnection("127.0.0.1", view.port, timeout=10)  # no TLS: no answer
        with pytest.raises((http.client.HTTPException, OSError)):
            plain.request("GET", "/stats", headers=bearer)
            plain.getresponse()


def test_non_loopback_bind_without_auth_is_refused_by_both_apps(run_cli, token_file, tmp_path):
    res = run_cli("ultrasound", "--segmenter", "none.onnx", "--source", "synthetic", "--view", "browser:0.0.0.0:0")
    assert_one_line_error(res, "binds 0.0.0.0", "--auth-token-file", "--insecure-bind", code=2)
    res = run_cli("ecg", "stream", "--model", "none.onnx", "--port", "loop://", "--view", "browser:0.0.0.0:0")
    assert_one_line_error(res, "binds 0.0.0.0", "--auth-token-file", "--insecure-bind", code=2)
    res = run_cli("ecg", "stream", "--model", "none.onnx", "--port", "loop://", "--view", "browser:0.0.0.0:0",
                  "--insecure-bind")  # allowed, with a warning; it then fails on the model
    assert "WARNING: the view on 0.0.0.0 is open to anyone on the network" in res.stderr
    assert "binds 0.0.0.0" not in res.stderr
    short = tmp_path / "short.token"
    short.write_text("abc")
    res = run_cli("ecg", "stream", "--model", "none.onnx", "--port", "loop://", "--view", "browser:0.0.0.0:0",
                  "--auth-token-file", short)
    assert_one_line_error(res, "at least 16 characters", code=2)


@pytest.mark.skipif(CHROMIUM is None or CHROMEDRIVER is None,
                    reason="Debian's chromium and chromium-driver are not installed (.ci/run installs them)")
def test_ecg_https_view_signs_in_and_streams_in_headless_chromium(zoo_onnx, pki, token_file, tmp_path):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By

    link = tmp_path / "patch"
    procs = [spawn_medge(["ecg", "simulate", "--port", f"pty:{link}", "--seconds", "40", "--realtime"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)]
    driver = None
    try:
        deadline = time.monotonic() + 60
        while not link.is_symlink() and time.monotonic() < deadline and procs[0].poll() is None:
            time.sleep(0.05)
        procs.append(spawn_medge(
            ["ecg", "stream", "--model", str(zoo_onnx("ecg-3to12", dynamic_batch=False)),
                               "--port", str(link), "--seconds", "35", "--view", "browser:127.0.0.1:0",
                               "--tls-cert", str(pki.server_chain), "--tls-key", str(pki.server_key),
                               "--auth-token-file", str(token_file)],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=dict(os.environ)))
        lines: list[str] = []
        found = threading.Event()

        def drain() -> None:
            for line in procs[1].stderr:
                lines.append(line)
                if "live view at " in line:
                    found.set()
            found.set()

        threading.Thread(target=drain, daemon=True).start()
        assert found.wait(90), "".join(lines)[-2000:]
        url = next(ln for ln in lines if "live view at " in ln).rsplit(" ", 1)[1].strip()
        assert url.startswith("https://127.0.0.1:") and url.endswith("/login#token=" + TOKEN)
        base = url.split("login#")[0]
        ca = ssl.create_default_context(cafile=str(pki.ca))
        import urllib.error
        import urllib.request

        with pytest.raises(urllib.error.HTTPError) as denied:
            urllib.request.urlopen(base + "stats", timeout=10, context=ca)
        assert denied.value.code == 401
        request = urllib.request.Request(base + "stats", headers={"Authorization": f"Bearer {TOKEN}"})
        with urllib.request.urlopen(request, timeout=10, context=ca) as resp:
            assert resp.status == 200 and "view" in json.loads(resp.read())

        options = webdriver.ChromeOptions()
        options.binary_location = CHROMIUM
        for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                     "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-dev-shm-usage",
                     f"--user-data-dir={tmp_path / 'chromium-profile'}", "--window-size=1000,900",
                     f"--ignore-certificate-errors-spki-list={pki.ca_spki_sha256_b64}"):  # trust the test CA
            options.add_argument(flag)
        driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
        driver.set_page_load_timeout(30)
        driver.get(url)
        deadline = time.monotonic() + 45
        while time.monotonic() < deadline and driver.current_url != base:
            time.sleep(0.2)
        assert driver.current_url == base  # signed in; the token left the address bar and the history
        image, table = driver.find_element(By.ID, "frame"), driver.find_element(By.ID, "stats")
        while time.monotonic() < deadline and not (driver.execute_script("return arguments[0].naturalWidth", image)
                                                   and int(table.get_attribute("data-updates") or 0) >= 2):
            time.sleep(0.2)
        assert driver.execute_script("return arguments[0].naturalWidth", image) > 0, "".join(lines)[-2000:]
        assert int(table.get_attribute("data-updates") or 0) >= 2  # EventSource stats, through the cookie
        assert driver.execute_script("return document.cookie") == ""  # HttpOnly: no script reads it
        assert driver.execute_script("return location.protocol") == "https:"
    finally:
        if driver is not None:
            driver.quit()
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
            proc.communicate(timeout=30)
