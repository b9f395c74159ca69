"""Perplexity of a model on a token sequence: how well it predicts each next token (lower is better).

The whole text is one recurrent pass: tokens are fed in chunks of `chunk` through Model.forward_all with the
state carried from chunk to chunk, so the chunk size bounds memory (chunk x n_vocab float32 logits) without
cutting the model's context. The first token is only context; each later token is scored.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .errors import RwkvchatError


@dataclass(frozen=True)
class PerplexityResult:
    perplexity: float     # exp(mean negative log-likelihood per scored token)
    nll: float            # mean negative log-likelihood, nats per token
    n_scored: int         # tokens predicted (len(tokens) - 1)
    ms_per_token: float   # wall time of the forward passes per fed token


def _log_softmax_at(logits: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """log p(target) per row of float32 (n, n_vocab) logits, computed in float64."""
    z = logits.astype(np.float64)
    z -= z.max(axis=1, keepdims=True)
    lse = np.log(np.exp(z).sum(axis=1))
    return z[np.arange(z.shape[0]), targets] - lse


def perplexity(model: Any, tokens: Sequence[int], chunk: int = 512,
               progress: Callable[[int, int], None] | None = None) -> PerplexityResult:
    """Scores tokens[1:] given their prefixes. progress(done, total) is called after each chunk."""
    if chunk < 1:
        raise RwkvchatError(f"chunk size must be >= 1, got {chunk}")
    ids = np.asarray(tokens, dtype=np.int64)
    if ids.shape[0] < 2:
        raise RwkvchatError("the text must be at least two tokens long to measure perplexity")
    state = model.new_state()
    n = ids.shape[0]
    total_nll = 0.0
    elapsed = 0.0
    fed = 0
    for start in range(0, n - 1, chunk):
        part = ids[start:min(start + chunk, n - 1)]
        t0 = time.perf_counter()
        logits = model.forward_all(part, state)
        elapsed += time.perf_counter() - t0
        fed += part.shape[0]
        targets = ids[start + 1:start + 1 + part.shape[0]]
        total_nll -= float(_log_softmax_at(logits, targets).sum())
        if progress is not None:
            progress(fed, n - 1)
    nll = total_nll / (n - 1)
    return PerplexityResult(perplexity=math.exp(nll), nll=nll, n_scored=n - 1, ms_per_token=1000.0 * elapsed / fed)
