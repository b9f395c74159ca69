"""The CUDA backend against the same references and tolerances as the CPU engine (test_engine_v7.py).

Runs only where the library was built with -DRWKVC_CUDA=ON and a CUDA device is usable; skips otherwise.
Tolerances, as fractions of the std of the reference logits (as for the CPU):
- F32 weights: 1e-4; F16/BF16 weights: 1e-3 against the reference run on the weights as stored.
- Official checkpoint: 1e-4 of the official logit scale, states 1e-4 of each part's max.
- llama.cpp's F16 file: 1e-3 against the official logits.
- Q8_0 / Q4_0 (rwkvchat's quantization of llama.cpp's F16 file, identical to llama-quantize's per
  test_quantize.py): at least as close to the official logits as llama.cpp's own logits on those files.
Every check runs token by token, in one sequence call and in chunks 1+7+16+40, and the GPU state must also
continue correctly on the CPU (the state layout is shared).
"""

from __future__ import annotations

import numpy as np
import pytest
from conftest import assert_close, gguf_to_v7_state_dict, load_pth, official_states, random_v7, run_modes

from rwkvchat.convert import write_gguf
from rwkvchat.errors import RwkvchatError
from rwkvchat.model import Model
from rwkvchat.reference import ReferenceModel

V7 = "conformance/official/v7.0_V1024_D128_L2_hs64_s106"
LLAMA = "conformance/llamacpp-gguf"


@pytest.fixture(scope="module")
def cuda_ok(native, tmp_path_factory):
    """Skips the module unless a CUDA context can be made on a tiny model."""
    path = tmp_path_factory.mktemp("probe") / "m.gguf"
    write_gguf(random_v7(n_vocab=50, n_embd=64, n_layer=1, head_size=32, seed=9), path, dtype="f16")
    try:
        Model(path, device="cuda").close()
    except RwkvchatError as e:
        pytest.skip(f"no usable CUDA backend: {e}")
    return True


SHAPES = [
    pytest.param(97, 128, 2, 64, (32, 32, 32, 64), 1, id="D128-N64"),
    pytest.param(61, 96, 3, 32, (16, 24, 8, 32), 2, id="D96-N32"),
    pytest.param(50, 80, 2, 16, (32, 16, 16, 48), 3, id="D80-N16"),
]


@pytest.mark.parametrize("dtype,tol", [("f32", 1e-4), ("f16", 1e-3), ("bf16", 1e-3)])
@pytest.mark.parametrize("n_vocab,n_embd,n_layer,head_size,ranks,seed", SHAPES)
def test_random_models(cuda_ok, tmp_path, n_vocab, n_embd, n_layer, head_size, ranks, seed, dtype, tol):
    sd = random_v7(n_vocab, n_embd, n_layer, head_size, ranks, seed=seed)
    path = tmp_path / "m.gguf"
    write_gguf(sd, path, dtype=dtype)
    ref = ReferenceModel(gguf_to_v7_state_dict(path))
    tokens = np.random.default_rng(seed).integers(0, n_vocab, 64)
    tokens[3], tokens[10] = n_vocab - 1, 0
    want_state = ref.new_state()
    want = ref.forward_all(tokens, want_state)
    assert want.std() > 0.3
    with Model(path, device="cuda") as m:
        assert m.device == "cuda:0"
        modes = run_modes(m, tokens)
        # The GPU's state continues on the CPU and the CPU's on the GPU: one layout for both.
        s = m.new_state()
        m.forward(tokens[:32], s)
        with Model(path, threads=1) as cpu:
            rest = cpu.forward_all(tokens[32:], s)
        assert_close((rest, s.to_numpy()), want[32:], want_state, tol, f"{dtype} gpu->cpu")
    for mode, got in modes.items():
        assert_close(got, want, want_state, tol, f"{dtype} {mode}")


@pytest.mark.parametrize("dtype", ["f32", "f16"])
def test_official_conformance(cuda_ok, shared, tmp_path, dtype):
    z = np.load(shared / f"{V7}.npz")
    path = tmp_path / "m.gguf"
    write_gguf(load_pth(shared / f"{V7}.pth"), path, dtype=dtype)
    scale = float(z["logit_scale"])
    want_state = official_states(z)
    with Model(path, device="cuda") as m:
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


def test_llamacpp_f16_file(cuda_ok, shared):
    z = np.load(shared / LLAMA / "references.npz")
    cols, scale = z["cols"], float(z["logit_scale"])
    with Model(shared / LLAMA / "llamacpp-v7-F16.gguf", device="cuda") as m:
        modes = run_modes(m, z["tokens"][:64])
    for mode, (logits, _) in modes.items():
        reference = z["official_logits_one_cols"] if mode == "one" else z["official_logits_seq_cols"]
        err = np.abs(logits[:, cols] - reference).max() / scale
        assert err <= 1e-3, f"{mode}: {err:.2e} × std"
    err = np.abs(modes["one"][0][-1] - z["official_logits_last"]).max() / scale
    assert err <= 1e-3, f"last row, all columns: {err:.2e} × std"


def _stats(logits: np.ndarray, official: np.ndarray, std: float) -> dict[str, float]:
    e = np.abs(logits - official) / std
    return {"max": float(e.max()), "rms": float(np.sqrt((e**2).mean())), "p99": float(np.quantile(e, 0.99)),
            "top1": float((logits.argmax(1) == official.argmax(1)).mean())}


@pytest.mark.parametrize("qtype", ["Q8_0", "Q4_0"])
def test_quantized_as_close_as_llama(cuda_ok, shared, tmp_path, qtype):
    from rwkvchat.quantize import quantize_gguf

    ref = np.load(shared / LLAMA / "references.npz")
    tokens, cols, std = ref["tokens"], ref["cols"], float(ref["logit_scale"])
    path = tmp_path / f"{qtype}.gguf"
    quantize_gguf(shared / LLAMA / "llamacpp-v7-F16.gguf", path, qtype.lower())
    with Model(path, device="cuda") as m:
        assert qtype in {t for _, t, _ in m.tensors()}  # Q4_0 files keep the head at Q8_0 (its largest type).
        modes = run_modes(m, tokens)
    official = ref["official_logits_one_cols"]
    llama = _stats(ref[f"llamacpp_{qtype}_logits_cols"], official, std)
    for mode, (logits, _) in modes.items():
        ours = _stats(logits[:, cols], official, std)
        assert ours["rms"] <= llama["rms"] * 1.005, (mode, ours, llama)
        assert ours["p99"] <= llama["p99"] * 1.005, (mode, ours, llama)
        assert ours["max"] <= llama["max"] * 1.25, (mode, ours, llama)
        assert ours["top1"] >= llama["top1"], (mode, ours, llama)
