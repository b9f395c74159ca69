"""A compact RWKV-7 ("Goose", x070) in PyTorch, for training rwkvchat's demo model only.

It follows docs rwkv-architectures.md §4 step by step (the same formulas as the native engine and
BlinkDL's RWKV-LM x070 training code), and its parameter names and shapes are exactly the official
state-dict layout (`emb.weight`, `blocks.0.ln0.weight`, `blocks.i.att.x_r`, ...), so a trained
`state_dict()` converts with `rwkvchat.convert.write_gguf` like any released checkpoint.

Shapes: B batch, T tokens, D = n_embd, H heads of N channels (D = H*N), V vocab, F ffn size.
The WKV recurrence always runs in float32, also under bf16 autocast.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

# d = exp(-0.606531 * sigmoid(e)), d in (0.545, 1): e^{-1/2} written as the literal the pip package,
# the docs and the native engine use, so the golden logits match the engine to the last bits.
DECAY_SCALE = 0.606531


@dataclass
class Config:
    vocab: int = 3072
    d: int = 256
    layers: int = 4
    head: int = 64
    ffn: int = 896
    chunk: int = 16  # WKV chunk length for training; 0 = plain per-token loop.
    dropout: float = 0.0  # on the residual branches, training only (the data is small).

    def lora(self) -> tuple[int, int, int, int]:
        """LoRA ranks (decay, iclr, value residual, gate): RWKV-LM x070 formulas, multiples of 16, min 16."""
        def r(f: float, p: float) -> int:
            return max(16, round(f * self.d ** p / 16) * 16)
        return r(1.8, 0.5), r(1.8, 0.5), r(1.3, 0.5), r(0.6, 0.8)


def wkv_loop(r, d, k, v, a, b, s0=None):
    """Reference WKV-7 (§4.2 T9), one token at a time. Inputs (B,T,H,N) float32; d is the decay in (0,1).

    State S (B,H,N,N) indexed [value j][key i]: S <- S diag(d) + (S a) b^T + v k^T; y = S r.
    Returns y (B,T,H,N) and the final state.
    """
    B, T, H, N = r.shape
    S = torch.zeros(B, H, N, N, dtype=r.dtype, device=r.device) if s0 is None else s0
    ys = []
    for t in range(T):
        sa = torch.einsum("bhji,bhi->bhj", S, a[:, t])
        S = (S * d[:, t, :, None, :] + sa[..., None] * b[:, t, :, None, :]
             + v[:, t, :, :, None] * k[:, t, :, None, :])
        ys.append(torch.einsum("bhji,bhi->bhj", S, r[:, t]))
    return torch.stack(ys, dim=1), S


def wkv_chunked(r, d, k, v, a, b, chunk: int, s0=None):
    """The same function in chunks of `chunk` tokens (§4.5, the WY / generalised-delta form).

    Per chunk and head, with lam = log d, L = inclusive cumsum of lam, Le = L - lam (exclusive):
      Q = (I - P)^-1 (X + G V),  X_t = S0 (e^{Le_t} a_t),
      P = strict-lower(a e^{Le} . (b e^{-L})^T),  G = strict-lower(a e^{Le} . (k e^{-L})^T),
      Y = (r e^{L}) S0^T + lower(r e^{L} . (b e^{-L})^T) Q + lower(r e^{L} . (k e^{-L})^T) V,
      S_end = S0 diag(e^{L_T}) + Q^T (b e^{L_T - L}) + V^T (k e^{L_T - L}).
    The factor e^{-L} stays below e^{0.61*chunk} (about 1.6e4 for 16), safe in float32; every term is a
    product, not a difference, so no cancellation is introduced.
    """
    B, T, H, N = r.shape
    assert T % chunk == 0, "sequence length must be a multiple of the chunk"
    # (B,H,nc,C,N)
    def split(x):
        return x.permute(0, 2, 1, 3).reshape(B, H, T // chunk, chunk, N)
    r_, k_, v_, a_, b_ = map(split, (r, k, v, a, b))
    lam = split(torch.log(d))
    L = torch.cumsum(lam, dim=3)
    Le = L - lam
    eL, eLe, enL = torch.exp(L), torch.exp(Le), torch.exp(-L)
    eLT = torch.exp(L[:, :, :, -1:, :] - L)  # e^{L_T - L_s}
    a_dec, r_dec = a_ * eLe, r_ * eL
    b_inv, k_inv = b_ * enL, k_ * enL
    strict = torch.tril(torch.ones(chunk, chunk, dtype=torch.bool, device=r.device), -1)
    incl = torch.tril(torch.ones(chunk, chunk, dtype=torch.bool, device=r.device), 0)
    P = (a_dec @ b_inv.transpose(-1, -2)).masked_fill(~strict, 0.0)
    G = (a_dec @ k_inv.transpose(-1, -2)).masked_fill(~strict, 0.0)
    Ry_b = (r_dec @ b_inv.transpose(-1, -2)).masked_fill(~incl, 0.0)
    Ry_k = (r_dec @ k_inv.transpose(-1, -2)).masked_fill(~incl, 0.0)
    eye = torch.eye(chunk, dtype=r.dtype, device=r.device)
    IminusP = eye - P
    GV = G @ v_
    b_end, k_end = b_ * eLT, k_ * eLT
    eLlast = eL[:, :, :, -1, :]  # (B,H,nc,N)

    S = torch.zeros(B, H, N, N, dtype=r.dtype, device=r.device) if s0 is None else s0
    ys = []
    for c in range(T // chunk):
        X = a_dec[:, :, c] @ S.transpose(-1, -2)                       # (B,H,C,Nv)
        Q = torch.linalg.solve_triangular(IminusP[:, :, c], X + GV[:, :, c], upper=False, unitriangular=True)
        y = r_dec[:, :, c] @ S.transpose(-1, -2) + Ry_b[:, :, c] @ Q + Ry_k[:, :, c] @ v_[:, :, c]
        ys.append(y)
        S = (S * eLlast[:, :, c, None, :] + Q.transpose(-1, -2) @ b_end[:, :, c]
             + v_[:, :, c].transpose(-1, -2) @ k_end[:, :, c])
    y = torch.stack(ys, dim=2).reshape(B, H, T, N).permute(0, 2, 1, 3)
    return y, S


class TimeMix(nn.Module):
    def __init__(self, cfg: Config, layer: int) -> None:
        super().__init__()
        D, N = cfg.d, cfg.head
        H = D // N
        self.layer, self.H, self.N, self.chunk = layer, H, N, cfg.chunk
        Rw, Ra, Rv, Rg = cfg.lora()
        # Initialisation after RWKV-LM x070: token-shift mixes spread over channels and layers, decays
        # spread from fast to slow, LoRA "up" halves zero so every path starts as its bias.
        r01 = layer / max(cfg.layers - 1, 1)
        r10 = 1.0 - layer / cfg.layers
        ddd = (torch.arange(D) / D).view(1, 1, D)
        self.x_r = nn.Parameter(1.0 - ddd ** (0.2 * r10))
        self.x_w = nn.Parameter(1.0 - ddd ** (0.9 * r10))
        self.x_k = nn.Parameter(1.0 - ddd ** (0.7 * r10))
        self.x_v = nn.Parameter(1.0 - ddd ** (0.7 * r10))
        self.x_a = nn.Parameter(1.0 - ddd ** (0.9 * r10))
        self.x_g = nn.Parameter(1.0 - ddd ** (0.2 * r10))
        n = torch.arange(D, dtype=torch.float32)
        decay_speed = -7.0 + 5.0 * (n / (D - 1)) ** (0.85 + 1.0 * r01 ** 0.5)
        self.w0 = nn.Parameter((decay_speed + 0.5).view(1, 1, D))
        self.w1 = nn.Parameter(torch.zeros(D, Rw))
        self.w2 = nn.Parameter(_ortho(Rw, D, 0.1))
        self.a0 = nn.Parameter(torch.zeros(1, 1, D))
        self.a1 = nn.Parameter(torch.zeros(D, Ra))
        self.a2 = nn.Parameter(_ortho(Ra, D, 0.1))
        self.v0 = nn.Parameter(torch.ones(1, 1, D))
        self.v1 = nn.Parameter(torch.zeros(D, Rv))
        self.v2 = nn.Parameter(_ortho(Rv, D, 0.1))
        self.g1 = nn.Parameter(torch.zeros(D, Rg))
        self.g2 = nn.Parameter(_ortho(Rg, D, 0.1))
        self.k_k = nn.Parameter(torch.full((1, 1, D), 0.85))
        self.k_a = nn.Parameter(torch.ones(1, 1, D))
        self.r_k = nn.Parameter(torch.zeros(H, N))
        self.receptance = nn.Linear(D, D, bias=False)
        self.key = nn.Linear(D, D, bias=False)
        self.value = nn.Linear(D, D, bias=False)
        self.output = nn.Linear(D, D, bias=False)
        self.ln_x = nn.GroupNorm(H, D, eps=64e-5)
        s = D ** -0.5
        nn.init.uniform_(self.receptance.weight, -0.5 * s, 0.5 * s)
        nn.init.uniform_(self.key.weight, -0.05 * s, 0.05 * s)
        nn.init.uniform_(self.value.weight, -0.5 * s, 0.5 * s)
        nn.init.zeros_(self.output.weight)

    def forward(self, x: torch.Tensor, v_first: torch.Tensor | None):
        """x: (B,T,D) = ln1 output. Returns (B,T,D) and v_first (layer 0's values, B,T,D)."""
        B, T, D = x.shape
        H, N = self.H, self.N
        xx = F.pad(x, (0, 0, 1, -1)) - x  # previous token's input minus this one (zero before t=0)
        xr, xw, xk = x + xx * self.x_r, x + xx * self.x_w, x + xx * self.x_k
        xv, xa, xg = x + xx * self.x_v, x + xx * self.x_a, x + xx * self.x_g
        r = self.receptance(xr)
        k = self.key(xk)
        v = self.value(xv)
        e = self.w0 + torch.tanh(xw @ self.w1) @ self.w2
        if self.layer == 0:
            v_first = v
        else:
            v = v + (v_first - v) * torch.sigmoid(self.v0 + (xv @ self.v1) @ self.v2)
        alpha = torch.sigmoid(self.a0 + (xa @ self.a1) @ self.a2)
        g = torch.sigmoid(xg @ self.g1) @ self.g2
        # The recurrence runs in float32 (float64 when the whole model is float64, for checks).
        wdt = torch.float64 if x.dtype == torch.float64 else torch.float32
        kk = F.normalize((k * self.k_k).view(B, T, H, N).to(wdt), dim=-1, p=2.0, eps=1e-12).view(B, T, D)
        k = k * (1 + (alpha - 1) * self.k_a)
        with torch.autocast(device_type=x.device.type, enabled=False):
            d = torch.exp(-DECAY_SCALE * torch.sigmoid(e.to(wdt)))
            args = [t.to(wdt).view(B, T, H, N) for t in (r, d, k, v, -kk, kk * alpha.to(wdt))]
            if self.chunk and T % self.chunk == 0 and T > 1:
                y, _ = wkv_chunked(*args, chunk=self.chunk)
            else:
                y, _ = wkv_loop(*args)
            y = self.ln_x(y.reshape(B * T, D)).view(B, T, D)
            rf, kf, vf = (t.to(wdt).view(B, T, H, N) for t in (r, k, v))
            y = y + ((rf * kf * self.r_k.to(wdt)).sum(-1, keepdim=True) * vf).view(B, T, D)
        return self.output(y.to(g.dtype) * g), v_first


class ChannelMix(nn.Module):
    def __init__(self, cfg: Config, layer: int) -> None:
        super().__init__()
        D = cfg.d
        r10 = 1.0 - layer / cfg.layers
        ddd = (torch.arange(D) / D).view(1, 1, D)
        self.x_k = nn.Parameter(1.0 - ddd ** (r10 ** 4))
        self.key = nn.Linear(D, cfg.ffn, bias=False)
        self.value = nn.Linear(cfg.ffn, D, bias=False)
        nn.init.uniform_(self.key.weight, -0.5 * D ** -0.5, 0.5 * D ** -0.5)
        nn.init.zeros_(self.value.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xx = F.pad(x, (0, 0, 1, -1)) - x
        k = torch.relu(self.key(x + xx * self.x_k)) ** 2
        return self.value(k)


class Block(nn.Module):
    def __init__(self, cfg: Config, layer: int) -> None:
        super().__init__()
        if layer == 0:
            self.ln0 = nn.LayerNorm(cfg.d)
        self.ln1 = nn.LayerNorm(cfg.d)
        self.ln2 = nn.LayerNorm(cfg.d)
        self.att = TimeMix(cfg, layer)
        self.ffn = ChannelMix(cfg, layer)


class RWKV7(nn.Module):
    def __init__(self, cfg: Config) -> None:
        super().__init__()
        self.cfg = cfg
        assert cfg.d % cfg.head == 0
        self.emb = nn.Embedding(cfg.vocab, cfg.d)
        self.blocks = nn.ModuleList(Block(cfg, i) for i in range(cfg.layers))
        self.ln_out = nn.LayerNorm(cfg.d)
        self.head = nn.Linear(cfg.d, cfg.vocab, bias=False)
        nn.init.uniform_(self.emb.weight, -1e-4, 1e-4)
        with torch.no_grad():
            self.head.weight.copy_(_ortho(cfg.vocab, cfg.d, 0.5 * math.sqrt(cfg.vocab / cfg.d)))

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        """idx (B,T) int64 -> logits (B,T,V), from the zero state."""
        x = self.blocks[0].ln0(self.emb(idx))
        v_first = None
        p = self.cfg.dropout if self.training else 0.0
        for blk in self.blocks:
            a, v_first = blk.att(blk.ln1(x), v_first)
            x = x + F.dropout(a, p)
            f = blk.ffn(blk.ln2(x))
            x = x + F.dropout(f, p)
        return self.head(self.ln_out(x))


def _ortho(rows: int, cols: int, gain: float) -> torch.Tensor:
    t = torch.empty(rows, cols)
    nn.init.orthogonal_(t, gain=gain)
    return t
