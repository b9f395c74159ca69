"""Snapshots of a conversation and the saved-conversation file.

A Snapshot is what generation reads to go on from a point: the recurrent state, the logits of the
last token fed, and (bounded) token bookkeeping. It deliberately does not keep the whole token list:
a long chat must not grow memory per snapshot, and nothing downstream needs old tokens (penalties
start empty each reply; a resume on another model re-feeds the transcript text instead).

A conversation file is an uncompressed .npz holding, per snapshot, `<name>.state` (float32[state_len]),
`<name>.logits` (float32[n_vocab]), and one UTF-8 JSON document `meta` with the format version, the
model fingerprint, snapshot bookkeeping, transcript and settings. It is written to a temporary file
in the same folder, fsynced, then renamed over the old one, so a crash never leaves half a file.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .errors import StateMismatchError

__all__ = ["FORMAT_VERSION", "Conversation", "Snapshot", "load_conversation", "save_conversation"]

FORMAT_VERSION = 1
_MAGIC = "rwkvchat-conversation"


@dataclass
class Snapshot:
    """(state, last logits, token bookkeeping): everything the next generation step reads.

    state: the engine's State object (anything with .copy()); owned by the snapshot.
    logits: float32[n_vocab], the logits after the last token fed.
    n_tokens: how many tokens the state has seen (for /stats and context length).
    last_token: the last token fed, or None (the CJK anti-doubling rule reads it).
    """

    state: Any
    logits: np.ndarray
    n_tokens: int = 0
    last_token: int | None = None

    def copy(self) -> Snapshot:
        """A deep copy: forward() changes a state in place, so every branch point needs its own."""
        return Snapshot(self.state.copy(), self.logits.copy(), self.n_tokens, self.last_token)


@dataclass
class Conversation:
    """The contents of a saved conversation file, in plain numpy/JSON values.

    snapshots: name -> (state float32[state_len], logits float32[n_vocab], n_tokens, last_token).
    transcript: list of {"role": "user"|"assistant"|"gen", "text": str, ...}.
    settings: free-form JSON (preset, template, sampling, think mode).
    """

    fingerprint: str
    snapshots: dict[str, tuple[np.ndarray, np.ndarray, int, int | None]] = field(default_factory=dict)
    transcript: list[dict[str, Any]] = field(default_factory=list)
    settings: dict[str, Any] = field(default_factory=dict)


def save_conversation(path: str | os.PathLike[str], conv: Conversation) -> None:
    """Writes `conv` atomically (temp file, fsync, rename); creates the folder if needed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = {
        "magic": _MAGIC,
        "format_version": FORMAT_VERSION,
        "fingerprint": conv.fingerprint,
        "snapshots": {
            name: {"n_tokens": int(n), "last_token": None if last is None else int(last)}
            for name, (_, _, n, last) in conv.snapshots.items()
        },
        "transcript": conv.transcript,
        "settings": conv.settings,
    }
    arrays: dict[str, np.ndarray] = {
        "meta": np.frombuffer(json.dumps(meta, ensure_ascii=False).encode("utf-8"), dtype=np.uint8),
    }
    for name, (state, logits, _, _) in conv.snapshots.items():
        arrays[f"{name}.state"] = np.ascontiguousarray(state, dtype=np.float32).reshape(-1)
        arrays[f"{name}.logits"] = np.ascontiguousarray(logits, dtype=np.float32).reshape(-1)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def load_conversation(path: str | os.PathLike[str]) -> Conversation:
    """Reads a conversation file; raises StateMismatchError when it is not one or has another version."""
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as z:
            data = {k: z[k] for k in z.files}
    except FileNotFoundError:
        raise
    except (OSError, ValueError) as e:
        raise StateMismatchError(f"{path} is not a rwkvchat conversation file ({e})") from None
    try:
        meta = json.loads(bytes(data.pop("meta")).decode("utf-8"))
        if meta.get("magic") != _MAGIC:
            raise ValueError("wrong magic")
    except (KeyError, ValueError, UnicodeDecodeError):
        raise StateMismatchError(f"{path} is not a rwkvchat conversation file") from None
    if meta.get("format_version") != FORMAT_VERSION:
        raise StateMismatchError(
            f"{path} has format version {meta.get('format_version')}; "
            f"this rwkvchat reads version {FORMAT_VERSION}"
        )
    snaps: dict[str, tuple[np.ndarray, np.ndarray, int, int | None]] = {}
    for name, info in meta.get("snapshots", {}).items():
        try:
            snaps[name] = (
                data[f"{name}.state"],
                data[f"{name}.logits"],
                int(info["n_tokens"]),
                info["last_token"],
            )
        except KeyError:
            raise StateMismatchError(f"{path}: snapshot {name!r} is incomplete") from None
    return Conversation(
        str(meta.get("fingerprint", "")),
        snaps,
        list(meta.get("transcript", [])),
        dict(meta.get("settings", {})),
    )
