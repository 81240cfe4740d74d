"""model.json checked where it arrives: types, ranges and finite numbers of every field allx-edge reads.

A hand-edited or damaged manifest fails here with one line naming the field ("got X, expected Y"),
instead of a traceback deep in the loader or a silently absurd out-of-distribution threshold.
"""

from __future__ import annotations

from pathlib import Path

from allx.errors import ModelError
from allx.jsonio import Fields

STATUSES = ("passed", "rejected")
MAX_OOD_THRESHOLD = 1e6  # scores are 1 - max probability (<= 1) or a squared distance over k <= 64 axes


def check_manifest(manifest, path: Path) -> dict:
    """`manifest` itself when every field allx-edge uses has the right type and range; else ModelError."""
    fields = Fields(manifest, str(path), ModelError)
    fields.text("format", optional=True)
    fields.text("model_file", optional=True)
    fields.text("precision", optional=True)
    status = fields.text("status", optional=True)
    if status is not None and status not in STATUSES:
        raise fields.fail("status", status, f"one of {', '.join(STATUSES)}")
    fields.texts("labels", optional=True)
    check_input(fields.child("input", optional=True))
    outputs = fields.child("outputs", optional=True)
    for role in ("probabilities", "embedding"):
        spec = outputs.child(role, optional=True) if outputs else None
        if spec is not None:
            spec.text("name", optional=True)
    check_ood(fields.child("ood", optional=True))
    fields.child("check", optional=True)
    return manifest


def check_input(spec: Fields | None) -> None:
    if spec is None:
        return
    shape = spec.integers("shape", optional=True, minimum=1)
    if shape is not None and len(shape) != 4:
        raise spec.fail("shape", list(shape), "[1, height, width, 3]")
    spec.text("dtype", optional=True)
    spec.number("scale", optional=True, minimum=0)
    spec.integer("zero_point", optional=True)


def check_ood(section: Fields | None) -> None:
    if section is None:
        return
    section.text("method", optional=True)
    section.number("threshold", optional=True, minimum=0, maximum=MAX_OOD_THRESHOLD)
    stats_file = section.text("stats_file", optional=True)
    if stats_file is not None and (Path(stats_file).name != stats_file or stats_file in ("", ".", "..")):
        raise section.fail("stats_file", stats_file, "a file name beside the model (no folders)")
