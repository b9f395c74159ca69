"""The streamed history of a saved conversation: its token ids and its transcript, beside the .npz.

Issue 8 forbids per-token growth in memory, so neither the ids nor the transcript are kept whole:
each lives in a side file written as the chat goes on (an anonymous temporary file until the
session has a name, so a late `/save NAME` still gets everything), and memory holds one turn.

- `NAME.tokens`: uint32 little-endian ids of the `chat` history (TokenLog).
- `NAME.jsonl`: the transcript as an append-only log of edits, one JSON object per line:
  an entry {"role", "text"}, {"op": "replace_last", ...entry} (`+` replaced the last reply) or
  {"op": "clear"} (`+reset`, a new init prompt). Replaying the lines gives the transcript.

The .npz written after them records how much of each file it covers and a CRC-32 of those bytes.
On load, bytes past that (a crash after writing a side file, before the .npz rename) are cut off; a
shorter or different file loses that history with a warning instead of pairing it with the wrong state.
"""

from __future__ import annotations

import glob
import json
import os
import shutil
import tempfile
import zlib
from pathlib import Path
from typing import Any

import numpy as np


def _process_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # EPERM: it exists under another user
        return True
    return True


def temp_beside(path: Path) -> tuple[int, str]:
    """(fd, name) of a new temporary file in path's folder, for writing `path` atomically (write, fsync,
    os.replace). Named .NAME.<pid>.<random>.tmp so that the temporaries a killed save left behind can be told
    from a save in progress: those of NAME whose process no longer exists are removed here first."""
    prefix = f".{path.name}."
    for old in path.parent.glob(f"{glob.escape(prefix)}*.tmp"):
        pid = old.name[len(prefix):].split(".", 1)[0]
        if pid.isdigit() and int(pid) != os.getpid() and not _process_exists(int(pid)):
            try:
                old.unlink()
            except OSError:
                pass
    return tempfile.mkstemp(prefix=f"{prefix}{os.getpid()}.", suffix=".tmp", dir=path.parent)

__all__ = ["TokenLog", "TranscriptLog", "replay_transcript", "tokens_path", "transcript_path"]


def tokens_path(path: str | os.PathLike[str]) -> Path:
    """The token log beside a conversation file: NAME.npz -> NAME.tokens."""
    return Path(path).with_suffix(".tokens")


def transcript_path(path: str | os.PathLike[str]) -> Path:
    """The transcript log beside a conversation file: NAME.npz -> NAME.jsonl."""
    return Path(path).with_suffix(".jsonl")


def _int(meta: dict[str, Any], key: str, default: int) -> int:
    """An integer field of a save's metadata; anything else (the file is not trusted) reads as default."""
    v = meta.get(key, default)
    return v if type(v) is int else default


def _crc_of(f: Any, nbytes: int) -> int:
    """CRC-32 of the first nbytes of an open binary file, read in 64 KiB blocks."""
    f.seek(0)
    crc, left = 0, nbytes
    while left > 0 and (chunk := f.read(min(left, 1 << 16))):
        crc = zlib.crc32(chunk, crc)
        left -= len(chunk)
    return crc


class _SideFile:
    """An open side file (anonymous until bound to a name) and the CRC-32 of its bytes."""

    def __init__(self) -> None:
        self._f: Any = None
        self.path: Path | None = None
        self.crc = 0

    def _file(self) -> Any:
        if self._f is None:
            self._f = tempfile.TemporaryFile()  # noqa: SIM115 - kept open for the session's lifetime.
        return self._f

    def close(self) -> None:
        if self._f is not None:
            self._f.close()
            self._f = None

    def _append(self, data: bytes) -> None:
        f = self._file()
        f.seek(0, os.SEEK_END)
        f.write(data)
        self.crc = zlib.crc32(data, self.crc)

    def _cut(self, nbytes: int) -> None:
        """Keeps the first nbytes of the file and recomputes the CRC over them (streamed)."""
        f = self._file()
        f.flush()
        f.truncate(nbytes)
        self.crc = _crc_of(f, nbytes)

    def sync(self) -> None:
        """Flushes the file to disk (before the .npz that counts on it is renamed into place)."""
        if self._f is not None:
            self._f.flush()
            os.fsync(self._f.fileno())

    def bind(self, path: Path) -> None:
        """Writes to `path` from now on, copying what the file holds (streamed) when it moves."""
        if self.path == path:
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        src = self._file()
        src.flush()
        src.seek(0)
        fd, tmp = temp_beside(path)
        try:
            with os.fdopen(fd, "wb") as out:
                shutil.copyfileobj(src, out)
            os.replace(tmp, path)
        except BaseException:
            try:
                os.unlink(tmp)
            except OSError:
                pass
            raise
        self.close()
        self._f = open(path, "r+b")  # noqa: SIM115 - kept open for the session's lifetime.
        self.path = path

    def _open(self, path: Path) -> bool:
        """Opens a saved side file (creating it when missing); True when it was missing."""
        self.close()
        self.path = path
        try:
            self._f = open(path, "r+b")  # noqa: SIM115
            return False
        except FileNotFoundError:
            self._f = open(path, "w+b")  # noqa: SIM115
            return True

    def _size(self) -> int:
        return os.fstat(self._file().fileno()).st_size


class TokenLog(_SideFile):
    """The conversation's token ids (uint32 LE), streamed so memory never grows with them.

    Positions are absolute: the file holds ids [offset, count) of the `chat` history (offset > 0 only
    after a history was lost). `commit(base, fed)` makes the file the history whose first `base` ids
    it already holds followed by `fed`, cutting off an abandoned branch (`+`, `+reset`).
    """

    def __init__(self) -> None:
        super().__init__()
        self.offset = 0
        self.count = 0

    def meta(self) -> dict[str, int]:
        return {"count": self.count, "offset": self.offset, "crc": self.crc}

    def commit(self, base: int, fed: list[int]) -> None:
        """Makes the log hold the history: its first `base` ids (already on file) then `fed`."""
        if base < self.offset or base > self.count:
            # The ids before `base` are not on file (a lost history): start over from there.
            self._cut(0)
            self.offset = self.count = base
        elif base < self.count:
            self._cut((base - self.offset) * 4)
            self.count = base
        if fed:
            self._append(np.asarray(fed, dtype="<u4").tobytes())
            self.count += len(fed)

    def open_saved(self, path: Path, meta: dict[str, int] | None, n_tokens: int) -> str | None:
        """Adopts the token log of a save whose `chat` has seen n_tokens ids; returns a warning or None."""
        missing = self._open(path)
        if meta is not None:
            count, offset = _int(meta, "count", -1), _int(meta, "offset", 0)
            want = (count - offset) * 4
            if count == n_tokens and 0 <= offset <= count and self._size() >= want:
                self._cut(want)  # Cuts off ids appended by a save that never finished.
                self.offset, self.count = offset, count
                if self.crc == _int(meta, "crc", -1):
                    return None
        reason = "is missing" if missing else "does not match its save"
        if meta is None:
            reason = "was not kept by this save"
        self._cut(0)
        self.offset = self.count = n_tokens
        return f"{path.name} {reason}: the token history of this session starts here"

    def read(self) -> np.ndarray:
        """uint32[count - offset]: the ids on file (for /export json; a one-off read)."""
        f = self._file()
        f.flush()
        f.seek(0)
        return np.frombuffer(f.read(), dtype="<u4").astype(np.uint32)


def _replay(lines: Any) -> list[dict[str, Any]]:
    """The transcript that a sequence of JSON-lines edits describes."""
    out: list[dict[str, Any]] = []
    for line in lines:
        if not line.strip():
            continue
        item = json.loads(line)
        if not isinstance(item, dict):
            continue  # Not an edit this reader knows: skipped (the file is not trusted).
        op = item.pop("op", None)
        if op == "clear":
            out = []
        elif op == "replace_last" and out and out[-1].get("role") == item.get("role"):
            out[-1] = item
        else:
            out.append(item)
    return out


def replay_transcript(path: Path, meta: dict[str, int]) -> list[dict[str, Any]] | None:
    """The transcript in the first meta["bytes"] bytes of a NAME.jsonl, or None when they do not match."""
    try:
        with open(path, "rb") as f:
            nbytes = _int(meta, "bytes", -1)
            if (
                nbytes < 0
                or os.fstat(f.fileno()).st_size < nbytes
                or _crc_of(f, nbytes) != _int(meta, "crc", -1)
            ):
                return None
            f.seek(0)
            return _replay(f.read(nbytes).decode("utf-8").splitlines())
    except (OSError, ValueError):
        return None


class TranscriptLog(_SideFile):
    """The transcript as an append-only JSON-lines log of edits (module docstring); see replay_transcript."""

    def __init__(self) -> None:
        super().__init__()
        self.size = 0  # Bytes in the file.

    def meta(self) -> dict[str, int]:
        return {"bytes": self.size, "crc": self.crc}

    def _write(self, item: dict[str, Any]) -> None:
        data = (json.dumps(item, ensure_ascii=False) + "\n").encode("utf-8")
        self._append(data)
        self.size += len(data)

    def add(self, entry: dict[str, Any]) -> None:
        self._write(entry)

    def replace_last(self, entry: dict[str, Any]) -> None:
        self._write({"op": "replace_last", **entry})

    def clear(self) -> None:
        if self.size:
            self._write({"op": "clear"})

    def open_saved(
        self, path: Path, meta: dict[str, int] | None, entries: list[dict[str, Any]]
    ) -> str | None:
        """Adopts a save's transcript log (cut to what the save covers); returns a warning or None.

        meta None: the save kept its transcript inline (an older file): `entries` start a new log.
        """
        missing = self._open(path)
        if meta is not None:
            nbytes = _int(meta, "bytes", -1)
            if 0 <= nbytes <= self._size():
                self._cut(nbytes)
                self.size = nbytes
                if self.crc == _int(meta, "crc", -1):
                    return None
        self._cut(0)
        self.size = 0
        for entry in entries:
            self.add(entry)
        if meta is None:
            return None
        reason = "is missing" if missing else "does not match its save"
        return f"{path.name} {reason}: the transcript of this session starts here"

    def replay(self) -> list[dict[str, Any]]:
        """The whole transcript (for export and re-feeding; a one-off read)."""
        f = self._file()
        f.flush()
        f.seek(0)
        return _replay(f.read().decode("utf-8").splitlines())
