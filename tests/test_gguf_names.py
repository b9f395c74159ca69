"""The v4/v5/v6 GGUF name tables cover every official key once and use llama.cpp's names (rwkv6 style)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from rwkvchat.gguf_names import GLOBAL_ROWS, RESCALED, block_rows, metadata

OFFICIAL = Path(__file__).resolve().parents[1].parent / "shared" / "conformance" / "official"
VERSIONS = ("4", "5.0", "5.1", "5.2", "6.0")


def _apply(arrays: list[np.ndarray], transform: str) -> np.ndarray:
    if transform == "stack":
        return np.stack([a.reshape(1, 1, -1) for a in arrays])
    if transform == "squeeze":
        return arrays[0].reshape(-1)
    if transform == "transpose":
        return arrays[0].T
    if transform == "permute_021":
        return arrays[0].transpose(0, 2, 1)
    if transform == "exp":
        return np.exp(arrays[0])
    assert transform == "none", transform
    return arrays[0]


def _checkpoint(version: str) -> dict[str, np.ndarray]:
    if not OFFICIAL.is_dir():
        pytest.skip(f"conformance data not found at {OFFICIAL}")
    torch = pytest.importorskip("torch", reason="torch reads the official .pth (pip install torch==2.13.0)")
    path = min(OFFICIAL.glob(f"v{version}_*.pth"))
    return {k: t.float().numpy() for k, t in torch.load(path, map_location="cpu", weights_only=True).items()}


@pytest.mark.parametrize("version", VERSIONS)
def test_rows_cover_every_key_once(version: str) -> None:
    sd = _checkpoint(version)
    n_layer = 1 + max(int(k.split(".")[1]) for k in sd if k.startswith("blocks."))
    used: list[str] = []
    names: list[str] = []
    shapes: dict[str, tuple[int, ...]] = {}
    rows = GLOBAL_ROWS + [(n.format(i=i), tuple(s.format(i=i) for s in src) if isinstance(src, tuple)
                           else src.format(i=i), t, r)
                          for i in range(n_layer) for n, src, t, r in block_rows(version, sd.keys())]
    for name, src, transform, _role in rows:
        keys = list(src) if isinstance(src, tuple) else [src]
        used += keys
        names.append(name)
        shapes[name] = _apply([sd[k] for k in keys], transform).shape
    assert sorted(used) == sorted(sd), set(sd) ^ set(used)
    assert len(set(names)) == len(names)
    d = sd["emb.weight"].shape[1]
    # Every per-block vector is squeezed to one dimension of D, as llama.cpp's rwkv6 loader expects.
    for name in ("blk.0.attn_norm.weight", "blk.0.channel_mix_lerp_k.weight", "blk.1.channel_mix_lerp_r.weight"):
        assert shapes[name] == (d,)
    if version == "6.0":
        h, n = sd["blocks.0.att.time_faaaa"].shape
        rm = sd["blocks.0.att.time_maa_w1"].shape[1] // 5
        # numpy shapes = reversed ne of file-formats.md §2.4.
        assert shapes["blk.0.time_mix_lerp_fused.weight"] == (5, 1, 1, d)
        assert shapes["blk.0.time_mix_w1.weight"] == (5 * rm, d)
        assert shapes["blk.0.time_mix_w2.weight"] == (5, d, rm)
        assert shapes["blk.0.time_mix_first.weight"] == (h, n)
        assert shapes["blk.0.time_mix_decay.weight"] == (d,)
    if version in ("5.0", "5.1"):
        assert shapes["blk.0.time_mix_decay.weight"] == (sd["blocks.0.att.time_decay"].size,)
    assert ("blk.0.time_mix_gate.weight" in names) == (version not in ("4", "5.0"))


def test_names_are_llamacpp_rwkv6_names() -> None:
    gguf = pytest.importorskip("gguf")
    from gguf.constants import MODEL_ARCH, MODEL_TENSORS, TENSOR_NAMES

    allowed = {TENSOR_NAMES[t] for t in MODEL_TENSORS[MODEL_ARCH.RWKV6]}
    for version in VERSIONS:
        for name, _src, _t, _r in GLOBAL_ROWS + block_rows(version, {"blocks.0.att.time_first"}):
            base = name.replace("blk.{i}.", "blk.{bid}.").removesuffix(".weight").removesuffix(".bias")
            assert base in allowed, (version, name)
    assert gguf is not None


def test_v5_first_transform_follows_the_key() -> None:
    exp_rows = [r for r in block_rows("5.1", {"blocks.0.att.time_first"}) if r[0].startswith("blk.{i}.time_mix_first")]
    raw_rows = [r for r in block_rows("5.1", {"blocks.0.att.time_faaaa"}) if r[0].startswith("blk.{i}.time_mix_first")]
    assert exp_rows[0][1:3] == ("blocks.{i}.att.time_first", "exp")
    assert raw_rows[0][1:3] == ("blocks.{i}.att.time_faaaa", "none")


def test_metadata_keys() -> None:
    dims = {"D": 128, "L": 2, "F": 448, "N": 64, "Rm": 32, "Rd": 64}
    m5 = metadata("5.2", dims)
    assert m5["rwkv5.architecture_version"] == "5.2" and m5["rwkv5.wkv.head_size"] == 64
    m4 = metadata("4", dims)
    assert "rwkv4.wkv.head_size" not in m4 and m4["rwkv4.architecture_version"] == "4"
    m6 = metadata("6.0", dims)
    assert m6["rwkv6.time_mix_extra_dim"] == 32 and m6["rwkv6.time_decay_extra_dim"] == 64
    assert "rwkv6.architecture_version" not in m6
    assert RESCALED == {"time_mix_output", "channel_mix_value"}
    with pytest.raises(ValueError):
        metadata("7.0", dims)
