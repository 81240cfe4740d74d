"""`allx-edge monitor`: its exit codes and help."""

import json
import math

from monitor_logs import write_log
from test_edge_monitor import invoke, write_model_folder
from typer.testing import CliRunner

from allx.edge_runner.monitor import CARD, FAMILY_ALPHA


def test_cli_exits_3_when_the_latest_window_alarms_and_0_otherwise(tmp_path):
    model = write_model_folder(tmp_path / "model")
    db = tmp_path / "audit.db"
    write_log(db, good=6, changed=6)
    result = invoke("--log-db", db, "--model", model, "--window", 6, "--json", "--html", tmp_path / "m.html")
    assert result.exit_code == 3, result.output
    data = json.loads(result.stdout)
    assert data["limits_from"] == CARD and [w["alarms"] for w in data["windows"]][0] == []
    assert "ood_rate" in data["windows"][-1]["alarms"] and data["windows"][-1]["limits"]["ood_rate"]["n"] == 30
    assert "latest window (samples 7-12) alarms: ood_rate" in result.stderr
    assert "<svg" in (tmp_path / "m.html").read_text()
    good = tmp_path / "good.db"
    write_log(good, good=6)
    result = invoke("--log-db", good, "--model", model, "--window", 6)
    assert result.exit_code == 0 and "samples 1-6: 6 samples, 30 fields" in result.stdout
    assert "limits from what model.json states" in result.stdout
    unlimited = invoke("--log-db", db, "--window", 6)  # no model: rates only, never an alarm
    assert unlimited.exit_code == 0 and "no limits, no alarms" in unlimited.stdout
    bad = invoke("--log-db", db, "--window", 6, "--by", "day")
    assert bad.exit_code == 2 and bad.stderr.count("\n") == 1 and "expected one of them" in bad.stderr


def test_help_documents_exit_code_3():
    from allx.edge_runner.cli import app

    result = CliRunner().invoke(app, ["monitor", "--help"], terminal_width=200)
    assert "3 the latest window alarms" in " ".join(result.stdout.split())
    assert math.isclose(FAMILY_ALPHA, 0.01)  # the help's "1%" and "once in 100" are this constant
