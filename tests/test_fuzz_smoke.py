"""Bounded fuzzing in CI, and the regression tests of everything the fuzzers found (docs/ROBUSTNESS.md).

Each atheris harness (fuzz/atheris_*.py) runs a fixed number of inputs from a fixed seed over seed files the
tests make (fuzz/seeds.py), so a run is reproducible; the libFuzzer target (fuzz/gguf_fuzzer.c, ASan+UBSan)
is built with clang when clang is present. A finding fails the test with the harness's traceback and the
input's path. Inputs that once failed live in fuzz/regressions/<harness>/ and are replayed through the same
check() every run; the findings that are clearer as code are built below, one test each.
Longer runs by hand: fuzz/README.md.
"""

from __future__ import annotations

import os
import shutil
import struct
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
from conftest import REPORT, asan_library, libasan_path, sanitizer_env

REPO = Path(__file__).resolve().parent.parent
FUZZ = REPO / "fuzz"
sys.path.insert(0, str(FUZZ))

import seeds

# Inputs per harness in CI: about 5-20 s each on one core, about 1.5 min for all (atheris + libFuzzer).
RUNS = {"gguf": 4000, "vocab": 20000, "rwkvcpp": 3000, "pth": 6000, "state": 8000}
C_RUNS = 100000


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO / "src"), env.get("PYTHONPATH", "")])
    return env


@pytest.fixture(scope="module")
def seed_root(tmp_path_factory, native) -> Path:
    """Seed folders per harness (fuzz/seeds.py) plus the tiny model the state harness resumes into."""
    root = tmp_path_factory.mktemp("seeds")
    for kind in ("gguf", "vocab", "rwkvcpp"):
        seeds.write_seeds(kind, root / kind)
    seeds.write_seeds("state", root / "state")
    return root


def _run_atheris(harness: str, seed_dir: Path, tmp_path: Path, extra_env: dict[str, str] | None = None,
                 runs: int | None = None) -> str:
    pytest.importorskip("atheris", reason="atheris is not installed (pip install '.[dev]')")
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    runs = runs or RUNS[harness]
    args = [sys.executable, str(FUZZ / f"atheris_{harness}.py"), f"-runs={runs}", "-seed=1",
            "-timeout=30", "-rss_limit_mb=3072", f"-artifact_prefix={tmp_path}/", str(corpus), str(seed_dir)]
    env = {**_env(), **(extra_env or {})}
    proc = subprocess.run(args, check=False, capture_output=True, text=True, env=env, timeout=600)
    out = proc.stdout + proc.stderr
    crashes = sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(("crash-", "timeout-", "oom-")))
    assert proc.returncode == 0 and not crashes, f"atheris_{harness} found {crashes} in {tmp_path}:\n{out[-4000:]}"
    assert f"Done {runs} runs" in out, out[-2000:]
    return out


def test_fuzz_gguf_model(seed_root, tmp_path):
    _run_atheris("gguf", seed_root / "gguf", tmp_path)


def test_fuzz_world_vocab(seed_root, tmp_path):
    _run_atheris("vocab", seed_root / "vocab", tmp_path)


def test_fuzz_rwkvcpp_import(seed_root, tmp_path):
    _run_atheris("rwkvcpp", seed_root / "rwkvcpp", tmp_path)


def test_fuzz_pth_checkpoint(tmp_path):
    pytest.importorskip("torch", reason="reading .pth needs torch")
    seeds.write_seeds("pth", tmp_path / "seeds")
    work = tmp_path / "work"
    work.mkdir()
    _run_atheris("pth", tmp_path / "seeds", work)


def test_fuzz_saved_conversation(seed_root, tmp_path):
    _run_atheris("state", seed_root / "state", tmp_path, {"FUZZ_MODEL": str(seed_root / "state-model.gguf")})


@pytest.mark.parametrize("side", ["jsonl", "tokens"])
def test_fuzz_conversation_side_files(seed_root, tmp_path, side):
    """The transcript log and token log beside a saved conversation (rwkvchat/history.py)."""
    state = seed_root / "state"
    if not (state / f"saved.{side}").exists():
        pytest.skip(f"saved conversations have no .{side} side file")
    seed_dir = tmp_path / "seeds"
    seed_dir.mkdir()
    shutil.copyfile(state / f"saved.{side}", seed_dir / f"saved.{side}")
    work = tmp_path / "work"
    work.mkdir()
    _run_atheris("state", seed_dir, work, {"FUZZ_MODEL": str(seed_root / "state-model.gguf"),
                                           "FUZZ_STATE_TARGET": side, "FUZZ_STATE_DIR": str(state)},
                 runs=3000)


# ---- libFuzzer over the C reader, tokenizer trie and engine (ASan + UBSan) ----


@pytest.fixture(scope="module")
def c_fuzzer(tmp_path_factory) -> Path:
    if shutil.which("clang") is None:
        pytest.skip("clang is not installed: the libFuzzer target needs it (apt-get install clang)")
    if shutil.which("cmake") is None:
        pytest.skip("cmake is not installed")
    build = tmp_path_factory.mktemp("fuzz-build")
    subprocess.run(["cmake", "-S", str(FUZZ), "-B", str(build), "-DCMAKE_C_COMPILER=clang"], check=True,
                   capture_output=True, text=True)
    proc = subprocess.run(["cmake", "--build", str(build), "-j2", "--target", "gguf_fuzzer"], check=False, capture_output=True,
                          text=True)
    if proc.returncode != 0 and "fsanitize=fuzzer" in proc.stdout + proc.stderr:
        pytest.skip(f"this clang has no libFuzzer runtime:\n{(proc.stdout + proc.stderr)[-1500:]}")
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    return build / "gguf_fuzzer"


def test_libfuzzer_gguf(c_fuzzer, seed_root, tmp_path):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    args = [str(c_fuzzer), f"-runs={C_RUNS}", "-seed=1", "-timeout=30", "-max_len=65536", "-rss_limit_mb=3072",
            f"-artifact_prefix={tmp_path}/", str(corpus), str(seed_root / "gguf")]
    proc = subprocess.run(args, check=False, capture_output=True, text=True, timeout=600)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"gguf_fuzzer found a bug (input in {tmp_path}):\n{out[-5000:]}"
    assert f"Done {C_RUNS} runs" in out and "ERROR: AddressSanitizer" not in out and "runtime error" not in out


def test_libfuzzer_regressions(c_fuzzer):
    files = sorted((FUZZ / "regressions" / "gguf_c").glob("*"))
    if not files:
        pytest.skip("no C regression inputs recorded yet")
    proc = subprocess.run([str(c_fuzzer), *map(str, files)], check=False, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-5000:]


# ---- libFuzzer over the C library with gcc: edge counters (RWKVC_FUZZ_COVERAGE) + ASan/UBSan ----
# clang's -fsanitize=fuzzer is not on a fresh machine, but gcc and the libFuzzer inside the atheris wheel are:
# the library is built with -fsanitize-coverage=trace-pc (src/fuzz_coverage.c turns it into edge counters) and
# fuzz/_harness.py registers those counters with atheris's libFuzzer, which then steers by C coverage.

# A planted bug six nested byte comparisons deep: about 2^48 random tries without coverage feedback, a few
# thousand with it (each new byte matched is a new edge, so libFuzzer keeps that input and builds on it).
TOY_TARGET = r"""
#include <stddef.h>
#include <stdint.h>
int toy_parse(const uint8_t *d, size_t n) {
    if (n >= 6 && d[0] == 'G')
        if (d[1] == 'G')
            if (d[2] == 'U')
                if (d[3] == 'F')
                    if (d[4] == '!')
                        if (d[5] == '?')
                            __builtin_trap();
    return 0;
}
"""
TOY_DRIVER = """
import ctypes, sys
import atheris
sys.path.insert(0, sys.argv[1])
from _harness import attach_native_coverage
toy = ctypes.CDLL(sys.argv[2])
toy.toy_parse.argtypes = [ctypes.c_char_p, ctypes.c_size_t]
atheris.Setup([sys.argv[0], *sys.argv[4:]], lambda b: toy.toy_parse(b, len(b)))
if sys.argv[3] == "register":
    assert attach_native_coverage(toy)
atheris.Fuzz()
"""
TOY_RUNS = 400000


def test_edge_coverage_steers_libfuzzer(tmp_path):
    """The mechanism itself: with the counters registered libFuzzer finds the planted bug; without, it does not."""
    pytest.importorskip("atheris", reason="atheris is not installed (pip install '.[dev]')")
    cc = shutil.which("gcc") or shutil.which("cc")
    if cc is None:
        pytest.skip("no C compiler")
    (tmp_path / "toy.c").write_text(TOY_TARGET)
    toy = tmp_path / "libtoy.so"
    native = REPO / "src" / "rwkvchat" / "native"
    subprocess.run([cc, "-shared", "-fPIC", "-O1", "-fsanitize-coverage=trace-pc", "-I", str(native / "include"),
                    str(tmp_path / "toy.c"), str(native / "src" / "fuzz_coverage.c"), "-o", str(toy)], check=True)
    (tmp_path / "driver.py").write_text(TOY_DRIVER)
    found = {}
    for mode in ("register", "blind"):
        out_dir = tmp_path / mode
        out_dir.mkdir()
        args = [sys.executable, str(tmp_path / "driver.py"), str(FUZZ), str(toy), mode, f"-runs={TOY_RUNS}", "-seed=1",
                f"-artifact_prefix={out_dir}/"]
        proc = subprocess.run(args, check=False, capture_output=True, text=True, timeout=300)
        crashes = [p.read_bytes() for p in out_dir.glob("crash-*")]
        found[mode] = (proc.returncode, crashes, (proc.stdout + proc.stderr)[-2000:])
    code, crashes, out = found["register"]
    assert code != 0 and crashes and crashes[0][:6] == b"GGUF!?", f"not found with coverage:\n{out}"
    code, crashes, out = found["blind"]
    assert code == 0 and not crashes and f"Done {TOY_RUNS} runs" in out, out


@pytest.mark.parametrize("harness,runs", [("gguf", 6000), ("vocab", 10000)])
def test_libfuzzer_c_coverage_asan(harness, runs, asan_build, seed_root, tmp_path):
    """The GGUF loader + engine and the tokenizer trie, fuzzed with C edge coverage under ASan and UBSan."""
    env = sanitizer_env()
    extra = {"LD_PRELOAD": libasan_path(), "RWKVCHAT_LIB": str(asan_library(asan_build)),
             "ASAN_OPTIONS": env["ASAN_OPTIONS"], "UBSAN_OPTIONS": env["UBSAN_OPTIONS"]}
    out = _run_atheris(harness, seed_root / harness, tmp_path, extra, runs=runs)
    assert "C edge coverage registered (65536 counters)" in out and "Loaded 1 modules" in out, out[-3000:]
    assert not REPORT.search(out), out[-6000:]


# ---- Replays of recorded findings through the harnesses' check() (no atheris needed) ----


def _regression_inputs(harness: str) -> list[Path]:
    return sorted((FUZZ / "regressions" / harness).glob("*"))


@pytest.mark.parametrize("harness", ["gguf", "vocab", "rwkvcpp", "pth", "state"])
def test_replay_recorded_findings(harness, seed_root, monkeypatch):
    files = _regression_inputs(harness)
    if not files:
        pytest.skip(f"no recorded findings for {harness}")
    if harness == "pth":
        pytest.importorskip("torch", reason="reading .pth needs torch")
    monkeypatch.setenv("FUZZ_MODEL", str(seed_root / "state-model.gguf"))
    module = __import__(f"atheris_{harness}")
    failures = []
    for f in files:
        try:
            module.check(f.read_bytes())
        except Exception as e:  # noqa: BLE001 - every escaping exception is the finding coming back.
            failures.append(f"{f.name}: {type(e).__name__}: {e}")
    assert not failures, "\n".join(failures)


# ---- Findings written as code ----


def test_rwkvcpp_huge_layer_count(seed_root, tmp_path):
    """F1: a header claiming 16.7 million layers made load_rwkvcpp build 400 million key strings (minutes,
    tens of GB) before noticing that the file holds 39 tensors. Must be refused at once."""
    data = bytearray((seed_root / "rwkvcpp" / "tiny-fp32.bin").read_bytes())
    struct.pack_into("<i", data, 16, 16776961)
    bad = tmp_path / "layers.bin"
    bad.write_bytes(bytes(data))
    # In a child with 2 GB of address space and a time limit, so the bug fails the test instead of the machine.
    code = (
        "import resource, sys\n"
        "resource.setrlimit(resource.RLIMIT_AS, (2 << 30, 2 << 30))\n"
        "from rwkvchat.errors import ConversionError\n"
        "from rwkvchat.rwkvcpp import read_rwkvcpp\n"
        "try:\n"
        f"    read_rwkvcpp({str(bad)!r})\n"
        "except ConversionError as e:\n"
        "    print('refused:', e)\n"
        "    sys.exit(0)\n"
        "sys.exit(3)\n"
    )
    try:
        proc = subprocess.run([sys.executable, "-c", code], check=False, capture_output=True, text=True, env=_env(), timeout=60)
    except subprocess.TimeoutExpired:
        pytest.fail("read_rwkvcpp spent over 60 s on a header claiming 16.7 million layers")
    assert proc.returncode == 0 and "refused:" in proc.stdout, proc.stdout + proc.stderr[-2000:]


def test_rwkvcpp_non_ascii_digit_in_block_index(seed_root, tmp_path):
    """F2: a key 'blocks.².x' passed str.isdigit() ("²" is a digit to Python) and then int() raised ValueError."""
    from rwkvchat.errors import ConversionError
    from rwkvchat.rwkvcpp import read_rwkvcpp

    data = bytearray((seed_root / "rwkvcpp" / "tiny-fp32.bin").read_bytes())
    key = "blocks.\u00b2.x".encode()
    data += struct.pack("<3i", 1, len(key), 0) + struct.pack("<i", 4) + key + np.zeros(4, np.float32).tobytes()
    bad = tmp_path / "digit.bin"
    bad.write_bytes(bytes(data))
    with pytest.raises(ConversionError):
        read_rwkvcpp(bad)


def test_pth_empty_file(tmp_path):
    """F3: an empty .pth (what an interrupted download leaves) made torch.load raise EOFError with an empty
    message, and read_checkpoint then failed with IndexError on str(e).splitlines()[0]."""
    pytest.importorskip("torch")
    from rwkvchat.checkpoint import read_checkpoint
    from rwkvchat.errors import ConversionError

    path = tmp_path / "empty.pth"
    path.write_bytes(b"")
    with pytest.raises(ConversionError):
        read_checkpoint(path)


def test_pth_error_without_message(tmp_path, monkeypatch):
    """F3, any torch error: an exception whose message is empty (EOFError() from a damaged pickle inside the
    zip, found by atheris_pth) must still become ConversionError."""
    torch = pytest.importorskip("torch")
    from rwkvchat.checkpoint import read_checkpoint
    from rwkvchat.errors import ConversionError

    path = tmp_path / "x.pth"
    path.write_bytes(b"PK\x03\x04")

    def failing_load(*args, **kwargs):
        raise EOFError()

    monkeypatch.setattr(torch, "load", failing_load)
    with pytest.raises(ConversionError):
        read_checkpoint(path)


def _saved_conversation(seed_root: Path) -> bytes:
    return (seed_root / "state" / "saved.npz").read_bytes()


def _npz(members: dict[str, bytes]) -> bytes:
    import io

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for name, data in members.items():
            z.writestr(name, data)
    return buf.getvalue()


def _npy(a: np.ndarray) -> bytes:
    import io

    buf = io.BytesIO()
    np.save(buf, a, allow_pickle=False)
    return buf.getvalue()


def _meta(doc: object) -> bytes:
    import json

    return _npy(np.frombuffer(json.dumps(doc).encode(), dtype=np.uint8))


def _bad_conversation_files(seed_root: Path) -> dict[str, bytes]:
    good = _saved_conversation(seed_root)
    with zipfile.ZipFile(__import__("io").BytesIO(good)) as z:
        members = {n: z.read(n) for n in z.namelist()}
    import json

    meta = json.loads(np.load(__import__("io").BytesIO(members["meta.npy"])).tobytes())
    bad_crc = bytearray(good)
    # Flip a byte inside the first member's data: zipfile notices the CRC mismatch on reading.
    bad_crc[60] ^= 0xFF

    def with_meta(**changes: object) -> bytes:
        return _npz({**members, "meta.npy": _meta({**meta, **changes})})

    return {
        # A crash of a writer that does not rename atomically leaves exactly this.
        "empty": b"",
        "truncated": good[: len(good) // 2],
        "bad-crc": bytes(bad_crc),
        "plain-npy": _npy(np.zeros(3, np.float32)),
        "member-not-npy": _npz({**members, "chat.logits.npy": b"not an npy member"}),
        "meta-not-object": _npz({**members, "meta.npy": _meta([1, 2])}),
        "snapshots-not-object": with_meta(snapshots=[1]),
        "snapshot-info-not-object": with_meta(snapshots={"chat": 5}),
        "n-tokens-not-int": with_meta(snapshots={k: {**v, "n_tokens": "many"} for k, v in meta["snapshots"].items()}),
        "transcript-not-list": with_meta(transcript=7),
        "transcript-entry-not-object": with_meta(transcript=["hello"]),
        "settings-not-object": with_meta(settings="x"),
        "state-wrong-dtype": _npz({**members, "chat.state.npy": _npy(np.zeros(5, np.int64))}),
        "state-2d": _npz({**members, "chat.state.npy": _npy(np.zeros((2, 2), np.float32))}),
    }


def test_saved_conversation_garbage(seed_root, tmp_path):
    """F4: load_conversation (and Session.resume) must turn every malformed file into StateMismatchError.

    Found by atheris_state: EOFError (empty file), zipfile.BadZipFile (CRC, central directory),
    NotImplementedError (compression method), RuntimeError (encrypted member), TypeError (a plain .npy),
    AttributeError in Session.resume (a member that is not .npy comes back as bytes), plus the JSON shapes
    the reader trusts (meta/snapshots/transcript/settings of the wrong type).
    """
    from rwkvchat.errors import StateMismatchError
    from rwkvchat.model import Model
    from rwkvchat.session import Session
    from rwkvchat.state import load_conversation

    session = Session(Model(seed_root / "state-model.gguf", threads=1))
    session.params = session.params.replace(max_tokens=2)
    for _ in session.prime():
        pass
    failures = []
    for label, data in _bad_conversation_files(seed_root).items():
        path = tmp_path / f"{label}.npz"
        path.write_bytes(data)
        try:
            load_conversation(path)
            for _ in session.resume(path):
                pass
        except StateMismatchError:
            pass
        except Exception as e:  # noqa: BLE001 - any other type is the bug.
            failures.append(f"{label}: {type(e).__name__}: {e}")
            continue
        # Whatever happened, the session must still take a turn.
        events = list(session.send("hi"))
        if not events:
            failures.append(f"{label}: the next turn produced nothing")
    assert not failures, "\n".join(failures)


def test_bytes_tokenizer_larger_than_model(tmp_path):
    """F5: a file whose metadata says tokenizer 'rwkvchat-bytes' but which has 16 vocabulary rows got a
    256-id ByteTokenizer, whose ids then failed in forward(); the tokenizer must be refused when read
    (as convert refuses to write it)."""
    from rwkvchat.convert import write_gguf
    from rwkvchat.errors import TokenizerError
    from rwkvchat.model import Model

    path = tmp_path / "b16.gguf"
    write_gguf(seeds.tiny_state_dict(), path, dtype="f32", extra_metadata={"tokenizer.ggml.model": "rwkvchat-bytes"})
    with Model(path) as m, pytest.raises(TokenizerError):
        _ = m.tokenizer


# ---- Declared sizes: refused before allocating, every size computation overflow-checked ----


def _gguf_bytes(n_tensors: int, n_kv: int, kvs: bytes = b"", tensors: bytes = b"", data: bytes = b"") -> bytes:
    """A hand-made GGUF v3: header with the given counts (which may lie), raw kv and tensor-info bytes."""
    head = b"GGUF" + struct.pack("<IQQ", 3, n_tensors, n_kv) + kvs + tensors
    pad = (-len(head)) % 32
    return head + b"\0" * pad + data


def _s(text: str) -> bytes:
    raw = text.encode()
    return struct.pack("<Q", len(raw)) + raw


def _kv_u32(key: str, value: int) -> bytes:
    return _s(key) + struct.pack("<II", 4, value)


def _tensor(name: str, ne: list[int], ggml_type: int = 0, offset: int = 0, n_dims: int | None = None) -> bytes:
    dims = len(ne) if n_dims is None else n_dims
    return _s(name) + struct.pack("<I", dims) + b"".join(struct.pack("<Q", d) for d in ne) + \
        struct.pack("<IQ", ggml_type, offset)


DECLARED = {
    "1e8 tensors": _gguf_bytes(10**8, 0),
    "2^63 tensors": _gguf_bytes(1 << 63, 0),
    "1e8 metadata pairs": _gguf_bytes(0, 10**8),
    "key of 2^62 bytes": _gguf_bytes(0, 1, struct.pack("<Q", 1 << 62) + b"k"),
    "string value of 2^63 bytes": _gguf_bytes(0, 1, _s("a") + struct.pack("<IQ", 8, 1 << 63)),
    "u64 array of 1e9 elements": _gguf_bytes(0, 1, _s("a") + struct.pack("<IIQ", 9, 10, 10**9)),
    "string array of 1e8 elements": _gguf_bytes(0, 1, _s("a") + struct.pack("<IIQ", 9, 8, 10**8)),
    "array of 2^62 empty arrays": _gguf_bytes(0, 1, _s("a") + struct.pack("<IIQ", 9, 9, 1 << 62)),
    "alignment 0": _gguf_bytes(0, 1, _kv_u32("general.alignment", 0)),
    "alignment 2^31": _gguf_bytes(0, 1, _kv_u32("general.alignment", 1 << 31)),
    "tensor of 2^32 x 2^32 x 2^32": _gguf_bytes(1, 0, tensors=_tensor("t", [1 << 32, 1 << 32, 1 << 32])),
    "tensor of 2^62 f32": _gguf_bytes(1, 0, tensors=_tensor("t", [1 << 62])),
    "tensor of 2^58 q8_0 blocks": _gguf_bytes(1, 0, tensors=_tensor("t", [1 << 63], ggml_type=8)),
    "q8_0 tensor of 2^40 x 2^40": _gguf_bytes(1, 0, tensors=_tensor("t", [1 << 40, 1 << 40], ggml_type=8)),
    "tensor at offset 2^64 - 32": _gguf_bytes(1, 0, tensors=_tensor("t", [8], offset=(1 << 64) - 32), data=b"\0" * 32),
    "tensor with 2^31 dims": _gguf_bytes(1, 0, tensors=_tensor("t", [4], n_dims=1 << 31)),
    "tensor with a zero dim": _gguf_bytes(1, 0, tensors=_tensor("t", [0, 4]), data=b"\0" * 32),
    "1e6 block_count": _gguf_bytes(0, 2, _s("general.architecture") + struct.pack("<I", 8) + _s("rwkv7")
                                   + _kv_u32("rwkv7.block_count", 10**6)),
}


def test_declared_sizes_are_refused_before_allocating(tmp_path, native):
    """Each file lies about a count, a length or a shape. In a child limited to 1 GiB of address space,
    Model() must raise ModelFormatError for every one: an allocation sized by the lie would fail there
    (NativeError "out of memory" or MemoryError) instead of being refused by the size checks first."""
    import json

    paths = {}
    for i, (label, data) in enumerate(DECLARED.items()):
        path = tmp_path / f"lie{i}.gguf"
        path.write_bytes(data)
        paths[label] = str(path)
    code = (
        "import json, resource, sys\n"
        "from rwkvchat.model import Model\n"
        "from rwkvchat.errors import ModelFormatError\n"
        "import rwkvchat._native as n; n.lib()\n"
        "resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30))\n"
        "out = {}\n"
        "for label, path in json.loads(sys.argv[1]).items():\n"
        "    try:\n"
        "        Model(path, threads=1)\n"
        "        out[label] = 'loaded'\n"
        "    except ModelFormatError as e:\n"
        "        out[label] = 'ok: ' + str(e)\n"
        "    except BaseException as e:\n"
        "        out[label] = f'{type(e).__name__}: {e}'\n"
        "print(json.dumps(out))\n"
    )
    env = {**_env(), "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-c", code, json.dumps(paths)], check=False, capture_output=True, text=True, env=env,
                          timeout=120)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    results = json.loads(proc.stdout.strip().splitlines()[-1])
    bad = {k: v for k, v in results.items() if not v.startswith("ok: ")}
    assert not bad, bad


def test_hf_tokenizer_with_id_holes(tmp_path):
    """F9 (atheris_vocab): a tokenizer.json whose ids skip numbers (262 entries, ids up to 62123) reported
    n_vocab 262 (the entry count) yet encoded to ids up to 62123, past the vocabulary it claimed and past the
    rows of a model it was accepted for. The size must be the highest id + 1."""
    import json

    from rwkvchat.tokenizer import HFTokenizer

    path = seeds.write_seeds("vocab", tmp_path)[2]
    spec = json.loads(path.read_text(encoding="utf-8"))
    vocab = spec["model"]["vocab"]
    top = max(vocab, key=vocab.get)
    vocab[top] = 5000  # A hole of ~4700 ids below the last entry.
    tok = HFTokenizer(json.dumps(spec))
    assert tok.n_vocab == 5001, tok.n_vocab
    ids = tok.encode(top.replace("\u0120", " ") + " hello world")
    assert max(ids) < tok.n_vocab and 5000 in ids, ids
    assert tok.token_bytes(5000) != b""
