"""Site calibration: re-threshold a model's checks on a site's own camera images, and measure it there.

`allx-edge calibrate` runs the converted model (no TensorFlow) over the site's images, sets the
out-of-distribution threshold so it flags the same share of the site's images as `allx convert` chose
on its held-out images (the statistics in the model folder stay as they are: only the threshold moves),
re-chooses the image-quality limits from the site's images by the rule `allx convert` applied to the
training images (edge_runner.quality.calibrate_limits), and writes a NEW model folder: the .tflite and
every side file the manifest names, copied, and a
model.json carrying the new threshold and a `site_calibration` record. With a labels CSV it also
reports the site's accuracy, malignant sensitivity and benign specificity (allx.decision, at the model's
operating point) beside the converter's numbers: an acceptance test to run on day one and monthly. Each
figure it compares must rest on at least MIN_LABELLED labelled images, or the acceptance fails: a figure
from one or two images passes or fails by chance.
"""

from __future__ import annotations

import csv
import json
import math
import os
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from allx import __version__, layout
from allx.decision import ARGMAX_THRESHOLD, BENIGN, OperatingPoint, sensitivity_specificity
from allx.errors import DataError, ImageError, ModelError, UsageError
from allx.files import checked_write, interrupts_deferred
from allx.edge_runner.batch import expand_paths
from allx.edge_runner.metadata import embed_metadata
from allx.edge_runner.model import EdgeModel
from allx.edge_runner.ood import threshold_for
from allx.edge_runner.quality import QualityLimits, calibrate_limits, judge, limits_in_use, measure

MIN_IMAGES = 20  # below this a quantile threshold is mostly noise
DRIFT_FACTOR = 3  # the shipped threshold flagging this many times its rate of the site's images: a different camera
DEFAULT_MAX_DROP = 0.05  # site accuracy or sensitivity this far below the converter's fails the acceptance
# Labelled images behind each figure the acceptance compares: with 20, a figure near 0.9 is known to about
# +-0.14 (95% Wilson interval); with fewer the interval is wider still, and one lucky image could pass.
MIN_LABELLED = 20
DEFAULT_FLAG_RATE = 0.04  # allx convert's default (convert.modes), for a manifest that does not record its rate
LABEL_COLUMNS = ("path", "file", "image", "filename")


@dataclass(frozen=True)
class SiteAccuracy:
    """The model on the site's labelled images, and what the converter measured on its own check subset."""

    images: int
    accuracy: float
    malignant_sensitivity: float | None
    benign_specificity: float | None
    decision_threshold: float  # malignant score 1 - p(Benign) from which "B-ALL suspected"
    converter: dict  # accuracy, malignant_sensitivity, benign_specificity, subset, images (from model.json)
    per_class: dict  # label -> (images, recall)
    unlabelled: int  # site images the labels file does not name
    missing: tuple[str, ...]  # names in the labels file with no readable image


@dataclass(frozen=True)
class SiteCalibration:
    model: str
    out_dir: str
    images_dir: str
    images: int  # readable site images
    unreadable: tuple[str, ...]  # "path: reason"
    ood: dict | None  # method, flag_rate, threshold_before/after, flagged_before/after; None when off
    quality: dict | None  # limits_before/limits, rejected_before/after; None when off
    notes: tuple[str, ...]  # what was not re-calibrated, and how to get it
    accuracy: SiteAccuracy | None = None
    failures: tuple[str, ...] = ()  # why the site acceptance failed (then no model folder is written)
    time_utc: str = field(default_factory=lambda: datetime.now(timezone.utc).isoformat(timespec="seconds"))

    def to_dict(self) -> dict:
        return {"kind": layout.RecordKind.SITE_CALIBRATION.value, **asdict(self)}


def check_folders(model_dir: Path, out_dir: Path) -> None:
    """The source must be a convert folder; the target a new or empty folder that is not the source."""
    if not model_dir.is_dir():
        raise UsageError(f"--model: got {model_dir}, expected the folder `allx convert` wrote (with {layout.MANIFEST})")
    if out_dir.resolve() == model_dir.resolve():
        raise UsageError(f"--out: got the model folder itself ({out_dir}), expected a new folder (the original is "
                         "never overwritten)")
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        raise UsageError(f"--out: {out_dir} already exists and is not an empty folder, expected a new folder")


def site_images(images_dir: Path) -> list[str]:
    if not images_dir.is_dir():
        raise DataError(f"--images: got {images_dir}, expected a folder of the site's images")
    paths = [path for path, error in expand_paths([str(images_dir)], recursive=True) if error is None]
    if not paths:
        raise DataError(f"--images: no image files in {images_dir} (sub-folders included), expected the site's images")
    return paths


def run_images(model: EdgeModel, paths: list[str]):
    """(kept paths, probabilities (N, C), OOD scores (N,) or None, quality measures, unreadable "path: reason")."""
    kept, probabilities, scores, measures, unreadable = [], [], [], [], []
    for path in paths:
        try:
            pixels = model.load_pixels(path)
        except ImageError as err:
            unreadable.append(str(err))
            continue
        row, embedding = model.predict_with_embedding(pixels)
        if model.ood_scorer is not None:
            scores.append(model.ood_scorer.score_one(row, embedding))
        kept.append(path)
        probabilities.append(row)
        measures.append(measure(pixels))
    if len(kept) < MIN_IMAGES:
        raise DataError(f"got {len(kept)} readable site images ({len(unreadable)} unreadable), expected at least "
                        f"{MIN_IMAGES} to calibrate on")
    return kept, np.stack(probabilities), np.asarray(scores) if scores else None, measures, unreadable


def recalibrate_ood(model: EdgeModel, scores: np.ndarray | None,
                    flag_rate: float | None) -> tuple[dict | None, str | None]:
    """(the new manifest "ood" section's changes with before/after figures, or None and why not)."""
    spec = model.manifest.ood
    if spec is None:
        return None, ("out-of-distribution flag: off (model.json has no ood section): convert the model with "
                      "allx convert --ood to get it, then calibrate again")
    if model.ood_scorer is None or scores is None:
        return None, (f"out-of-distribution flag: kept as converted (method {spec.method!r} is not "
                      "supported by this allx-edge)")
    rate = (spec.flag_rate if spec.flag_rate is not None else DEFAULT_FLAG_RATE) if flag_rate is None else flag_rate
    before = float(model.ood_scorer.threshold)
    after = threshold_for(scores, rate)
    return {"method": model.ood_scorer.method, "flag_rate": rate, "threshold_before": before, "threshold": after,
            "flagged_before": float(np.mean(scores > before)), "flagged_after": float(np.mean(scores > after)),
            "images": int(len(scores))}, None


def recalibrate_quality(limits: QualityLimits | None, measures) -> tuple[dict | None, str | None]:
    """(the new limits with the share of site images rejected before and after, or None and why not)."""
    before, warnings = limits_in_use(limits)
    if before is None:
        return None, warnings[0] if warnings else "image-quality check: off"
    after = calibrate_limits(measures)  # its rejected_share is of these very site images
    return {"limits_before": before.to_dict(), "limits": after.to_dict(),
            "rejected_before": float(np.mean([not judge(m, before).ok for m in measures])),
            "rejected_after": after.rejected_share, "images": len(measures)}, None


def read_labels_csv(path: Path, labels: tuple[str, ...]) -> dict[str, str]:
    """{file name or relative path: label} from a CSV with a path/file column and a label column."""
    try:
        with open(path, newline="", encoding="utf-8-sig") as file:
            rows = list(csv.DictReader(file))
    except FileNotFoundError:
        raise DataError(f"--labels-csv: no such file {path}") from None
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        raise DataError(f"--labels-csv: {path}: unreadable ({err.__class__.__name__}), expected a CSV") from None
    columns = [c for c in (rows[0].keys() if rows else []) if c]
    name_column = next((c for c in LABEL_COLUMNS if c in columns), None)
    if not rows or name_column is None or "label" not in columns:
        raise DataError(f"--labels-csv: {path}: got columns {columns}, expected a header with one of "
                        f"{'/'.join(LABEL_COLUMNS)} and label, and one row per image")
    mapping = {}
    for line, row in enumerate(rows, start=2):
        name, label = (row.get(name_column) or "").strip(), (row.get("label") or "").strip()
        if label not in labels:
            raise DataError(f"--labels-csv: {path} line {line}: got label {label!r}, expected one of "
                            f"{', '.join(labels)}")
        mapping[name.replace(os.sep, "/")] = label
    return mapping


def label_of(path: str, images_dir: Path, mapping: dict[str, str]) -> str | None:
    relative = Path(path).relative_to(images_dir).as_posix()
    return mapping.get(relative, mapping.get(Path(path).name))


def site_accuracy(model: EdgeModel, paths: list[str], probabilities: np.ndarray, images_dir: Path,
                  mapping: dict[str, str]) -> SiteAccuracy:
    truth_labels = [label_of(path, images_dir, mapping) for path in paths]
    keep = np.array([label is not None for label in truth_labels])
    if not keep.any():
        raise DataError(f"--labels-csv names none of the {len(paths)} site images, expected their file names "
                        "(or paths relative to --images)")
    labels = model.labels
    truth = np.array([labels.index(label) for label in truth_labels if label is not None])
    probs = probabilities[keep]
    found = {Path(p).name for p, k in zip(paths, keep) if k} | {Path(p).relative_to(images_dir).as_posix()
                                                                for p, k in zip(paths, keep) if k}
    point = model.manifest.operating_point
    decided = sensitivity_specificity(probs, truth, labels, point)
    per_class = {label: (int((truth == i).sum()), float((probs[truth == i].argmax(axis=1) == i).mean()))
                 for i, label in enumerate(labels) if (truth == i).any()}
    return SiteAccuracy(int(keep.sum()), float((probs.argmax(axis=1) == truth).mean()),
                        decided["malignant_sensitivity"], decided["benign_specificity"],
                        ARGMAX_THRESHOLD if point is None else point.threshold,
                        converter_numbers(model.manifest.check or {}, point),
                        per_class, int((~keep).sum()), tuple(sorted(name for name in mapping if name not in found)))


def converter_numbers(check: dict, point: OperatingPoint | None) -> dict:
    quantized = check.get("quantized") or {}
    numbers = {"accuracy": quantized.get("accuracy"), "malignant_sensitivity": quantized.get("malignant_sensitivity"),
               "benign_specificity": quantized.get("benign_specificity"), "subset": check.get("subset"),
               "images": check.get("images")}
    if point is not None and point.sensitivity is not None:  # the operating point's own figures are comparable
        numbers.update(malignant_sensitivity=point.sensitivity, benign_specificity=point.specificity,
                       subset=point.chosen_on or numbers["subset"])
    return numbers


def drifted(ood: dict | None) -> bool:
    """Whether the shipped threshold flagged far more of the site's images than it was set to."""
    return ood is not None and ood["flagged_before"] > DRIFT_FACTOR * max(ood["flag_rate"], 0.01)


def acceptance_failures(accuracy: SiteAccuracy | None, max_drop: float, ood: dict | None = None,
                        force: bool = False) -> tuple[str, ...]:
    """The site's labelled numbers that fall more than `max_drop` below the converter's; without labels, a
    shipped threshold that flagged most site images (re-thresholding would silence that warning) unless forced."""
    if accuracy is None:
        if drifted(ood) and not force:
            return (f"the shipped out-of-distribution threshold flagged {ood['flagged_before']:.0%} of the site's "
                    "images: expected --labels-csv to show the model still works on them (or --force)",)
        return ()
    failures = []
    counts = figure_images(accuracy)
    for name in ("accuracy", "malignant_sensitivity", "benign_specificity"):
        site, theirs = getattr(accuracy, name), accuracy.converter.get(name)
        if site is None or not isinstance(theirs, (int, float)):
            continue
        if counts[name] < MIN_LABELLED:
            failures.append(f"{name.replace('_', ' ')} measured on {counts[name]} labelled image(s), expected at "
                            f"least {MIN_LABELLED} (fewer pass or fail by chance)")
        elif site < theirs - max_drop:
            failures.append(f"{name.replace('_', ' ')} {site:.3f} < converter's {theirs:.3f} - {max_drop:g}")
    return tuple(failures)


def figure_images(accuracy: SiteAccuracy) -> dict[str, int]:
    """How many labelled images each site figure rests on: all of them, the malignant ones, the benign ones."""
    benign = accuracy.per_class.get(BENIGN, (0, 0.0))[0]
    return {"accuracy": accuracy.images, "malignant_sensitivity": accuracy.images - benign,
            "benign_specificity": benign}


def side_files(manifest: dict) -> set[str]:
    """Every file name the manifest refers to (model_file, ood.stats_file, ...): copied into the new folder."""
    names: set[str] = set()

    def walk(node) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                if key.endswith("_file") and isinstance(value, str) and value and Path(value).name == value:
                    names.add(value)
                walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    walk(manifest)
    return names


def write_model_folder(model_dir: Path, out_dir: Path, manifest: dict, calibration: SiteCalibration) -> None:
    """Copy the model and its side files, then write model.json last (it never names a file not there yet)."""
    names = side_files(manifest)
    with interrupts_deferred():  # a Ctrl-C part-way would leave a folder with some of the model's files
        copy_model_files(model_dir, out_dir, manifest, names)
        checked_write(out_dir / layout.SITE_CALIBRATION, json.dumps(calibration.to_dict(), indent=2) + "\n")
        checked_write(out_dir / layout.MANIFEST, json.dumps(manifest, indent=2) + "\n")


def copy_model_files(model_dir: Path, out_dir: Path, manifest: dict, names: set[str]) -> None:
    for name in sorted(names | {layout.LABELS}):
        source = model_dir / name
        if source.is_file():
            data = source.read_bytes()
            if name == manifest.get("model_file"):  # the .tflite carries the site's manifest: a lone copy keeps it
                data = embed_metadata(data, manifest, {other: (model_dir / other).read_bytes() for other in names
                                                       if other != name and (model_dir / other).is_file()})
            checked_write(out_dir / name, data)
        elif name != layout.LABELS:
            raise ModelError(f"{source}: named in {layout.MANIFEST} but missing, expected the folder "
                             "allx convert wrote")


def calibrate_site(model_dir: str | Path, images_dir: str | Path, out_dir: str | Path,
                   labels_csv: str | Path | None = None, flag_rate: float | None = None,
                   max_drop: float = DEFAULT_MAX_DROP, force: bool = False) -> SiteCalibration:
    """Re-calibrate a convert folder's thresholds on a site's images into `out_dir`; see the module docstring.

    With labels, a site accuracy, sensitivity or specificity more than `max_drop` below the converter's
    fails the acceptance: the record says why and NO model folder is written (new thresholds would only
    hide that the model does not work on this site's images). Without labels, the same holds when the shipped
    out-of-distribution threshold flagged most of the site's images, unless `force`."""
    model_dir, images_dir, out_dir = Path(model_dir), Path(images_dir), Path(out_dir)
    if flag_rate is not None and not (math.isfinite(flag_rate) and 0 <= flag_rate < 1):
        raise UsageError(f"--flag-rate: got {flag_rate}, expected a fraction in [0, 1)")
    if not (math.isfinite(max_drop) and 0 <= max_drop <= 1):
        raise UsageError(f"--max-drop: got {max_drop}, expected a fraction in [0, 1]")
    check_folders(model_dir, out_dir)
    model = EdgeModel.load(model_dir)  # a rejected model is refused here, as everywhere
    model.require_labels()
    mapping = read_labels_csv(Path(labels_csv), model.labels) if labels_csv is not None else None
    paths, probabilities, scores, measures, unreadable = run_images(model, site_images(images_dir))
    ood, ood_note = recalibrate_ood(model, scores, flag_rate)
    quality, quality_note = recalibrate_quality(model.manifest.quality, measures)
    notes = tuple(note for note in (ood_note, quality_note) if note)
    accuracy = site_accuracy(model, paths, probabilities, images_dir, mapping) if mapping is not None else None
    if ood is None and quality is None and accuracy is None:
        raise ModelError(f"{model_dir}: nothing to calibrate: {'; '.join(notes)}")
    calibration = SiteCalibration(str(model_dir), str(out_dir), str(images_dir), len(paths), tuple(unreadable),
                                  ood, quality, notes, accuracy,
                                  acceptance_failures(accuracy, max_drop, ood, force))
    if calibration.failures:
        return calibration
    manifest = dict(model.manifest.document)
    if ood is not None:
        manifest["ood"] = {**manifest["ood"], "threshold": ood["threshold"], "flag_rate": ood["flag_rate"]}
    if quality is not None:
        manifest["quality"] = {**quality["limits"], "calibrated_on": "site"}
    manifest["site_calibration"] = {"source_model": str(model_dir), "source_model_sha256": model.sha256,
                                    "images_dir": str(images_dir), "images": len(paths),
                                    "time_utc": calibration.time_utc,
                                    "allx_version": __version__, "ood": ood, "quality": quality,
                                    "accuracy": None if accuracy is None else asdict(accuracy)}
    write_model_folder(model_dir, out_dir, manifest, calibration)
    return calibration
