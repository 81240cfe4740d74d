"""The one inference path: a .tflite classifier (or an `allx convert` folder) from raw uint8 pixels to a Prediction.

Used by `allx-edge` and by `allx convert`'s accuracy check alike, so both see the same numbers.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from allx import layout
from allx.dihedral import dihedral_views
from allx.errors import ImageError, ModelError
from allx.images import load_image
from allx.edge_runner import metadata, ood
from allx.edge_runner.manifest_check import Manifest, check_manifest, label_problem
from allx.jsonio import read_json_sha256
from allx.edge_runner.quant import dequantize, quantize, tensor_quantization
from allx.edge_runner.runtime import find_runtime, make_interpreter
from allx.edge_runner.status import admit

BATCH = 8  # images per invoke in predict_batch by default (a small tensor arena even on a Pi)


@dataclass(frozen=True)
class Prediction:
    label: str
    score: float
    top_k: tuple[tuple[str, float], ...]
    probabilities: tuple[float, ...]
    latency_ms: float
    ood: bool | None = None
    ood_score: float | None = None


class EdgeModel:
    """A loaded classifier: `predict` gives float32 class probabilities, `classify` a Prediction.

    With `tta`, both average the probabilities over the 8 dihedral views of the image (allx.dihedral):
    8 invokes per image.
    """

    def __init__(self, interpreter, model_path: Path, labels: tuple[str, ...], manifest: Manifest,
                 runtime: str, delegate: str, threads: int, warnings: tuple[str, ...] = (),
                 ood_threshold: float | None = None, tta: bool = False, card: metadata.ModelCard | None = None):
        """`card` is what resolving the model read (metadata.read_card); without it, the file is read here."""
        self.interpreter = interpreter
        self.tta = tta
        self.model_path = model_path
        self.manifest = manifest  # checked and typed where it was read (edge_runner.manifest_check)
        self.card = card or metadata.read_card(model_path, manifest)  # sha256s, source, status, embedded files
        self.content = self.card.content  # the interpreter reads these bytes for as long as it lives
        self.runtime = runtime
        self.delegate = delegate
        self.threads = threads
        self.input = image_input(interpreter.get_input_details(), model_path)
        self.input_size = (int(self.input["shape"][1]), int(self.input["shape"][2]))
        self.input_dtype = np.dtype(self.input["dtype"])
        self.input_quantization = tensor_quantization(self.input)
        outputs = interpreter.get_output_details()
        self.output = probabilities_output(outputs, manifest, labels, model_path)
        self.num_classes = int(self.output["shape"][-1])
        self.embedding_output = named_output(outputs, manifest, "embedding", model_path)
        self.labels = check_labels(labels, self.num_classes, model_path)
        check_manifest_input(manifest, self.input, model_path)
        if tta and self.input_size[0] != self.input_size[1]:
            raise ModelError(f"{model_path}: --tta needs a square input, got {self.input_size[0]}x{self.input_size[1]}")
        embedding_size = None if self.embedding_output is None else int(np.prod(self.embedding_output["shape"]))
        self.ood_scorer, ood_warnings = ood.make_scorer(manifest, model_path.parent, embedding_size, ood_threshold,
                                                        self.card.files)
        self.warnings = tuple(warnings) + ood_warnings

    @classmethod
    def load(cls, path: str | Path, threads: int | None = None, delegate: str = "auto",
             labels: str | Path | Sequence[str] | None = None, ood_threshold: float | None = None,
             tta: bool = False, allow_rejected: bool = False) -> "EdgeModel":
        """Load a .tflite file, a model.json, or a folder written by `allx convert`.

        Labels: `labels` (a file or a list) if given, else the manifest's, else labels.txt beside the
        model, else none (predict and bench work; classify asks for them). `ood_threshold` replaces the
        calibrated out-of-distribution threshold of the manifest. `tta`: average over the dihedral views.
        A model whose manifest in force (the embedded copy first) says rejected is refused before any
        interpreter is made, unless `allow_rejected`; `rejected` then says so.
        """
        model_path, card = resolve_card(Path(path), labels)
        admit(card.manifest, model_path, allow_rejected)
        interpreter, used, threads, warnings = make_interpreter(model_path, threads, delegate, content=card.content)
        return cls(interpreter, model_path, card.labels, card.manifest, str(find_runtime()), used, threads,
                   (*card.warnings, *warnings), ood_threshold, tta, card)

    @property
    def rejected(self) -> bool:
        """Whether this is a model that failed allx convert's accuracy check (it runs only when allowed)."""
        return self.card.rejected

    @property
    def sha256(self) -> str:
        """Of the .tflite file, computed once at load: every result record carries it."""
        return self.card.sha256

    @classmethod
    def from_bytes(cls, content: bytes, name: str = "model.tflite", manifest: dict | None = None,
                   labels: Sequence[str] | None = None, threads: int | None = None) -> "EdgeModel":
        """A model held in memory (a conversion not yet written): no file, no folder; `name` labels messages."""
        card = metadata.read_card(Path(name), check_manifest(dict(manifest or {}), name), content)
        label_names = tuple(str(label) for label in labels) if labels is not None else card.manifest.labels
        interpreter, used, threads, warnings = make_interpreter(name, threads, "cpu", content=content)
        return cls(interpreter, Path(name), label_names, card.manifest, str(find_runtime()), used, threads, warnings,
                   card=card)

    def replica(self, threads: int = 1) -> "EdgeModel":
        """Another EdgeModel over this one's bytes, card, labels and out-of-distribution scorer, with an interpreter
        of its own running `threads` threads: one Python thread may classify with it while another uses this one
        (an interpreter is not thread-safe). Nothing is read or hashed again. The scorer holds no per-image state
        (each classify passes it the embedding its own interpreter just computed), so the two share it."""
        interpreter, _, threads, _ = make_interpreter(self.model_path, threads, self.delegate, content=self.content)
        twin = copy.copy(self)  # the same tensor details: they come from the same model bytes
        twin.interpreter, twin.threads = interpreter, threads
        return twin

    @property
    def has_ood(self) -> bool:
        """Whether the manifest has an out-of-distribution calibration (results carry "ood", null when this
        runner does not know the method: it warned at load)."""
        return self.manifest.ood is not None

    def load_pixels(self, path: str | Path) -> np.ndarray:
        """Read an image exactly as training did, resized to the model's input."""
        return load_image(path, self.input_size)

    def set_input(self, pixels: np.ndarray) -> None:
        expected = (*self.input_size, 3)
        if pixels.shape != expected:
            raise ImageError(f"got pixels of shape {pixels.shape}, expected {expected} (use load_pixels)")
        scale, zero_point = self.input_quantization
        tensor = quantize(pixels, scale, zero_point, self.input_dtype)
        self.interpreter.set_tensor(self.input["index"], tensor[np.newaxis])

    def invoke(self) -> None:
        self.interpreter.invoke()

    def read_probabilities(self) -> np.ndarray:
        scale, zero_point = tensor_quantization(self.output)
        return dequantize(self.interpreter.get_tensor(self.output["index"])[0], scale, zero_point)

    def read_embedding(self) -> np.ndarray | None:
        """The second output named in the manifest (for the out-of-distribution score), dequantized."""
        if self.embedding_output is None:
            return None
        scale, zero_point = tensor_quantization(self.embedding_output)
        raw = self.interpreter.get_tensor(self.embedding_output["index"])[0]
        return dequantize(raw, scale, zero_point).reshape(-1)

    def predict_with_embedding(self, pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """(probabilities, embedding or None) of one uint8 image from one invoke."""
        self.set_input(np.asarray(pixels))
        self.invoke()
        embedding = self.read_embedding()
        return self.read_probabilities().copy(), None if embedding is None else embedding.copy()

    def predict(self, pixels: np.ndarray) -> np.ndarray:
        """uint8 (H, W, 3) -> float32 (classes,); a batch (N, H, W, 3) -> (N, classes)."""
        pixels = np.asarray(pixels)
        if pixels.ndim == 4:
            batch = np.zeros((len(pixels), self.num_classes), np.float32)
            for i, one in enumerate(pixels):
                batch[i] = self.predict(one)
            return batch
        if self.tta:
            return self.predict_views(pixels)
        self.set_input(pixels)
        self.invoke()
        return self.read_probabilities().copy()

    @property
    def takes_batches(self) -> bool:
        """Whether the input's batch dimension may be resized (-1 in its signature, as Keras models convert)."""
        signature = self.input.get("shape_signature")
        return signature is not None and len(signature) == 4 and int(signature[0]) == -1

    def predict_batch(self, pixels: np.ndarray, batch: int = BATCH) -> np.ndarray:
        """uint8 (N, H, W, 3) -> float32 (N, classes), one view each (never tta): `batch` images per invoke when
        the model takes batches, else one invoke per image. The input is back to one image afterwards."""
        pixels = np.asarray(pixels)
        if not self.takes_batches or len(pixels) < 2 or batch < 2:
            return np.stack([self.predict_one(one) for one in pixels])
        size = min(batch, len(pixels))
        scale, zero_point = self.input_quantization
        out_scale, out_zero_point = tensor_quantization(self.output)
        index, results = self.input["index"], []
        self.interpreter.resize_tensor_input(index, [size, *self.input_size, 3], strict=True)
        self.interpreter.allocate_tensors()
        try:
            for start in range(0, len(pixels), size):
                chunk = pixels[start:start + size]
                padded = np.concatenate([chunk, np.repeat(chunk[-1:], size - len(chunk), axis=0)])
                self.interpreter.set_tensor(index, quantize(padded, scale, zero_point, self.input_dtype))
                self.invoke()
                raw = self.interpreter.get_tensor(self.output["index"])[:len(chunk)]
                results.append(dequantize(raw, out_scale, out_zero_point).copy())
        finally:
            self.interpreter.resize_tensor_input(index, [1, *self.input_size, 3], strict=True)
            self.interpreter.allocate_tensors()
        return np.concatenate(results)

    def predict_one(self, pixels: np.ndarray) -> np.ndarray:
        """One view of one uint8 image -> float32 (classes,), whatever tta says."""
        self.set_input(pixels)
        self.invoke()
        return self.read_probabilities().copy()

    def predict_views(self, pixels: np.ndarray) -> np.ndarray:
        """Mean probabilities over the 8 dihedral views. The image itself (view 0) runs last, so the
        embedding left in the interpreter, which the out-of-distribution score reads, is the image's own:
        the threshold was calibrated on single images."""
        views = dihedral_views(pixels)
        total = np.zeros(self.num_classes, np.float64)
        for view in views[1:] + views[:1]:
            self.set_input(view)
            self.invoke()
            total += self.read_probabilities()
        return (total / len(views)).astype(np.float32)

    def classify(self, pixels: np.ndarray, top_k: int = 1) -> Prediction:
        """Top-k labels with scores; latency is quantize + invoke + dequantize (decode not included; all 8
        views with tta)."""
        self.require_labels()
        start = time.perf_counter()
        if self.tta:
            probabilities = self.predict_views(np.asarray(pixels))
        else:
            self.set_input(np.asarray(pixels))
            self.invoke()
            probabilities = self.read_probabilities()
        latency_ms = (time.perf_counter() - start) * 1000.0
        order = np.argsort(-probabilities, kind="stable")[:max(1, top_k)]
        top = tuple((self.labels[i], float(probabilities[i])) for i in order)
        flagged, score = (None, None)
        if self.ood_scorer is not None:
            flagged, score = self.ood_scorer(probabilities, self.read_embedding())
        return Prediction(top[0][0], top[0][1], top, tuple(float(p) for p in probabilities), latency_ms,
                          flagged, score)

    def require_labels(self) -> None:
        if not self.labels:
            raise ModelError(f"{self.model_path}: no labels, expected --labels FILE, "
                             f"a {layout.LABELS} beside the model, or a {layout.MANIFEST} with labels")


def resolve_card(path: Path, labels=None) -> tuple[Path, metadata.ModelCard]:
    """The .tflite and what describes it: the metadata embedded in it (which wins over the files beside it,
    with a warning), else the folder's manifest; labels resolved as EdgeModel.load documents. Each file is
    read once, here: the card keeps the model's bytes and both sha256s."""
    model_path, folder = resolve_model(path)
    card = metadata.read_card(model_path, folder)
    return model_path, metadata.choose_labels(card, resolve_labels(labels, card.manifest, model_path), labels is not None)


def resolve_model(path: Path) -> tuple[Path, metadata.ManifestFile]:
    """(the .tflite file, its folder's manifest file or the empty ManifestFile) for a .tflite path, a model.json,
    or a convert folder."""
    if path.is_dir():
        manifest_path = path / layout.MANIFEST
        if not manifest_path.is_file():
            found = sorted(p.name for p in path.glob("*.tflite"))
            raise ModelError(f"{path}: folder without {layout.MANIFEST} (found {found or 'no .tflite files'}), "
                             "expected a .tflite file or a folder written by `allx convert`")
        return model_from_manifest(manifest_path)
    if path.name == layout.MANIFEST or path.suffix == ".json":
        return model_from_manifest(path)
    own = path.with_suffix(".json")  # model_int8.json / model_int8.rejected.json written by allx convert
    if own.is_file() and own.name != layout.MANIFEST:
        found = read_manifest(own)
        if found.manifest.model_file == path.name:
            return path, found
    beside = path.parent / layout.MANIFEST
    if beside.is_file():
        found = read_manifest(beside)
        if found.manifest.model_file == path.name:
            return path, found
    return path, metadata.ManifestFile()


def model_from_manifest(manifest_path: Path) -> tuple[Path, metadata.ManifestFile]:
    found = read_manifest(manifest_path)
    if not found.manifest.model_file:
        raise ModelError(f"{manifest_path}: got model_file={found.manifest.model_file!r}, "
                         "expected the .tflite file name")
    return manifest_path.parent / found.manifest.model_file, found


def read_manifest(path: Path) -> metadata.ManifestFile:
    """model.json read once with allx.jsonio's limits into a checked Manifest (edge_runner.manifest_check),
    with the sha256 of the bytes read."""
    document, sha256 = read_json_sha256(path, "unreadable manifest", ModelError)
    manifest = check_manifest(document, path)
    metadata.check_format(manifest.format or f"{metadata.FORMAT_NAME}/{metadata.FORMAT_VERSION}", path)
    return metadata.ManifestFile(manifest, path, sha256)


def resolve_labels(labels, manifest: Manifest, model_path: Path) -> tuple[str, ...]:
    if labels is not None and not isinstance(labels, (str, Path)):
        given = tuple(str(label) for label in labels)
        if label_problem(given):
            raise ModelError(f"labels: got {list(given)}, expected distinct, non-blank class names "
                             f"({label_problem(given)})")
        return given
    if labels is not None:
        return read_labels(Path(labels))
    if manifest.labels:
        return manifest.labels
    beside = model_path.parent / layout.LABELS
    return read_labels(beside) if beside.is_file() else ()


def read_labels(path: Path) -> tuple[str, ...]:
    try:
        if path.exists() and not path.is_file():  # a FIFO or device would block the read forever
            raise ModelError(f"{path}: not a regular file, expected a labels file")
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise ModelError(f"{path}: no such labels file") from None
    except (OSError, UnicodeDecodeError) as err:
        raise ModelError(f"{path}: unreadable labels file ({err.__class__.__name__}), expected text") from None
    labels = tuple(line.strip() for line in lines if line.strip())
    if not labels:
        raise ModelError(f"{path}: empty labels file, expected one label per line")
    if label_problem(labels):
        raise ModelError(f"{path}: {label_problem(labels)}, expected distinct class names, one per line")
    return labels


def image_input(inputs: list[dict], model_path: Path) -> dict:
    if len(inputs) != 1:
        raise ModelError(f"{model_path}: got {len(inputs)} inputs, expected 1 image input")
    shape = tuple(int(n) for n in inputs[0]["shape"])
    if len(shape) != 4 or shape[0] != 1 or shape[3] != 3 or min(shape) < 1:
        raise ModelError(f"{model_path}: input is not an image tensor, got shape {shape}, expected (1, H, W, 3)")
    return inputs[0]


def probabilities_output(outputs: list[dict], manifest: Manifest, labels: tuple[str, ...], model_path: Path) -> dict:
    """The output named in the manifest, else the only one, else the one with len(labels) classes."""
    chosen = named_output(outputs, manifest, "probabilities", model_path)
    if chosen is None and len(outputs) == 1:
        chosen = outputs[0]
    if chosen is None:
        matches = [o for o in outputs if labels and int(o["shape"][-1]) == len(labels)]
        if len(matches) != 1:
            shapes = [tuple(int(n) for n in o["shape"]) for o in outputs]
            raise ModelError(f"{model_path}: cannot tell which of {len(outputs)} outputs {shapes} holds the "
                             "class probabilities, expected outputs.probabilities.name in model.json")
        chosen = matches[0]
    shape = tuple(int(n) for n in chosen["shape"])
    if len(shape) != 2 or shape[0] != 1:
        raise ModelError(f"{model_path}: class output has shape {shape}, expected (1, classes)")
    return chosen


def named_output(outputs: list[dict], manifest: Manifest, role: str, model_path: Path) -> dict | None:
    name = manifest.output_names.get(role)
    if not name:
        return None
    for output in outputs:
        if output["name"] == name:
            return output
    names = [o["name"] for o in outputs]
    raise ModelError(f"{model_path}: model.json names {role} output {name!r}, got outputs {names}")


def check_labels(labels: tuple[str, ...], num_classes: int, model_path: Path) -> tuple[str, ...]:
    if labels and len(labels) != num_classes:
        raise ModelError(f"{model_path}: model gives {num_classes} class scores, got {len(labels)} labels "
                         f"({', '.join(labels[:6])}{', ...' if len(labels) > 6 else ''})")
    return labels


def check_manifest_input(manifest: Manifest, details: dict, model_path: Path) -> None:
    declared = manifest.input.shape
    actual = [int(n) for n in details["shape"]]
    if declared and [int(n) for n in declared] != actual:
        raise ModelError(f"{model_path}: model.json declares input shape {declared}, got {actual} in the model")
