"""The technician's workbench behind the page and the API: open samples, fields, reviews and the audit log.

Results come only from the sample module (SampleSession: the per-field and per-sample code of
`allx-edge classify --sample`) and every row goes to the audit log (AuditLog) as provenance's records,
so the page and the CLI give identical results and identical log rows. A batch of fields adds one row
per field and then one row with the sample's verdict as it stands, as a CLI run on those files does.

Two single-thread executors keep the non-thread-safe parts in one thread each: the interpreter (one
inference at a time) and the SQLite connection (which belongs to the thread that opened it). A row the
log refuses because another process holds it goes to the log's spool on disk (AuditLog.append), so a
stop loses nothing; one it refuses otherwise (read-only database, say) is kept in memory in order, stamped
with its time, and written before anything else on the next request.
"""

from __future__ import annotations

import io
import secrets
import sqlite3
import threading
import unicodedata
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from allx.decision import FIELD_RECORD, REVIEW_RECORD, SAMPLE_RECORD
from allx.errors import AllxError, UsageError
from allx.edge_runner import provenance
from allx.edge_runner.audit import AuditLog, utc_now
from allx.edge_runner.camera import frame_pixels
from allx.edge_runner.sample import SampleSession
from allx.edge_runner.serve.pictures import FieldPictures, forget_old_pictures, make_pictures
from allx.edge_runner.serve.uploads import UploadLimits, UploadRejected, check_upload

ID_CHARS = 64
ACTIONS = ("confirm", "override")
LOG_BUSY_S = 5.0  # a page waits this long for a log another process holds, then keeps the row for later


class NotFound(UsageError):
    """An unknown sample key (a sample started before the server restarted is in the log, not open)."""


class LogUnavailable(AllxError):
    """The audit log refused a write; the rows wait in memory and are retried on the next request."""


@dataclass
class OpenSample:
    """One sample being worked on: its session, the fields so far (as their to_dict()) and its review."""

    key: str
    sample_id: str
    operator: str
    session: SampleSession
    started: str
    fields: list[dict] = field(default_factory=list)
    review: dict | None = None
    pictures: list[FieldPictures | None] = field(default_factory=list)  # one per field, None: unreadable

    def verdict(self) -> dict:
        verdict = self.session.verdict()
        return {**verdict.to_dict(), "words": verdict.words}

    def to_dict(self) -> dict:
        return {"key": self.key, "sample_id": self.sample_id, "operator": self.operator, "started": self.started,
                "fields": list(self.fields), "verdict": self.verdict(), "review": self.review}


def clean_text(value: str | None, what: str, required: bool, limit: int = ID_CHARS) -> str:
    """User text kept as typed (the page escapes it), minus control characters; length checked."""
    text = "".join(ch for ch in (value or "") if unicodedata.category(ch)[0] != "C").strip()
    if required and not text:
        raise UsageError(f"{what}: got nothing, expected some text")
    if len(text) > limit:
        raise UsageError(f"{what}: got {len(text)} characters, expected at most {limit}")
    return text


class Workbench:
    def __init__(self, model, log_db: str | Path, limits: UploadLimits = UploadLimits(),
                 capture: Callable[[], np.ndarray] | None = None, log_busy_s: float = LOG_BUSY_S):
        self.model = model
        self.limits = limits
        self.capture_frame = capture
        self.facts = provenance.model_facts(model)  # hashes taken once, at load, like a CLI run
        self.samples: dict[str, OpenSample] = {}
        self.pending: list[dict] = []
        self.last_log_error = ""
        self.lock = threading.Lock()
        self.inference = ThreadPoolExecutor(1, thread_name_prefix="allx-inference")
        self.log_thread = ThreadPoolExecutor(1, thread_name_prefix="allx-log")
        self.log = self.on_log_thread(open_log, Path(log_db), log_busy_s)

    def on_log_thread(self, function, *args):
        return self.log_thread.submit(function, *args).result()

    def start_sample(self, sample_id: str, operator: str) -> OpenSample:
        """Open a sample (the open one with the same ID and operator when there is one)."""
        sample_id = clean_text(sample_id, "sample ID", required=True)
        operator = clean_text(operator, "operator", required=True)
        with self.lock:
            for sample in self.samples.values():
                if sample.sample_id == sample_id and sample.operator == operator:
                    return sample
            key = secrets.token_hex(6)
            session = SampleSession(self.model, sample_id)
            sample = OpenSample(key, sample_id, operator, session, utc_now())
            self.samples[key] = sample
            return sample

    def sample(self, key: str) -> OpenSample:
        try:
            return self.samples[key]
        except KeyError:
            raise NotFound("no open sample with this key, expected one started on this server "
                           "(earlier samples are in the log)") from None

    def open_samples(self) -> list[OpenSample]:
        return sorted(self.samples.values(), key=lambda s: s.started, reverse=True)

    def add_fields(self, key: str, uploads: list[tuple[str, bytes]]) -> tuple[list[dict], list[dict]]:
        """Classify each accepted upload into the sample; (fields added, files refused with the reason)."""
        sample = self.sample(key)
        if len(uploads) > self.limits.max_files:
            raise UploadRejected(f"got {len(uploads)} files, expected at most {self.limits.max_files} at once", 413)
        added, refused = [], []
        for name, data in uploads:
            try:
                check_upload(name, data, self.limits)
            except AllxError as err:  # one bad file never stops the others (like a CLI batch)
                refused.append({"name": name, "error": str(err), "status": getattr(err, "status", 400)})
                continue
            added.append(self.keep(sample, sample.session.add_field, name, data))
        if added:
            self.log_verdict(sample)
        return added, refused

    def capture(self, key: str) -> dict:
        """A still from the attached camera (the camera code of `allx-edge camera`), added as a field."""
        sample = self.sample(key)
        if self.capture_frame is None:
            raise UsageError("no camera configured, expected `allx-edge serve --camera SOURCE`")
        frame = self.inference.submit(self.capture_frame).result()
        pixels = frame_pixels(frame, self.model.input_size)
        name = f"camera-{utc_now()[:19].replace(':', '')}"
        added = self.keep(sample, sample.session.add_pixels, name, pixels)
        self.log_verdict(sample)
        return added

    def keep(self, sample: OpenSample, add, name: str, image) -> dict:
        """Add one field through the session (on the inference thread, so the page lists fields in the
        session's order even when two uploads to one sample overlap), then log it as `classify --sample` does."""
        pictures = make_pictures(image, self.model.input_size)  # off the interpreter's thread

        def add_and_list():
            result = add(name, image)
            sample.pictures.append(pictures)  # first: a page listing the fields always finds their pictures
            sample.fields.append(result.to_dict())
            return result, sample.fields[-1]

        result, shown = self.inference.submit(add_and_list).result()
        with self.lock:
            forget_old_pictures(self.samples.values())
        self.write_log(provenance.sample_field_record(result, self.model.labels, self.facts, sample.operator,
                                                      sample.sample_id))
        return shown

    def log_verdict(self, sample: OpenSample) -> None:
        verdict = self.inference.submit(sample.session.verdict).result()
        self.write_log(provenance.sample_verdict_record(verdict, self.model.labels, self.facts, sample.operator))

    def review(self, key: str, action: str, label: str | None, note: str | None, operator: str | None) -> dict:
        """Confirm or override the sample's verdict; only a review the log accepted counts."""
        sample = self.sample(key)
        if action not in ACTIONS:
            raise UsageError(f"review: got {action!r}, expected one of {', '.join(ACTIONS)}")
        label = clean_text(label, "label", required=action == "override") if action == "override" else None
        if label is not None and label not in self.model.labels:
            raise UsageError(f"label: got {label!r}, expected one of {', '.join(self.model.labels)}")
        note = clean_text(note, "note", required=action == "override", limit=1000)
        operator = clean_text(operator, "operator", required=False) or sample.operator
        if not sample.fields:
            raise UsageError("review: the sample has no field yet, expected fields to review")
        try:
            self.flush_pending()
            self.on_log_thread(self.log.review, sample.sample_id, label, note, operator)
        except UsageError:
            raise
        except (AllxError, sqlite3.Error, OSError) as err:
            raise LogUnavailable(f"review not saved: the audit log refused it ({err}); try again") from None
        sample.review = {"action": action, "label": label, "note": note, "operator": operator, "time": utc_now()}
        return sample.review

    def write_log(self, record: dict) -> None:
        with self.lock:
            self.pending.append(record)
        self.flush_pending(quiet=True)
        with self.lock:  # a row that waits keeps the time it was made, not the time it is finally written
            for waiting in self.pending:
                waiting.setdefault("time_utc", utc_now())

    def flush_pending(self, quiet: bool = False) -> None:
        """Write waiting rows in order; on failure they stay (raise LogUnavailable unless quiet)."""
        with self.lock:
            try:
                self.on_log_thread(self.log.flush_spool)  # rows another process's lock sent to the spool
                while self.pending:
                    self.on_log_thread(self.log.append, self.pending[0])
                    self.pending.pop(0)
            except (AllxError, sqlite3.Error, OSError) as err:
                if not quiet:
                    raise LogUnavailable(f"{len(self.pending)} result(s) wait to be logged: {err}") from None
                self.last_log_error = str(err)

    @property
    def log_warning(self) -> str | None:
        spooled = self.log.spooled()
        if not self.pending and not spooled:
            return None
        if not self.pending:
            return (f"{spooled} result(s) not yet in the audit log (another process held it); kept on disk beside "
                    "it and written on the next request, or by the next start")
        return (f"{len(self.pending)} result(s) not yet in the audit log ({self.last_log_error}); "
                "kept in memory and retried on every request")

    def rows(self, since: str | None = None, sample: str | None = None) -> list[dict]:
        self.flush_pending(quiet=True)
        try:
            return list(self.on_log_thread(self.log.rows, since, sample))
        except UsageError:  # a bad --since: the caller's to fix
            raise
        except (AllxError, sqlite3.Error, OSError) as err:
            raise LogUnavailable(f"cannot read the audit log: {err}") from None

    def export_csv(self, since: str | None = None) -> str:
        self.flush_pending(quiet=True)
        stream = io.StringIO()
        try:
            self.on_log_thread(self.log.export_csv, stream, since)
        except UsageError:
            raise
        except (AllxError, sqlite3.Error, OSError) as err:
            raise LogUnavailable(f"cannot read the audit log: {err}") from None
        return stream.getvalue()

    def close(self) -> None:
        self.flush_pending(quiet=True)
        self.on_log_thread(self.log.close)
        self.inference.shutdown()
        self.log_thread.shutdown()


def recent_samples(rows: list[dict], limit: int = 50) -> list[dict]:
    """One line per logged sample, newest first: its last verdict, how many field rows, its last review."""
    samples: dict[str, dict] = {}
    for row in rows:
        if not row.get("sample_id"):
            continue
        entry = samples.setdefault(row["sample_id"], {"sample_id": row["sample_id"], "fields": 0, "verdict": None,
                                                      "review": None})
        entry.update(time_utc=row["time_utc"], operator=row["operator"] or entry.get("operator"))
        if row["kind"] == FIELD_RECORD:
            entry["fields"] += 1
        elif row["kind"] == SAMPLE_RECORD:
            entry["verdict"] = row["record"].get("words") or row["label"]
        elif row["kind"] == REVIEW_RECORD:
            record = row["record"]
            entry["review"] = f"{record.get('action')} {row['label'] or ''}".strip()
    return sorted(samples.values(), key=lambda s: s["time_utc"], reverse=True)[:limit]


def open_log(path: Path, busy_s: float) -> AuditLog:
    """The audit log, waiting at most `busy_s` for another writer (a page should not hang for the CLI's 30 s)."""
    log = AuditLog.open(path)
    log.connection.execute(f"PRAGMA busy_timeout = {int(busy_s * 1000)}")
    return log
