"""Shared fixtures: the ../shared test data, random RWKV-7 models, and readers used only by tests.

- `shared`: Path of /work/shared (../shared from the repo root); tests skip when it is absent.
- `random_v7(...)`: a random official-layout (BlinkDL keys and shapes) v7 state dict, float32.
- `gguf_to_v7_state_dict(path)`: reads a GGUF written in llama.cpp's rwkv7 layout back into the official
  layout, undoing file-formats.md §2.4, so tests can run the float64 reference on exactly the weights
  (after any F16/BF16 rounding) that the native engine sees.
- `read_rwkvcpp_bin(path)`: rwkv.cpp's `.bin` (FP32/FP16 only) back to the official layout, undoing §1.3.
- `native`: the loaded native library; skips only when the library file does not exist at all.
"""

from __future__ import annotations

import os
import re
import shutil
import struct
import subprocess
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parent.parent
SHARED = REPO.parent / "shared"


def _export_library_path() -> None:
    """Lets child processes use the library this process uses.

    Tests that start `python -m rwkvchat` with PYTHONPATH=src would otherwise look for the library in the
    source tree, where an installed build (CI: `pip install .`) never puts it.
    """
    if os.environ.get("RWKVCHAT_LIB"):
        return
    from rwkvchat import _native

    path = _native.library_path()
    if os.path.exists(path):
        os.environ["RWKVCHAT_LIB"] = path


_export_library_path()


@pytest.fixture(scope="session")
def shared() -> Path:
    if not (SHARED / "conformance").is_dir():
        pytest.skip(f"test data {SHARED}/conformance is absent")
    return SHARED


@pytest.fixture(scope="session")
def native():
    """The native library; a skip only if it was never built (a broken build fails the test)."""
    from rwkvchat import _native

    if not os.path.exists(_native.library_path()):
        pytest.skip(f"native library not built: {_native.library_path()}")
    return _native.lib()


# ---- the C library under AddressSanitizer + UBSan, with edge coverage for the fuzzers ----

# ASan's reports start with "ERROR: AddressSanitizer", UBSan's with "<file>:<line>:<col>: runtime error:".
REPORT = re.compile(r"ERROR: AddressSanitizer|runtime error:|ERROR: LeakSanitizer|SUMMARY: UndefinedBehavior")
# Distinct exit codes so a sanitizer's death is never mistaken for a failed assertion (pytest exits with 1).
ASAN_EXIT, UBSAN_EXIT = 86, 87


def sanitizer_env() -> dict[str, str]:
    env = dict(os.environ)
    env["ASAN_OPTIONS"] = f"detect_leaks=0:exitcode={ASAN_EXIT}:abort_on_error=0:strict_string_checks=1"
    env["UBSAN_OPTIONS"] = f"print_stacktrace=1:halt_on_error=1:exitcode={UBSAN_EXIT}"
    return env


def libasan_path() -> str:
    """gcc's ASan runtime, for LD_PRELOAD into an uninstrumented Python (it must be loaded first)."""
    cc = shutil.which("gcc") or shutil.which("cc")
    path = subprocess.run([cc, "-print-file-name=libasan.so"], check=False, capture_output=True, text=True).stdout.strip()
    if not path or not os.path.isabs(path) or not os.path.exists(path):
        pytest.skip(f"{cc} does not know where libasan.so is ({path!r})")
    return path


def asan_library(build: Path) -> Path:
    lib = next(build.rglob("librwkvc.so"), None)
    assert lib is not None, f"no librwkvc.so under {build}"
    return lib


@pytest.fixture(scope="session")
def asan_build(tmp_path_factory) -> Path:
    """One build for tests/test_sanitizers.py and the fuzzers in tests/test_fuzz_smoke.py: ASan + UBSan, the
    C tests, and RWKVC_FUZZ_COVERAGE's edge counters (inert unless a fuzzer registers them)."""
    if shutil.which("cmake") is None:
        pytest.skip("cmake is not installed")
    if shutil.which("gcc") is None and shutil.which("cc") is None:
        pytest.skip("no C compiler")
    build = tmp_path_factory.mktemp("asan-build")
    cfg = subprocess.run(
        ["cmake", "-S", str(REPO), "-B", str(build), "-DRWKVC_SANITIZE=ON", "-DRWKVC_BUILD_TESTS=ON",
         "-DRWKVC_FUZZ_COVERAGE=ON", "-DCMAKE_BUILD_TYPE=RelWithDebInfo"],
        check=False, capture_output=True, text=True,
    )
    assert cfg.returncode == 0, (cfg.stdout + cfg.stderr)[-4000:]
    proc = subprocess.run(["cmake", "--build", str(build), "-j2"], check=False, capture_output=True, text=True)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-6000:]
    return build


# ---- random RWKV-7 models in the official layout ----


def random_v7(
    n_vocab: int = 97,
    n_embd: int = 128,
    n_layer: int = 2,
    head_size: int = 64,
    ranks: tuple[int, int, int, int] = (32, 32, 32, 64),
    n_ffn: int | None = None,
    seed: int = 0,
    block0_v: bool = True,
) -> dict[str, np.ndarray]:
    """A random v7 state dict (float32) whose logits vary (std of order 1) and whose state matters.

    ranks: (Rw, Ra, Rv, Rg). The ranges follow RWKV-LM's initialisation in spirit: decays spread over
    channels, mixes inside (0,1), norms near 1, matrices of std about 1/sqrt(fan-in).
    """
    rng = np.random.default_rng(seed)
    D, V, N = n_embd, n_vocab, head_size
    H = D // N
    F = n_ffn or 4 * D
    Rw, Ra, Rv, Rg = ranks

    def mat(rows: int, cols: int, scale: float = 1.0) -> np.ndarray:
        return (rng.standard_normal((rows, cols)) * scale / np.sqrt(cols)).astype(np.float32)

    def vec(lo: float, hi: float) -> np.ndarray:
        return rng.uniform(lo, hi, (1, 1, D)).astype(np.float32)

    def norm(prefix: str, sd: dict[str, np.ndarray]) -> None:
        sd[prefix + ".weight"] = (1 + 0.1 * rng.standard_normal(D)).astype(np.float32)
        sd[prefix + ".bias"] = (0.1 * rng.standard_normal(D)).astype(np.float32)

    sd: dict[str, np.ndarray] = {"emb.weight": rng.standard_normal((V, D)).astype(np.float32)}
    for i in range(n_layer):
        b = f"blocks.{i}."
        if i == 0:
            norm(b + "ln0", sd)
        norm(b + "ln1", sd)
        norm(b + "ln2", sd)
        for c in "rwkvag":
            sd[f"{b}att.x_{c}"] = vec(0.0, 1.0)
        sd[b + "att.w0"] = vec(-3.0, 3.0)
        sd[b + "att.w1"] = mat(D, Rw, 0.5 * np.sqrt(Rw / D))
        sd[b + "att.w2"] = mat(Rw, D, 0.5 * np.sqrt(D / Rw))
        sd[b + "att.a0"] = vec(-1.0, 1.0)
        sd[b + "att.a1"] = mat(D, Ra, 0.5 * np.sqrt(Ra / D))
        sd[b + "att.a2"] = mat(Ra, D, 0.5 * np.sqrt(D / Ra))
        if i > 0 or block0_v:
            sd[b + "att.v0"] = vec(-1.0, 1.0)
            sd[b + "att.v1"] = mat(D, Rv, 0.5 * np.sqrt(Rv / D))
            sd[b + "att.v2"] = mat(Rv, D, 0.5 * np.sqrt(D / Rv))
        sd[b + "att.g1"] = mat(D, Rg, 0.5 * np.sqrt(Rg / D))
        sd[b + "att.g2"] = mat(Rg, D, 0.5 * np.sqrt(D / Rg))
        sd[b + "att.k_k"] = vec(0.5, 1.0)
        sd[b + "att.k_a"] = vec(0.5, 1.5)
        sd[b + "att.r_k"] = (0.5 * rng.standard_normal((H, N))).astype(np.float32)
        for k in ("receptance", "key", "value", "output"):
            sd[f"{b}att.{k}.weight"] = mat(D, D)
        norm(b + "att.ln_x", sd)
        sd[b + "ffn.x_k"] = vec(0.0, 1.0)
        sd[b + "ffn.key.weight"] = mat(F, D)
        sd[b + "ffn.value.weight"] = mat(D, F, 0.5)
    norm("ln_out", sd)
    sd["head.weight"] = mat(V, D, 2.0)
    return sd


# ---- GGUF (llama.cpp rwkv7 layout) -> official layout ----


def _dequant_float(t) -> np.ndarray:
    """A gguf ReaderTensor's values as float32 in numpy (PyTorch) order."""
    shape = tuple(int(x) for x in reversed(list(t.shape)))
    name = t.tensor_type.name
    raw = np.asarray(t.data)
    if name == "F32":
        return raw.astype(np.float32).reshape(shape)
    if name == "F16":
        return raw.view(np.float16).astype(np.float32).reshape(shape)
    if name == "BF16":
        bits = raw.view(np.uint16).astype(np.uint32) << 16
        return bits.view(np.float32).reshape(shape)
    raise ValueError(f"test reader: {t.name} has type {name}")


def gguf_to_v7_state_dict(path: str | os.PathLike[str]) -> dict[str, np.ndarray]:
    """Reads an rwkv7 GGUF (F32/F16/BF16 tensors) back into BlinkDL keys and shapes."""
    import gguf

    r = gguf.GGUFReader(os.fspath(path))
    t = {x.name: _dequant_float(x) for x in r.tensors}
    D = t["token_embd.weight"].shape[1]
    L = int(r.fields["rwkv7.block_count"].contents())
    N = int(r.fields["rwkv7.wkv.head_size"].contents())
    sd = {
        "emb.weight": t["token_embd.weight"],
        "head.weight": t["output.weight"],
        "blocks.0.ln0.weight": t["token_embd_norm.weight"],
        "blocks.0.ln0.bias": t["token_embd_norm.bias"],
        "ln_out.weight": t["output_norm.weight"],
        "ln_out.bias": t["output_norm.bias"],
    }
    for i in range(L):
        g, b = f"blk.{i}.", f"blocks.{i}."
        for src, dst in (("attn_norm", "ln1"), ("attn_norm_2", "ln2"), ("time_mix_ln", "att.ln_x")):
            sd[b + dst + ".weight"] = t[g + src + ".weight"]
            sd[b + dst + ".bias"] = t[g + src + ".bias"]
        fused = t[g + "time_mix_lerp_fused.weight"].reshape(6, D)
        for j, c in enumerate("rwkvag"):
            sd[f"{b}att.x_{c}"] = fused[j].reshape(1, 1, D)
        for k in ("w0", "a0", "v0", "k_k", "k_a"):
            sd[f"{b}att.{k}"] = t[f"{g}time_mix_{k}.weight"].reshape(1, 1, D)
        for k in ("w1", "w2", "a1", "a2", "v1", "v2", "g1", "g2"):
            sd[f"{b}att.{k}"] = t[f"{g}time_mix_{k}.weight"].T.copy()
        sd[b + "att.r_k"] = t[g + "time_mix_r_k.weight"].reshape(D // N, N)
        for k in ("receptance", "key", "value", "output"):
            sd[f"{b}att.{k}.weight"] = t[f"{g}time_mix_{k}.weight"]
        sd[b + "ffn.x_k"] = t[g + "channel_mix_lerp_k.weight"].reshape(1, 1, D)
        sd[b + "ffn.key.weight"] = t[g + "channel_mix_key.weight"]
        sd[b + "ffn.value.weight"] = t[g + "channel_mix_value.weight"]
    return sd


# ---- rwkv.cpp .bin -> official layout ----


def read_rwkvcpp_bin(path: str | os.PathLike[str]) -> dict[str, np.ndarray]:
    """Reads an FP32/FP16 rwkv.cpp v7 `.bin` and undoes its converter's transforms (file-formats.md §1.3)."""
    data = Path(path).read_bytes()
    magic, version, n_vocab, n_embd, n_layer, _ = struct.unpack_from("<6i", data, 0)
    assert magic == 0x67676D66 and version in (100, 101), (hex(magic), version)
    pos, raw = 24, {}
    while pos < len(data):
        n_dims, key_len, dtype = struct.unpack_from("<3i", data, pos)
        pos += 12
        ne = struct.unpack_from(f"<{n_dims}i", data, pos)
        pos += 4 * n_dims
        key = data[pos : pos + key_len].decode()
        pos += key_len
        count = int(np.prod(ne))
        np_type = {0: np.float32, 1: np.float16}[dtype]
        arr = np.frombuffer(data, np_type, count, pos).astype(np.float32).reshape(tuple(reversed(ne)))
        pos += count * np.dtype(np_type).itemsize
        raw[key] = arr
    sd = {}
    for key, arr in raw.items():
        if key.endswith("att.x_rwkvag"):
            base = key[: -len("x_rwkvag")]
            for j, c in enumerate("rwkvag"):
                sd[f"{base}x_{c}"] = arr.reshape(6, -1)[j].reshape(1, 1, -1)
        elif key.split(".")[-1] in ("w1", "w2", "a1", "a2", "v1", "v2", "g1", "g2"):
            sd[key] = arr.T.copy()
        elif key.split(".")[-1] in ("w0", "a0", "v0", "k_k", "k_a", "x_k"):
            sd[key] = arr.reshape(1, 1, -1)
        else:
            sd[key] = arr
    assert sd["emb.weight"].shape == (n_vocab, n_embd) and f"blocks.{n_layer - 1}.ln1.weight" in sd
    return sd


def load_pth(path: Path) -> dict[str, np.ndarray]:
    """An official .pth as float32 numpy arrays (bf16 widens exactly); skips without torch."""
    pytest.importorskip("torch")
    from rwkvchat.checkpoint import read_checkpoint

    ck = read_checkpoint(path)
    return {k: ck[k] for k in ck}


def official_states(npz) -> np.ndarray:
    """The npz's state_XX tensors concatenated in the native layout, float32."""
    n = len(npz["state_desc"])
    return np.concatenate([npz[f"state_{i:02d}"].reshape(-1) for i in range(n)]).astype(np.float32)


# ---- Feeding a model every way the engine supports ----

# Chunk sizes of the chunked mode (conformance README): the state is handed on three times mid-sequence.
CHUNKS = (1, 7, 16, 40)


def seq_tolerance(model) -> float:
    """Relative tolerance between sequence mode and token-by-token logits of one model.

    1e-5, or 1e-4 where f16/bf16 matrices run the split-bf16 AMX GEMM in sequence mode (kernels_avx512.c), which
    keeps about 17 bits of each product where the FMA GEMM keeps 24.
    """
    from rwkvchat.model import system_info

    info = system_info().split()
    amx = "AMX_BF16=1" in info and "kernels=avx512" in info
    return 1e-4 if amx and model.weight_type.lower() in ("f16", "bf16") else 1e-5


def run_modes(model, tokens: np.ndarray) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """mode -> (logits (T, V), final state) for token-by-token, sequence and chunked feeding of 64 tokens.

    Also checks that forward() returns the last row of forward_all, and that logits=False feeds the prompt
    without the head.
    """
    out = {}
    s = model.new_state()
    rows = [model.forward([int(t)], s) for t in tokens]
    out["one"] = (np.stack(rows), s.to_numpy())
    s = model.new_state()
    out["seq"] = (model.forward_all(tokens, s), s.to_numpy())
    s = model.new_state()
    parts, start = [], 0
    for n in CHUNKS:
        parts.append(model.forward_all(tokens[start : start + n], s))
        start += n
    assert start == len(tokens)
    out["chunks"] = (np.concatenate(parts), s.to_numpy())
    s1, s2 = model.new_state(), model.new_state()
    last = model.forward(tokens, s1)
    assert model.forward(tokens[:-1], s2, logits=False) is None
    last2 = model.forward(tokens[-1:], s2)
    scale = max(out["seq"][0].std(), 1e-6)
    assert np.abs(last - out["seq"][0][-1]).max() <= seq_tolerance(model) * scale
    assert np.abs(last2 - last).max() <= seq_tolerance(model) * scale
    # forward() leaves out the last layer's outputs that no logit reads (all but the last token's, and all of them
    # with logits=False); the state must come out as forward_all's.
    want_state = out["seq"][1]
    state_scale = max(np.abs(want_state).max(), 1e-6)
    for state in (s1, s2):
        assert np.abs(state.to_numpy() - want_state).max() <= seq_tolerance(model) * state_scale
    return out


def assert_close(got, want_logits, want_state, rel, label) -> tuple[float, float]:
    """Asserts max|Δ logits| <= rel x std(want_logits) and max|Δ state| <= 10 rel x max|want_state|.

    Returns (logit error / std, state error / max) for tests that report them.
    """
    logits, state = got
    err = float(np.abs(logits - want_logits).max() / want_logits.std())
    assert err <= rel, f"{label}: max|Δ| logits = {err:.2e} × std"
    serr = float(np.abs(state - want_state).max() / np.abs(want_state).max())
    assert serr <= 10 * rel, f"{label}: max|Δ| state = {serr:.2e} × max|state|"
    return err, serr
