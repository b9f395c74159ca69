"""Perplexity: the scoring of next-token predictions, on fake models whose answers are known exactly, and the
command on a real model file."""

from __future__ import annotations

import math

import numpy as np
import pytest

from rwkvchat.errors import RwkvchatError
from rwkvchat.perplexity import perplexity


class UniformModel:
    """Logits all zero: every token has probability 1/V, so the perplexity is exactly V."""

    def __init__(self, n_vocab: int) -> None:
        self.n_vocab = n_vocab

    def new_state(self) -> list[int]:
        return []

    def forward_all(self, tokens: np.ndarray, state: list[int]) -> np.ndarray:
        state.extend(int(t) for t in tokens)
        return np.zeros((len(tokens), self.n_vocab), dtype=np.float32)


class CountingModel(UniformModel):
    """Predicts "previous token + 1" with logit 3 (others 0), using the state it carries between calls."""

    def forward_all(self, tokens: np.ndarray, state: list[int]) -> np.ndarray:
        out = np.zeros((len(tokens), self.n_vocab), dtype=np.float32)
        for i, t in enumerate(tokens):
            state.append(int(t))
            out[i, (state[-1] + 1) % self.n_vocab] = 3.0
        return out


def test_uniform_logits_give_vocabulary_size():
    r = perplexity(UniformModel(50), list(range(20)), chunk=7)
    assert r.n_scored == 19
    assert r.perplexity == pytest.approx(50.0, rel=1e-9)
    assert r.nll == pytest.approx(math.log(50.0), rel=1e-9)


def test_chunking_does_not_change_the_result():
    tokens = [1, 2, 3, 5, 6, 7, 8, 2, 3, 4, 9, 10, 11, 0, 1]
    results = [perplexity(CountingModel(12), tokens, chunk=c).nll for c in (1, 2, 5, 100)]
    assert max(results) - min(results) < 1e-12
    # Hand count: p(hit) = e^3 / (e^3 + 11), p(miss) = 1 / (e^3 + 11); 11 of the 14 predictions hit.
    z = math.exp(3) + 11
    expected = -(11 * (3 - math.log(z)) + 3 * (-math.log(z))) / 14
    assert results[0] == pytest.approx(expected, rel=1e-9)


def test_too_short_text_is_an_error():
    with pytest.raises(RwkvchatError, match="at least two tokens"):
        perplexity(UniformModel(5), [3])


def test_command_reports_perplexity(shared, native, tmp_path, capsys):
    from rwkvchat.cli import run

    text = tmp_path / "t.txt"
    text.write_text("The quick brown fox jumps over the lazy dog. " * 6, encoding="utf-8")
    model = shared / "conformance/llamacpp-gguf/llamacpp-v7-Q4_0.gguf"
    assert run(["perplexity", str(model), str(text), "--ctx", "16", "-t", "1"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("perplexity ") and "ms/token" in out
    value = float(out.split()[1])
    assert 1.0 < value < 1e9
