"""Official BlinkDL `.pth` checkpoints, read lazily: the input side of `rwkvchat convert`.

`read_checkpoint` opens a `.pth` memory-mapped (torch is needed only here) and converts each tensor to float32
numpy on access, so a 7B model is never expanded at once; `detect_version` and `layer_count` name the
architecture and depth from the keys and shapes alone. Every failure is a ConversionError with the reason.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from .errors import ConversionError, ModelFormatError
from .reference import detect_version as _detect_version
from .reference import layer_count as _reference_layer_count


class LazyCheckpoint(Mapping):
    """A read-only state dict whose float32 numpy values are made on access from torch tensors.

    Keeps the checkpoint memory-mapped: a 7B model is not expanded to 28 GB of float32 at once.
    """

    def __init__(self, tensors: dict[str, Any]) -> None:
        self._tensors = tensors

    def __getitem__(self, key: str) -> np.ndarray:
        import torch

        t = self._tensors[key]
        if not isinstance(t, torch.Tensor):
            raise ConversionError(f"checkpoint entry {key!r} is a {type(t).__name__}, not a tensor")
        if not t.is_floating_point():
            raise ConversionError(f"checkpoint tensor {key!r} has dtype {t.dtype}; expected a float type")
        # bf16 and f16 widen to float32 exactly.
        return t.detach().to(torch.float32).contiguous().numpy()

    def __iter__(self) -> Iterator[str]:
        return iter(self._tensors)

    def __len__(self) -> int:
        return len(self._tensors)

    def shape_of(self, key: str) -> tuple[int, ...]:
        return tuple(self._tensors[key].shape)


def foreign_format(path: str) -> str | None:
    """Names the format of a file that is clearly not a .pth (by its first bytes), else None."""
    with open(path, "rb") as f:
        head = f.read(16)
    if head[:4] == b"GGUF":
        return "already a GGUF file"
    if head[:4] == b"fmgg":  # 0x67676d66 little-endian: rwkv.cpp's magic.
        return "an rwkv.cpp .bin file"
    if len(head) >= 9 and head[8:9] == b"{" and int.from_bytes(head[:8], "little") < (1 << 30):
        return "a safetensors file (Hugging Face layout)"
    return None


def read_checkpoint(path: str | os.PathLike[str]) -> LazyCheckpoint:
    """Opens an official `.pth` state dict: name -> float32 array (PyTorch shapes), converted on access."""
    try:
        import torch
    except ImportError as e:
        raise ConversionError("reading .pth checkpoints needs torch: pip install 'rwkvchat[convert]'") from e
    path = os.fspath(path)
    if not os.path.exists(path):
        raise ConversionError(f"no such checkpoint file: {path}")
    if os.path.isdir(path):
        raise ConversionError(f"is a directory, not a checkpoint: {path}")
    foreign = foreign_format(path)
    if foreign:
        raise ConversionError(f"{path} is {foreign}, not a PyTorch .pth checkpoint")
    try:
        try:
            obj = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError as e:
            # Files from torch < 1.6 (not zip) cannot be memory-mapped; they load fully instead.
            if "mmap" not in str(e):
                raise
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises many types (pickle, zip, runtime) for foreign files.
        # Some carry no message at all (EOFError() from an empty or damaged file).
        reason = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise ConversionError(f"cannot read {path} as a PyTorch checkpoint: {reason}") from e
    if not isinstance(obj, Mapping):
        raise ConversionError(f"{path} holds a {type(obj).__name__}, not a state dict")
    if "state_dict" in obj and isinstance(obj["state_dict"], Mapping) and "emb.weight" not in obj:
        raise ConversionError(
            f"{path} is a training checkpoint (a 'state_dict' inside); save the state dict itself"
        )
    return LazyCheckpoint(dict(obj))


def layer_count(sd: Mapping[str, Any]) -> int:
    """Number of blocks (indices 0..L-1, no gaps); ConversionError otherwise."""
    try:
        return _reference_layer_count(sd)
    except ModelFormatError as e:
        raise ConversionError(str(e)) from e


def detect_version(sd: Mapping[str, Any]) -> str:
    """ "4", "5.0", "5.1", "5.2", "6.0" or "7.0"; ConversionError for other checkpoints and variants."""
    try:
        return _detect_version(ShapeView(sd))
    except ModelFormatError as e:
        raise ConversionError(str(e)) from e


class ShapeView(Mapping):
    """Lets shape-only code inspect a LazyCheckpoint without converting its tensors."""

    def __init__(self, sd: Mapping[str, Any]) -> None:
        self._sd = sd

    def __getitem__(self, key: str) -> Any:
        return _Shaped(shape_of(self._sd, key))

    def __iter__(self) -> Iterator[str]:
        return iter(self._sd)

    def __len__(self) -> int:
        return len(self._sd)


@dataclass(frozen=True)
class _Shaped:
    shape: tuple[int, ...]


def shape_of(sd: Mapping[str, Any], key: str) -> tuple[int, ...]:
    """The PyTorch shape of sd[key], without converting a LazyCheckpoint's tensor."""
    if hasattr(sd, "shape_of"):
        return tuple(sd.shape_of(key))
    return tuple(sd[key].shape)
