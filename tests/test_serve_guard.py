"""The access guards of `allx-edge serve`: the token (header, cookie, never in an /api address), the Host header, the security headers."""

from __future__ import annotations


import pytest

pytest.importorskip("fastapi", reason='allx-edge serve needs the serve extra: pip install "allx[serve]"')
from fastapi.testclient import TestClient  # noqa: E402
from allx.edge_runner.model import EdgeModel  # noqa: E402
from allx.edge_runner.serve.access import COOKIE  # noqa: E402
from allx.edge_runner.serve.app import create_app  # noqa: E402
from allx.edge_runner.serve.card import describe_loaded  # noqa: E402
from allx.edge_runner.serve.workbench import Workbench  # noqa: E402
from serve_clients import TOKEN, model_dir, client  # noqa: E402


def test_health_is_open_and_everything_else_needs_the_token(client):
    anonymous = TestClient(client.app)
    assert anonymous.get("/health").json() == {"status": "ok"}
    for path in ("/", "/api/samples", "/model", "/static/app.css", "/api/log.csv"):
        response = anonymous.get(path)
        assert response.status_code == 401, path
    wrong = anonymous.get("/api/samples", headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 401 and wrong.json() == {"error": "unauthorized"}
    assert TOKEN not in anonymous.get("/").text
    headers = anonymous.get("/").headers
    assert headers["content-security-policy"].startswith("default-src 'self'")
    assert headers["referrer-policy"] == "no-referrer"


def test_token_in_url_becomes_an_httponly_strict_cookie(client):
    browser = TestClient(client.app)
    response = browser.get(f"/model?token={TOKEN}", follow_redirects=False)
    assert response.status_code == 303 and response.headers["location"] == "/model"
    cookie = response.headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=strict" in cookie
    assert browser.get("/model").status_code == 200  # the cookie alone is enough now
    assert browser.cookies.get(COOKIE) == TOKEN


def test_a_token_in_the_address_is_refused_under_api(client):
    anonymous = TestClient(client.app)
    for headers in ({}, {"Authorization": f"Bearer {TOKEN}"}):
        response = anonymous.get(f"/api/samples?token={TOKEN}", headers=headers)
        assert response.status_code == 401 and "refused under /api" in response.json()["error"]
    assert anonymous.get("/api/log.csv", params={"token": TOKEN}).status_code == 401
    assert anonymous.get(f"/?token={TOKEN}", follow_redirects=False).status_code == 303  # the page sign-in stays


def test_host_header_must_name_this_device(model_dir, tmp_path):
    """DNS rebinding: a foreign name resolved to the device is refused; addresses and known names pass."""
    model = EdgeModel.load(model_dir / "model.tflite")
    bench = Workbench(model, tmp_path / "log.db")
    app = create_app(bench, describe_loaded(model), TOKEN, host_names=("localhost", "pi.clinic.lan"))
    auth = {"Authorization": f"Bearer {TOKEN}"}
    for base in ("http://evil.example", "http://evil.example:8080", "http://localhost.evil.example"):
        response = TestClient(app, base_url=base).get("/api/samples", headers=auth)
        assert response.status_code == 400 and "unknown Host header" in response.json()["error"], base
    for base in ("http://127.0.0.1:8080", "http://192.168.1.20", "http://[::1]:8080", "http://PI.clinic.lan:8080",
                 "http://localhost"):
        assert TestClient(app, base_url=base).get("/api/samples", headers=auth).status_code == 200, base
    bench.close()
