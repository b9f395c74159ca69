"""Long sessions keep constant memory: the recurrent state is constant-size, so nothing may grow per token.

Each measurement runs in a child process (a fresh interpreter, nothing else allocated alongside) on a tiny
random model with the bytes tokenizer, so 100k tokens take seconds:
- Model level: 100k tokens through Model.forward in sequence-mode chunks of 256, then 5k single tokens.
- Session level: 50 chat turns of a 2000-character message (prefill in chunks) plus a short sampled reply,
  about 100k tokens, with autosave after every turn (so the saving path is measured too).
Resident memory (/proc/self/statm) is read after a warm-up of about 20k tokens and at the end; the difference
must stay under 2 MiB, i.e. under ~25 bytes per token: keeping any per-token record (an int per token is
~36 bytes in a list, logits 1 KB) fails it. The transcript kept for saving is checked on its own: it must be
bounded (or streamed to the file) instead of holding every message of a days-long chat.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "fuzz"))

import seeds

MAX_GROWTH = 2 << 20        # Bytes of RSS growth allowed after warm-up.
MAX_TRANSCRIPT = 64 << 10   # Characters of transcript text a session may hold in memory.

_CHILD = r"""
import gc, json, os, sys
from rwkvchat.model import Model

def rss():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

mode, path, work = sys.argv[1], sys.argv[2], sys.argv[3]
points = []
if mode == "model":
    import numpy as np
    m = Model(path, threads=1)
    s = m.new_state()
    rng = np.random.default_rng(0)
    tokens = rng.integers(0, m.n_vocab, 100_000)
    for i in range(0, len(tokens), 256):
        m.forward(tokens[i:i + 256], s)
        if i // 256 in (80, 390):   # about 20k tokens, then the end of the 100k
            gc.collect()
            points.append((i + 256, rss()))
    base = rss()
    for t in tokens[:5000]:
        m.forward([int(t)], s)
    gc.collect()
    points.append((105_000, rss()))
    assert np.isfinite(s.to_numpy()).all()
    print(json.dumps({"points": points, "tokens": 105_000}))
else:
    from rwkvchat.session import Session
    m = Model(path, threads=1)
    sess = Session(m, seed=0, save_path=os.path.join(work, "auto.npz"))
    sess.params = sess.params.replace(max_tokens=24)
    for _ in sess.prime():
        pass
    msg = ("The quick brown fox jumps over the lazy dog. " * 45)[:2000]
    for turn in range(50):
        for _ in sess.send(msg):
            pass
        if turn in (9, 49):
            gc.collect()
            points.append((sess.snapshot("chat").n_tokens, rss()))
    kept = sum(len(str(t.get("text", ""))) for t in sess.transcript)
    print(json.dumps({"points": points, "tokens": sess.snapshot("chat").n_tokens, "transcript_chars": kept,
                      "saved_bytes": os.path.getsize(os.path.join(work, "auto.npz"))}))
"""


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory, native) -> Path:
    path = tmp_path_factory.mktemp("long") / "m.gguf"
    return seeds.write_tiny_model(path, "f32", tokenizer="bytes", n_vocab=256, n_embd=32, head_size=16)


def _child(mode: str, model: Path, work: Path) -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO / "src"), env.get("PYTHONPATH", "")])
    proc = subprocess.run([sys.executable, "-c", _CHILD, mode, str(model), str(work)], check=False, capture_output=True,
                          text=True, env=env, timeout=900)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _assert_flat(result: dict) -> None:
    (t0, rss0), *rest = result["points"]
    for tokens, rss in rest:
        growth = rss - rss0
        assert growth < MAX_GROWTH, (
            f"resident memory grew by {growth / 1024:.0f} KiB between token {t0} and token {tokens} "
            f"({growth / (tokens - t0):.1f} bytes per token): {result}")


def test_model_memory_is_flat_over_100k_tokens(tiny_model, tmp_path):
    result = _child("model", tiny_model, tmp_path)
    assert result["tokens"] >= 100_000
    _assert_flat(result)


@pytest.fixture(scope="module")
def session_run(tiny_model, tmp_path_factory) -> dict:
    return _child("session", tiny_model, tmp_path_factory.mktemp("session"))


def test_session_memory_is_flat_over_100k_tokens(session_run):
    assert session_run["tokens"] >= 100_000, session_run
    _assert_flat(session_run)


def test_session_transcript_is_bounded(session_run):
    """The transcript a session holds for saving must not grow with the chat (bound it or stream it to the
    file): 50 turns of 2000 characters must not all stay in memory."""
    assert session_run["transcript_chars"] <= MAX_TRANSCRIPT, (
        f"the session holds {session_run['transcript_chars']} characters of transcript after "
        f"{session_run['tokens']} tokens; a days-long chat would keep all of it (and rewrite it on every "
        f"autosave: the save file is {session_run['saved_bytes']} bytes)")
