"""atheris harness: rwkv.cpp `.bin` import (rwkvchat.rwkvcpp) on arbitrary bytes.

Allowed: ConversionError (the module promises it for every problem: "never IndexError or struct.error").
A file that reads must give finite-shaped numpy arrays / QuantizedTensors, and scan_rwkvcpp must agree with
load_rwkvcpp on the tensor list. The converted state dict then goes through write_gguf (ConversionError
allowed: rwkv.cpp files of versions the converter lacks) and, if written, loads in Model.
"""

from __future__ import annotations

import importlib
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _harness import ScratchFile, main

_bin = ScratchFile(".bin")
_gguf = ScratchFile(".gguf")


def _imports() -> None:
    for name in ("rwkvchat.convert", "rwkvchat.rwkvcpp"):
        importlib.import_module(name)


def check(data: bytes) -> None:
    import numpy as np

    from rwkvchat.convert import QuantizedTensor, write_gguf
    from rwkvchat.errors import ConversionError, ModelFormatError, TokenizerError
    from rwkvchat.model import Model
    from rwkvchat.rwkvcpp import load_rwkvcpp, scan_rwkvcpp

    path = _bin.write(data)
    try:
        _, records = scan_rwkvcpp(path)
    except ConversionError:
        return
    try:
        model = load_rwkvcpp(path)
    except ConversionError:
        return
    assert len(records) > 0
    for key, value in model.state_dict.items():
        assert isinstance(key, str)
        assert isinstance(value, (np.ndarray, QuantizedTensor)), (key, type(value))
    with np.errstate(all="ignore"):
        try:
            write_gguf(model.state_dict, _gguf.path, dtype="f32")
        except (ConversionError, TokenizerError):
            return
    try:
        with Model(_gguf.path, threads=1) as m:
            m.forward([0], m.new_state())
    except ModelFormatError:
        # The converter wrote a file the loader refuses: only acceptable for shapes the engine rejects.
        pass


if __name__ == "__main__":
    main(check, _imports)
