"""Official BlinkDL state dicts -> GGUF files in llama.cpp's conventions.

`checkpoint.read_checkpoint` opens a `.pth` and `checkpoint.detect_version` names the architecture from the
keys; `write_gguf` writes llama.cpp's `rwkv7` layout (docs: file-formats.md §2.3-§2.5) so
the file loads both in rwkvchat and in llama.cpp. Tensors are converted and written one at a time, so
peak memory stays near one tensor beyond the (memory-mapped) checkpoint.

Every version's name table (v7's included) is in `gguf_names` (rwkv6 as llama.cpp writes
it, rwkv4/rwkv5 as docs/gguf-rwkv4-rwkv5.md specifies). `_SPECS` maps a version to its tables.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from . import gguf_names
from .checkpoint import detect_version, layer_count, shape_of
from .errors import ConversionError
from .gguf_names import GLOBAL_ROWS, V7_BLOCK0_SUBSTITUTES, V7_BLOCK_ROWS

# GGML type ids (quant-formats.md §1); the float ones are all this module writes itself.
GGML_F32, GGML_F16, GGML_BF16 = 0, 1, 30
_FLOAT_DTYPES = {"f32": GGML_F32, "f16": GGML_F16, "bf16": GGML_BF16}
# general.file_type values (llama.cpp's LlamaFileType) for the type of the big matrices.
_FILE_TYPE = {0: 0, 1: 1, 30: 32, 2: 2, 3: 3, 8: 7, 6: 8, 7: 9, 10: 10, 11: 12, 12: 15, 13: 17, 14: 18}

ProgressFn = Callable[[str, int, int], None]
"""progress(tensor_name, bytes_written_so_far, total_bytes), called after each tensor."""


@dataclass(frozen=True)
class QuantizedTensor:
    """Block-quantized tensor data copied into the GGUF bit for bit.

    ggml_type: a GGML type id (rwkvc_type). shape: PyTorch order, e.g. (out, in) for a Linear weight.
    data: the raw blocks, uint8, exactly as ggml lays them out (rows along the last PyTorch dim).
    """

    ggml_type: int
    shape: tuple[int, ...]
    data: np.ndarray


# ---- The v7 name table -------------------------------------------------------------------------------
#
# Each row: (GGUF name, .pth key or keys, transform, role). Names use {i} for the block index.
# Roles decide the stored type: "matrix" takes the requested dtype; "lora" is F16 unless dtype is f32;
# "lora_f32" (the decay LoRA) and "vector" stay F32, as llama.cpp's converter and quantizer leave them.

_SQUEEZE = "squeeze"
_T = "transpose"
_STACK = "stack"
_NONE = "none"
_PERMUTE_021 = "permute_021"  # Swap the last two axes: v6 time_maa_w2 (5,Rm,D) -> (5,D,Rm).
_EXP = "exp"  # Elementwise exp in float32: a v5 time_first stored as the bonus u itself.

@dataclass
class _Planned:
    """One output tensor: GGUF name, numpy shape (reverse of ne), GGML type, byte size and a maker."""

    name: str
    shape: tuple[int, ...]
    ggml_type: int
    nbytes: int
    make: Callable[[], np.ndarray]


def _v7_dims(sd: Mapping[str, Any]) -> dict[str, int]:
    """D, V, F, L, H, N and LoRA ranks of a v7 state dict, with every tensor's shape checked against them."""
    n_vocab, d = shape_of(sd, "emb.weight")
    n_head, head_size = shape_of(sd, "blocks.0.att.r_k")
    dims = {
        "V": n_vocab,
        "D": d,
        "L": layer_count(sd),
        "H": n_head,
        "N": head_size,
        "F": shape_of(sd, "blocks.0.ffn.key.weight")[0],
        "Rw": shape_of(sd, "blocks.0.att.w1")[1],
        "Ra": shape_of(sd, "blocks.0.att.a1")[1],
        "Rv": shape_of(sd, "blocks.1.att.v1")[1]
        if "blocks.1.att.v1" in sd
        else shape_of(sd, "blocks.0.att.a1")[1],
        "Rg": shape_of(sd, "blocks.0.att.g1")[1],
    }
    if n_head * head_size != d:
        raise ConversionError(
            f"blocks.0.att.r_k has shape {(n_head, head_size)}, which does not split n_embd {d}"
        )
    D, F, V = d, dims["F"], n_vocab
    expected = {
        "emb.weight": (V, D),
        "head.weight": (V, D),
        "ln_out.weight": (D,),
        "ln_out.bias": (D,),
        "blocks.0.ln0.weight": (D,),
        "blocks.0.ln0.bias": (D,),
    }
    for i in range(dims["L"]):
        b = f"blocks.{i}."
        for k in ("ln1.weight", "ln1.bias", "ln2.weight", "ln2.bias", "att.ln_x.weight", "att.ln_x.bias"):
            expected[b + k] = (D,)
        for c in "rwkvag":
            expected[f"{b}att.x_{c}"] = (1, 1, D)
        for k in ("w0", "a0", "v0", "k_k", "k_a"):
            expected[f"{b}att.{k}"] = (1, 1, D)
        expected[b + "ffn.x_k"] = (1, 1, D)
        for k, r in (("w", "Rw"), ("a", "Ra"), ("v", "Rv"), ("g", "Rg")):
            expected[f"{b}att.{k}1"] = (D, dims[r])
            expected[f"{b}att.{k}2"] = (dims[r], D)
        expected[b + "att.r_k"] = (n_head, head_size)
        for k in ("receptance", "key", "value", "output"):
            expected[f"{b}att.{k}.weight"] = (D, D)
        expected[b + "ffn.key.weight"] = (F, D)
        expected[b + "ffn.value.weight"] = (D, F)
    for key, shape in expected.items():
        if key not in sd:
            if key in V7_BLOCK0_SUBSTITUTES:
                continue
            raise ConversionError(f"checkpoint lacks {key} (expected shape {shape})")
        got = shape_of(sd, key)
        if key in V7_BLOCK0_SUBSTITUTES:
            continue  # Ignored by every loader; any shape is accepted.
        if got != shape:
            raise ConversionError(f"tensor {key} has shape {got}, expected {shape}")
    extra = sorted(set(sd) - set(expected))
    if extra:
        raise ConversionError(
            f"unexpected tensor {extra[0]} in a RWKV-7 checkpoint"
            + (f" (and {len(extra) - 1} more)" if len(extra) > 1 else "")
        )
    return dims


def _v7_metadata(dims: dict[str, int]) -> dict[str, Any]:
    """The rwkv7.* keys of file-formats.md §2.3, with the types llama.cpp writes."""
    a = "rwkv7"
    return {
        f"{a}.context_length": 1048576,
        f"{a}.embedding_length": dims["D"],
        f"{a}.block_count": dims["L"],
        f"{a}.feed_forward_length": dims["F"],
        f"{a}.attention.layer_norm_epsilon": np.float32(1e-5),
        f"{a}.attention.head_count": 0,
        f"{a}.wkv.head_size": dims["N"],
        f"{a}.attention.decay_lora_rank": dims["Rw"],
        f"{a}.attention.iclr_lora_rank": dims["Ra"],
        f"{a}.attention.value_residual_mix_lora_rank": dims["Rv"],
        f"{a}.attention.gate_lora_rank": dims["Rg"],
    }


def _rows(table: list[tuple[str, Any, str, str]], n_layer: int) -> Iterator[tuple[str, Any, str, str]]:
    """Every output row with {i} filled in: the global rows, then each block's."""
    yield from GLOBAL_ROWS
    for i in range(n_layer):
        for name, src, transform, role in table:
            if isinstance(src, tuple):
                yield name.format(i=i), tuple(s.format(i=i) for s in src), transform, role
            else:
                key = src.format(i=i)
                if i == 0 and key in V7_BLOCK0_SUBSTITUTES:
                    key = V7_BLOCK0_SUBSTITUTES[key]
                yield name.format(i=i), key, transform, role


def _transformed_shape(shapes: list[tuple[int, ...]], transform: str) -> tuple[int, ...]:
    s = shapes[0]
    if transform == _STACK:
        return (len(shapes), 1, 1, int(np.prod(s)))
    if transform == _SQUEEZE:
        return (int(np.prod(s)),)
    if transform == _T:
        return (s[1], s[0])
    if transform == _PERMUTE_021:
        return (s[0], s[2], s[1])
    return s


def _apply(arrays: list[np.ndarray], transform: str) -> np.ndarray:
    if transform == _STACK:
        return np.stack([a.reshape(1, 1, -1) for a in arrays])
    if transform == _SQUEEZE:
        return arrays[0].reshape(-1)
    if transform == _T:
        return arrays[0].T
    if transform == _PERMUTE_021:
        return arrays[0].transpose(0, 2, 1)
    if transform == _EXP:
        return np.exp(arrays[0], dtype=np.float32)
    return arrays[0]


def _to_float_type(a: np.ndarray, ggml_type: int, name: str) -> np.ndarray:
    """Casts a float array to F32, F16 or BF16 (as uint16 bit patterns, round to nearest even)."""
    a32 = np.ascontiguousarray(a, dtype=np.float32)
    if ggml_type == GGML_F32:
        return a32
    if ggml_type == GGML_F16:
        with np.errstate(over="ignore"):
            h = a32.astype(np.float16)
        if not np.isfinite(h).all() and np.isfinite(a32).all():
            raise ConversionError(
                f"tensor {name} has values beyond the F16 range (65504); use --dtype bf16 or f32"
            )
        return h
    bits = a32.view(np.uint32).astype(np.uint64)
    rounded = ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16).astype(np.uint16)
    nan = np.isnan(a32)
    if nan.any():
        rounded[nan] = 0x7FC0
    return rounded


def _plan(
    sd: Mapping[str, Any],
    dtype: str,
    quantize: Callable[..., QuantizedTensor] | None,
    table: list[tuple[str, Any, str, str]],
    n_layer: int,
) -> list[_Planned]:
    """Decides each output tensor's name, shape and type; makers convert the data only when called."""
    planned = []
    for name, src, transform, role in _rows(table, n_layer):
        keys = list(src) if isinstance(src, tuple) else [src]
        first = None if hasattr(sd, "shape_of") else sd[keys[0]]
        if isinstance(first, QuantizedTensor):
            # Pre-quantized data (an rwkv.cpp import) is copied through unchanged.
            q = first
            if transform != _NONE:
                raise ConversionError(f"{keys[0]} is quantized but must be transformed ({transform})")
            planned.append(
                _Planned(
                    name,
                    tuple(q.shape),
                    q.ggml_type,
                    q.data.nbytes,
                    lambda q=q: np.ascontiguousarray(q.data, dtype=np.uint8),
                )
            )
            continue
        shape = _transformed_shape([shape_of(sd, k) for k in keys], transform)
        n = int(np.prod(shape))

        def make_float(keys: list[str] = keys, transform: str = transform) -> np.ndarray:
            return _apply([np.asarray(sd[k], dtype=np.float32) for k in keys], transform)

        if role == "matrix" and dtype not in _FLOAT_DTYPES:
            assert quantize is not None
            q = quantize(make_float(), dtype, name=name)
            planned.append(
                _Planned(
                    name,
                    tuple(q.shape),
                    q.ggml_type,
                    q.data.nbytes,
                    lambda q=q: np.ascontiguousarray(q.data, dtype=np.uint8),
                )
            )
            continue
        if role == "matrix":
            gtype = _FLOAT_DTYPES[dtype]
        elif role == "lora":
            gtype = GGML_F32 if dtype == "f32" else GGML_F16
        else:
            gtype = GGML_F32
        nbytes = n * (4 if gtype == GGML_F32 else 2)
        planned.append(
            _Planned(
                name,
                shape,
                gtype,
                nbytes,
                lambda mk=make_float, t=gtype, nm=name: _to_float_type(mk(), t, nm),
            )
        )
    return planned


def _quantizer(dtype: str) -> Callable[..., QuantizedTensor] | None:
    """The quantization hook for a non-float dtype, or ConversionError listing the valid names."""
    if dtype in _FLOAT_DTYPES:
        return None
    try:
        # The hook: quantize_matrix(float32 (out, in), type name, name=GGUF tensor name) -> an object with
        # QuantizedTensor's fields; the name lets it give the head llama.cpp's type for the mix.
        from .quantize import quantize_matrix
    except ImportError:
        raise ConversionError(f"unknown dtype {dtype!r}; valid: {', '.join(_FLOAT_DTYPES)}") from None
    return quantize_matrix


def _tokenizer_fields(tokenizer: str | None, n_vocab: int) -> tuple[str | None, dict[str, Any]]:
    """Tokenizer metadata from the tokenizer module; "auto" lets it choose by vocabulary size."""
    if tokenizer is None:
        return None, {}
    from .tokenizer import gguf_tokenizer_fields

    kind, fields = gguf_tokenizer_fields(None if tokenizer == "auto" else tokenizer, n_vocab)
    return kind, dict(fields)


def _add_kv(writer: Any, key: str, value: Any) -> None:
    """str -> string, bool -> bool, int -> uint32, float -> f32, list[str] -> string[], list[int] -> int32[]."""
    import gguf

    if isinstance(value, str):
        writer.add_string(key, value)
    elif isinstance(value, (bool, np.bool_)):
        writer.add_bool(key, bool(value))
    elif isinstance(value, (int, np.integer)):
        writer.add_uint32(key, int(value))
    elif isinstance(value, (float, np.floating)):
        writer.add_float32(key, float(value))
    elif isinstance(value, (list, tuple)):
        if not value:
            raise ConversionError(f"metadata {key}: empty arrays cannot be written")
        if all(isinstance(v, str) for v in value):
            writer.add_key_value(key, list(value), gguf.GGUFValueType.ARRAY, gguf.GGUFValueType.STRING)
        elif all(isinstance(v, (int, np.integer)) for v in value):
            writer.add_key_value(
                key, [int(v) for v in value], gguf.GGUFValueType.ARRAY, gguf.GGUFValueType.INT32
            )
        else:
            raise ConversionError(f"metadata {key}: arrays must hold only str or only int")
    else:
        raise ConversionError(f"metadata {key}: cannot write a {type(value).__name__}")


@dataclass(frozen=True)
class ConvertResult:
    """What write_gguf chose, for the CLI to report."""

    version: str
    dtype: str
    tokenizer: str | None
    n_tensors: int
    n_bytes: int


@dataclass(frozen=True)
class _Spec:
    """How one checkpoint is written: architecture name, per-block rows, dimensions and metadata."""

    arch: str
    block_rows: list[tuple[str, Any, str, str]]
    dims: dict[str, int]
    metadata: dict[str, Any]


def _v7_spec(sd: Mapping[str, Any], version: str) -> _Spec:
    dims = _v7_dims(sd)
    return _Spec("rwkv7", V7_BLOCK_ROWS, dims, _v7_metadata(dims))


def _legacy_dims(sd: Mapping[str, Any], version: str) -> dict[str, int]:
    """D, V, F, L (and N for v5/v6, Rm/Rd for v6) from the shapes of a v4/v5.x/v6 state dict."""
    n_vocab, d = shape_of(sd, "emb.weight")
    dims = {"V": n_vocab, "D": d, "L": layer_count(sd), "F": shape_of(sd, "blocks.0.ffn.key.weight")[0]}
    if version != "4":
        heads_key = "blocks.0.att.time_faaaa" if version == "6.0" else "blocks.0.att.time_decay"
        n_head = shape_of(sd, heads_key)[0]
        if n_head <= 0 or d % n_head:
            raise ConversionError(f"{heads_key} has {n_head} heads, which do not split n_embd {d}")
        dims["H"], dims["N"] = n_head, d // n_head
    if version == "6.0":
        dims["Rm"] = shape_of(sd, "blocks.0.att.time_maa_w1")[1] // 5
        dims["Rd"] = shape_of(sd, "blocks.0.att.time_decay_w1")[1]
    return dims


def _legacy_spec(sd: Mapping[str, Any], version: str) -> _Spec:
    dims = _legacy_dims(sd, version)
    rows = gguf_names.block_rows(version, list(sd))
    _check_rows(sd, rows, dims)
    return _Spec(gguf_names.ARCH_OF_VERSION[version], rows, dims, gguf_names.metadata(version, dims))


def _check_rows(sd: Mapping[str, Any], rows: list[tuple[str, Any, str, str]], dims: dict[str, int]) -> None:
    """Every key a row reads exists, no key is left over, and the norms and big matrices have their shapes."""
    D, F, V = dims["D"], dims["F"], dims["V"]
    wanted: dict[str, tuple[int, ...] | None] = {}
    for _, src, _, _ in _rows(rows, dims["L"]):
        for key in src if isinstance(src, tuple) else (src,):
            wanted[key] = None
    for key in wanted:
        if key.endswith(("ln1.weight", "ln1.bias", "ln2.weight", "ln2.bias", "ln0.weight", "ln0.bias")):
            wanted[key] = (D,)
        elif key.endswith(
            (
                "att.key.weight",
                "att.value.weight",
                "att.receptance.weight",
                "att.output.weight",
                "att.gate.weight",
                "ffn.receptance.weight",
            )
        ):
            wanted[key] = (D, D)
        elif key.endswith("ffn.key.weight"):
            wanted[key] = (F, D)
        elif key.endswith("ffn.value.weight"):
            wanted[key] = (D, F)
        elif key in ("emb.weight", "head.weight"):
            wanted[key] = (V, D)
    for key, shape in wanted.items():
        if key not in sd:
            raise ConversionError(f"checkpoint lacks {key}")
        if shape is not None and shape_of(sd, key) != shape:
            raise ConversionError(f"tensor {key} has shape {shape_of(sd, key)}, expected {shape}")
    extra = sorted(set(sd) - set(wanted))
    if extra:
        raise ConversionError(
            f"unexpected tensor {extra[0]} in this checkpoint"
            + (f" (and {len(extra) - 1} more)" if len(extra) > 1 else "")
        )


_SPECS: dict[str, Callable[[Mapping[str, Any], str], _Spec]] = {
    "4": _legacy_spec,
    "5.0": _legacy_spec,
    "5.1": _legacy_spec,
    "5.2": _legacy_spec,
    "6.0": _legacy_spec,
    "7.0": _v7_spec,
}


def write_gguf(
    state_dict: Mapping[str, Any],
    out_path: str | os.PathLike[str],
    *,
    dtype: str = "f16",
    tokenizer: Any = None,
    name: str | None = None,
    extra_metadata: dict[str, Any] | None = None,
    progress: ProgressFn | None = None,
) -> ConvertResult:
    """Writes an official-layout state dict as a GGUF file in llama.cpp's layout for its version.

    dtype: type of the large matrices (att/ffn Linear weights, emb, head): "f32", "f16", "bf16" or a
    quantized type the `quantize` module knows. Vectors stay F32; LoRA matrices F16 unless dtype is f32.
    tokenizer: None (no tokenizer in the file), "auto" (chosen by vocabulary size), or a spec for
    tokenizer.gguf_tokenizer_fields: "world", "20b", "bytes", "none" or a vocabulary file path.
    The file is written to out_path + ".tmp" and renamed at the end, so a failure leaves nothing behind.
    """
    import gguf

    out_path = os.fspath(out_path)
    dtype = dtype.lower()
    version = detect_version(state_dict)
    if version not in _SPECS:
        raise ConversionError(f"converting RWKV-{version} checkpoints is not supported")
    quantize = _quantizer(dtype)
    spec = _SPECS[version](state_dict, version)
    arch, dims = spec.arch, spec.dims
    kind, tok_fields = _tokenizer_fields(tokenizer, dims["V"])
    planned = _plan(state_dict, dtype, quantize, spec.block_rows, dims["L"])

    tmp = out_path + ".tmp"
    writer = gguf.GGUFWriter(tmp, arch)
    try:
        if name:
            writer.add_name(name)
        writer.add_uint32(
            "general.file_type", _FILE_TYPE.get(_FLOAT_DTYPES.get(dtype, _main_type(planned)), 1024)
        )
        writer.add_uint32("general.quantization_version", 2)
        for key, value in {**spec.metadata, **tok_fields, **(extra_metadata or {})}.items():
            _add_kv(writer, key, value)
        for p in planned:
            writer.add_tensor_info(
                p.name,
                p.shape,
                np.dtype(np.float32),
                p.nbytes,
                raw_dtype=gguf.GGMLQuantizationType(p.ggml_type),
            )
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_ti_data_to_file()
        total = sum(p.nbytes for p in planned)
        done = 0
        for p in planned:
            data = p.make()
            if data.nbytes != p.nbytes:
                raise ConversionError(
                    f"internal: tensor {p.name} made {data.nbytes} bytes, planned {p.nbytes}"
                )
            writer.write_tensor_data(data)
            done += p.nbytes
            if progress is not None:
                progress(p.name, done, total)
        writer.close()
        os.replace(tmp, out_path)
    except BaseException:
        writer.close()
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    return ConvertResult(version, dtype, kind, len(planned), total)


def _main_type(planned: list[_Planned]) -> int:
    """The GGML type holding the most bytes: what general.file_type describes."""
    by_type: dict[int, int] = {}
    for p in planned:
        by_type[p.ggml_type] = by_type.get(p.ggml_type, 0) + p.nbytes
    return max(by_type, key=by_type.__getitem__)
