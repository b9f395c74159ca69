"""atheris harness: tokenizer vocabulary data from outside: World vocabulary files, GGUF token texts and
tokenizer.json (tokenizer.huggingface.json in GGUF files).

- parse_world_vocab(bytes) must return a token list or raise TokenizerError (never SyntaxError,
  ValueError, MemoryError, RecursionError...); a parsed vocabulary must build a WorldTokenizer (native trie
  and pure Python) that encodes text to the same ids in both, and ids decode back to the text's bytes.
- unescape_rwkv_token(text) on the same bytes (as llama.cpp-escaped token text) raises only TokenizerError,
  and round-trips: unescape(escape(b)) == b.
- HFTokenizer(text) raises only TokenizerError; one that builds encodes and decodes without error.
"""

from __future__ import annotations

import importlib
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _harness import main

_TEXT = "Hello world\n\nthe hello 你好 \x00\x7f"


def _imports() -> None:
    for name in ("rwkvchat.tokenizer",):
        importlib.import_module(name)


def check(data: bytes) -> None:
    from rwkvchat.errors import TokenizerError
    from rwkvchat.tokenizer import WorldTokenizer, escape_rwkv_token, parse_world_vocab, unescape_rwkv_token

    # GGUF token texts: any bytes, as str (surrogateescape, as Model._meta_strings decodes them) and as bytes.
    for text in (data[:256], data[:256].decode("utf-8", "surrogateescape")):
        try:
            unescape_rwkv_token(text)
        except TokenizerError:
            pass
    raw = data[:64]
    assert unescape_rwkv_token(escape_rwkv_token(raw)) == raw, raw

    if data.lstrip()[:1] == b"{":
        _check_hf(data)
        return
    try:
        tokens = parse_world_vocab(data)
    except TokenizerError:
        return
    assert tokens[0] == b"" and all(isinstance(t, bytes) and t for t in tokens[1:])
    native = WorldTokenizer(tokens, native=True)
    python = WorldTokenizer(tokens, native=False)
    text = _TEXT + data[:64].decode("utf-8", "replace")
    try:
        ids = python.encode(text)
    except TokenizerError:
        # A vocabulary without every single byte cannot encode every text: the native trie must agree.
        try:
            native.encode(text)
        except TokenizerError:
            return
        raise AssertionError("the native trie encoded a text the Python matcher refused") from None
    assert native.encode(text) == ids
    assert python.decode_bytes(ids) == text.encode("utf-8", "surrogateescape")


def _check_hf(data: bytes) -> None:
    from rwkvchat.errors import TokenizerError
    from rwkvchat.tokenizer import HFTokenizer

    try:
        tok = HFTokenizer(data.decode("utf-8", "replace"))
    except TokenizerError:
        return
    ids = tok.encode(_TEXT)
    assert all(0 <= i < tok.n_vocab for i in ids), ids
    tok.decode(ids)
    tok.decode(list(range(min(tok.n_vocab, 300))))
    tok.banned_ids()


if __name__ == "__main__":
    main(check, _imports)
