"""The technician's workbench behind the page and the API: open samples, fields, reviews and the audit log.

Results come only from the sample module (SampleSession: the same per-field and per-sample code as
`allx-edge classify --sample`) and every row goes to the audit log (AuditLog), so the page and the CLI
give identical results and identical log rows. Two single-thread executors keep the non-thread-safe
parts in one thread each: the interpreter (one inference at a time) and the SQLite connection (which
belongs to the thread that opened it). A row the log refuses (locked or read-only database) is kept in
memory in order and written before anything else, so nothing is lost while the server runs.
"""

from __future__ import annotations

import io
import secrets
import sqlite3
import threading
import unicodedata
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Callable

import numpy as np
from PIL import Image

from allx.errors import AllxError, UsageError
from allx.edge_runner.serve.uploads import UploadLimits, UploadRejected, check_upload

ID_CHARS = 64
ACTIONS = ("confirm", "override")


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
    session: object
    started: str
    fields: list[dict] = field(default_factory=list)
    review: dict | None = None

    def verdict(self) -> dict:
        return self.session.verdict().to_dict()

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
    def __init__(self, model, open_log: Callable[[], object], new_session: Callable[[str], object],
                 make_record: Callable[[OpenSample, object], dict], limits: UploadLimits = UploadLimits(),
                 capture: Callable[[], np.ndarray] | None = None):
        self.model = model
        self.limits = limits
        self.new_session = new_session
        self.make_record = make_record
        self.capture_frame = capture
        self.samples: dict[str, OpenSample] = {}
        self.pending: list[dict] = []
        self.lock = threading.Lock()
        self.inference = ThreadPoolExecutor(1, thread_name_prefix="allx-inference")
        self.log_thread = ThreadPoolExecutor(1, thread_name_prefix="allx-log")
        self.log = self.on_log_thread(open_log)

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
            session = self.inference.submit(self.new_session, sample_id).result()
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
                added.append(self.add_field(sample, name, data))
            except AllxError as err:  # one bad file never stops the others (like a CLI batch)
                refused.append({"name": name, "error": str(err)})
        return added, refused

    def capture(self, key: str) -> dict:
        """A still from the attached camera (the camera code of `allx-edge camera`), added as a field."""
        sample = self.sample(key)
        if self.capture_frame is None:
            raise UsageError("no camera configured, expected `allx-edge serve --camera SOURCE`")
        frame = self.inference.submit(self.capture_frame).result()
        buffer = io.BytesIO()
        Image.fromarray(frame).save(buffer, format="PNG")
        name = f"camera-{utc_now().replace(':', '')}.png"
        return self.add_field(sample, name, buffer.getvalue())

    def add_field(self, sample: OpenSample, name: str, data: bytes) -> dict:
        result = self.inference.submit(sample.session.add_field, name, data).result()
        record = result.to_dict()
        sample.fields.append(record)
        self.write_log(self.make_record(sample, result))
        return record

    def review(self, key: str, action: str, label: str | None, note: str | None, operator: str | None) -> dict:
        """Confirm or override the sample's verdict; only a review the log accepted counts."""
        sample = self.sample(key)
        if action not in ACTIONS:
            raise UsageError(f"review: got {action!r}, expected one of {', '.join(ACTIONS)}")
        label = clean_text(label, "label", required=action == "override") or None
        if label is not None and label not in self.model.labels:
            raise UsageError(f"label: got {label!r}, expected one of {', '.join(self.model.labels)}")
        note = clean_text(note, "note", required=False, limit=1000)
        operator = clean_text(operator, "operator", required=False) or sample.operator
        try:
            self.flush_pending()
            self.on_log_thread(self.log.review, sample.sample_id, action, label, note, operator)
        except (AllxError, sqlite3.Error, OSError) as err:
            raise LogUnavailable(f"review not saved: the audit log refused it ({err}); try again") from None
        sample.review = {"action": action, "label": label, "note": note, "operator": operator, "time": utc_now()}
        return sample.review

    def write_log(self, record: dict) -> None:
        with self.lock:
            self.pending.append(record)
        self.flush_pending(quiet=True)

    def flush_pending(self, quiet: bool = False) -> None:
        """Write waiting rows in order; on failure they stay (raise LogUnavailable unless quiet)."""
        with self.lock:
            try:
                while self.pending:
                    self.on_log_thread(self.log.append, self.pending[0])
                    self.pending.pop(0)
            except (AllxError, sqlite3.Error, OSError) as err:
                if not quiet:
                    raise LogUnavailable(f"{len(self.pending)} result(s) wait to be logged: {err}") from None
                self.last_log_error = str(err)

    @property
    def log_warning(self) -> str | None:
        if not self.pending:
            return None
        return (f"{len(self.pending)} result(s) not yet in the audit log ({getattr(self, 'last_log_error', '')}); "
                "kept in memory and retried on every request")

    def rows(self, since: str | None = None, sample: str | None = None) -> list[dict]:
        self.flush_pending(quiet=True)
        try:
            return list(self.on_log_thread(self.log.rows, since, sample))
        except (AllxError, sqlite3.Error, OSError) as err:
            raise LogUnavailable(f"cannot read the audit log: {err}") from None

    def export_csv(self, since: str | None = None) -> str:
        self.flush_pending(quiet=True)
        stream = io.StringIO()
        try:
            self.on_log_thread(self.log.export_csv, stream, since)
        except (AllxError, sqlite3.Error, OSError) as err:
            raise LogUnavailable(f"cannot read the audit log: {err}") from None
        return stream.getvalue()

    def close(self) -> None:
        self.flush_pending(quiet=True)
        close = getattr(self.log, "close", None)
        if close is not None:
            self.on_log_thread(close)
        self.inference.shutdown()
        self.log_thread.shutdown()


def utc_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")
