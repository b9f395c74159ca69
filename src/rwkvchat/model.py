"""Model: an RWKV model file loaded by the C library, and State: its recurrent state.

A Model owns one `rwkvc_model` (the memory-mapped weights) and a small pool of `rwkvc_ctx` (scratch and
worker threads), made on first use. The C API allows a context to one thread at a time, so each call
borrows a free context and threads that overlap get their own: one Model may serve several threads.
Logits are float32 numpy arrays; states are float32 arrays of `state_len` values that the caller owns
and may copy freely.
"""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import os
import threading
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from . import _native
from .errors import ModelFormatError, NativeError, RwkvchatError, StateMismatchError

_VERSION_NAMES = {70: "7", 60: "6", 52: "5.2", 51: "5.1", 50: "5.0", 40: "4"}
_TYPE_NAMES = {
    0: "F32",
    1: "F16",
    2: "Q4_0",
    3: "Q4_1",
    6: "Q5_0",
    7: "Q5_1",
    8: "Q8_0",
    9: "Q8_1",
    10: "Q2_K",
    11: "Q3_K",
    12: "Q4_K",
    13: "Q5_K",
    14: "Q6_K",
    15: "Q8_K",
    30: "BF16",
}
# Statuses that mean "this file is not a model we can run" rather than a bug or a resource problem.
_FILE_STATUSES = (_native.ERR_FORMAT, _native.ERR_VERSION, _native.ERR_IO)
# Model(weights=...) -> rwkvc_weights_mode (rwkvc.h).
WEIGHTS_MODES = {"auto": 0, "mmap": 1, "copy": 2}
# Bytes hashed from the start of the file for the fingerprint: the header, metadata and tensor table of
# any realistic model (a 65536-entry vocabulary is about 1 MB), without reading gigabytes of weights.
_FINGERPRINT_HEAD = 4 << 20
_FINGERPRINT_TAIL = 1 << 20


class InvalidTokenError(RwkvchatError):
    """A token id that is not an integer in [0, n_vocab)."""


def system_info() -> str:
    """The native library's description of the CPU features and kernels it chose."""
    return _native.system_info()


def type_name(ggml_type: int) -> str:
    """ "F16", "Q4_0"... for a GGML type id."""
    return _TYPE_NAMES.get(ggml_type, f"type{ggml_type}")


class State:
    """A recurrent state: float32 (state_len,), owned by Python, advanced in place by Model.forward."""

    __slots__ = ("data",)

    def __init__(self, data: np.ndarray) -> None:
        self.data = data

    def copy(self) -> State:
        return State(self.data.copy())

    def to_numpy(self) -> np.ndarray:
        """A copy of the values, float32 (state_len,)."""
        return self.data.copy()

    def __len__(self) -> int:
        return int(self.data.shape[0])


def _parse_device(device: str) -> tuple[str, int | None]:
    """("cpu", None) or ("cuda:N", N) from "cpu", "cuda" or "cuda:N"."""
    if device == "cpu":
        return "cpu", None
    if device == "cuda":
        return "cuda:0", 0
    if device.startswith("cuda:") and device[5:].isascii() and device[5:].isdigit():
        return device, int(device[5:])
    raise RwkvchatError(f'device must be "cpu", "cuda" or "cuda:N", got {device!r}')


class Model:
    """An RWKV model in a GGUF file, run by the native engine."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        threads: int = 0,
        device: str = "cpu",
        gpu_layers: int = 0,
        weights: str = "auto",
    ) -> None:
        """device: "cpu", or "cuda" / "cuda:N" to run every block on GPU N (weights resident there; the
        library must be built with -DRWKVC_CUDA=ON). gpu_layers: blocks placed on the GPU, 0 = all.
        weights: where the CPU reads the weights from (WEIGHTS_MODES): "auto" maps the file and moves the
        weights into private huge-page memory in the background when that fits, "mmap" keeps them in the file
        mapping, "copy" moves them before returning (llama.cpp's --no-mmap). Results are the same in each."""
        self._model: ctypes.c_void_p | None = None
        # Every context made (freed by close) and those not in use by a call right now.
        self._contexts: list[ctypes.c_void_p] = []
        self._idle_contexts: list[ctypes.c_void_p] = []
        self._contexts_lock = threading.Lock()
        self._tokenizer: Any = None
        self.path = os.fspath(path)
        if not os.path.exists(self.path):
            raise ModelFormatError(f"no such model file: {self.path}")
        if os.path.isdir(self.path):
            raise ModelFormatError(f"is a directory, not a model file: {self.path}")
        if threads < 0:
            raise RwkvchatError(f"threads must be >= 0, got {threads}")
        self.device, self._gpu = _parse_device(device)
        if gpu_layers < 0:
            raise RwkvchatError(f"gpu_layers must be >= 0, got {gpu_layers}")
        self._gpu_layers = gpu_layers
        if weights not in WEIGHTS_MODES:
            raise RwkvchatError(f"weights must be one of {', '.join(WEIGHTS_MODES)}, got {weights!r}")
        # On a GPU the weights are uploaded once, so a private CPU copy would only cost memory.
        mode = WEIGHTS_MODES["mmap"] if self._gpu is not None else WEIGHTS_MODES[weights]
        lib = _native.lib()
        handle = ctypes.c_void_p()
        status = lib.rwkvc_model_load_ex(self.path.encode("utf-8"), threads, mode, ctypes.byref(handle))
        if status != _native.OK:
            message = _native.last_error() or _native.status_str(status)
            if status in _FILE_STATUSES:
                raise ModelFormatError(f"{self.path}: {message}")
            raise NativeError(status, message)
        self._model = handle
        self._threads = threads
        info = _native.Info()
        _native.check(lib.rwkvc_model_info(self._model, ctypes.byref(info)))
        self._info = info
        if self._gpu is not None:
            # Made now, so a missing GPU or CUDA-less build fails here rather than at the first forward.
            try:
                with self._context():
                    pass
            except BaseException:
                self.close()
                raise

    # ---- sizes and metadata ----

    # Straight from rwkvc_info: counts of tokens, channels and layers; state_len in floats; file_size in bytes;
    # head_size and n_head are 0 for v4.

    n_vocab = property(lambda self: int(self._info.n_vocab))
    n_embd = property(lambda self: int(self._info.n_embd))
    n_layer = property(lambda self: int(self._info.n_layer))
    n_ffn = property(lambda self: int(self._info.n_ffn))
    head_size = property(lambda self: int(self._info.head_size))
    n_head = property(lambda self: int(self._info.n_head))
    state_len = property(lambda self: int(self._info.state_len))
    n_params = property(lambda self: int(self._info.n_params))
    file_size = property(lambda self: int(self._info.file_size))

    @property
    def version(self) -> str:
        """ "7", "6", "5.2", "5.1", "5.0" or "4"."""
        v = int(self._info.arch_version)
        return _VERSION_NAMES.get(v, f"{v // 10}.{v % 10}")

    @property
    def weight_type(self) -> str:
        """Name of the type holding most matrix bytes, e.g. "F16" or "Q4_0"."""
        return type_name(int(self._info.weight_type))

    @property
    def fingerprint(self) -> str:
        """A content id for saved sessions: sha256 of the file's first 4 MiB, last 1 MiB and size, in hex.

        The first bytes hold the metadata and tensor table, so two files differing in any shape, name or
        key differ here, and the tail (the last tensors' weights) tells apart fine-tunes of one shape.
        The rest is not read: hashing gigabytes would take seconds.
        """
        h = hashlib.sha256()
        with open(self.path, "rb") as f:
            h.update(f.read(_FINGERPRINT_HEAD))
            if self.file_size > _FINGERPRINT_HEAD:
                f.seek(max(_FINGERPRINT_HEAD, self.file_size - _FINGERPRINT_TAIL))
                h.update(f.read(_FINGERPRINT_TAIL))
        h.update(str(self.file_size).encode())
        return h.hexdigest()[:32]

    def _handle(self) -> ctypes.c_void_p:
        if self._model is None:
            raise RwkvchatError("the model is closed")
        return self._model

    def metadata_keys(self) -> list[str]:
        """Every metadata key of the file, in file order."""
        lib, m = _native.lib(), self._handle()
        keys = []
        for i in range(int(self._info.n_meta)):
            ptr, n = ctypes.c_void_p(), ctypes.c_size_t()
            _native.check(lib.rwkvc_model_meta_key(m, i, ctypes.byref(ptr), ctypes.byref(n)))
            keys.append(_native.borrowed_bytes(ptr, n.value).decode("utf-8", "replace"))
        return keys

    def metadata_value(self, key: str) -> Any:
        """The python value (int, float, bool, str or list of those) of a metadata key, or None if absent."""
        lib, m = _native.lib(), self._handle()
        k = key.encode("utf-8")
        vtype, atype, count = ctypes.c_uint32(), ctypes.c_uint32(), ctypes.c_uint64()
        status = lib.rwkvc_model_meta_kind(
            m, k, ctypes.byref(vtype), ctypes.byref(atype), ctypes.byref(count)
        )
        if status == _native.ERR_ARG:
            return None
        _native.check(status)
        if vtype.value == 9:  # RWKVC_META_ARRAY
            if atype.value == 8:
                return self._meta_strings(k, count.value)
            return [self._meta_scalar(k, atype.value, i) for i in range(count.value)]
        return self._meta_scalar(k, vtype.value, 0)

    def _meta_scalar(self, k: bytes, vtype: int, index: int) -> Any:
        lib, m = _native.lib(), self._handle()
        if vtype == 8:
            ptr, n = ctypes.c_void_p(), ctypes.c_size_t()
            _native.check(lib.rwkvc_model_meta_string(m, k, index, ctypes.byref(ptr), ctypes.byref(n)))
            return _native.borrowed_bytes(ptr, n.value).decode("utf-8", "replace")
        if vtype in (6, 12):  # f32, f64
            out = ctypes.c_double()
            _native.check(lib.rwkvc_model_meta_float(m, k, index, ctypes.byref(out)))
            return out.value
        iout = ctypes.c_int64()
        _native.check(lib.rwkvc_model_meta_int(m, k, index, ctypes.byref(iout)))
        if vtype == 7:
            return bool(iout.value)
        if vtype == 10 and iout.value < 0:  # u64 above INT64_MAX comes back wrapped.
            return iout.value + (1 << 64)
        return iout.value

    def _meta_strings(self, k: bytes, count: int) -> list[str]:
        if count == 0:
            return []
        lib, m = _native.lib(), self._handle()
        ptrs = (ctypes.c_void_p * count)()
        lens = (ctypes.c_size_t * count)()
        _native.check(lib.rwkvc_model_meta_strings(m, k, ptrs, lens, count))
        return [
            _native.borrowed_bytes(ptrs[i], lens[i]).decode("utf-8", "surrogateescape") for i in range(count)
        ]

    def tensors(self) -> list[tuple[str, str, tuple[int, ...]]]:
        """(name, type name, ne) for every tensor; ne in GGUF order (innermost first), trailing 1s dropped."""
        lib, m = _native.lib(), self._handle()
        out = []
        for i in range(int(self._info.n_tensors)):
            ptr, n = ctypes.c_void_p(), ctypes.c_size_t()
            ttype, ndims = ctypes.c_uint32(), ctypes.c_uint32()
            ne = (ctypes.c_uint64 * 4)()
            _native.check(
                lib.rwkvc_model_tensor(
                    m, i, ctypes.byref(ptr), ctypes.byref(n), ctypes.byref(ttype), ctypes.byref(ndims), ne
                )
            )
            name = _native.borrowed_bytes(ptr, n.value).decode("utf-8", "replace")
            out.append((name, type_name(ttype.value), tuple(int(ne[d]) for d in range(max(ndims.value, 1)))))
        return out

    @property
    def tokenizer(self) -> Any:
        """The tokenizer described by the file's metadata (made on first use)."""
        if self._tokenizer is None:
            try:
                from .tokenizer import tokenizer_from_model
            except ImportError as e:
                raise RwkvchatError(f"tokenizers are not available in this build ({e})") from e
            self._tokenizer = tokenizer_from_model(self)
        return self._tokenizer

    # ---- states ----

    def new_state(self) -> State:
        """The empty-history state (zeros, or v4's pp at -1e30)."""
        data = np.empty(self.state_len, dtype=np.float32)
        _native.check(_native.lib().rwkvc_state_init(self._handle(), _fptr(data), data.shape[0]))
        return State(data)

    def state_from_numpy(self, a: np.ndarray) -> State:
        """Wraps a copy of a float32 (state_len,) array as a State of this model."""
        a = np.asarray(a)
        if a.dtype != np.float32:
            raise StateMismatchError(f"a state must be float32, got {a.dtype}")
        if a.ndim != 1 or a.shape[0] != self.state_len:
            raise StateMismatchError(
                f"the state has {a.size} values in shape {a.shape}; this model needs ({self.state_len},)"
            )
        return State(np.ascontiguousarray(a).copy())

    def _check_state(self, state: State) -> np.ndarray:
        if not isinstance(state, State):
            raise StateMismatchError(f"expected a State, got {type(state).__name__}")
        data = state.data
        if data.dtype != np.float32 or data.ndim != 1 or data.shape[0] != self.state_len:
            raise StateMismatchError(
                f"the state has {data.size} values of {data.dtype}; this model needs {self.state_len} float32"
            )
        if not data.flags.c_contiguous or not data.flags.writeable:
            raise StateMismatchError("the state array must be contiguous and writeable")
        return data

    # ---- evaluation ----

    def _tokens(self, tokens: Sequence[int] | np.ndarray) -> np.ndarray:
        try:
            arr = np.asarray(tokens)
        except (TypeError, ValueError) as e:
            raise InvalidTokenError(f"tokens must be a list of integers ({e})") from e
        if arr.ndim != 1:
            raise InvalidTokenError(f"tokens must be a flat list of integers, got shape {arr.shape}")
        if arr.size == 0:
            raise InvalidTokenError("no tokens to feed")
        if arr.dtype == np.bool_ or not np.issubdtype(arr.dtype, np.integer):
            if arr.dtype == object and all(
                isinstance(t, (int, np.integer)) and not isinstance(t, bool) for t in arr
            ):
                arr = arr.astype(np.int64)
            else:
                raise InvalidTokenError(f"tokens must be integers, got {arr.dtype}")
        bad = (arr < 0) | (arr >= self.n_vocab)
        if bad.any():
            i = int(np.argmax(bad))
            raise InvalidTokenError(
                f"token id {int(arr[i])} at position {i} is out of range [0, {self.n_vocab})"
            )
        return np.ascontiguousarray(arr, dtype=np.uint32)

    def _token_buffer(self, tokens: Sequence[int] | np.ndarray) -> ctypes.Array[ctypes.c_uint32]:
        """The token ids as a uint32 ctypes array, checked as _tokens does.

        Decode calls forward with one token at a time, right after the weights have streamed through the caches,
        so every line of Python code it touches is a cache miss: numpy's general path cost about 0.1 ms a token.
        A short list of plain ints takes a path that touches little.
        """
        if type(tokens) is list and 0 < len(tokens) <= 64:
            n_vocab = self.n_vocab
            if all(type(t) is int and 0 <= t < n_vocab for t in tokens):
                return (ctypes.c_uint32 * len(tokens))(*tokens)
        ids = self._tokens(tokens)
        return (ctypes.c_uint32 * ids.shape[0]).from_buffer_copy(ids)

    def _new_context(self) -> ctypes.c_void_p:
        ctx = ctypes.c_void_p()
        if self._gpu is not None:
            _native.check(
                _native.lib().rwkvc_ctx_new_cuda(self._handle(), self._gpu, self._gpu_layers, ctypes.byref(ctx))
            )
        else:
            _native.check(_native.lib().rwkvc_ctx_new(self._handle(), self._threads, ctypes.byref(ctx)))
        return ctx

    def _borrow_context(self) -> ctypes.c_void_p:
        """An idle context for one call, made when every context is busy in another thread; hand it back with
        _return_context."""
        with self._contexts_lock:
            ctx = self._idle_contexts.pop() if self._idle_contexts else None
        if ctx is None:
            ctx = self._new_context()
            with self._contexts_lock:
                self._contexts.append(ctx)
        return ctx

    def _return_context(self, ctx: ctypes.c_void_p) -> None:
        with self._contexts_lock:
            self._idle_contexts.append(ctx)

    @contextlib.contextmanager
    def _context(self) -> Iterator[ctypes.c_void_p]:
        """Borrows an idle context for one call (see _borrow_context)."""
        ctx = self._borrow_context()
        try:
            yield ctx
        finally:
            self._return_context(ctx)

    def forward(
        self, tokens: Sequence[int] | np.ndarray, state: State, logits: bool = True
    ) -> np.ndarray | None:
        """Feeds tokens (sequence mode), advancing state in place.

        Returns the last token's logits, float32 (n_vocab,), or None when logits=False (the head is skipped).
        """
        ids = self._token_buffer(tokens)
        data = self._check_state(state)
        out = np.empty(self.n_vocab, dtype=np.float32) if logits else None
        # Not `with self._context()`: a generator-based context manager is a noticeable share of the cold path.
        ctx = self._borrow_context()
        try:
            status = _native.lib().rwkvc_eval(
                ctx,
                ids,
                len(ids),
                _fptr(data),
                data.shape[0],
                _fptr(out) if out is not None else None,
                self.n_vocab if logits else 0,
            )
        finally:
            self._return_context(ctx)
        _native.check(status)
        return out

    def forward_all(self, tokens: Sequence[int] | np.ndarray, state: State) -> np.ndarray:
        """As forward, returning every token's logits, float32 (len(tokens), n_vocab)."""
        ids = self._token_buffer(tokens)
        data = self._check_state(state)
        out = np.empty((len(ids), self.n_vocab), dtype=np.float32)
        with self._context() as ctx:
            status = _native.lib().rwkvc_eval_all(
                ctx,
                ids,
                len(ids),
                _fptr(data),
                data.shape[0],
                _fptr(out),
                out.size,
            )
            _native.check(status)
        return out

    def weights_moved(self, wait: bool = False) -> tuple[int, int]:
        """(bytes moved into private memory, bytes to move; 0 when the weights stay in the file mapping).
        wait: first wait for a background move to end."""
        moved, total = ctypes.c_uint64(), ctypes.c_uint64()
        _native.check(
            _native.lib().rwkvc_model_weights_moved(self._handle(), int(wait), ctypes.byref(moved), ctypes.byref(total))
        )
        return int(moved.value), int(total.value)

    # ---- lifetime ----

    def close(self) -> None:
        """Frees the contexts and the model (idempotent). No call may be running in another thread."""
        lib = _native._lib
        contexts = getattr(self, "_contexts", [])
        if lib is not None:
            for ctx in contexts:
                lib.rwkvc_ctx_free(ctx)
            if self._model is not None:
                lib.rwkvc_model_free(self._model)
        contexts.clear()
        if hasattr(self, "_idle_contexts"):
            self._idle_contexts.clear()
        self._model = None

    def __enter__(self) -> Model:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        # At interpreter exit module globals may already be gone; a finalizer must never raise.
        with contextlib.suppress(Exception):
            self.close()

    def __repr__(self) -> str:
        if self._model is None:
            return f"Model({self.path!r}, closed)"
        return (
            f"Model({self.path!r}, v{self.version}, n_vocab={self.n_vocab}, n_embd={self.n_embd}, "
            f"n_layer={self.n_layer}, {self.weight_type})"
        )


def _fptr(a: np.ndarray | None) -> Any:
    if a is None:
        return None
    # A ctypes view of the buffer: cheaper than a.ctypes.data_as, which builds several Python objects per call.
    return (ctypes.c_float * a.size).from_buffer(a)
