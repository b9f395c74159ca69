"""numpy reference of ggml's 32-element block formats Q4_0, Q4_1, Q5_0, Q5_1 and Q8_0.

Slow but obviously correct: the oracle the C quantizer and the rwkv.cpp importer are tested against, and the
quantizer the conformance tests use to redo rwkv.cpp's own "quantize the FP32 file" checks. Layouts and the
reference rounding rules are those of quant-formats.md §3 (ggml's `quantize_row_*_ref`), computed in float32
like ggml so the blocks come out as ggml's scalar code would write them.

Types are named by their ggml ids: Q4_0 2, Q4_1 3, Q5_0 6, Q5_1 7, Q8_0 8. `data` is always a flat uint8 array
of n/32 blocks; values run along the innermost (contiguous) dimension of the tensor.
"""

from __future__ import annotations

import numpy as np

from .errors import ConversionError

__all__ = ["BLOCK_BYTES", "QK", "dequantize_blocks", "quantize_blocks"]

QK = 32
# ggml type id -> bytes per 32-value block.
BLOCK_BYTES = {2: 18, 3: 20, 6: 22, 7: 24, 8: 34}


def _blocks_of(x: np.ndarray) -> np.ndarray:
    flat = np.ascontiguousarray(x, dtype=np.float32).reshape(-1)
    if flat.size % QK:
        raise ConversionError(f"{flat.size} values is not a whole number of {QK}-value blocks")
    return flat.reshape(-1, QK)


def _half(v: np.ndarray) -> np.ndarray:
    """(nb,) float32 -> (nb, 2) uint8, the fp16 bytes (round to nearest even, as F16C / ggml)."""
    return v.astype("<f2").reshape(-1, 1).view(np.uint8)


def _pack_nibbles(q: np.ndarray) -> np.ndarray:
    """(nb, 32) values -> (nb, 16) bytes: element j in the low nibble of byte j, j+16 in the high one."""
    q = q.astype(np.uint8)
    return (q[:, :16] & 0x0F) | ((q[:, 16:] & 0x0F) << 4)


def _pack_fifth_bits(q: np.ndarray) -> np.ndarray:
    """(nb, 32) 5-bit values -> (nb, 4) bytes of a little-endian uint32 whose bit j is bit 4 of element j."""
    bits = ((q.astype(np.uint32) >> 4) & 1) << np.arange(QK, dtype=np.uint32)
    return bits.sum(axis=1, dtype=np.uint32).astype("<u4").reshape(-1, 1).view(np.uint8)


def _signed_absmax(b: np.ndarray) -> np.ndarray:
    """Per block, the value with the largest magnitude, sign kept (first one on ties, as ggml's loop)."""
    return b[np.arange(b.shape[0]), np.abs(b).argmax(axis=1)]


def _inverse(d: np.ndarray) -> np.ndarray:
    """1/d in float32, 0 where d is 0 (an all-zero block)."""
    with np.errstate(divide="ignore"):
        return np.where(d != 0, np.float32(1.0) / d, np.float32(0.0)).astype(np.float32)


def quantize_blocks(ggml_type: int, x: np.ndarray) -> np.ndarray:
    """x (any shape, size a multiple of 32) -> flat uint8 blocks of ggml type 2, 3, 6, 7 or 8."""
    if ggml_type not in BLOCK_BYTES:
        raise ConversionError(f"quantize_blocks: ggml type {ggml_type} is not a 32-value block type")
    b = _blocks_of(x)
    if ggml_type == 8:          # Q8_0: d = amax/127, q = round half away from zero.
        d = (np.abs(b).max(axis=1) / np.float32(127)).astype(np.float32)
        y = b * _inverse(d)[:, None]
        q = (np.sign(y) * np.floor(np.abs(y) + np.float32(0.5))).astype(np.int8)
        parts = [_half(d), q.view(np.uint8)]
    elif ggml_type in (2, 6):   # Q4_0 / Q5_0: d = signed max / -8 (-16); q = trunc(x/d + 8.5 (16.5)).
        half_range = 8 if ggml_type == 2 else 16
        d = (_signed_absmax(b) / np.float32(-half_range)).astype(np.float32)
        y = b * _inverse(d)[:, None] + np.float32(half_range + 0.5)
        q = np.minimum(np.trunc(y), 2 * half_range - 1).astype(np.int32)
        parts = [_half(d)]
        if ggml_type == 6:
            parts.append(_pack_fifth_bits(q))
        parts.append(_pack_nibbles(q))
    else:                       # Q4_1 / Q5_1: m = min, d = (max - min)/15 (31); q = trunc((x - m)/d + 0.5).
        levels = 15 if ggml_type == 3 else 31
        lo, hi = b.min(axis=1), b.max(axis=1)
        d = ((hi - lo) / np.float32(levels)).astype(np.float32)
        y = (b - lo[:, None]) * _inverse(d)[:, None] + np.float32(0.5)
        q = np.minimum(np.trunc(y), levels).astype(np.int32)
        parts = [_half(d), _half(lo)]
        if ggml_type == 7:
            parts.append(_pack_fifth_bits(q))
        parts.append(_pack_nibbles(q))
    return np.concatenate(parts, axis=1).reshape(-1)


def _f16(col: np.ndarray) -> np.ndarray:
    """(nb, 2) uint8 -> (nb, 1) float32, the little-endian fp16 stored in each block."""
    return np.ascontiguousarray(col).view("<f2").astype(np.float32)


def _nibbles(qs: np.ndarray) -> np.ndarray:
    """(nb, 16) bytes -> (nb, 32) values: low nibble of byte j is element j, the high nibble element j+16."""
    return np.concatenate([qs & 0x0F, qs >> 4], axis=1).astype(np.int32)


def _fifth_bits(qh: np.ndarray) -> np.ndarray:
    """(nb, 4) bytes read as a little-endian uint32 -> (nb, 32) values 0/16: bit j is bit 4 of element j."""
    bits = np.ascontiguousarray(qh).view("<u4").astype(np.uint32)          # (nb, 1)
    return (((bits >> np.arange(QK, dtype=np.uint32)) & 1) << 4).astype(np.int32)


def dequantize_blocks(ggml_type: int, data: np.ndarray | bytes, n: int) -> np.ndarray:
    """n float32 values from ggml blocks of Q4_0 (2), Q4_1 (3), Q5_0 (6), Q5_1 (7) or Q8_0 (8)."""
    if ggml_type not in BLOCK_BYTES:
        raise ConversionError(f"dequantize_blocks: ggml type {ggml_type} is not a 32-value block type")
    block_bytes = BLOCK_BYTES[ggml_type]
    if n % QK:
        raise ConversionError(f"dequantize_blocks: {n} values is not a whole number of {QK}-value blocks")
    nb = n // QK
    if isinstance(data, (bytes, bytearray, memoryview)):
        raw = np.frombuffer(data, dtype=np.uint8)
    else:
        raw = np.asarray(data, dtype=np.uint8).reshape(-1)
    if raw.size != nb * block_bytes:
        raise ConversionError(f"dequantize_blocks: {raw.size} bytes for {nb} blocks of {block_bytes}")
    b = raw.reshape(nb, block_bytes)
    d = _f16(b[:, 0:2])
    if ggml_type == 2:      # Q4_0: d, qs[16]; (q - 8)·d
        out = (_nibbles(b[:, 2:18]) - 8) * d
    elif ggml_type == 3:    # Q4_1: d, m, qs[16]; q·d + m
        out = _nibbles(b[:, 4:20]) * d + _f16(b[:, 2:4])
    elif ggml_type == 6:    # Q5_0: d, qh, qs[16]; (q - 16)·d
        out = ((_nibbles(b[:, 6:22]) | _fifth_bits(b[:, 2:6])) - 16) * d
    elif ggml_type == 7:    # Q5_1: d, m, qh, qs[16]; q·d + m
        out = (_nibbles(b[:, 8:24]) | _fifth_bits(b[:, 4:8])) * d + _f16(b[:, 2:4])
    else:                   # Q8_0: d, qs[32] int8; q·d
        out = b[:, 2:34].view(np.int8).astype(np.float32) * d
    return out.astype(np.float32).reshape(-1)
