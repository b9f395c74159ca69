"""atheris harness: rwkvchat.Model on arbitrary bytes as a GGUF file, then everything a loaded model offers.

Allowed: ModelFormatError from Model() (and NativeError for an allocation failure); TokenizerError from
Model.tokenizer. Everything after a successful load must work: every metadata key reads, the tensor list,
the tokenizer's ids fit the model (encode -> ids < n_vocab), and two tokens run through the engine.
Run: python fuzz/atheris_gguf.py -max_total_time=60 -timeout=10 CORPUS_DIR SEED_DIR (fuzz/README.md).
"""

from __future__ import annotations

import importlib
import itertools
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _harness import ScratchFile, main

_TEXT = "Hello world\n\nUser: 你好 \udcff end"
_counter = itertools.count()
_scratch: ScratchFile | None = None


def _imports() -> None:
    for name in ("rwkvchat.model", "rwkvchat.tokenizer"):
        importlib.import_module(name)


def check(data: bytes) -> None:
    from rwkvchat.errors import ModelFormatError, NativeError, TokenizerError
    from rwkvchat.model import Model

    global _scratch
    # A fresh name per input: the tokenizer cache is keyed by (path, mtime, size), which a reused scratch
    # file could repeat within one clock tick and so return the previous input's tokenizer.
    if _scratch is not None:
        _scratch.close()
    _scratch = ScratchFile(f"-{next(_counter)}.gguf")
    path = _scratch.write(data)
    try:
        m = Model(path, threads=1)
    except ModelFormatError:
        return
    except NativeError as e:
        if e.status != 5:  # RWKVC_ERR_NOMEM only: any other status is not a file problem.
            raise
        return
    with m:
        assert m.n_vocab > 0 and m.n_embd > 0 and m.n_layer > 0 and m.state_len > 0, m
        keys = m.metadata_keys()
        for k in keys[:64]:
            m.metadata_value(k)
        assert m.metadata_value("no.such.key") is None
        m.tensors()
        assert m.fingerprint and repr(m)
        try:
            tok = m.tokenizer
        except TokenizerError:
            tok = None
        state = m.new_state()
        if tok is not None:
            ids = tok.encode(_TEXT)
            assert all(0 <= i < m.n_vocab for i in ids), f"tokenizer ids {max(ids)} >= n_vocab {m.n_vocab}"
            tok.decode(ids)
            tok.decode(list(range(m.n_vocab))[:512])
            if ids:
                m.forward(ids[:8], state)
        logits = m.forward([0, m.n_vocab - 1], state)
        assert logits.shape == (m.n_vocab,)
        assert m.forward_all([m.n_vocab // 2], state).shape == (1, m.n_vocab)


if __name__ == "__main__":
    main(check, _imports)
