"""`allx-edge serve` as a command: options, the listening socket, the printed link, a clean stop."""

from __future__ import annotations

import re
import sqlite3
import stat

import pytest

pytest.importorskip("fastapi", reason='allx-edge serve needs the serve extra: pip install "allx[serve]"')
from allx.edge_runner.audit import AuditLog  # noqa: E402
from serve_clients import png_bytes, model_dir, make_client, client, start, upload  # noqa: E402


def test_serve_on_a_port_in_use_or_an_unknown_host_is_one_line_exit_2(model_dir, tmp_path, monkeypatch):
    import socket

    from typer.testing import CliRunner

    from allx.edge_runner.cli import app

    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    base = ["serve", "--model", str(model_dir / "model.tflite"), "--log-db", str(tmp_path / "log.db"),
            "--camera", "none"]
    with socket.create_server(("127.0.0.1", 0)) as taken:
        busy = CliRunner().invoke(app, [*base, "--port", str(taken.getsockname()[1])])
    assert busy.exit_code == 2 and "cannot listen on 127.0.0.1 port" in busy.stderr, busy.output
    assert "open: http" not in busy.output  # no link printed to a server that never ran
    unknown = CliRunner().invoke(app, [*base, "--host", "no-such-host.invalid"])
    assert unknown.exit_code == 2 and "unknown host" in unknown.stderr and "Traceback" not in unknown.output


def test_addresses_printed_for_the_network():
    from allx.edge_runner.serve.server import is_local, lan_addresses, url_for

    assert lan_addresses("127.0.0.1") == ["127.0.0.1"] and is_local("127.0.0.1") and not is_local("0.0.0.0")
    assert all(not address.startswith("127.") for address in lan_addresses("0.0.0.0"))
    assert url_for("::1", 8080, "t") == "http://[::1]:8080/?token=t"


def test_serve_command_refuses_bad_options(model_dir):
    from typer.testing import CliRunner

    from allx.edge_runner.cli import app

    result = CliRunner().invoke(app, ["serve", "--model", str(model_dir / "model.tflite"), "--port", "0"])
    assert result.exit_code == 2 and "expected a port in 1..65535" in result.output
    missing = CliRunner().invoke(app, ["serve", "--model", str(model_dir / "nope.tflite")])
    assert missing.exit_code == 2 and "Traceback" not in missing.output


def test_serve_command_prints_the_link_and_rotates_the_token(model_dir, tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from allx.edge_runner.cli import app
    from allx.edge_runner.serve import server

    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.delenv("ALLX_SITE_CONFIG", raising=False)
    served = []
    monkeypatch.setattr(server, "listen", lambda options: None)  # no port taken on a shared machine
    monkeypatch.setattr(server, "run", lambda web_app, options, listener: served.append(options))
    base = ["serve", "--model", str(model_dir / "model.tflite"), "--log-db", str(tmp_path / "log.db"),
            "--camera", "none"]

    def token_of(output: str) -> str:
        return re.search(r"open: http://127\.0\.0\.1:8080/\?token=(\S+)", output).group(1)

    first = CliRunner().invoke(app, base)
    assert first.exit_code == 0, first.output
    again = CliRunner().invoke(app, base)
    rotated = CliRunner().invoke(app, [*base, "--new-token"])
    assert token_of(first.output) == token_of(again.output) != token_of(rotated.output)
    stored = tmp_path / "config" / "allx" / "serve_token"
    assert stored.read_text().strip() == token_of(rotated.output) and stat.S_IMODE(stored.stat().st_mode) == 0o600
    network = CliRunner().invoke(app, [*base, "--host", "0.0.0.0", "--port", "9000"])
    assert "on the network" in network.output and ":9000/?token=" in network.output
    assert [o.host for o in served] == ["127.0.0.1"] * 3 + ["0.0.0.0"]


def test_rows_waiting_for_a_locked_log_survive_a_stop(model_dir, tmp_path):
    """Uploads while another process holds the log, then the server stops (Ctrl-C closes the workbench): the
    rows are on disk in the spool, and the next start writes them."""
    client, bench = make_client(model_dir / "model.tflite", tmp_path / "log.db")
    key = start(client)
    locker = sqlite3.connect(tmp_path / "log.db")
    locker.execute("begin exclusive")
    response = upload(client, key, [("a.png", png_bytes(1)), ("b.png", png_bytes(2))])
    assert "kept on disk" in response.json()["log_warning"]
    bench.close()
    locker.rollback()
    locker.close()
    with AuditLog.open(tmp_path / "log.db") as log:
        assert log.replayed == 3 and log.verify() == []
        assert [(row["kind"], row["image"]) for row in log.rows()] == [("field", "a.png"), ("field", "b.png"),
                                                                       ("sample", None)]
