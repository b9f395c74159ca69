"""rwkv.cpp `.bin` import: every shipped tiny model reads back to official layout and reproduces rwkv.cpp's logits.

Data: ../shared/conformance/rwkvcpp-tiny (see its README). Each model's expected logits are rwkv.cpp's output
after the bytes `"in` (0x22 0x69 0x6E). rwkv.cpp's own test sums the SIGNED differences, S = Σ(logits - expected),
and accepts |S| ≤ 1.05·|threshold|; signed errors cancel, so every check here also bounds max|Δ|.
v5 is run with rwkv.cpp's group-norm eps 1e-5 (README "Caveat"); every other version with the official eps.
"""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest
from rwkvcpp_tables import (
    CONVERTED_MAX,
    CONVERTED_S,
    MODELS,
    PROMPT,
    QUANT_TYPES,
    SHIPPED_MAX,
    SHIPPED_S,
    TINY,
    quantizable,
)

from rwkvchat.errors import ConversionError
from rwkvchat.quant_numpy import dequantize_blocks, quantize_blocks
from rwkvchat.reference import ReferenceModel
from rwkvchat.reference_legacy import legacy_reference
from rwkvchat.rwkvcpp import QuantizedTensor, dequantize, load_rwkvcpp, read_rwkvcpp, scan_rwkvcpp


def _path(model: str, fmt: str) -> Path:
    if not TINY.is_dir():
        pytest.skip(f"conformance data not found at {TINY}")
    p = TINY / f"tiny-rwkv-{model}-{fmt}.bin"
    if not p.exists():
        pytest.skip(f"{p.name} is not shipped (README: the v6 FP32/FP16 files are missing)")
    return p


def _expected(model: str) -> np.ndarray:
    return np.fromfile(TINY / f"expected-logits-{model}.bin", dtype="<f4").astype(np.float64)


def _run(version: str, sd: dict) -> np.ndarray:
    """Logits after PROMPT from the empty state, quantized tensors dequantized, float64 throughout."""
    floats = {k: (dequantize(v) if isinstance(v, QuantizedTensor) else v) for k, v in sd.items()}
    if version == "7.0":
        model = ReferenceModel(floats)
    else:
        model = legacy_reference(floats, version, gn_eps=1e-5 if version.startswith("5") else None)
    return model.forward(PROMPT, model.new_state())


CASES = [(m, f) for m in MODELS for f in SHIPPED_S[m]]


@pytest.mark.parametrize(("model", "fmt"), CASES)
def test_shipped_file_reproduces_rwkvcpp_logits(model: str, fmt: str) -> None:
    version, sd = read_rwkvcpp(_path(model, fmt))
    assert version == MODELS[model]
    quantized = [k for k, v in sd.items() if isinstance(v, QuantizedTensor)]
    assert bool(quantized) == fmt.startswith("Q")
    logits = _run(version, sd)
    diff = logits - _expected(model)
    s, worst = float(diff.sum()), float(np.abs(diff).max())
    threshold = SHIPPED_S[model][fmt]
    accepted = "no upstream figure" if threshold is None else f"rwkv.cpp accepts |S| <= {1.05 * abs(threshold):.6f}"
    print(f"{model} {fmt}: S = {s:+.6f} ({accepted}), max|Δ| = {worst:.3g}")
    if threshold is not None:
        assert abs(s) <= 1.05 * abs(threshold)
    assert worst <= SHIPPED_MAX[model][fmt]


@pytest.mark.parametrize("model", [m for m in MODELS if m != "6v0-3m"])
@pytest.mark.parametrize("source", ["FP32", "FP16"])
def test_converted_from_float_into_every_block_type(model: str, source: str) -> None:
    """Quantize the float file as rwkv.cpp's quantizer would (same tensors, same rounding), then evaluate."""
    path = _path(model, source)
    version, sd = read_rwkvcpp(path)
    _, records = scan_rwkvcpp(path)
    targets = quantizable(records)
    assert targets
    expected = _expected(model)
    worst = {}
    for j, (name, ggml_type) in enumerate(QUANT_TYPES.items()):
        qsd = dict(sd)
        for key in targets:
            w = np.asarray(qsd[key], dtype=np.float32)
            qsd[key] = dequantize_blocks(ggml_type, quantize_blocks(ggml_type, w), w.size).reshape(w.shape)
        diff = _run(version, qsd) - expected
        worst[name] = float(np.abs(diff).max())
        rwkvcpp_s = CONVERTED_S[(model, source)][j]
        print(f"{model} {source}->{name}: S = {diff.sum():+.4f} (rwkv.cpp measured {rwkvcpp_s:+.4f}), "
              f"max|Δ| = {worst[name]:.3g}")
        assert worst[name] <= CONVERTED_MAX[model][name], name
    # Finer formats must cost less: Q8_0 below every 4/5-bit type, Q5_1 below Q4_1.
    assert worst["Q8_0"] < min(v for k, v in worst.items() if k != "Q8_0")
    assert worst["Q5_1"] < worst["Q4_1"]


@pytest.mark.parametrize("model", [m for m in MODELS if m != "6v0-3m"])
@pytest.mark.parametrize("fmt", ["Q5_0", "Q5_1"])
def test_quantized_blocks_match_rwkvcpp(model: str, fmt: str) -> None:
    """The shipped Q5 files are rwkv.cpp's quantization of the FP32 files: our numpy quantizer must reproduce
    every block bit for bit, and the importer must hand the blocks through unchanged."""
    _, floats = read_rwkvcpp(_path(model, "FP32"))
    _, quant = read_rwkvcpp(_path(model, fmt))
    blocks = {k: v for k, v in quant.items() if isinstance(v, QuantizedTensor)}
    assert blocks
    for key, q in blocks.items():
        assert q.ggml_type == {"Q5_0": 6, "Q5_1": 7}[fmt]
        assert q.data.dtype == np.uint8 and q.data.nbytes == np.prod(q.shape) // 32 * (22 if fmt == "Q5_0" else 24)
        np.testing.assert_array_equal(quantize_blocks(q.ggml_type, floats[key]), q.data, err_msg=key)


def test_official_layout_of_every_version() -> None:
    """Spot checks of the undone transforms: shapes as in a .pth, and value ranges of the raw parameters."""
    _, v4 = read_rwkvcpp(_path("4v0-660K", "FP32"))
    assert v4["blocks.0.att.time_mix_k"].shape == (1, 1, 128)
    assert v4["blocks.0.att.time_decay"].shape == (128,)
    _, v50 = read_rwkvcpp(_path("5v1-730K", "FP32"))
    assert v50["blocks.0.att.time_decay"].shape == (8,) and v50["blocks.0.att.time_first"].shape == (8,)
    _, v52 = read_rwkvcpp(_path("5v2-730K", "FP16"))
    assert v52["blocks.0.att.time_decay"].shape == (8, 8) and v52["blocks.0.att.time_faaaa"].shape == (8, 8)
    assert v52["blocks.0.att.key.weight"].dtype == np.float32
    m6 = load_rwkvcpp(_path("6v0-3m", "Q5_1"))
    v6 = m6.state_dict
    assert v6["blocks.0.att.time_maa_w1"].shape == (128, 160)
    assert v6["blocks.0.att.time_maa_w2"].shape == (5, 32, 128)
    assert v6["blocks.0.att.time_decay"].shape == (1, 1, 128)
    assert v6["blocks.0.att.time_decay_w1"].shape == (128, 64)
    assert v6["blocks.0.att.time_decay_w2"].shape == (64, 128)
    assert v6["blocks.0.att.time_faaaa"].shape == (16, 8)
    # Transposed quantized LoRA matrices cannot be copied as blocks: they come back dequantized and are listed.
    assert "blocks.0.att.time_maa_w1" in m6.dequantized
    assert isinstance(v6["blocks.0.att.key.weight"], QuantizedTensor)
    _, v7 = read_rwkvcpp(_path("7v0-834K", "FP16"))
    assert "blocks.0.att.x_rwkvag" not in v7
    assert all(v7[f"blocks.3.att.x_{c}"].shape == (1, 1, 64) for c in "rwkvag")
    assert v7["blocks.0.att.w1"].shape == (64, 32) and v7["blocks.0.att.w2"].shape == (32, 64)
    assert v7["blocks.0.att.r_k"].shape == (1, 64)
    m = load_rwkvcpp(_path("5v2-730K", "FP16"), keep_f16=True)
    assert m.state_dict["blocks.0.att.key.weight"].dtype == np.float16


# ------------------------------------------------------------------------------------- damaged files

def _records(data: bytes) -> list[tuple[int, int]]:
    """(start, end) byte ranges of each record of a well-formed file."""
    out, pos = [], 24
    while pos < len(data):
        dims, klen, t = struct.unpack_from("<3i", data, pos)
        ne = struct.unpack_from(f"<{dims}i", data, pos + 12)
        n = int(np.prod(ne))
        nbytes = {0: 4 * n, 1: 2 * n, 7: n // 32 * 22, 8: n // 32 * 24}[t]
        end = pos + 12 + 4 * dims + klen + nbytes
        out.append((pos, end))
        pos = end
    return out


def _expect_error(tmp_path: Path, data: bytes, match: str) -> None:
    p = tmp_path / "bad.bin"
    p.write_bytes(data)
    with pytest.raises(ConversionError, match=match):
        load_rwkvcpp(p)


def test_damaged_files_raise_conversion_error(tmp_path: Path) -> None:
    good = _path("5v2-730K", "Q5_1").read_bytes()
    recs = _records(good)
    first = recs[0][0]
    _expect_error(tmp_path, b"", "too short")
    _expect_error(tmp_path, good[:10], "too short")
    _expect_error(tmp_path, b"GGUF" + good[4:], "GGUF")
    _expect_error(tmp_path, b"XXXX" + good[4:], "not an rwkv.cpp model file")
    _expect_error(tmp_path, good[:4] + struct.pack("<I", 102) + good[8:], "version 102")
    # A quantized file relabelled as version 100 uses the obsolete block layout.
    _expect_error(tmp_path, good[:4] + struct.pack("<I", 100) + good[8:], "obsolete quantization layout")
    _expect_error(tmp_path, good[:20] + struct.pack("<I", 5) + good[24:], "removed")
    _expect_error(tmp_path, good[:20] + struct.pack("<I", 99) + good[24:], "unknown data type")
    _expect_error(tmp_path, good[:8] + struct.pack("<I", 0) + good[12:], "n_vocab")
    # Record headers: dim_count, key length, type id, sizes.
    _expect_error(tmp_path, good[:first] + struct.pack("<i", 4) + good[first + 4:], "dim_count")
    _expect_error(tmp_path, good[:first] + struct.pack("<i", 0) + good[first + 4:], "dim_count")
    _expect_error(tmp_path, good[:first + 4] + struct.pack("<i", 1 << 30) + good[first + 8:], "key length")
    _expect_error(tmp_path, good[:first + 8] + struct.pack("<i", 13) + good[first + 12:], "Q4_K|unknown")
    _expect_error(tmp_path, good[:first + 12] + struct.pack("<i", -64) + good[first + 16:], "positive")
    _expect_error(tmp_path, good[:first + 12] + struct.pack("<i", 1 << 20) + good[first + 16:], "truncated")
    # Truncation inside a record header, inside a key, inside the data, and a whole tensor missing.
    _expect_error(tmp_path, good[:first + 6], "truncated")
    _expect_error(tmp_path, good[:first + 18], "truncated")
    _expect_error(tmp_path, good[: len(good) - 1], "truncated")
    last = recs[-1]
    _expect_error(tmp_path, good[: last[0]], "lacks")
    # A duplicated tensor, and emb.weight disagreeing with the header.
    _expect_error(tmp_path, good + good[last[0]: last[1]], "twice")
    _expect_error(tmp_path, good[:8] + struct.pack("<I", 300) + good[12:], "emb.weight")


def test_random_damage_never_escapes_as_another_exception(tmp_path: Path) -> None:
    """Truncations at many points and byte flips in the header region: ConversionError or a clean read only."""
    good = _path("7v0-834K", "Q5_0").read_bytes()
    rng = np.random.default_rng(7)
    p = tmp_path / "fuzz.bin"
    cuts = rng.integers(0, len(good), size=40).tolist() + [24, 25, 36]
    for cut in cuts:
        p.write_bytes(good[:cut])
        with pytest.raises(ConversionError):
            load_rwkvcpp(p)
    header_region = max(end for _, end in _records(good)[:6])
    for _ in range(60):
        data = bytearray(good)
        for pos in rng.integers(0, header_region, size=3):
            data[pos] = int(rng.integers(0, 256))
        p.write_bytes(bytes(data))
        try:
            load_rwkvcpp(p)
        except ConversionError:
            pass


def test_v100_float_files_read(tmp_path: Path) -> None:
    """4v0's FP32/FP16 files are version 100: accepted, since only quantized v100 data has the old layout."""
    m = load_rwkvcpp(_path("4v0-660K", "FP16"))
    assert m.file_version == 100 and m.data_type == "FP16"
    assert all(isinstance(v, np.ndarray) for v in m.state_dict.values())
