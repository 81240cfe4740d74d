"""The audit log's file before SQLite opens it: emptied, cut short or foreign is damaged; the key kept apart."""

import sqlite3

import pytest

from allx.edge_runner.audit_file import check_key_dir_apart, check_whole, sqlite_errors
from allx.errors import DataError, UsageError


def test_a_whole_sqlite_file_passes_and_an_emptied_cut_or_foreign_one_is_damaged(tmp_path):
    path = tmp_path / "audit.db"
    connection = sqlite3.connect(path)
    connection.execute("CREATE TABLE t (x)")
    connection.executemany("INSERT INTO t VALUES (?)", [("x" * 500,)] * 50)
    connection.commit()
    connection.close()
    check_whole(path)
    whole = path.read_bytes()
    for damaged, message in ((b"", "got 0 bytes"), (whole[:len(whole) // 2], "cut short"),
                             (b"not a log" * 20, "no SQLite header")):
        path.write_bytes(damaged)
        with pytest.raises(DataError, match=message):
            check_whole(path)


def test_the_sealing_keys_may_not_sit_beside_the_log(tmp_path):
    check_key_dir_apart(tmp_path / "logs" / "audit.db", tmp_path / "keys")
    with pytest.raises(UsageError, match="expected another folder"):
        check_key_dir_apart(tmp_path / "audit.db", tmp_path)


def test_sqlite_failures_are_one_data_error(tmp_path):
    with pytest.raises(DataError, match="audit.db"):
        with sqlite_errors(tmp_path / "audit.db"):
            raise sqlite3.DatabaseError("database disk image is malformed")
