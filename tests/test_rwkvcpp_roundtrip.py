"""Official checkpoints written the way rwkv.cpp's converter writes them, then read back by `rwkvcpp`.

The shipped rwkv.cpp test files lack v6 FP32/FP16 and pip's 5.1, so this test makes rwkv.cpp-format files from
conformance/official with a small writer that applies each transform of file-formats.md §1.3 (transposes,
-exp / exp(-exp) / exp value changes, squeezes, the v7 x_rwkvag concatenation, rwkv.cpp's FP16 and quantization
selection). Reading must give back the official tensors, and the float64 references must then reproduce the
official package's logits.
"""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest

from rwkvchat.quant_numpy import quantize_blocks
from rwkvchat.reference import ReferenceModel
from rwkvchat.reference_legacy import legacy_reference
from rwkvchat.rwkvcpp import QuantizedTensor, dequantize, load_rwkvcpp

OFFICIAL = Path(__file__).resolve().parents[1].parent / "shared" / "conformance" / "official"
VERSIONS = ("4", "5.0", "5.1", "5.2", "6.0", "7.0")
_FP32_NAMES = (".time_", ".k_k", ".k_a", ".r_k", ".x_rwkvag", ".x_k", ".w0", ".a0", ".v0")
_NOT_QUANTIZED = ("att.v1", "att.v2", "att.g1", "att.g2", "att.a1", "att.a2", "att.w1", "att.w2", "att.r_k")
_RWKVCPP_QTYPE = {2: 2, 3: 3, 6: 7, 7: 8, 8: 9}     # ggml id -> rwkv.cpp id


def _rwkvcpp_tensors(sd: dict[str, np.ndarray], version: str) -> list[tuple[str, np.ndarray]]:
    """The (key, float32 array) list rwkv.cpp's convert_pytorch_to_ggml.py would write, in order."""
    d = sd["emb.weight"].shape[1]
    out: list[tuple[str, np.ndarray]] = []
    for key, a in sd.items():
        a = a.astype(np.float32)
        if version == "7.0":
            if key.endswith(("att.x_w", "att.x_k", "att.x_v", "att.x_a", "att.x_g")):
                continue
            if key.endswith("att.x_r"):
                base = key[: -len("x_r")]
                a = np.concatenate([sd[base + "x_" + c].astype(np.float32) for c in "rwkvag"])   # (6,1,D)
                key = base + "x_rwkvag"
            elif key.split(".")[-1] in {f"{c}{j}" for c in "wavg" for j in "12"}:
                a = a.T
            out.append((key, np.ascontiguousarray(a)))
            continue
        if ".time_" in key:
            a = a.squeeze()
        tail = key.split(".", 2)[-1]
        if version == "4" and tail == "att.time_decay":
            a = -np.exp(a)
        elif version.startswith("5") and tail == "att.time_decay":
            a = np.exp(-np.exp(a)).reshape(a.shape[0], -1, 1)
        elif version.startswith("5") and tail == "att.time_first":
            a = np.exp(a).reshape(-1, 1, 1)
        elif tail in ("att.time_faaaa",):
            a = a.reshape(a.shape[0], -1, 1)
        elif version == "6.0" and tail == "att.time_decay":
            h = sd[key.replace("time_decay", "time_faaaa")].shape[0]
            a = a.reshape(h, d // h, 1)
        elif tail in ("att.time_maa_w1", "att.time_decay_w1", "att.time_decay_w2"):
            a = a.T
        elif tail == "att.time_maa_w2":
            a = a.transpose(0, 2, 1)
        out.append((key, np.ascontiguousarray(a)))
    return out


def write_rwkvcpp(path: Path, sd: dict[str, np.ndarray], version: str, fmt: str = "FP32",
                  qtype: int | None = None) -> None:
    """fmt "FP32" or "FP16" (rwkv.cpp's selection of fp16 tensors); qtype a ggml block type to quantize into."""
    tensors = _rwkvcpp_tensors(sd, version)
    v, d = sd["emb.weight"].shape
    n_layer = 1 + max(int(k.split(".")[1]) for k in sd if k.startswith("blocks."))
    header_type = _RWKVCPP_QTYPE[qtype] if qtype is not None else (0 if fmt == "FP32" else 1)
    with open(path, "wb") as f:
        f.write(struct.pack("<6I", 0x67676D66, 101, v, d, n_layer, header_type))
        for key, a in tensors:
            type_id, data = 0, a.astype("<f4").tobytes()
            if fmt == "FP16" and a.ndim >= 2 and not any(s in key for s in _FP32_NAMES):
                type_id, data = 1, a.astype("<f2").tobytes()
            if (qtype is not None and a.ndim == 2 and key not in ("emb.weight", "head.weight")
                    and not any(s in key for s in _NOT_QUANTIZED)):
                src = a.astype("<f2").astype(np.float32) if type_id == 1 else a
                type_id, data = _RWKVCPP_QTYPE[qtype], quantize_blocks(qtype, src).tobytes()
            ne = a.shape[::-1]
            k = key.encode()
            f.write(struct.pack(f"<3i{len(ne)}i", len(ne), len(k), type_id, *ne) + k + data)


def _official(version: str) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    if not OFFICIAL.is_dir():
        pytest.skip(f"conformance data not found at {OFFICIAL}")
    torch = pytest.importorskip("torch", reason="torch reads the official .pth (pip install torch==2.13.0)")
    path = min(OFFICIAL.glob(f"v{version}_*.pth"))
    sd = {k: t.float().numpy() for k, t in torch.load(path, map_location="cpu", weights_only=True).items()}
    with np.load(path.with_suffix(".npz")) as z:
        return sd, {k: z[k] for k in z.files}


def _assert_same_parameter(version: str, key: str, got: np.ndarray, want: np.ndarray, rtol: float) -> None:
    """got == want up to float32 rounding of what rwkv.cpp stored.

    v5 decays are stored as d = exp(-exp(w)) in float32; for slow decays d is near 1 and w = log(-log d) keeps
    only a few digits (w = -6.34 comes back as -6.34373), but d itself, the value the model uses, is kept to
    float32 precision. So v5 decays are compared as d, everything else directly.
    """
    if version.startswith("5") and key.endswith("att.time_decay"):
        got, want = np.exp(-np.exp(got.astype(np.float64))), np.exp(-np.exp(want.astype(np.float64)))
        rtol = 1e-6       # float32 rounding of exp(w), then of d: up to (1 + |log d|) ulp
    np.testing.assert_allclose(got, want, rtol=rtol, atol=0, err_msg=key)


def _reference(version: str, sd: dict):  # type: ignore[no-untyped-def]
    floats = {k: (dequantize(v) if isinstance(v, QuantizedTensor) else v) for k, v in sd.items()}
    return ReferenceModel(floats) if version == "7.0" else legacy_reference(floats, version)


@pytest.mark.parametrize("version", VERSIONS)
def test_fp32_roundtrip_gives_official_tensors_and_logits(version: str, tmp_path: Path) -> None:
    sd, ref = _official(version)
    path = tmp_path / "m.bin"
    write_rwkvcpp(path, sd, version)
    m = load_rwkvcpp(path)
    assert m.version == version
    assert sorted(m.state_dict) == sorted(sd)
    for key, want in sd.items():
        got = m.state_dict[key]
        assert isinstance(got, np.ndarray) and got.dtype == np.float32
        assert got.shape == want.shape, key
        _assert_same_parameter(version, key, got, want, rtol=2e-6)
    model = _reference(version, m.state_dict)
    tokens = [int(t) for t in ref["tokens"][:16]]
    logits = model.forward_all(tokens, model.new_state())
    worst = np.abs(logits - ref["logits_one"][:16]).max()
    assert worst <= 1e-4 * float(ref["logit_scale"])


@pytest.mark.parametrize("version", VERSIONS)
def test_fp16_and_quantized_roundtrip(version: str, tmp_path: Path) -> None:
    """FP16 files: matrices rounded to fp16, vectors exact. Q8_0 files: blocks copied, LoRA transposes dequantized."""
    sd, ref = _official(version)
    p16, pq = tmp_path / "f16.bin", tmp_path / "q8.bin"
    write_rwkvcpp(p16, sd, version, "FP16")
    write_rwkvcpp(pq, sd, version, "FP32", qtype=8)
    m16, mq = load_rwkvcpp(p16), load_rwkvcpp(pq)
    for key, want in sd.items():
        got = m16.state_dict[key]
        if ".time_" in key:
            _assert_same_parameter(version, key, got, want, rtol=2e-6)
        elif want.ndim == 1 or "ln" in key:
            np.testing.assert_array_equal(got, want.astype(np.float32), err_msg=key)
        else:
            np.testing.assert_allclose(got, want, rtol=1e-3, atol=1e-7, err_msg=key)
    quantized = [k for k, v in mq.state_dict.items() if isinstance(v, QuantizedTensor)]
    assert "blocks.0.att.key.weight" in quantized and "emb.weight" not in quantized
    if version == "6.0":
        assert {"blocks.1.att.time_maa_w1", "blocks.1.att.time_decay_w2"} <= set(mq.dequantized)
        assert mq.state_dict["blocks.1.att.time_maa_w1"].shape == sd["blocks.1.att.time_maa_w1"].shape
    else:
        assert mq.dequantized == []
    tokens = [int(t) for t in ref["tokens"][:8]]
    scale = float(ref["logit_scale"])
    for m, bound in ((m16, 1e-2), (mq, 0.1)):
        model = _reference(version, m.state_dict)
        worst = np.abs(model.forward_all(tokens, model.new_state()) - ref["logits_one"][:8]).max()
        assert worst <= bound * scale, (m.data_type, worst / scale)


def test_v5_extreme_decays_come_back_finite(tmp_path: Path) -> None:
    """Decays stored as exactly 1.0 or 0.0 by rwkv.cpp give finite raw values with the same float32 decay."""
    sd, _ = _official("5.2")
    w = sd["blocks.0.att.time_decay"].copy()
    w[0, :3] = (-40.0, -25.0, 20.0)      # d = 1.0, 1.0 and 0.0 once rounded to float32
    sd["blocks.0.att.time_decay"] = w
    path = tmp_path / "m.bin"
    write_rwkvcpp(path, sd, "5.2")
    got = load_rwkvcpp(path).state_dict["blocks.0.att.time_decay"]
    assert np.isfinite(got).all()
    d_got = np.exp(-np.exp(got.astype(np.float32)))
    d_want = np.exp(-np.exp(w.astype(np.float32)))
    np.testing.assert_array_equal(d_got[0, :3], d_want[0, :3])
    assert d_got[0, 0] == 1.0 and d_got[0, 2] == 0.0
