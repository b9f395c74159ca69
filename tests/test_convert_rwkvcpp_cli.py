"""`rwkvchat convert MODEL.bin OUT.gguf`: rwkv.cpp files become GGUF files the engine runs.

Quantized blocks must arrive in the GGUF bit for bit (no requantization), FP32 files stay F32, and
the converted model must reproduce rwkv.cpp's expected logits after the bytes of `"in`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from rwkvchat.cli import run
from rwkvchat.convert import QuantizedTensor
from rwkvchat.rwkvcpp import read_rwkvcpp

TINY = Path(__file__).resolve().parents[1].parent / "shared" / "conformance" / "rwkvcpp-tiny"
PROMPT = [0x22, 0x69, 0x6E]


def _tiny(name: str) -> Path:
    path = TINY / name
    if not path.exists():
        pytest.skip(f"conformance data not found: {path}")
    return path


def _logits_after_prompt(path: Path) -> np.ndarray:
    from rwkvchat import Model

    with Model(str(path), threads=1) as m:
        return m.forward(PROMPT, m.new_state()).astype(np.float64)


@pytest.mark.parametrize(
    ("name", "expected", "bound"),
    [
        # FP32: the engine in fp32 against rwkv.cpp in fp32 (rwkv.cpp's own hard check is |S| <= 1e-3).
        ("tiny-rwkv-7v0-834K-FP32.bin", "expected-logits-7v0-834K.bin", 1e-4),
        # Quantized: our Q8 activations against rwkv.cpp's; measured about 5e-3 (see test_rwkvcpp_native).
        ("tiny-rwkv-7v0-834K-Q5_1.bin", "expected-logits-7v0-834K.bin", 2e-2),
        # A version-100 FP16 file of another generation (v4), where quantized layouts would be refused.
        ("tiny-rwkv-4v0-660K-FP16.bin", "expected-logits-4v0-660K.bin", 1e-2),
    ],
)
def test_convert_cli_runs_rwkvcpp_files(tmp_path: Path, capsys, name: str, expected: str, bound: float) -> None:
    src = _tiny(name)
    out = tmp_path / "model.gguf"
    assert run(["convert", str(src), str(out)]) == 0
    logits = _logits_after_prompt(out)
    want = np.fromfile(_tiny(expected), dtype="<f4").astype(np.float64)
    assert np.abs(logits - want).max() <= bound


def test_quantized_blocks_are_copied_bit_for_bit(tmp_path: Path) -> None:
    import gguf

    src = _tiny("tiny-rwkv-7v0-834K-Q5_1.bin")
    out = tmp_path / "q.gguf"
    assert run(["convert", str(src), str(out)]) == 0
    _, sd = read_rwkvcpp(src)
    quantized = {k: v for k, v in sd.items() if isinstance(v, QuantizedTensor)}
    assert quantized, "the Q5_1 file should hold quantized matrices"
    tensors = {t.name: t for t in gguf.GGUFReader(str(out)).tensors}
    key = "blocks.3.att.key.weight"
    t = tensors["blk.3.time_mix_key.weight"]
    assert int(t.tensor_type) == quantized[key].ggml_type
    assert np.array_equal(np.asarray(t.data).view(np.uint8).reshape(-1), quantized[key].data.reshape(-1))


def test_fp32_file_stays_f32(tmp_path: Path) -> None:
    import gguf

    out = tmp_path / "f.gguf"
    assert run(["convert", str(_tiny("tiny-rwkv-7v0-834K-FP32.bin")), str(out)]) == 0
    types = {t.name: t.tensor_type for t in gguf.GGUFReader(str(out)).tensors}
    assert types["blk.0.time_mix_key.weight"] == gguf.GGMLQuantizationType.F32


def test_truncated_rwkvcpp_file_gives_one_line_error(tmp_path: Path, capsys) -> None:
    data = _tiny("tiny-rwkv-7v0-834K-FP16.bin").read_bytes()
    bad = tmp_path / "cut.bin"
    bad.write_bytes(data[: len(data) // 3])
    assert run(["convert", str(bad), str(tmp_path / "o.gguf")]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("rwkvchat: error:")
    assert not (tmp_path / "o.gguf").exists()
