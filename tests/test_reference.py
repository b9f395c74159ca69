"""The float64 numpy reference against the official package's outputs and rwkv.cpp's expected logits.

Everything else (the native engine, the converter) is judged against this reference, so it is itself
checked against the two independent implementations here.
"""

from __future__ import annotations

import numpy as np
import pytest
from conftest import load_pth, official_states, read_rwkvcpp_bin

from rwkvchat.errors import ModelFormatError
from rwkvchat.reference import ReferenceModel, detect_version

V7 = "conformance/official/v7.0_V1024_D128_L2_hs64_s106"


def test_v7_matches_official_logits_and_state(shared):
    sd = load_pth(shared / f"{V7}.pth")
    z = np.load(shared / f"{V7}.npz")
    model = ReferenceModel(sd)
    state = model.new_state()
    logits = model.forward_all(z["tokens"], state)
    scale = float(z["logit_scale"])
    assert logits.shape == z["logits_one"].shape
    assert np.abs(logits - z["logits_one"]).max() <= 1e-4 * scale
    assert np.abs(logits - z["logits_seq"]).max() <= 1e-4 * scale
    ref = official_states(z)
    assert state.shape == ref.shape
    for i, desc in enumerate(z["state_desc"]):
        part = z[f"state_{i:02d}"].reshape(-1)
        start = sum(z[f"state_{j:02d}"].size for j in range(i))
        mine = state[start : start + part.size]
        assert np.abs(mine - part).max() <= 1e-4 * max(np.abs(part).max(), 1e-6), desc


def test_v7_state_matters(shared):
    """Feeding the last token from a fresh state must move the logits: the comparison above can fail."""
    sd = load_pth(shared / f"{V7}.pth")
    z = np.load(shared / f"{V7}.npz")
    model = ReferenceModel(sd)
    fresh = model.forward([int(z["tokens"][-1])], model.new_state())
    assert np.abs(fresh - z["logits_one"][-1]).max() > 0.1 * float(z["logit_scale"])


@pytest.mark.parametrize("kind", ["FP32", "FP16"])
def test_v7_matches_rwkvcpp_tiny(shared, kind):
    sd = read_rwkvcpp_bin(shared / f"conformance/rwkvcpp-tiny/tiny-rwkv-7v0-834K-{kind}.bin")
    expected = np.fromfile(shared / "conformance/rwkvcpp-tiny/expected-logits-7v0-834K.bin", dtype="<f4")
    model = ReferenceModel(sd)
    logits = model.forward([0x22, 0x69, 0x6E], model.new_state())
    assert np.abs(logits - expected).max() <= 1e-4 * expected.std()


@pytest.mark.parametrize(
    "name,version",
    [
        ("v4_V1024_D128_L2_s101", "4"),
        ("v5.0_V1024_D128_L2_hs64_s102", "5.0"),
        ("v5.1_V1024_D128_L2_hs64_s103", "5.1"),
        ("v5.2_V1024_D128_L2_hs64_s104", "5.2"),
        ("v6.0_V1024_D128_L2_hs64_s105", "6.0"),
        ("v7.0_V1024_D128_L2_hs64_s106", "7.0"),
    ],
)
def test_detect_version(shared, name, version):
    sd = load_pth(shared / f"conformance/official/{name}.pth")
    assert detect_version(sd) == version


@pytest.mark.parametrize(
    "key,what",
    [
        ("blocks.0.ffn.s_emb.weight", "rwkv7a"),
        ("blocks.1.qkv.weight", "rwkv7b"),
        ("pos_emb_x", "positional"),
        ("_strategy", "pre-converted"),
    ],
)
def test_detect_version_refuses_variants(key, what):
    sd = {
        "emb.weight": np.zeros((4, 8)),
        "head.weight": np.zeros((4, 8)),
        "blocks.0.ln1.weight": np.zeros(8),
        "blocks.0.att.k_k": np.zeros((1, 1, 8)),
        key: np.zeros(8),
    }
    with pytest.raises(ModelFormatError, match=what):
        detect_version(sd)


def test_detect_version_refuses_non_rwkv():
    with pytest.raises(ModelFormatError, match="not an RWKV checkpoint"):
        detect_version({"model.layers.0.weight": np.zeros(3)})
