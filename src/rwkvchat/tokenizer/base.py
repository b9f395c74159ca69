"""The Tokenizer base class (token ids <-> per-token bytes), the byte tokenizer and the streaming decoder.

Every tokenizer maps a token id to a byte string (`token_bytes`), so decoding is byte-exact and a
`StreamDecoder` can hold back a UTF-8 sequence that a token splits (e.g. 😀 = 3 World tokens).
"""

from __future__ import annotations

import codecs

from ..errors import TokenizerError


class StreamDecoder:
    """Turns token ids into text as they arrive, never splitting a UTF-8 character.

    Bytes of an incomplete sequence are held back until later tokens complete it; a byte that can
    never start or continue a valid sequence becomes U+FFFD at once, so a bad token cannot stall the
    stream; `flush()` emits whatever is left (with U+FFFD for a truncated sequence) and resets.
    """

    def __init__(self, tokenizer: Tokenizer) -> None:
        self._tok = tokenizer
        self._dec = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def feed(self, token_id: int) -> str:
        """Adds one token; returns the text it completes (possibly "")."""
        return self._dec.decode(self._tok.token_bytes(token_id))

    def feed_bytes(self, data: bytes) -> str:
        """Adds raw bytes (for callers that already hold token bytes)."""
        return self._dec.decode(data)

    @property
    def pending(self) -> int:
        """Bytes held back because they may start a character completed by a later token."""
        return len(self._dec.getstate()[0])

    def flush(self) -> str:
        """Ends the stream: returns held-back bytes as text (U+FFFD per invalid part) and resets."""
        text = self._dec.decode(b"", final=True)
        self._dec.reset()
        return text


class Tokenizer:
    """Base class: text <-> token ids through per-token byte strings.

    Attributes: `kind` ("world" | "hf" | "bytes"), `n_vocab` (the model's rows; ids >= the vocabulary's
    own size are padding), `eos_id` (the end-of-text id, or None), `description` (human text).
    Subclasses implement `encode` and `_bytes_table` (the bytes of every id, b"" for ids never produced).
    """

    kind = ""
    eos_id: int | None = None
    description = ""

    def __init__(self, n_vocab: int) -> None:
        self.n_vocab = n_vocab
        self._table: list[bytes] | None = None

    def encode(self, text: str) -> list[int]:
        """Token ids of `text` (its UTF-8 bytes; nothing is prepended or appended)."""
        raise NotImplementedError

    def _bytes_table(self) -> list[bytes]:
        raise NotImplementedError

    def _bytes(self) -> list[bytes]:
        if self._table is None:
            self._table = self._bytes_table()
        return self._table

    def token_bytes(self, token_id: int) -> bytes:
        """The bytes token `token_id` stands for (b"" for end-of-text and padding ids)."""
        table = self._bytes()
        if not 0 <= token_id < self.n_vocab:
            raise TokenizerError(f"token id {token_id} is out of range (vocabulary of {self.n_vocab})")
        return table[token_id] if token_id < len(table) else b""

    def token_table(self) -> list[bytes]:
        """The bytes of every id 0..n_vocab-1 (b"" for ids never produced), e.g. to build sampler masks."""
        table = self._bytes()
        return table[: self.n_vocab] + [b""] * (self.n_vocab - len(table))

    def decode_bytes(self, ids: list[int]) -> bytes:
        """Concatenated token bytes (may end inside a UTF-8 sequence)."""
        return b"".join(self.token_bytes(int(i)) for i in ids)

    def decode(self, ids: list[int]) -> str:
        """Text of `ids`; bytes that are not valid UTF-8 become U+FFFD (errors="replace")."""
        return self.decode_bytes(ids).decode("utf-8", errors="replace")

    def stream(self) -> StreamDecoder:
        """A fresh incremental decoder for one generation."""
        return StreamDecoder(self)

    def banned_ids(self) -> list[int]:
        """Ids that must never be sampled: padding and other ids with no bytes, except `eos_id`."""
        table = self._bytes()
        return [i for i in range(self.n_vocab) if i != self.eos_id and (i >= len(table) or not table[i])]


def _utf8(text: str) -> bytes:
    # Lone surrogates (e.g. from a terminal decoded with surrogateescape) map back to their bytes, or
    # failing that to U+FFFD, rather than making encode() raise.
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:
        try:
            return text.encode("utf-8", errors="surrogateescape")
        except UnicodeEncodeError:
            return text.encode("utf-8", errors="replace")


class ByteTokenizer(Tokenizer):
    """Id = byte value, for tiny test models (n_vocab >= 256; higher ids are unused)."""

    kind = "bytes"
    description = "bytes (id = byte value, 256 tokens)"

    def __init__(self, n_vocab: int = 256) -> None:
        super().__init__(max(n_vocab, 256))

    def encode(self, text: str) -> list[int]:
        return list(_utf8(text))

    def _bytes_table(self) -> list[bytes]:
        return [bytes([b]) for b in range(256)]
