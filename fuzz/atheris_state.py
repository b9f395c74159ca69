"""atheris harness: saved conversation files (rwkvchat.state.load_conversation) and resuming them.

A conversation file is an .npz (zip) with float32 arrays and a JSON `meta` document, plus two side files
(NAME.jsonl: the transcript log, NAME.tokens: the token ids; rwkvchat/history.py). Loading arbitrary bytes
must raise only StateMismatchError (FileNotFoundError cannot happen here); a file that loads must resume into
a Session on the tiny model either completely or with StateMismatchError, and the session's next turn must
work.

FUZZ_STATE_TARGET picks the file the input becomes: "npz" (default; no side files), "jsonl" or "tokens"
(beside an intact saved.npz and the other intact side file, copied from FUZZ_STATE_DIR, the folder that
`python fuzz/seeds.py state DIR` fills). Seeds for the side-file targets: DIR/saved.jsonl, DIR/saved.tokens.
"""

from __future__ import annotations

import importlib
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _harness import ScratchFile, main

_npz = ScratchFile(".npz")
_session = None


def _imports() -> None:
    for name in ("rwkvchat.session", "rwkvchat.state"):
        importlib.import_module(name)


def _get_session():  # type: ignore[no-untyped-def]
    """One Session on the tiny bytes-tokenizer model (FUZZ_MODEL, else made once in a temp folder)."""
    global _session
    if _session is None:
        import tempfile
        from pathlib import Path

        from rwkvchat.model import Model
        from rwkvchat.session import Session

        path = os.environ.get("FUZZ_MODEL")
        if not path:
            from seeds import write_tiny_model

            path = str(write_tiny_model(Path(tempfile.mkdtemp()) / "m.gguf", "f32", tokenizer="bytes",
                                        n_vocab=256))
        _session = Session(Model(path, threads=1))
        _session.params = _session.params.replace(max_tokens=2)
        for _ in _session.prime():
            pass
    return _session


def _target_path(data: bytes) -> str:
    """Writes the input where FUZZ_STATE_TARGET says and returns the .npz path to load."""
    import shutil

    target = os.environ.get("FUZZ_STATE_TARGET", "npz")
    if target == "npz":
        return _npz.write(data)
    if target not in ("jsonl", "tokens"):
        raise SystemExit(f"FUZZ_STATE_TARGET must be npz, jsonl or tokens, not {target!r}")
    source = os.environ["FUZZ_STATE_DIR"]
    folder = os.path.dirname(_npz.path)
    npz = os.path.join(folder, "rwkvchat-fuzz-side.npz")
    # Fresh copies every time: loading may cut a side file and a resumed session may autosave over them.
    shutil.copyfile(os.path.join(source, "saved.npz"), npz)
    for kind in ("jsonl", "tokens"):
        dest = npz[: -len(".npz")] + "." + kind
        if kind == target:
            with open(dest, "wb") as f:
                f.write(data)
        else:
            shutil.copyfile(os.path.join(source, "saved." + kind), dest)
    return npz


def check(data: bytes) -> None:
    from rwkvchat.errors import StateMismatchError
    from rwkvchat.state import load_conversation

    path = _target_path(data)
    try:
        conv = load_conversation(path)
    except StateMismatchError:
        return
    assert isinstance(conv.fingerprint, str)
    assert isinstance(conv.transcript, list) and isinstance(conv.settings, dict)
    session = _get_session()
    try:
        for _ in session.resume(path):
            pass
    except StateMismatchError:
        return
    finally:
        session.params = session.params.replace(max_tokens=2)
    for _ in session.send("hi"):
        pass


if __name__ == "__main__":
    main(check, _imports)
