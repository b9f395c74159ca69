"""The CUDA backend where there is no GPU: it must compile, and every build must refuse a GPU context cleanly.

- The library under test (a CPU build in CI) answers rwkvc_ctx_new_cuda with RWKVC_ERR_BACKEND and the stub's
  message, and Model(..., device="cuda") turns that into a one-line error.
- If nvcc is on PATH, a separate -DRWKVC_CUDA=ON build (compile only, sm_90) must succeed, and that library, on
  a machine without a usable GPU, must also answer RWKVC_ERR_BACKEND instead of crashing.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import random_v7

from rwkvchat.convert import write_gguf
from rwkvchat.errors import RwkvchatError

REPO = Path(__file__).resolve().parent.parent
STUB_MESSAGE = "this build has no CUDA support (rebuild with -DRWKVC_CUDA=ON)"
ERR_BACKEND = 7

# Runs in a child process against the library named in argv[1], so the CUDA build never mixes with the one
# this test process loaded. Prints "<status> <message>" of rwkvc_ctx_new_cuda on the model in argv[2].
_PROBE = """
import ctypes, sys
lib = ctypes.CDLL(sys.argv[1])
lib.rwkvc_last_error.restype = ctypes.c_char_p
m = ctypes.c_void_p()
assert lib.rwkvc_model_load(sys.argv[2].encode(), 1, ctypes.byref(m)) == 0, lib.rwkvc_last_error()
c = ctypes.c_void_p()
st = lib.rwkvc_ctx_new_cuda(m, 0, 0, ctypes.byref(c))
print(st, lib.rwkvc_last_error().decode())
if st == 0:
    lib.rwkvc_ctx_free(c)
lib.rwkvc_model_free(m)
"""


def _has_gpu() -> bool:
    return shutil.which("nvidia-smi") is not None and subprocess.run(
        ["nvidia-smi", "-L"], capture_output=True, text=True, check=False
    ).stdout.strip().startswith("GPU")


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("cuda") / "m.gguf"
    write_gguf(random_v7(n_vocab=50, n_embd=64, n_layer=1, head_size=32, seed=9), path, dtype="f16")
    return path


def _probe(lib_path: str, model: Path) -> tuple[int, str]:
    out = subprocess.run([sys.executable, "-c", _PROBE, lib_path, str(model)], capture_output=True, text=True,
                         check=True).stdout.strip()
    status, _, message = out.partition(" ")
    return int(status), message


def test_loaded_library_refuses_cuda_context(native, tiny_model):
    """The library the package uses: a CPU build refuses with the stub's exact message (a CUDA build would say
    why it has no device instead; that case is covered below and by test_cuda_conformance.py)."""
    from rwkvchat import _native

    status, message = _probe(_native.library_path(), tiny_model)
    if message != STUB_MESSAGE and (status == 0 or message.startswith(("no CUDA device", "CUDA"))):
        pytest.skip(f"the library under test is a CUDA build ({status}: {message})")
    assert (status, message) == (ERR_BACKEND, STUB_MESSAGE)


def test_model_device_errors(native, tiny_model):
    from rwkvchat.model import Model

    with pytest.raises(RwkvchatError, match="device must be"):
        Model(tiny_model, device="gpu")
    with pytest.raises(RwkvchatError, match="gpu_layers must be"):
        Model(tiny_model, device="cuda", gpu_layers=-1)
    if _has_gpu():
        pytest.skip("a GPU is present: device='cuda' may succeed here")
    with pytest.raises(RwkvchatError, match="CUDA"):
        Model(tiny_model, device="cuda")
    with Model(tiny_model, device="cpu") as m:  # The CPU path is unaffected.
        assert m.device == "cpu" and m.forward([1, 2], m.new_state()).shape == (50,)


@pytest.mark.skipif(shutil.which("nvcc") is None, reason="nvcc is not on PATH: the CUDA sources cannot be compiled")
@pytest.mark.skipif(shutil.which("cmake") is None, reason="cmake is not on PATH")
def test_cuda_sources_compile(tmp_path, tiny_model):
    build = tmp_path / "build"
    env = dict(os.environ, CUDACXX=shutil.which("nvcc"))
    subprocess.run(
        ["cmake", "-S", str(REPO), "-B", str(build), "-DRWKVC_CUDA=ON", "-DCMAKE_CUDA_ARCHITECTURES=90"],
        check=True, capture_output=True, env=env,
    )
    done = subprocess.run(["cmake", "--build", str(build), "-j2"], capture_output=True, text=True, env=env,
                          check=False)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    lib = next(build.rglob("librwkvc.so"))
    # The CUDA kernels are in the library (their host stubs are named after the kernels).
    assert b"k_wkv7" in lib.read_bytes()
    if _has_gpu():
        return
    status, message = _probe(str(lib), tiny_model)
    assert status == ERR_BACKEND and message.startswith("no CUDA device is usable"), (status, message)
