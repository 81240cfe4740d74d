"""Pick a TFLite interpreter (LiteRT, tflite_runtime, tensorflow.lite) and build one, with the Edge TPU if asked."""

from __future__ import annotations

import contextlib
import ctypes
import functools
import importlib
import mmap
import os
import platform
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType

from allx.errors import ModelError

# (name shown to the user, module with Interpreter/load_delegate, distribution for the version).
# LiteRT first: it is the maintained package; TensorFlow last because it is huge and slow to import.
CANDIDATES = (
    ("ai-edge-litert", "ai_edge_litert.interpreter", "ai-edge-litert"),
    ("tflite-runtime", "tflite_runtime.interpreter", "tflite-runtime"),
    ("tensorflow.lite", "tensorflow.lite.python.interpreter", "tensorflow"),
)
DELEGATES = ("auto", "cpu", "edgetpu")
EDGETPU_LIBRARY = {"Linux": "libedgetpu.so.1", "Darwin": "libedgetpu.1.dylib", "Windows": "edgetpu.dll"}
EDGETPU_HINT = (
    "install the Edge TPU runtime: sudo apt-get install libedgetpu1-std "
    "(Coral apt repository, see https://coral.ai/docs/accelerator/get-started/)"
)
EDGETPU_OP = b"edgetpu-custom-op"


@dataclass(frozen=True)
class Runtime:
    name: str
    version: str
    module: ModuleType

    def __str__(self) -> str:
        return f"{self.name} {self.version}"


@functools.cache
def find_runtime() -> Runtime:
    """The first importable interpreter of CANDIDATES; ModelError when there is none."""
    for name, module_name, distribution in CANDIDATES:
        try:
            module = importlib.import_module(module_name)
        except ImportError:
            continue
        return Runtime(name, package_version(module_name, distribution), module)
    raise ModelError('no TFLite interpreter found, expected one of ai-edge-litert, tflite-runtime, tensorflow: '
                     'pip install "allx[edge]"')


def package_version(module_name: str, distribution: str) -> str:
    """The package's own `__version__` (the three candidates set it), else the installed distribution's: reading
    the distribution's metadata scans site-packages, a cost every start would pay."""
    version = getattr(sys.modules.get(module_name.partition(".")[0]), "__version__", None)
    return str(version) if version else distribution_version(distribution)


def distribution_version(distribution: str) -> str:
    from importlib import metadata

    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return "unknown"


def default_threads() -> int:
    return os.cpu_count() or 1


def check_delegate(delegate: str) -> str:
    if delegate not in DELEGATES:
        raise ModelError(f"unknown delegate {delegate!r}, expected one of {', '.join(DELEGATES)}")
    return delegate


def is_edgetpu_model(path: Path) -> bool:
    """True when the file holds the custom op that `edgetpu_compiler` writes."""
    with open(path, "rb") as file, mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_READ) as data:
        return data.find(EDGETPU_OP) >= 0


def check_model_file(path: Path) -> None:
    """Refuse a missing, empty or non-TFLite file before the interpreter sees it."""
    if not path.exists():
        raise ModelError(f"{path}: no such model file")
    if not path.is_file():
        raise ModelError(f"{path}: got a {'folder' if path.is_dir() else 'special file'}, expected a .tflite file")
    with open(path, "rb") as file:
        check_tflite_header(file.read(8), path)


def check_tflite_header(data: bytes, path: Path) -> None:
    """Refuse bytes without the TFL3 file identifier (an empty, cut or foreign file)."""
    if len(data) < 8 or data[4:8] != b"TFL3":
        raise ModelError(f"{path}: not a TFLite model (got {min(len(data), 8)} header bytes without the TFL3 "
                         "identifier, expected a .tflite flatbuffer)")


def load_edgetpu_delegate(runtime: Runtime):
    library = EDGETPU_LIBRARY.get(platform.system(), "libedgetpu.so.1")
    try:
        # Probe with ctypes first: a failed load_delegate leaves a half-built Delegate whose
        # destructor prints a traceback on stderr.
        ctypes.CDLL(library)
        return runtime.module.load_delegate(library)
    except (ValueError, OSError) as err:
        reason = " ".join(str(err).split())[:160]
        raise ModelError(f"Edge TPU delegate {library} could not be loaded ({reason}): {EDGETPU_HINT}") from None


def plan_delegate(delegate: str, compiled: bool, path: Path) -> tuple[str, tuple[str, ...]]:
    """("cpu" or "edgetpu", warnings) for the delegate asked and whether the model was compiled for the TPU."""
    check_delegate(delegate)
    if delegate == "cpu" and compiled:
        raise ModelError(f"{path}: compiled for the Edge TPU, expected --delegate auto or edgetpu "
                         "(or the model file from before edgetpu_compiler)")
    if delegate == "edgetpu" and not compiled:
        return "edgetpu", (f"{path.name} was not compiled for the Edge TPU (no {EDGETPU_OP.decode()}): "
                           "it will run on the CPU; compile it with edgetpu_compiler",)
    return ("edgetpu" if compiled else "cpu"), ()


def make_interpreter(path: str | Path, threads: int | None = None, delegate: str = "auto",
                     content: bytes | None = None):
    """An allocated interpreter for `path` (or for `content`, the model's bytes, with `path` naming it in
    messages), the delegate actually used, and warnings for the user.

    "auto" uses the Edge TPU only for a model compiled for it (such a model cannot run on the CPU);
    "edgetpu" always loads the delegate and warns when the model was not compiled for it.
    """
    path = Path(path)
    check_delegate(delegate)
    if content is None:
        check_model_file(path)
    else:
        check_tflite_header(content, path)
    runtime = find_runtime()
    threads = default_threads() if threads is None else threads
    if threads < 1:
        raise ModelError(f"got threads={threads}, expected a positive number")
    compiled = EDGETPU_OP in content if content is not None else is_edgetpu_model(path)
    used, warnings = plan_delegate(delegate, compiled, path)
    delegates = [load_edgetpu_delegate(runtime)] if used == "edgetpu" else None
    source = {"model_content": content} if content is not None else {"model_path": str(path)}
    with native_stderr() as log:
        try:
            interpreter = runtime.module.Interpreter(**source, num_threads=threads, experimental_delegates=delegates)
            interpreter.allocate_tensors()
        except (ValueError, RuntimeError) as err:
            failure = err
        else:
            failure = None
    if failure is not None:
        details = [line for line in log.lines if not line.startswith("INFO:")][:2]
        message = " ".join(" ".join([str(failure)] + details).split())[:240]
        raise ModelError(f"{path}: the interpreter refused the model ({message})") from None
    return interpreter, used, threads, warnings + tuple(
        line.partition(":")[2].strip() for line in log.lines if line.startswith("WARNING:"))


@dataclass
class NativeLog:
    lines: list[str] = field(default_factory=list)


@contextlib.contextmanager
def native_stderr():
    """Collect what the C++ runtime writes on file descriptor 2 while a model loads: its "INFO:
    Created XNNPACK delegate" is noise for a technician, its errors belong in our one-line message."""
    log = NativeLog()
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):  # no real stderr (embedded, some test runners): nothing to collect
        yield log
        return
    with tempfile.TemporaryFile() as capture:
        os.dup2(capture.fileno(), 2)
        try:
            yield log
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            capture.seek(0)
            log.lines = [line.strip() for line in capture.read().decode(errors="replace").splitlines() if line.strip()]
