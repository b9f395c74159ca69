"""Tokenizers for RWKV models (World, 20B via HF `tokenizers`, bytes) and an incremental UTF-8 decoder.

Three vocabularies cover every public RWKV checkpoint (docs/tokenizers.md): the World vocabulary
(65536 rows, greedy longest match over bytes, encoded by the C trie in the native library), the
GPT-NeoX "20B" byte-level BPE of RWKV-4 Pile/Raven (50277 rows, the `tokenizers` package) and raw
bytes for tiny test models (256 rows). The vocabulary travels inside the GGUF file in llama.cpp's
layout: `gguf_tokenizer_fields` makes the metadata at convert time, `tokenizer_from_model` reads it back.

Modules: `base` (Tokenizer, ByteTokenizer, StreamDecoder), `world` (World trie and vocabulary file),
`hf` (tokenizer.json), `sources` (finding vocabularies in installed packages), `gguf_meta` (GGUF keys).
"""

from __future__ import annotations

from .base import ByteTokenizer, StreamDecoder, Tokenizer
from .gguf_meta import escape_rwkv_token, gguf_tokenizer_fields, tokenizer_from_model, unescape_rwkv_token
from .hf import N_20B_VOCAB, HFTokenizer
from .sources import find_20b_tokenizer, find_world_vocab, load_world_vocab
from .world import WORLD_EOT_ID, WORLD_N_VOCAB, WORLD_VOCAB_NAME, WorldTokenizer, parse_world_vocab

__all__ = [
    "N_20B_VOCAB",
    "WORLD_EOT_ID",
    "WORLD_N_VOCAB",
    "WORLD_VOCAB_NAME",
    "ByteTokenizer",
    "HFTokenizer",
    "StreamDecoder",
    "Tokenizer",
    "WorldTokenizer",
    "escape_rwkv_token",
    "find_20b_tokenizer",
    "find_world_vocab",
    "gguf_tokenizer_fields",
    "load_world_vocab",
    "parse_world_vocab",
    "tokenizer_from_model",
    "unescape_rwkv_token",
]
