"""Hugging Face `tokenizers` JSON tokenizers (the 20B BPE of RWKV-4 Pile/Raven), decoded byte-exactly.

docs/tokenizers.md §2: GPT-NeoX-20B's byte-level BPE has 50277 ids (50254 in the model vocab plus 23
added whitespace runs); `<|endoftext|>` = 0 ends a text, 187 is "\n" and 535 "\n\n".
"""

from __future__ import annotations

import json
import re

from ..errors import TokenizerError
from .base import Tokenizer

N_20B_VOCAB = 50277


def _gpt2_unicode_to_byte() -> dict[str, int]:
    """GPT-2's byte-level alphabet, reversed: printable code point -> the byte it stands for."""
    # Printable Latin-1 bytes stand for themselves; the other 68 are shifted to U+0100 and up in order.
    bs = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), 256)]
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {chr(c): b for b, c in zip(bs, cs)}


class HFTokenizer(Tokenizer):
    """A Hugging Face `tokenizers` JSON tokenizer (the 20B BPE of RWKV-4 Pile/Raven, the demo model's BPE).

    Encoding goes through the `tokenizers` package; decoding goes through per-token bytes (ByteLevel
    tokens mapped back through GPT-2's byte table, special tokens as b"") so streaming is byte-exact.
    """

    kind = "hf"

    def __init__(self, json_text: str, n_vocab: int | None = None, description: str = "") -> None:
        from tokenizers import Tokenizer as _HF

        try:
            self._hf = _HF.from_str(json_text)
            self._spec = json.loads(json_text)
            # A tokenizer.json may carry truncation or padding settings; chat text must never be cut.
            self._hf.no_truncation()
            self._hf.no_padding()
        except Exception as e:  # The package raises plain Exceptions for malformed JSON.
            raise TokenizerError(f"invalid tokenizer.json: {e}") from e
        # The highest id + 1, not the entry count: a vocabulary with holes has ids beyond its length.
        size = max(self._hf.get_vocab(with_added_tokens=True).values(), default=-1) + 1
        if n_vocab is not None and n_vocab < size:
            raise TokenizerError(f"tokenizer.json has {size} tokens but the model only {n_vocab} rows")
        super().__init__(n_vocab or size)
        self.vocab_size = size
        self.eos_id = self._hf.token_to_id("<|endoftext|>")
        model_type = (self._spec.get("model") or {}).get("type")
        self.description = description or f"HF tokenizer.json ({model_type}, {size} tokens)"

    def encode(self, text: str) -> list[int]:
        """Ids as the `tokenizers` package gives them: unlike World, added tokens such as
        `<|endoftext|>` are matched in the text (as the official RWKV-4 pipeline does)."""
        return list(self._hf.encode(text, add_special_tokens=False).ids)

    @property
    def special_ids(self) -> set[int]:
        """Ids of added tokens marked special (decoded as b"", like the package's skip_special_tokens)."""
        return {int(t["id"]) for t in self._spec.get("added_tokens", []) if t.get("special")}

    def id_to_token(self, token_id: int) -> str | None:
        """The vocabulary string of an id (ByteLevel alphabet for BPE), or None for a hole."""
        return self._hf.id_to_token(token_id)

    def merges(self) -> list[str]:
        """BPE merges as "left right" strings (empty for other models)."""
        merges = (self._spec.get("model") or {}).get("merges") or []
        return [m if isinstance(m, str) else " ".join(m) for m in merges]

    def _is_byte_level(self) -> bool:
        dec = self._spec.get("decoder") or {}
        decs = dec.get("decoders", []) if dec.get("type") == "Sequence" else [dec]
        return any(d.get("type") == "ByteLevel" for d in decs)

    def _bytes_table(self) -> list[bytes]:
        special = self.special_ids
        table: list[bytes] = []
        u2b = _gpt2_unicode_to_byte() if self._is_byte_level() else None
        byte_fallback = re.compile(r"<0x([0-9A-Fa-f]{2})>")
        for i in range(self.vocab_size):
            s = self._hf.id_to_token(i)
            if s is None or i in special:
                table.append(b"")
            elif u2b is not None:
                # As the ByteLevel decoder: a token with a char outside the alphabet is taken as UTF-8.
                try:
                    table.append(bytes(u2b[c] for c in s))
                except KeyError:
                    table.append(s.encode("utf-8"))
            elif m := byte_fallback.fullmatch(s):
                table.append(bytes([int(m.group(1), 16)]))
            else:
                table.append(s.replace("\u2581", " ").encode("utf-8"))
        return table
