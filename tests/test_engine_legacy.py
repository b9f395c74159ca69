"""The native RWKV-4, 5.0, 5.1, 5.2 and 6.0 engine against the float64 reference and the official package.

Tolerances, as fractions of the std of the reference logits (as test_engine_v7.py):
- F32 weights: 1e-4.
- F16 weights: 1e-3, against the reference run on the weights read back from the GGUF (so the check measures the
  engine's arithmetic, not the rounding of the weights).
Every check runs token by token, in one sequence call and in chunks 1+7+16+40, at every position, and compares
the final state too (the state layouts are the official package's, see forward_legacy.h).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from conftest import assert_close, load_pth, official_states, run_modes
from legacy_models import random_legacy

from rwkvchat import gguf_names
from rwkvchat.convert import write_gguf
from rwkvchat.errors import RwkvchatError
from rwkvchat.model import Model
from rwkvchat.reference_legacy import legacy_reference

VERSIONS = ("4", "5.0", "5.1", "5.2", "6.0")
OFFICIAL = {
    "4": "v4_V1024_D128_L2_s101",
    "5.0": "v5.0_V1024_D128_L2_hs64_s102",
    "5.1": "v5.1_V1024_D128_L2_hs64_s103",
    "5.2": "v5.2_V1024_D128_L2_hs64_s104",
    "6.0": "v6.0_V1024_D128_L2_hs64_s105",
}
# Model.version spells whole versions without ".0" except 5.0 (the official package's sub-version names).
VERSION_NAME = {"4": "4", "5.0": "5.0", "5.1": "5.1", "5.2": "5.2", "6.0": "6"}


# ---- GGUF -> official layout (undoing gguf_names' transforms), for the reference on the stored weights ----


def _tensor_values(t) -> np.ndarray:
    """A gguf ReaderTensor as float32 in numpy order (the reverse of ne)."""
    shape = tuple(int(x) for x in reversed(list(t.shape)))
    raw = np.asarray(t.data)
    if t.tensor_type.name == "F32":
        return raw.astype(np.float32).reshape(shape)
    if t.tensor_type.name == "F16":
        return raw.view(np.float16).astype(np.float32).reshape(shape)
    raise ValueError(f"test reader: {t.name} has type {t.tensor_type.name}")


def gguf_to_legacy_state_dict(path: Path, like: dict[str, np.ndarray], version: str) -> dict[str, np.ndarray]:
    """The GGUF's tensors back in the keys and shapes of `like` (the state dict it was written from)."""
    import gguf

    stored = {t.name: _tensor_values(t) for t in gguf.GGUFReader(str(path)).tensors}
    rows = list(gguf_names.GLOBAL_ROWS)
    n_layer = 1 + max(int(k.split(".")[1]) for k in like if k.startswith("blocks."))
    for i in range(n_layer):
        for name, src, transform, role in gguf_names.block_rows(version, list(like)):
            fill = src.format(i=i) if isinstance(src, str) else tuple(s.format(i=i) for s in src)
            rows.append((name.format(i=i), fill, transform, role))
    sd: dict[str, np.ndarray] = {}
    for name, src, transform, _ in rows:
        a = stored.pop(name)
        if transform == "stack":
            for j, key in enumerate(src):
                sd[key] = a[j].reshape(like[key].shape)
            continue
        if transform == "transpose":
            a = a.T
        elif transform == "permute_021":
            a = a.transpose(0, 2, 1)
        elif transform == "exp":
            a = np.log(a.astype(np.float64))
        sd[src] = np.asarray(a).reshape(like[src].shape)
    assert not stored, f"tensors the test reader does not know: {sorted(stored)}"
    assert set(sd) == set(like)
    return sd


# ---- Inputs ----


def _tokens(n_vocab: int, seed: int) -> np.ndarray:
    tokens = np.random.default_rng(seed).integers(0, n_vocab, 64)
    tokens[3], tokens[10] = n_vocab - 1, 0
    return tokens


SHAPES = [
    # (n_vocab, n_embd, n_layer, head_size, ranks (Rm, Rd), seed)
    pytest.param(97, 128, 2, 64, (32, 64), 1, id="D128-N64"),
    pytest.param(61, 96, 3, 32, (16, 24), 2, id="D96-N32"),
]


@pytest.mark.parametrize("dtype,tol", [("f32", 1e-4), ("f16", 1e-3)])
@pytest.mark.parametrize("n_vocab,n_embd,n_layer,head_size,ranks,seed", SHAPES)
@pytest.mark.parametrize("version", VERSIONS)
def test_random_models(
    native, tmp_path, version, n_vocab, n_embd, n_layer, head_size, ranks, seed, dtype, tol
):
    sd = random_legacy(
        version, n_vocab, n_embd, n_layer, head_size, ranks=ranks, seed=seed, time_first=seed == 2
    )
    path = tmp_path / "m.gguf"
    write_gguf(sd, path, dtype=dtype)
    ref = legacy_reference(gguf_to_legacy_state_dict(path, sd, version), version)
    tokens = _tokens(n_vocab, seed)
    want_state = ref.new_state()
    want = ref.forward_all(tokens, want_state)
    assert want.std() > 0.3  # Varied logits, or the check means nothing.
    with Model(path, threads=2) as m:
        assert m.version == VERSION_NAME[version]
        assert (m.n_vocab, m.n_embd, m.n_layer) == (n_vocab, n_embd, n_layer)
        assert m.head_size == (0 if version == "4" else head_size)
        assert m.n_ffn == sd["blocks.0.ffn.key.weight"].shape[0]
        assert m.state_len == want_state.size
        # The empty state is the reference's (v4: pp = -1e30), and the recurrent part matters.
        assert np.array_equal(m.new_state().to_numpy(), ref.new_state().astype(np.float32))
        for mode, got in run_modes(m, tokens).items():
            err, serr = assert_close(got, want, want_state, tol, f"{version} {dtype} {mode}")
            print(f"{version} {dtype} {mode}: logits {err:.2e} × std, state {serr:.2e} × max")


@pytest.mark.parametrize("dtype", ["f32", "f16"])
@pytest.mark.parametrize("version", VERSIONS)
def test_official_conformance(native, shared, tmp_path, version, dtype):
    """Converted official checkpoint vs the official package's logits and final states."""
    name = OFFICIAL[version]
    z = np.load(shared / "conformance" / "official" / f"{name}.npz")
    path = tmp_path / "m.gguf"
    write_gguf(load_pth(shared / "conformance" / "official" / f"{name}.pth"), path, dtype=dtype)
    scale = float(z["logit_scale"])
    want_state = official_states(z)
    with Model(path) as m:
        assert m.version == VERSION_NAME[version]
        modes = run_modes(m, z["tokens"])
    for mode, (logits, state) in modes.items():
        reference = z["logits_one"] if mode == "one" else z["logits_seq"]
        err = np.abs(logits - reference).max() / scale
        print(f"{version} {dtype} {mode}: {err:.2e} × logit_scale")
        assert err <= 1e-4, f"{version} {dtype} {mode}: {err:.2e} × logit_scale"
        start = 0
        for i, desc in enumerate(z["state_desc"]):
            part = z[f"state_{i:02d}"].reshape(-1)
            got = state[start : start + part.size]
            assert np.abs(got - part).max() <= 1e-4 * np.abs(part).max(), f"{version} {dtype} {mode} {desc}"
            start += part.size
        assert start == want_state.size == state.size


def test_v4_keys_beyond_float32_exp(native, tmp_path):
    """Keys of a few hundred (exp(k) overflows fp32 above 88): the max trick keeps the v4 WKV finite and exact."""
    sd = random_legacy("4", n_vocab=61, n_embd=64, n_layer=2, seed=11)
    for i in range(2):
        sd[f"blocks.{i}.att.key.weight"] = sd[f"blocks.{i}.att.key.weight"] * 100.0
    write_gguf(sd, tmp_path / "m.gguf", dtype="f32")
    ref = legacy_reference(sd, "4")
    tokens = _tokens(61, 11)
    want_state = ref.new_state()
    want = ref.forward_all(tokens, want_state)
    pp = np.concatenate([want_state[i * 5 * 64 + 3 * 64 : i * 5 * 64 + 4 * 64] for i in range(2)])
    assert np.abs(pp).max() > 150  # The running exponent really is beyond fp32's exp range.
    with Model(tmp_path / "m.gguf") as m:
        for mode, got in run_modes(m, tokens).items():
            assert np.isfinite(got[0]).all() and np.isfinite(got[1]).all(), mode
            assert_close(got, want, want_state, 1e-4, f"large keys {mode}")


def _prescaled(sd: dict[str, np.ndarray], every: int) -> dict[str, np.ndarray]:
    """The state dict with output/value matrices of block i divided by 2^(i // every) (§7.3 step 1)."""
    out = dict(sd)
    for key, value in sd.items():
        if key.endswith(("att.output.weight", "ffn.value.weight")):
            out[key] = (value / 2.0 ** (int(key.split(".")[1]) // every)).astype(np.float32)
    return out


@pytest.mark.parametrize("version", VERSIONS)
def test_rescale_every_n_layers(native, tmp_path, version):
    """A file with pre-divided matrices and rescale_every_n_layers = R gives the undivided model's logits; ignoring
    R would not (the halving after every R-th block is what makes them equal). Equal up to LayerNorm's eps only:
    with the residual scaled down by up to 4 here, eps = 1e-5 moves the logits by about 2e-4 × std (R = 1 on four
    blocks, a scale of 16: 3e-3)."""
    sd = random_legacy(version, n_vocab=53, n_embd=64, n_layer=4, head_size=32, ranks=(16, 32), seed=7)
    arch = gguf_names.ARCH_OF_VERSION[version]
    tokens = _tokens(53, 7)[:20]
    write_gguf(sd, tmp_path / "plain.gguf", dtype="f32")
    for every in (2, 3):
        pre = _prescaled(sd, every)
        write_gguf(
            pre, tmp_path / "r.gguf", dtype="f32", extra_metadata={f"{arch}.rescale_every_n_layers": every}
        )
        write_gguf(pre, tmp_path / "r0.gguf", dtype="f32")
        with (
            Model(tmp_path / "plain.gguf") as a,
            Model(tmp_path / "r.gguf") as b,
            Model(tmp_path / "r0.gguf") as c,
        ):
            want = a.forward_all(tokens, a.new_state())
            got = b.forward_all(tokens, b.new_state())
            ignored = c.forward_all(tokens, c.new_state())
        scale = want.std()
        assert np.abs(got - want).max() <= 1e-3 * scale, f"R={every}"
        assert np.abs(ignored - want).max() > 0.1 * scale, (
            f"R={every}: the test model does not see the rescale"
        )


def test_v5_group_norm_epsilon_from_metadata(native, tmp_path):
    """rwkv5.wkv.group_norm_epsilon replaces the default 64e-5 (rwkv.cpp's v5 arithmetic uses 1e-5)."""
    sd = random_legacy("5.2", n_vocab=53, n_embd=64, n_layer=2, head_size=8, seed=8)
    tokens = _tokens(53, 8)[:16]
    results = {}
    for eps in (1e-5, 64e-5):
        write_gguf(sd, tmp_path / "m.gguf", dtype="f32", extra_metadata={"rwkv5.wkv.group_norm_epsilon": eps})
        ref = legacy_reference(sd, "5.2", gn_eps=eps)
        want = ref.forward_all(tokens, ref.new_state())
        with Model(tmp_path / "m.gguf") as m:
            results[eps] = m.forward_all(tokens, m.new_state())
        assert np.abs(results[eps] - want).max() <= 1e-4 * want.std(), eps
    assert np.abs(results[1e-5] - results[64e-5]).max() > 1e-4 * want.std()


def test_v6_separate_lerp_tensors(native, tmp_path):
    """Older rwkv6 files carry time_mix_lerp_w/k/v/r/g instead of the fused [D,1,1,5] tensor; both load."""
    import gguf

    sd = random_legacy("6.0", n_vocab=53, n_embd=64, n_layer=2, head_size=32, ranks=(16, 32), seed=9)
    fused = tmp_path / "fused.gguf"
    write_gguf(sd, fused, dtype="f32")
    reader = gguf.GGUFReader(str(fused))
    split = tmp_path / "split.gguf"
    w = gguf.GGUFWriter(str(split), "rwkv6")
    for field in reader.fields.values():
        if field.name.startswith("GGUF.") or field.name == "general.architecture":
            continue
        w.add_key_value(
            field.name,
            field.contents(),
            field.types[0],
            field.types[-1] if field.types[0] == gguf.GGUFValueType.ARRAY else None,
        )
    for t in reader.tensors:
        a = _tensor_values(t)
        if t.name.endswith("time_mix_lerp_fused.weight"):
            for j, c in enumerate("wkvrg"):
                w.add_tensor(
                    t.name.replace("lerp_fused", f"lerp_{c}"), np.ascontiguousarray(a[j].reshape(-1))
                )
        else:
            w.add_tensor(t.name, np.ascontiguousarray(a))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    tokens = _tokens(53, 9)[:16]
    with Model(fused) as a, Model(split) as b:
        assert np.array_equal(a.forward_all(tokens, a.new_state()), b.forward_all(tokens, b.new_state()))


def _rewrite(src: Path, dst: Path, drop: str | None = None, meta: dict | None = None) -> None:
    """Copies a GGUF, leaving out tensor `drop` and replacing metadata values from `meta` (strings only)."""
    import gguf

    reader = gguf.GGUFReader(str(src))
    arch = reader.fields["general.architecture"].contents()
    w = gguf.GGUFWriter(str(dst), arch)
    for field in reader.fields.values():
        if field.name.startswith("GGUF.") or field.name == "general.architecture":
            continue
        if meta and field.name in meta:
            w.add_string(field.name, meta[field.name])
            continue
        w.add_key_value(
            field.name,
            field.contents(),
            field.types[0],
            field.types[-1] if field.types[0] == gguf.GGUFValueType.ARRAY else None,
        )
    for t in reader.tensors:
        if t.name != drop:
            w.add_tensor(t.name, np.ascontiguousarray(_tensor_values(t)))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


@pytest.mark.parametrize(
    "version,drop,meta,match",
    [
        ("5.2", None, {"rwkv5.architecture_version": "5.1"}, "architecture_version is '5.1'"),
        ("5.0", None, {"rwkv5.architecture_version": "5.2"}, "architecture_version is '5.2'"),
        ("4", None, {"rwkv4.architecture_version": "5.0"}, "architecture_version is '5.0'"),
        ("5.1", "blk.1.time_mix_gate.weight", None, "missing tensor blk.1.time_mix_gate.weight"),
        ("4", "blk.0.time_mix_first.weight", None, "missing tensor blk.0.time_mix_first.weight"),
        ("6.0", "blk.1.time_mix_decay_w2.weight", None, "missing tensor blk.1.time_mix_decay_w2.weight"),
        ("5.0", "blk.0.channel_mix_receptance.weight", None, "missing tensor blk.0.channel_mix_receptance"),
    ],
)
def test_inconsistent_files_are_refused(native, tmp_path, version, drop, meta, match):
    sd = random_legacy(version, n_vocab=53, n_embd=64, n_layer=2, head_size=32, ranks=(16, 32), seed=10)
    write_gguf(sd, tmp_path / "ok.gguf", dtype="f32")
    _rewrite(tmp_path / "ok.gguf", tmp_path / "bad.gguf", drop, meta)
    with pytest.raises(RwkvchatError, match=match):
        Model(tmp_path / "bad.gguf")
