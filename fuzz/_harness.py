"""Shared driver of the atheris harnesses: one `check(data)` per reader, run by atheris or replayed by tests.

Each harness module defines `check(data: bytes) -> None`, which feeds the bytes to one rwkvchat entry point
and lets through only the exceptions that entry point documents (ALLOWED, subclasses of RwkvchatError).
Anything else (IndexError, struct.error, a numpy error, a segfault of the native library) escapes and is a
finding: atheris stops, prints the traceback and writes the input to crash-<sha1>.

`main(check, allowed)` is the command line: `python fuzz/atheris_X.py [libFuzzer flags] [corpus dirs]`,
e.g. `-max_total_time=60 -timeout=10 corpus/ seeds/`. Without atheris installed (or with --replay) it runs
check() once per file named on the command line, so a crash file can be reproduced anywhere.
"""

from __future__ import annotations

import os
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO / "src") not in sys.path:
    sys.path.insert(0, str(REPO / "src"))


class ScratchFile:
    """One reusable temporary file: most readers take a path, so each input is written here first."""

    def __init__(self, suffix: str) -> None:
        folder = "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else None
        fd, self.path = tempfile.mkstemp(prefix="rwkvchat-fuzz-", suffix=suffix, dir=folder)
        os.close(fd)

    def write(self, data: bytes) -> str:
        with open(self.path, "wb") as f:
            f.write(data)
        return self.path

    def close(self) -> None:
        try:
            os.unlink(self.path)
        except OSError:
            pass


def replay(check: Callable[[bytes], None], paths: list[str]) -> int:
    """Runs check() on every file (or every file in every folder) named; returns the number run."""
    n = 0
    for p in paths:
        files = sorted(q for q in Path(p).iterdir() if q.is_file()) if Path(p).is_dir() else [Path(p)]
        for f in files:
            check(f.read_bytes())
            n += 1
    return n


def survey(check: Callable[[bytes], None], out_dir: str) -> Callable[[bytes], None]:
    """check() that records each distinct finding once (by exception type and innermost rwkvchat line) and
    goes on: FUZZ_SURVEY=<folder> collects every bug of a run instead of stopping at the first."""
    import hashlib
    import traceback

    seen: set[str] = set()
    os.makedirs(out_dir, exist_ok=True)

    def wrapped(data: bytes) -> None:
        try:
            check(data)
        except Exception as e:  # noqa: BLE001 - recording every kind of finding is the point.
            frames = [f for f in traceback.extract_tb(e.__traceback__) if "rwkvchat" in f.filename]
            where = f"{frames[-1].filename}:{frames[-1].lineno}" if frames else "?"
            sig = f"{type(e).__name__} at {where}"
            if sig not in seen:
                seen.add(sig)
                name = hashlib.sha1(data).hexdigest()
                with open(os.path.join(out_dir, f"finding-{name}"), "wb") as f:
                    f.write(data)
                with open(os.path.join(out_dir, "findings.txt"), "a") as f:
                    f.write(f"{sig}: {str(e)[:200]!r} -> finding-{name}\n")
                print(f"FINDING {sig}: {str(e)[:200]!r}", file=sys.stderr)

    return wrapped


def attach_native_coverage(lib=None) -> bool:
    """Registers the C library's edge counters with atheris's libFuzzer, if the library has them.

    A library built with -DRWKVC_FUZZ_COVERAGE=ON (gcc or clang; src/fuzz_coverage.c) exports
    rwkvc_fuzz_coverage(); handing its tables to libFuzzer makes the fuzzer keep inputs that reach new
    edges of the C code (the GGUF reader, the tokenizer trie, the forward pass), not only new Python lines.
    `lib` is a ctypes library (default: the one rwkvchat loads). Call after atheris.Setup, before Fuzz.
    Returns False (and says why on stderr) when there is nothing to register.
    """
    import ctypes
    import glob

    import atheris

    if lib is None:
        from rwkvchat import _native
        from rwkvchat.errors import RwkvchatError

        try:
            lib = _native.lib()
        except RwkvchatError:
            return False  # check() meets the same error and reports it
    try:
        tables = lib.rwkvc_fuzz_coverage
    except AttributeError:
        return False
    cores = glob.glob(os.path.join(os.path.dirname(atheris.__file__), "core_with_libfuzzer*.so"))
    if not cores:
        print("INFO: rwkvchat: this atheris has no built-in libFuzzer; C coverage not registered", file=sys.stderr)
        return False
    # dlopen of the path atheris imports returns the very library (and libFuzzer instance) that will run.
    core = ctypes.CDLL(cores[0])
    cb, ce, pb, pe = (ctypes.c_void_p() for _ in range(4))
    tables.restype = None
    tables(ctypes.byref(cb), ctypes.byref(ce), ctypes.byref(pb), ctypes.byref(pe))
    core.__sanitizer_cov_8bit_counters_init(cb, ce)
    core.__sanitizer_cov_pcs_init(pb, pe)
    print(f"INFO: rwkvchat: C edge coverage registered ({ce.value - cb.value} counters)", file=sys.stderr)
    return True


def main(check: Callable[[bytes], None], instrument: Callable[[], None] | None = None) -> None:
    """atheris entry point; `instrument` imports the modules under test inside atheris's instrumentation."""
    args = sys.argv[1:]
    if os.environ.get("FUZZ_SURVEY"):
        check = survey(check, os.environ["FUZZ_SURVEY"])
    try:
        if "--replay" in args:
            raise ImportError("replay requested")
        import atheris
    except ImportError:
        paths = [a for a in args if not a.startswith("-")]
        print(f"replayed {replay(check, paths)} inputs without a finding")
        return
    if instrument is not None:
        with atheris.instrument_imports(include=["rwkvchat"]):
            instrument()
    atheris.Setup([sys.argv[0], *args], check)
    attach_native_coverage()
    atheris.Fuzz()
