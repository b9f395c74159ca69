"""atheris harness: official `.pth` checkpoints (rwkvchat.checkpoint.read_checkpoint) on arbitrary bytes.

torch.load(weights_only=True) reads a zip holding a restricted pickle; on mutated files it must neither
crash nor hang, and every failure must come out as ConversionError. Reading each tensor (conversion to
float32 numpy) and detect_version are exercised too.
Needs torch (pip install torch==2.13.0); skipped by the smoke test without it.
"""

from __future__ import annotations

import importlib
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _harness import ScratchFile, main

_pth = ScratchFile(".pth")


def _imports() -> None:
    for name in ("rwkvchat.checkpoint", "rwkvchat.convert"):
        importlib.import_module(name)


def check(data: bytes) -> None:
    from rwkvchat.checkpoint import detect_version, read_checkpoint
    from rwkvchat.errors import ConversionError

    path = _pth.write(data)
    try:
        ck = read_checkpoint(path)
    except ConversionError:
        return
    for key in list(ck)[:64]:
        try:
            a = ck[key]
        except ConversionError:
            continue
        assert a.dtype.name == "float32", (key, a.dtype)
    try:
        detect_version(ck)
    except ConversionError:
        pass


if __name__ == "__main__":
    main(check, _imports)
