"""The embedded demo model (`src/rwkvchat/data/demo.gguf`): size, labelling, tokenizer, and logits.

`tests/data/demo_golden.npz` holds a chat-shaped token sequence and the float32 logits at every position
from the torch model that produced the file (scripts/train_demo.py export), computed with its weights
rounded exactly as the GGUF stores them (F16 matrices and LoRAs, F32 vectors and decay LoRA). So the
native engine must reproduce them to float32 arithmetic, well inside the F16 tolerance 1e-3 x logit std.
The float64 numpy reference run on the weights read back from the file checks that the golden logits
belong to this very file (they cannot silently drift apart when either is regenerated).
"""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest
from conftest import gguf_to_v7_state_dict

REPO = Path(__file__).resolve().parent.parent
DEMO = REPO / "src" / "rwkvchat" / "data" / "demo.gguf"
GOLDEN = REPO / "tests" / "data" / "demo_golden.npz"
MAX_BYTES = 10_000_000


@pytest.fixture(scope="module")
def golden() -> dict[str, np.ndarray]:
    z = np.load(GOLDEN)
    return {k: z[k] for k in z.files}


@pytest.fixture(scope="module")
def demo(native):
    from rwkvchat.model import Model

    with Model(str(DEMO), threads=2) as m:
        yield m


def _fields() -> dict[str, object]:
    import gguf

    r = gguf.GGUFReader(str(DEMO))
    return {name: f.contents() for name, f in r.fields.items() if not name.startswith("tokenizer.ggml.")}


def test_file_is_small_and_shipped_in_the_package():
    assert DEMO.is_file(), "the demo model is missing: run scripts/train_demo.py export"
    assert 1_000_000 < DEMO.stat().st_size <= MAX_BYTES


def test_metadata_labels_it_a_demo_and_names_sources_and_licences():
    f = _fields()
    assert f["general.architecture"] == "rwkv7"
    assert f["general.name"] == "rwkvchat-demo"
    assert "demo" in f["general.description"].lower()
    data = f["rwkvchat.demo.training_data"]
    for needle in ("chitchat-dataset", "MIT", "chatterbot-corpus", "BSD-3-Clause"):
        assert needle in data
    assert "MIT" in f["general.license"] and "BSD-3-Clause" in f["general.license"]
    assert 0.0 < f["rwkvchat.demo.heldout_loss"] < 5.0


def test_golden_logits_belong_to_this_file(golden):
    # The float64 reference on the file's own weights (after F16 rounding) against the golden logits.
    from rwkvchat.reference import ReferenceModel

    ref = ReferenceModel(gguf_to_v7_state_dict(DEMO))
    want = golden["logits"].astype(np.float64)
    got = ref.forward_all(golden["tokens"].tolist(), ref.new_state())
    std = float(want.std())
    assert std > 1.0
    assert np.abs(got - want).max() <= 1e-4 * std


def test_native_logits_match_the_torch_model(demo, golden):
    want = golden["logits"]
    tokens = [int(t) for t in golden["tokens"]]
    tol = 1e-3 * float(want.std())
    seq = demo.forward_all(tokens, demo.new_state())
    assert seq.shape == want.shape
    assert np.abs(seq - want).max() <= tol
    # One token per call, and uneven chunks, must hand the state on identically.
    s = demo.new_state()
    one = np.stack([demo.forward([t], s) for t in tokens])
    assert np.abs(one - want).max() <= tol
    s = demo.new_state()
    cuts = [0, 1, 8, 19, len(tokens)]
    parts = [demo.forward_all(tokens[a:b], s) for a, b in itertools.pairwise(cuts)]
    assert np.abs(np.concatenate(parts) - want).max() <= tol


def test_tokenizer_is_the_trained_bpe_and_round_trips(demo, golden):
    tok = demo.tokenizer
    assert tok.encode(str(golden["text"])) == golden["tokens"].tolist()
    for text in ["User: hi\n\nAssistant: Hello! How are you?\n\n", "naïve café, 東京, emoji 🙂\ttab",
                 "  leading spaces and trailing  ", "\x00\x7f control bytes"]:
        ids = tok.encode(text)
        assert all(0 <= i < demo.n_vocab for i in ids)
        assert tok.decode(ids) == text
    # A trained BPE, not bytes: the template words are whole tokens and chat text packs several bytes a token.
    # The byte-level pre-tokenizer splits "\n\n" before a word into two "\n" tokens, as in training.
    assert len(tok.encode("User:")) == 2 and len(tok.encode("\n\nAssistant:")) == 4
    text = str(golden["text"])
    assert len(text.encode("utf-8")) / len(tok.encode(text)) > 2.5
