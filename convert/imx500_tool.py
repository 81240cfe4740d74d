"""Runs inside the IMX500 tool environment (Keras 2.15, MCT, imx500-converter): `python imx500_tool.py WORK`.

WORK holds what `allx convert --imx500` prepared: network.json + weights.npz (convert.imx500_network),
representative.npy (uint8 calibration images from the train subset), images.npy (uint8 images to
score: the check subset, then the fidelity images) and reference.npy (the float Keras 3 model's
probabilities on the first images). The steps, each timed into WORK/result.json:

1. rebuild the network in Keras 2 and compare it with the reference (the weight transfer must be exact);
2. post-training quantization with MCT for the IMX500 target platform;
3. export the quantized model (NAME.keras) and score images.npy with it on the CPU (probabilities.npy):
   the accuracy gate judges these numbers;
4. imxconv-tf: packerOut.zip and the memory report in WORK/converted.

Only the standard library, numpy, and this folder's imx500_network are imported at the top: the tool
environment has no allx.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from imx500_network import read_network, rebuild  # noqa: E402  (this folder, not the allx package)

BATCH = 16
TPC_VERSION = "v1"


def main(work: Path) -> None:
    result, lap = {"seconds": {}}, stopwatch()
    description, weights = read_network(work)
    model = rebuild(description, weights)
    reference = np.load(work / "reference.npy")
    images = np.load(work / "images.npy", mmap_mode="r")
    rebuilt = predict(model, images[:len(reference)])
    result["rebuild_max_difference"] = float(np.abs(rebuilt - reference).max())
    result["seconds"]["rebuild"] = lap()

    quantized = quantize(model, np.load(work / "representative.npy"))
    result["seconds"]["quantize"] = lap()
    exported = work / f"{description.get('name', 'network')}.keras"  # its stem names the converter's outputs
    export(quantized, exported)
    np.save(work / "probabilities.npy", predict(load_exported(exported), images))
    result["seconds"]["score"] = lap()

    result["converter"] = run_converter(exported, work / "converted")
    result["seconds"]["convert"] = lap()
    result["versions"] = versions()
    (work / "result.json").write_text(json.dumps(result, indent=1))


def stopwatch():
    """A function giving the seconds since its last call (or since it was made)."""
    last = [time.perf_counter()]

    def lap() -> float:
        now = time.perf_counter()
        seconds, last[0] = now - last[0], now
        return round(seconds, 1)

    return lap


def predict(model, images) -> np.ndarray:
    """Probabilities of uint8 images (raw 0..255 in: the model's first layer normalises)."""
    rows = [model(np.asarray(images[start:start + BATCH], np.float32), training=False).numpy()
            for start in range(0, len(images), BATCH)]
    return np.concatenate(rows) if rows else np.zeros((0, 0), np.float32)


def quantize(model, representative: np.ndarray):
    """MCT post-training quantization with the IMX500 target platform capabilities."""
    import model_compression_toolkit as mct

    def batches():
        for start in range(0, len(representative), BATCH):
            yield [representative[start:start + BATCH].astype(np.float32)]

    tpc = mct.get_target_platform_capabilities("tensorflow", "imx500", target_platform_version=TPC_VERSION)
    quantized, _ = mct.ptq.keras_post_training_quantization(model, batches, target_platform_capabilities=tpc)
    return quantized


def export(quantized, path: Path) -> None:
    import model_compression_toolkit as mct

    mct.exporter.keras_export_model(model=quantized, save_model_path=str(path))


def load_exported(path: Path):
    import model_compression_toolkit as mct

    return mct.keras_load_quantized_model(str(path))


def run_converter(exported: Path, out: Path) -> dict:
    """imxconv-tf on the exported model; its return code, output files and log tail."""
    command = [str(Path(sys.executable).parent / "imxconv-tf"), "-i", str(exported), "-o", str(out),
               "--overwrite-output"]
    done = subprocess.run(command, capture_output=True, text=True)
    (out.parent / "imxconv.log").write_text(done.stdout + done.stderr)
    files = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()) if out.is_dir() else []
    return {"returncode": done.returncode, "files": files, "log_tail": (done.stdout + done.stderr)[-2000:]}


def versions() -> dict:
    from importlib.metadata import version

    return {name: version(name) for name in ("imx500-converter", "model-compression-toolkit", "tensorflow",
                                             "keras", "numpy")}


if __name__ == "__main__":
    main(Path(sys.argv[1]))
