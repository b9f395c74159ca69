"""Block quantization of RWKV weights: one matrix (`quantize_matrix`) or a whole GGUF file (`quantize_gguf`).

The rounding runs in the C library (`rwkvc_quantize`, ggml's reference rules), so files are bit-identical to what
llama.cpp's `llama-quantize` writes for the same input and load in llama.cpp.

Which tensors are quantized (every architecture we write or read: rwkv4, rwkv5, rwkv6, rwkv7) — only the large
2-D matrices, by name:

* `token_embd.weight` (the embedding) in the requested type, and `output.weight` (the head) as llama-quantize
  does: its logit error reaches the output undamped by any normalisation, so a head type below 6 bits becomes
  Q6_K (Q8_0 when rows are not a multiple of 256); `pure=True` (`--pure`) uses the requested type for it too;
  `keep_emb_head=True` (`--keep-emb-head`) leaves both as they are, which is rwkv.cpp's choice: on small-vocabulary
  models they dominate the logit error (rwkv.cpp's tiny v7, Q5_0: max |error| 0.0035 with them kept, 0.044 with
  the embedding at Q5_0 and the head at Q8_0), on large models they are a large share of the bytes read per token;
* per block: `time_mix_{key,value,receptance,output,gate}.weight` and `channel_mix_{key,value,receptance}.weight`.

Everything else keeps its type: all 1-D tensors (norms, token-shift mixes, decays, `time_mix_first`, `w0`, `a0`,
`v0`, `k_k`, `k_a`, `r_k`), `time_mix_lerp_fused`, and the LoRA matrices (`time_mix_w1/w2`, `a1/a2`, `v1/v2`,
`g1/g2`, `decay_w1/w2`), which are small and sensitive — the same set llama.cpp leaves unquantized
(file-formats.md §2.4). A matrix whose row length (ne0) is not a multiple of the block size falls back as
llama.cpp does: Q4_K -> Q5_0, Q5_K -> Q5_1, Q6_K -> Q8_0 when the row fits 32-blocks, else it stays as it is.
"""

from __future__ import annotations

import ctypes
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from . import _native
from .errors import ConversionError

__all__ = [
    "TYPES",
    "QuantizeResult",
    "QuantizedMatrix",
    "dequantize",
    "quantize_gguf",
    "quantize_matrix",
    "type_id",
    "valid_types",
]

# Output types by the names llama.cpp prints (upper case; lookups ignore case).
TYPES: dict[str, int] = {
    "Q8_0": 8, "Q4_0": 2, "Q4_1": 3, "Q5_0": 6, "Q5_1": 7,
    "Q4_K": 12, "Q5_K": 13, "Q6_K": 14,
    "F16": 1, "BF16": 30, "F32": 0,
}
_NAMES = {v: k for k, v in TYPES.items()}
_BLOCK = {8: (32, 34), 2: (32, 18), 3: (32, 20), 6: (32, 22), 7: (32, 24), 12: (256, 144), 13: (256, 176),
          14: (256, 210), 1: (1, 2), 30: (1, 2), 0: (1, 4)}
# K-quant fallbacks for rows that are not a multiple of 256 (llama.cpp's llama-quant.cpp).
_K_FALLBACK = {12: 6, 13: 7, 14: 8}
# general.file_type (llama.cpp's LlamaFileType) for the type of the big matrices.
_FILE_TYPE = {0: 0, 1: 1, 30: 32, 2: 2, 3: 3, 8: 7, 6: 8, 7: 9, 12: 15, 13: 17, 14: 18}

_QUANTIZED_NAME = re.compile(
    r"^(token_embd|output|blk\.\d+\.(time_mix_(key|value|receptance|output|gate)|"
    r"channel_mix_(key|value|receptance)))\.weight$")

ProgressFn = Callable[[str, int, int], None]
"""progress(tensor_name, bytes_done, bytes_total), called after each tensor is written."""


@dataclass(frozen=True)
class QuantizedMatrix:
    """A matrix in a GGUF tensor type (the converter's QuantizedTensor interface).

    ggml_type: the GGML type id actually used (after any fallback). shape: numpy order (rows, row_len), i.e.
    PyTorch (out, in). data: uint8 (rows, row_bytes), the raw blocks as ggml lays them out.
    """

    ggml_type: int
    shape: tuple[int, ...]
    data: np.ndarray


@dataclass(frozen=True)
class QuantizeResult:
    """What quantize_gguf did: counts and sizes (bytes)."""

    n_quantized: int
    n_kept: int
    bytes_in: int
    bytes_out: int
    types: dict[str, str]  # tensor name -> output type name, for the quantized ones


def valid_types() -> str:
    return ", ".join(TYPES)


def type_id(name: str) -> int:
    """GGML id of a type name ("q4_0", "Q4_K"...); ConversionError listing the valid names otherwise."""
    key = name.strip().upper()
    if key not in TYPES:
        raise ConversionError(f"unknown type {name!r}; valid types: {valid_types()}")
    return TYPES[key]


def _fit_type(ggml_type: int, row_len: int) -> int | None:
    """The type used for rows of row_len elements, or None when the matrix must keep its type."""
    bs = _BLOCK[ggml_type][0]
    if row_len % bs == 0:
        return ggml_type
    fallback = _K_FALLBACK.get(ggml_type)
    if fallback is not None and row_len % _BLOCK[fallback][0] == 0:
        return fallback
    return None


def _row_bytes(ggml_type: int, row_len: int) -> int:
    bs, bb = _BLOCK[ggml_type]
    return row_len // bs * bb


def _quantize_rows(a: np.ndarray, ggml_type: int) -> np.ndarray:
    """float32 (rows, row_len) -> uint8 (rows, row_bytes) through rwkvc_quantize."""
    a = np.ascontiguousarray(a, dtype=np.float32)
    rows, row_len = a.shape
    out = np.empty((rows, _row_bytes(ggml_type, row_len)), dtype=np.uint8)
    _native.check(_native.lib().rwkvc_quantize(
        ggml_type, a.ctypes.data_as(ctypes.POINTER(ctypes.c_float)), rows, row_len,
        out.ctypes.data_as(ctypes.c_void_p), out.nbytes))
    return out


def dequantize(data: np.ndarray, ggml_type: int, n: int) -> np.ndarray:
    """Raw blocks (any shape, uint8) of a tensor of n elements -> float32 (n,) through rwkvc_dequantize."""
    raw = np.ascontiguousarray(data).view(np.uint8).reshape(-1)
    out = np.empty(n, dtype=np.float32)
    _native.check(_native.lib().rwkvc_dequantize(
        ggml_type, raw.ctypes.data_as(ctypes.c_void_p), raw.nbytes,
        out.ctypes.data_as(ctypes.POINTER(ctypes.c_float)), n))
    return out


def quantize_matrix(matrix: np.ndarray, type_name: str, name: str | None = None) -> QuantizedMatrix:
    """Quantizes a float matrix (rows, row_len) — PyTorch (out, in) — along its rows.

    Applies the K-quant fallback for rows that are not a multiple of 256; a row length that fits no block size of
    the requested family is stored as F16. name: the GGUF tensor name, if known; "output.weight" (the head) then
    gets llama.cpp's head type (at least Q6_K / Q8_0, see the module docstring). Returns data as uint8
    (rows, row_bytes).
    """
    ggml_type = type_id(type_name)
    a = np.asarray(matrix, dtype=np.float32)
    if a.ndim != 2:
        raise ConversionError(f"quantize_matrix needs a 2-D matrix, got shape {a.shape}")
    if name == "output.weight":
        ggml_type = _head_type(ggml_type, a.shape[1])
    t = _fit_type(ggml_type, a.shape[1])
    if t is None:
        t = 1
    return QuantizedMatrix(t, (int(a.shape[0]), int(a.shape[1])), _quantize_rows(a, t))


# ---- whole files ----


def _field_value(field: Any) -> Any:
    """Python value of a GGUFReader field (str, number, bool or list of them)."""
    import gguf

    types = field.types
    if not types:
        return None
    if types[0] == gguf.GGUFValueType.ARRAY:
        sub = types[-1]
        if sub == gguf.GGUFValueType.STRING:
            return [bytes(field.parts[i]).decode("utf-8", "surrogateescape") for i in field.data]
        return [field.parts[i].tolist()[0] for i in field.data]
    if types[0] == gguf.GGUFValueType.STRING:
        return bytes(field.parts[field.data[0]]).decode("utf-8", "surrogateescape")
    return field.parts[field.data[0]].tolist()[0]


def _copy_metadata(reader: Any, writer: Any, file_type: int) -> None:
    import gguf

    for name, field in reader.fields.items():
        if name.startswith("GGUF.") or name in ("general.architecture", "general.file_type"):
            continue
        if name == "general.alignment":
            # The writer pads tensor data to this alignment, so it must know it, not just copy the key.
            writer.add_custom_alignment(int(_field_value(field)))
            continue
        vtype = gguf.GGUFValueType(field.types[0])
        sub = gguf.GGUFValueType(field.types[-1]) if vtype == gguf.GGUFValueType.ARRAY and len(field.types) > 1 \
            else None
        value = _field_value(field)
        if vtype == gguf.GGUFValueType.STRING or sub == gguf.GGUFValueType.STRING:
            # Strings go back as raw bytes so tokens that are not valid UTF-8 survive unchanged.
            value = [v.encode("utf-8", "surrogateescape") for v in value] if isinstance(value, list) \
                else value.encode("utf-8", "surrogateescape")
        writer.add_key_value(name, value, vtype, sub_type=sub)
    writer.add_file_type(file_type)


def _tensor_float32(t: Any) -> np.ndarray:
    """float32 values of a reader tensor, numpy shape = reversed ne."""
    import gguf

    shape = tuple(int(x) for x in reversed(t.shape))
    n = int(t.n_elements)
    ty = int(t.tensor_type)
    if ty == gguf.GGMLQuantizationType.F32:
        return np.asarray(t.data, dtype=np.float32).reshape(shape)
    if ty == gguf.GGMLQuantizationType.F16:
        return np.asarray(t.data).view(np.float16).astype(np.float32).reshape(shape)
    if ty == gguf.GGMLQuantizationType.BF16:
        bits = np.asarray(t.data).view(np.uint16).astype(np.uint32) << 16
        return bits.view(np.float32).reshape(shape)
    if ty in _BLOCK:
        return dequantize(np.asarray(t.data), ty, n).reshape(shape)
    raise ConversionError(f"tensor {t.name}: type {ty} cannot be read for requantization")


# Types of at least 6 bits per weight, which the head keeps as requested.
_HIGH_PRECISION = {8, 14, 1, 30, 0}


def _head_type(target: int, row_len: int) -> int:
    """llama.cpp's choice for output.weight: the target if it has >= 6 bits, else Q6_K, else Q8_0."""
    if target in _HIGH_PRECISION:
        return target
    return 14 if row_len % 256 == 0 else 8


def _plan_tensor(t: Any, target: int, pure: bool, keep_emb_head: bool) -> tuple[int | None, tuple[int, ...]]:
    """(output type or None to copy unchanged, numpy shape) of one reader tensor."""
    shape = tuple(int(x) for x in reversed(t.shape))
    if not _QUANTIZED_NAME.match(t.name) or len(shape) != 2:
        return None, shape
    if keep_emb_head and t.name in ("token_embd.weight", "output.weight"):
        return None, shape
    if t.name == "output.weight" and not pure:
        target = _head_type(target, shape[-1])
    out = _fit_type(target, shape[-1])
    if out is None or out == int(t.tensor_type):
        return None, shape
    return out, shape


def quantize_gguf(in_path: str | os.PathLike[str], out_path: str | os.PathLike[str], type_name: str, *,
                  force: bool = False, pure: bool = False, keep_emb_head: bool = False,
                  progress: ProgressFn | None = None) -> QuantizeResult:
    """Writes out_path: in_path with its large matrices converted to type_name (see the module docstring).

    pure: the head too gets type_name (by default it keeps at least Q6_K / Q8_0, as llama-quantize does).
    keep_emb_head: the embedding and the head keep their type (rwkv.cpp's choice).

    The output is written under a temporary name in the same folder and renamed at the end, so an interrupted run
    leaves no partial file. An existing out_path is replaced only with force=True.
    """
    import gguf

    target = type_id(type_name)
    in_path = os.fspath(in_path)
    out_path = os.fspath(out_path)
    if not os.path.isfile(in_path):
        raise ConversionError(f"no such model file: {in_path}")
    if os.path.exists(out_path):
        if os.path.exists(in_path) and os.path.samefile(in_path, out_path):
            raise ConversionError(f"output {out_path} is the input file")
        if not force:
            raise ConversionError(f"output {out_path} exists; pass --force to replace it")
    try:
        reader = gguf.GGUFReader(in_path)
    except Exception as e:  # The gguf package raises ValueError, struct errors... for foreign files.
        raise ConversionError(f"{in_path} is not a readable GGUF file: {e}") from e
    arch_field = reader.fields.get("general.architecture")
    if arch_field is None:
        raise ConversionError(f"{in_path} has no general.architecture")
    arch = _field_value(arch_field)

    plans = [(t, *_plan_tensor(t, target, pure, keep_emb_head)) for t in reader.tensors]
    sizes = []
    for t, out_type, shape in plans:
        sizes.append(int(t.n_bytes) if out_type is None else shape[0] * _row_bytes(out_type, shape[-1]))
    total = sum(sizes)

    tmp = os.path.join(os.path.dirname(os.path.abspath(out_path)),
                       f".{os.path.basename(out_path)}.tmp-{os.getpid()}")
    writer = gguf.GGUFWriter(tmp, arch)
    done = 0
    types: dict[str, str] = {}
    try:
        _copy_metadata(reader, writer, _FILE_TYPE.get(target, 1))
        for (t, out_type, shape), nbytes in zip(plans, sizes):
            ty = int(t.tensor_type) if out_type is None else out_type
            if ty in (0, 1, 30):
                np_dtype = {0: np.float32, 1: np.float16, 30: np.uint16}[ty]
                elem_shape = shape
                writer.add_tensor_info(t.name, elem_shape, np.dtype(np_dtype), nbytes,
                                       raw_dtype=gguf.GGMLQuantizationType(ty))
            else:
                rows = int(np.prod(shape[:-1])) if len(shape) > 1 else 1
                byte_shape = (*shape[:-1], nbytes // max(rows, 1))
                writer.add_tensor_info(t.name, byte_shape, np.dtype(np.uint8), nbytes,
                                       raw_dtype=gguf.GGMLQuantizationType(ty))
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_ti_data_to_file()
        for (t, out_type, shape), nbytes in zip(plans, sizes):
            if out_type is None:
                data = np.ascontiguousarray(t.data)
            else:
                a = _tensor_float32(t).reshape(-1, shape[-1])
                if out_type in (0, 1, 30):
                    data = _quantize_rows(a, out_type).view({0: np.float32, 1: np.float16, 30: np.uint16}[out_type])
                else:
                    data = _quantize_rows(a, out_type)
                types[t.name] = _NAMES[out_type]
            if data.nbytes != nbytes:
                raise ConversionError(f"tensor {t.name}: {data.nbytes} bytes, expected {nbytes}")
            writer.write_tensor_data(data)
            done += nbytes
            if progress is not None:
                progress(t.name, done, total)
        writer.close()
        os.replace(tmp, out_path)
    except BaseException:
        writer.close()
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    return QuantizeResult(n_quantized=len(types), n_kept=len(plans) - len(types),
                          bytes_in=int(sum(int(t.n_bytes) for t in reader.tensors)), bytes_out=total, types=types)

