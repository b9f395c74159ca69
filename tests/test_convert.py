"""The .pth -> GGUF converter, checked by reading its files back with the `gguf` package.

The files must follow llama.cpp's rwkv7 layout exactly (file-formats.md §2.3/§2.4): the same names, ne
shapes, types and metadata as the llama.cpp-written conformance file, and weights that round-trip.
"""

from __future__ import annotations

import os

import gguf
import numpy as np
import pytest
from conftest import gguf_to_v7_state_dict, load_pth, random_v7

from rwkvchat.checkpoint import read_checkpoint
from rwkvchat.convert import QuantizedTensor, write_gguf
from rwkvchat.errors import ConversionError
from rwkvchat.reference import ReferenceModel

V7 = "conformance/official/v7.0_V1024_D128_L2_hs64_s106"
LLAMACPP_F16 = "conformance/llamacpp-gguf/llamacpp-v7-F16.gguf"


def _layout(path):
    r = gguf.GGUFReader(str(path))
    return {t.name: (t.tensor_type.name, [int(x) for x in t.shape]) for t in r.tensors}, r


def _expected_sd(sd):
    """The official sd as the GGUF must give it back: block-0 v0/v1/v2 replaced by a0/a1/a2."""
    out = dict(sd)
    for k in ("0", "1", "2"):
        out[f"blocks.0.att.v{k}"] = sd[f"blocks.0.att.a{k}"]
    return out


def test_f16_layout_equals_llamacpp(shared, tmp_path):
    """Same tensor names, types and ne as llama.cpp's own converter on a model of the same shape."""
    sd = load_pth(shared / f"{V7}.pth")
    write_gguf(sd, tmp_path / "m.gguf", dtype="f16")
    mine, r = _layout(tmp_path / "m.gguf")
    theirs, rl = _layout(shared / LLAMACPP_F16)
    # The llama.cpp model has a 65536 vocabulary; ours 1024. Everything else must agree.
    for name in ("token_embd.weight", "output.weight"):
        assert mine[name][0] == theirs[name][0] == "F16"
        mine.pop(name), theirs.pop(name)
    assert mine == theirs
    for key in rl.fields:
        if key.startswith("rwkv7.") or key in ("general.architecture", "general.file_type"):
            assert key in r.fields, key
            assert r.fields[key].contents() == rl.fields[key].contents(), key
            assert r.fields[key].types == rl.fields[key].types, key


@pytest.mark.parametrize("dtype", ["f32", "f16", "bf16"])
def test_official_round_trip(shared, tmp_path, dtype):
    """bf16 checkpoint values are exact in F32 and BF16; in F16 all but subnormal-range ones."""
    sd = load_pth(shared / f"{V7}.pth")
    out = tmp_path / f"m-{dtype}.gguf"
    result = write_gguf(sd, out, dtype=dtype)
    assert result.version == "7.0" and result.n_tensors == 62
    back = gguf_to_v7_state_dict(out)
    want = _expected_sd(sd)
    assert set(back) == set(want)
    for key, value in want.items():
        assert back[key].shape == value.shape, key
        # F16 (the matrices with dtype f16, the LoRA ones unless f32) loses bits below 2^-24 in subnormals.
        tol = 0.0 if dtype == "f32" else 2.0**-24
        assert np.abs(back[key] - value).max() <= tol, key
    types = {t.tensor_type.name for t in gguf.GGUFReader(str(out)).tensors}
    assert types == {"f32": {"F32"}, "f16": {"F32", "F16"}, "bf16": {"F32", "F16", "BF16"}}[dtype]
    assert not os.path.exists(str(out) + ".tmp")


def test_types_per_role(tmp_path):
    sd = random_v7(n_vocab=50, n_embd=64, head_size=32, n_layer=1, ranks=(32, 32, 32, 32))
    write_gguf(sd, tmp_path / "m.gguf", dtype="bf16")
    layout, r = _layout(tmp_path / "m.gguf")
    assert layout["blk.0.time_mix_key.weight"][0] == "BF16"
    assert layout["token_embd.weight"][0] == "BF16" and layout["output.weight"][0] == "BF16"
    assert layout["blk.0.time_mix_a1.weight"][0] == "F16" and layout["blk.0.time_mix_g2.weight"][0] == "F16"
    assert layout["blk.0.time_mix_w1.weight"][0] == "F32"
    assert layout["blk.0.time_mix_lerp_fused.weight"] == ("F32", [64, 1, 1, 6])
    assert layout["blk.0.time_mix_r_k.weight"] == ("F32", [64])
    assert r.fields["general.file_type"].contents() == 32


def test_bf16_rounds_to_nearest_even(tmp_path):
    sd = random_v7(n_vocab=50, n_embd=64, head_size=32, n_layer=1)
    w = sd["blocks.0.att.key.weight"]
    write_gguf(sd, tmp_path / "m.gguf", dtype="bf16")
    back = gguf_to_v7_state_dict(tmp_path / "m.gguf")["blocks.0.att.key.weight"]
    import torch

    want = torch.from_numpy(w).to(torch.bfloat16).float().numpy()
    assert np.array_equal(back, want)


def test_llamacpp_file_through_reference(shared):
    """Reading llama.cpp's file with our inverse mapping reproduces the official logits: the mapping is right."""
    sd = gguf_to_v7_state_dict(shared / LLAMACPP_F16)
    z = np.load(shared / "conformance/llamacpp-gguf/references.npz")
    model = ReferenceModel(sd)
    logits = model.forward_all(z["tokens"], model.new_state())[:, z["cols"]]
    assert np.abs(logits - z["official_logits_one_cols"]).max() <= 1e-4 * float(z["logit_scale"])


def test_missing_tensor_named(tmp_path):
    sd = random_v7(n_vocab=50, n_embd=64, head_size=32, n_layer=2)
    del sd["blocks.1.att.g2"]
    with pytest.raises(ConversionError, match=r"blocks\.1\.att\.g2"):
        write_gguf(sd, tmp_path / "m.gguf")
    assert os.listdir(tmp_path) == []


def test_wrong_shape_named(tmp_path):
    sd = random_v7(n_vocab=50, n_embd=64, head_size=32, n_layer=2)
    sd["blocks.1.ffn.value.weight"] = sd["blocks.1.ffn.value.weight"][:, :-1]
    with pytest.raises(ConversionError, match=r"blocks\.1\.ffn\.value\.weight has shape \(64, 255\)"):
        write_gguf(sd, tmp_path / "m.gguf")


def test_block0_v_absent_is_filled(tmp_path):
    sd = random_v7(n_vocab=50, n_embd=64, head_size=32, n_layer=2, block0_v=False)
    write_gguf(sd, tmp_path / "m.gguf", dtype="f32")
    back = gguf_to_v7_state_dict(tmp_path / "m.gguf")
    assert np.array_equal(back["blocks.0.att.v1"], sd["blocks.0.att.a1"])


def test_unknown_dtype_lists_valid(tmp_path):
    sd = random_v7(n_vocab=50, n_embd=64, head_size=32, n_layer=1)
    with pytest.raises(ConversionError, match=r"(?i)valid.*\bf16\b"):
        write_gguf(sd, tmp_path / "m.gguf", dtype="q3_z")


def test_f16_overflow_refused(tmp_path):
    sd = random_v7(n_vocab=50, n_embd=64, head_size=32, n_layer=1)
    sd["head.weight"][3, 3] = 1e6
    with pytest.raises(ConversionError, match="output.weight.*F16 range"):
        write_gguf(sd, tmp_path / "m.gguf", dtype="f16")
    assert os.listdir(tmp_path) == []


def test_interrupted_write_leaves_nothing(tmp_path):
    sd = random_v7(n_vocab=50, n_embd=64, head_size=32, n_layer=2)
    calls = []

    def progress(name, done, total):
        calls.append(name)
        if len(calls) == 10:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        write_gguf(sd, tmp_path / "m.gguf", progress=progress)
    assert os.listdir(tmp_path) == []


def test_existing_output_replaced_only_on_success(tmp_path):
    out = tmp_path / "m.gguf"
    out.write_bytes(b"old")
    sd = random_v7(n_vocab=50, n_embd=64, head_size=32, n_layer=1)
    del sd["head.weight"]
    with pytest.raises(ConversionError):
        write_gguf(sd, out)
    assert out.read_bytes() == b"old"


def test_quantized_tensor_copied_bit_for_bit(tmp_path):
    sd = random_v7(n_vocab=64, n_embd=64, head_size=32, n_layer=1)
    blocks = np.random.default_rng(1).integers(
        0, 256, (64, 2 * 18), dtype=np.uint8
    )  # 64 rows of 2 Q4_0 blocks.
    sd["blocks.0.att.key.weight"] = QuantizedTensor(2, (64, 64), blocks)
    write_gguf(sd, tmp_path / "m.gguf", dtype="f32")
    r = gguf.GGUFReader(str(tmp_path / "m.gguf"))
    t = next(t for t in r.tensors if t.name == "blk.0.time_mix_key.weight")
    assert t.tensor_type.name == "Q4_0" and [int(x) for x in t.shape] == [64, 64]
    assert np.array_equal(np.asarray(t.data).reshape(-1).view(np.uint8), blocks.reshape(-1))


def test_read_checkpoint_errors(tmp_path):
    pytest.importorskip("torch")
    with pytest.raises(ConversionError, match="no such checkpoint"):
        read_checkpoint(tmp_path / "absent.pth")
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"not a zip file at all")
    with pytest.raises(ConversionError, match="cannot read"):
        read_checkpoint(bad)
    import torch

    for data, what in (
        (b"GGUF\x03\x00\x00\x00" + bytes(40), "already a GGUF"),
        (b"fmgg" + bytes(40), "rwkv.cpp"),
        (b"\x10\x00\x00\x00\x00\x00\x00\x00{}" + bytes(30), "safetensors"),
    ):
        bad.write_bytes(data)
        with pytest.raises(ConversionError, match=what):
            read_checkpoint(bad)
    torch.save([torch.zeros(3)], tmp_path / "list.pth")
    with pytest.raises(ConversionError, match="not a state dict"):
        read_checkpoint(tmp_path / "list.pth")


def test_read_checkpoint_bf16_exact(shared):
    import torch

    ck = read_checkpoint(shared / f"{V7}.pth")
    raw = torch.load(shared / f"{V7}.pth", map_location="cpu", weights_only=True)
    assert raw["emb.weight"].dtype == torch.bfloat16
    assert np.array_equal(ck["emb.weight"], raw["emb.weight"].float().numpy())


def test_cli_convert_and_info(shared, tmp_path, capsys):
    from rwkvchat.cli import run

    out = tmp_path / "m.gguf"
    assert (
        run(["convert", str(shared / f"{V7}.pth"), str(out), "--dtype", "bf16", "--tokenizer", "none"]) == 0
    )
    err = capsys.readouterr().err
    assert "RWKV-7.0" in err and "bf16" in err
    assert out.exists()
    assert run(["convert", str(shared / f"{V7}.pth"), str(out)]) == 1
    err = capsys.readouterr().err
    assert err.strip().splitlines() == [f"rwkvchat: error: {out} exists; add --force to overwrite it"]
    assert run(["convert", str(shared / f"{V7}.pth"), str(out), "--dtype", "f32", "--force"]) == 1
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "cannot tell the tokenizer" in err  # vocab 1024: no guess.
    assert (
        run(
            [
                "convert",
                str(shared / f"{V7}.pth"),
                str(out),
                "--dtype",
                "f32",
                "--force",
                "--tokenizer",
                "none",
            ]
        )
        == 0
    )
    assert {t.tensor_type.name for t in gguf.GGUFReader(str(out)).tensors} == {"F32"}
    assert (
        run(
            [
                "convert",
                str(shared / f"{V7}.pth"),
                str(tmp_path / "x.gguf"),
                "--dtype",
                "q9",
                "--tokenizer",
                "none",
            ]
        )
        == 1
    )
    err = capsys.readouterr().err.lower()
    assert err.count("rwkvchat: error:") == 1 and "valid" in err and "f16" in err


def test_cli_info_model(native, tmp_path, capsys):
    from rwkvchat.cli import run

    path = tmp_path / "m.gguf"
    write_gguf(random_v7(n_vocab=50, n_embd=64, n_layer=2, head_size=32), path, dtype="f16")
    capsys.readouterr()
    assert run(["info", str(path)]) == 0
    out = capsys.readouterr().out
    for text in ("RWKV-7", "50", "64", "2 × 32", "F16", "F32", "256"):
        assert text in out, text
    assert run(["info", "--system"]) == 0
    assert capsys.readouterr().out.strip()


LEGACY = [
    ("v4_V1024_D128_L2_s101", "rwkv4"),
    ("v5.0_V1024_D128_L2_hs64_s102", "rwkv5"),
    ("v5.1_V1024_D128_L2_hs64_s103", "rwkv5"),
    ("v5.2_V1024_D128_L2_hs64_s104", "rwkv5"),
    ("v6.0_V1024_D128_L2_hs64_s105", "rwkv6"),
]


@pytest.mark.parametrize("name,arch", LEGACY)
def test_legacy_versions_convert(shared, tmp_path, name, arch):
    """v4-v6 go through gguf_names' tables: every checkpoint value lands in the file, transformed as specified."""
    sd = load_pth(shared / f"conformance/official/{name}.pth")
    out = tmp_path / "m.gguf"
    result = write_gguf(sd, out, dtype="f32")
    r = gguf.GGUFReader(str(out))
    assert r.fields["general.architecture"].contents() == arch
    t = {x.name: np.asarray(x.data).reshape([int(n) for n in reversed(list(x.shape))]) for x in r.tensors}
    merged = 8 if arch == "rwkv6" else 0  # Per block, v6 stacks five time_maa_{w,k,v,r,g} into one tensor.
    assert result.n_tensors == len(sd) - merged == len(t)
    assert np.array_equal(t["blk.1.time_mix_key.weight"], sd["blocks.1.att.key.weight"])
    assert np.array_equal(t["blk.1.channel_mix_value.weight"], sd["blocks.1.ffn.value.weight"])
    assert np.array_equal(t["token_embd_norm.weight"], sd["blocks.0.ln0.weight"])
    if name.startswith("v5.0"):
        raw = sd["blocks.1.att.time_first"]
        assert np.allclose(t["blk.1.time_mix_first.weight"], np.exp(raw), rtol=1e-6, atol=0)
    if arch == "rwkv6":
        w2 = sd["blocks.1.att.time_maa_w2"]  # (5, Rm, D)
        assert t["blk.1.time_mix_w2.weight"].shape == (5, w2.shape[2], w2.shape[1])
        assert np.array_equal(t["blk.1.time_mix_w2.weight"], w2.transpose(0, 2, 1))
        assert np.array_equal(t["blk.1.time_mix_w1.weight"], sd["blocks.1.att.time_maa_w1"].T)
        fused = t["blk.1.time_mix_lerp_fused.weight"]
        assert fused.shape == (5, 1, 1, 128)
        for j, c in enumerate("wkvrg"):
            assert np.array_equal(fused[j].reshape(-1), sd[f"blocks.1.att.time_maa_{c}"].reshape(-1))
        assert r.fields["rwkv6.time_mix_extra_dim"].contents() == 32
    if arch == "rwkv4":
        assert "rwkv4.wkv.head_size" not in r.fields
    else:
        assert r.fields[f"{arch}.wkv.head_size"].contents() == 64


def test_legacy_extra_tensor_refused(shared, tmp_path):
    sd = load_pth(shared / "conformance/official/v5.2_V1024_D128_L2_hs64_s104.pth")
    sd["blocks.0.att.time_state"] = np.zeros((2, 64, 64), dtype=np.float32)
    with pytest.raises(ConversionError, match="unexpected tensor blocks.0.att.time_state"):
        write_gguf(sd, tmp_path / "m.gguf")
