"""Seed corpora for the fuzzers: small valid files of every format rwkvchat reads, made on the spot.

Fuzzers mutate these, so each seed is a complete, loadable file that reaches deep into its reader and is
as small as possible (a few KB: mutation speed falls with input size). Nothing here is checked in; the
smoke test and the by-hand runs (fuzz/README.md) call `write_seeds(kind, folder)`.

Kinds: "gguf" (a tiny v7 model, a tokenizer-only file, a file with every metadata type), "vocab" (World
vocabulary text), "rwkvcpp" (rwkv.cpp .bin files: FP32, FP16, Q8_0), "pth" (official .pth zips; needs
torch), "state" (saved chat sessions; needs the tiny model).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parent.parent

# Tiny model dimensions: D = 16 in 2 heads of 8, one layer, 16 vocabulary rows, LoRA ranks of 4.
TINY = {"n_vocab": 16, "n_embd": 16, "n_layer": 1, "head_size": 8, "ranks": (4, 4, 4, 4), "n_ffn": 32, "seed": 3}


def _conftest() -> Any:
    """tests/conftest.py (random_v7, read_rwkvcpp_bin) as a module, without pytest collecting anything."""
    tests = str(REPO / "tests")
    if tests not in sys.path:
        sys.path.insert(0, tests)
    import conftest

    return conftest


def tiny_state_dict(**changes: Any) -> dict[str, np.ndarray]:
    """The official-layout state dict of the tiny v7 model (float32)."""
    return _conftest().random_v7(**{**TINY, **changes})


def tiny_vocab(n_multi: int = 40) -> list[bytes]:
    """A World-style vocabulary: id 0 empty, the 256 single bytes, then n_multi multi-byte tokens."""
    tokens = [b""] + [bytes([b]) for b in range(256)]
    words = [b"the", b"he", b"ll", b"hello", b" world", b"\n\n", b"User", b"Assistant", b":", b"  ",
             "你好".encode(), b"\xe4\xbd", b"\xff\xfe"]
    for i in range(n_multi):
        w = words[i % len(words)] + (b"" if i < len(words) else str(i).encode())
        tokens.append(w)
    return tokens


def vocab_text(tokens: list[bytes]) -> str:
    """rwkv_vocab_v20230424 format: `<id> <python literal> <byte length>` per line."""
    lines = []
    for i, t in enumerate(tokens[1:], start=1):
        try:
            lit = repr(t.decode("utf-8"))
        except UnicodeDecodeError:
            lit = repr(t)
        lines.append(f"{i} {lit} {len(t)}")
    return "\n".join(lines) + "\n"


def write_tiny_model(path: Path, dtype: str = "f32", tokenizer: str | None = None, **changes: Any) -> Path:
    from rwkvchat.convert import write_gguf

    write_gguf(tiny_state_dict(**changes), path, dtype=dtype, tokenizer=tokenizer)
    return path


def _write_legacy(folder: Path) -> list[Path]:
    """Tiny RWKV-4, 5.0, 5.1, 5.2 and 6.0 models (tests/legacy_models.py), so every version's loader and
    forward pass are fuzzed."""
    from rwkvchat.convert import write_gguf

    _conftest()  # puts tests/ on sys.path
    from legacy_models import random_legacy

    out = []
    for v in ("4", "5.0", "5.1", "5.2", "6.0"):
        sd = random_legacy(v, n_vocab=16, n_embd=16, n_layer=1, head_size=8, n_ffn=32, ranks=(4, 4), seed=1)
        path = folder / f"tiny-v{v}.gguf"
        write_gguf(sd, path, dtype="f16")
        out.append(path)
    return out


def _write_hf_json(path: Path) -> Path:
    """A tiny byte-level BPE tokenizer.json (the format of tokenizer.huggingface.json in GGUF files)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=["<|endoftext|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(["hello world, the quick brown fox", "User: hi\n\nAssistant: hello"], trainer)
    path.write_text(tok.to_str(), encoding="utf-8")
    return path


def _write_tokenizer_only(path: Path) -> None:
    """A GGUF with World tokenizer metadata in llama.cpp's layout and no tensors (small and parse-heavy)."""
    import gguf

    from rwkvchat.tokenizer import escape_rwkv_token

    tokens = tiny_vocab(12)
    w = gguf.GGUFWriter(str(path), "rwkv7")
    w.add_string("tokenizer.ggml.model", "rwkv")
    w.add_array("tokenizer.ggml.tokens", ["<s>"] + [escape_rwkv_token(t) for t in tokens[1:]] + ["[PAD270]"])
    w.add_array("tokenizer.ggml.token_type", [3] + [1] * (len(tokens) - 1) + [5])
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_ti_data_to_file()
    w.close()


def _write_all_types(path: Path) -> None:
    """Every GGUF metadata value type, a nested array and tensors of several types."""
    import gguf

    w = gguf.GGUFWriter(str(path), "rwkv7")
    w.add_uint8("t.u8", 200)
    w.add_int8("t.i8", -100)
    w.add_uint16("t.u16", 60000)
    w.add_int16("t.i16", -30000)
    w.add_uint32("t.u32", 4000000000)
    w.add_int32("t.i32", -2000000000)
    w.add_float32("t.f32", 1.5)
    w.add_bool("t.bool", True)
    w.add_string("t.str", "héllo")
    w.add_uint64("t.u64", 2**63 + 5)
    w.add_int64("t.i64", -(2**62))
    w.add_float64("t.f64", -2.25)
    w.add_array("t.arr_i", [1, 2, 3])
    w.add_array("t.arr_s", ["a", "bc", ""])
    w.add_array("t.arr_nested", [[1, 2], [3]])
    w.add_tensor("a", np.arange(12, dtype=np.float32).reshape(3, 4))
    w.add_tensor("b", np.ones((2, 32), dtype=np.float16))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def _write_rwkvcpp(folder: Path) -> list[Path]:
    """rwkv.cpp v7 .bin files of the tiny model, written as rwkv.cpp's converter lays them out."""
    import struct

    sd = tiny_state_dict()
    out = []
    for dtype, name in ((0, "fp32"), (1, "fp16"), (9, "q8_0")):
        blob = bytearray(struct.pack("<6i", 0x67676D66, 101, TINY["n_vocab"], TINY["n_embd"], TINY["n_layer"],
                                     dtype))
        # The same transforms rwkv.cpp's converter applies (file-formats.md §1.3), in reverse of
        # tests/conftest.py read_rwkvcpp_bin.
        items: list[tuple[str, np.ndarray]] = []
        for i in range(TINY["n_layer"]):
            b = f"blocks.{i}.att."
            items.append((b + "x_rwkvag", np.concatenate([sd[f"{b}x_{c}"] for c in "rwkvag"]).reshape(6, 1, -1)))
        for k, a in sd.items():
            last = k.split(".")[-1]
            if k.endswith(tuple(f"att.x_{c}" for c in "rwkvag")):
                continue
            if last in ("w1", "w2", "a1", "a2", "v1", "v2", "g1", "g2"):
                a = a.T.copy()
            elif last in ("w0", "a0", "v0", "k_k", "k_a", "x_k"):
                a = a.reshape(-1)
            items.append((k, a))
        for k, a in items:
            t = 0
            data = a.astype(np.float32).tobytes()
            if a.ndim == 2 and dtype == 1:
                t, data = 1, a.astype(np.float16).tobytes()
            elif a.ndim == 2 and dtype == 9 and a.shape[1] % 32 == 0:
                from rwkvchat.quant_numpy import quantize_blocks

                t, data = 9, bytes(quantize_blocks(8, a.astype(np.float32)))
            key = k.encode()
            ne = tuple(reversed(a.shape))
            blob += struct.pack("<3i", len(ne), len(key), t) + struct.pack(f"<{len(ne)}i", *ne) + key + data
        p = folder / f"tiny-{name}.bin"
        p.write_bytes(bytes(blob))
        out.append(p)
    return out


def _write_pth(folder: Path) -> list[Path]:
    import torch

    sd = tiny_state_dict()
    out = []
    p = folder / "tiny.pth"
    torch.save({k: torch.from_numpy(v).to(torch.bfloat16) for k, v in sd.items()}, p)
    out.append(p)
    # A minimal one too: mutations of a small zip reach the zip and pickle readers faster.
    p = folder / "small.pth"
    torch.save({"emb.weight": torch.ones(2, 3), "blocks.0.ln1.weight": torch.zeros(3, dtype=torch.float16)}, p)
    out.append(p)
    return out


def _write_state(folder: Path) -> list[Path]:
    """A saved conversation of a short chat on the tiny bytes-tokenizer model. The model goes next to the
    folder (folder/../state-model.gguf), not into it: the harness resumes into it (FUZZ_MODEL)."""
    from rwkvchat.model import Model
    from rwkvchat.session import Session

    model = write_tiny_model(folder.parent / "state-model.gguf", "f32", tokenizer="bytes", n_vocab=256)
    with Model(model, threads=1) as m:
        s = Session(m, seed=0)
        s.params = s.params.replace(max_tokens=3)
        for _ in s.prime():
            pass
        for _ in s.send("hello"):
            pass
        s.save(folder / "saved.npz")
    return [folder / "saved.npz"]


def write_seeds(kind: str, folder: str | os.PathLike[str]) -> list[Path]:
    """Writes the seed files of one kind into folder (created) and returns their paths."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    if kind == "gguf":
        paths = [write_tiny_model(folder / "tiny-f32.gguf"), write_tiny_model(folder / "tiny-f16.gguf", "f16")]
        vocab = folder / "vocab.txt.tmp"
        vocab.write_text(vocab_text(tiny_vocab(12)), encoding="utf-8")
        paths.append(write_tiny_model(folder / "tiny-world.gguf", "f16", tokenizer=str(vocab), n_vocab=280))
        vocab.unlink()
        paths.append(write_tiny_model(folder / "tiny-bytes.gguf", "q8_0", tokenizer="bytes", n_vocab=256,
                                      n_embd=32, head_size=16))
        paths += _write_legacy(folder)
        _write_tokenizer_only(folder / "tokenizer.gguf")
        _write_all_types(folder / "all-types.gguf")
        return paths + [folder / "tokenizer.gguf", folder / "all-types.gguf"]
    if kind == "vocab":
        p = folder / "vocab.txt"
        p.write_text(vocab_text(tiny_vocab(12)), encoding="utf-8")
        q = folder / "vocab-bytes.txt"
        q.write_text('1 b"\\xff" 1\n2 "\\u4f60" 3\n3 \'a\\\'b\' 3\n', encoding="utf-8")
        return [p, q, _write_hf_json(folder / "tokenizer.json")]
    if kind == "rwkvcpp":
        return _write_rwkvcpp(folder)
    if kind == "pth":
        return _write_pth(folder)
    if kind == "state":
        return _write_state(folder)
    raise ValueError(f"unknown seed kind {kind!r}")


if __name__ == "__main__":
    # python fuzz/seeds.py KIND FOLDER
    for p in write_seeds(sys.argv[1], sys.argv[2]):
        print(p, p.stat().st_size)
