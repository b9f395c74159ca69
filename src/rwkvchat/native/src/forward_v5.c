/*
 * forward_v5.c: RWKV-5.0, 5.1 and 5.2 ("Eagle"): tensor binding ("rwkv5" GGUF, docs/gguf-rwkv4-rwkv5.md) and the
 * time mix.
 *
 * Follows rwkv-architectures.md §2.2 T1-T5: token shift with the raw mu; r, k, v (and for 5.1+ g = silu(Wg xg));
 * the WKV per head with the constant decay d = exp(-exp(w)) and the bonus u (wkv_legacy.c); group norm with
 * {arch}.wkv.group_norm_epsilon (default 64e-5); the gate; out = Wo y. Sub-versions, as the official package names
 * them: 5.0 has no gate; 5.1 has a gate and per-head decay; 5.2 a gate and per-channel decay.
 *
 * State per layer (floats): att_x_prev [D], S [H][N][N] indexed [head][key][value], ffn_x_prev [D].
 */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "forward_legacy.h"
#include "status.h"
#include "wkv_legacy.h"

/* ---- Loading ---- */

/* d = exp(-exp(w)), computed in fp32 at load (rwkv-architectures.md §7.2). */
static float decay_factor(float w) {
    return expf(-expf(w));
}

static rwkvc_status v5_load(rwkvc_model *m) {
    const uint64_t D = m->info.n_embd;
    const uint64_t vd[1] = {D};
    rwkvc_status st;
    if ((st = rwkvc_legacy_load_rescale(m, "rwkv5"))) {
        return st;
    }
    /* Group-norm eps: metadata (1e-5 reproduces rwkv.cpp's v5), else the official 64e-5. */
    double eps = 64e-5;
    const rwkvc_gguf_kv *kv = rwkvc_gguf_find_kv(m->gguf, "rwkv5.wkv.group_norm_epsilon");
    if (kv && (kv->type == RWKVC_META_ARRAY || rwkvc_gguf_kv_float(kv, 0, &eps) != RWKVC_OK ||
               !(eps > 0.0 && eps < 1.0))) {
        return rwkvc_fail(RWKVC_ERR_FORMAT,
                          "metadata key rwkv5.wkv.group_norm_epsilon: expected a small positive float");
    }
    m->gn_eps = (float)eps;

    /* The sub-version from block 0's tensors: a gate means 5.1+, a per-channel decay 5.2. */
    int has_gate = rwkvc_gguf_find_tensor(m->gguf, "blk.0.time_mix_gate.weight") != NULL;
    int per_head = 0;
    for (uint32_t l = 0; l < m->info.n_layer; l++) {
        rwkvc_layer *ly = &m->layers[l];
        char n[96];
        int head_decay = 0;
#define NAME(suffix) (snprintf(n, sizeof(n), "blk.%u." suffix, l), n)
        if ((st = rwkvc_load_vector(m, NAME("time_mix_lerp_k.weight"), vd, 1, NULL, 0, &ly->mu_k)) ||
            (st = rwkvc_load_vector(m, NAME("time_mix_lerp_v.weight"), vd, 1, NULL, 0, &ly->mu_v)) ||
            (st = rwkvc_load_vector(m, NAME("time_mix_lerp_r.weight"), vd, 1, NULL, 0, &ly->mu_r)) ||
            (has_gate && (st = rwkvc_load_vector(m, NAME("time_mix_lerp_g.weight"), vd, 1, NULL, 0, &ly->mu_g))) ||
            (st = rwkvc_legacy_load_channels(m, NAME("time_mix_decay.weight"), decay_factor, &ly->decay,
                                             &head_decay)) ||
            (st = rwkvc_legacy_load_channels(m, NAME("time_mix_first.weight"), NULL, &ly->first, NULL)) ||
            (st = rwkvc_load_vector(m, NAME("time_mix_ln.weight"), vd, 1, NULL, 0, &ly->lnx_w)) ||
            (st = rwkvc_load_vector(m, NAME("time_mix_ln.bias"), vd, 1, NULL, 0, &ly->lnx_b)) ||
            (st = rwkvc_legacy_load_att(m, l, has_gate)) || (st = rwkvc_legacy_load_ffn(m, l))) {
            return st;
        }
        if (!has_gate && rwkvc_gguf_find_tensor(m->gguf, NAME("time_mix_gate.weight"))) {
            return rwkvc_fail(RWKVC_ERR_FORMAT, "tensor %s exists but block 0 has no gate", n);
        }
#undef NAME
        if (l == 0) {
            per_head = head_decay;
        } else if (head_decay != per_head) {
            return rwkvc_fail(RWKVC_ERR_FORMAT, "block %u's time_mix_decay is per %s but block 0's per %s", l,
                              head_decay ? "head" : "channel", per_head ? "head" : "channel");
        }
    }
    /* With one channel per head (N = 1) per-head and per-channel decays are the same; call it 5.2 then. */
    const char *version = !has_gate ? "5.0" : (per_head ? "5.1" : "5.2");
    if (!has_gate && !per_head && m->info.n_head != m->info.n_embd) {
        return rwkvc_fail(RWKVC_ERR_FORMAT, "rwkv5 file without time_mix_gate (5.0) has a per-channel time_mix_decay");
    }
    if ((st = rwkvc_legacy_check_version(m, "rwkv5", version))) {
        return st;
    }
    m->info.arch_version = !has_gate ? 50 : (per_head ? 51 : 52);
    m->info.state_len = (size_t)m->info.n_layer * (2 + m->info.head_size) * m->info.n_embd;
    return RWKVC_OK;
}

static void v5_state_init(const rwkvc_model *m, float *state) {
    memset(state, 0, m->info.state_len * sizeof(float));
}

/* ---- Forward ---- */

typedef struct {
    const rwkvc_model *m;
    const rwkvc_layer *ly;
    float *S;                 /* The layer's [H][N][N] state. */
    const rwkvc_legacy_bufs *b;
    size_t T;
    size_t d_stride;          /* 0: constant decay ly->decay (v5); D: per-token decay in b->dec (v6). */
} wkv5_job;

static void wkv_heads(void *arg, size_t h0, size_t h1) {
    const wkv5_job *j = arg;
    const size_t D = j->m->info.n_embd, N = j->m->info.head_size;
    const float *d = j->d_stride ? j->b->dec : j->ly->decay;
    for (size_t h = h0; h < h1; h++) {
        const size_t o = h * N;
        rwkvc_wkv5(j->S + h * N * N, N, j->T, D, j->b->r + o, j->b->k + o, j->b->v + o, d + o, j->d_stride,
                   j->ly->first + o, j->b->y + o);
    }
}

/* Channels per batch of the gate's sigmoid. */
#define SILU_BATCH 256

void rwkvc_v5_wkv_out(rwkvc_ctx *c, const rwkvc_layer *ly, size_t T, float *st, rwkvc_legacy_bufs *b,
                      size_t d_stride, int gated) {
    const rwkvc_model *m = c->model;
    const size_t D = m->info.n_embd, N = m->info.head_size, H = m->info.n_head;
    const rwkvc_expf_fn exp_fn = rwkvc_expf_get(m->isa);
    wkv5_job j = {m, ly, st + D, b, T, d_stride};
    rwkvc_parallel(c, H, T * H * N * N * 3, wkv_heads, &j);
    for (size_t t = 0; t < T; t++) {
        float *y = b->y + t * D;
        rwkvc_group_norm(y, ly->lnx_w, ly->lnx_b, H, N, m->gn_eps);
        if (gated) {
            /* y *= silu(g) = g * sigmoid(g), the sigmoid in batches of SILU_BATCH (e^x: vexp.h). */
            const float *g = b->g + t * D;
            for (size_t i0 = 0; i0 < D; i0 += SILU_BATCH) {
                const size_t n = D - i0 < SILU_BATCH ? D - i0 : SILU_BATCH;
                float s[SILU_BATCH];
                rwkvc_sigmoid_batch(exp_fn, g + i0, s, n);
                for (size_t i = 0; i < n; i++) {
                    y[i0 + i] *= g[i0 + i] * s[i];
                }
            }
        }
    }
    rwkvc_matmul(c, &ly->att_o, b->y, D, T, b->tmp, D);
    rwkvc_add(b->x, b->tmp, T * D);
}

static void v5_time_mix(rwkvc_ctx *c, const rwkvc_layer *ly, size_t T, float *st, rwkvc_legacy_bufs *b) {
    const size_t D = c->model->info.n_embd;
    const int gated = ly->mu_g != NULL;
    /* T1: token shift x*mu + prev*(1-mu). */
    rwkvc_legacy_shift_mu(b->a, st, T, D, ly->mu_k, b->xk);
    rwkvc_legacy_shift_mu(b->a, st, T, D, ly->mu_v, b->xv);
    rwkvc_legacy_shift_mu(b->a, st, T, D, ly->mu_r, b->xr);
    if (gated) {
        rwkvc_legacy_shift_mu(b->a, st, T, D, ly->mu_g, b->xg);
    }
    /* T2: projections, one pool job; the gate's silu is applied with the group norm. */
    const rwkvc_mm_op ops[4] = {
        {&ly->att_r, b->xr, D, b->r, D},
        {&ly->att_k, b->xk, D, b->k, D},
        {&ly->att_v, b->xv, D, b->v, D},
        {&ly->gate, b->xg, D, b->g, D},
    };
    rwkvc_matmul_multi(c, ops, gated ? 4 : 3, T);
    /* T3-T5. */
    rwkvc_v5_wkv_out(c, ly, T, st, b, 0, gated);
}

static void v5_eval_chunk(rwkvc_ctx *c, const uint32_t *tokens, size_t T, float *state, float *logits,
                          int all_logits) {
    const rwkvc_model *m = c->model;
    rwkvc_legacy_eval(c, tokens, T, state, logits, all_logits, (2 + (size_t)m->info.head_size) * m->info.n_embd,
                      v5_time_mix, 0);
}

const rwkvc_arch_ops rwkvc_ops_v5 = {"rwkv5", v5_load, rwkvc_legacy_scratch_floats, v5_state_init, v5_eval_chunk};
