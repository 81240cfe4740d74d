"""The audit log: every result allx-edge gives, and every review of it, as a hash-chained row in SQLite.

One file (stdlib sqlite3, WAL journal, synchronous=FULL): each append is one transaction taken with
BEGIN IMMEDIATE, so two processes writing at once queue on the lock (busy timeout) and lose nothing, and
a crash or power cut loses at most the row being written. Each row stores the hash of the previous row
and its own: sha256(previous hash + canonical JSON of its columns). Triggers refuse UPDATE and DELETE;
`verify` finds a row changed or removed behind their back (with the sqlite3 shell, say) and names it.
The `meta` table holds the schema version and the head of the chain (so removing the last rows shows).

A record is a plain dict: `kind` ("field", "sample" or "review") and whatever the result's to_dict()
gave; the columns (sample_id, operator, image, image_sha256, label) are copied from its keys of those
names, the whole dict is kept as canonical JSON.
"""

from __future__ import annotations

import csv
import hashlib
import json
import sqlite3
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterator, Sequence, TextIO

from allx import layout
from allx.errors import DataError, UsageError

SCHEMA_VERSION = 1
FORMAT = "allx-audit"
BUSY_TIMEOUT_S = 30.0
GENESIS = "0" * 64
KINDS = ("field", "sample", "review")
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
    if since is None or isinstance(since, datetime):
        moment = since
    else:
        try:
            moment = datetime.fromisoformat(str(since).replace("Z", "+00:00"))
        except ValueError:
            raise UsageError(f"--since: got {since!r}, expected a date like 2026-12-01 or 2026-12-01T08:00") from None
    if moment is None:
        return None
    moment = moment.replace(tzinfo=timezone.utc) if moment.tzinfo is None else moment.astimezone(timezone.utc)
    return moment.isoformat(timespec="microseconds").replace("+00:00", "Z")


class AuditLog:
    """An open audit log; use `AuditLog.open(path)` (a context manager: closes on exit)."""

    def __init__(self, connection: sqlite3.Connection, path: Path, readonly: bool):
        self.connection = connection
        self.path = path
        self.readonly = readonly

    @classmethod
    def open(cls, path: str | Path, readonly: bool = False) -> "AuditLog":
        """Open (creating it unless `readonly`) the log at `path`; a file that is not a log, a log of a newer
        schema, or (unless `readonly`) one this process cannot write is a DataError, before any result."""
        path = Path(path)
        if readonly and not path.is_file():
            raise DataError(f"{path}: no such audit log, expected the --log-db file allx-edge classify wrote")
        if path.is_dir():
            raise DataError(f"{path}: got a folder, expected the audit log's file name (e.g. {path / layout.AUDIT_DB})")
        with sqlite_errors(path):
            if not readonly:
                path.parent.mkdir(parents=True, exist_ok=True)
            target = f"file:{path.resolve()}?mode=ro" if readonly else str(path)
            connection = sqlite3.connect(target, uri=readonly, timeout=BUSY_TIMEOUT_S, isolation_level=None)
        log = cls(connection, path, readonly)
        try:
            with sqlite_errors(path):
                connection.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")
                if not readonly:
                    connection.execute("PRAGMA journal_mode = WAL")
                    connection.execute("PRAGMA synchronous = FULL")  # a committed row survives a power cut
                log.check_or_create_schema()
                if not readonly:
                    log.probe_write()
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

    def check_or_create_schema(self) -> None:
        tables = {name for (name,) in self.connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        if not tables and not self.readonly:
            # One idempotent script in one transaction: two processes creating the log at once make one.
            meta = [("format", FORMAT), ("schema_version", str(SCHEMA_VERSION)), ("created_utc", utc_now()),
                    ("head_id", "0"), ("head_hash", GENESIS)]
            inserts = "".join(f"INSERT OR IGNORE INTO meta VALUES ('{key}', '{value}');\n" for key, value in meta)
            self.connection.executescript(f"BEGIN IMMEDIATE;\n{SCHEMA}{inserts}COMMIT;")
            tables = {"meta", "entries"}
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

    def probe_write(self) -> None:
        """Write nothing, but as a writer would: SQLite opens a read-only file without a word and fails only
        at the first INSERT, which would come after the first result was classified."""
        with self.transaction(commit=False):
            self.connection.execute("UPDATE meta SET value = value WHERE key = 'head_id'")

    def meta(self) -> dict[str, str]:
        with sqlite_errors(self.path):
            return dict(self.connection.execute("SELECT key, value FROM meta").fetchall())

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

    def append(self, record: dict) -> int:
        """Add one result (kind "field" or "sample") or review (kind "review"); returns its row id."""
        if self.readonly:
            raise UsageError(f"{self.path}: opened read-only, expected AuditLog.open(path) to append")
        if not isinstance(record, dict) or record.get("kind") not in KINDS:
            got = record.get("kind") if isinstance(record, dict) else type(record).__name__
            raise UsageError(f"audit record: got kind {got!r}, expected one of {', '.join(KINDS)}")
        text = canonical_json(record)
        with sqlite_errors(self.path), self.transaction():
            meta = dict(self.connection.execute("SELECT key, value FROM meta WHERE key LIKE 'head_%'").fetchall())
            row = {"id": int(meta["head_id"]) + 1, "time_utc": utc_now(),  # the log's clock, never the caller's
                   "kind": record["kind"], **{name: text_or_none(record.get(name)) for name in
                                              ("sample_id", "operator", "image", "image_sha256", "label")},
                   "record": text, "prev_hash": meta["head_hash"]}
            row["row_hash"] = row_hash(row)
            self.connection.execute(INSERT_ROW, [row[name] for name in COLUMNS])
            self.connection.executemany("UPDATE meta SET value = ? WHERE key = ?",
                                        [(str(row["id"]), "head_id"), (row["row_hash"], "head_hash")])
        return row["id"]

    def review(self, sample_id: str, override: str | None = None, note: str = "",
               operator: str | None = None) -> int:
        """A technologist's word on a logged sample: confirm (override None) or override with a label and a note."""
        sample_id = str(sample_id or "").strip()
        results = [row for row in self.rows(sample=sample_id) if row["kind"] != "review"]
        if not results:
            raise DataError(f"{self.path}: got sample {sample_id!r}, expected a sample ID with results in the log "
                            "(allx-edge log export --csv lists them)")
        if override is not None:
            known = known_labels(results)
            if not str(override).strip() or (known and override not in known):
                raise UsageError(f"--override: got {override!r}, expected one of {', '.join(known) or 'a label'}")
            if not note.strip():
                raise UsageError("--override without --note: expected a note saying why the result is overridden")
        last = ([row for row in results if row["kind"] == "sample"] or results)[-1]
        return self.append({"kind": "review", "sample_id": sample_id, "operator": operator,
                            "action": "confirm" if override is None else "override",
                            "label": last["label"] if override is None else override, "note": note,
                            "reviewed_label": last["label"], "reviewed_row": last["id"]})

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
        """One CSV line per row (the columns, the usual record fields, the whole record as JSON); returns rows."""
        writer = csv.writer(stream)
        header = [name for name in COLUMNS if name not in ("record", "prev_hash", "row_hash")]
        writer.writerow([*header, *CSV_FIELDS, "record", "row_hash"])
        rows = self.rows(since=since)
        for row in rows:
            record = row["record"]
            writer.writerow([*(csv_cell(row[name]) for name in header),
                             *(csv_cell(record.get(name)) for name in CSV_FIELDS), canonical_json(record),
                             row["row_hash"]])
        return len(rows)

    def verify(self) -> list[str]:
        """Problems found in the chain, each naming a row ("row 7: edited ..."); empty when the log is intact."""
        problems: list[str] = []
        previous_id, previous_hash = 0, GENESIS
        with sqlite_errors(self.path):
            damage = [text for (text,) in self.connection.execute("PRAGMA quick_check") if text != "ok"]
            problems += [f"file: damaged ({text})" for text in damage[:5]]
            cursor = self.connection.execute(f"SELECT {', '.join(COLUMNS)} FROM entries ORDER BY id")
            for values in cursor:
                row = dict(zip(COLUMNS, values))
                problems += row_problems(row, previous_id, previous_hash)
                previous_id, previous_hash = row["id"], row["row_hash"]
            meta = self.meta()
        head_id, head_hash = int(meta.get("head_id", "0") or 0), meta.get("head_hash", GENESIS)
        if head_id > previous_id:
            problems.append(f"{rows_named(previous_id + 1, head_id)}: deleted (the log's head is row {head_id}, "
                            f"the last row left is {previous_id})")
        elif head_id < previous_id or head_hash != previous_hash:
            problems.append(f"row {previous_id}: the log's head (row {head_id}) does not match the last row")
        return problems


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


def rows_named(first: int, last: int) -> str:
    return f"row {first}" if first == last else f"rows {first}-{last}"


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


def csv_cell(value) -> str:
    if value is None:
        return ""
    if isinstance(value, (dict, list)):
        return canonical_json(value)
    if isinstance(value, bool):
        return str(value).lower()
    return str(value)


@contextmanager
def sqlite_errors(path: Path) -> Iterator[None]:
    """sqlite3 failures as one DataError line: read-only, locked past the timeout, not a database, corrupt."""
    try:
        yield
    except sqlite3.Error as err:
        text = str(err)
        if "readonly" in text or "read-only" in text or "unable to open" in text:
            raise DataError(f"{path}: cannot write the audit log ({text}), expected a writable file and folder "
                            "(or another --log-db)") from None
        if "locked" in text or "busy" in text:
            raise DataError(f"{path}: audit log still locked by another process after {BUSY_TIMEOUT_S:g} s "
                            f"({text}), expected it to be free") from None
        raise DataError(f"{path}: damaged or not an audit log ({text}), expected an allx audit log "
                        "(keep this file for inspection and give another --log-db)") from None
