"""Classify a camera feed or a video file: OpenCV VideoCapture, or Picamera2 for the Pi camera."""

from __future__ import annotations

import os
import secrets
import sys
import time
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

import numpy as np
from PIL import Image

from allx.decision import UNLIKE_TRAINING
from allx.errors import DataError, MissingDependency, UsageError
from allx.images import resize_rgb
from allx.edge_runner.manifest_check import REJECTED
from allx.edge_runner.model import EdgeModel, Prediction
from allx.edge_runner.output import StreamedCsv
from allx.edge_runner.sample import FieldResult, SampleSession, SampleVerdict
from allx.edge_runner.status import NOTE as REJECTED_NOTE

# One row per classified frame. Sessions append to one --log file, so each row names its session (start time
# in UTC, process id and a random tag) and the model that ran with its status ("rejected" when run by --allow-rejected).
LOG_HEADER = ["session", "frame", "time_s", "label", "score", "latency_ms", "ood", "ood_score", "model_sha256",
              "model_status"]


@dataclass(frozen=True)
class FrameResult:
    frame: int  # 1-based index of the frame read from the source
    time_s: float  # seconds since the source was opened
    prediction: Prediction
    field: FieldResult | None = None  # with a sample session: the frame as a field (quality, set aside)
    verdict: SampleVerdict | None = None  # the running verdict over the session's frames so far


@dataclass(frozen=True)
class CameraSummary:
    source: str
    frames_read: int
    classified: int
    flagged_ood: int
    mean_latency_ms: float | None
    p95_latency_ms: float | None
    fps: float
    seconds: float
    ended_by: str  # "source ended", "camera disconnected", "max frames", "interrupted", "quit"
    warnings: tuple[str, ...] = ()
    verdict: SampleVerdict | None = None  # with a sample session: the verdict over all its frames


def import_cv2():
    try:
        import cv2
    except ImportError:
        raise MissingDependency('OpenCV is needed for the camera command: pip install "allx[edge]" '
                        "(or opencv-python-headless)") from None
    logging = getattr(getattr(cv2, "utils", None), "logging", None)
    if logging is not None:  # errors only: OpenCV's own warnings would repeat what our one line says
        logging.setLogLevel(logging.LOG_LEVEL_ERROR)
    return cv2


class OpenCvSource:
    """A USB camera (index or /dev/videoN) or a video file, read as RGB frames."""

    def __init__(self, source: str):
        self.cv2 = import_cv2()
        self.is_file = not source.isdigit() and not source.startswith("/dev/video")
        if not source.isdigit() and not Path(source).exists():
            raise DataError(f"cannot open video source {source!r}: no such file or device, expected a camera "
                            "index, /dev/videoN, a video file or picamera2")
        self.capture = self.cv2.VideoCapture(int(source) if source.isdigit() else source)
        if not self.capture.isOpened():
            raise DataError(f"cannot open video source {source!r}: OpenCV could not open it, expected a camera "
                            "index, /dev/videoN, a readable video file or picamera2")
        self.end_reason = "source ended" if self.is_file else "camera disconnected"

    def read(self) -> np.ndarray | None:
        ok, frame = self.capture.read()
        if not ok or frame is None:
            return None
        return self.cv2.cvtColor(frame, self.cv2.COLOR_BGR2RGB)

    def close(self) -> None:
        self.capture.release()


class Picamera2Source:
    """The Raspberry Pi camera through libcamera (OpenCV cannot read it on Bookworm)."""

    end_reason = "camera disconnected"

    def __init__(self, size: tuple[int, int] = (640, 480)):
        try:
            from picamera2 import Picamera2
        except ImportError:
            raise DataError("cannot open video source 'picamera2': the picamera2 module is not importable, "
                            "expected it installed (sudo apt install python3-picamera2)") from None
        try:
            self.camera = Picamera2()
            self.camera.configure(self.camera.create_preview_configuration(main={"format": "RGB888", "size": size}))
            self.camera.start()
        except (RuntimeError, IndexError, OSError) as err:
            raise DataError(f"cannot open video source 'picamera2': {err}") from None

    def read(self) -> np.ndarray | None:
        try:
            frame = self.camera.capture_array()
        except (RuntimeError, OSError):
            return None
        return np.ascontiguousarray(frame[..., 2::-1])  # libcamera's RGB888 is B, G, R in memory

    def close(self) -> None:
        self.camera.stop()


def open_source(source: str):
    return Picamera2Source() if source == "picamera2" else OpenCvSource(source)


def capture_still(source: str = "0", settle_frames: int = 3) -> np.ndarray:
    """One RGB frame from the source, opened and closed again, so an unplugged camera is only one failed
    capture; the first frames are skipped while the sensor's auto-exposure settles."""
    frames = open_source(source)
    try:
        frame = None
        for _ in range(max(1, settle_frames)):
            latest = frames.read()
            if latest is None:
                break
            frame = latest
        if frame is None:
            raise DataError(f"cannot read video source {source!r}: no frame came (camera unplugged?), "
                            "expected a connected camera")
        return frame
    finally:
        frames.close()


def has_display() -> bool:
    if sys.platform.startswith("linux"):
        return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))
    return True


class Window:
    """An OpenCV window with the frame, label, confidence and FPS; `q` or Esc quits."""

    NAME = "allx-edge"

    def __init__(self):
        self.cv2 = import_cv2()
        self.cv2.namedWindow(self.NAME, self.cv2.WINDOW_NORMAL)

    def show(self, frame_rgb: np.ndarray, prediction: Prediction | None, fps: float, note: str | None = None) -> bool:
        cv2 = self.cv2
        frame = cv2.cvtColor(frame_rgb, cv2.COLOR_RGB2BGR)
        lines = [f"{fps:.1f} FPS"] + ([note] if note else [])
        if prediction is not None:
            lines.insert(0, f"{prediction.label} {prediction.score:.0%}")
            if prediction.ood:
                lines.insert(1, UNLIKE_TRAINING)
        for i, text in enumerate(lines):
            cv2.putText(frame, text, (10, 28 + 26 * i), cv2.FONT_HERSHEY_SIMPLEX, 0.7, (0, 255, 255), 2)
        cv2.imshow(self.NAME, frame)
        return cv2.waitKey(1) & 0xFF not in (ord("q"), 27)

    def close(self) -> None:
        self.cv2.destroyWindow(self.NAME)


def open_window() -> tuple[Window | None, tuple[str, ...]]:
    """A window, or None with a warning when OpenCV has no GUI (the headless wheel)."""
    cv2 = import_cv2()
    try:
        return Window(), ()
    except cv2.error:
        return None, ("this OpenCV has no window support (opencv-python-headless): running headless",)


def frame_pixels(frame_rgb: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """A frame resized by the same rule as allx.images (Pillow bilinear, whole frame)."""
    return np.asarray(resize_rgb(Image.fromarray(frame_rgb), size), dtype=np.uint8)


def run_camera(model: EdgeModel, source: str = "0", every: int = 1, max_frames: int | None = None,
               log_path: str | Path | None = None, display: bool = False,
               on_frame: Callable[[FrameResult], None] | None = None,
               session: SampleSession | None = None, rejected: bool = False, frames=None) -> CameraSummary:
    """Classify every `every`-th frame until the source ends, `max_frames` frames are read, `q`, or Ctrl-C.

    With a `session`, each classified frame is a field of that one sample (quality-checked, set aside
    when poor) and every FrameResult carries the running verdict. `rejected`: the model failed its
    accuracy check and runs by --allow-rejected; every log row and the window say so. `frames`: an
    opened source to read instead of `source` (the AI Camera, edge_runner.imx500); it is closed at the end.
    """
    if every < 1 or (max_frames is not None and max_frames < 1):
        raise UsageError(f"got every={every}, max_frames={max_frames}, expected positive numbers")
    model.require_labels()
    frames = frames if frames is not None else open_source(source)
    window, warnings = open_window() if display else (None, ())
    log = StreamedCsv(log_path, LOG_HEADER) if log_path else None
    session_id = f"{datetime.now(timezone.utc):%Y-%m-%dT%H:%M:%SZ}-{os.getpid()}-{secrets.token_hex(2)}"
    status = REJECTED if rejected else (model.manifest.status or "")
    latencies, flagged, read, ended_by, last = [], 0, 0, "max frames", None
    start = time.perf_counter()
    try:
        while max_frames is None or read < max_frames:
            frame = frames.read()
            if frame is None:
                ended_by = frames.end_reason
                break
            read += 1
            if (read - 1) % every == 0:
                last = classify_frame(model, session, read, time.perf_counter() - start,
                                      frame_pixels(frame, model.input_size))
                latencies.append(last.prediction.latency_ms)
                flagged += bool(last.prediction.ood)
                if log is not None:
                    log.write([session_id, *log_row(last, model.sha256), status])
                if on_frame is not None:
                    on_frame(last)
            fps = read / (time.perf_counter() - start)
            note = REJECTED_NOTE if rejected else None
            if window is not None and not window.show(frame, last and last.prediction, fps, note):
                ended_by = "quit"
                break
    except KeyboardInterrupt:
        ended_by = "interrupted"
    finally:
        frames.close()
        if window is not None:
            window.close()
        if log is not None:
            log.close()
    seconds = time.perf_counter() - start
    if read == 0 and ended_by in ("source ended", "camera disconnected"):
        raise DataError(f"cannot read video source {source!r}: no frame could be read, expected a video")
    summary = summarize(source, read, latencies, flagged, seconds, ended_by, warnings)
    return summary if session is None else replace(summary, verdict=session.verdict())


def classify_frame(model: EdgeModel, session: SampleSession | None, frame: int, time_s: float,
                   pixels: np.ndarray) -> FrameResult:
    if session is None:
        return FrameResult(frame, time_s, model.classify(pixels))
    field = session.add_pixels(f"frame {frame}", pixels)
    return FrameResult(frame, time_s, field.prediction, field, session.verdict())


def log_row(result: FrameResult, model_sha256: str = "") -> list:
    p = result.prediction
    return [result.frame, f"{result.time_s:.3f}", p.label, f"{p.score:.6f}", f"{p.latency_ms:.3f}",
            "" if p.ood is None else str(p.ood).lower(), "" if p.ood_score is None else f"{p.ood_score:.6f}",
            model_sha256]


def summarize(source: str, read: int, latencies: list[float], flagged: int, seconds: float, ended_by: str,
              warnings: tuple[str, ...]) -> CameraSummary:
    mean = float(np.mean(latencies)) if latencies else None
    p95 = float(np.percentile(latencies, 95)) if latencies else None
    fps = read / seconds if seconds > 0 else 0.0
    return CameraSummary(source, read, len(latencies), flagged, mean, p95, fps, seconds, ended_by, warnings)
