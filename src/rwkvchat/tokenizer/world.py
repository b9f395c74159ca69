"""The RWKV World tokenizer (greedy longest match over bytes, docs/tokenizers.md §1) and its vocabulary file.

Encoding runs in the C trie of the native library (tens of MB/s); a pure-Python matcher is the
fallback when the library cannot be loaded and the cross-check in tests.
"""

from __future__ import annotations

import ast
import ctypes

import numpy as np

from ..errors import RwkvchatError, TokenizerError
from .base import Tokenizer, _utf8

WORLD_VOCAB_NAME = "rwkv_vocab_v20230424"
WORLD_N_VOCAB = 65536     # Model rows; the file has ids 1..65529, 0 is <|endoftext|>, the rest padding.
WORLD_EOT_ID = 261        # "\n\n": llama.cpp's chat-stopping EOT token.


class _NativeTrie:
    """The C greedy longest-match encoder (rwkvc_tokenizer_*), owned and freed with this object."""

    def __init__(self, tokens: list[bytes]) -> None:
        from .. import _native  # Imported late so that the pure-Python parts work without the library.

        self._lib = _native.lib()
        self._check = _native.check
        # One buffer holding every token back to back; the C side copies what it needs during the call.
        blob = np.frombuffer(b"".join(tokens) or b"\0", dtype=np.uint8)
        lens = np.array([len(t) for t in tokens], dtype=np.uintp)
        offsets = np.concatenate(([0], np.cumsum(lens)[:-1])).astype(np.uintp)
        ptrs = offsets + np.uintp(blob.ctypes.data)
        handle = ctypes.c_void_p()
        u8pp = ctypes.POINTER(ctypes.POINTER(ctypes.c_uint8))
        self._check(self._lib.rwkvc_tokenizer_new(ptrs.ctypes.data_as(u8pp),
                                                  lens.ctypes.data_as(ctypes.POINTER(ctypes.c_size_t)),
                                                  len(tokens), ctypes.byref(handle)))
        self._handle = handle

    def encode(self, data: bytes) -> list[int]:
        return self.encode_array(data).tolist()

    def encode_array(self, data: bytes) -> np.ndarray:
        # One id per byte at most (every single byte is a token), so len(data) ids always suffice.
        ids = np.empty(max(len(data), 1), dtype=np.uint32)  # uint32[len(data)]
        text = np.frombuffer(data or b"\0", dtype=np.uint8)
        n = ctypes.c_size_t(0)
        text_p = text.ctypes.data_as(ctypes.POINTER(ctypes.c_uint8))
        ids_p = ids.ctypes.data_as(ctypes.POINTER(ctypes.c_uint32))
        self._check(self._lib.rwkvc_tokenizer_encode(self._handle, text_p, len(data), ids_p, ids.size,
                                                     ctypes.byref(n)))
        return ids[: n.value]

    def __del__(self) -> None:
        handle = getattr(self, "_handle", None)
        if handle is not None and handle.value:
            self._lib.rwkvc_tokenizer_free(handle)
            self._handle = None


class _PyTrie:
    """Pure-Python greedy longest match (a few MB/s): a cross-check for the C trie and a fallback.

    For each two-byte prefix it keeps the token lengths that occur, longest first, and tries slices of
    those lengths against a bytes -> id dict; single bytes are the fallback.
    """

    def __init__(self, tokens: list[bytes]) -> None:
        self._ids: dict[bytes, int] = {}
        lens: dict[bytes, set[int]] = {}
        for i, t in enumerate(tokens):
            if t:
                self._ids[t] = i  # A duplicate keeps the highest id, as the reference code does.
                if len(t) >= 2:
                    lens.setdefault(t[:2], set()).add(len(t))
        self._lens = {k: sorted(v, reverse=True) for k, v in lens.items()}

    def encode(self, data: bytes) -> list[int]:
        out: list[int] = []
        ids, lens = self._ids, self._lens
        p, n = 0, len(data)
        while p < n:
            for length in lens.get(data[p:p + 2], ()):
                i = ids.get(data[p:p + length]) if p + length <= n else None
                if i is not None:
                    out.append(i)
                    p += length
                    break
            else:
                i = ids.get(data[p:p + 1])
                if i is None:
                    raise TokenizerError(f"no token matches byte 0x{data[p]:02x} at offset {p}")
                out.append(i)
                p += 1
        return out


class WorldTokenizer(Tokenizer):
    """RWKV World: greedy longest match over bytes. tokens[i] is the byte string of id i (b"" = never)."""

    kind = "world"

    def __init__(self, tokens: list[bytes], n_vocab: int | None = None, *, native: bool | None = None,
                 description: str = "") -> None:
        if not tokens:
            raise TokenizerError("empty World vocabulary")
        super().__init__(max(n_vocab or 0, len(tokens)))
        self._table = list(tokens)
        self.eos_id = 0 if not tokens[0] else None
        self.description = description or f"World ({len(tokens)} tokens)"
        self._encoder: _NativeTrie | _PyTrie
        if native is False:
            self._encoder = _PyTrie(self._table)
        else:
            try:
                self._encoder = _NativeTrie(self._table)
            except (ImportError, OSError, AttributeError, RwkvchatError):
                if native:
                    raise
                self._encoder = _PyTrie(self._table)

    @property
    def native(self) -> bool:
        """Whether encoding runs in the C library."""
        return isinstance(self._encoder, _NativeTrie)

    def encode(self, text: str) -> list[int]:
        return self.encode_bytes(_utf8(text))

    def encode_bytes(self, data: bytes) -> list[int]:
        """Token ids of a byte string (any bytes: every single byte is a token)."""
        try:
            return self._encoder.encode(bytes(data))
        except TokenizerError:
            raise
        except RwkvchatError as e:
            raise TokenizerError(f"World tokenizer: {e}") from e

    def encode_array(self, data: bytes) -> np.ndarray:
        """Ids of a byte string as uint32[n_tokens]: the fast path for long texts (no list of ints)."""
        if isinstance(self._encoder, _NativeTrie):
            try:
                return self._encoder.encode_array(bytes(data))
            except RwkvchatError as e:
                raise TokenizerError(f"World tokenizer: {e}") from e
        return np.array(self._encoder.encode(bytes(data)), dtype=np.uint32)

    def _bytes_table(self) -> list[bytes]:
        return self._table or []


# ---- The World vocabulary file (docs/tokenizers.md §1.1) ----

def parse_world_vocab(text: str | bytes) -> list[bytes]:
    """Parses an rwkv_vocab_v20230424-style file into tokens[id] (tokens[0] = b"" for <|endoftext|>).

    Lines are `<id> <python str or bytes literal> <byte length>`, LF or CRLF. In a str literal `\\xNN`
    is a code point (the token is its UTF-8), in a bytes literal a raw byte; the length field checks it.
    Ids must run 1, 2, 3... Raises TokenizerError naming the line for anything malformed.
    """
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError as e:
            raise TokenizerError(f"World vocabulary is not UTF-8 text: {e}") from e
    tokens: list[bytes] = [b""]
    for lineno, line in enumerate(text.split("\n"), start=1):
        line = line.rstrip("\r")
        if not line:
            continue
        first, last = line.find(" "), line.rfind(" ")
        if first <= 0 or last <= first:
            raise TokenizerError(f"World vocabulary line {lineno}: expected '<id> <literal> <length>'")
        id_text, literal, len_text = line[:first], line[first + 1:last], line[last + 1:]
        if not (id_text.isascii() and id_text.isdecimal() and len_text.isascii() and len_text.isdecimal()):
            raise TokenizerError(f"World vocabulary line {lineno}: id {id_text!r} or length {len_text!r} "
                                 "is not a number")
        if int(id_text) != len(tokens):
            raise TokenizerError(f"World vocabulary line {lineno}: id {id_text}, expected {len(tokens)}")
        tok = _parse_literal(literal, lineno)
        if not tok:
            raise TokenizerError(f"World vocabulary line {lineno}: empty token")
        if len(tok) != int(len_text):
            raise TokenizerError(f"World vocabulary line {lineno}: token is {len(tok)} bytes, "
                                 f"the length field says {len_text}")
        tokens.append(tok)
    if len(tokens) < 257:
        raise TokenizerError(f"World vocabulary has only {len(tokens) - 1} tokens (at least 256 expected)")
    return tokens


def _parse_literal(literal: str, lineno: int) -> bytes:
    # Most lines are plain quoted strings; only literals with escapes or a b prefix need the parser.
    if len(literal) >= 2 and literal[0] == literal[-1] and literal[0] in "'\"" and "\\" not in literal \
            and literal[0] not in literal[1:-1]:
        return literal[1:-1].encode("utf-8")
    try:
        value = ast.literal_eval(literal)
    except (ValueError, SyntaxError, MemoryError, RecursionError) as e:
        raise TokenizerError(f"World vocabulary line {lineno}: bad literal {literal[:40]!r}: {e}") from e
    if isinstance(value, str):
        try:
            return value.encode("utf-8")
        except UnicodeEncodeError as e:
            raise TokenizerError(f"World vocabulary line {lineno}: {e}") from e
    if isinstance(value, bytes):
        return value
    kind = type(value).__name__
    raise TokenizerError(f"World vocabulary line {lineno}: literal is a {kind}, not str or bytes")
