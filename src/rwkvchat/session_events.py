"""The events a Session yields (the REPL and `gen` render them) and the bookkeeping of one generation.

Kept apart from session.py so the session's control flow stays readable; part of the session layer.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Union

from .state import Snapshot

if TYPE_CHECKING:
    from .session import Session

TRANSCRIPT_TAIL = 8  # Transcript entries a session keeps in memory; the whole transcript is in a file.

__all__ = [
    "TRANSCRIPT_TAIL",
    "Error",
    "Event",
    "ExitRequested",
    "Info",
    "ReplyStart",
    "Run",
    "Stats",
    "Stopped",
    "TokenText",
    "stats_text",
]


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


Event = Union[TokenText, ReplyStart, Stopped, Info, Error, Stats, ExitRequested]  # noqa: UP007 - a runtime alias.


@dataclass
class Run:
    """A generation in progress: the live snapshot and what it has produced so far."""

    snap: Snapshot
    text: str = ""
    n: int = 0
    reason: str = "length"
    stop: str | None = None
    prefill_tokens: int = 0
    prefill_s: float = 0.0
    t0: float = 0.0


def stats_text(s: Session) -> str:
    """The /stats text: context size, the last reply's speed and the sampling settings."""
    chat = s._snaps.get("chat")
    lines = [f"context: {chat.n_tokens if chat else 0} tokens; turns: {s.turns}; template: {s.template.name}"]
    last = s.last_stats
    if last:
        lines.append(
            f"last reply: {last.generated_tokens} tokens in {last.generate_s:.2f} s"
            f" ({last.tokens_per_s:.1f} tokens/s);"
            f" prompt {last.prompt_tokens} tokens in {last.prefill_s:.2f} s"
        )
    p = s.params
    lines.append(
        f"temp {p.temperature:g}, top_p {p.top_p:g}, top_k {p.top_k}, presence {p.presence:g}, "
        f"frequency {p.frequency:g}, decay {p.decay:g}, max_tokens {p.max_tokens}, seed {s.seed}"
    )
    return "\n".join(lines)
