"""Where the engine reads the weights from: the file mapping, or private (huge-page) memory they are moved into.

Model(weights="mmap" | "copy" | "auto") must give bit-identical logits and states: moving changes where the
bytes live, never which bytes are read. "auto" moves them on a background thread while the engine is idle, so
the test also evaluates while steps of the move happen.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import random_v7

from rwkvchat.convert import write_gguf
from rwkvchat.errors import RwkvchatError
from rwkvchat.model import Model

TOKENS = [5, 17, 200, 3, 99, 1000, 7, 42]


@pytest.fixture(scope="module")
def big_model(tmp_path_factory) -> Path:
    """About 28 MB of F16 matrices beside a small embedding: above the 16 MiB below which "auto" keeps the
    mapping, and several 16 MiB steps of the move."""
    from rwkvchat import _native

    if not Path(_native.library_path()).exists():
        pytest.skip(f"native library not built: {_native.library_path()}")
    path = tmp_path_factory.mktemp("weights") / "big.gguf"
    sd = random_v7(n_vocab=2048, n_embd=512, n_layer=4, head_size=64, ranks=(32, 32, 32, 64), seed=9)
    write_gguf(sd, path, dtype="f16")
    return path


def run(m: Model, tokens: list[int]) -> tuple[list[np.ndarray], np.ndarray]:
    """Logits after each token fed one at a time, then after the whole list in one call."""
    s = m.new_state()
    per_token = [m.forward([t], s) for t in tokens]
    return per_token, m.forward(tokens, m.new_state())


def thp_enabled() -> bool:
    try:
        return "[never]" not in Path("/sys/kernel/mm/transparent_hugepage/enabled").read_text()
    except OSError:
        return True


def file_backed_rss_kib(path: Path) -> int:
    """Resident KiB of this process's mappings of path (/proc/self/smaps)."""
    total, inside = 0, False
    for line in Path("/proc/self/smaps").read_text().splitlines():
        first = line.split(maxsplit=1)[0]
        if "-" in first and not first.endswith(":"):
            inside = line.rstrip().endswith(str(path))
        elif inside and first == "Rss:":
            total += int(line.split()[1])
    return total


def test_copy_and_mmap_give_identical_results(big_model):
    with Model(big_model, threads=2, weights="mmap") as m:
        assert m.weights_moved() == (0, 0)
        want_steps, want_seq = run(m, TOKENS)
    with Model(big_model, threads=2, weights="copy") as m:
        moved, total = m.weights_moved()
        # Everything after the embedding's huge pages: at least the F16 matrices (24 MiB), at most the file.
        assert moved == total and 24 << 20 <= total <= big_model.stat().st_size
        got_steps, got_seq = run(m, TOKENS)
        if sys.platform.startswith("linux"):
            # The matrices are no longer read through the file: at most the header and the embedding's pages.
            assert file_backed_rss_kib(big_model) * 1024 < big_model.stat().st_size - total + (4 << 20)
    for a, b in zip(want_steps, got_steps, strict=True):
        assert np.array_equal(a, b)
    assert np.array_equal(want_seq, got_seq)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the background move is Linux-only")
def test_auto_moves_while_idle_and_results_never_change(big_model):
    if not thp_enabled():
        pytest.skip("transparent huge pages are switched off here, so 'auto' keeps the mapping")
    with Model(big_model, threads=2, weights="mmap") as ref:
        s = ref.new_state()
        want = [ref.forward([t], s) for t in TOKENS * 3]
    with Model(big_model, threads=2) as m:
        _, total = m.weights_moved()
        assert total >= 24 << 20
        s = m.new_state()
        seen = []
        for i, t in enumerate(TOKENS * 3):
            assert np.array_equal(m.forward([t], s), want[i]), f"token {i}: moved {m.weights_moved()}"
            seen.append(m.weights_moved()[0])
            # Pauses longer than the mover's 50 ms idle wait let steps of the move run between (and, when a
            # step is slow, during) evaluations.
            time.sleep(0.06 if i % 2 else 0.0)
        assert m.weights_moved(wait=True) == (total, total)
        assert len(set(seen)) > 1, f"the move never advanced during the evaluations: {seen}"
        assert np.array_equal(m.forward([TOKENS[0]], s.copy()), ref_next(big_model, TOKENS * 3 + [TOKENS[0]]))


def ref_next(path: Path, tokens: list[int]) -> np.ndarray:
    with Model(path, threads=2, weights="mmap") as ref:
        s = ref.new_state()
        for t in tokens[:-1]:
            ref.forward([t], s)
        return ref.forward([tokens[-1]], s)


def test_auto_keeps_small_models_mapped(tmp_path):
    path = tmp_path / "small.gguf"
    write_gguf(random_v7(n_vocab=50, n_embd=64, n_layer=1, head_size=32), path)
    with Model(path) as m:
        assert m.weights_moved(wait=True) == (0, 0)


def test_bad_weights_mode_names_the_valid_ones(big_model):
    with pytest.raises(RwkvchatError, match="auto, mmap, copy"):
        Model(big_model, weights="ram")


def test_cli_mmap_flags(tmp_path, monkeypatch, capsys):
    from rwkvchat.cli import run as cli_run
    from rwkvchat.cli.options import weights_mode

    assert (weights_mode(True), weights_mode(False), weights_mode(None)) == ("mmap", "copy", "auto")
    path = tmp_path / "bytes.gguf"
    write_gguf(random_v7(n_vocab=256, n_embd=64, n_layer=1, head_size=32), path, tokenizer="bytes")
    monkeypatch.setenv("RWKVCHAT_HOME", str(tmp_path / "home"))
    monkeypatch.setattr(sys.stdin, "isatty", lambda: True, raising=False)
    texts = []
    for flag in ("--mmap", "--no-mmap", None):
        args = ["gen", "Hi", "-n", "6", "--seed", "1", "--raw", "--json", "--model", str(path)]
        code = cli_run(args + ([flag] if flag else []))
        out = capsys.readouterr()
        assert code == 0, out.err
        texts.append(json.loads(out.out)["text"])
    assert texts[0] == texts[1] == texts[2]
