"""Bad files and bad arguments: each raises the right rwkvchat.errors class with a useful message,
and the CLI turns it into one line `rwkvchat: error: ...` with exit code 1 and no traceback."""

from __future__ import annotations

import os
import struct
import subprocess
import sys

import gguf
import numpy as np
import pytest
from conftest import random_v7

from rwkvchat.cli import run
from rwkvchat.convert import write_gguf
from rwkvchat.errors import ModelFormatError, RwkvchatError, StateMismatchError
from rwkvchat.model import Model


@pytest.fixture(scope="module")
def good(tmp_path_factory):
    path = tmp_path_factory.mktemp("good") / "m.gguf"
    write_gguf(random_v7(n_vocab=40, n_embd=64, n_layer=2, head_size=32, seed=9), path, dtype="f16")
    return path


def _cut_points(path) -> dict[str, int]:
    """Offsets inside each region of a GGUF: header, key/value table, tensor table, data."""
    r = gguf.GGUFReader(str(path))
    kv = [f.offset for name, f in r.fields.items() if not name.startswith("GGUF.")]
    ti = [t.field.offset for t in r.tensors]
    data = min(t.data_offset for t in r.tensors)
    size = os.path.getsize(path)
    points = {
        "empty": 0,
        "magic": 2,
        "version": 6,
        "counts": 15,
        "header-end": 24,
        "kv-first": kv[0] + 3,
        "kv-middle": kv[len(kv) // 2] + 9,
        "kv-last": kv[-1] + 5,
        "ti-first": ti[0] + 4,
        "ti-middle": ti[len(ti) // 2] + 11,
        "ti-last": ti[-1] + 2,
        "data-start": data,
        "data-first-tensor": data + 7,
        "data-middle": (data + size) // 2,
        "data-last-byte": size - 1,
    }
    return points


def test_truncated_files(native, good, tmp_path):
    blob = good.read_bytes()
    points = _cut_points(good)
    assert len(set(points.values())) == len(points)
    for label, cut in points.items():
        bad = tmp_path / f"cut-{label}.gguf"
        bad.write_bytes(blob[:cut])
        with pytest.raises(ModelFormatError) as e:
            Model(bad)
        assert str(e.value), label


def test_random_bytes(native, tmp_path):
    rng = np.random.default_rng(0)
    for i, prefix in enumerate([b"", b"GGUF", b"GGUF\x03\x00\x00\x00"]):
        bad = tmp_path / f"random{i}.gguf"
        bad.write_bytes(prefix + rng.integers(0, 256, 4096, dtype=np.uint8).tobytes())
        with pytest.raises(ModelFormatError):
            Model(bad)


def test_foreign_architecture(native, tmp_path):
    path = tmp_path / "llama.gguf"
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_uint32("llama.block_count", 1)
    w.add_tensor("token_embd.weight", np.zeros((8, 4), dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    with pytest.raises(ModelFormatError, match="unsupported architecture 'llama'"):
        Model(path)


def _rewrite(good, path, change):
    """Copies the good file through the gguf package, letting change(name, array) alter tensors."""
    r = gguf.GGUFReader(str(good))
    w = gguf.GGUFWriter(str(path), "rwkv7")
    for name, field in r.fields.items():
        if name.startswith("GGUF.") or name == "general.architecture":
            continue
        value = field.contents()
        vtype = field.types[0]
        if vtype == gguf.GGUFValueType.ARRAY:
            w.add_key_value(name, value, vtype, field.types[-1])
        else:
            w.add_key_value(name, value, vtype)
    for t in r.tensors:
        shape = tuple(int(x) for x in reversed(list(t.shape)))
        data = np.asarray(t.data).reshape(shape)
        data = change(t.name, data)
        if data is not None:
            w.add_tensor(t.name, np.ascontiguousarray(data))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def test_rewrite_helper_keeps_a_valid_file(native, good, tmp_path):
    path = tmp_path / "same.gguf"
    _rewrite(good, path, lambda name, a: a)
    with Model(path) as m:
        assert m.n_layer == 2


def test_wrong_shape_is_named(native, good, tmp_path):
    path = tmp_path / "shape.gguf"
    _rewrite(good, path, lambda name, a: a[:, :-1] if name == "blk.1.time_mix_key.weight" else a)
    with pytest.raises(ModelFormatError, match=r"blk\.1\.time_mix_key\.weight"):
        Model(path)


def test_missing_tensor_is_named(native, good, tmp_path):
    path = tmp_path / "missing.gguf"
    _rewrite(good, path, lambda name, a: None if name == "blk.1.channel_mix_value.weight" else a)
    with pytest.raises(ModelFormatError, match=r"blk\.1\.channel_mix_value\.weight"):
        Model(path)


def test_offset_past_end(native, good, tmp_path):
    blob = bytearray(good.read_bytes())
    name = b"output.weight"
    pos = blob.find(struct.pack("<Q", len(name)) + name)
    assert pos > 0
    pos += 8 + len(name)
    (n_dims,) = struct.unpack_from("<I", blob, pos)
    offset_at = pos + 4 + 8 * n_dims + 4
    struct.pack_into("<Q", blob, offset_at, (len(blob) // 32 + 10) * 32)
    bad = tmp_path / "offset.gguf"
    bad.write_bytes(bytes(blob))
    with pytest.raises(ModelFormatError, match="output.weight"):
        Model(bad)


def test_missing_path_and_directory(tmp_path):
    with pytest.raises(ModelFormatError, match="no such model file"):
        Model(tmp_path / "absent.gguf")
    with pytest.raises(ModelFormatError, match="directory"):
        Model(tmp_path)


def test_bad_tokens(native, good):
    with Model(good) as m:
        s = m.new_state()
        before = s.to_numpy()
        for tokens, match in (
            ([40], "out of range"),
            ([-1], "out of range"),
            ([], "no tokens"),
            ([1.5], "integers"),
            ([[1, 2]], "flat"),
            (["a"], "integers"),
            ([True], "integers"),
            ([1, 40], "out of range"),
            ([1] * 100 + [40], "out of range"),
        ):
            with pytest.raises(RwkvchatError, match=match):
                m.forward(tokens, s)
        assert np.array_equal(s.to_numpy(), before)


def test_token_list_and_array_agree(native, good):
    """forward has a fast path for short lists of ints (the decode loop): same logits and state as an array."""
    with Model(good) as m:
        s_list, s_array = m.new_state(), m.new_state()
        for tokens in ([3], [1, 2, 3], list(range(20)) * 4):
            a = m.forward(tokens, s_list)
            b = m.forward(np.array(tokens, dtype=np.int64), s_array)
            assert np.array_equal(a, b)
            assert np.array_equal(s_list.to_numpy(), s_array.to_numpy())
        assert m.forward([5], s_list, logits=False) is None


def test_bad_token_reaches_c_check(native, good):
    """The C library checks ids itself too (the Python check is not the only guard)."""
    import ctypes

    from rwkvchat import _native

    with Model(good) as m:
        s = m.new_state()
        ids = np.array([1, 40], dtype=np.uint32)
        out = np.empty(m.n_vocab, dtype=np.float32)
        with m._context() as ctx:
            status = native.rwkvc_eval(
                ctx,
                ids.ctypes.data_as(ctypes.POINTER(ctypes.c_uint32)),
                2,
                s.data.ctypes.data_as(ctypes.POINTER(ctypes.c_float)),
                m.state_len,
                out.ctypes.data_as(ctypes.POINTER(ctypes.c_float)),
                m.n_vocab,
            )
        assert status == _native.ERR_ARG
        with pytest.raises(RwkvchatError):
            _native.check(status)
        assert not s.to_numpy().any()


def test_bad_states(native, good):
    with Model(good) as m:
        n = m.state_len
        with pytest.raises(StateMismatchError):
            m.state_from_numpy(np.zeros(n + 1, dtype=np.float32))
        with pytest.raises(StateMismatchError):
            m.state_from_numpy(np.zeros(n, dtype=np.float64))
        with pytest.raises(StateMismatchError):
            m.state_from_numpy(np.zeros((2, n // 2), dtype=np.float32))
        from rwkvchat.model import State

        with pytest.raises(StateMismatchError):
            m.forward([1], State(np.zeros(n - 64, dtype=np.float32)))
        with pytest.raises(StateMismatchError):
            m.forward([1], np.zeros(n, dtype=np.float32))


def _one_error_line(err: str) -> None:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("rwkvchat: error: ")
    assert "Traceback" not in err


@pytest.mark.parametrize("kind", ["missing", "directory", "random", "truncated", "llama"])
def test_cli_info_bad(native, good, tmp_path, capsys, kind):
    path = tmp_path / "bad.gguf"
    if kind == "directory":
        path = tmp_path
    elif kind == "random":
        path.write_bytes(np.random.default_rng(1).integers(0, 256, 999, dtype=np.uint8).tobytes())
    elif kind == "truncated":
        path.write_bytes(good.read_bytes()[:5000])
    elif kind == "llama":
        w = gguf.GGUFWriter(str(path), "llama")
        w.add_tensor("x", np.zeros(4, dtype=np.float32))
        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.write_tensors_to_file()
        w.close()
    code = run(["info", str(path)])
    captured = capsys.readouterr()
    assert code == 1
    _one_error_line(captured.err)
    if kind == "llama":
        assert "unsupported architecture 'llama'" in captured.err
    if kind == "missing":
        assert "no such model file" in captured.err


def test_cli_info_subprocess(native, tmp_path):
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"GGUF\x03\x00\x00\x00" + b"\xff" * 100)
    # The child sees the same package and library as this process (PYTHONPATH/RWKVCHAT_LIB are inherited).
    p = subprocess.run(
        [sys.executable, "-m", "rwkvchat", "info", str(bad)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert p.returncode == 1
    _one_error_line(p.stderr)
    assert "native library" not in p.stderr
