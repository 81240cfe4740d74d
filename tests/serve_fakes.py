"""Stand-ins for the sample session and the audit log, used until those modules are on this branch."""

from __future__ import annotations

import csv
import json
import sqlite3
from collections import Counter
from dataclasses import asdict, dataclass

from allx.images import decode_image_bytes


@dataclass(frozen=True)
class FakeField:
    name: str
    label: str
    score: float
    ood: bool | None

    def to_dict(self):
        return {"kind": "field", **asdict(self)}


@dataclass(frozen=True)
class FakeVerdict:
    words: str
    fields_used: int

    def to_dict(self):
        return {"kind": "sample", **asdict(self)}


class FakeSession:
    def __init__(self, model, sample_id):
        self.model, self.sample_id, self.fields = model, sample_id, []

    def add_field(self, name, data):
        prediction = self.model.classify(decode_image_bytes(data, name, self.model.input_size))
        field = FakeField(name, prediction.label, prediction.score, prediction.ood)
        self.fields.append(field)
        return field

    def verdict(self):
        if not self.fields:
            return FakeVerdict("inconclusive: no field yet", 0)
        label = Counter(f.label for f in self.fields).most_common(1)[0][0]
        return FakeVerdict(label, len(self.fields))


def fake_record(sample, result):
    return {**result.to_dict(), "sample_id": sample.sample_id, "operator": sample.operator}


class FakeLog:
    def __init__(self, path):
        self.db = sqlite3.connect(path, timeout=0.2, uri=str(path).startswith("file:"))
        if not str(path).endswith("mode=ro"):
            self.db.execute("create table if not exists log (n integer primary key, body text)")
            self.db.commit()

    @classmethod
    def open(cls, path):
        return cls(path)

    def append(self, record):
        with self.db:
            self.db.execute("insert into log (body) values (?)", (json.dumps(record),))

    def review(self, sample_id, action, label, note, operator):
        self.append({"kind": "review", "sample_id": sample_id, "action": action, "label": label, "note": note,
                     "operator": operator})

    def rows(self, since=None, sample=None):
        rows = [json.loads(body) for (body,) in self.db.execute("select body from log order by n")]
        return [r for r in rows if sample is None or r.get("sample_id") == sample]

    def export_csv(self, stream, since=None):
        writer = csv.writer(stream)
        writer.writerow(["kind", "sample_id", "operator", "name", "label", "action", "note"])
        for r in self.rows(since):
            writer.writerow([r.get(k, "") for k in ("kind", "sample_id", "operator", "name", "label", "action", "note")])
