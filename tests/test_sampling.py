"""Sampler formulas against hand-computed cases (chat-behaviour.md B4-B6)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from rwkvchat.sampling import (
    Penalties,
    SamplingParams,
    StopMatcher,
    chat_newline_bias,
    frequency_weight,
    probabilities,
    sample,
)

P4 = np.log(np.array([0.5, 0.3, 0.15, 0.05], dtype=np.float32))


def close(a, b, tol=1e-6):
    return float(np.max(np.abs(np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)))) < tol


@pytest.mark.parametrize(
    "temperature, top_p, top_k, expected",
    [
        (1.0, 1.0, 0, [0.5, 0.3, 0.15, 0.05]),  # nothing cut
        (1.0, 0.7, 0, [0.625, 0.375, 0, 0]),  # cum 0.5, 0.8 >= 0.7: cutoff 0.3
        (1.0, 0.45, 0, [1, 0, 0, 0]),  # first cum 0.5 >= 0.45
        (1.0, 0.0, 0, [1, 0, 0, 0]),  # top_p 0 = greedy
        (0.0, 1.0, 0, [1, 0, 0, 0]),  # T 0 = greedy
        (
            2.0,
            0.7,
            0,
            [
                math.sqrt(0.5) / (math.sqrt(0.5) + math.sqrt(0.3)),
                math.sqrt(0.3) / (math.sqrt(0.5) + math.sqrt(0.3)),
                0,
                0,
            ],
        ),
        (1.0, 1.0, 2, [0.625, 0.375, 0, 0]),  # top-k 2
        (1.0, 0.9, 1, [1, 0, 0, 0]),  # top-k after top-p
        (0.5, 1.0, 0, np.array([0.25, 0.09, 0.0225, 0.0025]) / 0.3650),  # p ** 2 renormalised
    ],
)
def test_probabilities_hand_computed(temperature, top_p, top_k, expected):
    assert close(probabilities(P4, temperature, top_p, top_k), expected)


def test_ties_at_the_cutoff_survive():
    p = probabilities(np.array([1.0, 1.0, 0.0], dtype=np.float32), 1.0, 0.0)
    assert close(p, [0.5, 0.5, 0.0])


def test_temperature_after_top_p_equals_softmax_over_nucleus():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=50).astype(np.float32) * 3
    p = probabilities(logits, 0.7, 0.6)
    keep = p > 0
    q = np.exp(logits[keep] / 0.7 - np.max(logits[keep] / 0.7))
    assert close(p[keep], q / q.sum(), 1e-5)


def test_sample_greedy_is_argmax_and_seed_reproduces():
    rng = np.random.default_rng(1)
    logits = rng.normal(size=1000).astype(np.float32)
    greedy = SamplingParams(temperature=0.0)
    assert all(sample(logits, greedy, np.random.default_rng(i)) == int(np.argmax(logits)) for i in range(5))
    p = SamplingParams(temperature=1.0, top_p=1.0)
    a = [sample(logits, p, np.random.default_rng(7)) for _ in range(3)]
    r1, r2 = np.random.default_rng(42), np.random.default_rng(42)
    assert [sample(logits, p, r1) for _ in range(20)] == [sample(logits, p, r2) for _ in range(20)]
    assert len(set(a)) == 1


def test_sample_frequencies_follow_the_distribution():
    rng = np.random.default_rng(3)
    p = SamplingParams(temperature=1.0, top_p=0.7)
    draws = np.array([sample(P4, p, rng) for _ in range(20000)])
    assert set(np.unique(draws)) == {0, 1}
    assert abs(np.mean(draws == 0) - 0.625) < 0.015


def test_penalties_closed_form():
    pen = Penalties(8, presence=0.4, frequency=0.4, decay=0.5)
    for tok in (3, 3, 5):
        pen.update(tok, 1.0)
    logits = np.zeros(8, dtype=np.float32)
    pen.apply(logits)
    # c[3] = 1*0.5**2 + 1*0.5 = 0.75 after the decay applied by token 5; c[5] = 1.
    expected = np.zeros(8)
    expected[3] = -(0.4 + 0.4 * 0.75)
    expected[5] = -(0.4 + 0.4 * 1.0)
    assert close(logits, expected)


def test_exempt_tokens_get_presence_but_no_frequency():
    pen = Penalties(4, presence=0.3, frequency=1.0, decay=1.0)
    pen.update(2, frequency_weight(b" "))
    pen.update(2, frequency_weight(b" "))
    logits = np.zeros(4, dtype=np.float32)
    pen.apply(logits)
    assert close(logits, [0, 0, -0.3, 0])


@pytest.mark.parametrize(
    "text, w",
    [(b" ", 0), (b"\t", 0), (b"7", 0), (b"12", 0), (b"  ", 1), (b" 1", 1), (b"a", 1), (b"\n", 1), ("9", 0)],
)
def test_frequency_weight(text, w):
    assert frequency_weight(text) == w


@pytest.mark.parametrize(
    "j, bias",
    [
        (0, -math.inf),
        (1, -math.inf),
        (2, -3.9),
        (21, -2.0),
        (41, 0.0),
        (100, 0.0),
        (151, 0.0),
        (152, 0.25),
        (160, 2.25),
        (170, 3.0),
        (999, 3.0),
    ],
)
def test_chat_newline_schedule(j, bias):
    assert (
        chat_newline_bias(j) == pytest.approx(bias) if math.isfinite(bias) else chat_newline_bias(j) == bias
    )


def test_stop_matcher_across_chunks_and_holdback():
    m = StopMatcher(["\n\n", "\nUser:"])
    assert m.feed("Hello") == ("Hello", None)
    assert m.feed(" there\n") == (" there", None)
    assert m.feed("Us") == ("", None)
    assert m.feed("e") == ("", None)
    assert m.feed("r: hi") == ("", "\nUser:")
    m = StopMatcher(["\n\n"])
    assert m.feed("a\n") == ("a", None)
    assert m.feed("b") == ("\nb", None)
    assert m.feed("\n") == ("", None)
    assert m.flush() == "\n"
    assert StopMatcher(["D", "END"]).feed("xxENDyy") == ("xx", "END")  # the earliest match wins
    assert StopMatcher([]).feed("a\n\n") == ("a\n\n", None)


def test_params_replace_ignores_none_and_from_dict_rejects_typos():
    p = SamplingParams()
    assert p.replace(temperature=None, top_p=0.1) == SamplingParams(top_p=0.1)
    assert SamplingParams.from_dict({"stop": ["x"], "logit_bias": [[1, 2.0]]}).stop == ("x",)
    with pytest.raises(ValueError, match="tempreature"):
        SamplingParams.from_dict({"tempreature": 1.0})


def test_sampler_has_no_python_loop_over_the_vocabulary():
    # A 65536-entry vocabulary samples fast enough for chat only if the work is vectorised; this checks
    # behaviour at that size rather than time: the result is a valid id and the distribution sums to 1.
    logits = np.random.default_rng(0).normal(size=65536).astype(np.float32)
    p = probabilities(logits, 1.0, 0.3, 100)
    assert abs(p.sum() - 1.0) < 1e-9 and 0 < np.count_nonzero(p) <= 100
    assert 0 <= sample(logits, SamplingParams(top_k=100), np.random.default_rng(0)) < 65536


def _reference_sample(logits, params, rng):
    """The draw over the whole-vocabulary `probabilities` (sample's general path, and what it returned before
    its nucleus-only fast path)."""
    p = probabilities(logits, params.temperature, params.top_p, params.top_k)
    nonzero = np.flatnonzero(p)
    if len(nonzero) == 1:
        return int(nonzero[0])
    cumulative = np.cumsum(p[nonzero])
    i = int(np.searchsorted(cumulative, rng.random() * cumulative[-1], side="right"))
    return int(nonzero[min(i, len(nonzero) - 1)])


@pytest.mark.parametrize("temperature", [0.0, 0.3, 1.0, 1.7])
@pytest.mark.parametrize("top_p", [0.0, 0.3, 0.85, 0.999])
def test_sample_draws_as_the_whole_vocabulary_distribution(temperature, top_p):
    # Peaked, flat, tied and partly banned logits; the same seed must give the same token and leave the
    # generator in the same state (a draw is skipped exactly when one token survives).
    gen = np.random.default_rng(int(temperature * 10 + top_p * 1000))
    params = SamplingParams(temperature=temperature, top_p=top_p)
    for case in range(60):
        n = int(gen.choice([5, 300, 65536]))
        logits = (gen.normal(size=n) * gen.choice([0.1, 2.0, 8.0])).astype(np.float32)
        if case % 4 == 1:
            logits[gen.integers(0, n, 3)] = logits.max()  # ties at the top
        if case % 4 == 2:
            logits[gen.integers(0, n, n // 2)] = -np.inf  # banned tokens
        if case % 4 == 3:
            logits = np.round(logits)  # many ties everywhere
        seed = int(gen.integers(1 << 30))
        r1, r2 = np.random.default_rng(seed), np.random.default_rng(seed)
        assert sample(logits, params, r1) == _reference_sample(logits, params, r2), (case, n)
        assert r1.random() == r2.random()


@pytest.mark.filterwarnings("ignore:invalid value encountered")
def test_sample_degenerate_logits_take_the_general_path():
    # Every token banned: no nucleus to cut; the result is an id and nothing raises.
    logits = np.full(16, -np.inf, dtype=np.float32)
    assert 0 <= sample(logits, SamplingParams(), np.random.default_rng(0)) < 16
