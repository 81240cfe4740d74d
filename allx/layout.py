"""One owner for every file name in a run or model folder, and for the kinds of split and record.

Every module that reads or writes one of these files takes its name from here, so a rename is one
edit. JSON carries the short codes (`SplitKind.NEAR_DUPLICATE.value` = "near-duplicate"); words for
people come from `SplitKind.words`, rendered only where text is shown.

    run folder (`allx train DATA --out RUN`)           model folder (`allx convert RUN/model.keras --out DIR`)
      model.keras, labels.txt, split.json                model_<precision>.tflite, model.json (latest passed),
      metrics.json, history.json, train_config.json      model_<precision>.json, labels.txt, report.md,
      MODEL_CARD.md, curves.png, confusion_matrix.png    check_predictions_<precision>.csv, ood_stats_<precision>.npz,
      cv.json, cv.png (`--cv K`)                          convert.log; rejected results: model_<precision>.rejected.*
"""

from __future__ import annotations

from enum import Enum

# Run folder written by `allx train`.
MODEL_KERAS = "model.keras"
LABELS = "labels.txt"
SPLIT = "split.json"
METRICS = "metrics.json"
HISTORY = "history.json"
TRAIN_CONFIG = "train_config.json"
MODEL_CARD = "MODEL_CARD.md"
CURVES = "curves.png"
CONFUSION_MATRIX = "confusion_matrix.png"
CV = "cv.json"
CV_PLOT = "cv.png"
OPERATING_POINT = "operating_point.json"  # a logreg head's cross-fitted operating point (train.crossfit)
RUN_FILES = (MODEL_KERAS, LABELS, SPLIT, METRICS, HISTORY, TRAIN_CONFIG, MODEL_CARD, CURVES, CONFUSION_MATRIX, CV,
             CV_PLOT, OPERATING_POINT)


def staging_prefix(out_name: str) -> str:
    """Hidden folder beside OUT where a run is written before it is published as OUT."""
    return f".{out_name}.staging-"


def replaced_prefix(out_name: str) -> str:
    """Hidden name a previous run folder has for the moment its replacement is published."""
    return f".{out_name}.replaced-"

# Model folder written by `allx convert`.
MANIFEST = "model.json"
REPORT = "report.md"
CONVERT_LOG = "convert.log"
LAYER_ERRORS = "layer_errors_{precision}.csv"
EDGETPU_LOG = "edgetpu_compiler.log"
IMX500_PACKAGE = "packerOut.zip"  # `allx convert --imx500`: Sony's converter output, packaged on the Pi into an .rpk

# Written by `allx-edge bench --json` and read by `allx report` (and by `allx-edge serve` beside the model).
BENCH = "bench.json"

# allx-edge's site files: the site config (user's config folder) and the audit log (user's data folder).
SITE_CONFIG = "site.json"
AUDIT_DB = "audit.db"
SITE_CALIBRATION = "site_calibration.json"  # beside model.json in a folder `allx-edge calibrate` wrote
# The audit log's sealing keys: a folder in the user's config folder (never the log's), one key per log.
AUDIT_KEYS = "audit-keys"
AUDIT_KEY = "{log_id}.key"  # mode 0600: the current sealing key and the spool's key
AUDIT_KEY_LOCK = "{log_id}.lock"
AUDIT_SPOOL = "{log_name}.spool"  # beside the log: rows that waited for a locked log, replayed by the next writer

# `allx-edge serve`'s access token, in the user's config folder (mode 0600).
SERVE_TOKEN = "serve_token"


def tflite_name(precision: str, rejected: bool = False) -> str:
    return f"model_{precision}.rejected.tflite" if rejected else f"model_{precision}.tflite"


def imx500_rejected(name: str) -> str:
    """A rejected IMX500 result's name for `name` (packerOut.rejected.zip, model.rejected.json, ...)."""
    stem, dot, suffix = name.partition(".")
    return f"{stem}.rejected{dot}{suffix}"


def precision_manifest_name(precision: str) -> str:
    """The manifest of one precision (model.json is the latest passed one)."""
    return f"model_{precision}.json"


def ood_stats_name(precision: str) -> str:
    return f"ood_stats_{precision}.npz"


def predictions_name(precision: str) -> str:
    return f"check_predictions_{precision}.csv"


def rejected_names(precision: str) -> dict[str, str]:
    """Names for a rejected result: they can never overwrite a passed model's files."""
    stem = f"model_{precision}.rejected"
    return {"model": f"{stem}.tflite", "manifest": f"{stem}.json", "labels": f"{stem}.labels.txt",
            "report": f"{stem}.report.md", "predictions": f"{stem}.predictions.csv"}


def passed_names(precision: str) -> dict[str, str]:
    return {"model": tflite_name(precision), "manifest": MANIFEST, "labels": LABELS, "report": REPORT,
            "predictions": predictions_name(precision), "precision_manifest": precision_manifest_name(precision)}


class SplitKind(str, Enum):
    """How a split kept related images together; the value is the code JSON carries."""

    IMAGE = "image"                    # image by image: near-duplicates may straddle subsets
    NEAR_DUPLICATE = "near-duplicate"  # exact and perceptual-hash near-duplicate groups kept whole
    SEQUENCE = "sequence"              # blocks of consecutive file numbers kept whole (patient proxy)
    GROUPS = "groups"                  # groups from a groups file (patient or slide IDs) kept whole

    @property
    def words(self) -> str:
        return _SPLIT_WORDS[self]

    @property
    def grouped(self) -> bool:
        """Whether related images were kept in one subset (anything but image-level)."""
        return self is not SplitKind.IMAGE

    @classmethod
    def parse(cls, value) -> "SplitKind":
        """A code, or the sentence older run folders wrote; anything unknown or missing is image-level."""
        if isinstance(value, cls):
            return value
        if isinstance(value, str):
            for kind in cls:
                if value == kind.value:
                    return kind
            if "near-duplicate groups kept together" in value.lower():
                return cls.NEAR_DUPLICATE
        return cls.IMAGE


_SPLIT_WORDS = {
    SplitKind.IMAGE: "image-level (near-duplicates may straddle subsets)",
    SplitKind.NEAR_DUPLICATE: "near-duplicate groups kept together (image-level otherwise)",
    SplitKind.SEQUENCE: "blocks of consecutive file numbers kept together (patient proxy)",
    SplitKind.GROUPS: "patient/slide groups from a groups file kept together",
}


class RecordKind(str, Enum):
    """The `kind` field every JSON record allx writes carries, so readers never guess from keys."""

    SPLIT = "split"
    METRICS = "metrics"
    EVALUATION = "evaluation"
    MANIFEST = "manifest"
    CHECK = "check"
    CV = "cv"
    BENCH = "bench"
    BENCHMARK = "benchmark"
    PREDICTION = "prediction"
    SAMPLE = "sample"
    SITE_CALIBRATION = "site-calibration"
    OPERATING_POINT = "operating-point"
    IMPORTED_WEIGHTS = "imported-weights"


# Imported ImageNet weights (`allx weights import`), in the allx cache's weights folder: per backbone, the
# Keras .weights.h5 files with and without the classifier top, and the record saying where they came from.
WEIGHTS_FOLDER = "weights"


def imported_weights_name(backbone: str, include_top: bool) -> str:
    return f"{backbone}_imagenet{'' if include_top else '_notop'}.weights.h5"


def imported_record_name(backbone: str) -> str:
    return f"{backbone}_imagenet.json"
