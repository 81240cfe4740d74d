"""`allx-edge review` and `log verify|export|setup-keys` (edge_runner.cli_log), and classify logging every
result: the audit log's rows, and its bad input as one line."""

import csv
import io
import json
import os
import signal
import sqlite3
import subprocess
import sys

import numpy as np
import pytest
from edge_models import LABELS, tiny_models
from PIL import Image
from typer.testing import CliRunner

from allx.edge_runner.audit import SCHEMA_VERSION, AuditLog
from allx.files import sha256_file

runner = CliRunner()
RUN_CLI = "import sys; from allx.edge_runner.cli import app; sys.argv[0] = 'allx-edge'; app()"


def invoke(*args):
    from allx.edge_runner.cli import app

    result = runner.invoke(app, [str(a) for a in args])
    assert "Traceback" not in result.output, result.output
    return result


@pytest.fixture(scope="module")
def model():
    return tiny_models().float32


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    folder = tmp_path_factory.mktemp("fields")
    rng = np.random.default_rng(0)
    for index in range(3):
        Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(folder / f"field{index}.png")
    (folder / "broken.png").write_bytes(b"not a png")
    return folder


def classify(images, model, *args):
    return invoke("classify", images, "-m", model, "--labels", tiny_models().labels_file, "--json", *args)


def test_classify_logs_every_result_before_showing_it(images, model, tmp_path):
    db = tmp_path / "audit.db"
    result = classify(images, model, "--log-db", db, "--operator", "ana")
    assert result.exit_code == 1  # the broken image
    shown = [json.loads(line) for line in result.stdout.splitlines()]
    with AuditLog.open(db, readonly=True) as log:
        rows = log.rows()
        assert log.verify() == []
    assert [row["image"] for row in rows] == [os.path.basename(line["path"]) for line in shown]
    good = rows[1]["record"]
    assert rows[1]["operator"] == "ana" and rows[1]["kind"] == "field" and rows[1]["label"] == shown[1]["label"]
    assert good["image_sha256"] == sha256_file(images / "field0.png")
    assert good["model_sha256"] == sha256_file(model) and good["model_file"] == model.name
    assert set(good["probabilities"]) == set(LABELS) and good["allx_version"] and good["runtime"]
    assert good["decision"] == shown[1]["decision"] and good["malignant_score"] == shown[1]["malignant_score"]
    assert rows[0]["image"] == "broken.png" and rows[0]["record"]["error"] and rows[0]["label"] is None


def test_default_log_is_in_the_user_data_folder_and_no_log_writes_none(images, model, tmp_path):
    default = tmp_path.parent / "does-not-matter"
    from allx.edge_runner.site import default_log_db

    assert not default_log_db().exists()
    classify(images, model)
    with AuditLog.open(default_log_db(), readonly=True) as log:
        assert len(log.rows()) == 4
    classify(images, model, "--no-log", "--log-db", default)
    assert not default.exists()


def logged_sample(tmp_path, images, model):
    """A log whose S1 sample has field rows and a sample verdict (as the sample aggregation will write)."""
    db = tmp_path / "audit.db"
    classify(images, model, "--log-db", db, "--no-log")
    with AuditLog.open(db) as log:
        for name in ("field0.png", "field1.png"):
            log.append({"kind": "field", "sample_id": "S1", "image": name, "label": "Pro",
                        "probabilities": dict(zip(LABELS, (0.1, 0.1, 0.1, 0.7)))})
        log.append({"kind": "sample", "sample_id": "S1", "label": "Pro"})
    return db


def test_review_confirm_override_and_bad_requests(images, model, tmp_path):
    db = logged_sample(tmp_path, images, model)
    ok = invoke("review", "S1", "--confirm", "--operator", "ben", "--log-db", db)
    assert ok.exit_code == 0 and "sample S1: confirmed (audit row 4" in ok.stdout
    over = invoke("review", "S1", "--override", "Pre", "--note", "Pre-B blasts", "--log-db", db)
    assert over.exit_code == 0 and "overridden to Pre" in over.stdout
    for args, message in ((("--confirm", "--override", "Pre"), "got both --confirm and --override"),
                          ((), "got neither --confirm nor --override"),
                          (("--override", "Pre"), "--override without --note"),
                          (("--override", "Blast", "--note", "x"), "--override: got 'Blast', expected one of Benign")):
        bad = invoke("review", "S1", *args, "--log-db", db)
        assert bad.exit_code == 2 and bad.stderr.count("\n") == 1 and message in bad.stderr, bad.stderr
    unknown = invoke("review", "S7", "--confirm", "--log-db", db)
    assert unknown.exit_code == 2 and "got sample 'S7'" in unknown.stderr
    with AuditLog.open(db, readonly=True) as log:
        reviews = [row for row in log.rows() if row["kind"] == "review"]
    assert [(row["record"]["action"], row["label"]) for row in reviews] == [("confirm", "Pro"), ("override", "Pre")]


def test_log_verify_names_the_edited_row_and_exits_3(images, model, tmp_path):
    db = tmp_path / "audit.db"
    classify(images, model, "--log-db", db)
    ok = invoke("log", "verify", "--log-db", db)
    assert ok.exit_code == 0 and "4 rows, hash chain intact" in ok.stdout
    connection = sqlite3.connect(db)
    connection.execute("DROP TRIGGER entries_no_update")
    connection.execute("UPDATE entries SET label = 'Benign' WHERE id = 3")
    connection.commit()
    connection.close()
    bad = invoke("log", "verify", "--log-db", db)
    assert bad.exit_code == 3
    assert "tampered: row 3: edited" in bad.stdout and bad.stderr.startswith("error: ") and bad.stderr.count("\n") == 1


def test_log_export_csv_json_and_since(images, model, tmp_path):
    db = tmp_path / "audit.db"
    classify(images, model, "--log-db", db, "--operator", "ana")
    result = invoke("log", "export", "--csv", "--log-db", db)
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    assert result.exit_code == 0 and len(rows) == 4 and rows[1]["operator"] == "ana"
    assert json.loads(rows[1]["record"])["image"] == rows[1]["image"] == "field0.png"
    assert invoke("log", "export", "--csv", "--since", "2999-01-01", "--log-db", db).stdout.count("\n") == 1
    lines = invoke("log", "export", "--json", "--log-db", db).stdout.splitlines()
    assert len(lines) == 4 and json.loads(lines[0])["id"] == 1
    out = tmp_path / "export.csv"
    assert invoke("log", "export", "--csv", "-o", out, "--log-db", db).exit_code == 0 and out.is_file()
    for args, message in ((("--since", "yesterday", "--csv"), "--since: got 'yesterday'"),
                          ((), "got no format, expected --csv or --json")):
        bad = invoke("log", "export", *args, "--log-db", db)
        assert bad.exit_code == 2 and message in bad.stderr and bad.stderr.count("\n") == 1


def test_bad_log_files_stop_classify_before_any_result(images, model, tmp_path):
    garbage = tmp_path / "garbage.db"
    garbage.write_bytes(b"\x00garbage" * 200)
    newer = tmp_path / "newer.db"
    AuditLog.open(newer).close()
    connection = sqlite3.connect(newer)
    connection.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'", (str(SCHEMA_VERSION + 1),))
    connection.commit()
    connection.close()
    for db, message in ((garbage, "damaged or not an audit log"), (newer, "written by a newer allx"),
                        (tmp_path, "got a folder")):
        result = classify(images, model, "--log-db", db)
        assert result.exit_code == 2 and result.stdout == "", result.stdout
        errors = [line for line in result.stderr.splitlines() if not line.startswith("warning: running without:")]
        assert len(errors) == 1 and message in errors[0], result.stderr  # one error after the features line
    for command in (("log", "verify"), ("log", "export", "--csv")):
        result = invoke(*command, "--log-db", tmp_path / "missing.db")
        assert result.exit_code == 2 and "no such audit log" in result.stderr


def test_a_read_only_log_stops_classify_before_any_result(images, model, tmp_path):
    from test_audit import as_unprivileged

    db = tmp_path / "audit.db"
    AuditLog.open(db).close()
    os.chmod(db, 0o444)
    args = ["classify", images, "-m", model, "--labels", tiny_models().labels_file, "--log-db", db]
    result = subprocess.run(as_unprivileged([sys.executable, "-c", RUN_CLI, *map(str, args)]), capture_output=True,
                            text=True, timeout=120, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.strip().splitlines()[-1].startswith(f"error: {db}: cannot write the audit log")
    assert "Traceback" not in result.stderr


def test_site_config_can_require_the_operator(images, model, tmp_path, monkeypatch):
    site = tmp_path / "site.json"
    site.write_text(json.dumps({"require_operator": True, "log_db": str(tmp_path / "site.db")}))
    monkeypatch.setenv("ALLX_SITE_CONFIG", str(site))
    missing = classify(images, model)
    assert missing.exit_code == 2 and missing.stdout == ""
    assert "--operator missing: the site config" in missing.stderr and missing.stderr.count("\n") == 1
    assert classify(images, model, "--operator", "ana").exit_code == 1  # the broken image
    with AuditLog.open(tmp_path / "site.db", readonly=True) as log:
        assert {row["operator"] for row in log.rows()} == {"ana"}
    assert invoke("review", "x", "--confirm").stderr.startswith("error: --operator missing")
    site.write_text('{"require_operator": "yes"}')
    assert "require_operator: got 'yes'" in classify(images, model, "--operator", "a").stderr
    site.write_text("{not json")
    broken = classify(images, model).stderr
    assert "site config" in broken and "not valid JSON" in broken
    bad = classify(images, model, "--site-config", tmp_path / "nope.json")
    assert bad.exit_code == 2 and "no such site config" in bad.stderr


def test_a_killed_classify_loses_at_most_the_result_being_written(model, tmp_path):
    folder = tmp_path / "many"
    folder.mkdir()
    rng = np.random.default_rng(1)
    for index in range(300):
        Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(folder / f"f{index:03}.png")
    db = tmp_path / "audit.db"
    args = ["classify", folder, "-m", model, "--labels", tiny_models().labels_file, "--json", "--log-db", db]
    process = subprocess.Popen([sys.executable, "-c", RUN_CLI, *map(str, args)], stdout=subprocess.PIPE,
                               stderr=subprocess.DEVNULL, text=True, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
    shown = [json.loads(process.stdout.readline())["path"] for _ in range(30)]
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=30)
    with AuditLog.open(db) as log:
        assert log.verify() == []
        logged = [row["record"]["image_path"] for row in log.rows()]
    assert len(shown) <= len(logged) < 300  # killed mid-batch
    assert logged[:len(shown)] == shown  # every result shown was logged first, in order
    assert logged == [str(path) for path in sorted(folder.iterdir())][:len(logged)]


def test_sample_fields_and_verdict_are_logged_and_reviewable(tmp_path):
    from test_edge_cli_sample import sample_folder, write_model_folder

    (tmp_path / "model").mkdir()
    model_dir = write_model_folder(tmp_path / "model")
    fields = sample_folder(tmp_path / "P7", good=3, blurred=1, broken=1)
    db = tmp_path / "audit.db"
    result = invoke("classify", fields, "-m", model_dir, "--sample", "P7", "--json", "--log-db", db,
                    "--operator", "ana")
    assert result.exit_code == 1, result.output  # the broken field
    shown = [json.loads(line) for line in result.stdout.splitlines()]
    with AuditLog.open(db, readonly=True) as log:
        rows = log.rows(sample="P7")
    assert [row["kind"] for row in rows] == ["field"] * 5 + ["sample"]
    assert [row["record"]["image_path"] for row in rows[:5]] == [line["path"] for line in shown[:5]]
    blurred = next(row for row in rows if row["image"] == "blur0.png")["record"]
    assert blurred["usable"] is False and blurred["reason"].startswith("blurred") and blurred["quality"]["ok"] is False
    verdict = rows[-1]
    assert verdict["record"]["verdict"] == shown[-1]["verdict"] and verdict["operator"] == "ana"
    assert verdict["record"]["fields_set_aside"] and verdict["record"]["model_sha256"]
    assert invoke("review", "P7", "--confirm", "--log-db", db).exit_code == 0
    with AuditLog.open(db, readonly=True) as log:
        review = log.rows(sample="P7")[-1]
        assert log.verify() == []
    assert review["record"]["reviewed_row"] == verdict["id"] and review["label"] == verdict["label"]


def test_camera_sample_session_logs_its_frames_and_verdict(tmp_path):
    cv2 = pytest.importorskip("cv2")
    video = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 10, (64, 64))
    for i in range(6):
        writer.write(np.full((64, 64, 3), 40 + 20 * i, np.uint8))
    writer.release()
    db = tmp_path / "audit.db"
    result = invoke("camera", "-m", tiny_models().int8, "--labels", tiny_models().labels_file, "--source", video,
                    "--headless", "--max-frames", "4", "--sample", "C1", "--log-db", db)
    assert result.exit_code == 0, result.output
    with AuditLog.open(db, readonly=True) as log:
        assert [row["kind"] for row in log.rows(sample="C1")] == ["field"] * 4 + ["sample"]
    plain = invoke("camera", "-m", tiny_models().int8, "--labels", tiny_models().labels_file, "--source", video,
                   "--headless", "--max-frames", "2", "--log-db", tmp_path / "preview.db")
    assert plain.exit_code == 0 and not (tmp_path / "preview.db").exists()  # a preview is not a result


# --- the campaign's tamperings, each a clear line and exit 3; damaged files exit 2 ---

def library_log(path, rows=4):
    with AuditLog.open(path) as log:
        for index in range(rows):
            log.append({"kind": "field", "sample_id": "S1", "image": f"f{index}.png", "label": "Pro",
                        "probabilities": dict(zip(LABELS, (0.1, 0.1, 0.1, 0.7)))})
    return path


def test_every_tampering_of_the_campaign_fails_verify_with_exit_3(tmp_path):
    from test_audit import tamper_all

    cases = {
        "last row deleted, head fixed": ["DELETE FROM entries WHERE id = 4",
                                         "UPDATE meta SET value = '3' WHERE key = 'head_id'"],
        "last row and its seal deleted": ["DELETE FROM entries WHERE id = 4", "DELETE FROM seals WHERE epoch = 4"],
        "row added": ["INSERT INTO entries SELECT 5, time_utc, kind, sample_id, operator, image, image_sha256, "
                      "label, record, row_hash, row_hash FROM entries WHERE id = 4"],
        "row edited": ["UPDATE entries SET label = 'Benign' WHERE id = 2"],
    }
    expected = {"last row deleted, head fixed": "tampered: row 4: deleted",
                "last row and its seal deleted": "tampered: seal 4: deleted",
                "row added": "tampered: row 5:", "row edited": "tampered: row 2: edited"}
    for name, statements in cases.items():
        db = library_log(tmp_path / f"{name.replace(' ', '_').replace(',', '')}.db")
        tamper_all(db, *statements)
        result = invoke("log", "verify", "--log-db", db)
        assert result.exit_code == 3 and expected[name] in result.stdout, (name, result.output)
        assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1


def test_an_emptied_log_is_exit_2_everywhere_and_stays_as_it_is(images, model, tmp_path):
    db = library_log(tmp_path / "audit.db")
    db.write_bytes(b"")
    for command in (("log", "verify"), ("log", "export", "--csv"), ("review", "S1", "--confirm")):
        result = invoke(*command, "--log-db", db)
        assert result.exit_code == 2 and result.stderr.count("\n") == 1, result.output
        assert "got 0 bytes, expected an audit log" in result.stderr
    result = classify(images, model, "--log-db", db)
    assert result.exit_code == 2 and result.stdout == "" and "got 0 bytes" in result.stderr
    assert db.read_bytes() == b""  # no new chain started in its place


def test_export_of_a_tampered_log_warns_and_exits_3(tmp_path):
    from test_audit import tamper_all

    db = library_log(tmp_path / "audit.db")
    tamper_all(db, "UPDATE entries SET label = 'Benign' WHERE id = 2")
    out = tmp_path / "export.csv"
    result = invoke("log", "export", "--csv", "-o", out, "--log-db", db)
    assert result.exit_code == 3 and "tampered: row 2: edited" in result.stderr
    assert result.stderr.splitlines()[-1].startswith("error: ") and "exported, but 1 problem(s)" in result.stderr
    assert len(list(csv.DictReader(out.open()))) == 4  # the rows are still given, for inspection


def test_since_out_of_range_is_one_line_and_exit_2(tmp_path):
    db = library_log(tmp_path / "audit.db")
    result = invoke("log", "export", "--csv", "--since", "0001-01-01T00:00+01:00", "--log-db", db)
    assert result.exit_code == 2 and result.stderr.count("\n") == 1 and "--since: got" in result.stderr


def test_setup_keys_gives_the_verification_key_once_and_verify_uses_it(tmp_path):
    db = tmp_path / "audit.db"
    given = invoke("log", "setup-keys", "--log-db", db)
    assert given.exit_code == 0 and given.stdout.startswith("allx-vk1:") and "keep it off this device" in given.stderr
    library_log(db)
    again = invoke("log", "setup-keys", "--log-db", db)
    assert again.exit_code == 2 and "already given" in again.stderr
    key_file = tmp_path / "vk.txt"
    forced = invoke("log", "setup-keys", "--force", "-o", key_file, "--log-db", db)
    assert forced.exit_code == 0 and oct(key_file.stat().st_mode & 0o777) == "0o600"
    for key in (given.stdout.strip(), key_file):
        checked = invoke("log", "verify", "--verify-key", key, "--log-db", db)
        assert checked.exit_code == 0 and "seals checked with the verification key" in checked.stdout
    bad = invoke("log", "verify", "--verify-key", "allx-vk1:nonsense", "--log-db", db)
    assert bad.exit_code == 2 and "--verify-key: got" in bad.stderr


def test_rows_spooled_while_the_log_was_locked_are_written_and_said(tmp_path):
    db = library_log(tmp_path / "audit.db")
    with AuditLog.open(db) as log:
        log.connection.execute("PRAGMA busy_timeout = 100")
        locker = sqlite3.connect(db, isolation_level=None)
        locker.execute("BEGIN EXCLUSIVE")
        assert log.append({"kind": "sample", "sample_id": "S1", "label": "Pro"}) is None
        locker.rollback()
        locker.close()
    result = invoke("review", "S1", "--confirm", "--log-db", db)
    assert result.exit_code == 0 and "1 row(s) kept while the log was locked were written to it now" in result.stderr
    with AuditLog.open(db, readonly=True) as log:
        assert [row["kind"] for row in log.rows()][-2:] == ["sample", "review"] and log.verify() == []


OPENED: list[list[str]] = []  # the recorders of opens_of; the audit hook below stays for the session


def record_open(event: str, args: tuple) -> None:
    if event == "open" and OPENED and isinstance(args[0], (str, bytes, os.PathLike)):
        OPENED[-1].append(os.path.realpath(os.fsdecode(args[0])))


sys.addaudithook(record_open)


def test_one_classify_run_reads_the_model_its_manifest_and_the_site_config_once(images, model, tmp_path):
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "model.tflite").write_bytes(model.read_bytes())
    (folder / "model.json").write_text(json.dumps({"format": "allx-tflite/1", "model_file": "model.tflite",
                                                   "labels": list(LABELS)}))
    site = tmp_path / "site.json"
    site.write_text(json.dumps({"require_operator": True, "log_db": str(tmp_path / "audit.db")}))
    OPENED.append([])
    try:
        result = invoke("classify", images / "field0.png", "-m", folder, "--operator", "ana", "--site-config", site,
                        "--json")
    finally:
        opened = OPENED.pop()
    assert result.exit_code == 0, result.output
    for path in (folder / "model.tflite", folder / "model.json", site):
        assert opened.count(os.path.realpath(path)) == 1, (path, opened)
    with AuditLog.open(tmp_path / "audit.db", readonly=True) as log:
        record = log.rows()[0]["record"]
    assert record["model_sha256"] == sha256_file(folder / "model.tflite")
    assert record["manifest_sha256"] == sha256_file(folder / "model.json")
