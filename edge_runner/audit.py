"""The audit log: every result allx-edge gives, and every review of it, as a hash-chained, sealed row in SQLite.

One file (stdlib sqlite3, WAL journal, synchronous=FULL): each write is one transaction taken with
BEGIN IMMEDIATE, so two processes writing at once queue on the lock (busy timeout) and lose nothing, and
a crash or power cut loses at most the row being written. Each row stores the hash of the previous row
and its own: sha256(previous hash + canonical JSON of its columns). Triggers refuse UPDATE and DELETE.

The chain alone has no secret: someone who can write the file could recompute it. So every write ends
with a seal of the chain's head under the log's forward-secure sealing key (`edge_runner.seal`: a key
file of mode 0600 in the user's config folder, never beside the log), and `verify` checks the rows, the
chain, the seals against the key (or against a verification key kept off the device) and names each
row changed, deleted, added or cut. A file of 0 bytes or cut short is a damaged log (DataError), never
the start of a new one; a new log is started only where no file exists (and no key says a log was there).
A row that cannot be written because another process holds the log goes to the spool
(`edge_runner.spool`), which the next write replays; a log file removed or replaced while open is
noticed before each write.

A record is a plain dict: `kind` ("field", "sample" or "review") and whatever the result's to_dict()
gave; the columns (sample_id, operator, image, image_sha256, label) are copied from its keys of those
names, the whole dict is kept as canonical JSON.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import sqlite3
from contextlib import contextmanager
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterator, Sequence, TextIO

from allx import layout
from allx.decision import AUDIT_KINDS, REVIEW_RECORD, SAMPLE_RECORD
from allx.edge_runner import seal, spool
from allx.edge_runner.audit_file import (BUSY_TIMEOUT_S, LogLocked, check_key_dir_apart, check_not_gone,
                                         check_whole, connect, file_identity, sqlite_errors)
from allx.edge_runner.seal import SealingKey, VerifyKey, rows_named
from allx.edge_runner.site import default_key_dir
from allx.errors import DataError, UsageError
from allx.files import SafeCsvWriter, create_temp

SCHEMA_VERSION = 2  # 2: seals (schema 1 logs are sealed from their head on at their next write)
FORMAT = "allx-audit"
GENESIS = "0" * 64
KINDS = AUDIT_KINDS
COLUMNS = ("id", "time_utc", "kind", "sample_id", "operator", "image", "image_sha256", "label", "record",
           "prev_hash", "row_hash")
INSERT_ROW = f"INSERT INTO entries ({', '.join(COLUMNS)}) VALUES ({', '.join('?' * len(COLUMNS))})"
CSV_FIELDS = ("model_file", "model_sha256", "manifest_sha256", "runtime", "allx_version", "ood", "ood_score",
              "quality", "probabilities", "operating_point", "action", "note")

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS entries (
    id INTEGER PRIMARY KEY, time_utc TEXT NOT NULL, kind TEXT NOT NULL, sample_id TEXT, operator TEXT,
    image TEXT, image_sha256 TEXT, label TEXT, record TEXT NOT NULL, prev_hash TEXT NOT NULL, row_hash TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS entries_sample ON entries (sample_id);
CREATE INDEX IF NOT EXISTS entries_time ON entries (time_utc);
CREATE TRIGGER IF NOT EXISTS entries_no_update BEFORE UPDATE ON entries
    BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
CREATE TRIGGER IF NOT EXISTS entries_no_delete BEFORE DELETE ON entries
    BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
"""
SEAL_COLUMNS = ("epoch", "head_id", "head_hash", "time_utc", "tag")
SEALS_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS seals (epoch INTEGER PRIMARY KEY, head_id INTEGER NOT NULL, "
    "head_hash TEXT NOT NULL, time_utc TEXT NOT NULL, tag TEXT NOT NULL)",
    "CREATE TRIGGER IF NOT EXISTS seals_no_update BEFORE UPDATE ON seals "
    "BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END",
    "CREATE TRIGGER IF NOT EXISTS seals_no_delete BEFORE DELETE ON seals "
    "BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END",
)
INSERT_SEAL = f"INSERT INTO seals ({', '.join(SEAL_COLUMNS)}) VALUES ({', '.join('?' * len(SEAL_COLUMNS))})"




def canonical_json(data) -> str:
    """Sorted keys, no spaces, no NaN: the same dict always gives the same text (and the same hash)."""
    try:
        return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError) as err:
        raise UsageError(f"audit record: got a value JSON cannot hold ({err}), expected plain numbers, "
                         "strings, lists and dicts") from None


def row_hash(row: dict) -> str:
    """sha256 of the previous row's hash and this row's columns (record as its stored text)."""
    body = {name: row[name] for name in COLUMNS if name != "row_hash"}
    return hashlib.sha256(canonical_json(body).encode("utf-8")).hexdigest()


def utc_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="microseconds").replace("+00:00", "Z")


def parse_since(since) -> str | None:
    """A date or date-time (naive = UTC) as the ISO text the rows' time_utc is compared with."""
    if since is None:
        return None
    try:
        moment = since if isinstance(since, datetime) else datetime.fromisoformat(str(since).replace("Z", "+00:00"))
        moment = moment.replace(tzinfo=timezone.utc) if moment.tzinfo is None else moment.astimezone(timezone.utc)
    except (ValueError, OverflowError):  # OverflowError: a time zone that moves it before year 1 or after 9999
        raise UsageError(f"--since: got {since!r}, expected a date like 2026-12-01 or 2026-12-01T08:00 "
                         "(years 1 to 9999 in UTC)") from None
    return moment.isoformat(timespec="microseconds").replace("+00:00", "Z")


class AuditLog:
    """An open audit log; use `AuditLog.open(path)` (a context manager: closes on exit)."""

    def __init__(self, connection: sqlite3.Connection, path: Path, readonly: bool, key_dir: Path):
        self.connection = connection
        self.path = path
        self.readonly = readonly
        self.key_dir = key_dir
        self.log_id = ""
        self.identity: tuple[int, int] | None = None  # (device, inode) of the file opened
        self.replayed = 0  # spooled rows this process wrote into the log
        self.warnings: list[str] = []  # what verify could not check (no key), said but not a failure

    @classmethod
    def open(cls, path: str | Path, readonly: bool = False, key_dir: str | Path | None = None) -> "AuditLog":
        """Open (creating it unless `readonly`) the log at `path`, its sealing key in `key_dir` (default: the
        user's config folder). A file that is not a log, is empty or cut short, a log of a newer schema, or
        (unless `readonly`) one this process cannot write or seal is a DataError, before any result."""
        path = Path(path)
        key_dir = Path(key_dir) if key_dir is not None else default_key_dir()
        if readonly and not path.is_file():
            raise DataError(f"{path}: no such audit log, expected the --log-db file allx-edge classify wrote")
        if path.is_dir():
            raise DataError(f"{path}: got a folder, expected the audit log's file name (e.g. {path / layout.AUDIT_DB})")
        if not readonly:
            check_key_dir_apart(path, key_dir)
            if not path.exists():
                check_not_gone(path, key_dir)
                with sqlite_errors(path):
                    try:
                        create_log(path, key_dir)
                    except OSError as err:
                        raise DataError(f"{path}: cannot create the audit log ({err.strerror or err}), expected a "
                                        "writable folder (or another --log-db)") from None
        check_whole(path)
        with sqlite_errors(path):
            connection = connect(path, readonly)
        log = cls(connection, path, readonly, key_dir)
        try:
            with sqlite_errors(path):
                connection.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")
                if not readonly:
                    connection.execute("PRAGMA journal_mode = WAL")
                    connection.execute("PRAGMA synchronous = FULL")  # a committed row survives a power cut
                log.check_schema()
                if not readonly:
                    log.probe_write()
                    log.identity = file_identity(path)
                    log.ready_to_write()
        except BaseException:
            connection.close()
            raise
        return log

    def close(self) -> None:
        self.connection.close()

    def __enter__(self) -> "AuditLog":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def check_schema(self) -> None:
        tables = {name for (name,) in self.connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        if not {"meta", "entries"} <= tables:
            raise DataError(f"{self.path}: a SQLite file with tables {sorted(tables)}, expected an allx audit log "
                            "(tables meta and entries); give another --log-db")
        meta = self.meta()
        if meta.get("format") != FORMAT:
            raise DataError(f"{self.path}: got format {meta.get('format')!r}, expected {FORMAT!r}")
        version = meta.get("schema_version", "")
        if not version.isdigit():
            raise DataError(f"{self.path}: got schema version {version!r}, expected a number")
        if int(version) > SCHEMA_VERSION:
            raise DataError(f"{self.path}: audit log schema {version} was written by a newer allx, expected "
                            f"schema <= {SCHEMA_VERSION}: upgrade allx-edge (the log was left untouched)")
        self.log_id = meta.get("log_id", "")

    def probe_write(self) -> None:
        """Write nothing, but as a writer would: SQLite opens a read-only file without a word and fails only
        at the first INSERT, which would come after the first result was classified."""
        with self.transaction(commit=False):
            self.connection.execute("UPDATE meta SET value = value WHERE key = 'head_id'")

    def ready_to_write(self) -> None:
        """Seal a schema-1 log from its head on, check the key is here, and replay rows left in the spool."""
        if int(self.meta()["schema_version"]) < SCHEMA_VERSION:
            self.upgrade()
        if seal.read_key(self.key_dir, self.log_id) is None:
            raise DataError(f"{self.path}: no sealing key for this log in {self.key_dir}, expected "
                            f"{seal.key_path(self.key_dir, self.log_id).name} there (the key made with the log): "
                            "without it no row can be sealed; check the log with --verify-key, or use another --log-db")
        self.flush_spool()

    def upgrade(self) -> None:
        """Schema 1 -> 2: a key and a first seal of the chain as it stands (its rows are provable from here on)."""
        log_id = secrets.token_hex(16)
        key = seal.new_key(self.key_dir, log_id, self.path.resolve())
        with self.transaction():
            if self.meta()["schema_version"] != "1":
                return  # another process upgraded it first
            for statement in SEALS_SCHEMA:
                self.connection.execute(statement)
            head_id, head_hash = self.last_row()
            first = {"epoch": 0, "head_id": head_id, "head_hash": head_hash, "time_utc": utc_now()}
            self.connection.execute(INSERT_SEAL, [*first.values(), seal.seal_tag(key.key, log_id, first)])
            self.connection.executemany("INSERT OR REPLACE INTO meta VALUES (?, ?)",
                                        [("schema_version", str(SCHEMA_VERSION)), ("log_id", log_id)])
        self.log_id = log_id

    def meta(self) -> dict[str, str]:
        with sqlite_errors(self.path):
            return dict(self.connection.execute("SELECT key, value FROM meta").fetchall())

    def last_row(self) -> tuple[int, str]:
        last = self.connection.execute("SELECT id, row_hash FROM entries ORDER BY id DESC LIMIT 1").fetchone()
        return (last[0], last[1]) if last else (0, GENESIS)

    def seals(self) -> list[dict] | None:
        """Every seal in epoch order; None for a schema-1 log (no seals table)."""
        if not self.connection.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'seals'").fetchone():
            return None
        cursor = self.connection.execute(f"SELECT {', '.join(SEAL_COLUMNS)} FROM seals ORDER BY epoch")
        return [dict(zip(SEAL_COLUMNS, values)) for values in cursor]

    @contextmanager
    def transaction(self, commit: bool = True) -> Iterator[None]:
        """BEGIN IMMEDIATE takes the write lock first, so the head read inside is the head written after."""
        self.connection.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self.connection.execute("ROLLBACK")
            raise
        self.connection.execute("COMMIT" if commit else "ROLLBACK")

    @contextmanager
    def sealed_write(self) -> Iterator[list]:
        """A write transaction that replays the spool, lets the caller add rows (`insert`), seals the new head
        with the next key, commits, and only then moves the key file forward. A crash between the commit and
        the key's move leaves a seal one epoch ahead of the key: the next write (and verify) accept it."""
        self.check_same_file()
        with sqlite_errors(self.path):
            self.connection.execute("BEGIN IMMEDIATE")
        pending = None
        try:
            with sqlite_errors(self.path), seal.key_lock(self.key_dir, self.log_id):
                key = self.current_key()
                head = list(self.sealed_head(key))
                pending = spool.take(self.path, key)
                self.replay(pending.lines, head)
                yield head
                following = key.forward()
                new_seal = {"epoch": following.epoch, "head_id": head[0], "head_hash": head[1], "time_utc": utc_now()}
                self.connection.execute(INSERT_SEAL, [*new_seal.values(),
                                                      seal.seal_tag(following.key, self.log_id, new_seal)])
                self.connection.executemany("UPDATE meta SET value = ? WHERE key = ?",
                                            [(str(head[0]), "head_id"), (head[1], "head_hash")])
                self.connection.execute("COMMIT")
                seal.save_key(following)
            self.replayed += len(pending.lines)
            pending.clear()
        except BaseException:
            if self.connection.in_transaction:
                self.connection.execute("ROLLBACK")
            if pending is not None:
                pending.release()
            raise

    def current_key(self) -> SealingKey:
        """The key of the log's last seal (caught up when a writer stopped between its commit and its key move);
        a DataError when the log's seals and the key disagree: the log was changed behind allx's back."""
        key = seal.read_key(self.key_dir, self.log_id)
        if key is None:
            raise DataError(f"{self.path}: no sealing key for this log in {self.key_dir}, expected the key made "
                            "with the log")
        last = self.connection.execute(f"SELECT {', '.join(SEAL_COLUMNS)} FROM seals ORDER BY epoch DESC LIMIT 1"
                                       ).fetchone()
        last = dict(zip(SEAL_COLUMNS, last)) if last else None
        if last is not None and last["epoch"] == key.epoch + 1 and seal.tag_matches(
                seal.evolve(key.key), self.log_id, last):
            key = key.forward()
            seal.save_key(key)
        if last is None or last["epoch"] != key.epoch or not seal.tag_matches(key.key, self.log_id, last):
            raise DataError(f"{self.path}: the log's last seal does not match its sealing key (seal "
                            f"{None if last is None else last['epoch']}, key at {key.epoch}), expected an untouched "
                            "log: nothing was written; `allx-edge log verify` names what changed")
        return key

    def sealed_head(self, key: SealingKey) -> tuple[int, str]:
        head = self.last_row()
        last = self.connection.execute("SELECT head_id, head_hash FROM seals WHERE epoch = ?", (key.epoch,)).fetchone()
        if tuple(last) != head:
            raise DataError(f"{self.path}: the last row ({head[0]}) is not the one sealed last ({last[0]}), expected "
                            "an untouched log: nothing was written; `allx-edge log verify` names what changed")
        return head

    def insert(self, head: list, record: dict, text: str) -> int:
        """One row after `head` (moved on to it)."""
        row = {"id": head[0] + 1, "time_utc": utc_now(),  # the log's clock, never the caller's
               "kind": record["kind"], **{name: text_or_none(record.get(name)) for name in
                                          ("sample_id", "operator", "image", "image_sha256", "label")},
               "record": text, "prev_hash": head[1]}
        row["row_hash"] = row_hash(row)
        self.connection.execute(INSERT_ROW, [row[name] for name in COLUMNS])
        head[:] = [row["id"], row["row_hash"]]
        return row["id"]

    def replay(self, lines: list[dict], head: list) -> None:
        """Spooled rows, in order, each once: the id of the last one replayed is kept in meta in the same
        transaction, so a crash before the spool is emptied never writes them twice."""
        done = self.connection.execute("SELECT value FROM meta WHERE key = 'spool_done'").fetchone()
        ids = [line["id"] for line in lines]
        start = ids.index(done[0]) + 1 if done and done[0] in ids else 0
        for line in lines[start:]:
            record = {**line["record"], "spooled_utc": line["spooled_utc"]}
            self.insert(head, record, canonical_json(record))
        if lines[start:]:
            self.connection.execute("INSERT OR REPLACE INTO meta VALUES ('spool_done', ?)", (ids[-1],))

    def check_same_file(self) -> None:
        """Refuse to write when the path no longer names the file opened: SQLite would go on writing to a
        deleted (or replaced) file that nobody will ever read."""
        try:
            now = file_identity(self.path)
        except FileNotFoundError:
            now = None
        if now != self.identity:
            what = "removed" if now is None else "replaced by another file"
            raise DataError(f"{self.path}: the audit log was {what} while this process had it open, expected the "
                            "file it opened: nothing more is written to it; restore the log, then start again")

    def append(self, record: dict, spool_when_locked: bool = True) -> int | None:
        """Add one result (kind "field" or "sample") or review (kind "review"); returns its row id, or None when
        another process held the log past the busy timeout and the row went to the spool (the next write
        replays it)."""
        if self.readonly:
            raise UsageError(f"{self.path}: opened read-only, expected AuditLog.open(path) to append")
        if not isinstance(record, dict) or record.get("kind") not in KINDS:
            got = record.get("kind") if isinstance(record, dict) else type(record).__name__
            raise UsageError(f"audit record: got kind {got!r}, expected one of {', '.join(KINDS)}")
        text = canonical_json(record)
        try:
            with self.sealed_write() as head:
                return self.insert(head, record, text)
        except LogLocked:
            if not spool_when_locked:
                raise
        spool.add(self.path, seal.read_key(self.key_dir, self.log_id), record, utc_now())
        return None

    def flush_spool(self) -> int:
        """Write the rows waiting in the spool now (before a reader looks, say); returns how many (0 while
        another process still holds the log: they stay in the spool)."""
        if self.readonly or not self.spooled():
            return 0
        before = self.replayed
        try:
            with self.sealed_write():
                pass
        except LogLocked:
            return 0
        return self.replayed - before

    def spooled(self) -> int:
        """Rows waiting in the spool for the next write."""
        try:
            with spool.spool_path(self.path).open(encoding="utf-8", errors="replace") as file:
                return max(0, sum(1 for line in file if line.endswith("\n")) - 1)
        except FileNotFoundError:
            return 0

    def export_verify_key(self, force: bool = False) -> VerifyKey:
        """The verification key of this log from the current seal on, given once (again with `force`)."""
        with sqlite_errors(self.path), self.transaction(commit=False), seal.key_lock(self.key_dir, self.log_id):
            key = self.current_key()
            if key.exported_epoch is not None and not force:
                raise UsageError(f"{self.path}: its verification key was already given (at seal {key.exported_epoch}), "
                                 "expected it to be given once: keep that one, or --force for one from this seal on")
            seal.save_key(replace(key, exported_epoch=key.epoch))
        return VerifyKey(self.log_id, key.epoch, key.key)

    def review(self, sample_id: str, override: str | None = None, note: str = "",
               operator: str | None = None) -> int:
        """A technologist's word on a logged sample: confirm (override None) or override with a label and a note."""
        sample_id = str(sample_id or "").strip()
        results = [row for row in self.rows(sample=sample_id) if row["kind"] != REVIEW_RECORD]
        if not results:
            raise DataError(f"{self.path}: got sample {sample_id!r}, expected a sample ID with results in the log "
                            "(allx-edge log export --csv lists them)")
        if override is not None:
            known = known_labels(results)
            if not str(override).strip() or (known and override not in known):
                raise UsageError(f"--override: got {override!r}, expected one of {', '.join(known) or 'a label'}")
            if not note.strip():
                raise UsageError("--override without --note: expected a note saying why the result is overridden")
        last = ([row for row in results if row["kind"] == SAMPLE_RECORD] or results)[-1]
        return self.append({"kind": REVIEW_RECORD, "sample_id": sample_id, "operator": operator,
                            "action": "confirm" if override is None else "override",
                            "label": last["label"] if override is None else override, "note": note,
                            "reviewed_label": last["label"], "reviewed_row": last["id"]}, spool_when_locked=False)

    def rows(self, since=None, sample: str | None = None) -> list[dict]:
        """Rows in order, each a dict of the columns with "record" parsed back into a dict."""
        return list(self.stream(since, sample))

    def stream(self, since=None, sample: str | None = None) -> Iterator[dict]:
        """The rows `rows` gives, one at a time from the cursor: a reader of a long log never holds it whole."""
        clauses, values = [], []
        if (moment := parse_since(since)) is not None:
            clauses.append("time_utc >= ?")
            values.append(moment)
        if sample is not None:
            clauses.append("sample_id = ?")
            values.append(str(sample))
        where = f" WHERE {' AND '.join(clauses)}" if clauses else ""
        with sqlite_errors(self.path):
            cursor = self.connection.execute(f"SELECT {', '.join(COLUMNS)} FROM entries{where} ORDER BY id", values)
            for row in cursor:
                yield parsed(dict(zip(COLUMNS, row)))

    def stream_values(self, keys: Sequence[str], since=None) -> Iterator[tuple]:
        """(time_utc, kind, sample_id, value at each record key...) per row, in order. SQLite's json_extract picks
        the keys out of each record (parsed once per row), so a long log is read without parsing whole records in
        Python. A dotted key reaches into an object ("quality.ok"); values come as SQLite gives them: true/false
        as 1/0, a list or object as its JSON text, a missing key as None."""
        clauses, values = [], ["$." + key for key in keys]
        if (moment := parse_since(since)) is not None:
            clauses.append("time_utc >= ?")
            values.append(moment)
        where = f" WHERE {' AND '.join(clauses)}" if clauses else ""
        picks = "".join(", json_extract(record, ?)" for _ in keys)
        with sqlite_errors(self.path):
            yield from self.connection.execute(
                f"SELECT time_utc, kind, sample_id{picks} FROM entries{where} ORDER BY id", values)

    def export_csv(self, stream: TextIO, since=None) -> int:
        """One CSV line per row (the columns, the usual record fields, the whole record as JSON); returns rows.
        Text cells a spreadsheet would run as a formula are neutralised (allx.files.csv_safe)."""
        writer = SafeCsvWriter(stream)
        header = [name for name in COLUMNS if name not in ("record", "prev_hash", "row_hash")]
        writer.writerow([*header, *CSV_FIELDS, "record", "row_hash"])
        rows = self.rows(since=since)
        for row in rows:
            record = row["record"]
            writer.writerow([*(csv_cell(row[name]) for name in header),
                             *(csv_cell(record.get(name)) for name in CSV_FIELDS), canonical_json(record),
                             row["row_hash"]])
        return len(rows)

    def verify(self, verify_key: VerifyKey | None = None) -> list[str]:
        """Problems found, each naming a row or seal ("row 7: edited ...", "row 9: not sealed ..."); empty when
        the log is intact. The seals are checked with `verify_key` (every seal from its epoch on), else with
        this device's sealing key (the last seal); with neither, `warnings` says the seals went unchecked.
        A file SQLite finds damaged is a DataError, not a list of problems."""
        problems: list[str] = []
        self.warnings = []
        hashes = {0: GENESIS}
        previous_id, previous_hash = 0, GENESIS
        with sqlite_errors(self.path):
            damage = [text for (text,) in self.connection.execute("PRAGMA quick_check") if text != "ok"]
            if damage:
                raise DataError(f"{self.path}: damaged ({damage[0]}), expected an intact SQLite file: keep it for "
                                "inspection and give another --log-db")
            cursor = self.connection.execute(f"SELECT {', '.join(COLUMNS)} FROM entries ORDER BY id")
            for values in cursor:
                row = dict(zip(COLUMNS, values))
                problems += row_problems(row, previous_id, previous_hash)
                previous_id, previous_hash = row["id"], row["row_hash"]
                hashes[row["id"]] = row["row_hash"]
            meta = self.meta()
            seals = self.seals()
        if seals is None:
            return problems + head_problems(meta, previous_id, previous_hash) + [
                f"{rows_named(1, previous_id) if previous_id else 'the log'}: not sealed (schema 1, written before "
                "allx sealed its logs): the hash chain holds, but anyone who could write the file could have "
                "recomputed it; the next write seals it from there on"]
        if not seals:
            return problems + ["seals: none left (all deleted), expected at least the log's first seal"]
        problems += seal.gap_problems(seals) + seal.chain_seal_problems(seals, hashes, previous_id, pinpoint=not problems)
        if verify_key is not None:
            return problems + seal.verify_key_problems(seals, verify_key, self.log_id)
        key = seal.read_key(self.key_dir, self.log_id)
        if key is None:
            self.warnings.append(f"seals not checked: no sealing key for this log in {self.key_dir} (off the device?), "
                                 "expected this device's key or --verify-key KEY; the rows and the hash chain were "
                                 "checked")
            return problems
        return problems + seal.device_key_problems(seals[-1], key, self.log_id)


def head_problems(meta: dict, last_id: int, last_hash: str) -> list[str]:
    """A schema-1 log: the head recorded in meta against the last row."""
    head_id, head_hash = int(meta.get("head_id", "0") or 0), meta.get("head_hash", GENESIS)
    if head_id > last_id:
        return [f"{rows_named(last_id + 1, head_id)}: deleted (the log's head is row {head_id}, the last row left "
                f"is {last_id})"]
    if head_id < last_id or head_hash != last_hash:
        return [f"row {last_id}: the log's head (row {head_id}) does not match the last row"]
    return []


def row_problems(row: dict, previous_id: int, previous_hash: str) -> list[str]:
    problems = []
    if row["id"] > previous_id + 1:
        problems.append(f"{rows_named(previous_id + 1, row['id'] - 1)}: deleted")
    elif row["prev_hash"] != previous_hash:
        problems.append(f"row {row['id']}: does not chain to row {previous_id} (row {previous_id} was changed "
                        "or replaced)")
    if row_hash(row) != row["row_hash"]:
        problems.append(f"row {row['id']}: edited (its content no longer matches its hash)")
    return problems


def parsed(row: dict) -> dict:
    try:
        record = json.loads(row["record"])
    except (TypeError, ValueError):
        record = {}
    return {**row, "record": record if isinstance(record, dict) else {}}


def known_labels(rows: list[dict]) -> list[str]:
    """The class names the logged results of a sample offer (their probabilities' keys), if they say."""
    for row in rows:
        probabilities = row["record"].get("probabilities")
        if isinstance(probabilities, dict) and probabilities:
            return list(probabilities)
    return []


def text_or_none(value) -> str | None:
    return None if value is None else str(value)


def csv_cell(value):
    """A record value as a CSV cell: numbers stay numbers (so csv_safe leaves a negative one alone)."""
    if value is None:
        return ""
    if isinstance(value, (dict, list)):
        return canonical_json(value)
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, (int, float)):
        return value
    return str(value)


def create_log(path: Path, key_dir: Path) -> None:
    """A new log, whole (schema, key, first seal of the empty chain) before its name appears: built under a
    temp name and linked into place, so no one ever sees the path as an empty file (which would be a wiped
    log). Two processes creating it at once: the first link wins, the other's file and key are never used."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temp, handle = create_temp(path)
    os.close(handle)
    try:
        log_id = secrets.token_hex(16)
        key = seal.new_key(key_dir, log_id, path.resolve())
        first = {"epoch": 0, "head_id": 0, "head_hash": GENESIS, "time_utc": utc_now()}
        first["tag"] = seal.seal_tag(key.key, log_id, first)
        meta = [("format", FORMAT), ("schema_version", str(SCHEMA_VERSION)), ("created_utc", utc_now()),
                ("head_id", "0"), ("head_hash", GENESIS), ("log_id", log_id)]
        connection = sqlite3.connect(str(temp), isolation_level=None)
        try:
            connection.execute("PRAGMA journal_mode = WAL")
            connection.executescript(f"BEGIN;\n{SCHEMA}" + "".join(f"{statement};\n" for statement in SEALS_SCHEMA)
                                     + "COMMIT;")
            with connection:
                connection.executemany("INSERT INTO meta VALUES (?, ?)", meta)
                connection.execute(INSERT_SEAL, [first[name] for name in SEAL_COLUMNS])
        finally:
            connection.close()
        try:
            os.link(temp, path)
        except FileExistsError:
            pass  # another process made it first: theirs is the log
        except OSError:  # a file system without hard links (FAT on a USB stick): rename, unless one appeared
            if not path.exists():
                os.rename(temp, path)
    finally:
        temp.unlink(missing_ok=True)




