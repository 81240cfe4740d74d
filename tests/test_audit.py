"""The audit log: append-only rows, hash chain, reviews, export, verify, and every bad log file as one DataError."""

import io
import json
import os
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import textwrap

import pytest

from allx.errors import DataError, UsageError
from allx.edge_runner.audit import SCHEMA_VERSION, AuditLog

LABELS = ("Benign", "Early", "Pre", "Pro")


def field(sample="S1", image="f1.png", label="Pro", operator="ana"):
    probabilities = dict(zip(LABELS, (0.01, 0.02, 0.07, 0.9)))
    return {"kind": "field", "sample_id": sample, "operator": operator, "image": image,
            "image_sha256": "ab" * 32, "label": label, "probabilities": probabilities, "ood": False,
            "ood_score": 3.5, "quality": {"ok": True}, "model_sha256": "cd" * 32, "manifest_sha256": "ef" * 32,
            "runtime": "ai_edge_litert 1.2", "allx_version": "0.1.0", "operating_point": {"threshold": 0.3}}


def sample(sample="S1", label="Pro"):
    return {"kind": "sample", "sample_id": sample, "operator": "ana", "label": label, "verdict": "malignant",
            "fields_used": 3, "fields_set_aside": []}


@pytest.fixture
def log_path(tmp_path):
    path = tmp_path / "audit.db"
    with AuditLog.open(path) as log:
        for image in ("f1.png", "f2.png", "f3.png"):
            log.append(field(image=image))
        log.append(sample())
        log.append(field(sample="S2", label="Benign"))
    return path


def tamper(path, *statements):
    """Change the file behind the triggers' back, as someone with the sqlite3 shell could."""
    connection = sqlite3.connect(path)
    connection.execute("DROP TRIGGER entries_no_update")
    connection.execute("DROP TRIGGER entries_no_delete")
    for statement in statements:
        connection.execute(statement)
    connection.commit()
    connection.close()


def test_rows_keep_the_record_and_chain(log_path):
    with AuditLog.open(log_path, readonly=True) as log:
        rows = log.rows()
        assert [row["id"] for row in rows] == [1, 2, 3, 4, 5]
        assert rows[0]["prev_hash"] == "0" * 64 and rows[1]["prev_hash"] == rows[0]["row_hash"]
        assert rows[0]["record"]["probabilities"]["Pro"] == 0.9 and rows[0]["image"] == "f1.png"
        assert rows[0]["time_utc"].endswith("Z")
        assert [row["kind"] for row in log.rows(sample="S1")] == ["field"] * 3 + ["sample"]
        assert log.verify() == []
        assert log.meta()["schema_version"] == str(SCHEMA_VERSION)


def test_the_file_refuses_update_and_delete(log_path):
    connection = sqlite3.connect(log_path)
    for statement in ("UPDATE entries SET label = 'Benign' WHERE id = 1", "DELETE FROM entries WHERE id = 2"):
        with pytest.raises(sqlite3.IntegrityError, match="append-only"):
            connection.execute(statement)
    connection.close()


def test_verify_names_an_edited_row(log_path):
    tamper(log_path, "UPDATE entries SET label = 'Benign' WHERE id = 2")
    with AuditLog.open(log_path, readonly=True) as log:
        assert log.verify() == ["row 2: edited (its content no longer matches its hash)"]


def test_verify_names_a_row_edited_with_its_hash_recomputed(log_path):
    from allx.edge_runner.audit import row_hash

    with AuditLog.open(log_path, readonly=True) as log:
        row = log.rows()[2]
    forged = {**row, "record": row["record"] | {"label": "Benign"}}
    forged["record"] = json.dumps(forged["record"])
    tamper(log_path, f"UPDATE entries SET record = '{forged['record']}', row_hash = '{row_hash(forged)}' WHERE id = 3")
    with AuditLog.open(log_path, readonly=True) as log:
        assert log.verify() == ["row 4: does not chain to row 3 (row 3 was changed or replaced)"]


@pytest.mark.parametrize("deleted, expected", [("id = 3", "row 3: deleted"), ("id IN (2, 3)", "rows 2-3: deleted"),
                                               ("id = 5", "row 5: deleted")])
def test_verify_names_a_deleted_row(log_path, deleted, expected):
    tamper(log_path, f"DELETE FROM entries WHERE {deleted}")
    with AuditLog.open(log_path, readonly=True) as log:
        problems = log.verify()
    assert len(problems) == 1 and problems[0].startswith(expected)


def test_review_confirm_and_override(log_path):
    with AuditLog.open(log_path) as log:
        log.review("S1", operator="ben")
        log.review("S1", override="Pre", note="blasts look like Pre-B", operator="ben")
        reviews = [row for row in log.rows(sample="S1") if row["kind"] == "review"]
        assert [(r["record"]["action"], r["label"], r["operator"]) for r in reviews] == [
            ("confirm", "Pro", "ben"), ("override", "Pre", "ben")]
        assert reviews[1]["record"]["note"] == "blasts look like Pre-B" and reviews[0]["record"]["reviewed_row"] == 4
        with pytest.raises(DataError, match="got sample 'S9', expected a sample ID with results"):
            log.review("S9")
        with pytest.raises(UsageError, match="got 'Blast', expected one of Benign, Early, Pre, Pro"):
            log.review("S1", override="Blast", note="x")
        with pytest.raises(UsageError, match="without --note"):
            log.review("S1", override="Pre")
        assert log.verify() == []


def test_export_csv_and_since(log_path):
    with AuditLog.open(log_path, readonly=True) as log:
        stream = io.StringIO()
        assert log.export_csv(stream) == 5
        lines = stream.getvalue().splitlines()
        assert lines[0].startswith("id,time_utc,kind,sample_id,operator,image,image_sha256,label,model_file")
        assert len(lines) == 6 and "f2.png" in lines[2]
        assert log.export_csv(io.StringIO(), since="2999-01-01") == 0
        assert log.export_csv(io.StringIO(), since="2000-01-01T00:00") == 5
        with pytest.raises(UsageError, match="--since: got 'yesterday'"):
            log.rows(since="yesterday")


def test_bad_records_are_refused(tmp_path):
    with AuditLog.open(tmp_path / "a.db") as log:
        with pytest.raises(UsageError, match="got kind 'frame'"):
            log.append({"kind": "frame"})
        with pytest.raises(UsageError, match="JSON cannot hold"):
            log.append({"kind": "field", "score": float("nan")})
        assert log.rows() == []


def test_corrupt_foreign_and_newer_files_are_one_data_error(tmp_path, log_path):
    garbage = tmp_path / "garbage.db"
    garbage.write_bytes(b"not a database " * 100)
    with pytest.raises(DataError, match="garbage.db: damaged or not an audit log"):
        AuditLog.open(garbage)
    foreign = tmp_path / "foreign.db"
    sqlite3.connect(foreign).execute("CREATE TABLE t (x)").connection.commit()
    with pytest.raises(DataError, match=r"tables \['t'\], expected an allx audit log"):
        AuditLog.open(foreign)
    connection = sqlite3.connect(log_path)
    connection.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'", (str(SCHEMA_VERSION + 1),))
    connection.commit()
    connection.close()
    with pytest.raises(DataError, match="written by a newer allx"):
        AuditLog.open(log_path)
    with pytest.raises(DataError, match="no such audit log"):
        AuditLog.open(tmp_path / "missing.db", readonly=True)
    with pytest.raises(DataError, match="got a folder"):
        AuditLog.open(tmp_path)


def test_a_truncated_file_is_one_data_error(tmp_path, log_path):
    data = log_path.read_bytes()
    broken = tmp_path / "broken.db"
    broken.write_bytes(data[:len(data) // 2] + b"\0" * 512 + data[len(data) // 2 + 512:])
    with pytest.raises(DataError, match="broken.db"):
        with AuditLog.open(broken, readonly=True) as log:
            log.rows(), log.verify()


def as_unprivileged(args) -> list[str]:
    """Root writes read-only files anyway; in a fresh user namespace (`unshare -U`) it no longer can."""
    if os.geteuid() != 0:
        return list(args)
    if shutil.which("unshare") is None or subprocess.run(["unshare", "-U", "true"]).returncode != 0:
        pytest.skip("running as root without user namespaces: a read-only file cannot be simulated")
    return ["unshare", "-U", *args]


def test_a_read_only_file_is_refused_at_open(log_path):
    os.chmod(log_path, 0o444)
    opener = "import sys; from allx.edge_runner.audit import AuditLog; AuditLog.open(sys.argv[1])"
    result = subprocess.run(as_unprivileged([sys.executable, "-c", opener, str(log_path)]), capture_output=True,
                            text=True, timeout=60)
    assert result.returncode != 0 and "DataError" in result.stderr
    assert "cannot write the audit log (attempt to write a readonly database)" in result.stderr
    reader = "import sys; from allx.edge_runner.audit import AuditLog; AuditLog.open(sys.argv[1], readonly=True)"
    readable = subprocess.run(as_unprivileged([sys.executable, "-c", reader, str(log_path)]), capture_output=True,
                              text=True, timeout=60)
    assert readable.returncode == 0, readable.stderr  # verify and export still read it


WRITER = textwrap.dedent("""
    import sys
    from allx.edge_runner.audit import AuditLog
    log = AuditLog.open(sys.argv[1])
    for i in range(int(sys.argv[3])):
        row = log.append({"kind": "field", "sample_id": sys.argv[2], "image": f"{i}.png", "label": "Pro"})
        print(row, flush=True)
""")


def test_two_processes_writing_at_once_lose_nothing(tmp_path):
    path = tmp_path / "shared.db"
    writers = [subprocess.Popen([sys.executable, "-c", WRITER, str(path), name, "150"], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True) for name in ("A", "B")]
    outputs = [writer.communicate(timeout=120) for writer in writers]
    assert [writer.returncode for writer in writers] == [0, 0], outputs
    with AuditLog.open(path, readonly=True) as log:
        rows = log.rows()
        assert log.verify() == []
    assert len(rows) == 300 and sorted(row["id"] for row in rows) == list(range(1, 301))
    assert {name: sum(row["sample_id"] == name for row in rows) for name in "AB"} == {"A": 150, "B": 150}


def test_a_killed_writer_loses_at_most_the_row_being_written(tmp_path):
    path = tmp_path / "killed.db"
    writer = subprocess.Popen([sys.executable, "-c", WRITER, str(path), "K", "100000"], stdout=subprocess.PIPE,
                              text=True)
    acknowledged = [int(writer.stdout.readline()) for _ in range(40)]
    writer.send_signal(signal.SIGKILL)
    writer.wait(timeout=30)
    with AuditLog.open(path) as log:  # the next run opens it as usual and goes on
        assert log.verify() == []
        rows = log.rows()
        assert [row["id"] for row in rows] == list(range(1, len(rows) + 1))
        assert len(rows) >= acknowledged[-1]  # every row whose append returned is there
        log.append({"kind": "field", "sample_id": "after"})
        assert log.verify() == []


def test_sqlite_failures_read_as_one_line_each(tmp_path):
    from allx.edge_runner.audit import sqlite_errors

    for text, expected in (("attempt to write a readonly database", "cannot write the audit log"),
                           ("database is locked", "still locked by another process"),
                           ("database disk image is malformed", "damaged or not an audit log")):
        with pytest.raises(DataError, match=expected):
            with sqlite_errors(tmp_path / "a.db"):
                raise sqlite3.OperationalError(text)


# --- seals: what someone who can write the file, but not read the key, can no longer do unnoticed ---

def tamper_all(path, *statements):
    """As tamper(), with the seals' triggers dropped too."""
    connection = sqlite3.connect(path)
    for trigger in ("entries_no_update", "entries_no_delete", "seals_no_update", "seals_no_delete"):
        connection.execute(f"DROP TRIGGER IF EXISTS {trigger}")
    for statement in statements:
        connection.execute(*statement) if isinstance(statement, tuple) else connection.execute(statement)
    connection.commit()
    connection.close()


def verify(path, verify_key=None):
    with AuditLog.open(path, readonly=True) as log:
        return log.verify(verify_key)


def test_every_write_is_sealed_and_the_key_moves_forward(log_path):
    from allx.edge_runner.seal import read_key
    from allx.edge_runner.site import default_key_dir

    with AuditLog.open(log_path, readonly=True) as log:
        seals, log_id = log.seals(), log.log_id
    key = read_key(default_key_dir(), log_id)
    assert [s["epoch"] for s in seals] == list(range(6)) and [s["head_id"] for s in seals] == list(range(6))
    assert key.epoch == 5 and oct(key.path.stat().st_mode & 0o777) == "0o600"
    assert oct(key.path.parent.stat().st_mode & 0o777) == "0o700" and key.path.parent != log_path.parent


def test_deleting_the_last_rows_and_fixing_the_head_is_found(log_path):
    """The campaign's first attack: triggers dropped, last row deleted, meta's head set to the new last row."""
    with AuditLog.open(log_path, readonly=True) as log:
        row4 = log.rows()[3]
    tamper_all(log_path, "DELETE FROM entries WHERE id = 5",
               ("UPDATE meta SET value = ? WHERE key = 'head_id'", ("4",)),
               ("UPDATE meta SET value = ? WHERE key = 'head_hash'", (row4["row_hash"],)))
    assert verify(log_path) == ["row 5: deleted (seal 5 covers row 5, the last row left is 4)"]
    tamper_all(log_path, "DELETE FROM seals WHERE epoch = 5")  # and the seal that named it
    assert verify(log_path) == ["seal 5: deleted (the sealing key is at seal 5, the log's last seal is 4): "
                                "rows were cut from the end"]


def test_a_forged_row_with_a_correct_hash_is_found(log_path):
    from allx.edge_runner.audit import canonical_json, row_hash

    with AuditLog.open(log_path, readonly=True) as log:
        last = log.rows()[-1]
    forged = {"id": 6, "time_utc": last["time_utc"], "kind": "review", "sample_id": "S1", "operator": "eve",
              "image": None, "image_sha256": None, "label": "Benign",
              "record": canonical_json({"kind": "review", "label": "Benign"}), "prev_hash": last["row_hash"]}
    forged["row_hash"] = row_hash(forged)
    tamper_all(log_path, (f"INSERT INTO entries VALUES ({', '.join('?' * 11)})", tuple(forged.values())))
    assert verify(log_path) == ["row 6: not sealed (added without the sealing key)"]
    tamper_all(log_path, ("INSERT INTO seals VALUES (6, 6, ?, ?, ?)", (forged["row_hash"], last["time_utc"], "0" * 64)))
    assert verify(log_path) == ["seal 6: forged (its tag does not match this device's sealing key)"]


def rechained_edit(path) -> tuple[list, dict[int, str]]:
    """The UPDATE statements that relabel row 2 as Benign and recompute the hash chain from there, and every
    row's hash after that edit (row id -> hash)."""
    from allx.edge_runner.audit import row_hash

    statements, previous, heads = [], None, {}
    with AuditLog.open(path, readonly=True) as log:
        for row in log.rows():
            if row["id"] >= 2:
                record = row["record"] | ({"label": "Benign"} if row["id"] == 2 else {})
                row = {**row, "record": json.dumps(record), "prev_hash": previous}
                row["row_hash"] = row_hash(row)
                statements.append(("UPDATE entries SET record = ?, prev_hash = ?, row_hash = ? WHERE id = ?",
                                   (row["record"], row["prev_hash"], row["row_hash"], row["id"])))
            previous = heads[row["id"]] = row["row_hash"]
    return statements, heads


def test_an_edit_with_the_chain_recomputed_is_found(log_path):
    statements, heads = rechained_edit(log_path)
    previous = heads[max(heads)]
    tamper_all(log_path, *statements)
    assert verify(log_path) == ["row 2: changed after it was sealed (seal 2 holds another hash): rows were "
                                "rewritten and the hash chain recomputed"]
    tamper_all(log_path, ("UPDATE seals SET head_hash = ? WHERE epoch = 5", (previous,)))  # the last seal too
    assert verify(log_path)[-1] == "seal 5: forged (its tag does not match this device's sealing key)"


def test_an_emptied_or_cut_file_is_damaged_and_never_a_new_log(tmp_path, log_path):
    cut = tmp_path / "cut.db"
    cut.write_bytes(log_path.read_bytes()[:8192])
    with pytest.raises(DataError, match="cut.db: got 8192 bytes, expected .* the file was cut short"):
        AuditLog.open(cut, readonly=True)
    log_path.write_bytes(b"")
    for readonly in (True, False):
        with pytest.raises(DataError, match="audit.db: got 0 bytes, expected an audit log: the file was emptied"):
            AuditLog.open(log_path, readonly=readonly)
    assert log_path.read_bytes() == b""  # nothing started anew in its place


def test_a_removed_log_is_not_silently_started_anew(log_path):
    log_path.unlink()
    with pytest.raises(DataError, match="no such file, but the sealing key .* belongs to a log written here"):
        AuditLog.open(log_path)
    assert not log_path.exists()


def test_the_verification_key_proves_old_rows_even_against_root_on_the_device(log_path, tmp_path):
    """Root copies the device key (at seal 5), rewrites row 2 and reseals every seal with it: the device's own
    key is fooled, the verification key given at seal 0 is not."""
    from allx.edge_runner.seal import VerifyKey, read_key, seal_tag
    from allx.edge_runner.site import default_key_dir

    fresh = tmp_path / "fresh.db"
    with AuditLog.open(fresh) as log:
        verify_key = log.export_verify_key()
        with pytest.raises(UsageError, match="already given"):
            log.export_verify_key()
        for image in ("a.png", "b.png", "c.png"):
            log.append(field(image=image))
        log_id = log.log_id
    assert verify_key.epoch == 0 and verify(fresh, verify_key=verify_key) == []
    stolen = read_key(default_key_dir(), log_id)
    statements, heads = rechained_edit(fresh)
    with AuditLog.open(fresh, readonly=True) as log:
        for item in log.seals()[2:]:  # the seals of rows 2 on, retagged with the stolen key
            item = {**item, "head_hash": heads[item["head_id"]]}
            statements.append(("UPDATE seals SET head_hash = ?, tag = ? WHERE epoch = ?",
                               (item["head_hash"], seal_tag(stolen.key, log_id, item), item["epoch"])))
    tamper_all(fresh, *statements)
    assert verify(fresh) == []  # root on the device fools the device's own check (the README says so)
    assert verify(fresh, verify_key=verify_key) == [
        "seal 2: forged (its tag does not match the verification key): the rows it covers were rewritten by "
        "someone who had the device's later key"]
    with pytest.raises(UsageError, match="got a key of log"):
        verify(fresh, verify_key=VerifyKey("ab" * 16, 0, b"k" * 32))


def test_off_the_device_the_seals_are_checked_with_the_verification_key_only(log_path, tmp_path):
    with AuditLog.open(log_path, readonly=True, key_dir=tmp_path / "elsewhere") as log:
        assert log.verify() == [] and "seals not checked" in log.warnings[0]


def test_a_log_of_schema_1_is_sealed_from_its_head_at_its_next_write(tmp_path):
    path = tmp_path / "old.db"
    with AuditLog.open(path) as log:
        log.append(field())
    tamper_all(path, "DROP TABLE seals", "DELETE FROM meta WHERE key = 'log_id'",
               "UPDATE meta SET value = '1' WHERE key = 'schema_version'")
    assert verify(path)[-1].startswith("row 1: not sealed (schema 1")
    with AuditLog.open(path) as log:
        log.append(field(image="f2.png"))
        assert log.meta()["schema_version"] == str(SCHEMA_VERSION) and log.verify() == []


def test_a_log_removed_or_replaced_while_open_is_never_written_to(tmp_path):
    path = tmp_path / "open.db"
    with AuditLog.open(path) as log:
        log.append(field())
        path.rename(tmp_path / "moved.db")
        with pytest.raises(DataError, match="open.db: the audit log was removed while this process had it open"):
            log.append(field(image="lost.png"))
        shutil.copy(tmp_path / "moved.db", path)
        with pytest.raises(DataError, match="was replaced by another file"):
            log.append(field(image="lost.png"))


# --- export and read-only copies ---

def test_since_out_of_range_is_a_usage_error():
    from allx.edge_runner.audit import parse_since

    for since in ("0001-01-01T00:00+01:00", "9999-12-31T23:59-01:00"):
        with pytest.raises(UsageError, match=re.escape(f"--since: got '{since}', expected a date")):
            parse_since(since)


def test_exported_csv_cells_never_run_as_formulas(tmp_path):
    with AuditLog.open(tmp_path / "a.db") as log:
        log.append({**field(sample='=HYPERLINK("http://x.example","y")', operator="+SUM(1,2)"), "ood_score": -1.5})
        stream = io.StringIO()
        log.export_csv(stream)
    import csv

    header, row = list(csv.reader(io.StringIO(stream.getvalue())))
    cells = dict(zip(header, row))
    assert cells["sample_id"] == '\'=HYPERLINK("http://x.example","y")' and cells["operator"] == "'+SUM(1,2)"
    assert cells["ood_score"] == "-1.5"


def test_a_log_in_a_read_only_folder_is_verified_and_exported(log_path, tmp_path):
    archive = tmp_path / "archive"
    archive.mkdir()
    shutil.copy(log_path, archive / "audit.db")
    archive.chmod(0o555)
    reader = textwrap.dedent("""
        import sys
        from allx.edge_runner.audit import AuditLog
        with AuditLog.open(sys.argv[1], readonly=True) as log:
            print(len(log.rows()), log.verify())
    """)
    try:
        result = subprocess.run(as_unprivileged([sys.executable, "-c", reader, str(archive / "audit.db")]),
                                capture_output=True, text=True, timeout=60)
    finally:
        archive.chmod(0o755)
    assert result.returncode == 0 and result.stdout.split() == ["5", "[]"], result.stderr


def test_a_fifo_as_the_log_is_one_line_never_a_hang(tmp_path):
    fifo = tmp_path / "fifo.db"
    os.mkfifo(fifo)
    with pytest.raises(DataError, match="fifo.db: not a regular file"):
        AuditLog.open(fifo)
