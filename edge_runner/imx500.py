"""The Raspberry Pi AI Camera: the network runs on the camera's IMX500, the Pi reads its output per frame.

Picamera2's IMX500 helper (`picamera2.devices.IMX500`; APT_INSTALL below) loads the network's .rpk
onto the camera, and each frame's metadata then carries the output tensor, which the helper returns
dequantized. `Imx500Model` stands where an EdgeModel stands for
`edge_runner.camera.run_camera`: each frame goes through the same sample, log and quality path; only
the probabilities come from the camera instead of an interpreter.

`allx convert --imx500` writes packerOut.zip and model.json; on the Pi, `imx500-package` (from
`sudo apt install imx500-tools`) turns packerOut.zip into the .rpk the camera loads. Given packerOut.zip,
this module runs it once and uses the .rpk it writes beside it.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

import numpy as np

from allx import layout
from allx.edge_runner.manifest_check import Manifest, check_manifest
from allx.edge_runner.model import Prediction, read_labels
from allx.errors import DataError, MissingDependency, ModelError
from allx.files import sha256_file
from allx.jsonio import read_json

# Raspberry Pi's AI Camera guide: the camera firmware (imx500-firmware), the packager imx500-package
# (imx500-tools; the guide's earlier `imx500-all` installs both and more) and Picamera2
APT_INSTALL = "sudo apt install imx500-firmware imx500-tools python3-picamera2"
PACKAGER = "imx500-package"
PACKAGED_NAME = "network.rpk"  # what imx500-package writes into its output folder
LOADING_FRAMES = 900  # about 30 s at 30 fps: longer than the camera takes to load a network
SUM_TOLERANCE = 0.05  # the chip's softmax is 8-bit: its probabilities sum to 1 within a few hundredths


def decode_outputs(outputs, classes: int) -> np.ndarray:
    """Class probabilities (float32, summing to 1) from the helper's output tensors of one frame.

    The network has one output, (1, classes) or (classes,); anything else is a ModelError, and a frame
    without outputs (the first frames, while the network loads) is None upstream, never zeros here.
    """
    tensors = [np.asarray(t, np.float32).reshape(-1) for t in outputs or ()]
    matching = [t for t in tensors if t.size == classes]
    if len(matching) != 1:
        raise ModelError(f"got output tensors of sizes {[t.size for t in tensors]}, expected one with {classes} "
                         "class probabilities (an .rpk from `allx convert --imx500` for these labels)")
    probabilities = matching[0]
    total = float(probabilities.sum())
    if not np.all(np.isfinite(probabilities)) or probabilities.min() < 0 or abs(total - 1.0) > SUM_TOLERANCE:
        raise ModelError(f"got output {np.round(probabilities, 4).tolist()} (sum {total:.3f}), expected class "
                         f"probabilities summing to 1 within {SUM_TOLERANCE}")
    return (probabilities / total).astype(np.float32)


def network_file(path: Path) -> Path:
    """The .rpk to load: PATH itself, or the one imx500-package makes from PATH (a packerOut.zip) beside it."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such file, expected an .rpk or the packerOut.zip of `allx convert --imx500`")
    if path.suffix == ".rpk":
        return path
    if path.suffix != ".zip":
        raise DataError(f"{path}: got a '{path.suffix}' file, expected .rpk or packerOut.zip")
    out = path.parent / f"{path.stem}-rpk"
    packaged = out / PACKAGED_NAME
    if packaged.is_file() and packaged.stat().st_mtime >= path.stat().st_mtime:
        return packaged
    if shutil.which(PACKAGER) is None:
        raise MissingDependency(f"got {path.name} and no {PACKAGER} on PATH, expected it to make the .rpk "
                                "(on the Pi: sudo apt install imx500-tools)")
    done = subprocess.run([PACKAGER, "-i", str(path), "-o", str(out)], capture_output=True, text=True)
    if done.returncode != 0 or not packaged.is_file():
        raise ModelError(f"{PACKAGER} -i {path} -o {out} failed (exit {done.returncode}): "
                         f"{(done.stderr or done.stdout).strip()[-300:]}")
    return packaged


class Imx500Source:
    """Frames of the AI Camera with the network loaded; `read` keeps the frame's output tensors in `outputs`."""

    end_reason = "camera disconnected"

    def __init__(self, network: Path, size: tuple[int, int] = (640, 480)):
        try:
            from picamera2 import Picamera2
            from picamera2.devices import IMX500
        except ImportError:
            raise MissingDependency("the AI Camera needs picamera2 with its IMX500 helper, expected it installed "
                                    f"({APT_INSTALL})") from None
        try:
            self.imx500 = IMX500(str(network))  # before Picamera2: it loads the network onto the camera
            self.camera = Picamera2(self.imx500.camera_num)
            self.camera.start(self.camera.create_preview_configuration(main={"format": "RGB888", "size": size}))
        except (RuntimeError, IndexError, OSError) as err:
            raise DataError(f"cannot open the AI Camera with {network}: {err}") from None
        self.outputs = None

    def read(self) -> np.ndarray | None:
        """The next RGB frame that carries the network's output (kept in self.outputs); None when none comes.

        Frames read while the camera is still loading the network (a few seconds after start) carry no
        output and are skipped, so every frame returned can be classified.
        """
        for _ in range(LOADING_FRAMES):
            try:
                request = self.camera.capture_request()
            except (RuntimeError, OSError):
                return None
            try:
                frame = request.make_array("main")
                self.outputs = self.imx500.get_outputs(request.get_metadata(), add_batch=True)
            finally:
                request.release()
            if self.outputs is not None:
                return np.ascontiguousarray(frame[..., 2::-1])  # libcamera's RGB888 is B, G, R in memory
        return None

    def close(self) -> None:
        self.camera.stop()


class Imx500Model:
    """The model card of an IMX500 network (model.json beside it) and its per-frame predictions.

    It offers what run_camera and SampleSession use of an EdgeModel: labels, input_size, manifest,
    sha256, has_ood, require_labels and classify. `classify` reads the outputs of the source's last
    frame; the pixels it is given are the frame for the quality check, which the camera already ran on.
    """

    has_ood = False
    ood_scorer = None
    runtime = "IMX500 (the network runs on the camera)"
    delegate = "imx500"
    warnings: tuple[str, ...] = ()

    def __init__(self, network: Path, manifest: Manifest, labels: tuple[str, ...], source=None):
        self.model_path = network
        self.manifest = manifest
        self.labels = labels
        shape = manifest.input.shape or (1, 224, 224, 3)
        self.input_size = (int(shape[1]), int(shape[2]))
        self.sha256 = sha256_file(network)
        self.source = source

    @classmethod
    def load(cls, path: str | Path, source=None) -> "Imx500Model":
        """The network file and the model.json beside it (the one `allx convert --imx500` wrote)."""
        network = Path(path)
        folder = network.parent.parent if network.parent.name.endswith("-rpk") else network.parent
        rejected = ".rejected" in network.relative_to(folder).as_posix()  # packerOut.rejected.zip and its .rpk
        manifest_path = folder / (layout.imx500_rejected(layout.MANIFEST) if rejected else layout.MANIFEST)
        if not manifest_path.is_file():
            raise ModelError(f"{network}: no {manifest_path.name} in {folder}, expected the one `allx convert "
                             "--imx500` wrote beside packerOut.zip")
        manifest = check_manifest(read_json(manifest_path, "unreadable manifest", ModelError), manifest_path)
        if manifest.precision != "imx500":
            raise ModelError(f"{manifest_path}: got precision {manifest.precision!r}, expected 'imx500'")
        labels = manifest.labels or read_labels(folder / layout.LABELS)
        return cls(network, manifest, tuple(labels), source)

    def require_labels(self) -> None:
        if not self.labels:
            raise ModelError(f"{self.model_path}: no labels, expected them in {layout.MANIFEST}")

    def classify(self, pixels: np.ndarray, top_k: int = 1) -> Prediction:
        """The prediction of the frame the source read last (the camera ran the network on it)."""
        start = time.perf_counter()
        outputs = None if self.source is None else self.source.outputs
        if outputs is None:
            raise DataError("got a frame without the network's output, expected the IMX500 to have run on it")
        probabilities = decode_outputs(outputs, len(self.labels))
        latency_ms = (time.perf_counter() - start) * 1000.0  # reading the tensor; the inference ran on the camera
        order = np.argsort(-probabilities, kind="stable")[:max(1, top_k)]
        top = tuple((self.labels[i], float(probabilities[i])) for i in order)
        return Prediction(top[0][0], top[0][1], top, tuple(float(p) for p in probabilities), latency_ms)
