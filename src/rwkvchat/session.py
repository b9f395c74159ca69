"""A chat session: model + tokenizer + sampler + the five ChatRWKV snapshots; yields events, never prints.

Snapshots (chat-behaviour.md B1): `chat_init` (after the init prompt), `chat` (after the last finished
reply and its `\\n\\n`), `chat_pre` (after a user message and the bot header), `gen_0` (after a free
generation's prompt) and `gen_1` (after a free generation). Retry and continue therefore cost no prefill.
Every operation works on a copy of a snapshot and stores the result only when it is consistent, so an
interrupted reply leaves the session usable: the partial reply is kept and the turn is closed.

Interruption: `interrupt()` (called from a signal handler) makes the running prefill or generation stop
at the next chunk or token; closing the event iterator has the same effect.

The session layer is split by responsibility: session_events (what a session yields), session_loop
(the sampling loop, free generation), session_store (saving, resuming, the streamed transcript and ids).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from . import commands as C
from . import session_store as store
from .errors import CommandError, RwkvchatError
from .history import TokenLog, TranscriptLog
from .prompts import (
    TEMPLATES,
    Preset,
    alpaca_prompt,
    choose_template,
    load_preset,
    load_prompt_file,
    qq_prompt,
)
from .sampling import SamplingParams
from .session_events import (
    Error,
    Event,
    ExitRequested,
    Info,
    ReplyStart,
    Run,
    Stats,
    Stopped,
    TokenText,
    stats_text,
)
from .session_loop import free_generation, free_loop, sample_tokens
from .state import Snapshot

__all__ = [
    "Error",
    "Event",
    "ExitRequested",
    "Info",
    "ReplyStart",
    "Session",
    "Stats",
    "Stopped",
    "TokenText",
]

QA_NEWLINE_BIAS = -2.0  # `+qa` discourages newlines at every step.
_AVOID_REPEAT = "，：？！"  # CJK punctuation that must not come twice in a row.


class Session:
    """One conversation over one model. See the module docstring for snapshot semantics."""

    def __init__(
        self,
        model: Any,
        *,
        preset: Preset | None = None,
        template: str | None = None,
        params: SamplingParams | None = None,
        seed: int | None = None,
        chunk_len: int = 256,
        think: bool = False,
        save_path: str | Path | None = None,
        save_dir: str | Path | None = None,
    ) -> None:
        self.model = model
        self.tok = model.tokenizer
        self.n_vocab = int(model.n_vocab)
        self.preset = preset or load_preset("en-chat")
        self.template = TEMPLATES[template or self._auto_template()]
        self.params = params or SamplingParams.from_dict(self.preset.sampling)
        self.seed = seed
        self.rng = np.random.default_rng(seed)
        self.chunk_len = max(1, int(chunk_len))
        self.think = think
        self.save_path = Path(save_path) if save_path else None
        self.save_dir = Path(save_dir) if save_dir else None
        self.transcript: list[dict[str, Any]] = []  # The last TRANSCRIPT_TAIL entries (all: self.tlog).
        self.turns = 0  # User messages in the whole transcript.
        self.tlog = TranscriptLog()
        self.last_stats: Stats | None = None
        self.init_text = ""
        self._snaps: dict[str, Snapshot] = {}
        self.log = TokenLog()  # The ids of `chat`'s history, streamed to a file (state.py).
        self._interrupted = False
        self._free_newline_bias = 0.0
        self._ban: np.ndarray | None = None
        self.eos = self.tok.eos_id if getattr(self.tok, "eos_id", None) is not None else 0
        self._newlines = [ids[0] for ids in (self.tok.encode("\n"), self.tok.encode("\n\n")) if len(ids) == 1]
        self._avoid = {ids[0] for ids in (self.tok.encode(ch) for ch in _AVOID_REPEAT) if len(ids) == 1}

    # ---- setup ----

    def _auto_template(self) -> str:
        if self.preset.template != "auto":
            return self.preset.template
        name = None
        try:
            name = self.model.metadata_value("general.name")
        except (AttributeError, RwkvchatError):
            pass
        if not name:
            name = Path(str(getattr(self.model, "path", ""))).name
        return choose_template(getattr(self.tok, "kind", ""), self.n_vocab, str(name))

    def interrupt(self) -> None:
        """Asks the running prefill/generation to stop at the next chunk or token (signal-safe)."""
        self._interrupted = True

    def snapshot(self, name: str) -> Snapshot | None:
        """The stored snapshot `name` (not a copy; for inspection and tests)."""
        return self._snaps.get(name)

    def _get(self, name: str) -> Snapshot:
        snap = self._snaps.get(name)
        if snap is None:
            raise CommandError(f"no {name} snapshot: the session has not been primed with its init prompt")
        return snap

    def _fresh(self, track: bool = False) -> Snapshot:
        """A new state; `track` records its ids for the token log (the chat lineage only)."""
        zeros = np.zeros(self.n_vocab, dtype=np.float32)
        return Snapshot(self.model.new_state(), zeros, 0, None, [] if track else None)

    @staticmethod
    def _untracked(snap: Snapshot) -> Snapshot:
        snap.fed = None  # Free generation branches off the chat; its ids are never saved.
        return snap

    def _prefill(self, snap: Snapshot, tokens: list[int]) -> bool:
        """Feeds tokens in chunks (sequence mode), advancing snap; False when interrupted midway."""
        for i in range(0, len(tokens), self.chunk_len):
            if self._interrupted:
                return False
            chunk = tokens[i : i + self.chunk_len]
            last = i + self.chunk_len >= len(tokens)
            out = self.model.forward(chunk, snap.state, logits=last)
            if last:
                snap.logits = np.asarray(out, dtype=np.float32)
            snap.n_tokens += len(chunk)
            snap.last_token = chunk[-1]
            snap.record(chunk)
        return True

    def prime(self, preset: Preset | None = None) -> Iterator[Event]:
        """Feeds the init prompt into a fresh state; it becomes `chat_init` (the reset point) and `chat`."""
        self._interrupted = False
        if preset is not None:
            self.preset = preset
            if preset.template != "auto":
                self.template = TEMPLATES[preset.template]
        text = self.preset.init_text(self.template)
        tokens = self.tok.encode(text)
        if getattr(self.tok, "kind", "") == "hf" and self.n_vocab in (50277, 50304) and tokens[-1:] == [535]:
            tokens[-1:] = [187, 187]  # The 20B model only ever generated "\n\n" as two newlines (B10).
        snap = self._fresh(track=True)
        if not self._prefill(snap, tokens):
            yield Error("init prompt cancelled; the previous conversation is unchanged")
            return
        self.init_text = text
        self._snaps["chat_init"] = snap
        self._snaps["chat"] = snap.copy()
        for name in ("chat_pre", "gen_0", "gen_1"):
            self._snaps.pop(name, None)
        store.clear_transcript(self)

    # ---- the grammar ----

    def send(self, line: str) -> Iterator[Event]:
        """Parses and runs one line of user input."""
        try:
            cmd = C.parse(line)
        except CommandError as e:
            yield Error(str(e))
            return
        yield from self.run(cmd)

    def run(self, cmd: C.Command) -> Iterator[Event]:
        """Carries out one parsed command, yielding its events; command errors become Error events."""
        self._interrupted = False
        try:
            yield from self._dispatch(cmd)
        except CommandError as e:
            yield Error(str(e))

    def _dispatch(self, cmd: C.Command) -> Iterator[Event]:
        ov = cmd.overrides
        if isinstance(cmd, C.Message):
            yield from self._chat(cmd.text, ov)
        elif isinstance(cmd, C.Reply):
            if "chat_pre" not in self._snaps:
                raise CommandError("nothing to regenerate yet: send a message first")
            yield from self._chat_reply(self._snaps["chat_pre"].copy(), ov, replace=True, prefill=(0, 0.0))
        elif isinstance(cmd, (C.Gen, C.Instruct, C.AskQ)):
            text = {C.Gen: lambda t: "\n" + t, C.Instruct: alpaca_prompt, C.AskQ: qq_prompt}[type(cmd)](
                cmd.text
            )
            yield from free_generation(self, text, self._fresh(), ov, 0.0, cmd.text)
        elif isinstance(cmd, C.AskQA):
            text = self.template.user_turn(cmd.text) + self.template.bot_header()
            snap = self._untracked(self._get("chat_init").copy())
            yield from free_generation(self, text, snap, ov, QA_NEWLINE_BIAS, cmd.text)
        elif isinstance(cmd, C.Retry):
            if "gen_0" not in self._snaps:
                raise CommandError("nothing to retry yet: use +gen, +i, +qq or +qa first")
            yield from free_loop(self, ov, Run(self._get("gen_0").copy()))
        elif isinstance(cmd, C.Continue):
            if "gen_1" not in self._snaps:
                raise CommandError("nothing to continue yet: use +gen, +i, +qq or +qa first")
            self._snaps["gen_0"] = self._get("gen_1").copy()
            yield from free_loop(self, ov, Run(self._get("gen_1").copy()))
        elif isinstance(cmd, C.Reset):
            self._snaps["chat"] = self._get("chat_init").copy()
            self._snaps.pop("chat_pre", None)
            store.clear_transcript(self)
            self._autosave()
            yield Info("Chat reset.")
        elif isinstance(cmd, C.LoadPrompt):
            preset = load_prompt_file(cmd.path)
            errors = list(self.prime(preset))
            if errors:
                yield from errors
                return
            try:
                self.params = SamplingParams.from_dict(preset.sampling)  # The preset's defaults too.
            except (TypeError, ValueError) as e:
                yield Error(f"{cmd.path}: sampling settings ignored ({e})")
            self._autosave()
            yield Info("Prompt set up.")
        elif isinstance(cmd, C.Help):
            yield Info(C.help_text())
        elif isinstance(cmd, C.Set):
            yield Info(self.apply_setting(cmd.key, cmd.value))
        elif isinstance(cmd, C.Think):
            self.think = cmd.on
            note = "" if self.template.thinks else " (only G1 models think; this model's template ignores it)"
            yield Info(f"think {'on' if cmd.on else 'off'}{note}")
        elif isinstance(cmd, C.Stats):
            yield Info(self.stats_text())
        elif isinstance(cmd, C.Save):
            if self.save_dir is None:
                raise CommandError("sessions cannot be saved here (no sessions folder)")
            self.save_path = self.save_dir / f"{cmd.name}.npz"
            self.save(self.save_path)
            yield Info(f"saved as {cmd.name} ({self.save_path}); every turn is saved from now on")
        elif isinstance(cmd, C.Load):
            if self.save_dir is None:
                raise CommandError("sessions cannot be loaded here (no sessions folder)")
            path = self.save_dir / f"{cmd.name}.npz"
            if not path.exists():
                raise CommandError(f"no saved session named {cmd.name} (in {self.save_dir})")
            yield from self.resume(path)
            self.save_path = path
        elif isinstance(cmd, C.Export):
            yield Info(self.export(cmd.fmt, cmd.path))
        elif isinstance(cmd, C.Exit):
            yield ExitRequested()

    def apply_setting(self, key: str, value: float) -> str:
        """/set: changes a default for the rest of the session; returns a confirmation line."""
        if key == "seed":
            self.seed = int(value)
            self.rng = np.random.default_rng(self.seed)
        else:
            self.params = dataclasses.replace(self.params, **{key: value})
        return f"{key} = {value:g}" if isinstance(value, float) else f"{key} = {value}"

    # ---- chat ----

    def _chat(self, msg: str, ov: C.Overrides) -> Iterator[Event]:
        snap = self._get("chat").copy()
        tokens = self.tok.encode(self.template.user_turn(msg) + self.template.bot_header(self.think))
        t0 = time.perf_counter()
        if not self._prefill(snap, tokens):
            yield Stopped("interrupted")
            yield Info("message not sent (cancelled while reading it)")
            return
        self._snaps["chat_pre"] = snap.copy()
        store.note(self, {"role": "user", "text": msg})
        yield from self._chat_reply(snap, ov, replace=False, prefill=(len(tokens), time.perf_counter() - t0))

    def _params(self, ov: C.Overrides, **changes: Any) -> SamplingParams:
        return self.params.replace(temperature=ov.temperature, top_p=ov.top_p, **changes)

    def _chat_reply(
        self, snap: Snapshot, ov: C.Overrides, *, replace: bool, prefill: tuple[int, float]
    ) -> Iterator[Event]:
        run = Run(snap, prefill_tokens=prefill[0], prefill_s=prefill[1])
        prefix = "<think" if self.think and self.template.thinks else ""
        yield ReplyStart(self.template.bot)
        if prefix:
            yield TokenText(prefix)
        done = False
        try:
            stops = tuple(dict.fromkeys(self.template.stops() + self.preset.stop))
            yield from self._loop(run, self._params(ov), chat=True, stops=stops)
            done = True
        finally:
            reply = self._finish_chat(run, prefix, replace)
        if done:
            yield Stopped(run.reason, reply)
            yield self._stats(run)

    def _finish_chat(self, run: Run, prefix: str, replace: bool) -> str:
        """Stores `chat` so it ends with the reply and its `\\n\\n`, whatever stopped the reply."""
        raw = run.text[: run.text.find(run.stop)] if run.stop else run.text
        if run.stop == "\n\n" and run.text.endswith("\n\n"):
            final = run.snap  # Stopped cleanly: the state already ends right.
        elif run.stop is None:
            final = run.snap  # Length or interrupt: close the turn.
            missing = max(0, 2 - (len(raw) - len(raw.rstrip("\n"))))
            self._feed_uninterruptible(final, "\n" * missing)
        else:
            # The model began the user's turn (or wrote past the separator): rebuild from chat_pre.
            final = self._snaps["chat_pre"].copy()
            self._feed_uninterruptible(final, raw.rstrip() + "\n\n")
        self._snaps["chat"] = final
        reply = prefix + raw.strip() if prefix else raw.strip()
        store.note(self, {"role": "assistant", "text": reply}, replace=replace)
        self._autosave()
        return reply

    def _feed_uninterruptible(self, snap: Snapshot, text: str) -> None:
        tokens = self.tok.encode(text)
        if tokens:
            snap.logits = np.asarray(self.model.forward(tokens, snap.state), dtype=np.float32)
            snap.n_tokens += len(tokens)
            snap.last_token = tokens[-1]
            snap.record(tokens)

    # ---- free generation (session_loop.py) and `gen` ----

    def generate(
        self, prompt: str, params: SamplingParams, *, strip_leading: bool = False
    ) -> Iterator[Event]:
        """One-shot generation from a fresh state (`rwkvchat gen`): ends on eos, params.stop or max_tokens."""
        self._interrupted = False
        snap = self._fresh()
        tokens = self.tok.encode(prompt)
        t0 = time.perf_counter()
        if not self._prefill(snap, tokens):
            yield Stopped("interrupted")
            return
        run = Run(snap, prefill_tokens=len(tokens), prefill_s=time.perf_counter() - t0)
        yield from self._loop(run, params, chat=False, stops=params.stop, strip_leading=strip_leading)
        text = run.text[: run.text.find(run.stop)] if run.stop else run.text
        yield Stopped(run.reason, text.lstrip(" ") if strip_leading else text)
        yield self._stats(run)

    # ---- the sampling loop (session_loop.py) ----

    def _loop(self, run: Run, params: SamplingParams, **kw: Any) -> Iterator[Event]:
        """Samples, feeds and streams tokens until a stop; run.snap always matches the tokens fed."""
        yield from sample_tokens(self, run, params, **kw)

    def _stats(self, run: Run) -> Stats:
        self.last_stats = Stats(run.prefill_tokens, run.n, run.prefill_s, time.perf_counter() - run.t0)
        return self.last_stats

    def stats_text(self) -> str:
        return stats_text(self)

    # ---- saved conversations, the transcript and the token log (session_store.py) ----

    def commit_tokens(self) -> None:
        """Moves the ids fed to `chat` since the last commit onto the token log (bounded memory)."""
        store.commit_tokens(self)

    def full_transcript(self) -> list[dict[str, Any]]:
        """Every entry, read back from the transcript log (for export; a one-off read)."""
        return self.tlog.replay()

    def save(self, path: str | Path) -> None:
        """Writes tokens, state, transcript and settings, keyed to the model's fingerprint (atomic)."""
        store.save(self, path)

    def _autosave(self) -> None:
        self.commit_tokens()
        if self.save_path is not None:
            self.save(self.save_path)

    def resume(self, path: str | Path) -> Iterator[Event]:
        """Loads a saved conversation: its state when the model matches, else re-feeds its transcript."""
        yield from store.resume(self, path)

    def export(self, fmt: str, path: str | None = None) -> str:
        """The transcript as Markdown or JSON; written to `path` when given (returns a confirmation)."""
        return store.export(self, fmt, path)
