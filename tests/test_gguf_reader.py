"""The native GGUF reader and the public metadata API, end to end through Model, against the gguf package.

The C reader's own edge cases (truncation at every byte, byte flips, absurd counts) are in
tests/native/test_gguf.c; here the question is whether real llama.cpp files read the same through
rwkvc_model_meta_* / rwkvc_model_tensor as through gguf-py, and whether every value type survives the
trip to Python. Files come from ../shared/conformance/llamacpp-gguf (skipped when absent).
"""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

from rwkvchat.errors import RwkvchatError

GGUF_FILES = ["llamacpp-v7-F16.gguf", "llamacpp-v7-Q4_0.gguf"]


def _gguf_path(shared: Path, name: str) -> Path:
    path = shared / "conformance" / "llamacpp-gguf" / name
    if not path.exists():
        pytest.skip(f"{path} is absent")
    return path


def _reference_value(field) -> object:
    """gguf-py's view of a field in the form Model.metadata_value returns (strings as bytes for exactness)."""
    import gguf

    types = field.types
    if types[0] == gguf.GGUFValueType.STRING:
        return bytes(field.parts[field.data[0]])
    if types[0] == gguf.GGUFValueType.ARRAY and types[1] == gguf.GGUFValueType.STRING:
        return [bytes(field.parts[i]) for i in field.data]
    return field.contents()


def _as_bytes(value: object) -> object:
    """Model decodes strings (surrogateescape for arrays); encode them back to compare bytes exactly."""
    if isinstance(value, str):
        return value.encode("utf-8", "surrogateescape")
    if isinstance(value, list) and value and isinstance(value[0], str):
        return [v.encode("utf-8", "surrogateescape") for v in value]
    return value


@pytest.mark.parametrize("name", GGUF_FILES)
def test_metadata_and_tensors_match_gguf_py(shared: Path, native, name: str) -> None:
    import gguf

    from rwkvchat import Model

    path = _gguf_path(shared, name)
    reader = gguf.GGUFReader(str(path))
    fields = {k: f for k, f in reader.fields.items() if not k.startswith("GGUF.")}
    with Model(path, threads=1) as m:
        assert m.metadata_keys() == list(fields)
        for key, field in fields.items():
            assert _as_bytes(m.metadata_value(key)) == _reference_value(field), key
        assert m.metadata_value("no.such.key") is None
        tensors = m.tensors()
        assert [t[0] for t in tensors] == [t.name for t in reader.tensors]
        for (tname, ttype, ne), ref in zip(tensors, reader.tensors):
            assert ttype == ref.tensor_type.name, tname
            assert ne == tuple(int(x) for x in ref.shape), tname


def _string(s: bytes) -> bytes:
    return struct.pack("<Q", len(s)) + s


def _kv(key: str, vtype: int, payload: bytes) -> bytes:
    return _string(key.encode()) + struct.pack("<I", vtype) + payload


def _array(etype: int, items: list[bytes]) -> bytes:
    return struct.pack("<IQ", etype, len(items)) + b"".join(items)


# Every value type (docs/file-formats.md §2.1), as (key, type id, payload bytes, expected Python value).
EXTRA_KVS = [
    ("t.u8", 0, struct.pack("<B", 200), 200),
    ("t.i8", 1, struct.pack("<b", -5), -5),
    ("t.u16", 2, struct.pack("<H", 60000), 60000),
    ("t.i16", 3, struct.pack("<h", -30000), -30000),
    ("t.u32", 4, struct.pack("<I", 4_000_000_000), 4_000_000_000),
    ("t.i32", 5, struct.pack("<i", -2_000_000_000), -2_000_000_000),
    ("t.f32", 6, struct.pack("<f", 1.5), 1.5),
    ("t.bool", 7, b"\x01", True),
    ("t.str", 8, _string("héllo".encode()), "héllo"),
    ("t.u64", 10, struct.pack("<Q", 2**63 + 5), 2**63 + 5),
    ("t.i64", 11, struct.pack("<q", -(2**40)), -(2**40)),
    ("t.f64", 12, struct.pack("<d", 0.1), 0.1),
    ("t.ints", 9, _array(5, [struct.pack("<i", v) for v in (1, -2, 3)]), [1, -2, 3]),
    ("t.bools", 9, _array(7, [b"\x01", b"\x00"]), [True, False]),
    ("t.strs", 9, _array(8, [_string(b"a"), _string(b""), _string(b"\xff")]), ["a", "", "\udcff"]),
    ("t.empty", 9, _array(6, []), []),
]


def _with_extra_metadata(src: Path, dst: Path) -> None:
    """Copies a GGUF with EXTRA_KVS inserted before its first key.

    The inserted block is padded (with one more string key) to a multiple of 32 bytes, the file's
    alignment, so the data section moves by exactly that much and the tensor offsets, relative to the
    data section, stay valid.
    """
    data = src.read_bytes()
    block = b"".join(_kv(k, t, p) for k, t, p, _ in EXTRA_KVS)
    pad_key_bytes = len(_kv("t.pad", 8, _string(b"")))
    pad = (-(len(block) + pad_key_bytes)) % 32
    block += _kv("t.pad", 8, _string(b" " * pad))
    assert len(block) % 32 == 0
    n_kv = struct.unpack_from("<Q", data, 16)[0]
    header = data[:16] + struct.pack("<Q", n_kv + len(EXTRA_KVS) + 1)
    dst.write_bytes(header + block + data[24:])


def test_every_value_type_reaches_python(shared: Path, native, tmp_path: Path) -> None:
    from rwkvchat import Model

    path = tmp_path / "extra.gguf"
    _with_extra_metadata(_gguf_path(shared, "llamacpp-v7-Q4_0.gguf"), path)
    with Model(path, threads=1) as m:
        keys = m.metadata_keys()
        assert keys[: len(EXTRA_KVS)] == [k for k, _, _, _ in EXTRA_KVS]
        for key, _, _, expected in EXTRA_KVS:
            value = m.metadata_value(key)
            assert value == expected and type(value) is type(expected), key
        # The original metadata still reads after the insertion.
        assert m.metadata_value("general.architecture") == "rwkv7"
        assert len(m.metadata_value("tokenizer.ggml.tokens")) == 65536


@pytest.mark.parametrize(
    ("edit", "phrase"),
    [
        (lambda d: d[:-1], "runs past the end of the file"),
        (lambda d: d[:4] + struct.pack("<I", 1) + d[8:], "GGUF version 1 is not supported"),
        (lambda d: d[:8] + struct.pack("<Q", 2**60) + d[16:], "tensor count 1152921504606846976 is impossible"),
        (lambda d: d[:100], "truncated or corrupt file"),
        (lambda d: d[:1_000_000], "runs past the end of the file"),
    ],
)
def test_corrupt_files_raise_with_the_reason(shared: Path, native, tmp_path: Path, edit, phrase: str) -> None:
    from rwkvchat import Model

    path = tmp_path / "bad.gguf"
    path.write_bytes(edit(_gguf_path(shared, "llamacpp-v7-Q4_0.gguf").read_bytes()))
    with pytest.raises(RwkvchatError, match=phrase):
        Model(path, threads=1)
