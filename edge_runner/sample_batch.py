"""Classify the fields of one or more samples: which files belong to which sample, the sessions, the summary."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

from allx.decision import FIELD_RECORD, SAMPLE_RECORD, VERDICT_INCONCLUSIVE
from allx.errors import DataError, UsageError
from allx.images import is_image_file
from allx.edge_runner.batch import expand_paths
from allx.edge_runner.model import EdgeModel
from allx.edge_runner.sample import FieldResult, SampleSession, SampleVerdict

CSV_HEADER = ["kind", "sample_id", "path", "sha256", "label", "score", "decision", "subtype", "confidence",
              "usable", "reason", "fields_used", "fields_set_aside"]


@dataclass(frozen=True)
class SamplesSummary:
    samples: int
    fields: int
    used: int
    failed: int  # unreadable fields
    rejected_quality: int  # readable fields set aside by the quality check
    flagged_ood: int  # fields set aside as unlike the training images
    inconclusive: int
    seconds: float


def samples_from_arguments(paths: Sequence[str], sample_id: str | None, from_folders: bool,
                           recursive: bool = False) -> dict[str, list[tuple[str, str | None]]]:
    """sample ID -> its fields as (path, error or None): one sample of every path, or one per sub-folder."""
    if sample_id is not None and from_folders:
        raise UsageError("got --sample and --samples-from-folders, expected one of them")
    if sample_id is not None:
        if not sample_id.strip():
            raise UsageError("got an empty --sample, expected a sample ID")
        return {sample_id: expand_paths(paths, recursive)}
    samples: dict[str, list] = {}
    for parent in map(Path, paths):
        for folder in sample_folders(parent):
            if folder.name in samples:
                raise DataError(f"{folder}: sample {folder.name!r} appears in two folders, expected unique names")
            samples[folder.name] = expand_paths([str(folder)], recursive)
    return samples


def sample_folders(parent: Path) -> list[Path]:
    """The sub-folders of `parent` (one per sample); anything else is an unknown layout."""
    if not parent.is_dir():
        raise DataError(f"{parent}: not a folder, expected a folder with one sub-folder of images per sample "
                        "(--samples-from-folders)")
    folders = sorted(p for p in parent.iterdir() if p.is_dir() and not p.name.startswith("."))
    loose = sorted(p.name for p in parent.iterdir() if is_image_file(p))
    if not folders or loose:
        found = f"images directly in it ({', '.join(loose[:3])})" if loose else "no sub-folders"
        raise DataError(f"{parent}: got {found}, expected one sub-folder of images per sample "
                        "(--samples-from-folders)")
    return folders


def classify_samples(model: EdgeModel, samples: dict[str, list[tuple[str, str | None]]],
                     on_field: Callable[[str, FieldResult], None] | None = None,
                     on_sample: Callable[[SampleVerdict], None] | None = None
                     ) -> tuple[list[tuple[str, FieldResult]], list[SampleVerdict], SamplesSummary]:
    """Every sample's fields through one SampleSession each; an unreadable field is set aside, never fatal."""
    model.require_labels()
    fields, verdicts = [], []
    start = time.perf_counter()
    for sample_id, items in samples.items():
        session = SampleSession(model, sample_id)
        for path, error in items:
            result = session.add_field(path) if error is None else session.set_aside(path, error)
            fields.append((sample_id, result))
            if on_field is not None:
                on_field(sample_id, result)
        verdicts.append(session.verdict())
        if on_sample is not None:
            on_sample(verdicts[-1])
    return fields, verdicts, summarize(fields, verdicts, time.perf_counter() - start)


def summarize(fields: list[tuple[str, FieldResult]], verdicts: list[SampleVerdict], seconds: float) -> SamplesSummary:
    results = [f for _, f in fields]
    failed = sum(f.prediction is None for f in results)
    quality = sum(f.prediction is not None and f.quality is not None and not f.quality.ok for f in results)
    flagged = sum(not f.usable and f.prediction is not None and (f.quality is None or f.quality.ok) for f in results)
    return SamplesSummary(len(verdicts), len(results), sum(f.usable for f in results), failed, quality, flagged,
                          sum(v.verdict == VERDICT_INCONCLUSIVE for v in verdicts), seconds)


def csv_rows(fields: list[tuple[str, FieldResult]], verdicts: list[SampleVerdict]) -> list[list]:
    """One row per field (kind "field"), then one per sample (kind "sample")."""
    rows = []
    for sample_id, f in fields:
        p, d = f.prediction, f.decision
        rows.append([FIELD_RECORD, sample_id, f.name, f.sha256, p.label if p else "", f"{p.score:.6f}" if p else "",
                     "" if d is None else d.code, d.label if d and d.malignant else "",
                     f"{d.confidence:.6f}" if d else "", str(f.usable).lower(), f.reason or "", "", ""])
    for v in verdicts:
        rows.append([SAMPLE_RECORD, v.sample_id, "", "", "", "", v.verdict, v.subtype or "",
                     "" if v.confidence is None else f"{v.confidence:.6f}", "", v.reason or "",
                     ";".join(v.fields_used), ";".join(f"{name}: {why}" for name, why in v.fields_set_aside)])
    return rows
