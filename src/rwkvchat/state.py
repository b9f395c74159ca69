"""Snapshots of a conversation and the saved-conversation file (its streamed history: history.py).

A Snapshot is what generation reads to go on from a point: the recurrent state, the logits of the
last token fed, and (bounded) token bookkeeping. It deliberately does not keep the whole token list:
a long chat must not grow memory per snapshot, and nothing downstream needs old tokens (penalties
start empty each reply; a resume on another model re-feeds the transcript text instead).

A conversation file is an uncompressed .npz holding, per snapshot, `<name>.state` (float32[state_len]),
`<name>.logits` (float32[n_vocab]), and one UTF-8 JSON document `meta` with the format version, the
model fingerprint, snapshot bookkeeping, transcript and settings. It is written to a temporary file
in the same folder, fsynced, then renamed over the old one, so a crash never leaves half a file.

The token ids and the transcript live beside it in `NAME.tokens` and `NAME.jsonl` (history.py):
memory holds neither in full. `meta.tokens` and `meta.transcript_log` say how much of each file the
save covers, so a crash between the writes is detected and repaired on load.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .errors import StateMismatchError
from .history import replay_transcript, temp_beside, transcript_path

__all__ = [
    "FORMAT_VERSION",
    "Conversation",
    "Snapshot",
    "load_conversation",
    "save_conversation",
]

FORMAT_VERSION = 1
_MAGIC = "rwkvchat-conversation"


@dataclass
class Snapshot:
    """(state, last logits, token bookkeeping): everything the next generation step reads.

    state: the engine's State object (anything with .copy()); owned by the snapshot.
    logits: float32[n_vocab], the logits after the last token fed.
    n_tokens: how many tokens the state has seen (for /stats and context length).
    last_token: the last token fed, or None (the CJK anti-doubling rule reads it).
    fed: the ids fed since the token log last recorded this snapshot's history (so the first
        n_tokens - len(fed) ids are on the log), or None when the history is not tracked (free generation).
    """

    state: Any
    logits: np.ndarray
    n_tokens: int = 0
    last_token: int | None = None
    fed: list[int] | None = None

    def copy(self) -> Snapshot:
        """A deep copy: forward() changes a state in place, so every branch point needs its own."""
        fed = None if self.fed is None else list(self.fed)
        return Snapshot(self.state.copy(), self.logits.copy(), self.n_tokens, self.last_token, fed)

    def record(self, tokens: list[int]) -> None:
        """Notes ids just fed (when tracked); n_tokens is advanced by the caller."""
        if self.fed is not None:
            self.fed.extend(int(t) for t in tokens)

    @property
    def base(self) -> int:
        """How many leading ids of this snapshot's history the token log already holds."""
        return self.n_tokens - len(self.fed or ())


@dataclass
class Conversation:
    """The contents of a saved conversation file, in plain numpy/JSON values.

    snapshots: name -> (state float32[state_len], logits float32[n_vocab], n_tokens, last_token).
    transcript: list of {"role": "user"|"assistant"|"gen", "text": str, ...}; saved in NAME.jsonl when
        transcript_log is set (then the .npz's own `transcript` is empty), inline in older files.
    settings: free-form JSON (preset, template, sampling, think mode).
    """

    fingerprint: str
    snapshots: dict[str, tuple[np.ndarray, np.ndarray, int, int | None]] = field(default_factory=dict)
    transcript: list[dict[str, Any]] = field(default_factory=list)
    settings: dict[str, Any] = field(default_factory=dict)
    tokens: dict[str, int] | None = None  # {"count", "offset", "crc"} of NAME.tokens; None: no token log.
    transcript_log: dict[str, int] | None = None  # {"bytes", "crc"} of NAME.jsonl; None: transcript inline.


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
    if conv.tokens is not None:
        meta["tokens"] = {k: int(v) for k, v in conv.tokens.items()}
    if conv.transcript_log is not None:
        meta["transcript_log"] = {k: int(v) for k, v in conv.transcript_log.items()}
    arrays: dict[str, np.ndarray] = {
        "meta": np.frombuffer(json.dumps(meta, ensure_ascii=False).encode("utf-8"), dtype=np.uint8),
    }
    for name, (state, logits, _, _) in conv.snapshots.items():
        arrays[f"{name}.state"] = np.ascontiguousarray(state, dtype=np.float32).reshape(-1)
        arrays[f"{name}.logits"] = np.ascontiguousarray(logits, dtype=np.float32).reshape(-1)
    fd, tmp = temp_beside(path)
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


def _read_members(path: Path) -> dict[str, Any]:
    """The arrays of an .npz; any failure of the zip/npy readers means "not a conversation file".

    The readers raise many types on damaged input (EOFError, BadZipFile, NotImplementedError for an
    unknown compression, RuntimeError for an encrypted member...), so everything but a missing file
    becomes one StateMismatchError here.
    """
    try:
        z = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise
    except Exception as e:  # noqa: BLE001 - see the docstring.
        raise StateMismatchError(f"{path} is not a rwkvchat conversation file ({type(e).__name__})") from None
    if not isinstance(z, np.lib.npyio.NpzFile):
        raise StateMismatchError(f"{path} is not a rwkvchat conversation file (a single array, not .npz)")
    try:
        with z:
            return {k: z[k] for k in z.files}
    except Exception as e:  # noqa: BLE001 - see the docstring.
        raise StateMismatchError(f"{path} is not a rwkvchat conversation file ({type(e).__name__})") from None


def _snapshot(path: Path, data: dict[str, Any], name: str, info: Any) -> tuple[Any, ...]:
    """(state, logits, n_tokens, last_token) of one saved snapshot, checked for type and shape."""
    state, logits = data.get(f"{name}.state"), data.get(f"{name}.logits")
    n, last = (info.get("n_tokens"), info.get("last_token")) if isinstance(info, dict) else (None, None)
    ok = (
        isinstance(state, np.ndarray)
        and isinstance(logits, np.ndarray)
        and state.ndim == 1
        and logits.ndim == 1
        and state.dtype.kind == "f"
        and logits.dtype.kind == "f"
        and type(n) is int
        and n >= 0
        and (last is None or (type(last) is int and last >= 0))
    )
    if not ok:
        raise StateMismatchError(f"{path}: snapshot {name!r} is incomplete or malformed")
    return state.astype(np.float32, copy=False), logits.astype(np.float32, copy=False), n, last


def load_conversation(path: str | os.PathLike[str]) -> Conversation:
    """Reads a conversation file; raises StateMismatchError when it is not one or has another version.

    Nothing in the file is trusted: every member and JSON field is checked for its type, so a damaged
    or foreign file gives one StateMismatchError, never another exception.
    """
    path = Path(path)
    data = _read_members(path)
    try:
        raw = data.pop("meta")
        if not isinstance(raw, np.ndarray) or raw.dtype != np.uint8:
            raise ValueError("meta is not bytes")
        meta = json.loads(raw.tobytes().decode("utf-8"))
        if not isinstance(meta, dict) or meta.get("magic") != _MAGIC:
            raise ValueError("wrong magic")
    except (KeyError, ValueError, UnicodeDecodeError):
        raise StateMismatchError(f"{path} is not a rwkvchat conversation file") from None
    if meta.get("format_version") != FORMAT_VERSION:
        raise StateMismatchError(
            f"{path} has format version {meta.get('format_version')}; "
            f"this rwkvchat reads version {FORMAT_VERSION}"
        )
    fields = {k: meta.get(k, d) for k, d in (("snapshots", {}), ("transcript", []), ("settings", {}))}
    if not (
        isinstance(fields["snapshots"], dict)
        and isinstance(fields["transcript"], list)
        and isinstance(fields["settings"], dict)
    ):
        raise StateMismatchError(f"{path}: malformed conversation metadata")
    snaps = {str(name): _snapshot(path, data, name, info) for name, info in fields["snapshots"].items()}
    log = meta.get("transcript_log") if isinstance(meta.get("transcript_log"), dict) else None
    transcript = fields["transcript"]
    if log is not None:
        # A transcript log that does not match its save reads as empty; resuming says so.
        transcript = replay_transcript(transcript_path(path), log) or []
    # Only well-formed entries survive: the session reads role and text as strings.
    transcript = [
        t
        for t in transcript
        if isinstance(t, dict) and isinstance(t.get("role"), str) and isinstance(t.get("text"), str)
    ]
    return Conversation(
        str(meta.get("fingerprint", "")),
        snaps,  # type: ignore[arg-type]
        transcript,
        fields["settings"],
        meta.get("tokens") if isinstance(meta.get("tokens"), dict) else None,
        log,
    )
