"""Scale/zero-point arithmetic for quantized tensors: the only place it lives."""

from __future__ import annotations

import numpy as np


def quantize(values: np.ndarray, scale: float, zero_point: int, dtype) -> np.ndarray:
    """Real values -> tensor values: round(values / scale) + zero_point, clipped to dtype's range.

    scale == 0 means the tensor is not quantized (TFLite's convention): values are only cast.
    """
    dtype = np.dtype(dtype)
    values = np.asarray(values)
    if scale == 0 or dtype.kind == "f":
        return values.astype(dtype, copy=False)
    if scale == 1.0 and zero_point == 0 and values.dtype == dtype:
        return values  # uint8 pixels into a uint8 input of scale 1: the image bytes themselves
    info = np.iinfo(dtype)
    quantized = np.rint(values.astype(np.float32) / np.float32(scale)) + zero_point
    return np.clip(quantized, info.min, info.max).astype(dtype)


def dequantize(values: np.ndarray, scale: float, zero_point: int) -> np.ndarray:
    """Tensor values -> real float32 values: (values - zero_point) * scale; scale == 0: cast only."""
    values = np.asarray(values)
    if scale == 0:
        return values.astype(np.float32, copy=False)
    return ((values.astype(np.float32) - np.float32(zero_point)) * np.float32(scale)).astype(np.float32)


def tensor_quantization(details: dict) -> tuple[float, int]:
    """(scale, zero_point) of a tensor from the interpreter's details; per-tensor only for IO."""
    scale, zero_point = details.get("quantization", (0.0, 0))
    return float(scale), int(zero_point)
