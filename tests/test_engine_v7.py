"""The native RWKV-7 engine against the float64 reference and three independent sets of outputs.

Tolerances, as fractions of the std of the reference logits:
- F32 weights: 1e-4 (about 20x the spread between two valid fp32 evaluation orders).
- F16/BF16 weights: 1e-3, compared with the reference run on the same rounded weights (read back from
  the GGUF). Comparing with the unrounded f32 reference would measure the rounding of the weights, a
  property of the file, instead of the engine's arithmetic.
Every check runs token by token, in one sequence call, and in chunks 1+7+16+40, at every position.
"""

from __future__ import annotations

import numpy as np
import pytest
from conftest import (
    assert_close,
    gguf_to_v7_state_dict,
    load_pth,
    official_states,
    random_v7,
    read_rwkvcpp_bin,
    run_modes,
)

from rwkvchat.convert import write_gguf
from rwkvchat.model import Model
from rwkvchat.reference import ReferenceModel

V7 = "conformance/official/v7.0_V1024_D128_L2_hs64_s106"


SHAPES = [
    # (n_vocab, n_embd, n_layer, head_size, ranks (w, a, v, g), seed)
    pytest.param(97, 128, 2, 64, (32, 32, 32, 64), 1, id="D128-N64"),
    pytest.param(61, 96, 3, 32, (16, 24, 8, 32), 2, id="D96-N32"),
    pytest.param(50, 80, 2, 16, (32, 16, 16, 48), 3, id="D80-N16"),
]


@pytest.mark.parametrize("dtype,tol", [("f32", 1e-4), ("f16", 1e-3), ("bf16", 1e-3)])
@pytest.mark.parametrize("n_vocab,n_embd,n_layer,head_size,ranks,seed", SHAPES)
def test_random_models(native, tmp_path, n_vocab, n_embd, n_layer, head_size, ranks, seed, dtype, tol):
    sd = random_v7(n_vocab, n_embd, n_layer, head_size, ranks, seed=seed)
    path = tmp_path / "m.gguf"
    write_gguf(sd, path, dtype=dtype)
    ref = ReferenceModel(gguf_to_v7_state_dict(path))  # The weights exactly as stored.
    tokens = np.random.default_rng(seed).integers(0, n_vocab, 64)
    tokens[3], tokens[10] = n_vocab - 1, 0
    want_state = ref.new_state()
    want = ref.forward_all(tokens, want_state)
    # The checks mean something only if the logits vary and depend on the state (a fresh state moves them).
    assert want.std() > 0.3
    fresh = ref.forward([int(tokens[-1])], ref.new_state())
    assert np.abs(fresh - want[-1]).max() > 0.05 * want.std()
    with Model(path, threads=2) as m:
        assert (m.n_vocab, m.n_embd, m.n_layer, m.head_size, m.version) == (
            n_vocab,
            n_embd,
            n_layer,
            head_size,
            "7",
        )
        assert m.state_len == want_state.size
        for mode, got in run_modes(m, tokens).items():
            assert_close(got, want, want_state, tol, f"{dtype} {mode}")


@pytest.mark.parametrize("dtype", ["f32", "f16"])
def test_official_conformance(native, shared, tmp_path, dtype):
    """Converted official checkpoint vs the official package's logits and final states."""
    z = np.load(shared / f"{V7}.npz")
    path = tmp_path / "m.gguf"
    write_gguf(load_pth(shared / f"{V7}.pth"), path, dtype=dtype)
    scale = float(z["logit_scale"])
    want_state = official_states(z)
    with Model(path) as m:
        modes = run_modes(m, z["tokens"])
    for mode, (logits, state) in modes.items():
        reference = z["logits_one"] if mode == "one" else z["logits_seq"]
        err = np.abs(logits - reference).max() / scale
        assert err <= 1e-4, f"{dtype} {mode}: {err:.2e} × logit_scale"
        start = 0
        for i, desc in enumerate(z["state_desc"]):
            part = z[f"state_{i:02d}"].reshape(-1)
            got = state[start : start + part.size]
            assert np.abs(got - part).max() <= 1e-4 * np.abs(part).max(), f"{dtype} {mode} {desc}"
            start += part.size
        assert start == want_state.size


@pytest.mark.parametrize("kind", ["FP32", "FP16"])
def test_rwkvcpp_tiny(native, shared, tmp_path, kind):
    """rwkv.cpp's trained tiny v7 (vocab 256, bytes) after feeding the bytes of '"in'."""
    sd = read_rwkvcpp_bin(shared / f"conformance/rwkvcpp-tiny/tiny-rwkv-7v0-834K-{kind}.bin")
    expected = np.fromfile(shared / "conformance/rwkvcpp-tiny/expected-logits-7v0-834K.bin", dtype="<f4")
    path = tmp_path / "tiny.gguf"
    write_gguf(sd, path, dtype="f32" if kind == "FP32" else "f16", tokenizer="bytes")
    prompt = [0x22, 0x69, 0x6E]
    with Model(path) as m:
        assert m.tokenizer.encode('"in') == prompt  # The file's own (bytes) tokenizer.
        s = m.new_state()
        for t in prompt:
            one = m.forward([t], s)
        seq = m.forward(prompt, m.new_state())
    for label, got in (("one", one), ("seq", seq)):
        err = np.abs(got - expected).max() / expected.std()
        assert err <= 1e-4, f"{kind} {label}: {err:.2e} × std"


def test_llamacpp_f16_file(native, shared):
    """llama.cpp's own GGUF, loaded as it is, vs the official logits at the sampled columns."""
    z = np.load(shared / "conformance/llamacpp-gguf/references.npz")
    cols, scale = z["cols"], float(z["logit_scale"])
    with Model(shared / "conformance/llamacpp-gguf/llamacpp-v7-F16.gguf") as m:
        assert m.version == "7" and m.n_vocab == 65536 and m.weight_type == "F16"
        modes = run_modes(m, z["tokens"][:64])
        assert m.metadata_value("tokenizer.ggml.model") == "rwkv"
        assert len(m.metadata_value("tokenizer.ggml.tokens")) == 65536
        assert m.metadata_value("rwkv7.block_count") == 2
        assert m.metadata_value("no.such.key") is None
    for mode, (logits, _) in modes.items():
        reference = z["official_logits_one_cols"] if mode == "one" else z["official_logits_seq_cols"]
        err = np.abs(logits[:, cols] - reference).max() / scale
        assert err <= 1e-3, f"{mode}: {err:.2e} × std"
    err = np.abs(modes["one"][0][-1] - z["official_logits_last"]).max() / scale
    assert err <= 1e-3, f"last row, all columns: {err:.2e} × std"


def test_model_properties(native, tmp_path):
    sd = random_v7(n_vocab=50, n_embd=64, n_layer=2, head_size=32, seed=5)
    path = tmp_path / "m.gguf"
    write_gguf(sd, path, dtype="f16", name="tiny", extra_metadata={"rwkvchat.test": "yes"})
    with Model(path) as m:
        assert m.n_ffn == 256 and m.n_head == 2 and m.weight_type == "F16"
        assert m.state_len == 2 * (2 + 32) * 64
        assert m.n_params == sum(v.size for v in sd.values())  # Rv == Ra: block-0 v* copies keep the count.
        assert m.file_size == path.stat().st_size
        assert m.metadata_value("general.name") == "tiny"
        assert m.metadata_value("rwkvchat.test") == "yes"
        assert "general.architecture" in m.metadata_keys()
        names = {n: (t, ne) for n, t, ne in m.tensors()}
        assert names["blk.1.time_mix_lerp_fused.weight"] == ("F32", (64, 1, 1, 6))
        assert names["output.weight"] == ("F16", (64, 50))
        fp = m.fingerprint
        assert isinstance(fp, str) and len(fp) >= 16
        s = m.new_state()
        assert s.to_numpy().dtype == np.float32 and not s.to_numpy().any()
        m.forward([1, 2, 3], s)
        c = s.copy()
        assert np.array_equal(c.to_numpy(), s.to_numpy()) and c.data is not s.data
        back = m.state_from_numpy(s.to_numpy())
        assert np.array_equal(m.forward([4], back), m.forward([4], c))
    write_gguf(random_v7(n_vocab=50, n_embd=64, n_layer=2, head_size=32, seed=6), tmp_path / "n.gguf")
    with Model(tmp_path / "n.gguf") as other:
        assert other.fingerprint != fp


def test_close_is_idempotent(native, tmp_path):
    write_gguf(random_v7(n_vocab=50, n_embd=64, n_layer=1, head_size=32), tmp_path / "m.gguf")
    m = Model(tmp_path / "m.gguf")
    m.forward([1], m.new_state())
    m.close()
    m.close()
    from rwkvchat.errors import RwkvchatError

    with pytest.raises(RwkvchatError, match="closed"):
        m.new_state()


def test_quantized_conversion(native, shared, tmp_path):
    """write_gguf with a block type: the big matrices quantized, the rest as llama.cpp keeps them, and the
    logits near the official ones. Bounds: about 2x what the engine measures (0.071 × std, top-1 100%)
    and as close as llama.cpp's own Q8_0 (0.073 × std, 96.9%)."""
    import gguf

    z = np.load(shared / f"{V7}.npz")
    path = tmp_path / "q8.gguf"
    write_gguf(load_pth(shared / f"{V7}.pth"), path, dtype="q8_0")
    types = {t.name: t.tensor_type.name for t in gguf.GGUFReader(str(path)).tensors}
    assert (
        types["blk.1.time_mix_key.weight"] == types["token_embd.weight"] == types["output.weight"] == "Q8_0"
    )
    assert types["blk.1.time_mix_a1.weight"] == "F16" and types["blk.1.time_mix_w1.weight"] == "F32"
    with Model(path) as m:
        assert m.weight_type == "Q8_0"
        logits = m.forward_all(z["tokens"], m.new_state())
    assert np.abs(logits - z["logits_one"]).max() <= 0.15 * float(z["logit_scale"])
    assert (logits.argmax(1) == z["logits_one"].argmax(1)).mean() >= 0.95
