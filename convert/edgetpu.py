"""--edgetpu: is the int8 model Edge TPU-ready (ops, types, shapes, IO)? Compile it when edgetpu_compiler exists."""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from allx import layout
from allx.files import write_atomic

# Operations the Edge TPU compiler can map (https://coral.ai/docs/edgetpu/models-intro/#supported-operations),
# as TFLite builtin names. Each has further limits (e.g. MEAN only over x/y); the compiler has the last word.
EDGETPU_OPS = frozenset({
    "ADD", "AVERAGE_POOL_2D", "CONCATENATION", "CONV_2D", "DEPTHWISE_CONV_2D", "EXPAND_DIMS", "FULLY_CONNECTED",
    "HARD_SWISH", "L2_NORMALIZATION", "LOGISTIC", "MAXIMUM", "MAX_POOL_2D", "MEAN", "MINIMUM", "MUL", "PACK", "PAD",
    "PRELU", "QUANTIZE", "REDUCE_MAX", "REDUCE_MIN", "RELU", "RELU6", "RELU_N1_TO_1", "RESHAPE", "RESIZE_BILINEAR",
    "RESIZE_NEAREST_NEIGHBOR", "RSQRT", "SLICE", "SOFTMAX", "SPACE_TO_DEPTH", "SPLIT", "SQUARED_DIFFERENCE",
    "SQUEEZE", "STRIDED_SLICE", "SUB", "SUM", "TANH", "TRANSPOSE", "TRANSPOSE_CONV",
    "UNIDIRECTIONAL_SEQUENCE_LSTM",
})
INTEGER_IO = ("UINT8", "INT8")
METADATA_EMBEDDED = "embedded"
ALLOWED_TENSOR_TYPES = ("UINT8", "INT8", "INT32")  # int32: biases and shape operands
COMPILER = "edgetpu_compiler"
INSTALL_HINT = ("edgetpu_compiler is not on PATH (it runs only on x86-64 Linux): on Debian/Ubuntu add the Coral apt "
                "repository and `sudo apt-get install edgetpu-compiler` (https://coral.ai/docs/edgetpu/compiler/), "
                "then run `edgetpu_compiler -s MODEL.tflite`")


@dataclass(frozen=True)
class CompileResult:
    model_file: str | None  # the *_edgetpu.tflite written, None when compiling failed
    ops_on_tpu: int | None
    ops_on_cpu: int | None
    message: str
    metadata: str | None = None  # "embedded", or why the compiled file carries no allx metadata


@dataclass(frozen=True)
class EdgeTpuReadiness:
    problems: tuple[str, ...]
    op_counts: tuple[tuple[str, int], ...]
    compiled: CompileResult | None
    note: str  # what happened about the compiler

    @property
    def ready(self) -> bool:
        return not self.problems

    def to_dict(self) -> dict:
        compiled = None if self.compiled is None else vars(self.compiled)
        return {"ready": self.ready, "problems": list(self.problems), "op_counts": dict(self.op_counts),
                "compiled": compiled, "note": self.note}


def read_graph(tflite: bytes):
    """(operator names, tensors, input indices, output indices) of the main subgraph."""
    from tensorflow.lite.python import schema_py_generated as schema
    from tensorflow.lite.tools import flatbuffer_utils

    model = flatbuffer_utils.convert_bytearray_to_object(bytearray(tflite))
    names = {code: name for name, code in vars(schema.BuiltinOperator).items() if not name.startswith("_")}
    graph = model.subgraphs[0]
    ops = []
    for op in graph.operators:
        code = model.operatorCodes[op.opcodeIndex]
        builtin = max(code.builtinCode, code.deprecatedBuiltinCode)
        ops.append(code.customCode.decode() if code.customCode else names.get(builtin, f"BUILTIN_{builtin}"))
    return ops, graph.tensors, list(graph.inputs), list(graph.outputs)


def type_name(tensor) -> str:
    from tensorflow.lite.python import schema_py_generated as schema

    return {code: name for name, code in vars(schema.TensorType).items() if not name.startswith("_")}[tensor.type]


def check_readiness(tflite: bytes) -> tuple[tuple[str, ...], tuple[tuple[str, int], ...]]:
    """(problems, op counts): every reason the Edge TPU could not run this model as a whole."""
    ops, tensors, inputs, outputs = read_graph(tflite)
    problems = []
    counts = Counter(ops)
    unsupported = {op: n for op, n in counts.items() if op not in EDGETPU_OPS}
    if unsupported:
        problems.append("ops the Edge TPU does not support: " + ", ".join(f"{op} x{n}" for op, n in sorted(unsupported.items())))
    wrong_types = [t for t in tensors if type_name(t) not in ALLOWED_TENSOR_TYPES]
    if wrong_types:
        kinds = Counter(type_name(t) for t in wrong_types)
        problems.append("not fully int8: " + ", ".join(f"{n} {kind} tensors" for kind, n in sorted(kinds.items())))
    dynamic = [t.name.decode() for t in tensors if t.shapeSignature is not None and min(t.shapeSignature, default=0) < 0]
    if dynamic:
        problems.append(f"dynamic shapes in {len(dynamic)} tensors (e.g. {dynamic[0]}), expected static shapes")
    for role, indices in (("input", inputs), ("output", outputs)):
        for index in indices:
            kind = type_name(tensors[index])
            if kind not in INTEGER_IO:
                problems.append(f"{role} {tensors[index].name.decode()} is {kind.lower()}, expected uint8 or int8")
    return tuple(problems), tuple(sorted(counts.items()))


def compile_model(model_path: Path, out_dir: Path, timeout_s: int = 600) -> CompileResult:
    """Run edgetpu_compiler in a scratch folder, then move its *_edgetpu.tflite and log into out_dir."""
    import os

    with tempfile.TemporaryDirectory(dir=out_dir, prefix=".edgetpu-") as scratch:
        try:
            done = subprocess.run([COMPILER, "--show_operations", "--out_dir", scratch, str(model_path)],
                                  capture_output=True, text=True, timeout=timeout_s, check=False)
        except (OSError, subprocess.TimeoutExpired) as err:
            return CompileResult(None, None, None, f"{COMPILER} could not run: {err}")
        log = done.stdout + done.stderr
        write_atomic(out_dir / layout.EDGETPU_LOG, log)
        produced = sorted(Path(scratch).glob("*_edgetpu.tflite"))
        if done.returncode != 0 or not produced:
            last = next((line for line in reversed(log.splitlines()) if line.strip()), "no output")
            return CompileResult(None, None, None, f"{COMPILER} failed (exit {done.returncode}): {last.strip()}")
        os.replace(produced[0], out_dir / produced[0].name)
    return CompileResult(produced[0].name, count_from_log(log, "Edge TPU"), count_from_log(log, "CPU"),
                         f"compiled with {COMPILER}")


def count_from_log(log: str, where: str) -> int | None:
    match = re.search(rf"Number of operations that will run on {where}:\s*(\d+)", log)
    return int(match.group(1)) if match else None


def assess(tflite: bytes, model_path: Path, out_dir: Path) -> EdgeTpuReadiness:
    """Readiness problems; then the compiler when it is installed and the model is ready."""
    problems, counts = check_readiness(tflite)
    if problems:
        return EdgeTpuReadiness(problems, counts, None, "not compiled: the model is not Edge TPU-ready")
    if shutil.which(COMPILER) is None:
        return EdgeTpuReadiness(problems, counts, None, INSTALL_HINT)
    compiled = compile_model(model_path, out_dir)
    return EdgeTpuReadiness(problems, counts, compiled, compiled.message)


def readiness_markdown(readiness: EdgeTpuReadiness) -> str:
    lines = ["## Coral Edge TPU", "", f"Ready: {'yes' if readiness.ready else 'no'}"]
    lines += [f"- {problem}" for problem in readiness.problems]
    lines += ["", "Ops: " + ", ".join(f"{op} x{n}" for op, n in readiness.op_counts), "", readiness.note]
    compiled = readiness.compiled
    if compiled and compiled.model_file:
        lines.append(f"`{compiled.model_file}`: {compiled.ops_on_tpu} ops on the Edge TPU, "
                     f"{compiled.ops_on_cpu} on the CPU (see edgetpu_compiler.log)")
        if compiled.metadata == METADATA_EMBEDDED:
            lines.append(f"`{compiled.model_file}` carries the same embedded metadata (labels, manifest) as the "
                         "int8 model: it works alone.")
        elif compiled.metadata:
            lines.append(compiled.metadata)
    return "\n".join(lines)
