"""Out-of-distribution calibration: a pooled-embedding output, Mahalanobis statistics, and the threshold.

Everything is measured on the CONVERTED model through edge_runner.EdgeModel (the device's numbers, int8
effects included): class means and a shared covariance of the train embeddings, in the top principal
axes, and the threshold that flags a chosen fraction of the held-out (val) images. Why Mahalanobis and
why these defaults: benchmarks/ood.py measures the alternatives (max-softmax, energy, other k) on real data.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from allx import layout
from allx.errors import DataError, ImageError, ModelError
from allx.images import load_image
from allx.convert.modes import DEFAULT_FLAG_RATE
from allx.edge_runner.ood import MahalanobisStats, mahalanobis_scores

METHOD = "mahalanobis"
DEFAULT_COMPONENTS = 128  # principal axes kept; measured: 64..256 flag all OOD sets, fewer miss the other lab
MAX_FIT_IMAGES = 5000  # train images the statistics are fit on (stratified draw beyond that)
EMBEDDING_LAYER = "ood_embedding"
TRADEOFF_RATES = (0.01, 0.02, 0.04, 0.05, 0.10)
Progress = Callable[[str, int, int], None]  # progress(stage, done, total)


@dataclass(frozen=True)
class OodCalibration:
    """The fitted statistics, the threshold, and what it costs on held-out and generated images."""

    components: int
    threshold: float
    flag_rate: float  # requested fraction of held-out in-distribution images flagged
    held_out_subset: str
    held_out_flagged: float  # fraction actually flagged at the threshold
    fit_images: int
    held_out_images: int
    tradeoff: tuple[tuple[float, float], ...]  # (fraction of held-out images flagged, threshold)
    generated_flagged: dict[str, float]  # group of generated non-smear images -> fraction flagged
    stats: MahalanobisStats = field(repr=False)
    method: str = METHOD

    def to_manifest(self, stats_file: str) -> dict:
        return {"method": self.method, "threshold": self.threshold, "stats_file": stats_file,
                "score": "squared Mahalanobis distance of the pooled embedding to the nearest class mean "
                         f"(shared covariance, top {self.components} principal axes); flagged when above threshold",
                "components": self.components, "embedding_size": self.stats.dimensions,
                "flag_rate": self.flag_rate, "held_out_subset": self.held_out_subset,
                "held_out_flagged": self.held_out_flagged, "fit_images": self.fit_images,
                "held_out_images": self.held_out_images,
                "tradeoff": [{"held_out_flagged": rate, "threshold": value} for rate, value in self.tradeoff],
                "generated_flagged": self.generated_flagged}


def feature_map_of(model):
    """The backbone's feature map: the 4-D input of the nested "head" (the `allx train` layout), else None."""
    try:
        tensor = model.get_layer("head").input
    except (ValueError, AttributeError):  # no layer named head, or one called on several inputs
        return None
    return tensor if len(tuple(tensor.shape)) == 4 else None


def with_embedding(model):
    """The same classifier with a second output, the global-average-pooled feature map; None when the
    model's structure does not allow it (no head on a feature map, several outputs, or an embedding as
    wide as the class output, which the device could not tell apart)."""
    import keras

    feature_map = feature_map_of(model)
    if feature_map is None or len(model.outputs) != 1 or feature_map.shape[-1] == model.outputs[0].shape[-1]:
        return None
    pooled = keras.layers.GlobalAveragePooling2D(name=EMBEDDING_LAYER)(feature_map)
    return keras.Model(model.input, [model.outputs[0], pooled], name=model.name)


@dataclass(frozen=True)
class OodOutcome:
    """What a conversion adds for the warning: the manifest section (None when off), report text, the side file."""

    section: dict | None
    report: str
    stats: bytes | None = None
    note: str | None = None  # why the warning is off


def plan_model(model, requested: bool | None):
    """(the Keras model to convert, None) with the embedding output, or (model, why not) without it.

    `requested` None means "on when the structure allows it"; True insists (an error when it cannot).
    """
    if requested is False:
        return model, "off (--no-ood)"
    two = with_embedding(model)
    if two is None:
        reason = ("the model has no nested 'head' on a 4-D feature map (the `allx train` layout) to pool an "
                  "embedding from")
        if requested:
            raise ModelError(f"got --ood, but {reason}; expected a model from allx train (or use --no-ood)")
        return model, f"off: {reason}"
    return two, None


def outcome_for(candidate_tflite: bytes, tensors, passed: bool, source, out_dir: Path, flag_rate: float, seed: int,
                progress: Progress | None = None, stats_name: str = layout.ood_stats_name("float32")) -> OodOutcome:
    """Calibrate a converted model that passed its check (a rejected one is not worth the time)."""
    if not passed:
        note = "not calibrated: the model failed the accuracy check"
        return OodOutcome(None, report_section(None, note), None, note)
    calibration = calibrate_tflite(candidate_tflite, tensors, source.labels, source.data_dir, source.split, out_dir,
                                   flag_rate, seed, progress)
    return OodOutcome(calibration.to_manifest(stats_name), report_section(calibration), stats_bytes(calibration.stats))


def fit_mahalanobis(embeddings: np.ndarray, labels: np.ndarray, components: int) -> MahalanobisStats:
    """Class means and shared within-class covariance of `embeddings` in their top principal axes, whitened."""
    data = np.asarray(embeddings, dtype=np.float64)
    labels = np.asarray(labels)
    classes = np.unique(labels)
    mean = data.mean(axis=0)
    _, singular, axes = np.linalg.svd(data - mean, full_matrices=False)
    rank = int(np.sum(singular > singular[0] * 1e-6)) if singular.size and singular[0] > 0 else 0
    k = min(components, rank, len(data) - len(classes))
    if k < 1:
        raise DataError(f"got {len(data)} fit images of {len(classes)} classes with embedding rank {rank}, expected "
                        "more varied train images to fit the out-of-distribution statistics")
    projected = (data - mean) @ axes[:k].T
    centres = np.stack([projected[labels == c].mean(axis=0) for c in classes])
    residuals = projected - centres[np.searchsorted(classes, labels)]
    covariance = residuals.T @ residuals / (len(data) - len(classes))
    values, vectors = np.linalg.eigh(covariance)
    whitening = vectors / np.sqrt(np.maximum(values, values.max() * 1e-6))  # a flat axis must not blow up
    return MahalanobisStats(mean.astype(np.float32), (axes[:k].T @ whitening).astype(np.float32),
                            (centres @ whitening).astype(np.float32))


def threshold_for(scores: np.ndarray, flag_rate: float) -> float:
    """The smallest score that leaves at most `flag_rate` of `scores` strictly above it."""
    return float(np.quantile(np.asarray(scores, dtype=np.float64), 1.0 - flag_rate, method="higher"))


def model_outputs(edge_model, images) -> tuple[np.ndarray, np.ndarray]:
    """(probabilities, embeddings) of uint8 images through the device's inference code."""
    probabilities, embeddings = [], []
    for pixels in images:
        edge_model.set_input(pixels)
        edge_model.invoke()
        probabilities.append(edge_model.read_probabilities().copy())
        embeddings.append(edge_model.read_embedding().copy())
    if not probabilities:
        return np.zeros((0, edge_model.num_classes), np.float32), np.zeros((0, 0), np.float32)
    return np.stack(probabilities), np.stack(embeddings)


def read_images(data_dir: Path, relpaths, size, progress: Callable[[int, int], None] | None):
    """Pixels of each readable image (a broken one is skipped: it says nothing about the distribution)."""
    for index, relpath in enumerate(relpaths):
        try:
            yield relpath, load_image(Path(data_dir) / relpath, size)
        except ImageError:
            pass
        if progress:
            progress(index + 1, len(relpaths))


def subset_embeddings(edge_model, data_dir: Path, split, relpaths, progress) -> tuple[np.ndarray, np.ndarray]:
    """(embeddings, class indices) of the readable images among `relpaths`, streamed (no stack of pixels)."""
    labels = []

    def images():
        for relpath, image in read_images(data_dir, relpaths, edge_model.input_size, progress):
            labels.append(split.classes.index(relpath.split("/")[0]))
            yield image

    embeddings = model_outputs(edge_model, images())[1]
    if not labels:
        raise DataError(f"none of {len(relpaths)} images could be read, expected some to calibrate the "
                        "out-of-distribution score")
    return embeddings, np.asarray(labels)


def calibrate(edge_model, data_dir: str | Path, split, flag_rate: float = DEFAULT_FLAG_RATE,
              components: int = DEFAULT_COMPONENTS, seed: int = 0, progress: Progress | None = None) -> OodCalibration:
    """Fit on train embeddings, threshold on val (else test), and measure the generated non-smear images."""
    from allx.convert.ood_images import make_non_smear_images
    from allx.convert.representative import draw_representative

    if edge_model.embedding_output is None:
        raise DataError("the converted model has no embedding output, expected one for the out-of-distribution score")
    step = (lambda stage: (lambda done, total: progress(stage, done, total))) if progress else (lambda stage: None)
    fit_paths = draw_representative(split, min(MAX_FIT_IMAGES, len(split.train)), seed)
    embeddings, labels = subset_embeddings(edge_model, Path(data_dir), split, fit_paths,
                                           step("out-of-distribution: train embeddings"))
    stats = fit_mahalanobis(embeddings, labels, components)
    held_out = "val" if split.val else "test"
    if not split.subset(held_out):
        raise DataError("the split has no val or test images, expected held-out images to set the "
                        "out-of-distribution threshold on")
    held_embeddings, _ = subset_embeddings(edge_model, Path(data_dir), split, split.subset(held_out),
                                           step(f"out-of-distribution: {held_out} threshold"))
    scores = mahalanobis_scores(held_embeddings, stats)
    threshold = threshold_for(scores, flag_rate)
    generated = {name: float(np.mean(mahalanobis_scores(model_outputs(edge_model, images)[1], stats) > threshold))
                 for name, images in make_non_smear_images(edge_model.input_size, seed).items()}
    tradeoff = tuple((rate, threshold_for(scores, rate)) for rate in TRADEOFF_RATES)
    return OodCalibration(int(stats.projection.shape[1]), threshold, flag_rate, held_out,
                          float(np.mean(scores > threshold)), len(embeddings), len(scores), tradeoff, generated, stats)


def calibrate_tflite(tflite: bytes, tensors, labels: tuple[str, ...], data_dir: str | Path, split,
                     scratch_parent: Path, flag_rate: float = DEFAULT_FLAG_RATE, seed: int = 0,
                     progress: Progress | None = None) -> OodCalibration:
    """`calibrate` for converted bytes; `tensors` = (input, probabilities, embedding) TensorSpecs."""
    import json
    import tempfile

    from allx.edge_runner.model import EdgeModel

    _, probabilities, embedding = tensors
    if embedding is None:
        raise DataError("the converted model has no embedding output, expected one for the out-of-distribution score")
    with tempfile.TemporaryDirectory(dir=scratch_parent, prefix=".ood-") as scratch:
        (Path(scratch) / "model.tflite").write_bytes(tflite)
        manifest = {"model_file": "model.tflite", "labels": list(labels),
                    "outputs": {"probabilities": probabilities.to_dict(), "embedding": embedding.to_dict()}}
        (Path(scratch) / layout.MANIFEST).write_text(json.dumps(manifest), encoding="utf-8")
        return calibrate(EdgeModel.load(scratch), data_dir, split, flag_rate, seed=seed, progress=progress)


def stats_bytes(stats: MahalanobisStats) -> bytes:
    """The side file (.npz) that allx-edge reads with numpy."""
    import io

    buffer = io.BytesIO()
    np.savez(buffer, mean=stats.mean, projection=stats.projection, class_means=stats.class_means)
    return buffer.getvalue()


def summary_line(section: dict | None, note: str | None) -> str:
    """One line for `allx convert`'s terminal output: what the warning does, or why it is off."""
    if section is None:
        return f"out-of-distribution warning {note or 'off'}"
    generated = ", ".join(f"{name} {rate:.0%}" for name, rate in section.get("generated_flagged", {}).items())
    return (f"out-of-distribution warning: {section['method']} ({section.get('components')} axes), threshold "
            f"{section['threshold']:.4g} flags {section.get('held_out_flagged', 0):.1%} of "
            f"{section.get('held_out_images')} {section.get('held_out_subset')} images; generated non-smear images "
            f"flagged: {generated}")


def report_section(calibration: OodCalibration | None, note: str | None = None) -> str:
    """report.md's out-of-distribution part: the method, the trade-off table, generated images flagged."""
    lines = ["## Out-of-distribution warning", ""]
    if calibration is None:
        note = note or "off"
        return "\n".join(lines + [note[:1].upper() + note[1:] + "."]) + "\n"
    c = calibration
    lines += [f"Method: {c.method} distance of the pooled embedding to the nearest class mean (top {c.components} "
              f"principal axes, shared covariance), fit on {c.fit_images} train images through the converted model. "
              f"Threshold {c.threshold:.4g} flags {c.held_out_flagged:.1%} of {c.held_out_images} {c.held_out_subset} "
              f"images (asked: at most {c.flag_rate:.1%}); allx-edge marks such results "
              "\"uncertain: unlike training images\" (`--ood-threshold` overrides).", "",
              f"| {c.held_out_subset} images flagged | threshold |", "|---|---|"]
    lines += [f"| {rate:.0%} | {value:.4g} |" for rate, value in c.tradeoff]
    lines += ["", "Generated non-smear images flagged: " +
              ", ".join(f"{name} {rate:.0%}" for name, rate in c.generated_flagged.items()) + "."]
    return "\n".join(lines) + "\n"
