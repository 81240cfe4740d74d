"""The app factory: routers mounted, errors answered as one message with a status, never a traceback."""

import pytest

pytest.importorskip("fastapi", reason='allx-edge serve needs the serve extra: pip install "allx[serve]"')
from fastapi.testclient import TestClient  # noqa: E402
from allx.errors import UsageError  # noqa: E402
from serve_clients import TOKEN, client, model_dir  # noqa: E402, F401


def test_pages_api_and_monitor_routers_are_all_mounted(client):
    for path in ("/", "/log", "/model", "/health",  # pages
                 "/api/samples", "/api/log", "/api/log/samples", "/api/log.csv", "/log.csv", "/api/model",  # API
                 "/monitor", "/api/monitor"):  # monitor
        assert client.get(path).status_code == 200, path
    assert client.get("/nowhere").status_code == 404


def test_errors_are_one_message_json_under_api_and_a_page_elsewhere(client):
    def refuse():
        raise UsageError("got nothing, expected something")

    def crash():
        raise RuntimeError("a bug")

    for path, endpoint in (("/api/refuse", refuse), ("/refuse", refuse), ("/api/crash", crash)):
        client.app.add_api_route(path, endpoint)
    lenient = TestClient(client.app, raise_server_exceptions=False, headers={"Authorization": f"Bearer {TOKEN}"})
    assert lenient.get("/api/refuse").status_code == 400
    assert lenient.get("/api/refuse").json() == {"error": "got nothing, expected something"}
    page = lenient.get("/refuse")
    assert page.status_code == 400 and "got nothing, expected something" in page.text and "<html" in page.text
    crashed = lenient.get("/api/crash")
    assert crashed.status_code == 500 and "a bug" not in crashed.text and "Traceback" not in crashed.text
    assert lenient.get("/health").json() == {"status": "ok"}  # still serving
