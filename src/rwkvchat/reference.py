"""Pure-numpy float64 RWKV forward pass: the oracle the native engine is tested against.

It is slow (one token at a time, every product a numpy matvec) and meant for tiny models only.
It reads an official-layout state dict (BlinkDL `.pth` key names and shapes, any float dtype) and keeps
its recurrent state in exactly the native engine's layout, so states can be compared element by element:
per layer `[att_x_prev (D), S (H*N*N), ffn_x_prev (D)]` flattened, with v7's S indexed [head][value][key].

Only RWKV-7 lives here (docs: rwkv-architectures.md §4). v4/v5/v6 come from `reference_legacy`, a module
that provides `make_legacy(version: str, params: dict[str, np.ndarray])` returning an object with the
`_Runner` protocol below (`state_len`, `init_state()`, `step(token, state) -> logits`).
"""

from __future__ import annotations

import importlib
from typing import Any, Protocol

import numpy as np

from .errors import ModelFormatError

# Key fragments of research variants that look like a known version but compute something else
# (rwkv-architectures.md §0.2); converting them as if they were plain RWKV would give garbage silently.
_REFUSED_VARIANTS = (
    (".ffn.s_emb", "rwkv7a (DeepEmbed)"),
    (".ffn.s0", "rwkv7a (DeepEmbed)"),
    (".ffn.s1", "rwkv7a (DeepEmbed)"),
    (".ffn.s2", "rwkv7a (DeepEmbed)"),
    (".qkv.", "rwkv7b"),
    ("pos_emb", "an early RWKV-4 experiment with positional embeddings"),
    ("head_q", "an early RWKV-4 experiment with a head_q/head_k copy head"),
    ("head_k", "an early RWKV-4 experiment with a head_q/head_k copy head"),
)

# Keys written by the pip package's own converter: the tensors are pre-transformed and not official.
_PIP_CONVERTED_KEYS = ("_strategy", "_version", "_rescale_layer")

_LN_EPS = 1e-5
_GN_EPS = 64e-5
# The pip package writes e^{-1/2} rounded to this literal in its v7 decay (rwkv-architectures.md §4.2 T3).
_V7_DECAY_SCALE = 0.606531


def detect_version(sd: dict[str, Any]) -> str:
    """Returns "4", "5.0", "5.1", "5.2", "6.0" or "7.0" from the keys of an official state dict.

    The sturdy rule of conformance/README.md: `att.k_k` -> 7.0, `att.time_maa_x` -> 6.0, `gate.weight`
    with a 2-D `time_decay` -> 5.2, `gate.weight` alone -> 5.1, `ln_x` alone -> 5.0, otherwise 4.
    Raises ModelFormatError for known research variants and for files that are not RWKV state dicts.
    """
    keys = list(sd.keys())
    for key in keys:
        for fragment, what in _REFUSED_VARIANTS:
            if fragment in key:
                raise ModelFormatError(f"unsupported RWKV variant {what} (key {key!r})")
        if key in _PIP_CONVERTED_KEYS:
            raise ModelFormatError(
                f"this checkpoint was pre-converted by the rwkv pip package (key {key!r}); use the original .pth"
            )
    if "emb.weight" not in sd or "head.weight" not in sd or "blocks.0.ln1.weight" not in sd:
        raise ModelFormatError(
            "not an RWKV checkpoint: emb.weight, head.weight or blocks.0.ln1.weight is missing"
        )
    if any(k.endswith("att.k_k") for k in keys):
        return "7.0"
    if any(k.endswith("att.time_maa_x") for k in keys):
        return "6.0"
    has_gate = any(k.endswith("att.gate.weight") for k in keys)
    if has_gate:
        decay = sd.get("blocks.0.att.time_decay")
        if decay is not None and len(decay.shape) == 2 and decay.shape[1] > 1:
            return "5.2"
        return "5.1"
    if any(".ln_x." in k for k in keys):
        return "5.0"
    return "4"


def layer_count(sd: dict[str, Any]) -> int:
    """Number of blocks, checking that the `blocks.<i>.` indices run 0..L-1 without a gap.

    The check keeps a corrupt key such as `blocks.99999999.x` from making callers loop over 10^8 blocks.
    """
    ids = set()
    for key in sd:
        parts = key.split(".")
        # isascii: "²".isdigit() is True in Python, but int("²") raises.
        if len(parts) > 2 and parts[0] == "blocks" and parts[1].isascii() and parts[1].isdigit():
            ids.add(int(parts[1]))
    if not ids:
        raise ModelFormatError("not an RWKV checkpoint: no blocks.<i>. keys")
    for expected, got in enumerate(sorted(ids)):
        if got != expected:
            raise ModelFormatError(
                f"block {expected} is missing (the checkpoint has blocks up to {max(ids)})"
            )
    return len(ids)


def layer_norm(x: np.ndarray, w: np.ndarray, b: np.ndarray, eps: float = _LN_EPS) -> np.ndarray:
    """LayerNorm over the last axis with the biased variance, as PyTorch."""
    mu = x.mean(axis=-1, keepdims=True)
    var = ((x - mu) ** 2).mean(axis=-1, keepdims=True)
    return (x - mu) / np.sqrt(var + eps) * w + b


def group_norm(x: np.ndarray, n_head: int, w: np.ndarray, b: np.ndarray, eps: float = _GN_EPS) -> np.ndarray:
    """GroupNorm of a length-D vector with n_head groups of D/n_head consecutive channels."""
    h = x.reshape(n_head, -1)
    mu = h.mean(axis=1, keepdims=True)
    var = ((h - mu) ** 2).mean(axis=1, keepdims=True)
    return ((h - mu) / np.sqrt(var + eps)).reshape(-1) * w + b


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


class _Runner(Protocol):
    """What one architecture version provides to ReferenceModel."""

    state_len: int
    n_vocab: int

    def init_state(self) -> np.ndarray: ...

    def step(self, token: int, state: np.ndarray) -> np.ndarray: ...


class _V7:
    """RWKV-7 ("Goose", x070) one-token step, written from rwkv-architectures.md §4.2."""

    def __init__(self, p: dict[str, np.ndarray]) -> None:
        self.p = p
        self.n_layer = layer_count(p)
        self.n_vocab, self.n_embd = p["emb.weight"].shape
        self.n_head, self.head_size = p["blocks.0.att.r_k"].shape
        if self.n_head * self.head_size != self.n_embd:
            raise ModelFormatError(
                f"r_k shape {p['blocks.0.att.r_k'].shape} does not split n_embd {self.n_embd}"
            )
        d, n = self.n_embd, self.head_size
        self.layer_len = (2 + n) * d
        self.state_len = self.n_layer * self.layer_len
        # ln0 depends only on the token: normalise the embedding table once, in float64.
        self.emb = layer_norm(p["emb.weight"], p["blocks.0.ln0.weight"], p["blocks.0.ln0.bias"])

    def init_state(self) -> np.ndarray:
        return np.zeros(self.state_len, dtype=np.float64)

    def step(self, token: int, state: np.ndarray) -> np.ndarray:
        p, d, h, n = self.p, self.n_embd, self.n_head, self.head_size
        x = self.emb[token].copy()
        v_first = None
        for i in range(self.n_layer):
            base = i * self.layer_len
            att_prev = state[base : base + d]
            wkv = state[base + d : base + d + h * n * n].reshape(h, n, n)
            ffn_prev = state[base + d + h * n * n : base + self.layer_len]
            pre = f"blocks.{i}."
            a = layer_norm(x, p[pre + "ln1.weight"], p[pre + "ln1.bias"])
            out, v_first = self._time_mix(pre + "att.", i, a, att_prev, wkv, v_first)
            att_prev[:] = a
            x = x + out
            b = layer_norm(x, p[pre + "ln2.weight"], p[pre + "ln2.bias"])
            xk = b + (ffn_prev - b) * p[pre + "ffn.x_k"]
            x = x + p[pre + "ffn.value.weight"] @ (np.maximum(p[pre + "ffn.key.weight"] @ xk, 0.0) ** 2)
            ffn_prev[:] = b
        x = layer_norm(x, p["ln_out.weight"], p["ln_out.bias"])
        return p["head.weight"] @ x

    def _time_mix(
        self,
        pre: str,
        layer: int,
        a: np.ndarray,
        att_prev: np.ndarray,
        wkv: np.ndarray,
        v_first: np.ndarray | None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """T1..T12 of §4.2 for one layer; updates wkv (H,N,N) in place and returns (output, v_first)."""
        p, h, n = self.p, self.n_head, self.head_size
        delta = att_prev - a
        xr, xw, xk, xv, xa, xg = (a + delta * p[pre + "x_" + c] for c in "rwkvag")
        r = p[pre + "receptance.weight"] @ xr
        k = p[pre + "key.weight"] @ xk
        v = p[pre + "value.weight"] @ xv
        e = p[pre + "w0"] + np.tanh(xw @ p[pre + "w1"]) @ p[pre + "w2"]
        decay = np.exp(-_V7_DECAY_SCALE * sigmoid(e))
        alpha = sigmoid(p[pre + "a0"] + (xa @ p[pre + "a1"]) @ p[pre + "a2"])
        g = sigmoid(xg @ p[pre + "g1"]) @ p[pre + "g2"]
        kk = (k * p[pre + "k_k"]).reshape(h, n)
        kk = (kk / np.maximum(np.linalg.norm(kk, axis=1, keepdims=True), 1e-12)).reshape(-1)
        k = k * (1.0 + (alpha - 1.0) * p[pre + "k_a"])
        if layer == 0:
            v_first = v
        else:
            assert v_first is not None
            v = v + (v_first - v) * sigmoid(p[pre + "v0"] + (xv @ p[pre + "v1"]) @ p[pre + "v2"])
        rh, kh, vh = r.reshape(h, n), k.reshape(h, n), v.reshape(h, n)
        dh, ah, bh = decay.reshape(h, n), (-kk).reshape(h, n), (kk * alpha).reshape(h, n)
        y = np.empty((h, n))
        for j in range(h):
            s = wkv[j]
            sa = s @ ah[j]
            s[:] = s * dh[j][None, :] + np.outer(sa, bh[j]) + np.outer(vh[j], kh[j])
            y[j] = s @ rh[j]
        y = group_norm(y.reshape(-1), h, p[pre + "ln_x.weight"], p[pre + "ln_x.bias"])
        bonus = (rh * kh * p[pre + "r_k"].reshape(h, n)).sum(axis=1, keepdims=True) * vh
        y = y + bonus.reshape(-1)
        return p[pre + "output.weight"] @ (y * g), v_first


class ReferenceModel:
    """A float64 RWKV model built from an official-layout state dict.

    state: a flat float64 array of `state_len` values in the native layout (see module docstring).
    """

    def __init__(self, state_dict: dict[str, Any], version: str | None = None) -> None:
        self.version = version or detect_version(state_dict)
        # Squeeze the (1,1,D) mixing vectors to (D) and lift everything to float64; matrices keep their shape.
        params = {}
        for key, value in state_dict.items():
            arr = np.asarray(value, dtype=np.float64)
            if arr.ndim == 3 and arr.shape[:2] == (1, 1):
                arr = arr.reshape(-1)
            params[key] = arr
        if self.version == "7.0":
            self._runner: _Runner = _V7(params)
        else:
            try:
                legacy = importlib.import_module(".reference_legacy", __package__)
            except ImportError as e:
                raise ModelFormatError(f"the reference has no RWKV-{self.version} yet ({e})") from e
            self._runner = legacy.make_legacy(self.version, params)
        self.state_len = self._runner.state_len
        self.n_vocab = int(params["emb.weight"].shape[0])

    def new_state(self) -> np.ndarray:
        """The empty-history state, float64 (state_len,)."""
        return self._runner.init_state()

    def forward(self, tokens: list[int] | np.ndarray, state: np.ndarray) -> np.ndarray:
        """Feeds tokens one at a time, advancing state in place; returns the last logits, float64 (V,)."""
        return self.forward_all(tokens, state)[-1]

    def forward_all(self, tokens: list[int] | np.ndarray, state: np.ndarray) -> np.ndarray:
        """As forward, returning every token's logits, float64 (T, V)."""
        if state.dtype != np.float64 or state.shape != (self.state_len,):
            raise ValueError(f"state must be float64 ({self.state_len},), got {state.dtype} {state.shape}")
        rows = [self._runner.step(int(t), state) for t in tokens]
        if not rows:
            raise ValueError("no tokens")
        return np.stack(rows)
