"""The one ctypes binding of the C library (librwkvc), mirroring native/include/rwkvc.h.

Nothing is loaded at import: `lib()` finds and opens the library on first use, declares the exact
C signature of every RWKVC_API function, and refuses a library built for another ABI version.
`check(status)` turns a failed rwkvc_status into a NativeError carrying the library's own message.
"""

from __future__ import annotations

import ctypes
import os
import sys
import threading
from ctypes import (
    POINTER,
    c_char_p,
    c_double,
    c_int,
    c_int64,
    c_size_t,
    c_uint8,
    c_uint32,
    c_uint64,
    c_void_p,
)

from .errors import NativeError, RwkvchatError

# Must equal RWKVC_ABI_VERSION in rwkvc.h (tests/test_native_binding.py checks the header).
ABI_VERSION = 3

# rwkvc_status values.
OK, ERR_ARG, ERR_IO, ERR_FORMAT, ERR_VERSION, ERR_NOMEM, ERR_SIZE, ERR_BACKEND, ERR_INTERNAL = range(9)


class Info(ctypes.Structure):
    """rwkvc_info: field order and types exactly as in rwkvc.h."""

    _fields_ = [
        ("arch_version", c_uint32),
        ("n_vocab", c_uint32),
        ("n_embd", c_uint32),
        ("n_layer", c_uint32),
        ("n_ffn", c_uint32),
        ("head_size", c_uint32),
        ("n_head", c_uint32),
        ("weight_type", c_uint32),
        ("state_len", c_size_t),
        ("n_params", c_uint64),
        ("file_size", c_uint64),
        ("n_meta", c_uint64),
        ("n_tensors", c_uint64),
    ]


_model_p = c_void_p
_ctx_p = c_void_p
_tok_p = c_void_p
_float_p = POINTER(ctypes.c_float)
_status = c_int

# name -> (restype, argtypes): every RWKVC_API function of rwkvc.h, in header order.
SIGNATURES: dict[str, tuple[object, list[object]]] = {
    "rwkvc_abi_version": (c_uint32, []),
    "rwkvc_status_str": (c_char_p, [c_int]),
    "rwkvc_last_error": (c_char_p, []),
    "rwkvc_system_info": (c_char_p, []),
    "rwkvc_model_load_ex": (_status, [c_char_p, c_uint32, c_uint32, POINTER(_model_p)]),
    "rwkvc_model_load": (_status, [c_char_p, c_uint32, POINTER(_model_p)]),
    "rwkvc_model_weights_moved": (_status, [_model_p, c_uint32, POINTER(c_uint64), POINTER(c_uint64)]),
    "rwkvc_model_free": (None, [_model_p]),
    "rwkvc_model_info": (_status, [_model_p, POINTER(Info)]),
    "rwkvc_model_tensor": (
        _status,
        [
            _model_p,
            c_uint64,
            POINTER(c_void_p),
            POINTER(c_size_t),
            POINTER(c_uint32),
            POINTER(c_uint32),
            POINTER(c_uint64),
        ],
    ),
    "rwkvc_model_meta_key": (_status, [_model_p, c_uint64, POINTER(c_void_p), POINTER(c_size_t)]),
    "rwkvc_model_meta_kind": (
        _status,
        [_model_p, c_char_p, POINTER(c_uint32), POINTER(c_uint32), POINTER(c_uint64)],
    ),
    "rwkvc_model_meta_int": (_status, [_model_p, c_char_p, c_uint64, POINTER(c_int64)]),
    "rwkvc_model_meta_float": (_status, [_model_p, c_char_p, c_uint64, POINTER(c_double)]),
    "rwkvc_model_meta_string": (
        _status,
        [_model_p, c_char_p, c_uint64, POINTER(c_void_p), POINTER(c_size_t)],
    ),
    "rwkvc_model_meta_strings": (
        _status,
        [_model_p, c_char_p, POINTER(c_void_p), POINTER(c_size_t), c_size_t],
    ),
    "rwkvc_ctx_new": (_status, [_model_p, c_uint32, POINTER(_ctx_p)]),
    "rwkvc_ctx_free": (None, [_ctx_p]),
    "rwkvc_state_init": (_status, [_model_p, _float_p, c_size_t]),
    "rwkvc_eval": (_status, [_ctx_p, POINTER(c_uint32), c_size_t, _float_p, c_size_t, _float_p, c_size_t]),
    "rwkvc_eval_all": (
        _status,
        [_ctx_p, POINTER(c_uint32), c_size_t, _float_p, c_size_t, _float_p, c_size_t],
    ),
    "rwkvc_type_info": (_status, [c_uint32, POINTER(c_char_p), POINTER(c_size_t), POINTER(c_size_t)]),
    "rwkvc_quantize": (_status, [c_uint32, _float_p, c_size_t, c_size_t, c_void_p, c_size_t]),
    "rwkvc_dequantize": (_status, [c_uint32, c_void_p, c_size_t, _float_p, c_size_t]),
    "rwkvc_tokenizer_new": (
        _status,
        [POINTER(POINTER(c_uint8)), POINTER(c_size_t), c_size_t, POINTER(_tok_p)],
    ),
    "rwkvc_tokenizer_free": (None, [_tok_p]),
    "rwkvc_tokenizer_encode": (
        _status,
        [_tok_p, POINTER(c_uint8), c_size_t, POINTER(c_uint32), c_size_t, POINTER(c_size_t)],
    ),
    "rwkvc_ctx_new_cuda": (_status, [_model_p, c_int, c_uint32, POINTER(_ctx_p)]),
}

_lock = threading.Lock()
_lib: ctypes.CDLL | None = None


def _library_name() -> str:
    if sys.platform == "darwin":
        return "librwkvc.dylib"
    if sys.platform == "win32":
        return "rwkvc.dll"
    return "librwkvc.so"


def library_path() -> str:
    """$RWKVCHAT_LIB if set, else the library installed next to this file."""
    env = os.environ.get("RWKVCHAT_LIB")
    if env:
        return env
    return os.path.join(os.path.dirname(os.path.abspath(__file__)), _library_name())


def _open() -> ctypes.CDLL:
    path = library_path()
    if not os.path.exists(path):
        raise RwkvchatError(
            f"the native library was not built ({path} is missing); install the package with "
            "`pip install .` from a source checkout (needs CMake and a C compiler), or set RWKVCHAT_LIB"
        )
    try:
        lib = ctypes.CDLL(path)
    except OSError as e:
        raise RwkvchatError(f"cannot load the native library {path}: {e}") from e
    for name, (restype, argtypes) in SIGNATURES.items():
        try:
            fn = getattr(lib, name)
        except AttributeError:
            raise RwkvchatError(f"the native library {path} lacks {name}; rebuild it") from None
        fn.restype = restype
        fn.argtypes = argtypes
    abi = lib.rwkvc_abi_version()
    if abi != ABI_VERSION:
        raise RwkvchatError(
            f"the native library {path} has ABI version {abi}, this package needs {ABI_VERSION}; "
            "reinstall the package"
        )
    return lib


def lib() -> ctypes.CDLL:
    """The loaded library with every signature declared (loaded once, thread-safe)."""
    global _lib
    if _lib is None:
        with _lock:
            if _lib is None:
                _lib = _open()
    return _lib


def last_error() -> str:
    msg = lib().rwkvc_last_error()
    return msg.decode("utf-8", "replace") if msg else ""


def status_str(status: int) -> str:
    msg = lib().rwkvc_status_str(status)
    return msg.decode("utf-8", "replace") if msg else f"status {status}"


def check(status: int) -> None:
    """Raises NativeError(status, detail) unless status is RWKVC_OK."""
    if status != OK:
        raise NativeError(status, last_error() or status_str(status))


def system_info() -> str:
    msg = lib().rwkvc_system_info()
    return msg.decode("utf-8", "replace") if msg else ""


def borrowed_bytes(ptr: c_void_p, length: int) -> bytes:
    """Copies length bytes from a borrowed, non-terminated C pointer."""
    if length == 0:
        return b""
    return ctypes.string_at(ptr, length)
