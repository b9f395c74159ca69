"""Token sampling: the ChatRWKV sampler, penalties with decay, the chat newline schedule, stop strings.

Everything here is a pure function or a small value object over numpy arrays, so the formulas can be
tested against hand-computed cases (chat-behaviour.md B4-B6). No Python loop ever runs over the
vocabulary: one sampling step is a handful of numpy operations on a float array of n_vocab entries.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

__all__ = [
    "Penalties",
    "SamplingParams",
    "StopMatcher",
    "chat_newline_bias",
    "frequency_weight",
    "probabilities",
    "sample",
]

# Text of tokens that never accumulate a frequency penalty (PIPELINE.generate): spaces, tab, digits.
_FREQUENCY_EXEMPT = " \t0123456789"


@dataclass(frozen=True)
class SamplingParams:
    """How one reply is sampled. Frozen: a per-message override makes a new value with `replace`.

    temperature: 0 means greedy (ChatRWKV's rule: T=0 becomes T=1, top_p=0).
    top_p: nucleus mass in [0, 1]; 0 keeps only the most probable token (and its ties).
    top_k: 0 disables; otherwise at most k tokens survive.
    presence / frequency: penalties subtracted from logits of tokens generated in this reply.
    decay: multiplies the frequency counts after each sampled token (0.996 is a half-life of ~173 tokens).
    max_tokens: hard cap on generated tokens.
    stop: strings that end the generation (the text before the first match is kept).
    token_ban: token ids that can never be sampled.
    logit_bias: (token id, additive bias) pairs.
    """

    temperature: float = 1.0
    top_p: float = 0.85
    top_k: int = 0
    presence: float = 0.2
    frequency: float = 0.2
    decay: float = 0.996
    max_tokens: int = 999
    stop: tuple[str, ...] = ()
    token_ban: tuple[int, ...] = ()
    logit_bias: tuple[tuple[int, float], ...] = ()

    def replace(self, **changes: object) -> SamplingParams:
        """A copy with some fields changed; None values are ignored, so overrides pass through as they are."""
        return dataclasses.replace(self, **{k: v for k, v in changes.items() if v is not None})

    @classmethod
    def from_dict(cls, d: dict[str, object]) -> SamplingParams:
        """Builds params from a preset's `sampling` table, refusing unknown keys (a typo should not pass)."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ValueError(f"unknown sampling setting(s): {', '.join(unknown)}")
        values = dict(d)
        for key in ("stop", "token_ban"):
            if key in values:
                values[key] = tuple(values[key])  # type: ignore[arg-type]
        if "logit_bias" in values:
            values["logit_bias"] = tuple((int(k), float(v)) for k, v in values["logit_bias"])  # type: ignore
        return cls(**values)  # type: ignore[arg-type]


def probabilities(logits: np.ndarray, temperature: float, top_p: float, top_k: int = 0) -> np.ndarray:
    """The distribution ChatRWKV's `sample_logits` draws from (B5), as float64[n_vocab] summing to 1.

    Order matters and follows ChatRWKV: softmax, then the top-p cut (ties at the cutoff survive), then
    top-k, then temperature applied to the truncated probabilities (p ** (1/T)), then renormalisation.
    """
    temperature, top_p = _greedy_as_nucleus(temperature, top_p)
    p = _softmax32(logits)
    if top_p < 1.0:
        p[p < _nucleus_cutoff(p, top_p)] = 0.0
    if 0 < top_k < len(p):
        outside = np.argpartition(p, len(p) - top_k)[: len(p) - top_k]
        p[outside] = 0.0
    q = p.astype(np.float64)
    if temperature != 1.0:
        kept = q > 0
        q[kept] = q[kept] ** (1.0 / temperature)
    return q / q.sum()


def _greedy_as_nucleus(temperature: float, top_p: float) -> tuple[float, float]:
    """Temperature <= 0 means greedy, which is the top-p cut at 0 (the most likely token, ties kept) at T = 1."""
    return (1.0, 0.0) if temperature <= 0 else (temperature, top_p)


def _softmax32(logits: np.ndarray) -> np.ndarray:
    """Softmax in float32, as in ChatRWKV (a float64 exp over 65536 logits costs ~1 ms)."""
    x = np.asarray(logits, dtype=np.float32)
    p = np.exp(x - np.max(x))
    p /= p.sum()
    return p


def _nucleus_cutoff(p: np.ndarray, top_p: float) -> float:
    """The probability at the first sorted position where the running mass reaches top_p.

    Equal to sorting all of p, but sorts only the k largest (k = 64, 512, ... until they hold top_p):
    a full sort of a 65536-entry vocabulary costs milliseconds per token, the partition microseconds.
    """
    n = len(p)
    k = min(n, 64)
    while True:
        top = np.sort(p[np.argpartition(p, n - k)[n - k :]] if k < n else p)[::-1]
        cumulative = np.cumsum(top)
        if cumulative[-1] >= top_p or k == n:
            return float(top[min(int(np.searchsorted(cumulative, top_p, side="left")), k - 1)])
        k = min(n, k * 8)


def sample(logits: np.ndarray, params: SamplingParams, rng: np.random.Generator) -> int:
    """Draws one token id from `logits` (float32[n_vocab], already biased and penalised).

    The draw is the one over `probabilities`: the token i where a uniform number times the total mass falls in
    the running sum over the surviving tokens in id order. Without top-k only the nucleus is carried past the
    top-p cut: a greedy step took ~0.75 ms here in passes over the whole vocabulary (zeroing, a float64 copy,
    renormalising, then finding the survivors again), 8% of a 0.4B model's decode step. The survivors' masses
    are the same numbers; only the renormalising sum runs over fewer terms, which the draw scales away.
    """
    temperature, top_p = _greedy_as_nucleus(params.temperature, params.top_p)
    if top_p < 1.0 and not 0 < params.top_k < len(logits):
        p = _softmax32(logits)
        cutoff = _nucleus_cutoff(p, top_p)
        kept = np.flatnonzero(p >= cutoff) if cutoff > 0 else np.flatnonzero(p)
        if len(kept) > 0:  # none only when the logits hold NaN or are all -inf: the general path decides
            q = p[kept].astype(np.float64)
            if temperature != 1.0:
                q = q ** (1.0 / temperature)
            return _draw(q / q.sum(), rng, kept)
    return _draw(probabilities(logits, params.temperature, params.top_p, params.top_k), rng)


def _draw(p: np.ndarray, rng: np.random.Generator, ids: np.ndarray | None = None) -> int:
    """The index drawn by inverse CDF over the nonzero entries of p (no draw when one is left), mapped through
    ids where given."""
    nonzero = np.flatnonzero(p)
    if len(nonzero) == 1:
        i = int(nonzero[0])
    else:
        # Inverse-CDF draw over the surviving tokens: one uniform number per token keeps seeded runs reproducible.
        cumulative = np.cumsum(p[nonzero])
        i = int(nonzero[min(int(np.searchsorted(cumulative, rng.random() * cumulative[-1], side="right")),
                            len(nonzero) - 1)])
    return int(ids[i]) if ids is not None else i


def frequency_weight(token_text: bytes | str) -> float:
    """w(x) of B6: 0 for tokens whose text is a run of spaces/tab/digits from " \\t0123456789", else 1.

    Such tokens still get the presence penalty; they just never accumulate a frequency penalty, so
    numbers and indentation are not discouraged.
    """
    if isinstance(token_text, bytes):
        token_text = token_text.decode("utf-8", errors="replace")
    # As in PIPELINE.generate, a token with no text ("" is in every string) is exempt too.
    return 0.0 if token_text in _FREQUENCY_EXEMPT else 1.0


class Penalties:
    """Presence and decayed frequency penalties over the tokens generated in one reply (B6).

    Memory is bounded whatever the reply length: two arrays of n_vocab entries, never a token list.
    counts: float32[n_vocab], c[v] = sum over past occurrences s of w(x_s) * decay**(t-1-s).
    seen: bool[n_vocab], the keys of c (presence applies in full to them).
    """

    def __init__(self, n_vocab: int, presence: float, frequency: float, decay: float) -> None:
        self.presence = float(presence)
        self.frequency = float(frequency)
        self.decay = float(decay)
        self.counts = np.zeros(n_vocab, dtype=np.float32)
        self.seen = np.zeros(n_vocab, dtype=bool)

    def apply(self, logits: np.ndarray) -> None:
        """Subtracts presence + frequency * c[v] from every seen token's logit, in place."""
        if self.presence == 0.0 and self.frequency == 0.0:
            return
        logits[self.seen] -= self.presence + self.frequency * self.counts[self.seen]

    def update(self, token: int, weight: float = 1.0) -> None:
        """Records a sampled token: decay every count, then add its weight."""
        self.counts *= self.decay
        self.counts[token] += weight
        self.seen[token] = True


def chat_newline_bias(j: int, short: int = 40, long: int = 150) -> float:
    """Bias added to the newline logit when choosing reply token j (0-based), ChatRWKV's schedule (B4).

    Tokens 0 and 1 can never be a newline. Token j >= 2 sees the adjustment ChatRWKV computes at step
    i = j - 1: (i - short) / 10 up to `short` (rising from -3.9 to 0), 0 up to `long`, then
    min(3, 0.25 * (i - long)), which pushes long replies toward ending.
    """
    if j <= 1:
        return float("-inf")
    i = j - 1
    if i <= short:
        return (i - short) / 10.0
    if i <= long:
        return 0.0
    return min(3.0, 0.25 * (i - long))


class StopMatcher:
    """Finds stop strings in streamed text and holds back any tail that could start one.

    feed() returns (text safe to show, matched stop string or None). Text before the first match is
    returned; a match spanning chunk boundaries is found because the held-back tail is re-examined.
    """

    def __init__(self, stops: tuple[str, ...] | list[str]) -> None:
        self.stops = tuple(s for s in stops if s)
        self.pending = ""

    def feed(self, text: str) -> tuple[str, str | None]:
        buf = self.pending + text
        best: tuple[int, str] | None = None
        for s in self.stops:
            i = buf.find(s)
            if i >= 0 and (best is None or i < best[0]):
                best = (i, s)
        if best is not None:
            self.pending = ""
            return buf[: best[0]], best[1]
        hold = 0
        for s in self.stops:
            for k in range(min(len(s) - 1, len(buf)), hold, -1):
                if buf.endswith(s[:k]):
                    hold = k
                    break
        self.pending = buf[len(buf) - hold :]
        return buf[: len(buf) - hold], None

    def flush(self) -> str:
        """Returns the held-back tail at the end of a generation that stopped for another reason."""
        out, self.pending = self.pending, ""
        return out
