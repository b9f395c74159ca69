"""The float64 v4/v5.x/v6 reference against the official package's outputs (conformance/official).

Each `.npz` holds logits after every one of 64 tokens fed one at a time, and the final state in the package's
list order, which is also the reference's layout (for v4 both use the same aa/bb/pp max-tracking, so even pp
compares directly). Tolerances are the README's: logits within 1e-4 × logit_scale at every position, each state
tensor within 1e-4 of its own largest magnitude.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from rwkvchat.errors import ModelFormatError
from rwkvchat.reference_legacy import LEGACY_VERSIONS, legacy_reference, make_legacy, normalise_version

OFFICIAL = Path(__file__).resolve().parents[1].parent / "shared" / "conformance" / "official"


def _official(version: str) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """(state dict as float32 numpy, npz fields) for one version; skips when torch or the data is missing."""
    if not OFFICIAL.is_dir():
        pytest.skip(f"conformance data not found at {OFFICIAL}")
    matches = sorted(OFFICIAL.glob(f"v{version}_*.pth"))
    if not matches:
        pytest.skip(f"no official v{version} checkpoint in {OFFICIAL}")
    torch = pytest.importorskip("torch", reason="torch reads the official .pth (pip install torch==2.13.0)")
    raw = torch.load(matches[0], map_location="cpu", weights_only=True)
    # bf16 -> float32 is exact, so the reference sees exactly the checkpoint's values.
    sd = {k: t.float().numpy() for k, t in raw.items()}
    with np.load(matches[0].with_suffix(".npz")) as z:
        ref = {k: z[k] for k in z.files}
    return sd, ref


def _state_tensors(ref: dict[str, np.ndarray]) -> list[np.ndarray]:
    """state_00, state_01, ... in order (the package's list order)."""
    names = sorted((k for k in ref if k.startswith("state_") and k[6:].isdigit()), key=lambda k: int(k[6:]))
    return [ref[k].reshape(-1) for k in names]


@pytest.mark.parametrize("version", LEGACY_VERSIONS)
def test_matches_official_logits_and_state(version: str) -> None:
    sd, ref = _official(version)
    model = legacy_reference(sd, version)
    state = model.new_state()
    logits = model.forward_all(ref["tokens"], state)
    scale = float(ref["logit_scale"])
    per_position = np.abs(logits - ref["logits_one"]).max(axis=1)
    print(f"v{version}: max|Δ| {per_position.max():.3g} = {per_position.max() / scale:.3g} × logit std")
    assert per_position.max() <= 1e-4 * scale, f"worst position {int(per_position.argmax())}"
    # The final state, tensor by tensor, in the package's order.
    expected = _state_tensors(ref)
    assert sum(t.size for t in expected) == model.state_len
    offset = 0
    for j, want in enumerate(expected):
        got = state[offset: offset + want.size]
        offset += want.size
        tol = 1e-4 * max(float(np.abs(want).max()), 1e-30)
        assert np.abs(got - want).max() <= tol, f"state tensor {j} ({ref['state_desc'][j]})"


@pytest.mark.parametrize("version", LEGACY_VERSIONS)
def test_state_is_carried(version: str) -> None:
    """Two calls with the state handed on equal one call; a fresh state for the second part differs clearly."""
    sd, ref = _official(version)
    model = legacy_reference(sd, version)
    tokens = [int(t) for t in ref["tokens"][:6]]
    s_all = model.new_state()
    whole = model.forward(tokens, s_all)
    s_split = model.new_state()
    model.forward(tokens[:4], s_split)
    split = model.forward(tokens[4:], s_split)
    np.testing.assert_array_equal(split, whole)
    np.testing.assert_array_equal(s_split, s_all)
    fresh = model.forward(tokens[4:], model.new_state())
    assert np.abs(fresh - whole).max() > 0.05 * float(ref["logit_scale"])


def test_v4_empty_state_has_pp_floor() -> None:
    sd, _ = _official("4")
    model = legacy_reference(sd, "4")
    state = model.new_state().reshape(model.n_layer, 5, model.n_embd)
    assert np.all(state[:, 3] == -1e30)
    assert np.all(state[:, [0, 1, 2, 4]] == 0.0)


def test_group_norm_eps_override_is_used() -> None:
    """The rwkv.cpp-compatibility eps must actually change v5's group norm (and nothing else)."""
    sd, ref = _official("5.2")
    tokens = [int(t) for t in ref["tokens"][:3]]
    a = legacy_reference(sd, "5.2")
    b = legacy_reference(sd, "5.2", gn_eps=1e-5)
    la, lb = a.forward(tokens, a.new_state()), b.forward(tokens, b.new_state())
    assert np.abs(la - lb).max() > 1e-6


def test_make_legacy_hook_accepts_squeezed_params() -> None:
    """reference.ReferenceModel passes float64 params with (1,1,D) already squeezed to (D)."""
    sd, ref = _official("6.0")
    squeezed = {k: (v.reshape(-1) if v.ndim == 3 and v.shape[:2] == (1, 1) else v).astype(np.float64)
                for k, v in sd.items()}
    runner = make_legacy("6.0", squeezed)
    state = runner.init_state()
    assert state.shape == (runner.state_len,)
    logits = runner.step(int(ref["tokens"][0]), state)
    assert np.abs(logits - ref["logits_one"][0]).max() <= 1e-4 * float(ref["logit_scale"])


def test_version_names() -> None:
    assert normalise_version("4.0") == "4"
    assert normalise_version("v6") == "6.0"
    assert normalise_version("5.1") == "5.1"
    with pytest.raises(ModelFormatError):
        normalise_version("7.0")


def test_missing_tensor_is_named() -> None:
    sd, _ = _official("5.0")
    del sd["blocks.1.att.time_decay"]
    with pytest.raises(ModelFormatError, match="blocks.1.att.time_decay"):
        legacy_reference(sd, "5.0")


@pytest.mark.parametrize("version", LEGACY_VERSIONS)
def test_reference_model_dispatches_here(version: str) -> None:
    """reference.ReferenceModel detects the version from the keys and runs this module's forward."""
    from rwkvchat.reference import ReferenceModel

    sd, ref = _official(version)
    model = ReferenceModel(sd)
    assert model.version == version
    logits = model.forward_all(ref["tokens"][:4], model.new_state())
    assert np.abs(logits - ref["logits_one"][:4]).max() <= 1e-4 * float(ref["logit_scale"])


@pytest.mark.parametrize("version", LEGACY_VERSIONS)
def test_random_models_run_and_are_detected(version: str) -> None:
    """The test-model generator gives every version in official layout; the reference runs it sensibly."""
    from legacy_models import random_legacy

    from rwkvchat.reference import detect_version

    sd = random_legacy(version, seed=3)
    assert detect_version(sd) == version
    model = legacy_reference(sd, version)
    state = model.new_state()
    logits = model.forward_all([1, 5, 9, 2, 5], state)
    assert np.isfinite(logits).all() and np.isfinite(state).all()
    assert 0.3 < logits.std() < 10
    fresh = model.forward([5], model.new_state())
    assert np.abs(fresh - logits[4]).max() > 0.05 * logits.std()


def test_v5_1_time_first_bonus_is_exponentiated() -> None:
    """v5.1 may carry time_first (exp-space) or time_faaaa (direct): the same u gives the same logits."""
    from legacy_models import random_legacy

    sd = random_legacy("5.1", seed=4, time_first=True)
    direct = dict(sd)
    for i in range(2):
        direct[f"blocks.{i}.att.time_faaaa"] = np.exp(direct.pop(f"blocks.{i}.att.time_first").astype(np.float64))
    a, b = legacy_reference(sd, "5.1"), legacy_reference(direct, "5.1")
    np.testing.assert_allclose(a.forward([3, 1, 4], a.new_state()), b.forward([3, 1, 4], b.new_state()),
                               rtol=0, atol=1e-9)


def test_v4_max_trick_survives_huge_keys() -> None:
    """k beyond 700 overflows exp even in float64; the max-trick keeps aa/bb/pp finite and the output a mean.

    With every key weight scaled up, wkv must still be a convex mix of the v's: compare against a direct
    float64 evaluation in log space (logsumexp) of the same weighted average.
    """
    from legacy_models import random_legacy

    sd = random_legacy("4", n_layer=1, seed=5)
    sd["blocks.0.att.key.weight"] *= 400.0
    model = legacy_reference(sd, "4")
    state = model.new_state()
    tokens = [7, 3, 3, 11, 2, 40]
    logits = model.forward_all(tokens, state)
    assert np.isfinite(logits).all() and np.isfinite(state).all()
    # Recompute the layer-0 WKV from the definition with logsumexp and compare with the max-trick state.
    p = model.p
    d = model.n_embd
    w = -np.exp(p["blocks.0.att.time_decay"])
    prev = np.zeros(d)
    ks, vs = [], []
    for t in tokens:
        a = model.emb[t]
        x = (a - a.mean()) / np.sqrt(a.var() + 1e-5) * p["blocks.0.ln1.weight"] + p["blocks.0.ln1.bias"]
        mk, mv = p["blocks.0.att.time_mix_k"], p["blocks.0.att.time_mix_v"]
        ks.append(p["blocks.0.att.key.weight"] @ (x * mk + prev * (1 - mk)))
        vs.append(p["blocks.0.att.value.weight"] @ (x * mv + prev * (1 - mv)))
        prev = x
    assert np.abs(np.array(ks)).max() > 700      # exp(k) would overflow float64
    n = len(tokens)
    # After the last token: aa·e^pp = Σ_s e^{(n-1-s)·w + k_s} v_s and bb·e^pp = Σ_s e^{(n-1-s)·w + k_s}.
    expo = np.array([(n - 1 - s) * w + ks[s] for s in range(n)])          # (T, D)
    top = expo.max(axis=0)
    weights = np.exp(expo - top)
    mean_v = (weights * np.array(vs)).sum(axis=0) / weights.sum(axis=0)
    aa, bb = state[d: 2 * d], state[2 * d: 3 * d]
    np.testing.assert_allclose(aa / bb, mean_v, rtol=1e-9, atol=1e-9)
