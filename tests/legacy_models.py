"""Random official-layout RWKV-4 / 5.0 / 5.1 / 5.2 / 6.0 state dicts for tests (keys and shapes as BlinkDL's).

Used to compare the native engine with `reference_legacy` on models of any size and to stress numerics the
small conformance files do not reach (e.g. v4 keys large enough to overflow exp in float32).
"""

from __future__ import annotations

import numpy as np


def random_legacy(version: str, n_vocab: int = 97, n_embd: int = 128, n_layer: int = 2, head_size: int = 32,
                  n_ffn: int | None = None, ranks: tuple[int, int] = (32, 64), seed: int = 0,
                  time_first: bool = False) -> dict[str, np.ndarray]:
    """A random float32 state dict of one version; logits of std about 1, decays spread over channels.

    ranks: (Rm, Rd), the v6 token-shift and decay LoRA ranks. time_first: for 5.1, use the exp-space
    `time_first (H)` bonus instead of `time_faaaa (H)` (both exist in real 5.1 checkpoints).
    """
    rng = np.random.default_rng(seed)
    D, V, L = n_embd, n_vocab, n_layer
    H = D // head_size
    F = n_ffn or (4 * D if version == "4" else int(3.5 * D) // 32 * 32)
    Rm, Rd = ranks

    def mat(rows: int, cols: int, scale: float = 1.0) -> np.ndarray:
        return (rng.standard_normal((rows, cols)) * scale / np.sqrt(cols)).astype(np.float32)

    def mix(lo: float = 0.0, hi: float = 1.0) -> np.ndarray:
        return rng.uniform(lo, hi, (1, 1, D)).astype(np.float32)

    def norm(prefix: str) -> None:
        sd[prefix + ".weight"] = (1 + 0.1 * rng.standard_normal(D)).astype(np.float32)
        sd[prefix + ".bias"] = (0.1 * rng.standard_normal(D)).astype(np.float32)

    sd: dict[str, np.ndarray] = {"emb.weight": rng.standard_normal((V, D)).astype(np.float32)}
    for i in range(L):
        b = f"blocks.{i}."
        if i == 0:
            norm(b + "ln0")
        norm(b + "ln1")
        norm(b + "ln2")
        a = b + "att."
        if version == "6.0":
            for c in "xwkvrg":
                sd[a + "time_maa_" + c] = mix()
            sd[a + "time_maa_w1"] = mat(D, 5 * Rm, 0.5 * np.sqrt(5 * Rm / D))
            sd[a + "time_maa_w2"] = (0.1 * rng.standard_normal((5, Rm, D))).astype(np.float32)
            sd[a + "time_decay"] = rng.uniform(-6.0, 1.0, (1, 1, D)).astype(np.float32)
            sd[a + "time_decay_w1"] = mat(D, Rd, 0.5 * np.sqrt(Rd / D))
            sd[a + "time_decay_w2"] = (0.1 * rng.standard_normal((Rd, D))).astype(np.float32)
            sd[a + "time_faaaa"] = (0.5 * rng.standard_normal((H, head_size))).astype(np.float32)
        else:
            for c in "kvr" + ("" if version in ("4", "5.0") else "g"):
                sd[a + "time_mix_" + c] = mix()
            if version == "4":
                sd[a + "time_decay"] = rng.uniform(-6.0, 2.0, D).astype(np.float32)
                sd[a + "time_first"] = rng.uniform(-1.0, 1.0, D).astype(np.float32)
            elif version == "5.2":
                sd[a + "time_decay"] = rng.uniform(-6.0, 1.0, (H, head_size)).astype(np.float32)
                sd[a + "time_faaaa"] = (0.5 * rng.standard_normal((H, head_size))).astype(np.float32)
            else:
                sd[a + "time_decay"] = rng.uniform(-6.0, 1.0, H).astype(np.float32)
                bonus = "time_first" if version == "5.0" or time_first else "time_faaaa"
                sd[a + bonus] = rng.uniform(-1.0, 1.0, H).astype(np.float32)
        for k in ("receptance", "key", "value", "output") + (() if version in ("4", "5.0") else ("gate",)):
            sd[f"{a}{k}.weight"] = mat(D, D)
        if version != "4":
            norm(a + "ln_x")
        f = b + "ffn."
        for c in "kr":
            sd[f + ("time_maa_" if version == "6.0" else "time_mix_") + c] = mix()
        sd[f + "key.weight"] = mat(F, D)
        sd[f + "receptance.weight"] = mat(D, D)
        sd[f + "value.weight"] = mat(D, F, 0.5)
    norm("ln_out")
    sd["head.weight"] = mat(V, D, 2.0)
    return sd
