"""The C library under AddressSanitizer and UndefinedBehaviorSanitizer (CMake option RWKVC_SANITIZE).

1. Configure a fresh build with -DRWKVC_SANITIZE=ON -DRWKVC_BUILD_TESTS=ON, build it (-j2) and run every C
   test (ctest): they pass and print no sanitizer report.
2. Run the Python tests that drive the native library hardest (engine conformance against the official
   and llama.cpp references, GGUF reader, bad files, tokenizer, rwkv.cpp files) in a child Python whose
   RWKVCHAT_LIB is the sanitized library, with libasan preloaded (the interpreter itself is not
   instrumented, so the runtime must come first). Leak detection is off: CPython keeps its allocations
   to the end by design. The child must print no sanitizer report and must not die of one; ordinary test
   failures are left to the normal run of those files (they fail there too), so this test speaks only
   about memory errors and undefined behaviour.
Skipped when cmake or gcc is missing. Takes a few minutes (a full build plus the instrumented tests).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent

# Tests that exercise the native library, run under the sanitizers; missing files are left out.
PY_TESTS = [
    "tests/test_native_binding.py",
    "tests/test_gguf_reader.py",
    "tests/test_bad_input.py",
    "tests/test_tokenizer.py",
    "tests/test_engine_v7.py",
    "tests/test_rwkvcpp_native.py",
    "tests/test_concurrency.py",
]
# Architectures whose engine is not there yet fail on their own; the sanitizer run needs only what runs.
PY_SELECT = "not 4v0 and not 5v1 and not 5v2 and not 6v0"

# ASan's reports start with "ERROR: AddressSanitizer", UBSan's with "<file>:<line>:<col>: runtime error:".
REPORT = re.compile(r"ERROR: AddressSanitizer|runtime error:|ERROR: LeakSanitizer|SUMMARY: UndefinedBehavior")
# Distinct exit codes so a sanitizer's death is never mistaken for a failed assertion (pytest exits with 1).
ASAN_EXIT, UBSAN_EXIT = 86, 87


def _sanitizer_env() -> dict[str, str]:
    env = dict(os.environ)
    env["ASAN_OPTIONS"] = f"detect_leaks=0:exitcode={ASAN_EXIT}:abort_on_error=0:strict_string_checks=1"
    env["UBSAN_OPTIONS"] = f"print_stacktrace=1:halt_on_error=1:exitcode={UBSAN_EXIT}"
    return env


@pytest.fixture(scope="module")
def asan_build(tmp_path_factory) -> Path:
    if shutil.which("cmake") is None:
        pytest.skip("cmake is not installed")
    if shutil.which("gcc") is None and shutil.which("cc") is None:
        pytest.skip("no C compiler")
    build = tmp_path_factory.mktemp("asan-build")
    cfg = subprocess.run(
        ["cmake", "-S", str(REPO), "-B", str(build), "-DRWKVC_SANITIZE=ON", "-DRWKVC_BUILD_TESTS=ON",
         "-DCMAKE_BUILD_TYPE=RelWithDebInfo"],
        check=False, capture_output=True, text=True,
    )
    assert cfg.returncode == 0, (cfg.stdout + cfg.stderr)[-4000:]
    proc = subprocess.run(["cmake", "--build", str(build), "-j2"], check=False, capture_output=True, text=True)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-6000:]
    return build


def test_native_tests_under_sanitizers(asan_build):
    proc = subprocess.run(["ctest", "--test-dir", str(asan_build), "--output-on-failure"], check=False, capture_output=True,
                          text=True, env=_sanitizer_env(), timeout=1800)
    out = proc.stdout + proc.stderr
    assert "No tests were found" not in out, out[-2000:]
    assert proc.returncode == 0, out[-6000:]
    assert not REPORT.search(out), out[-6000:]


def _libasan() -> str:
    cc = shutil.which("gcc") or shutil.which("cc")
    path = subprocess.run([cc, "-print-file-name=libasan.so"], check=False, capture_output=True, text=True).stdout.strip()
    if not path or not os.path.isabs(path) or not os.path.exists(path):
        pytest.skip(f"{cc} does not know where libasan.so is ({path!r})")
    return path


def test_python_tests_under_sanitizers(asan_build, tmp_path):
    lib = next(asan_build.rglob("librwkvc.so"), None)
    assert lib is not None, f"no librwkvc.so under {asan_build}"
    tests = [t for t in PY_TESTS if (REPO / t).exists()]
    env = _sanitizer_env()
    env["LD_PRELOAD"] = _libasan()
    env["RWKVCHAT_LIB"] = str(lib)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO / "src"), env.get("PYTHONPATH", "")])
    # First make sure the child really runs the sanitized library under the preloaded runtime.
    probe = ("import ctypes; ctypes.CDLL(None).__asan_init\n"
             "from rwkvchat import _native; _native.lib(); print(_native.library_path())")
    check = subprocess.run([sys.executable, "-c", probe], check=False, capture_output=True, text=True, env=env, timeout=120)
    assert check.returncode == 0 and check.stdout.strip() == str(lib), check.stdout + check.stderr[-3000:]
    # The sanitized child must not recurse into this file or the other slow suites.
    args = [sys.executable, "-m", "pytest", "-q", "-o", f"cache_dir={tmp_path / 'cache'}", "-k", PY_SELECT,
            f"--basetemp={tmp_path / 'child'}", *tests]
    proc = subprocess.run(args, cwd=REPO, check=False, capture_output=True, text=True, env=env, timeout=3000)
    out = proc.stdout + proc.stderr
    assert not REPORT.search(out), out[-8000:]
    assert proc.returncode in (0, 1), f"the child exited with {proc.returncode}:\n{out[-8000:]}"
    assert re.search(r"\d+ passed", out), out[-3000:]
