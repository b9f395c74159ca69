"""Measures World tokenizer encoding speed (MB/s of UTF-8 input) for the C trie and the Python fallback.

Usage: python scripts/bench_tokenizer.py [--mb 8] [--vocab PATH]
The text mixes English prose, code, Chinese, Japanese and emoji. Reports the best of several runs
(wall clock, including the Python binding and the list conversion of the ids), and checks that both
encoders agree. Needs the World vocabulary (`pip install rwkv`) or --vocab.
"""

from __future__ import annotations

import argparse
import time

from rwkvchat.tokenizer import WorldTokenizer, find_world_vocab, load_world_vocab

SAMPLE = (
    "The quick brown fox jumps over the lazy dog. RWKV is an RNN with transformer-level performance.\n"
    "def forward(self, x):\n    return self.head(self.ln_out(x)) + 1234567\n\n"
    "你好，世界！今天天气很好，我们去公园散步吧。日本語のテキスト：こんにちは、世界。"
    "한국어 텍스트 😀👨‍👩‍👧‍👦 café naïve résumé\r\n"
)


def _best_rate(fn, data: bytes, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn(data)
        best = min(best, time.perf_counter() - t0)
    return len(data) / best / 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=float, default=8.0, help="input size in MB")
    parser.add_argument("--vocab", help="World vocabulary file (default: the one in the rwkv package)")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    tokens = load_world_vocab(args.vocab or find_world_vocab())
    sample = SAMPLE.encode("utf-8")
    data = sample * max(1, int(args.mb * 1e6 / len(sample)))
    native = WorldTokenizer(tokens, 65536, native=True)
    python = WorldTokenizer(tokens, 65536, native=False)
    ids = native.encode_bytes(data)
    print(f"input {len(data) / 1e6:.1f} MB, {len(ids)} tokens ({len(data) / len(ids):.2f} bytes/token)")
    print(f"C trie:        {_best_rate(native.encode_bytes, data, args.repeats):8.1f} MB/s (list[int] result)")
    print(f"C trie:        {_best_rate(native.encode_array, data, args.repeats):8.1f} MB/s (uint32 array result)")
    small = data[: 1_000_000]
    assert python.encode_bytes(small) == native.encode_bytes(small), "C and Python encoders disagree"
    print(f"Python table:  {_best_rate(python.encode_bytes, small, 1):8.1f} MB/s (1 MB)")


if __name__ == "__main__":
    main()
