"""Tokenizer metadata in GGUF (llama.cpp's layout): written by convert, read back by Model.tokenizer.

docs/file-formats.md §2.3: World files carry tokenizer.ggml.model "rwkv" and 65536 token texts (entry 0
"<s>", then the vocabulary escaped as Python bytes reprs, then "[PAD<i>]"), so llama.cpp loads them too.
HF tokenizers travel whole as tokenizer.huggingface.json; the bytes tokenizer is one key.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import TokenizerError
from .base import ByteTokenizer, Tokenizer
from .hf import N_20B_VOCAB, HFTokenizer
from .sources import _CACHE_LOCK, _file_key, find_20b_tokenizer, find_world_vocab, load_world_vocab
from .world import WORLD_EOT_ID, WORLD_N_VOCAB, WORLD_VOCAB_NAME, WorldTokenizer

# GGUF token types (llama.cpp's llama_token_type).
_TT_NORMAL, _TT_CONTROL, _TT_UNUSED = 1, 3, 5


def escape_rwkv_token(token: bytes) -> str:
    """llama.cpp's token text: the Python bytes repr without b'...' (ASCII, never invalid UTF-8)."""
    return repr(token)[2:-1]


_ESCAPE = re.compile(rb"\\(x[0-9a-fA-F]{2}|[^x]|x|\Z)", re.DOTALL)
_SIMPLE_ESCAPES = {b"t": b"\t", b"n": b"\n", b"r": b"\r", b"": b""}


def _unescape_match(m: re.Match[bytes]) -> bytes:
    code = m.group(1)
    if code == b"x":
        raise TokenizerError(f"malformed \\x escape in token text {m.string[:60]!r}")
    if code[:1] == b"x":
        return bytes([int(code[1:], 16)])
    return _SIMPLE_ESCAPES.get(code, code)


def unescape_rwkv_token(text: str | bytes) -> bytes:
    """Inverse of escape_rwkv_token as llama.cpp reads it: \\t \\n \\r \\xNN, and \\c -> c for other c."""
    raw = text.encode("utf-8", errors="surrogateescape") if isinstance(text, str) else bytes(text)
    if b"\\" not in raw:
        return raw
    return _ESCAPE.sub(_unescape_match, raw)


# ---- Tokenizer metadata in GGUF: written by convert, read by Model.tokenizer ----

# Tokenizers read from model files, keyed by (real path, mtime, size): 65536 strings are parsed once.
_MODEL_CACHE: dict[tuple[str, int, int], Tokenizer] = {}

_KEY_MODEL = "tokenizer.ggml.model"
_KEY_TOKENS = "tokenizer.ggml.tokens"
_KEY_TYPES = "tokenizer.ggml.token_type"
_KEY_HF_JSON = "tokenizer.huggingface.json"
_BYTES_MODEL = "rwkvchat-bytes"


def gguf_tokenizer_fields(spec: str | None, n_vocab: int) -> tuple[str, dict[str, object]]:
    """Chooses the tokenizer for a model of `n_vocab` rows and returns (description, GGUF metadata).

    spec: None or "auto" (choose by n_vocab: 65536 World, 50277 20B, 256 bytes), "world", "20b", "bytes", "none"
    (write no tokenizer), or a path to a World vocabulary (.txt) or a tokenizer.json. The dict maps GGUF
    keys to python values: str -> string, int -> uint32, list[str] -> string array,
    list[int] -> int32 array.
    World uses llama.cpp's exact layout so the file also works there.
    """
    if spec is None or spec.lower() == "auto":
        choice = {WORLD_N_VOCAB: "world", N_20B_VOCAB: "20b", 256: "bytes"}.get(n_vocab)
        if choice is None:
            raise TokenizerError(f"cannot tell the tokenizer of a model with {n_vocab} vocabulary rows: pass "
                                 "--tokenizer world|20b|bytes|none|PATH")
        spec = choice
    low = spec.lower()
    if low == "none":
        return "none (the file carries no tokenizer)", {}
    if low == "bytes":
        if n_vocab < 256:
            raise TokenizerError(f"the bytes tokenizer needs 256 vocabulary rows, the model has {n_vocab}")
        return ByteTokenizer.description, {_KEY_MODEL: _BYTES_MODEL}
    if low == "world":
        tokens = load_world_vocab(find_world_vocab())
        return _world_fields(tokens, n_vocab, f"World ({WORLD_VOCAB_NAME}, {n_vocab} tokens)")
    if low == "20b":
        return _hf_fields(_read_text(find_20b_tokenizer()), n_vocab, "20B (GPT-NeoX BPE, {n} tokens)")
    path = Path(spec)
    if not path.is_file():
        raise TokenizerError(f"--tokenizer {spec!r}: expected world, 20b, bytes, none or a file path "
                             "(no such file)")
    text = _read_text(path)
    if text.lstrip().startswith("{"):
        return _hf_fields(text, n_vocab, f"HF tokenizer.json from {path} ({{n}} tokens)")
    description = f"World (vocabulary from {path}, {n_vocab} tokens)"
    return _world_fields(load_world_vocab(path), n_vocab, description)


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise TokenizerError(f"cannot read {path}: {e}") from e


def _world_fields(tokens: list[bytes], n_vocab: int, description: str) -> tuple[str, dict[str, object]]:
    if n_vocab < len(tokens):
        raise TokenizerError(f"the World vocabulary has {len(tokens)} ids but the model only {n_vocab} rows")
    # llama.cpp's layout: entry 0 "<s>" (CONTROL), the escaped file tokens, then "[PAD<i>]" (UNUSED).
    texts = ["<s>"] + [escape_rwkv_token(t) for t in tokens[1:]]
    types = [_TT_CONTROL] + [_TT_NORMAL] * (len(tokens) - 1)
    texts += [f"[PAD{i}]" for i in range(len(tokens), n_vocab)]
    types += [_TT_UNUSED] * (n_vocab - len(tokens))
    fields: dict[str, object] = {
        _KEY_MODEL: "rwkv",
        _KEY_TOKENS: texts,
        _KEY_TYPES: types,
        "tokenizer.ggml.bos_token_id": 0,
        "tokenizer.ggml.eos_token_id": 0,
        "tokenizer.ggml.eot_token_id": WORLD_EOT_ID,
        "tokenizer.chat_template": "rwkv-world",
    }
    return description, fields


def _hf_fields(json_text: str, n_vocab: int, description: str) -> tuple[str, dict[str, object]]:
    # The whole tokenizer.json travels in the file (our reader uses it); tokens, types and merges follow
    # llama.cpp's "gpt2" keys so other tools can at least list the vocabulary.
    tok = HFTokenizer(json_text, n_vocab)
    special = tok.special_ids
    texts: list[str] = []
    types: list[int] = []
    for i in range(n_vocab):
        s = tok.id_to_token(i) if i < tok.vocab_size else None
        texts.append(s if s is not None else f"[PAD{i}]")
        types.append(_TT_UNUSED if s is None else (_TT_CONTROL if i in special else _TT_NORMAL))
    fields: dict[str, object] = {
        _KEY_MODEL: "gpt2",
        _KEY_TOKENS: texts,
        _KEY_TYPES: types,
        _KEY_HF_JSON: json_text,
    }
    merges = tok.merges()
    if merges:
        fields["tokenizer.ggml.merges"] = merges
    if tok.eos_id is not None:
        fields["tokenizer.ggml.eos_token_id"] = tok.eos_id
    return description.format(n=n_vocab), fields


def tokenizer_from_model(model: Any) -> Tokenizer:
    """The tokenizer carried by a loaded model's GGUF metadata (World tokenizers cached per file).

    `model` needs `metadata_value(key)` (str/bytes/int/list or None) and `n_vocab`; a `path` attribute
    enables the per-file cache.
    """
    n_vocab = int(model.n_vocab)
    kind = _as_str(model.metadata_value(_KEY_MODEL))
    if kind is None:
        if n_vocab == 256:
            return ByteTokenizer(256)
        raise TokenizerError("this model file carries no tokenizer; reconvert with --tokenizer")
    if kind == _BYTES_MODEL:
        # Every byte value is a token id, so a model with fewer rows cannot take what this encodes.
        if n_vocab < 256:
            raise TokenizerError(f"this model file declares a byte tokenizer (256 ids) but has only {n_vocab} "
                                 "vocabulary rows; reconvert with --tokenizer")
        return ByteTokenizer(n_vocab)
    if kind == "rwkv":
        return _cached(model, lambda: _world_from_model(model, n_vocab))
    if kind == "gpt2":
        json_text = _as_str(model.metadata_value(_KEY_HF_JSON))
        if json_text is None:
            raise TokenizerError("this model file has a gpt2 vocabulary without tokenizer.huggingface.json; "
                                 "reconvert with --tokenizer")
        return _cached(model, lambda: _hf_from_json(json_text, n_vocab))
    raise TokenizerError(f"unsupported tokenizer {kind!r} in the model file; reconvert with --tokenizer")


def _hf_from_json(json_text: str, n_vocab: int) -> HFTokenizer:
    desc = "20B (GPT-NeoX BPE, 50277 tokens)" if n_vocab == N_20B_VOCAB else ""
    return HFTokenizer(json_text, n_vocab, description=desc)


def _as_str(value: object) -> str | None:
    if isinstance(value, (bytes, bytearray)):
        return bytes(value).decode("utf-8", errors="replace")
    return value if isinstance(value, str) or value is None else str(value)


def _cached(model: Any, build: Any) -> Tokenizer:
    path = getattr(model, "path", None)
    try:
        key = _file_key(path) if path is not None else None
    except OSError:
        key = None
    if key is not None:
        with _CACHE_LOCK:
            if key in _MODEL_CACHE:
                return _MODEL_CACHE[key]
    tok: Tokenizer = build()
    if key is not None:
        with _CACHE_LOCK:
            _MODEL_CACHE[key] = tok
    return tok


def _world_from_model(model: Any, n_vocab: int) -> WorldTokenizer:
    texts = model.metadata_value(_KEY_TOKENS)
    if not isinstance(texts, (list, tuple)) or not texts:
        raise TokenizerError(f"model file: {_KEY_TOKENS} is missing or not an array")
    types = model.metadata_value(_KEY_TYPES)
    if types is not None and (not isinstance(types, (list, tuple, np.ndarray)) or len(types) != len(texts)):
        raise TokenizerError(f"model file: {_KEY_TYPES} has a different length than {_KEY_TOKENS}")
    tokens: list[bytes] = []
    for i, text in enumerate(texts):
        # Control and unused entries ("<s>", "[PAD<i>]") are never produced by encoding.
        if types is not None:
            skip = int(types[i]) in (_TT_CONTROL, _TT_UNUSED)
        else:
            skip = i == 0 or _as_str(text) == f"[PAD{i}]"
        try:
            tokens.append(b"" if skip else unescape_rwkv_token(text))
        except TokenizerError as e:
            raise TokenizerError(f"model file: token {i}: {e}") from e
    while tokens and not tokens[-1]:
        tokens.pop()
    if len(tokens) > n_vocab:
        raise TokenizerError(f"model file: {len(tokens)} tokens but only {n_vocab} vocabulary rows")
    singles = {t for t in tokens if len(t) == 1}
    missing = [b for b in range(256) if bytes([b]) not in singles]
    if missing:
        raise TokenizerError(f"model file: the World vocabulary lacks the single byte 0x{missing[0]:02x}")
    name = WORLD_VOCAB_NAME if len(tokens) == 65530 else "vocabulary from the model file"
    return WorldTokenizer(tokens, n_vocab, description=f"World ({name}, {n_vocab} tokens)")
