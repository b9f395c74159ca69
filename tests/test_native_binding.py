"""_native.py mirrors rwkvc.h: every RWKVC_API function is bound with the header's argument count,
rwkvc_info has the header's fields, and the ABI versions agree."""

from __future__ import annotations

import ctypes
import re

from conftest import REPO

from rwkvchat import _native

HEADER = REPO / "src/rwkvchat/native/include/rwkvc.h"


def _header_text() -> str:
    text = HEADER.read_text()
    text = re.sub(r"/\*.*?\*/", "", text, flags=re.DOTALL)
    return re.sub(r"//[^\n]*", "", text)


def _api_functions() -> dict[str, int]:
    """name -> number of parameters, for each RWKVC_API declaration."""
    out = {}
    for m in re.finditer(
        r"RWKVC_API\s+[^;(]*?\b(rwkvc_\w+)\s*\(([^)]*)\)\s*;", _header_text(), flags=re.DOTALL
    ):
        params = m.group(2).strip()
        out[m.group(1)] = 0 if params in ("", "void") else params.count(",") + 1
    return out


def test_header_parse_finds_the_api():
    funcs = _api_functions()
    assert len(funcs) >= 25
    assert funcs["rwkvc_eval"] == 7 and funcs["rwkvc_abi_version"] == 0


def test_every_function_bound_with_its_arg_count():
    funcs = _api_functions()
    assert set(_native.SIGNATURES) == set(funcs)
    for name, count in funcs.items():
        assert len(_native.SIGNATURES[name][1]) == count, name


def test_abi_version_matches_header():
    m = re.search(r"#define\s+RWKVC_ABI_VERSION\s+(\d+)", HEADER.read_text())
    assert m and int(m.group(1)) == _native.ABI_VERSION


def test_info_struct_matches_header():
    body = re.search(r"typedef struct\s*\{(.*?)\}\s*rwkvc_info;", _header_text(), flags=re.DOTALL).group(1)
    fields = re.findall(r"(uint32_t|uint64_t|size_t)\s+(\w+);", body)
    ctypes_of = {"uint32_t": ctypes.c_uint32, "uint64_t": ctypes.c_uint64, "size_t": ctypes.c_size_t}
    assert [(n, ctypes_of[t]) for t, n in fields] == list(_native.Info._fields_)


def test_status_values_match_header():
    enum = re.search(r"typedef enum\s*\{(.*?)\}\s*rwkvc_status;", _header_text(), flags=re.DOTALL).group(1)
    values = {k: int(v) for k, v in re.findall(r"RWKVC_(\w+)\s*=\s*(\d+)", enum)}
    for name, value in values.items():
        assert getattr(_native, name) == value, name


def test_loaded_library_abi(native):
    assert native.rwkvc_abi_version() == _native.ABI_VERSION
    assert _native.status_str(_native.ERR_FORMAT)
    assert _native.system_info()


def test_import_does_not_load_the_library():
    import subprocess
    import sys

    code = "import rwkvchat, rwkvchat.model, rwkvchat._native as n; assert n._lib is None"
    env_path = str(REPO / "src")
    subprocess.run([sys.executable, "-c", code], check=True, env={"PYTHONPATH": env_path, "PATH": ""})
