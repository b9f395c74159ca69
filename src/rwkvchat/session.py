"""A chat session: model + tokenizer + sampler + the five ChatRWKV snapshots; yields events, never prints.

Snapshots (chat-behaviour.md B1): `chat_init` (after the init prompt), `chat` (after the last finished
reply and its `\\n\\n`), `chat_pre` (after a user message and the bot header), `gen_0` (after a free
generation's prompt) and `gen_1` (after a free generation). Retry and continue therefore cost no prefill.
Every operation works on a copy of a snapshot and stores the result only when it is consistent, so an
interrupted reply leaves the session usable: the partial reply is kept and the turn is closed.

Interruption: `interrupt()` (called from a signal handler) makes the running prefill or generation stop
at the next chunk or token; closing the event iterator has the same effect.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Union

import numpy as np

from . import commands as C
from .errors import CommandError, RwkvchatError, StateMismatchError
from .prompts import (
    TEMPLATES,
    Preset,
    alpaca_prompt,
    choose_template,
    load_preset,
    load_prompt_file,
    qq_prompt,
)
from .sampling import Penalties, SamplingParams, StopMatcher, chat_newline_bias, frequency_weight, sample
from .state import Conversation, Snapshot, load_conversation, save_conversation

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

FREE_GEN_LEN = 256  # Free generation stops here at a clean UTF-8 boundary...
FREE_GEN_HARD = 356  # ...and here at the latest (ChatRWKV's FREE_GEN_LEN + 100).
QA_NEWLINE_BIAS = -2.0  # `+qa` discourages newlines at every step.
_AVOID_REPEAT = "，：？！"  # CJK punctuation that must not come twice in a row.


@dataclass(frozen=True)
class TokenText:
    text: str


@dataclass(frozen=True)
class ReplyStart:
    """A reply begins; `speaker` is the bot's name for chat replies, None for free generation."""

    speaker: str | None


@dataclass(frozen=True)
class Stopped:
    """Generation ended: reason is "stop" (stop string), "eos", "length" or "interrupted"."""

    reason: str
    text: str = ""


@dataclass(frozen=True)
class Info:
    message: str


@dataclass(frozen=True)
class Error:
    message: str


@dataclass(frozen=True)
class Stats:
    """Token counts and wall times (seconds) of one prefill + generation."""

    prompt_tokens: int
    generated_tokens: int
    prefill_s: float
    generate_s: float

    @property
    def tokens_per_s(self) -> float:
        return self.generated_tokens / self.generate_s if self.generate_s > 0 else 0.0


@dataclass(frozen=True)
class ExitRequested:
    pass


Event = Union[TokenText, ReplyStart, Stopped, Info, Error, Stats, ExitRequested]


@dataclass
class _Run:
    """A generation in progress: the live snapshot and what it has produced so far."""

    snap: Snapshot
    text: str = ""
    n: int = 0
    reason: str = "length"
    stop: str | None = None
    prefill_tokens: int = 0
    prefill_s: float = 0.0
    t0: float = 0.0


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
        self.transcript: list[dict[str, Any]] = []
        self.last_stats: Stats | None = None
        self.init_text = ""
        self._snaps: dict[str, Snapshot] = {}
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

    def _fresh(self) -> Snapshot:
        return Snapshot(self.model.new_state(), np.zeros(self.n_vocab, dtype=np.float32), 0, None)

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
        snap = self._fresh()
        if not self._prefill(snap, tokens):
            yield Error("init prompt cancelled; the previous conversation is unchanged")
            return
        self.init_text = text
        self._snaps["chat_init"] = snap
        self._snaps["chat"] = snap.copy()
        for name in ("chat_pre", "gen_0", "gen_1"):
            self._snaps.pop(name, None)
        self.transcript = []

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
            yield from self._free(text, self._fresh(), ov, 0.0, cmd.text)
        elif isinstance(cmd, C.AskQA):
            text = self.template.user_turn(cmd.text) + self.template.bot_header()
            yield from self._free(text, self._get("chat_init").copy(), ov, QA_NEWLINE_BIAS, cmd.text)
        elif isinstance(cmd, C.Retry):
            if "gen_0" not in self._snaps:
                raise CommandError("nothing to retry yet: use +gen, +i, +qq or +qa first")
            yield from self._free_loop(ov, _Run(self._get("gen_0").copy()))
        elif isinstance(cmd, C.Continue):
            if "gen_1" not in self._snaps:
                raise CommandError("nothing to continue yet: use +gen, +i, +qq or +qa first")
            self._snaps["gen_0"] = self._get("gen_1").copy()
            yield from self._free_loop(ov, _Run(self._get("gen_1").copy()))
        elif isinstance(cmd, C.Reset):
            self._snaps["chat"] = self._get("chat_init").copy()
            self._snaps.pop("chat_pre", None)
            self.transcript = []
            self._autosave()
            yield Info("Chat reset.")
        elif isinstance(cmd, C.LoadPrompt):
            errors = list(self.prime(load_prompt_file(cmd.path)))
            if errors:
                yield from errors
                return
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
        self.transcript.append({"role": "user", "text": msg})
        yield from self._chat_reply(snap, ov, replace=False, prefill=(len(tokens), time.perf_counter() - t0))

    def _params(self, ov: C.Overrides, **changes: Any) -> SamplingParams:
        return self.params.replace(temperature=ov.temperature, top_p=ov.top_p, **changes)

    def _chat_reply(
        self, snap: Snapshot, ov: C.Overrides, *, replace: bool, prefill: tuple[int, float]
    ) -> Iterator[Event]:
        run = _Run(snap, prefill_tokens=prefill[0], prefill_s=prefill[1])
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

    def _finish_chat(self, run: _Run, prefix: str, replace: bool) -> str:
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
        if replace and self.transcript and self.transcript[-1]["role"] == "assistant":
            self.transcript[-1] = {"role": "assistant", "text": reply}
        else:
            self.transcript.append({"role": "assistant", "text": reply})
        self._autosave()
        return reply

    def _feed_uninterruptible(self, snap: Snapshot, text: str) -> None:
        tokens = self.tok.encode(text)
        if tokens:
            snap.logits = np.asarray(self.model.forward(tokens, snap.state), dtype=np.float32)
            snap.n_tokens += len(tokens)
            snap.last_token = tokens[-1]

    # ---- free generation ----

    def _free(
        self, text: str, snap: Snapshot, ov: C.Overrides, newline_bias: float, label: str
    ) -> Iterator[Event]:
        tokens = self.tok.encode(text)
        t0 = time.perf_counter()
        if not self._prefill(snap, tokens):
            yield Stopped("interrupted")
            return
        self._snaps["gen_0"] = snap.copy()
        self._free_newline_bias = newline_bias
        self.transcript.append({"role": "gen", "text": label})
        run = _Run(snap, prefill_tokens=len(tokens), prefill_s=time.perf_counter() - t0)
        yield from self._free_loop(ov, run)

    def _free_loop(self, ov: C.Overrides, run: _Run) -> Iterator[Event]:
        yield ReplyStart(None)
        done = False
        try:
            yield from self._loop(
                run,
                self._params(ov, max_tokens=FREE_GEN_HARD),
                chat=False,
                stops=(),
                soft_max=FREE_GEN_LEN,
                newline_bias=self._free_newline_bias,
            )
            done = True
        finally:
            self._snaps["gen_1"] = run.snap
        if done:
            yield Stopped(run.reason, run.text)
            yield self._stats(run)

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
        run = _Run(snap, prefill_tokens=len(tokens), prefill_s=time.perf_counter() - t0)
        yield from self._loop(run, params, chat=False, stops=params.stop, strip_leading=strip_leading)
        text = run.text[: run.text.find(run.stop)] if run.stop else run.text
        yield Stopped(run.reason, text.lstrip(" ") if strip_leading else text)
        yield self._stats(run)

    # ---- the sampling loop ----

    def _ban_mask(self) -> np.ndarray:
        """bool[n_vocab]: padding ids that have no text (computed once)."""
        if self._ban is None:
            self._ban = np.zeros(self.n_vocab, dtype=bool)
            banned = getattr(self.tok, "banned_ids", None)
            if banned is not None:
                self._ban[np.asarray(banned(), dtype=np.int64)] = True
        return self._ban

    def _loop(
        self,
        run: _Run,
        params: SamplingParams,
        *,
        chat: bool,
        stops: tuple[str, ...],
        soft_max: int | None = None,
        newline_bias: float = 0.0,
        strip_leading: bool | None = None,
    ) -> Iterator[Event]:
        """Samples, feeds and streams tokens until a stop; run.snap always matches the tokens fed."""
        pen = Penalties(self.n_vocab, params.presence, params.frequency, params.decay)
        dec = self.tok.stream()
        matcher = StopMatcher(stops)
        ban = self._ban_mask()
        strip = chat if strip_leading is None else strip_leading
        bias_ids = np.array([i for i, _ in params.logit_bias], dtype=np.int64)
        bias_vals = np.array([b for _, b in params.logit_bias], dtype=np.float32)
        started, held = False, ""
        run.t0 = time.perf_counter()
        run.reason = "length"
        for j in range(params.max_tokens):
            if self._interrupted:
                run.reason = "interrupted"
                break
            x = np.array(run.snap.logits, dtype=np.float32)
            x[ban] = -np.inf
            if params.token_ban:
                x[list(params.token_ban)] = -np.inf
            if bias_ids.size:
                x[bias_ids] += bias_vals
            if chat:
                x[self.eos] = -np.inf
                if self._newlines:
                    x[self._newlines[0]] += chat_newline_bias(j)
                    if j <= 1:
                        x[self._newlines] = -np.inf
            elif newline_bias and self._newlines:
                x[self._newlines[0]] += newline_bias
            if run.snap.last_token in self._avoid:
                x[run.snap.last_token] = -np.inf  # No doubled CJK punctuation (ChatRWKV's AVOID_REPEAT).
            pen.apply(x)
            tok = sample(x, params, self.rng)
            if tok == self.eos and not chat:
                run.reason = "eos"
                break
            run.snap.logits = np.asarray(self.model.forward([tok], run.snap.state), dtype=np.float32)
            run.snap.n_tokens += 1
            run.snap.last_token = tok
            run.n += 1
            pen.update(tok, frequency_weight(self.tok.token_bytes(tok)))
            piece = dec.feed(tok)
            run.text += piece
            out, hit = matcher.feed(piece)
            if strip and not started:
                out = out.lstrip(" ")
            if chat:
                # Hold back trailing whitespace: a chat reply never ends in it, whatever stops it.
                out = held + out
                body = out.rstrip()
                held, out = out[len(body) :], body
            if out:
                started = True
                yield TokenText(out)
            if hit is not None:
                run.reason, run.stop = "stop", hit
                return
            if soft_max is not None and run.n >= soft_max and getattr(dec, "pending", 0) == 0:
                break
        rest = dec.flush()
        run.text += rest
        out, hit = matcher.feed(rest)
        out += "" if hit else matcher.flush()
        if hit:
            run.reason, run.stop = "stop", hit
        if chat:
            out = (held + out).rstrip()
        if strip and not started:
            out = out.lstrip(" ")
        if out:
            yield TokenText(out)

    def _stats(self, run: _Run) -> Stats:
        self.last_stats = Stats(run.prefill_tokens, run.n, run.prefill_s, time.perf_counter() - run.t0)
        return self.last_stats

    def stats_text(self) -> str:
        chat = self._snaps.get("chat")
        lines = [
            f"context: {chat.n_tokens if chat else 0} tokens; turns: "
            f"{sum(1 for t in self.transcript if t['role'] == 'user')}; template: {self.template.name}"
        ]
        s = self.last_stats
        if s:
            lines.append(
                f"last reply: {s.generated_tokens} tokens in {s.generate_s:.2f} s"
                f" ({s.tokens_per_s:.1f} tokens/s);"
                f" prompt {s.prompt_tokens} tokens in {s.prefill_s:.2f} s"
            )
        p = self.params
        lines.append(
            f"temp {p.temperature:g}, top_p {p.top_p:g}, top_k {p.top_k}, presence {p.presence:g}, "
            f"frequency {p.frequency:g}, decay {p.decay:g}, max_tokens {p.max_tokens}, seed {self.seed}"
        )
        return "\n".join(lines)

    # ---- saved conversations ----

    def _settings(self) -> dict[str, Any]:
        return {
            "preset": self.preset.name,
            "template": self.template.name,
            "think": self.think,
            "init_prompt": self.init_text,
            "sampling": dataclasses.asdict(self.params),
            "seed": self.seed,
        }

    def save(self, path: str | Path) -> None:
        """Writes state, transcript and settings, keyed to the model's fingerprint (atomic)."""
        snaps = {
            name: (s.state.to_numpy(), s.logits, s.n_tokens, s.last_token)
            for name, s in self._snaps.items()
            if name in ("chat_init", "chat", "chat_pre")
        }
        save_conversation(
            path, Conversation(str(self.model.fingerprint), snaps, self.transcript, self._settings())
        )

    def _autosave(self) -> None:
        if self.save_path is not None:
            self.save(self.save_path)

    def resume(self, path: str | Path) -> Iterator[Event]:
        """Loads a saved conversation: its state when the model matches, else re-feeds its transcript."""
        conv = load_conversation(path)
        s = conv.settings
        self.think = bool(s.get("think", self.think))
        if isinstance(s.get("sampling"), dict):
            try:
                self.params = SamplingParams.from_dict(s["sampling"])
            except (TypeError, ValueError):
                pass
        turns = sum(1 for t in conv.transcript if t.get("role") == "user")
        if conv.fingerprint == str(self.model.fingerprint) and "chat" in conv.snapshots:
            if s.get("template") in TEMPLATES:
                self.template = TEMPLATES[s["template"]]
            snaps = {}
            for name, (arr, logits, n, last) in conv.snapshots.items():
                if logits.shape != (self.n_vocab,):
                    raise StateMismatchError(f"{path}: logits of {name} do not fit this model")
                snaps[name] = Snapshot(self.model.state_from_numpy(arr), logits.astype(np.float32), n, last)
            self._snaps = snaps
            self.transcript = conv.transcript
            self.init_text = str(s.get("init_prompt", ""))
            yield Info(
                f"resumed {Path(path).stem}: {turns} turns, {snaps['chat'].n_tokens} tokens of context"
            )
            return
        # Another model: its own template, the saved init prompt and transcript fed again (then saved for it).
        yield Info(
            f"{Path(path).stem} was saved with a different model; re-feeding its transcript ({turns} turns)"
        )
        text = str(s.get("init_prompt", ""))
        for t in conv.transcript:
            if t.get("role") == "user":
                text += self.template.user_turn(t["text"])
            elif t.get("role") == "assistant":
                text += self.template.bot_header() + " " + str(t["text"]).strip() + "\n\n"
        snap = self._fresh()
        init = self._fresh()
        if not self._prefill(snap, self.tok.encode(text)) or not self._prefill(
            init, self.tok.encode(s.get("init_prompt", ""))
        ):
            yield Error("resume cancelled")
            return
        self._snaps = {"chat_init": init, "chat": snap}
        self.transcript = conv.transcript
        self.init_text = str(s.get("init_prompt", ""))
        self.save(path)

    def export(self, fmt: str, path: str | None = None) -> str:
        """The transcript as Markdown or JSON; written to `path` when given (returns a confirmation)."""
        if fmt == "json":
            text = json.dumps(
                {"template": self.template.name, "transcript": self.transcript}, ensure_ascii=False, indent=2
            )
        else:
            names = {"user": self.template.user, "assistant": self.template.bot, "gen": "+gen"}
            text = "\n\n".join(f"**{names.get(t['role'], t['role'])}:** {t['text']}" for t in self.transcript)
        if path is None:
            return text or "(the conversation is empty)"
        try:
            Path(path).expanduser().write_text(text + "\n", encoding="utf-8")
        except OSError as e:
            raise CommandError(f"cannot write {path}: {e.strerror or e}") from None
        return f"exported {len(self.transcript)} entries to {path}"
