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
import subprocess
import sys
from pathlib import Path

from conftest import REPORT, asan_library, libasan_path, sanitizer_env

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



def test_native_tests_under_sanitizers(asan_build):
    proc = subprocess.run(["ctest", "--test-dir", str(asan_build), "--output-on-failure"], check=False, capture_output=True,
                          text=True, env=sanitizer_env(), timeout=1800)
    out = proc.stdout + proc.stderr
    assert "No tests were found" not in out, out[-2000:]
    assert proc.returncode == 0, out[-6000:]
    assert not REPORT.search(out), out[-6000:]


def test_python_tests_under_sanitizers(asan_build, tmp_path):
    lib = asan_library(asan_build)
    tests = [t for t in PY_TESTS if (REPO / t).exists()]
    env = sanitizer_env()
    env["LD_PRELOAD"] = libasan_path()
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
