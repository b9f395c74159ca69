"""Threads: work done in parallel gives exactly the results of the same work done one after the other.

ctypes releases the GIL around every native call, so these threads really run the engine at the same time.
- Two contexts on one loaded rwkvc_model (the C API's sharing rule: a model is immutable and shared, a context
  belongs to one thread), each with its own worker pool of 2 threads.
- Two Model objects on one file, and two Sessions on one Model: the Python API's ways of sharing.
- One native tokenizer trie encoding from four threads.
- rwkvc_last_error is per thread: two threads failing differently at the same time read their own message.
Each comparison is exact (max |a - b| == 0): the same tokens through the same kernels must give the same bits.
"""

from __future__ import annotations

import ctypes
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "fuzz"))

import seeds

ROUNDS = 6


@pytest.fixture(scope="module")
def model_path(tmp_path_factory, native) -> Path:
    path = tmp_path_factory.mktemp("threads") / "m.gguf"
    return seeds.write_tiny_model(path, "f16", tokenizer="bytes", n_vocab=256, n_embd=128, head_size=64, n_layer=2,
                                  ranks=(16, 16, 16, 16), n_ffn=256)


def _token_runs(n_vocab: int) -> list[np.ndarray]:
    rng = np.random.default_rng(7)
    return [rng.integers(0, n_vocab, 300 + 37 * i) for i in range(2)]


def _in_threads(fns: list) -> list:
    """Runs each fn in its own thread, started together; re-raises the first exception."""
    results: list = [None] * len(fns)
    errors: list[BaseException] = []
    barrier = threading.Barrier(len(fns))

    def run(i: int) -> None:
        try:
            barrier.wait()
            results[i] = fns[i]()
        except BaseException as e:  # noqa: BLE001 - handed to the main thread.
            errors.append(e)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(fns))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    return results


def _max_abs(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.max(np.abs(a.astype(np.float64) - b.astype(np.float64))))


def test_two_contexts_on_one_native_model(model_path, native):
    """The C contract itself: one rwkvc_model, two rwkvc_ctx used by two threads at once."""
    from rwkvchat import _native

    lib = native
    model = ctypes.c_void_p()
    _native.check(lib.rwkvc_model_load(str(model_path).encode(), 2, ctypes.byref(model)))
    info = _native.Info()
    _native.check(lib.rwkvc_model_info(model, ctypes.byref(info)))
    ctxs = [ctypes.c_void_p(), ctypes.c_void_p()]
    for c in ctxs:
        _native.check(lib.rwkvc_ctx_new(model, 2, ctypes.byref(c)))
    fp = ctypes.POINTER(ctypes.c_float)
    runs = _token_runs(info.n_vocab)

    def work(i: int) -> np.ndarray:
        state = np.empty(info.state_len, np.float32)
        _native.check(lib.rwkvc_state_init(model, state.ctypes.data_as(fp), state.size))
        outs = []
        for _ in range(ROUNDS):
            toks = runs[i].astype(np.uint32)
            logits = np.empty((toks.size, info.n_vocab), np.float32)
            _native.check(lib.rwkvc_eval_all(ctxs[i], toks.ctypes.data_as(ctypes.POINTER(ctypes.c_uint32)),
                                             toks.size, state.ctypes.data_as(fp), state.size,
                                             logits.ctypes.data_as(fp), logits.size))
            outs.append(logits)
        return np.concatenate(outs), state.copy()

    try:
        serial = [work(0), work(1)]
        parallel = _in_threads([lambda: work(0), lambda: work(1)])
    finally:
        for c in ctxs:
            lib.rwkvc_ctx_free(c)
        lib.rwkvc_model_free(model)
    for (sl, ss), (pl, ps) in zip(serial, parallel):
        assert _max_abs(sl, pl) == 0.0 and _max_abs(ss, ps) == 0.0


def _model_work(m, tokens: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    s = m.new_state()
    outs = [m.forward_all(tokens, s) for _ in range(ROUNDS)]
    return np.concatenate(outs), s.to_numpy()


def test_two_models_on_one_file(model_path):
    from rwkvchat.model import Model

    with Model(model_path, threads=2) as a, Model(model_path, threads=2) as b:
        runs = _token_runs(a.n_vocab)
        serial = [_model_work(a, runs[0]), _model_work(b, runs[1])]
        parallel = _in_threads([lambda: _model_work(a, runs[0]), lambda: _model_work(b, runs[1])])
    for (sl, ss), (pl, ps) in zip(serial, parallel):
        assert _max_abs(sl, pl) == 0.0 and _max_abs(ss, ps) == 0.0


def test_one_model_shared_by_two_threads(model_path):
    """Two threads calling forward() on the same Model with their own States (e.g. two chats served by one
    loaded model). Model keeps one native context, which the C API allows to only one thread at a time, so
    Model must serialize its use (or give each thread its own context)."""
    from rwkvchat.model import Model

    # One worker: while the bug is there, the two threads race on the context's scratch buffers only, not on
    # its worker pool (whose dispatch is single-caller and could deadlock).
    with Model(model_path, threads=1) as m:
        runs = _token_runs(m.n_vocab)
        serial = [_model_work(m, runs[0]), _model_work(m, runs[1])]
        parallel = _in_threads([lambda: _model_work(m, runs[0]), lambda: _model_work(m, runs[1])])
    for (sl, ss), (pl, ps) in zip(serial, parallel):
        assert _max_abs(sl, pl) == 0.0 and _max_abs(ss, ps) == 0.0


def test_two_sessions_on_one_model(model_path):
    from rwkvchat.model import Model
    from rwkvchat.session import Session

    def chat(m, text: str) -> list:
        s = Session(m, seed=5)
        s.params = s.params.replace(max_tokens=40)
        for _ in s.prime():
            pass
        for _ in range(3):
            for _ in s.send(text):
                pass
        return [s.transcript, s.snapshot("chat").state.to_numpy()]

    with Model(model_path, threads=1) as a, Model(model_path, threads=1) as b:
        serial = [chat(a, "hello there " * 20), chat(b, "what is the time? " * 15)]
        parallel = _in_threads([lambda: chat(a, "hello there " * 20), lambda: chat(b, "what is the time? " * 15)])
    for (st, ss), (pt, ps) in zip(serial, parallel):
        assert st == pt and _max_abs(ss, ps) == 0.0


def test_tokenizer_trie_shared_by_four_threads(native):
    from rwkvchat.tokenizer import WorldTokenizer

    tok = WorldTokenizer(seeds.tiny_vocab(200), native=True)
    assert tok.native
    texts = [("hello world the " * 300 + str(i)) * (i + 1) for i in range(4)]
    serial = [tok.encode(t) for t in texts]
    for _ in range(3):
        parallel = _in_threads([lambda t=t: tok.encode(t) for t in texts])
        assert parallel == serial


def test_last_error_is_per_thread(model_path, native):
    from rwkvchat import _native

    lib = native
    model = ctypes.c_void_p()
    _native.check(lib.rwkvc_model_load(str(model_path).encode(), 1, ctypes.byref(model)))
    ctx = [ctypes.c_void_p(), ctypes.c_void_p()]
    for c in ctx:
        _native.check(lib.rwkvc_ctx_new(model, 1, ctypes.byref(c)))
    info = _native.Info()
    _native.check(lib.rwkvc_model_info(model, ctypes.byref(info)))
    fp = ctypes.POINTER(ctypes.c_float)

    def bad_token() -> set[str]:
        state = np.zeros(info.state_len, np.float32)
        tok = (ctypes.c_uint32 * 1)(info.n_vocab + 5)
        seen = set()
        for _ in range(300):
            assert lib.rwkvc_eval(ctx[0], tok, 1, state.ctypes.data_as(fp), state.size, None, 0) != 0
            seen.add(_native.last_error())
        return seen

    def bad_state() -> set[str]:
        state = np.zeros(info.state_len + 3, np.float32)
        tok = (ctypes.c_uint32 * 1)(1)
        seen = set()
        for _ in range(300):
            assert lib.rwkvc_eval(ctx[1], tok, 1, state.ctypes.data_as(fp), state.size, None, 0) != 0
            seen.add(_native.last_error())
        return seen

    try:
        tokens_seen, states_seen = _in_threads([bad_token, bad_state])
    finally:
        for c in ctx:
            lib.rwkvc_ctx_free(c)
        lib.rwkvc_model_free(model)
    assert len(tokens_seen) == 1 and len(states_seen) == 1, (tokens_seen, states_seen)
    assert tokens_seen != states_seen
    assert str(info.n_vocab + 5) in next(iter(tokens_seen)), tokens_seen
