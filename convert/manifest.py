"""What `allx convert` leaves in OUT_DIR: the .tflite with its manifest embedded, model.json, labels.txt, report.md."""

from __future__ import annotations

import datetime
import json
import struct
from pathlib import Path

from allx import layout
from allx.convert.check import CheckPredictions, CheckReport
from allx.convert.edgetpu import METADATA_EMBEDDED
from allx.edge_runner.metadata import TFLITE_IDENTIFIER, embed_metadata, metadata_tools  # noqa: F401  (convert checks the tools first)
from allx.edge_runner.manifest_check import STATUSES
from allx.errors import AllxError
from allx.files import csv_text, interrupts_deferred, write_atomic
from allx.edge_runner.runtime import find_runtime

FORMAT = "allx-tflite/1"


def versions() -> dict:
    import tensorflow as tf

    import allx

    return {"tensorflow": tf.__version__, "allx": allx.__version__, "runtime": str(find_runtime())}


def build_manifest(model_file: str, check: CheckReport, tensors, source: dict, extra: dict) -> dict:
    """model.json, the manifest allx-edge reads; `tensors` = (input TensorSpec, probabilities, embedding or None)."""
    input_spec, probabilities, embedding = tensors
    height, width = input_spec.shape[1:3]
    outputs = {"probabilities": probabilities.to_dict()}
    if embedding is not None:
        outputs["embedding"] = embedding.to_dict()
    return {
        "kind": layout.RecordKind.MANIFEST.value, "format": FORMAT, "model_file": model_file, "precision": check.precision, "status":
        STATUSES[0] if check.passed else STATUSES[1], "labels": list(check.labels), "input": input_spec.to_dict(),
        "outputs": outputs,
        "preprocessing": f"raw RGB uint8 0..255, resized bilinear to {height}x{width} (allx.images); "
                         "scaling inside the model",
        **extra, "check": check.to_dict(), "thresholds": check.thresholds.to_dict(), **source,
        "versions": versions(), "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }


def predictions_csv(predictions: CheckPredictions, labels: tuple[str, ...]) -> str:
    """One row per checked image: truth, both top-1 labels, and the converted model's probabilities."""
    header = ["path", "truth", "float_label", "quantized_label", *[f"p_{label}" for label in labels]]
    float_top = predictions.float_probabilities.argmax(axis=1)
    quant_top = predictions.quantized_probabilities.argmax(axis=1)
    rows = ([path, labels[predictions.truth[i]], labels[float_top[i]], labels[quant_top[i]],
             *[f"{p:.6f}" for p in predictions.quantized_probabilities[i]]] for i, path in enumerate(predictions.paths))
    return csv_text(header, rows, lineterminator="\n")


def output_names(precision: str, passed: bool) -> dict[str, str]:
    """File names for a result (allx.layout): a rejected model's names never overwrite a passed one's."""
    return layout.passed_names(precision) if passed else layout.rejected_names(precision)


def publish(out_dir: Path, tflite: bytes, manifest: dict, report_md: str, predictions_text: str,
            names: dict[str, str], side_files: dict[str, bytes] | None = None) -> dict[str, Path]:
    """Write every file atomically, the manifest last so it never names a model that is not there yet.

    The .tflite carries the manifest and `side_files` (e.g. the OOD statistics) embedded; they are also
    written beside it for people (the embedded copy wins when allx-edge finds them different).
    """
    side_files = side_files or {}
    model_bytes = embed_metadata(tflite, manifest, side_files)  # before any write: a failure leaves OUT_DIR as it was
    written = {}
    with interrupts_deferred():  # a Ctrl-C now would leave a new model beside the old model.json
        for name, data in side_files.items():
            written[name] = write_atomic(out_dir / name, data)
        written["model"] = write_atomic(out_dir / names["model"], model_bytes)
        written["labels"] = write_atomic(out_dir / names["labels"], "\n".join(manifest["labels"]) + "\n")
        written["predictions"] = write_atomic(out_dir / names["predictions"], predictions_text)
        written["report"] = write_atomic(out_dir / names["report"], report_md)
        if "precision_manifest" in names:
            written["precision_manifest"] = write_atomic(out_dir / names["precision_manifest"],
                                                         json.dumps(manifest, indent=2) + "\n")
        written["manifest"] = write_atomic(out_dir / names["manifest"], json.dumps(manifest, indent=2) + "\n")
    return written


def embed_in_compiled(path: Path, manifest: dict, side_files: dict[str, bytes]) -> str:
    """Give the Edge TPU-compiled model the metadata the int8 model carries (embed_metadata, as publish does;
    the manifest under the compiled file's name), so it works alone too. METADATA_EMBEDDED, or why not: then
    the compiled file stays as the compiler wrote it (usable with model.json and labels.txt beside it)."""
    kept = f"no metadata embedded in {path.name} (kept as the compiler wrote it; use it beside {layout.MANIFEST})"
    try:
        data = path.read_bytes()
        if data[4:8] != TFLITE_IDENTIFIER:
            return f"{kept}: got no TFLite identifier in the file, expected {TFLITE_IDENTIFIER.decode()}"
        embedded = embed_metadata(data, {**manifest, "model_file": path.name}, side_files)
    except (IndexError, ValueError, TypeError, OverflowError, struct.error) as err:  # a flatbuffer it cannot parse
        return f"{kept}: unreadable flatbuffer ({err.__class__.__name__})"
    except (AllxError, OSError) as err:
        return f"{kept}: {err}"
    write_atomic(path, embedded)
    return METADATA_EMBEDDED
