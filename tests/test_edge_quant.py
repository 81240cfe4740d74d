"""Scale/zero-point helpers: round trips, clipping, and the uint8-pixels fast path."""

import numpy as np
import pytest

from allx.edge_runner.quant import dequantize, quantize, tensor_quantization


@pytest.mark.parametrize("dtype, zero_point", [(np.uint8, 0), (np.uint8, 128), (np.int8, -128), (np.int8, 0)])
def test_round_trip_within_half_a_step(dtype, zero_point):
    scale = 0.05
    info = np.iinfo(dtype)
    values = np.linspace((info.min - zero_point) * scale, (info.max - zero_point) * scale, 97, dtype=np.float32)
    q = quantize(values, scale, zero_point, dtype)
    assert q.dtype == dtype
    assert np.abs(dequantize(q, scale, zero_point) - values).max() <= scale / 2 + 1e-6


def test_out_of_range_values_are_clipped():
    q = quantize(np.array([-10.0, 0.0, 1000.0]), 1.0, 0, np.uint8)
    np.testing.assert_array_equal(q, [0, 0, 255])
    q = quantize(np.array([-1000.0, 1000.0]), 0.5, 3, np.int8)
    np.testing.assert_array_equal(q, [-128, 127])


def test_pixels_into_scale_one_uint8_input_are_the_bytes_themselves():
    pixels = np.arange(256, dtype=np.uint8).reshape(16, 16)
    assert quantize(pixels, 1.0, 0, np.uint8) is pixels
    np.testing.assert_array_equal(quantize(pixels, 1.0, -128, np.int8), pixels.astype(np.int16) - 128)


def test_scale_zero_means_not_quantized():
    values = np.array([0.5, 200.0], np.float64)
    out = quantize(values, 0.0, 0, np.float32)
    assert out.dtype == np.float32 and np.allclose(out, values)
    back = dequantize(np.array([3, 4], np.int32), 0.0, 0)
    assert back.dtype == np.float32 and list(back) == [3.0, 4.0]


def test_dequantize_uint8_probabilities():
    np.testing.assert_allclose(dequantize(np.array([0, 128, 255], np.uint8), 1 / 256, 0), [0, 0.5, 255 / 256])
    np.testing.assert_allclose(dequantize(np.array([-128, 127], np.int8), 1 / 256, -128), [0, 255 / 256])


def test_tensor_quantization_reads_details():
    assert tensor_quantization({"quantization": (0.25, 3)}) == (0.25, 3)
    assert tensor_quantization({}) == (0.0, 0)
