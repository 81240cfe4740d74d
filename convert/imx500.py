"""`allx convert --imx500`: the network for the Raspberry Pi AI Camera (Sony IMX500), with the same accuracy check.

The work is split between two environments. Here (Keras 3): the model, its split and labels are
resolved as for every target; the network is exported as a description and weights
(convert.imx500_export); the representative images are drawn as for --int8; the check and fidelity
images are read once by allx.images and the float model scores them. In the tool environment
(convert.imx500_env; Keras 2.15, MCT, Sony's converter): convert/imx500_tool.py rebuilds the network,
quantizes it with MCT, scores the same images with MCT's exported model on the CPU and runs imxconv-tf.
Back here the scores go through the same paired gate as int8 (convert.check.summarize), and the
outputs are published under passed or rejected names.
"""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from allx import layout
from allx.convert import calibrate_quality, imx500_env, operating
from allx.convert.check import BATCH, CheckPredictions, CheckReport, summarize
from allx.convert.files import check_writable
from allx.convert.imx500_export import CHIP_BYTES, describe_model, weight_bytes
from allx.convert.imx500_network import write_network
from allx.convert.manifest import predictions_csv
from allx.convert.modes import ConvertOptions
from allx.convert.pipeline import ConvertResult, check_subset, data_fingerprint, fidelity_set
from allx.convert.representative import draw_representative, load_representative
from allx.convert.source import Source, load_source
from allx.edge_runner.manifest_check import PASSED, REJECTED
from allx.errors import ConversionError, DataError, ModelError
from allx.files import interrupts_deferred, sha256_file, write_atomic
from allx.images import read_batches
from allx.train.evaluate import keras_probabilities

PRECISION = "imx500"
TOOL_SCRIPT = Path(__file__).with_name("imx500_tool.py")
REFERENCE_IMAGES = 8  # images on which the rebuilt Keras 2 network must reproduce the Keras 3 model
MAX_REBUILD_DIFFERENCE = 1e-4  # probabilities; measured at most 3e-6 (float32 round-off, TF 2.21 vs 2.15)
MANIFEST_FORMAT = "allx-imx500/1"
MEMORY_REPORT_SUFFIX = "MemoryReport.json"


def convert_imx500(model_path: str | Path, out_dir: str | Path, options: ConvertOptions,
                   data_dir: str | Path | None = None, split_path: str | Path | None = None,
                   progress=None) -> ConvertResult:
    """Everything `allx convert --imx500` does; AllxError for bad input, the result (passed or not) otherwise."""
    out_dir = check_writable(Path(out_dir))
    log_path = out_dir / layout.CONVERT_LOG
    write_atomic(log_path, f"allx convert {model_path} -> {out_dir} ({PRECISION})\n")
    step = (lambda stage: (lambda done, total: progress(stage, done, total))) if progress else (lambda stage: None)
    source = load_source(model_path, data_dir, split_path, step("scanning data for a split"))
    check_fits(source.model.count_params(), source.model_path)  # before anything else: ResNet50 stops here
    description, weights = describe_model(source.model)
    env = imx500_env.ensure(log_path, (lambda text: progress(f"tool environment: {text}", 0, 1)) if progress else None)
    subset = check_subset(source.split, options.check_subset)
    fidelity = fidelity_set(source.split, options.fidelity_images, options.seed)
    with tempfile.TemporaryDirectory(dir=out_dir, prefix=".imx500-work-") as scratch:
        work = Path(scratch)
        write_network(work, description, weights)
        representative = draw_representative(source.split, options.representative_count, options.seed)
        np.save(work / "representative.npy", load_representative(source.data_dir, representative, source.input_size,
                                                                 step("loading representative images")))
        scored = score_float(source, subset, fidelity.relpaths, work, step("float model on the check images"))
        np.save(work / "reference.npy", scored.float_probabilities[:REFERENCE_IMAGES])
        tool = run_tool(env, work, log_path, step("MCT quantization and imxconv-tf (tool environment)"))
        quantized = np.load(work / "probabilities.npy")
        report, predictions = judge(scored, quantized, source, subset, fidelity, options, tool)
        converted = work / "converted"
        memory = memory_report(converted)
        fits = require_fit(memory, converted, out_dir)
        extra = manifest_extra(source, options, description, weights, tool, memory, fits, len(representative))
        extra.update(operating.sections_for(predictions, source.split, subset, source.labels,
                                            options.target_sensitivity, source.run_point))
        extra.update(calibrate_quality.quality_section(source.data_dir, source.split.train, source.input_size,
                                                       step("measuring image quality of train images")))
        manifest = build_manifest(report, source, extra)
        files = publish(out_dir, converted, manifest, predictions_csv(predictions, source.labels), report)
    return ConvertResult(report, files, manifest)


def check_fits(weights: int, model_path: Path) -> None:
    """Refuse up front a network whose int8 weights alone (a byte each) exceed the chip's 8 MB (ResNet50: 23.5 M)."""
    bytes_at_int8 = weights
    if bytes_at_int8 > CHIP_BYTES:
        raise ModelError(f"{model_path}: got {bytes_at_int8 / 1e6:.1f} M weights ({bytes_at_int8 / 2 ** 20:.1f} MB at "
                         f"8 bits), expected at most {CHIP_BYTES / 2 ** 20:.0f} MB: the IMX500 holds the whole network "
                         "in its 8 MB (ResNet50 does not fit; EfficientNet-Lite0 and MobileNetV2 do)")


@dataclass(frozen=True)
class Scored:
    """The images both models score: the check subset's readable images first, then the extra fidelity images."""

    paths: tuple[str, ...]
    truth: np.ndarray  # of the check images
    float_probabilities: np.ndarray
    check_count: int
    skipped: tuple[str, ...]
    seconds_per_image: float = 0.0


def score_float(source: Source, subset: str, fidelity_paths: tuple[str, ...], work: Path, progress) -> Scored:
    """Read the check and fidelity images once (images.npy for the tool) and score them with the float model."""
    check_paths, truth = source.split.subset(subset), source.split.labels(subset)
    extra = tuple(p for p in fidelity_paths if p not in set(check_paths))
    relpaths = (*check_paths, *extra)
    images = np.lib.format.open_memmap(work / "images.npy", "w+", np.uint8, (len(relpaths), *source.input_size, 3))
    kept, kept_truth, skipped, probabilities = [], [], [], []
    for batch in read_batches(source.data_dir, relpaths, source.input_size, BATCH, progress):
        skipped.extend(reason for _, reason in batch.unreadable)
        if batch.indices:
            images[len(kept):len(kept) + len(batch.indices)] = batch.pixels
            probabilities.append(keras_probabilities(source.model, batch.pixels, len(source.labels)))
            kept.extend(relpaths[i] for i in batch.indices)
            kept_truth.extend(truth[i] for i in batch.indices if i < len(check_paths))
    checked = len(kept_truth)
    if not checked:
        raise DataError(f"no readable images in the {subset} subset ({len(skipped)} unreadable), expected some to check")
    images.flush()
    del images
    if len(kept) < len(relpaths):  # the tool reads exactly the readable images, in this order
        trimmed = np.load(work / "images.npy", mmap_mode="r")[:len(kept)].copy()
        np.save(work / "images.npy", trimmed)
    return Scored(tuple(kept), np.asarray(kept_truth), np.concatenate(probabilities), checked, tuple(skipped))


def run_tool(env: imx500_env.ToolEnv, work: Path, log_path: Path, progress) -> dict:
    """convert/imx500_tool.py in the tool environment; its output goes to the conversion log."""
    if progress:
        progress(0, 1)
    with open(log_path, "a") as log:
        log.write(f"$ {env.python} {TOOL_SCRIPT} {work}\n")
        log.flush()
        done = subprocess.run([str(env.python), str(TOOL_SCRIPT), str(work)], stdout=log, stderr=subprocess.STDOUT,
                              env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2",  # the tool's bin first: imxconv-tf
                                   "PATH": os.pathsep.join([str(env.python.parent), os.environ.get("PATH", "")])})
    if done.returncode != 0 or not (work / "result.json").is_file():
        raise ConversionError(f"the IMX500 tool step failed (exit {done.returncode}), expected MCT and imxconv-tf to "
                              f"finish; see {log_path}")
    tool = json.loads((work / "result.json").read_text())
    if tool["rebuild_max_difference"] > MAX_REBUILD_DIFFERENCE:
        raise ConversionError(f"the network rebuilt in Keras 2 differs from the Keras 3 model by "
                              f"{tool['rebuild_max_difference']:.2g} in probability, expected at most "
                              f"{MAX_REBUILD_DIFFERENCE:g} (the weight transfer is broken)")
    if progress:
        progress(1, 1)
    return tool


def judge(scored: Scored, quantized: np.ndarray, source: Source, subset: str, fidelity, options: ConvertOptions,
          tool: dict) -> tuple[CheckReport, CheckPredictions]:
    """The paired gate of int8 (convert.check.summarize) on the check images; fidelity on train+val."""
    n = scored.check_count
    if quantized.shape != scored.float_probabilities.shape:
        raise ConversionError(f"got {quantized.shape} probabilities from the tool, expected "
                              f"{scored.float_probabilities.shape}")
    predictions = CheckPredictions(scored.paths[:n], scored.truth, scored.float_probabilities[:n], quantized[:n])
    in_fidelity = np.isin(np.asarray(scored.paths), np.asarray(fidelity.relpaths)) if fidelity.relpaths else None
    changed = scored.float_probabilities.argmax(axis=1) != quantized.argmax(axis=1)
    counts = None if in_fidelity is None else (int(changed[in_fidelity].sum()), int(in_fidelity.sum()),
                                                fidelity.subsets)
    # MCT's fake-quantized model on this CPU: a stand-in for the check's numbers, not the camera's speed
    per_image_ms = 1000.0 * tool["seconds"]["score"] / max(len(quantized), 1)
    report = summarize(predictions, source.labels, PRECISION, subset, options.thresholds, [per_image_ms],
                       scored.skipped, counts)
    return report, predictions


def memory_report(converted: Path) -> dict | None:
    """The converter's memory report (JSON), or None when it wrote none."""
    found = sorted(converted.glob(f"*{MEMORY_REPORT_SUFFIX}")) if converted.is_dir() else []
    return json.loads(found[0].read_text()) if found else None


def chip_fit(memory: dict | None) -> bool | None:
    """The report's "Fit In Chip", wherever the converter's version puts it."""
    if memory is None:
        return None
    if "Fit In Chip" in memory:
        return bool(memory["Fit In Chip"])
    for value in memory.values():
        if isinstance(value, dict):
            found = chip_fit(value)
            if found is not None:
                return found
    return None


def require_fit(memory: dict | None, converted: Path, out_dir: Path) -> bool | None:
    """The report's "Fit In Chip"; a network that does not fit is a ConversionError (its report kept in OUT_DIR)."""
    fits = chip_fit(memory)
    if fits is not False:
        return fits
    kept = []
    for report in converted.glob(f"*{MEMORY_REPORT_SUFFIX}"):
        kept.append(write_atomic(out_dir / report.name, report.read_bytes()).name)
    usage = (memory.get("Memory Report") or memory).get("Memory Usage", "?")
    available = (memory.get("Memory Report") or memory).get("Total Memory Available On Chip", "8.00MB")
    raise ConversionError(f"the network does not fit in the IMX500: got {usage} of memory, expected at most "
                          f"{available} (\"Fit In Chip\": false; see {', '.join(kept) or 'the memory report'}); "
                          "a smaller backbone or input size is needed")


def manifest_extra(source: Source, options: ConvertOptions, description: dict, weights: dict, tool: dict,
                   memory: dict | None, fits: bool | None, representative_count: int) -> dict:
    norm = description["input_normalization"]
    return {
        "target": "imx500", "representative_count": representative_count,
        "imx500": {"fit_in_chip": fits, "memory_report": memory, "weights_int8_bytes": weight_bytes(weights),
                   "converter_returncode": tool["converter"]["returncode"], "tool_seconds": tool["seconds"],
                   "rebuild_max_difference": tool["rebuild_max_difference"], "versions": tool["versions"],
                   "input_normalization": norm},
        "ood_note": "off: the IMX500 network outputs class probabilities only",
        "data_fingerprint": data_fingerprint(source), "origin": source.origin,
    }


def build_manifest(report: CheckReport, source: Source, extra: dict) -> dict:
    """model.json for this target: the same kind of record as the .tflite targets' (labels, input, operating
    point, status, check), with the packaged network in place of a .tflite."""
    import datetime

    import allx

    height, width = source.input_size
    norm = extra["imx500"]["input_normalization"]
    return {
        "kind": layout.RecordKind.MANIFEST.value, "format": MANIFEST_FORMAT,
        "model_file": layout.IMX500_PACKAGE if report.passed else layout.imx500_rejected(layout.IMX500_PACKAGE),
        "precision": PRECISION, "status": PASSED if report.passed else REJECTED, "labels": list(report.labels),
        "input": {"shape": [1, height, width, 3], "dtype": "uint8", "scale": 1.0, "zero_point": 0},
        "outputs": {"probabilities": {"shape": [1, len(report.labels)], "dtype": "float32"}},
        "preprocessing": (f"raw RGB uint8 0..255 from the camera, {height}x{width}; the network's first layer (a 1x1 "
                          f"depthwise convolution) computes x * {norm['scale']} + {norm['offset']} per channel"),
        **extra, "check": report.to_dict(), "thresholds": report.thresholds.to_dict(),
        "source_model": str(source.model_path.resolve()), "source_model_sha256": sha256_file(source.model_path),
        "data_dir": str(source.data_dir.resolve()),
        "versions": {"allx": allx.__version__, **extra["imx500"]["versions"]},
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }


def publish(out_dir: Path, converted: Path, manifest: dict, predictions_text: str, report: CheckReport) -> dict:
    """The converter's outputs, labels, predictions, report and model.json (last); rejected names on failure."""
    passed = report.passed
    name = (lambda n: n) if passed else layout.imx500_rejected
    package = converted / layout.IMX500_PACKAGE
    if not package.is_file():
        raise ConversionError(f"imxconv-tf wrote no {layout.IMX500_PACKAGE} (Fit In Chip: "
                              f"{manifest['imx500']['fit_in_chip']}), expected the packaged network; see "
                              f"{out_dir / layout.CONVERT_LOG}")
    written = {}
    with interrupts_deferred():
        for path in sorted(converted.iterdir()):
            if path.is_file():
                role = "model" if path.name == layout.IMX500_PACKAGE else path.name
                written[role] = write_atomic(out_dir / name(path.name), path.read_bytes())
        written["labels"] = write_atomic(out_dir / name(layout.LABELS), "\n".join(manifest["labels"]) + "\n")
        written["predictions"] = write_atomic(out_dir / name(layout.predictions_name(PRECISION)), predictions_text)
        written["report"] = write_atomic(out_dir / name(layout.REPORT), report_markdown(manifest, report))
        text = json.dumps(manifest, indent=2) + "\n"
        written["manifest"] = write_atomic(out_dir / name(layout.MANIFEST), text)
    return written


def report_markdown(manifest: dict, report: CheckReport) -> str:
    from allx.convert.gate import gate_markdown
    from allx.text import percent

    imx = manifest["imx500"]
    verdict = "PASSED" if report.passed else "REJECTED"
    lines = [f"# allx convert: imx500 {verdict}", ""]
    lines += [f"- {failure}" for failure in report.failures]
    lines += ["", f"- Fit In Chip: {imx['fit_in_chip']}; int8 weights {imx['weights_int8_bytes'] / 1e6:.2f} MB",
              f"- Check subset: {report.subset} ({report.images} images); float accuracy "
              f"{percent(report.float.accuracy, 2, 'n/a')}, MCT-quantized {percent(report.quantized.accuracy, 2, 'n/a')} "
              f"(drop {report.drop_pp:+.2f} pp); agreement {report.agreement:.4f}",
              f"- Tool step seconds: {imx['tool_seconds']}", f"- Preprocessing: {manifest['preprocessing']}", "",
              *gate_markdown(report.paired, report.fidelity, report.thresholds)]
    return "\n".join(lines) + "\n"
