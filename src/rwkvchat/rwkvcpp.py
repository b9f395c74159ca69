"""Reader for rwkv.cpp `.bin` model files (file versions 100 and 101, every data type rwkv.cpp writes).

`read_rwkvcpp(path)` returns `(version, state_dict)` with the state dict in the OFFICIAL BlinkDL layout (key
names, shapes and raw parameter values of a `.pth`), so the `.pth` converter and the numpy references take it
as they are. rwkv.cpp's converter changed some tensors (file-formats.md §1.3); this module undoes each change:

* v4 `att.time_decay` was stored as -exp(w): w = log(-x).
* v5 `att.time_decay` was stored as exp(-exp(w)): w = log(-log(x)); v5 `att.time_first` as exp(u): u = log(x).
  A stored decay of exactly 1.0 (fp32 rounding of a tiny exp(w)) or 0.0 would give w = ∓inf; finite stand-ins
  (-30, 10) that reproduce the same float32 decay are used instead.
* v6 `time_maa_w1`, `time_decay_w1/w2` were transposed and `time_maa_w2` had dims 1 and 2 swapped.
* v7 `att.x_r ... x_g` were concatenated into `att.x_rwkvag` (6,1,D); `w1 w2 a1 a2 v1 v2 g1 g2` transposed.
* every key containing `.time_` was squeezed: (1,1,D) mixing vectors come back as (1,1,D), v5/v6
  decays and bonuses as (H,) / (H,N) / (1,1,D) as in the official files.

Data: FP32 and FP16 tensors become float32 numpy arrays (FP16 kept as float16 with `keep_f16=True`).
Quantized tensors (Q4_0, Q4_1, Q5_0, Q5_1, Q8_0) become `QuantizedTensor(ggml_type, shape, data)` holding the
raw blocks, so the converter copies them bit for bit. A quantized tensor that needs one of the transforms
above cannot be copied (blocks run along the innermost dimension, which a transpose changes): it is dequantized to
float32 and listed in `RwkvcppModel.dequantized` (in practice v6's quantized time_maa_w1/time_decay_w1/w2).

Everything read from the file is validated; every problem raises ConversionError with a message naming the
file and the tensor, never IndexError or struct.error.
"""

from __future__ import annotations

import math
import os
import struct
from dataclasses import dataclass, field

import numpy as np

from .convert import QuantizedTensor
from .errors import ConversionError
from .quant_numpy import dequantize_blocks

__all__ = ["GGML_BLOCK", "RWKVCPP_TYPES", "RwkvcppModel", "RwkvcppTensorInfo", "dequantize", "dequantize_blocks",
           "is_rwkvcpp_file", "load_rwkvcpp", "read_rwkvcpp", "scan_rwkvcpp"]

MAGIC = 0x67676D66
_HEADER = struct.Struct("<6I")
_RECORD = struct.Struct("<3i")

# Longest key accepted; the longest real key ("blocks.NNN.att.time_decay_w2") is under 40 bytes.
_MAX_KEY = 1024

# rwkv.cpp type id -> (name, ggml type id). Not the ggml numbering: rwkv.cpp keeps a placeholder at 4.
RWKVCPP_TYPES: dict[int, tuple[str, int]] = {
    0: ("FP32", 0), 1: ("FP16", 1), 2: ("Q4_0", 2), 3: ("Q4_1", 3),
    7: ("Q5_0", 6), 8: ("Q5_1", 7), 9: ("Q8_0", 8),
}
_REMOVED_TYPES = {4: "Q4_1_O", 5: "Q4_2", 6: "Q4_3"}
_UNSUPPORTED_TYPES = {10: "Q8_1", 11: "Q2_K", 12: "Q3_K", 13: "Q4_K", 14: "Q5_K", 15: "Q6_K", 16: "Q8_K"}
# ggml type id -> (elements per block, bytes per block) for the types found in rwkv.cpp files.
GGML_BLOCK: dict[int, tuple[int, int]] = {0: (1, 4), 1: (1, 2), 2: (32, 18), 3: (32, 20), 6: (32, 22),
                                          7: (32, 24), 8: (32, 34)}


def is_rwkvcpp_file(path: str | os.PathLike[str]) -> bool:
    """True when the file starts with rwkv.cpp's magic; False for anything else, unreadable files included."""
    try:
        with open(path, "rb") as f:
            return f.read(4) == struct.pack("<I", MAGIC)
    except OSError:
        return False


@dataclass(frozen=True)
class RwkvcppTensorInfo:
    """One record of the file: key, rwkv.cpp type id, ne (ggml order, innermost first), data offset, size."""

    key: str
    type_id: int
    ne: tuple[int, ...]
    offset: int
    nbytes: int

    @property
    def shape(self) -> tuple[int, ...]:
        """PyTorch order (outermost first): ne reversed."""
        return tuple(reversed(self.ne))

    @property
    def ggml_type(self) -> int:
        return RWKVCPP_TYPES[self.type_id][1]


@dataclass
class RwkvcppModel:
    """A whole rwkv.cpp file read into official layout (see the module docstring)."""

    path: str
    file_version: int          # 100 or 101
    n_vocab: int
    n_embd: int
    n_layer: int
    data_type: str             # the header's "majority" type name, informational ("FP16", "Q5_1", ...)
    version: str               # pip naming: "4", "5.0", "5.1", "5.2", "6.0", "7.0"
    state_dict: dict[str, np.ndarray | QuantizedTensor]
    dequantized: list[str] = field(default_factory=list)   # official keys that had to be dequantized


# ---------------------------------------------------------------------------------------------- scanning

def _type_name(type_id: int) -> str:
    if type_id in RWKVCPP_TYPES:
        return RWKVCPP_TYPES[type_id][0]
    return _REMOVED_TYPES.get(type_id) or _UNSUPPORTED_TYPES.get(type_id) or f"unknown type {type_id}"


def _check_type(type_id: int, where: str, path: str) -> None:
    if type_id in RWKVCPP_TYPES:
        return
    if type_id in _REMOVED_TYPES:
        raise ConversionError(f"{path}: {where} uses {_REMOVED_TYPES[type_id]}, a format rwkv.cpp removed; "
                              "convert it again from the FP16 or FP32 file")
    if type_id in _UNSUPPORTED_TYPES:
        raise ConversionError(f"{path}: {where} uses {_UNSUPPORTED_TYPES[type_id]}, which rwkv.cpp files "
                              "never hold for weights; the file is not supported")
    raise ConversionError(f"{path}: {where} has unknown data type id {type_id}; the file is damaged or foreign")


def _foreign_hint(head: bytes) -> str:
    if head[:4] == b"GGUF":
        return " (it is a GGUF file: use it directly, no conversion is needed)"
    if head[:4] == b"PK\x03\x04":
        return " (it looks like a PyTorch .pth checkpoint)"
    return ""


def scan_rwkvcpp(path: str | os.PathLike[str]) -> tuple[tuple[int, ...], list[RwkvcppTensorInfo]]:
    """Reads and validates the header and every record header, without touching tensor data.

    Returns ((magic, version, n_vocab, n_embd, n_layer, data_type), records in file order).
    """
    path = os.fspath(path)
    try:
        size = os.path.getsize(path)
        with open(path, "rb") as f:
            head = f.read(_HEADER.size)
            if len(head) < _HEADER.size:
                raise ConversionError(f"{path}: only {size} bytes, too short for an rwkv.cpp model file"
                                      + _foreign_hint(head))
            header = _HEADER.unpack(head)
            magic, version, n_vocab, n_embd, n_layer, data_type = header
            if magic != MAGIC:
                raise ConversionError(f"{path}: not an rwkv.cpp model file (magic {magic:#010x}, "
                                      f"expected {MAGIC:#010x})" + _foreign_hint(head))
            if version not in (100, 101):
                raise ConversionError(f"{path}: rwkv.cpp file version {version} is not supported (100 or 101)")
            _check_type(data_type, "the header", path)
            if version == 100 and data_type not in (0, 1):
                raise _obsolete(path)
            for name, value in (("n_vocab", n_vocab), ("n_embed", n_embd), ("n_layer", n_layer)):
                if not 0 < value < 1 << 24:
                    raise ConversionError(f"{path}: header field {name} = {value} is not a plausible size")
            records = _scan_records(f, path, size, version)
    except OSError as e:
        raise ConversionError(f"cannot read {path}: {e.strerror or e}") from e
    return header, records


def _obsolete(path: str) -> ConversionError:
    return ConversionError(f"{path}: this rwkv.cpp file uses an obsolete quantization layout (file version 100); "
                           "convert it again from the FP16 or FP32 file")


def _scan_records(f, path: str, size: int, version: int) -> list[RwkvcppTensorInfo]:  # type: ignore[no-untyped-def]
    records: list[RwkvcppTensorInfo] = []
    seen: set[str] = set()
    pos = _HEADER.size
    while pos < size:
        n = len(records)
        raw = f.read(_RECORD.size)
        if len(raw) < _RECORD.size:
            raise ConversionError(f"{path}: truncated: the header of tensor #{n} is cut off at byte {pos}")
        dim_count, key_length, type_id = _RECORD.unpack(raw)
        if not 1 <= dim_count <= 3:
            raise ConversionError(f"{path}: tensor #{n} at byte {pos} has dim_count {dim_count} (1 to 3 expected); "
                                  "the file is damaged")
        if not 0 < key_length <= _MAX_KEY:
            raise ConversionError(f"{path}: tensor #{n} at byte {pos} has a key length of {key_length}; "
                                  "the file is damaged")
        raw = f.read(4 * dim_count + key_length)
        if len(raw) < 4 * dim_count + key_length:
            raise ConversionError(f"{path}: truncated: the header of tensor #{n} is cut off")
        ne = struct.unpack(f"<{dim_count}i", raw[: 4 * dim_count])
        try:
            key = raw[4 * dim_count:].decode("utf-8")
        except UnicodeDecodeError:
            raise ConversionError(f"{path}: tensor #{n} has a name that is not UTF-8; the file is damaged") from None
        _check_type(type_id, f"tensor {key!r}", path)
        if any(d <= 0 for d in ne):
            raise ConversionError(f"{path}: tensor {key!r} has sizes {list(ne)}; all must be positive")
        if key in seen:
            raise ConversionError(f"{path}: tensor {key!r} appears twice")
        seen.add(key)
        if version == 100 and type_id not in (0, 1):
            raise _obsolete(path)
        block, block_bytes = GGML_BLOCK[RWKVCPP_TYPES[type_id][1]]
        if ne[0] % block:
            raise ConversionError(f"{path}: tensor {key!r} is {RWKVCPP_TYPES[type_id][0]} but its row length "
                                  f"{ne[0]} is not a multiple of {block}")
        # Python ints: three damaged int32 sizes can overflow an int64 product and wrap to a small number.
        count = math.prod(ne)
        nbytes = count // block * block_bytes
        offset = pos + _RECORD.size + 4 * dim_count + key_length
        if offset + nbytes > size:
            raise ConversionError(f"{path}: truncated: tensor {key!r} needs {nbytes} bytes of data, "
                                  f"only {size - offset} remain")
        records.append(RwkvcppTensorInfo(key, type_id, tuple(ne), offset, nbytes))
        pos = offset + nbytes
        f.seek(pos)
    return records


# ------------------------------------------------------------------------------------------ dequantizing

def dequantize(t: QuantizedTensor) -> np.ndarray:
    """A QuantizedTensor as float32 of its (PyTorch-order) shape."""
    return dequantize_blocks(t.ggml_type, t.data, int(np.prod(t.shape))).reshape(t.shape)


# ------------------------------------------------------------------------------ official layout recovery

def _detect(keys: set[str], records: dict[str, RwkvcppTensorInfo], n_embd: int) -> str:
    """Architecture from the key names (rwkv.cpp's rules), named as the official package names it."""
    if "blocks.0.att.r_k" in keys:
        return "7.0"
    if "blocks.0.att.time_maa_x" in keys:
        return "6.0"
    if "blocks.0.att.ln_x.weight" in keys:
        if "blocks.0.att.gate.weight" not in keys:
            return "5.0"      # rwkv.cpp's "5.1"
        decay = records.get("blocks.0.att.time_decay")
        return "5.2" if decay is not None and int(np.prod(decay.ne)) == n_embd else "5.1"
    return "4"


def _required(version: str, n_layer: int) -> list[str]:
    keys = ["emb.weight", "blocks.0.ln0.weight", "blocks.0.ln0.bias", "ln_out.weight", "ln_out.bias", "head.weight"]
    per_block = ["ln1.weight", "ln1.bias", "ln2.weight", "ln2.bias", "att.key.weight", "att.value.weight",
                 "att.receptance.weight", "att.output.weight", "ffn.key.weight", "ffn.value.weight"]
    if version == "7.0":
        per_block += ["att.x_rwkvag", "att.w0", "att.w1", "att.w2", "att.a0", "att.a1", "att.a2", "att.g1",
                      "att.g2", "att.k_k", "att.k_a", "att.r_k", "att.ln_x.weight", "att.ln_x.bias", "ffn.x_k"]
    else:
        per_block += ["att.time_decay", "ffn.receptance.weight"]
    if version == "4":
        per_block += ["att.time_first", "att.time_mix_k", "att.time_mix_v", "att.time_mix_r",
                      "ffn.time_mix_k", "ffn.time_mix_r"]
    elif version.startswith("5"):
        per_block += ["att.time_mix_k", "att.time_mix_v", "att.time_mix_r", "att.ln_x.weight", "att.ln_x.bias",
                      "ffn.time_mix_k", "ffn.time_mix_r"]
        if version != "5.0":
            per_block += ["att.gate.weight", "att.time_mix_g"]
    elif version == "6.0":
        per_block += ["att.time_maa_" + c for c in ("x", "w", "k", "v", "r", "g", "w1", "w2")]
        per_block += ["att.time_decay_w1", "att.time_decay_w2", "att.time_faaaa", "att.gate.weight",
                      "att.ln_x.weight", "att.ln_x.bias", "ffn.time_maa_k", "ffn.time_maa_r"]
    return keys + [f"blocks.{i}.{k}" for i in range(n_layer) for k in per_block]


def _as_float(mm: np.ndarray, info: RwkvcppTensorInfo, keep_f16: bool) -> np.ndarray:
    """The record's data as a float array of its PyTorch shape (copied out of the memory map)."""
    raw = mm[info.offset: info.offset + info.nbytes]
    if info.type_id == 0:
        arr = np.frombuffer(raw.tobytes(), dtype="<f4").astype(np.float32)
    elif info.type_id == 1:
        arr = np.frombuffer(raw.tobytes(), dtype="<f2")
        arr = arr.astype(np.float16) if keep_f16 else arr.astype(np.float32)
    else:
        arr = dequantize_blocks(info.ggml_type, raw, int(np.prod(info.ne)))
    return arr.reshape(info.shape)


# Finite raw v5 decays standing for a stored decay of exactly 1.0 / 0.0 (see _Restorer._decay).
_W_ALWAYS_KEEP = -30.0
_W_FORGET_AT_ONCE = 10.0
# Raw v4 decay standing for a stored -exp(w) of exactly 0 (exp(-110) underflows float32).
_W4_UNDERFLOW = -110.0

# Token-shift mixing vectors: (1,1,D) in the .pth, squeezed to (D) by rwkv.cpp's converter.
_MIX_VECTORS = frozenset(
    [f"att.time_mix_{c}" for c in "kvrg"] + ["ffn.time_mix_k", "ffn.time_mix_r", "ffn.time_maa_k", "ffn.time_maa_r"]
    + [f"att.time_maa_{c}" for c in "xwkvrg"])


class _Restorer:
    """Turns one file record into official tensors: (official key, value) pairs."""

    def __init__(self, path: str, version: str, n_embd: int, n_head: int, mm: np.ndarray, keep_f16: bool) -> None:
        self.path, self.version, self.d, self.h = path, version, n_embd, n_head
        self.mm, self.keep_f16 = mm, keep_f16
        self.dequantized: list[str] = []

    def restore(self, info: RwkvcppTensorInfo) -> list[tuple[str, np.ndarray | QuantizedTensor]]:
        key, v, d = info.key, self.version, self.d
        transform = self._transform_of(key)
        if info.type_id not in (0, 1) and transform is None:
            data = np.array(self.mm[info.offset: info.offset + info.nbytes], dtype=np.uint8)
            return [(key, QuantizedTensor(info.ggml_type, info.shape, data))]
        if info.type_id not in (0, 1):
            self.dequantized.append(key)
        arr = _as_float(self.mm, info, self.keep_f16 and transform is None)
        if transform is None:
            return [(key, arr)]
        arr = arr.astype(np.float32)
        try:
            return transform(key, arr)
        except ValueError as e:   # A reshape that does not fit: the tensor has the wrong size.
            raise ConversionError(f"{self.path}: tensor {key!r} of shape {arr.shape} does not fit a "
                                  f"v{v} model with n_embd {d}: {e}") from None

    def _transform_of(self, key: str):  # type: ignore[no-untyped-def]
        """The function undoing rwkv.cpp's change of this key, or None when it is stored as in the .pth."""
        v = self.version
        tail = key.split(".", 2)[-1] if key.startswith("blocks.") else key
        if v == "7.0":
            if tail == "att.x_rwkvag":
                return self._split_rwkvag
            if tail in {f"att.{c}{j}" for c in "wavg" for j in "12"}:
                return lambda k, a: [(k, np.ascontiguousarray(a.T))]
            return None
        if tail in _MIX_VECTORS:
            return lambda k, a: [(k, a.reshape(1, 1, self.d))]
        if tail == "att.time_decay":
            return self._decay
        if tail == "att.time_first":
            return self._first
        if tail == "att.time_faaaa":
            return lambda k, a: [(k, a.reshape(self.h, -1) if v in ("5.2", "6.0") else a.reshape(self.h))]
        if tail in ("att.time_maa_w1", "att.time_decay_w1", "att.time_decay_w2"):
            return lambda k, a: [(k, np.ascontiguousarray(a.T))]
        if tail == "att.time_maa_w2":
            return lambda k, a: [(k, np.ascontiguousarray(a.swapaxes(1, 2)))]
        return None

    def _decay(self, key: str, a: np.ndarray) -> list[tuple[str, np.ndarray]]:
        v = self.version
        a64 = a.astype(np.float64)
        with np.errstate(divide="ignore", invalid="ignore"):
            if v == "4":
                if np.any(a64 > 0):
                    raise ConversionError(f"{self.path}: {key} holds positive values; rwkv.cpp stores "
                                          "-exp(w) for v4, so the file is damaged")
                # -exp(w) that underflowed to 0 in float32: a finite w giving the same float32 value.
                return [(key, np.where(a64 == 0, _W4_UNDERFLOW, np.log(-a64)).astype(np.float32))]
            if v == "6.0":
                return [(key, a.reshape(1, 1, self.d))]
            if np.any((a64 < 0) | (a64 > 1)):
                raise ConversionError(f"{self.path}: {key} holds values outside [0, 1]; rwkv.cpp stores "
                                      "exp(-exp(w)) for v5, so the file is damaged")
            w = np.log(-np.log(a64))
            # d of exactly 1 (0) in float32 means exp(w) vanished (exploded): w = -inf (+inf). Store finite
            # stand-ins that give the same float32 d, so a GGUF never carries infinities: exp(-exp(-30)) rounds
            # to 1 and exp(-exp(10)) underflows to 0.
            w = np.where(a64 >= 1.0, _W_ALWAYS_KEEP, np.where(a64 <= 0.0, _W_FORGET_AT_ONCE, w)).astype(np.float32)
        return [(key, w.reshape(self.h, -1) if v == "5.2" else w.reshape(self.h))]

    def _first(self, key: str, a: np.ndarray) -> list[tuple[str, np.ndarray]]:
        if self.version == "4":
            return [(key, a.reshape(self.d))]
        if np.any(a <= 0):
            raise ConversionError(f"{self.path}: {key} holds non-positive values; rwkv.cpp stores exp(u) for "
                                  "v5, so the file is damaged")
        return [(key, np.log(a.astype(np.float64)).astype(np.float32).reshape(self.h))]

    def _split_rwkvag(self, key: str, a: np.ndarray) -> list[tuple[str, np.ndarray]]:
        parts = a.reshape(6, 1, 1, self.d)
        base = key[: -len("x_rwkvag")]
        return [(base + "x_" + c, np.ascontiguousarray(parts[j])) for j, c in enumerate("rwkvag")]


def _head_count(version: str, records: dict[str, RwkvcppTensorInfo], n_embd: int, path: str) -> int:
    if version == "4":
        return 0
    if version == "7.0":
        h = records["blocks.0.att.r_k"].ne[-1]
    else:
        ne = records["blocks.0.att.time_decay"].ne
        h = ne[2] if len(ne) == 3 else (n_embd // ne[0] if version == "6.0" else ne[0])
    if h <= 0 or n_embd % h:
        raise ConversionError(f"{path}: head count {h} does not divide n_embed {n_embd}")
    return int(h)


def load_rwkvcpp(path: str | os.PathLike[str], keep_f16: bool = False) -> RwkvcppModel:
    """Reads a whole rwkv.cpp file into an official-layout state dict (module docstring)."""
    path = os.fspath(path)
    header, records = scan_rwkvcpp(path)
    _, file_version, n_vocab, n_embd, n_layer, data_type = header
    by_key = {r.key: r for r in records}
    version = _detect(set(by_key), by_key, n_embd)
    # Block indices must be plain ASCII numbers ("²".isdigit() is True, int("²") fails) below the header's count.
    # Checked before the list of required keys is built: that list grows with the header's n_layer, which a
    # hostile header sets to millions.
    block_ids = set()
    for k in by_key:
        if k.startswith("blocks."):
            part = k.split(".")[1]
            if not (part.isascii() and part.isdigit()) or int(part) >= n_layer:
                raise ConversionError(f"{path}: tensor {k!r} lies beyond the header's {n_layer} layers")
            block_ids.add(int(part))
    if len(block_ids) < n_layer:
        missing_block = min(set(range(len(block_ids) + 1)) - block_ids)
        raise ConversionError(f"{path}: the header says {n_layer} layers, but the file has no tensors of block "
                              f"{missing_block}")
    missing = [k for k in _required(version, n_layer) if k not in by_key]
    if missing:
        raise ConversionError(f"{path}: a v{version} model needs tensor {missing[0]!r}, which the file lacks"
                              + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""))
    emb = by_key["emb.weight"]
    if emb.ne != (n_embd, n_vocab):
        raise ConversionError(f"{path}: emb.weight has ne {list(emb.ne)}, the header says [{n_embd}, {n_vocab}]")
    n_head = _head_count(version, by_key, n_embd, path)
    try:
        mm = np.memmap(path, dtype=np.uint8, mode="r")
    except (OSError, ValueError) as e:
        raise ConversionError(f"cannot map {path}: {e}") from e
    restorer = _Restorer(path, version, n_embd, n_head, mm, keep_f16)
    sd: dict[str, np.ndarray | QuantizedTensor] = {}
    for info in records:
        for key, value in restorer.restore(info):
            sd[key] = value
    del mm
    return RwkvcppModel(path, file_version, n_vocab, n_embd, n_layer, _type_name(data_type), version, sd,
                        restorer.dequantized)


def read_rwkvcpp(path: str | os.PathLike[str]) -> tuple[str, dict[str, np.ndarray | QuantizedTensor]]:
    """(version, official-layout state dict) of an rwkv.cpp file; see load_rwkvcpp for the details."""
    model = load_rwkvcpp(path)
    return model.version, model.state_dict
