"""rwkv.cpp tiny models through the whole path: `.bin` -> official layout -> GGUF -> native engine.

Checks the engine's logits after `"in` against rwkv.cpp's expected logits, with rwkv.cpp's signed sum S and with
max|Δ|, for every shipped format and for the FP32/FP16 files quantized by us exactly as rwkv.cpp quantizes them
(same tensors, same rounding: quant_numpy is bit-identical to rwkv.cpp, test_rwkvcpp_import.py). The blocks reach
the GGUF unchanged (the converter copies QuantizedTensor data), so the engine sees rwkv.cpp's weights bit for bit.

v5 GGUFs carry `rwkv5.wkv.group_norm_epsilon = 1e-5` (docs/gguf-rwkv4-rwkv5.md) to reproduce rwkv.cpp's v5
arithmetic. Every version runs (4, 5.0 = rwkv.cpp's 5.1, 5.2, 6.0, 7.0); 6v0 is shipped quantized only.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from rwkvcpp_tables import (
    CONVERTED_MAX,
    MODELS,
    PROMPT,
    QUANT_TYPES,
    SHIPPED_MAX,
    SHIPPED_S,
    TINY,
    quantizable,
)

from rwkvchat.quant_numpy import quantize_blocks
from rwkvchat.rwkvcpp import QuantizedTensor, read_rwkvcpp, scan_rwkvcpp

# Engine arithmetic (blocked dot products, activations rounded for the quantized kernels) adds to the weight
# rounding the float64 reference measures; the quantized bounds get this much room on top.
_ENGINE_FACTOR = 1.5


def _gguf(tmp_path: Path, version: str, sd: dict, dtype: str) -> Path:
    from rwkvchat.convert import write_gguf

    extra = {"rwkv5.wkv.group_norm_epsilon": 1e-5} if version.startswith("5") else None
    out = tmp_path / "m.gguf"
    write_gguf(sd, out, dtype=dtype, extra_metadata=extra)
    return out


def _logits(path: Path, version: str) -> tuple[np.ndarray, np.ndarray]:
    """(three one-token calls, one three-token call) from the empty state."""
    from rwkvchat.model import Model

    model = Model(path, threads=1)
    assert model.version == {"6.0": "6", "7.0": "7"}.get(version, version)
    with model:
        state = model.new_state()
        for t in PROMPT:
            one = model.forward([t], state)
        seq = model.forward(PROMPT, model.new_state())
    return np.asarray(one, dtype=np.float64), np.asarray(seq, dtype=np.float64)


def _expected(model: str) -> np.ndarray:
    return np.fromfile(TINY / f"expected-logits-{model}.bin", dtype="<f4").astype(np.float64)


def _source(model: str, fmt: str) -> Path:
    if not TINY.is_dir():
        pytest.skip(f"conformance data not found at {TINY}")
    p = TINY / f"tiny-rwkv-{model}-{fmt}.bin"
    if not p.exists():
        pytest.skip(f"{p.name} is not shipped")
    return p


@pytest.mark.parametrize(("model", "fmt"), [(m, f) for m in MODELS for f in SHIPPED_S[m]])
def test_native_matches_rwkvcpp_on_shipped_files(native, tmp_path: Path, model: str, fmt: str) -> None:
    version, sd = read_rwkvcpp(_source(model, fmt))
    path = _gguf(tmp_path, version, sd, "f32" if fmt == "FP32" else "f16")
    expected = _expected(model)
    threshold = SHIPPED_S[model][fmt]
    for mode, logits in zip(("one-token", "sequence"), _logits(path, version)):
        diff = logits - expected
        s, worst = float(diff.sum()), float(np.abs(diff).max())
        print(f"native {model} {fmt} {mode}: S = {s:+.6f}, max|Δ| = {worst:.3g}")
        if threshold is not None:
            assert abs(s) <= 1.05 * abs(threshold)
        bound = SHIPPED_MAX[model][fmt] * (1.0 if fmt.startswith("FP") else _ENGINE_FACTOR)
        assert worst <= bound


@pytest.mark.parametrize("model", [m for m in MODELS if m != "6v0-3m"])
@pytest.mark.parametrize("source", ["FP32", "FP16"])
def test_native_on_our_conversions(native, tmp_path: Path, model: str, source: str) -> None:
    path = _source(model, source)
    version, sd = read_rwkvcpp(path)
    _, records = scan_rwkvcpp(path)
    targets = quantizable(records)
    expected = _expected(model)
    for name, ggml_type in QUANT_TYPES.items():
        qsd = dict(sd)
        for key in targets:
            w = np.asarray(qsd[key], dtype=np.float32)
            qsd[key] = QuantizedTensor(ggml_type, w.shape, quantize_blocks(ggml_type, w))
        gguf_path = _gguf(tmp_path, version, qsd, "f32")
        one, seq = _logits(gguf_path, version)
        for mode, logits in (("one-token", one), ("sequence", seq)):
            diff = logits - expected
            worst = float(np.abs(diff).max())
            print(f"native {model} {source}->{name} {mode}: S = {diff.sum():+.4f}, max|Δ| = {worst:.3g}")
            assert worst <= CONVERTED_MAX[model][name] * _ENGINE_FACTOR, (name, mode)
