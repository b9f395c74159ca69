"""Saved conversations of a Session: save, resume (same model or another one) and export.

Part of the session layer (it reads and replaces a Session's snapshots, transcript and token log);
kept apart from session.py, which holds the grammar and the generation loops. A save writes the
token and transcript logs first (fsynced), then the .npz that counts on them (history.py, state.py).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .errors import CommandError, StateMismatchError
from .history import TokenLog, TranscriptLog, tokens_path, transcript_path
from .prompts import TEMPLATES
from .sampling import SamplingParams
from .session_events import TRANSCRIPT_TAIL, Error, Event, Info
from .state import Conversation, Snapshot, load_conversation, save_conversation

if TYPE_CHECKING:
    from .session import Session

__all__ = ["clear_transcript", "commit_tokens", "export", "note", "resume", "save", "settings"]

SAVED_SNAPSHOTS = ("chat_init", "chat", "chat_pre")  # Free-generation snapshots are not kept.


def settings(s: Session) -> dict[str, Any]:
    """The session's settings as JSON values, stored with every save."""
    return {
        "preset": s.preset.name,
        "template": s.template.name,
        "think": s.think,
        "init_prompt": s.init_text,
        "sampling": dataclasses.asdict(s.params),
        "seed": s.seed,
    }


def note(s: Session, entry: dict[str, Any], replace: bool = False) -> None:
    """Adds a transcript entry (or replaces the last reply, for `+`): streamed to the log, tail kept."""
    if replace and s.transcript and s.transcript[-1]["role"] == entry["role"]:
        s.transcript[-1] = entry
        s.tlog.replace_last(entry)
        return
    s.transcript.append(entry)
    del s.transcript[:-TRANSCRIPT_TAIL]
    s.tlog.add(entry)
    s.turns += entry["role"] == "user"


def clear_transcript(s: Session) -> None:
    """Empties the transcript (`+reset`, a new init prompt); the log records it as an edit."""
    s.transcript = []
    s.turns = 0
    s.tlog.clear()


def commit_tokens(s: Session) -> None:
    """Moves the ids fed to `chat` since the last commit onto the token log (bounded memory).

    chat_init and chat_pre are prefixes of chat, so after this every tracked saved snapshot's
    history is on the log and their pending lists empty.
    """
    chat = s._snaps.get("chat")
    if chat is None or chat.fed is None:
        return
    s.log.commit(chat.base, chat.fed)
    for name in ("chat_init", "chat_pre", "chat"):
        snap = s._snaps.get(name)
        if snap is not None and snap.fed is not None:
            snap.fed = []


def save(s: Session, path: str | Path) -> None:
    """Writes tokens (NAME.tokens), transcript (NAME.jsonl), then state and settings (NAME.npz, atomic)."""
    s.log.bind(tokens_path(path))  # First: committing may cut the file, which must be this save's.
    commit_tokens(s)
    s.log.sync()
    s.tlog.bind(transcript_path(path))
    s.tlog.sync()
    snaps = {
        name: (snap.state.to_numpy(), snap.logits, snap.n_tokens, snap.last_token)
        for name, snap in s._snaps.items()
        if name in SAVED_SNAPSHOTS
    }
    conv = Conversation(str(s.model.fingerprint), snaps, [], settings(s), s.log.meta(), s.tlog.meta())
    save_conversation(path, conv)


def resume(s: Session, path: str | Path) -> Iterator[Event]:
    """Loads a saved conversation: its state when the model matches, else re-feeds its transcript."""
    path = Path(path)
    conv = load_conversation(path)
    cfg = conv.settings
    s.think = bool(cfg.get("think", s.think))
    if isinstance(cfg.get("sampling"), dict):
        try:
            s.params = SamplingParams.from_dict(cfg["sampling"])
        except (TypeError, ValueError):
            pass
    turns = sum(1 for t in conv.transcript if t.get("role") == "user")
    notes = []
    if conv.fingerprint == str(s.model.fingerprint) and "chat" in conv.snapshots:
        if isinstance(cfg.get("template"), str) and cfg["template"] in TEMPLATES:
            s.template = TEMPLATES[cfg["template"]]
        snaps = {}
        for name, (arr, logits, n, last) in conv.snapshots.items():
            if logits.shape != (s.n_vocab,):
                raise StateMismatchError(f"{path}: logits of {name} do not fit this model")
            state = s.model.state_from_numpy(arr)
            snaps[name] = Snapshot(state, logits.astype(np.float32), n, last, [])
        s._snaps = snaps
        _adopt_transcript(s, path, conv, turns)
        s.init_text = str(cfg.get("init_prompt", ""))
        notes.append(s.log.open_saved(tokens_path(path), conv.tokens, snaps["chat"].n_tokens))
        notes.append(s.tlog.open_saved(transcript_path(path), conv.transcript_log, conv.transcript))
        yield Info(f"resumed {path.stem}: {turns} turns, {snaps['chat'].n_tokens} tokens of context")
        for note in notes:
            if note:
                yield Info(note)
        return
    # Another model: its own template, the saved init prompt and transcript fed again (then saved for it).
    yield Info(f"{path.stem} was saved with a different model; re-feeding its transcript ({turns} turns)")
    init_prompt = str(cfg.get("init_prompt", ""))
    text = ""
    for t in conv.transcript:
        if t.get("role") == "user":
            text += s.template.user_turn(t["text"])
        elif t.get("role") == "assistant":
            text += s.template.bot_header() + " " + str(t["text"]).strip() + "\n\n"
    init = s._fresh(track=True)
    if not s._prefill(init, s.tok.encode(init_prompt)):
        yield Error("resume cancelled")
        return
    snap = init.copy()  # chat_init's ids are a prefix of chat's, as the token log needs.
    if not s._prefill(snap, s.tok.encode(text)):
        yield Error("resume cancelled")
        return
    s._snaps = {"chat_init": init, "chat": snap}
    _adopt_transcript(s, path, conv, turns)
    s.init_text = init_prompt
    s.log.close()
    s.log = TokenLog()  # The old ids came from another tokenizer: this save rewrites them.
    s.tlog.close()
    s.tlog = TranscriptLog()  # Written afresh from the entries (compacting any edits).
    for entry in conv.transcript:
        s.tlog.add(entry)
    save(s, path)


def _adopt_transcript(s: Session, path: Path, conv: Conversation, turns: int) -> None:
    """The session keeps the last entries in memory (the whole transcript stays in NAME.jsonl)."""
    s.transcript = conv.transcript[-TRANSCRIPT_TAIL:]
    s.turns = turns


def export(s: Session, fmt: str, path: str | None = None) -> str:
    """The transcript as Markdown, or JSON with the token ids; written to `path` when given."""
    if fmt == "json":
        commit_tokens(s)
        doc = {
            "template": s.template.name,
            "transcript": s.full_transcript(),
            "tokens_offset": s.log.offset,  # Ids before this one were not kept (a lost history).
            "tokens": s.log.read().tolist(),
        }
        text = json.dumps(doc, ensure_ascii=False, indent=2)
    else:
        names = {"user": s.template.user, "assistant": s.template.bot, "gen": "+gen"}
        text = "\n\n".join(f"**{names.get(t['role'], t['role'])}:** {t['text']}" for t in s.full_transcript())
    if path is None:
        return text or "(the conversation is empty)"
    try:
        Path(path).expanduser().write_text(text + "\n", encoding="utf-8")
    except OSError as e:
        raise CommandError(f"cannot write {path}: {e.strerror or e}") from None
    return f"exported {len(s.full_transcript())} entries to {path}"
