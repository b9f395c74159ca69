"""The sampling loop of a Session (logits -> bans, biases, penalties -> token -> fed, streamed) and free generation.

Part of the session layer, kept apart from session.py (the grammar and the snapshots). The loop works
on a Run's snapshot in place, so whatever stops it (a stop string, eos, length, an interrupt, the caller
closing the iterator) the snapshot matches exactly the tokens fed.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import TYPE_CHECKING

import numpy as np

from .commands import Overrides
from .sampling import Penalties, SamplingParams, StopMatcher, chat_newline_bias, frequency_weight, sample
from .session_events import Event, ReplyStart, Run, Stopped, TokenText
from .session_store import note
from .state import Snapshot

if TYPE_CHECKING:
    from .session import Session

__all__ = ["FREE_GEN_HARD", "FREE_GEN_LEN", "ban_mask", "free_generation", "free_loop", "sample_tokens"]

FREE_GEN_LEN = 256  # Free generation stops here at a clean UTF-8 boundary...
FREE_GEN_HARD = 356  # ...and here at the latest (ChatRWKV's FREE_GEN_LEN + 100).


def ban_mask(s: Session) -> np.ndarray:
    """bool[n_vocab]: padding ids that have no text (computed once)."""
    if s._ban is None:
        s._ban = np.zeros(s.n_vocab, dtype=bool)
        banned = getattr(s.tok, "banned_ids", None)
        if banned is not None:
            s._ban[np.asarray(banned(), dtype=np.int64)] = True
    return s._ban


def sample_tokens(
    s: Session,
    run: Run,
    params: SamplingParams,
    *,
    chat: bool,
    stops: tuple[str, ...],
    soft_max: int | None = None,
    newline_bias: float = 0.0,
    strip_leading: bool | None = None,
) -> Iterator[Event]:
    """Samples, feeds and streams tokens until a stop; run.snap always matches the tokens fed."""
    pen = Penalties(s.n_vocab, params.presence, params.frequency, params.decay)
    dec = s.tok.stream()
    matcher = StopMatcher(stops)
    ban = ban_mask(s)
    strip = chat if strip_leading is None else strip_leading
    bias_ids = np.array([i for i, _ in params.logit_bias], dtype=np.int64)
    bias_vals = np.array([b for _, b in params.logit_bias], dtype=np.float32)
    started, held = False, ""
    run.t0 = time.perf_counter()
    run.reason = "length"
    for j in range(params.max_tokens):
        if s._interrupted:
            run.reason = "interrupted"
            break
        x = np.array(run.snap.logits, dtype=np.float32)
        x[ban] = -np.inf
        if params.token_ban:
            x[list(params.token_ban)] = -np.inf
        if bias_ids.size:
            x[bias_ids] += bias_vals
        if chat:
            x[s.eos] = -np.inf
            if s._newlines:
                x[s._newlines[0]] += chat_newline_bias(j)
                if j <= 1:
                    x[s._newlines] = -np.inf
        elif newline_bias and s._newlines:
            x[s._newlines[0]] += newline_bias
        if run.snap.last_token in s._avoid:
            x[run.snap.last_token] = -np.inf  # No doubled CJK punctuation (ChatRWKV's AVOID_REPEAT).
        pen.apply(x)
        tok = sample(x, params, s.rng)
        if tok == s.eos and not chat:
            run.reason = "eos"
            break
        run.snap.logits = np.asarray(s.model.forward([tok], run.snap.state), dtype=np.float32)
        run.snap.n_tokens += 1
        run.snap.last_token = tok
        run.snap.record([tok])
        run.n += 1
        pen.update(tok, frequency_weight(s.tok.token_bytes(tok)))
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


def free_generation(
    s: Session, text: str, snap: Snapshot, ov: Overrides, newline_bias: float, label: str
) -> Iterator[Event]:
    """`+gen`/`+i`/`+qq`/`+qa`: feeds `text` into snap (stored as gen_0), then generates freely."""
    tokens = s.tok.encode(text)
    t0 = time.perf_counter()
    if not s._prefill(snap, tokens):
        yield Stopped("interrupted")
        return
    s._snaps["gen_0"] = snap.copy()
    s._free_newline_bias = newline_bias
    note(s, {"role": "gen", "text": label})
    run = Run(snap, prefill_tokens=len(tokens), prefill_s=time.perf_counter() - t0)
    yield from free_loop(s, ov, run)


def free_loop(s: Session, ov: Overrides, run: Run) -> Iterator[Event]:
    """Free generation from run.snap (soft cap 256 tokens, hard 356, stops on eos); stores gen_1."""
    yield ReplyStart(None)
    done = False
    try:
        yield from sample_tokens(
            s,
            run,
            s._params(ov, max_tokens=FREE_GEN_HARD),
            chat=False,
            stops=(),
            soft_max=FREE_GEN_LEN,
            newline_bias=s._free_newline_bias,
        )
        done = True
    finally:
        s._snaps["gen_1"] = run.snap
    if done:
        yield Stopped(run.reason, run.text)
        yield s._stats(run)
