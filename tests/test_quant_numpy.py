"""The numpy block quantizer/dequantizer: ggml's reference rules, and agreement with the native library.

quant_numpy is the oracle for rwkv.cpp imports (it reproduces rwkv.cpp's Q5 files bit for bit, see
test_rwkvcpp_import.py); here it is also checked against the C quantizer, block by block.
"""

from __future__ import annotations

import numpy as np
import pytest

from rwkvchat.errors import ConversionError
from rwkvchat.quant_numpy import BLOCK_BYTES, dequantize_blocks, quantize_blocks

TYPES = {"q4_0": 2, "q4_1": 3, "q5_0": 6, "q5_1": 7, "q8_0": 8}


def _matrix(seed: int = 0, rows: int = 24, cols: int = 256) -> np.ndarray:
    rng = np.random.default_rng(seed)
    a = rng.standard_normal((rows, cols)).astype(np.float32) * rng.uniform(0.01, 10, (rows, 1)).astype(np.float32)
    a[0, :32] = 0.0                    # an all-zero block: d = 0 must not divide by zero
    a[1, :32] = 3.0                    # a constant block: max == min for the _1 types
    a[2, 32:64] = -a[2, 32:64]
    return a


@pytest.mark.parametrize("name", TYPES)
def test_error_within_half_a_step(name: str) -> None:
    t = TYPES[name]
    x = _matrix()
    q = quantize_blocks(t, x)
    assert q.dtype == np.uint8 and q.size == x.size // 32 * BLOCK_BYTES[t]
    y = dequantize_blocks(t, q, x.size).reshape(x.shape)
    blocks_x, blocks_y = x.reshape(-1, 32), y.reshape(-1, 32)
    span = blocks_x.max(axis=1) - blocks_x.min(axis=1)
    amax = np.abs(blocks_x).max(axis=1)
    # Step size per block: (max-min)/15 or /31 for the _1 types, amax/8, /16, /127 for the symmetric ones.
    step = {2: amax / 8, 3: span / 15, 6: amax / 16, 7: span / 31, 8: amax / 127}[t]
    err = np.abs(blocks_x - blocks_y).max(axis=1)
    # Half a step plus the fp16 rounding of the scale (and of the min) applied to the largest code. Q4_0/Q5_0
    # put the largest magnitude at -8 (-16) steps; the other sign reaches only +7 (+15), so values there may
    # be clamped by up to one whole step.
    allowed = step if t in (2, 6) else 0.5 * step
    assert np.all(err <= allowed * (1 + 1e-2) + 2e-3 * amax + 1e-30)
    np.testing.assert_array_equal(blocks_y[0], 0.0)
    np.testing.assert_allclose(blocks_y[8], 3.0, rtol=1e-3)   # row 1, first block


def test_bad_arguments() -> None:
    with pytest.raises(ConversionError):
        quantize_blocks(1, np.zeros(32))
    with pytest.raises(ConversionError):
        quantize_blocks(8, np.zeros(33))
    with pytest.raises(ConversionError):
        dequantize_blocks(8, np.zeros(33, dtype=np.uint8), 32)


@pytest.mark.parametrize("name", TYPES)
def test_matches_native_quantizer(native, name: str) -> None:
    from rwkvchat import quantize

    x = _matrix(seed=1)
    mine = quantize_blocks(TYPES[name], x)
    theirs = quantize.quantize_matrix(x, name)
    assert theirs.ggml_type == TYPES[name]
    np.testing.assert_array_equal(np.asarray(theirs.data).reshape(-1), mine)
    np.testing.assert_array_equal(quantize.dequantize(mine, TYPES[name], x.size),
                                  dequantize_blocks(TYPES[name], mine, x.size))
