"""Exception hierarchy of rwkvchat.

Every error a user can cause (a bad file, a wrong token id, a malformed command) is one of these,
so the CLI maps them to one line of text at a single boundary.
"""

from __future__ import annotations


class RwkvchatError(Exception):
    """Base class of every error rwkvchat raises on purpose."""


class NativeError(RwkvchatError):
    """A status returned by the C library, with its detail message."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class ModelFormatError(RwkvchatError):
    """A model or vocabulary file that cannot be read (truncated, foreign, wrong shapes)."""


class StateMismatchError(RwkvchatError):
    """A state or saved session that does not fit the model it is used with."""


class CommandError(RwkvchatError):
    """A chat command that cannot be parsed or carried out."""


class TokenizerError(RwkvchatError):
    """Malformed vocabulary data, or text/ids the tokenizer cannot handle."""


class ConversionError(RwkvchatError):
    """A checkpoint that cannot be converted or quantized."""
