"""Pure-numpy float64 forward pass of RWKV-4, 5.0, 5.1, 5.2 and 6.0: the oracle for the older generations.

Like `reference` (which holds RWKV-7 and dispatches here for everything else), this is slow and meant for tiny
models. It reads an official-layout state dict (BlinkDL `.pth` key names and shapes; the (1,1,D) mixing
vectors may already be squeezed to (D)) and follows rwkv-architectures.md §1-§3 literally, one token at a time.

The recurrent state is one flat float64 array, per layer in the official `rwkv` package's list order,
concatenated over layers, so it can be compared with `conformance/official/*.npz` `state_XX` directly:

* v4: `[att_xprev (D), aa (D), bb (D), pp (D), ffn_xprev (D)]`, 5·D per layer; empty state: zeros except
  `pp = -1e30` (so the first max-trick step ignores the empty past).
* v5.x, v6: `[att_xprev (D), S (H·N·N), ffn_xprev (D)]`, (2+N)·D per layer; S indexed [head][key][value].

The group-norm eps after the WKV is 64e-5 as in the official code; `gn_eps` overrides it because rwkv.cpp's v5
graph (and so its tiny v5 test logits) uses 1e-5 (conformance/rwkvcpp-tiny/README.md, "Caveat").
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .errors import ModelFormatError

__all__ = ["LEGACY_VERSIONS", "LegacyReference", "legacy_reference", "make_legacy", "normalise_version"]

LEGACY_VERSIONS = ("4", "5.0", "5.1", "5.2", "6.0")

_LN_EPS = 1e-5
_GN_EPS = 64e-5
# Initial `pp` of v4: far below any real exponent, so exp(pp - q) is exactly 0 at the first token.
_V4_PP_INIT = -1e30


def normalise_version(version: str) -> str:
    """Maps spellings such as "4.0", "6" or "v5.2" to one of LEGACY_VERSIONS; else ModelFormatError."""
    v = str(version).strip().lower().removeprefix("v")
    v = {"4.0": "4", "6": "6.0", "5": "5.2"}.get(v, v)
    if v not in LEGACY_VERSIONS:
        known = ", ".join(LEGACY_VERSIONS)
        raise ModelFormatError(f"the legacy reference knows RWKV {known}, not {version!r}")
    return v


def _layer_norm(x: np.ndarray, w: np.ndarray, b: np.ndarray, eps: float = _LN_EPS) -> np.ndarray:
    """LayerNorm over the last axis with the biased variance, as PyTorch."""
    mu = x.mean(axis=-1, keepdims=True)
    var = ((x - mu) ** 2).mean(axis=-1, keepdims=True)
    return (x - mu) / np.sqrt(var + eps) * w + b


def _group_norm(y: np.ndarray, w: np.ndarray, b: np.ndarray, eps: float) -> np.ndarray:
    """GroupNorm of y (H, N): each head normalised on its own, then the per-channel affine of length D."""
    mu = y.mean(axis=1, keepdims=True)
    var = ((y - mu) ** 2).mean(axis=1, keepdims=True)
    return ((y - mu) / np.sqrt(var + eps)).reshape(-1) * w + b


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def _prepare(sd: dict[str, Any]) -> dict[str, np.ndarray]:
    """float64 copies of every tensor, with (1,1,D) vectors squeezed to (D); other shapes unchanged."""
    params: dict[str, np.ndarray] = {}
    for key, value in sd.items():
        if key.startswith("_"):
            continue
        arr = np.asarray(value, dtype=np.float64)
        if arr.ndim == 3 and arr.shape[:2] == (1, 1):
            arr = arr.reshape(-1)
        params[key] = arr
    return params


def _need(p: dict[str, np.ndarray], key: str, shape: tuple[int, ...] | None = None) -> np.ndarray:
    """p[key], checked for presence and (optionally) shape, so a wrong checkpoint fails with its key name."""
    arr = p.get(key)
    if arr is None:
        raise ModelFormatError(f"checkpoint lacks {key!r}")
    if shape is not None and arr.shape != shape:
        raise ModelFormatError(f"{key!r} has shape {arr.shape}, expected {shape}")
    return arr


class LegacyReference:
    """One RWKV-4/5/6 model in float64. Use `new_state()`, then `forward(tokens, state)`.

    Attributes: version (one of LEGACY_VERSIONS), n_vocab V, n_embd D, n_layer L, n_head H (0 for v4),
    head_size N (0 for v4), layer_len (floats per layer), state_len = L * layer_len.
    """

    def __init__(self, params: dict[str, np.ndarray], version: str, gn_eps: float | None = None) -> None:
        self.version = normalise_version(version)
        self.gn_eps = _GN_EPS if gn_eps is None else float(gn_eps)
        p = self.p = params
        ids = {int(k.split(".")[1]) for k in p if k.startswith("blocks.") and k.split(".")[1].isascii()
               and k.split(".")[1].isdigit()}
        if not ids:
            raise ModelFormatError("not an RWKV checkpoint: no blocks.<i>. keys")
        self.n_layer = max(ids) + 1
        emb = _need(p, "emb.weight")
        if emb.ndim != 2:
            raise ModelFormatError(f"emb.weight must be 2-D, got shape {emb.shape}")
        self.n_vocab, self.n_embd = (int(s) for s in emb.shape)
        d = self.n_embd
        # ln0 depends only on the token: normalise the whole table once, in float64 (conformance README,
        # "Surprises" 1: doing it in bf16 moves the logits by up to 0.1).
        ln0_w, ln0_b = _need(p, "blocks.0.ln0.weight", (d,)), _need(p, "blocks.0.ln0.bias", (d,))
        self.emb = _layer_norm(emb, ln0_w, ln0_b)
        self.head = _need(p, "head.weight", (self.n_vocab, d))
        if self.version == "4":
            self.n_head = self.head_size = 0
            self.layer_len = 5 * d
        else:
            self.n_head = self._head_count()
            if self.n_head <= 0 or d % self.n_head:
                raise ModelFormatError(f"{self.n_head} heads do not divide n_embd {d}")
            self.head_size = d // self.n_head
            self.layer_len = (2 + self.head_size) * d
        self.state_len = self.n_layer * self.layer_len
        self._decay, self._bonus = [], []
        for i in range(self.n_layer):
            dec, bonus = self._decay_and_bonus(f"blocks.{i}.att.")
            self._decay.append(dec)
            self._bonus.append(bonus)

    # ----------------------------------------------------------------------------------------------- setup

    def _head_count(self) -> int:
        """H from block 0: time_faaaa (H, N) in v5.2/v6, time_decay (H) in v5.0/5.1."""
        p = self.p
        if self.version in ("5.2", "6.0"):
            bonus = _need(p, "blocks.0.att.time_faaaa")
            if bonus.ndim != 2:
                raise ModelFormatError(f"blocks.0.att.time_faaaa must be (H, N), got shape {bonus.shape}")
            return int(bonus.shape[0])
        return int(_need(p, "blocks.0.att.time_decay").size)

    def _decay_and_bonus(self, pre: str) -> tuple[np.ndarray, np.ndarray]:
        """Per-channel (D,) decay and bonus derived at load, as the official package does (README "derives").

        v4: (w̃ = -exp(time_decay), u = time_first) in log space for the max-trick.
        v5.x: (d = exp(-exp(time_decay)), u = exp(time_first) or time_faaaa), per head values broadcast to
        the head's N channels. v6: (raw time_decay, time_faaaa); its decay is data-dependent, made per token.
        """
        p, d, h = self.p, self.n_embd, self.n_head
        if self.version == "4":
            return -np.exp(_need(p, pre + "time_decay", (d,))), _need(p, pre + "time_first", (d,))
        decay = _need(p, pre + "time_decay")
        if f"{pre}time_first" in p:
            bonus = np.exp(p[pre + "time_first"])
        else:
            bonus = _need(p, pre + "time_faaaa")
        if decay.size not in (h, d) or bonus.size not in (h, d):
            raise ModelFormatError(
                f"{pre}time_decay/bonus sizes {decay.size}/{bonus.size} fit neither H nor D")
        n = d // h
        decay = np.repeat(decay.reshape(-1), n) if decay.size == h else decay.reshape(-1)
        bonus = np.repeat(bonus.reshape(-1), n) if bonus.size == h else bonus.reshape(-1)
        if self.version == "6.0":
            return decay, bonus
        with np.errstate(over="ignore"):
            return np.exp(-np.exp(decay)), bonus

    # --------------------------------------------------------------------------------------------- running

    def new_state(self) -> np.ndarray:
        """The empty-history state, float64 (state_len,)."""
        state = np.zeros(self.state_len, dtype=np.float64)
        if self.version == "4":
            d = self.n_embd
            for i in range(self.n_layer):
                state[i * self.layer_len + 3 * d: i * self.layer_len + 4 * d] = _V4_PP_INIT
        return state

    # The `_Runner` protocol of reference.py uses these two names.
    init_state = new_state

    def step(self, token: int, state: np.ndarray) -> np.ndarray:
        """Feeds one token id, updating state (float64 (state_len,)) in place; returns float64 logits (V,)."""
        if not 0 <= token < self.n_vocab:
            raise ValueError(f"token id {token} outside the vocabulary of {self.n_vocab}")
        p, d, ll = self.p, self.n_embd, self.layer_len
        x = self.emb[token].copy()
        for i in range(self.n_layer):
            pre = f"blocks.{i}."
            layer = state[i * ll: (i + 1) * ll]
            att_prev, ffn_prev = layer[:d], layer[ll - d:]
            a = _layer_norm(x, p[pre + "ln1.weight"], p[pre + "ln1.bias"])
            if self.version == "4":
                x = x + self._time_mix_v4(pre + "att.", i, a, att_prev, layer[d: 4 * d])
            else:
                x = x + self._time_mix_v5_v6(pre + "att.", i, a, att_prev, layer[d: ll - d])
            att_prev[:] = a
            b = _layer_norm(x, p[pre + "ln2.weight"], p[pre + "ln2.bias"])
            x = x + self._channel_mix(pre + "ffn.", b, ffn_prev)
            ffn_prev[:] = b
        x = _layer_norm(x, p["ln_out.weight"], p["ln_out.bias"])
        return self.head @ x

    def forward_all(self, tokens: list[int] | np.ndarray, state: np.ndarray) -> np.ndarray:
        """Feeds tokens one at a time, advancing state in place; returns all logits, float64 (T, V)."""
        if state.dtype != np.float64 or state.shape != (self.state_len,):
            raise ValueError(f"state must be float64 ({self.state_len},), got {state.dtype} {state.shape}")
        rows = [self.step(int(t), state) for t in tokens]
        if not rows:
            raise ValueError("no tokens")
        return np.stack(rows)

    def forward(self, tokens: list[int] | np.ndarray, state: np.ndarray) -> np.ndarray:
        """As forward_all, returning only the last token's logits, float64 (V,)."""
        return self.forward_all(tokens, state)[-1]

    # ------------------------------------------------------------------------------------------ the blocks

    def _time_mix_v4(self, pre: str, i: int, a: np.ndarray, prev: np.ndarray, wkv: np.ndarray) -> np.ndarray:
        """§1.2 T1-T5; wkv is the (3·D) view [aa, bb, pp] of the layer's state, updated in place."""
        p, d = self.p, self.n_embd
        aa, bb, pp = wkv[:d], wkv[d: 2 * d], wkv[2 * d:]
        xk, xv, xr = (a * p[pre + m] + prev * (1.0 - p[pre + m])
                      for m in ("time_mix_k", "time_mix_v", "time_mix_r"))
        r = _sigmoid(p[pre + "receptance.weight"] @ xr)
        k = p[pre + "key.weight"] @ xk
        v = p[pre + "value.weight"] @ xv
        w_log, u = self._decay[i], self._bonus[i]
        # Output with the current token's bonus: numerator and denominator both scaled by exp(-q).
        ww = u + k
        q = np.maximum(pp, ww)
        e1, e2 = np.exp(pp - q), np.exp(ww - q)
        out = (e1 * aa + e2 * v) / (e1 * bb + e2)
        # State update: decay the past (pp + w̃ in log space), then add the current token.
        ww = pp + w_log
        q = np.maximum(ww, k)
        e1, e2 = np.exp(ww - q), np.exp(k - q)
        aa[:] = e1 * aa + e2 * v
        bb[:] = e1 * bb + e2
        pp[:] = q
        return p[pre + "output.weight"] @ (r * out)

    def _time_mix_v5_v6(self, pre: str, i: int, a: np.ndarray, prev: np.ndarray,
                        s_flat: np.ndarray) -> np.ndarray:
        """§2.2 (v5.x) and §3.2 (v6) for one layer; s_flat is the layer's S (H·N·N, [h][key][value])."""
        p, h, n = self.p, self.n_head, self.head_size
        gate = None
        if self.version == "6.0":
            delta = prev - a
            s = a + delta * p[pre + "time_maa_x"]
            w1, w2 = p[pre + "time_maa_w1"], p[pre + "time_maa_w2"]       # (D, 5·Rm), (5, Rm, D)
            m = np.tanh(s @ w1).reshape(5, -1)                              # (5, Rm)
            mw, mk, mv, mr, mg = (m[j] @ w2[j] for j in range(5))           # each (D)
            xw = a + delta * (p[pre + "time_maa_w"] + mw)
            xk = a + delta * (p[pre + "time_maa_k"] + mk)
            xv = a + delta * (p[pre + "time_maa_v"] + mv)
            xr = a + delta * (p[pre + "time_maa_r"] + mr)
            xg = a + delta * (p[pre + "time_maa_g"] + mg)
            e = self._decay[i] + np.tanh(xw @ p[pre + "time_decay_w1"]) @ p[pre + "time_decay_w2"]
            with np.errstate(over="ignore"):
                decay = np.exp(-np.exp(e))
        else:
            def mix(name: str) -> np.ndarray:
                mu = p[pre + name]
                return a * mu + prev * (1.0 - mu)
            xk, xv, xr = mix("time_mix_k"), mix("time_mix_v"), mix("time_mix_r")
            xg = mix("time_mix_g") if self.version != "5.0" else None
            decay = self._decay[i]
        r = (p[pre + "receptance.weight"] @ xr).reshape(h, n)
        k = (p[pre + "key.weight"] @ xk).reshape(h, n)
        v = (p[pre + "value.weight"] @ xv).reshape(h, n)
        if xg is not None:
            g = p[pre + "gate.weight"] @ xg
            gate = g * _sigmoid(g)
        u = self._bonus[i].reshape(h, n)
        big_s = s_flat.reshape(h, n, n)                                     # [head][key i][value j]
        # y_j = Σ_i r_i (u_i k_i v_j + S[i][j]): the state is read BEFORE this token's update.
        y = np.einsum("hi,hij->hj", r, big_s) + (r * u * k).sum(axis=1, keepdims=True) * v
        big_s[:] = decay.reshape(h, n)[:, :, None] * big_s + k[:, :, None] * v[:, None, :]
        y = _group_norm(y, p[pre + "ln_x.weight"], p[pre + "ln_x.bias"], self.gn_eps)
        if gate is not None:
            y = y * gate
        return p[pre + "output.weight"] @ y

    def _channel_mix(self, pre: str, b: np.ndarray, prev: np.ndarray) -> np.ndarray:
        """C1-C3 (v4/v5: x·μ + x_prev·(1-μ)) or the v6 form (x + (x_prev - x)·μ)."""
        p = self.p
        if self.version == "6.0":
            xk = b + (prev - b) * p[pre + "time_maa_k"]
            xr = b + (prev - b) * p[pre + "time_maa_r"]
        else:
            xk = b * p[pre + "time_mix_k"] + prev * (1.0 - p[pre + "time_mix_k"])
            xr = b * p[pre + "time_mix_r"] + prev * (1.0 - p[pre + "time_mix_r"])
        r = _sigmoid(p[pre + "receptance.weight"] @ xr)
        k = np.maximum(p[pre + "key.weight"] @ xk, 0.0) ** 2
        return r * (p[pre + "value.weight"] @ k)


def make_legacy(version: str, params: dict[str, Any], gn_eps: float | None = None) -> LegacyReference:
    """The hook `reference.ReferenceModel` calls for v4-v6: params are official-layout tensors.

    Returns an object with `state_len`, `n_vocab`, `init_state()` and `step(token, state) -> logits`.
    """
    return LegacyReference(_prepare(params), version, gn_eps)


def legacy_reference(sd: dict[str, Any], version: str, gn_eps: float | None = None) -> LegacyReference:
    """A float64 reference for one v4/v5.x/v6 official state dict (numpy arrays of any float dtype).

    gn_eps: the group-norm eps after the WKV (default 64e-5, official); 1e-5 reproduces rwkv.cpp's v5.
    """
    return LegacyReference(_prepare(sd), version, gn_eps)
