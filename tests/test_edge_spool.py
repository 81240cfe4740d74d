"""Rows that wait for a locked audit log: spooled, sealed, replayed in order by the next write; a forged line refused."""

import sqlite3

import pytest
from test_audit import field

from allx.errors import DataError
from allx.edge_runner.audit import AuditLog


def hold_lock(path):
    locker = sqlite3.connect(path, isolation_level=None)
    locker.execute("BEGIN EXCLUSIVE")
    return locker


def test_rows_for_a_locked_log_are_spooled_and_replayed_in_order(tmp_path):
    path = tmp_path / "busy.db"
    with AuditLog.open(path) as log:
        log.append(field(image="before.png"))
        log.connection.execute("PRAGMA busy_timeout = 100")
        locker = hold_lock(path)
        assert [log.append(field(image=name)) for name in ("w1.png", "w2.png")] == [None, None]
        assert log.spooled() == 2
        with pytest.raises(DataError, match="still locked"):
            log.review("S1")  # a review counts only once it is in the log: never spooled
        locker.rollback()
        locker.close()
    with AuditLog.open(path) as log:  # the next start (a new process) replays them first and says how many
        assert log.replayed == 2 and log.spooled() == 0
        log.append(field(image="after.png"))
        rows = log.rows()
        assert [row["image"] for row in rows] == ["before.png", "w1.png", "w2.png", "after.png"]
        assert "spooled_utc" in rows[1]["record"] and log.verify() == []


def test_a_spool_line_this_device_did_not_write_is_refused(tmp_path):
    from allx.edge_runner.spool import spool_path

    path = tmp_path / "busy.db"
    with AuditLog.open(path) as log:
        log.connection.execute("PRAGMA busy_timeout = 100")
        locker = hold_lock(path)
        log.append(field(image="kept.png"))
        locker.rollback()
        locker.close()
    spool = spool_path(path)
    spool.write_text(spool.read_text().replace("kept.png", "forged.png"))
    with pytest.raises(DataError, match=r"busy.db.spool: line 2: got a row this device did not write"):
        AuditLog.open(path)
