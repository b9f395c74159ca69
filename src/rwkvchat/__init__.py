"""rwkvchat: chat with RWKV language models on your CPU.

Importing the package has no side effects: the native library is loaded on first use, and the
public names below are imported lazily.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

__all__ = [
    "Model",
    "State",
    "Session",
    "SamplingParams",
    "Snapshot",
    "RwkvchatError",
    "NativeError",
    "ModelFormatError",
    "StateMismatchError",
    "CommandError",
    "TokenizerError",
    "ConversionError",
]

_LAZY = {
    "Model": "model",
    "State": "model",
    "Session": "session",
    "SamplingParams": "sampling",
    "Snapshot": "state",
    "RwkvchatError": "errors",
    "NativeError": "errors",
    "ModelFormatError": "errors",
    "StateMismatchError": "errors",
    "CommandError": "errors",
    "TokenizerError": "errors",
    "ConversionError": "errors",
}

if TYPE_CHECKING:
    from .errors import (CommandError, ConversionError, ModelFormatError, NativeError, RwkvchatError,
                         StateMismatchError, TokenizerError)
    from .model import Model, State
    from .sampling import SamplingParams
    from .session import Session
    from .state import Snapshot


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'rwkvchat' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(f".{module}", __name__), name)
