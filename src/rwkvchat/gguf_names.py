"""GGUF tensor names and metadata keys for RWKV-4, 5.x, 6 and 7 (pure data, plus small selectors).

`rwkv6` follows llama.cpp exactly (file-formats.md §2.4). `rwkv4` and `rwkv5` are rwkvchat's own architectures
in the same style, specified in docs/gguf-rwkv4-rwkv5.md: raw official values (decays not pre-exponentiated,
v4/v5 token-shift μ unchanged), except that a v5 `time_first` is stored as u = exp(time_first) so that
`time_mix_first` always holds the bonus used directly.

Rows have the shape the converter's tables use: `(gguf name, .pth key or tuple of keys, transform, role)`,
with `{i}` standing for the block index. Transforms (applied to the float32 .pth array; numpy shape =
reversed ne):

* "none"        stored as is;
* "squeeze"     reshape to one dimension ((1,1,D) -> (D,));
* "transpose"   2-D transpose ((in,out) LoRA -> (out,in));
* "stack"       squeeze each source and stack them: 5 × (1,1,D) -> (5,1,1,D), ne [D,1,1,5];
* "permute_021" swap the last two axes: v6 `time_maa_w2` (5,Rm,D) -> (5,D,Rm), ne [Rm,D,5];
* "exp"         elementwise exp in float32, shape unchanged (v5 `time_first` -> u).

Roles choose the stored type: "matrix" takes the requested type (float or quantized); "lora" is F16 unless F32
was asked for; "lora_f32" and "vector" stay F32. RESCALED names are divided by 2^(i // R) when a file is
written with `rescale_every_n_layers` = R > 0 (rwkvchat's converter writes R = 0 and leaves them unscaled).
"""

from __future__ import annotations

from collections.abc import Collection

__all__ = [
    "ARCH_OF_VERSION",
    "GLOBAL_ROWS",
    "RESCALED",
    "V7_BLOCK0_SUBSTITUTES",
    "V7_BLOCK_ROWS",
    "Row",
    "block_rows",
    "metadata",
]

Row = tuple[str, "str | tuple[str, ...]", str, str]

ARCH_OF_VERSION = {
    "4": "rwkv4", "5.0": "rwkv5", "5.1": "rwkv5", "5.2": "rwkv5", "6.0": "rwkv6", "7.0": "rwkv7",
}

# Block matrices that carry the fp16 rescale when R > 0 (rwkv-architectures.md §7.3).
RESCALED = frozenset({"time_mix_output", "channel_mix_value"})

GLOBAL_ROWS: list[Row] = [
    ("token_embd.weight", "emb.weight", "none", "matrix"),
    ("token_embd_norm.weight", "blocks.0.ln0.weight", "none", "vector"),
    ("token_embd_norm.bias", "blocks.0.ln0.bias", "none", "vector"),
    ("output_norm.weight", "ln_out.weight", "none", "vector"),
    ("output_norm.bias", "ln_out.bias", "none", "vector"),
    ("output.weight", "head.weight", "none", "matrix"),
]

_NORMS: list[Row] = [
    ("blk.{i}.attn_norm.weight", "blocks.{i}.ln1.weight", "none", "vector"),
    ("blk.{i}.attn_norm.bias", "blocks.{i}.ln1.bias", "none", "vector"),
    ("blk.{i}.attn_norm_2.weight", "blocks.{i}.ln2.weight", "none", "vector"),
    ("blk.{i}.attn_norm_2.bias", "blocks.{i}.ln2.bias", "none", "vector"),
]

_ATT_MATRICES: list[Row] = [
    ("blk.{i}.time_mix_key.weight", "blocks.{i}.att.key.weight", "none", "matrix"),
    ("blk.{i}.time_mix_value.weight", "blocks.{i}.att.value.weight", "none", "matrix"),
    ("blk.{i}.time_mix_receptance.weight", "blocks.{i}.att.receptance.weight", "none", "matrix"),
    ("blk.{i}.time_mix_output.weight", "blocks.{i}.att.output.weight", "none", "matrix"),
]

_GROUP_NORM: list[Row] = [
    ("blk.{i}.time_mix_ln.weight", "blocks.{i}.att.ln_x.weight", "none", "vector"),
    ("blk.{i}.time_mix_ln.bias", "blocks.{i}.att.ln_x.bias", "none", "vector"),
]

_GATE: list[Row] = [("blk.{i}.time_mix_gate.weight", "blocks.{i}.att.gate.weight", "none", "matrix")]

_FFN_MATRICES: list[Row] = [
    ("blk.{i}.channel_mix_key.weight", "blocks.{i}.ffn.key.weight", "none", "matrix"),
    ("blk.{i}.channel_mix_receptance.weight", "blocks.{i}.ffn.receptance.weight", "none", "matrix"),
    ("blk.{i}.channel_mix_value.weight", "blocks.{i}.ffn.value.weight", "none", "matrix"),
]

# v4/v5 token shift: raw μ of the x·μ + x_prev·(1−μ) convention.
_V4_V5_SHIFT: list[Row] = [
    ("blk.{i}.time_mix_lerp_k.weight", "blocks.{i}.att.time_mix_k", "squeeze", "vector"),
    ("blk.{i}.time_mix_lerp_v.weight", "blocks.{i}.att.time_mix_v", "squeeze", "vector"),
    ("blk.{i}.time_mix_lerp_r.weight", "blocks.{i}.att.time_mix_r", "squeeze", "vector"),
    ("blk.{i}.channel_mix_lerp_k.weight", "blocks.{i}.ffn.time_mix_k", "squeeze", "vector"),
    ("blk.{i}.channel_mix_lerp_r.weight", "blocks.{i}.ffn.time_mix_r", "squeeze", "vector"),
]

RWKV4_ROWS: list[Row] = _NORMS + _V4_V5_SHIFT + [
    ("blk.{i}.time_mix_decay.weight", "blocks.{i}.att.time_decay", "none", "vector"),
    ("blk.{i}.time_mix_first.weight", "blocks.{i}.att.time_first", "none", "vector"),
] + _ATT_MATRICES + _FFN_MATRICES

_RWKV5_DECAY: Row = ("blk.{i}.time_mix_decay.weight", "blocks.{i}.att.time_decay", "none", "vector")
_RWKV5_FIRST_EXP: Row = ("blk.{i}.time_mix_first.weight", "blocks.{i}.att.time_first", "exp", "vector")
_RWKV5_FIRST_RAW: Row = ("blk.{i}.time_mix_first.weight", "blocks.{i}.att.time_faaaa", "none", "vector")
_RWKV5_LERP_G: Row = ("blk.{i}.time_mix_lerp_g.weight", "blocks.{i}.att.time_mix_g", "squeeze", "vector")

RWKV6_ROWS: list[Row] = _NORMS + [
    ("blk.{i}.time_mix_lerp_x.weight", "blocks.{i}.att.time_maa_x", "squeeze", "vector"),
    ("blk.{i}.time_mix_lerp_fused.weight",
     tuple(f"blocks.{{i}}.att.time_maa_{c}" for c in "wkvrg"), "stack", "vector"),
    ("blk.{i}.time_mix_w1.weight", "blocks.{i}.att.time_maa_w1", "transpose", "lora"),
    ("blk.{i}.time_mix_w2.weight", "blocks.{i}.att.time_maa_w2", "permute_021", "lora"),
    ("blk.{i}.time_mix_decay.weight", "blocks.{i}.att.time_decay", "squeeze", "vector"),
    ("blk.{i}.time_mix_decay_w1.weight", "blocks.{i}.att.time_decay_w1", "transpose", "lora_f32"),
    ("blk.{i}.time_mix_decay_w2.weight", "blocks.{i}.att.time_decay_w2", "transpose", "lora_f32"),
    ("blk.{i}.time_mix_first.weight", "blocks.{i}.att.time_faaaa", "none", "vector"),
] + _ATT_MATRICES + _GATE + _GROUP_NORM + [
    ("blk.{i}.channel_mix_lerp_k.weight", "blocks.{i}.ffn.time_maa_k", "squeeze", "vector"),
    ("blk.{i}.channel_mix_lerp_r.weight", "blocks.{i}.ffn.time_maa_r", "squeeze", "vector"),
] + _FFN_MATRICES


def block_rows(version: str, keys: Collection[str]) -> list[Row]:
    """The per-block rows for one official version ("4", "5.0", "5.1", "5.2", "6.0").

    keys: the checkpoint's keys; v5.1 checkpoints hold either `time_first` (stored as exp) or `time_faaaa`.
    """
    if version == "4":
        return list(RWKV4_ROWS)
    if version == "6.0":
        return list(RWKV6_ROWS)
    if version not in ("5.0", "5.1", "5.2"):
        raise ValueError(f"no GGUF name table for RWKV {version!r} here (v7: convert.py)")
    first = _RWKV5_FIRST_EXP if "blocks.0.att.time_first" in keys else _RWKV5_FIRST_RAW
    rows = _NORMS + _V4_V5_SHIFT + [_RWKV5_DECAY, first] + _ATT_MATRICES + _GROUP_NORM + _FFN_MATRICES
    if version != "5.0":
        rows = rows + [_RWKV5_LERP_G] + _GATE
    return rows


def metadata(version: str, dims: dict[str, int]) -> dict[str, object]:
    """Architecture metadata for v4/v5.x/v6 (docs/gguf-rwkv4-rwkv5.md §2; rwkv6 as llama.cpp).

    dims: D, L, F, plus N for v5/v6 and Rm, Rd (LoRA ranks) for v6. Python ints become u32 and floats f32
    (the converter's `_add_kv` convention); R = 0, weights not pre-divided.
    """
    arch = ARCH_OF_VERSION.get(version)
    if arch is None or arch == "rwkv7":
        raise ValueError(f"no legacy metadata for RWKV {version!r}")
    meta: dict[str, object] = {
        f"{arch}.context_length": 1048576,
        f"{arch}.embedding_length": dims["D"],
        f"{arch}.block_count": dims["L"],
        f"{arch}.feed_forward_length": dims["F"],
        f"{arch}.attention.layer_norm_epsilon": 1e-5,
        f"{arch}.attention.head_count": 0,
        f"{arch}.rescale_every_n_layers": 0,
    }
    if arch != "rwkv6":
        meta[f"{arch}.architecture_version"] = version
    if arch != "rwkv4":
        meta[f"{arch}.wkv.head_size"] = dims["N"]
    if arch == "rwkv5":
        # Official group-norm eps; written so a reader never has to guess (rwkv.cpp used 1e-5 for v5).
        meta[f"{arch}.wkv.group_norm_epsilon"] = 64e-5
    if arch == "rwkv6":
        meta[f"{arch}.time_mix_extra_dim"] = dims["Rm"]
        meta[f"{arch}.time_decay_extra_dim"] = dims["Rd"]
    return meta


# ---- RWKV-7, llama.cpp's rwkv7 layout (file-formats.md §2.4) ----

V7_BLOCK_ROWS: list[Row] = [
    ("blk.{i}.attn_norm.weight", "blocks.{i}.ln1.weight", "none", "vector"),
    ("blk.{i}.attn_norm.bias", "blocks.{i}.ln1.bias", "none", "vector"),
    ("blk.{i}.attn_norm_2.weight", "blocks.{i}.ln2.weight", "none", "vector"),
    ("blk.{i}.attn_norm_2.bias", "blocks.{i}.ln2.bias", "none", "vector"),
    (
        "blk.{i}.time_mix_lerp_fused.weight",
        tuple(f"blocks.{{i}}.att.x_{c}" for c in "rwkvag"),
        "stack",
        "vector",
    ),
    ("blk.{i}.time_mix_w0.weight", "blocks.{i}.att.w0", "squeeze", "vector"),
    ("blk.{i}.time_mix_w1.weight", "blocks.{i}.att.w1", "transpose", "lora_f32"),
    ("blk.{i}.time_mix_w2.weight", "blocks.{i}.att.w2", "transpose", "lora_f32"),
    ("blk.{i}.time_mix_a0.weight", "blocks.{i}.att.a0", "squeeze", "vector"),
    ("blk.{i}.time_mix_a1.weight", "blocks.{i}.att.a1", "transpose", "lora"),
    ("blk.{i}.time_mix_a2.weight", "blocks.{i}.att.a2", "transpose", "lora"),
    # Block 0 never uses v0/v1/v2, but llama.cpp requires them with a0/a1/a2's shapes: its converter
    # writes copies of a0/a1/a2 there, and so do we (file-formats.md §2.4).
    ("blk.{i}.time_mix_v0.weight", "blocks.{i}.att.v0", "squeeze", "vector"),
    ("blk.{i}.time_mix_v1.weight", "blocks.{i}.att.v1", "transpose", "lora"),
    ("blk.{i}.time_mix_v2.weight", "blocks.{i}.att.v2", "transpose", "lora"),
    ("blk.{i}.time_mix_g1.weight", "blocks.{i}.att.g1", "transpose", "lora"),
    ("blk.{i}.time_mix_g2.weight", "blocks.{i}.att.g2", "transpose", "lora"),
    ("blk.{i}.time_mix_k_k.weight", "blocks.{i}.att.k_k", "squeeze", "vector"),
    ("blk.{i}.time_mix_k_a.weight", "blocks.{i}.att.k_a", "squeeze", "vector"),
    ("blk.{i}.time_mix_r_k.weight", "blocks.{i}.att.r_k", "squeeze", "vector"),
    ("blk.{i}.time_mix_receptance.weight", "blocks.{i}.att.receptance.weight", "none", "matrix"),
    ("blk.{i}.time_mix_key.weight", "blocks.{i}.att.key.weight", "none", "matrix"),
    ("blk.{i}.time_mix_value.weight", "blocks.{i}.att.value.weight", "none", "matrix"),
    ("blk.{i}.time_mix_output.weight", "blocks.{i}.att.output.weight", "none", "matrix"),
    ("blk.{i}.time_mix_ln.weight", "blocks.{i}.att.ln_x.weight", "none", "vector"),
    ("blk.{i}.time_mix_ln.bias", "blocks.{i}.att.ln_x.bias", "none", "vector"),
    ("blk.{i}.channel_mix_lerp_k.weight", "blocks.{i}.ffn.x_k", "squeeze", "vector"),
    ("blk.{i}.channel_mix_key.weight", "blocks.{i}.ffn.key.weight", "none", "matrix"),
    ("blk.{i}.channel_mix_value.weight", "blocks.{i}.ffn.value.weight", "none", "matrix"),
]

# Block-0 keys the loader ignores; the official files carry them, rwkv.cpp's tiny v7 does not.
V7_BLOCK0_SUBSTITUTES = {
    "blocks.0.att.v0": "blocks.0.att.a0",
    "blocks.0.att.v1": "blocks.0.att.a1",
    "blocks.0.att.v2": "blocks.0.att.a2",
}
