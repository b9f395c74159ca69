/*
 * forward_v6.c: RWKV-6 ("Finch", x060): tensor binding (llama.cpp's "rwkv6" GGUF, file-formats.md §2.4/§2.5) and
 * the time mix.
 *
 * Follows rwkv-architectures.md §3.2 T1-T8: the data-dependent token shift (LoRA time_mix_w1/w2 over 5 slices in
 * the order w, k, v, r, g), r, k, v, g = silu(Wg xg), the per-token decay d = exp(-exp(time_decay + decay LoRA)),
 * then the v5 WKV, group norm (eps 64e-5), gate and output (forward_v5.c). llama.cpp files with
 * rwkv6.rescale_every_n_layers = R > 0 have pre-divided output/value matrices; the driver halves x after every
 * R-th block (forward_legacy.c).
 *
 * State per layer (floats): att_x_prev [D], S [H][N][N] indexed [head][key][value], ffn_x_prev [D].
 */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "forward_legacy.h"
#include "status.h"

/* ---- Loading ---- */

/* The five token-shift coefficients [5][D] (w, k, v, r, g): fused [D,1,1,5] as llama.cpp writes them, or the
   separate lerp_w..lerp_g of older files. */
static rwkvc_status load_maa(rwkvc_model *m, uint32_t l, const float **out) {
    const uint64_t D = m->info.n_embd;
    const uint64_t vd[1] = {D};
    const uint64_t v5d[2] = {D, 5};
    char n[96];
    snprintf(n, sizeof(n), "blk.%u.time_mix_lerp_fused.weight", l);
    if (rwkvc_gguf_find_tensor(m->gguf, n)) {
        return rwkvc_load_vector(m, n, v5d, 2, NULL, 0, out);
    }
    float *all = rwkvc_model_alloc_floats(m, 5 * D);
    if (!all) {
        return rwkvc_fail(RWKVC_ERR_NOMEM, "out of memory loading block %u", l);
    }
    static const char order[5] = {'w', 'k', 'v', 'r', 'g'};
    for (int j = 0; j < 5; j++) {
        const float *v;
        snprintf(n, sizeof(n), "blk.%u.time_mix_lerp_%c.weight", l, order[j]);
        rwkvc_status st = rwkvc_load_vector(m, n, vd, 1, NULL, 0, &v);
        if (st != RWKVC_OK) {
            return st;
        }
        memcpy(all + j * D, v, D * sizeof(float));
    }
    *out = all;
    return RWKVC_OK;
}

/*
 * time_mix_w2 [Rm, D, 5]: five (D, Rm) matrices. They are small (5 D Rm values) and read as an fp32 copy, each
 * slice bound as an F32 matrix so the usual threaded products apply.
 */
static rwkvc_status load_maa_w2(rwkvc_model *m, uint32_t l, size_t Rm, rwkvc_layer *ly) {
    const size_t D = m->info.n_embd;
    const uint64_t ne[3] = {Rm, D, 5};
    const float *w2;
    char n[96];
    snprintf(n, sizeof(n), "blk.%u.time_mix_w2.weight", l);
    rwkvc_status st = rwkvc_load_vector(m, n, ne, 3, NULL, 0, &w2);
    if (st != RWKVC_OK) {
        return st;
    }
    const rwkvc_matmul_kernels *k = rwkvc_matmul_get(RWKVC_TYPE_F32, m->isa);
    if (!k) {
        return rwkvc_fail(RWKVC_ERR_FORMAT, "tensor %s: no f32 kernels", n);
    }
    for (int j = 0; j < 5; j++) {
        rwkvc_weight *w = &ly->maa_w2[j];
        w->data = w2 + (size_t)j * D * Rm;
        w->type = RWKVC_TYPE_F32;
        w->rows = D;
        w->cols = Rm;
        w->row_bytes = Rm * sizeof(float);
        w->kern = k;
    }
    return RWKVC_OK;
}

static rwkvc_status load_layer(rwkvc_model *m, uint32_t l) {
    const uint64_t D = m->info.n_embd;
    const uint64_t vd[1] = {D};
    rwkvc_layer *ly = &m->layers[l];
    char n[96];
    rwkvc_status st;
#define NAME(suffix) (snprintf(n, sizeof(n), "blk.%u." suffix, l), n)
    if ((st = rwkvc_load_vector(m, NAME("time_mix_lerp_x.weight"), vd, 1, NULL, 0, &ly->maa_x)) ||
        (st = load_maa(m, l, &ly->maa)) ||
        (st = rwkvc_load_matrix_rows(m, NAME("time_mix_w1.weight"), D, &ly->maa_w1))) {
        return st;
    }
    if (ly->maa_w1.rows == 0 || ly->maa_w1.rows % 5 != 0) {
        return rwkvc_fail(RWKVC_ERR_FORMAT, "tensor %s: %zu rows, expected 5 x the token-shift LoRA rank", n,
                          ly->maa_w1.rows);
    }
    size_t Rm = ly->maa_w1.rows / 5;
    if ((st = load_maa_w2(m, l, Rm, ly)) ||
        (st = rwkvc_legacy_load_channels(m, NAME("time_mix_decay.weight"), NULL, &ly->decay, NULL)) ||
        (st = rwkvc_load_matrix_rows(m, NAME("time_mix_decay_w1.weight"), D, &ly->decay_w1))) {
        return st;
    }
    size_t Rd = ly->decay_w1.rows;
    if ((st = rwkvc_load_matrix(m, NAME("time_mix_decay_w2.weight"), D, Rd, &ly->decay_w2)) ||
        (st = rwkvc_legacy_load_channels(m, NAME("time_mix_first.weight"), NULL, &ly->first, NULL)) ||
        (st = rwkvc_load_vector(m, NAME("time_mix_ln.weight"), vd, 1, NULL, 0, &ly->lnx_w)) ||
        (st = rwkvc_load_vector(m, NAME("time_mix_ln.bias"), vd, 1, NULL, 0, &ly->lnx_b)) ||
        (st = rwkvc_legacy_load_att(m, l, 1)) || (st = rwkvc_legacy_load_ffn(m, l))) {
        return st;
    }
#undef NAME
    if (5 * Rm > m->max_rank) {
        m->max_rank = 5 * Rm;
    }
    if (Rd > m->max_rank) {
        m->max_rank = Rd;
    }
    return RWKVC_OK;
}

static rwkvc_status v6_load(rwkvc_model *m) {
    rwkvc_status st;
    if ((st = rwkvc_legacy_load_rescale(m, "rwkv6"))) {
        return st;
    }
    /* llama.cpp hard-codes the v6 group-norm eps to 64e-5, as the official code. */
    m->gn_eps = 64e-5f;
    m->info.arch_version = 60;
    for (uint32_t l = 0; l < m->info.n_layer; l++) {
        if ((st = load_layer(m, l)) != RWKVC_OK) {
            return st;
        }
    }
    m->info.state_len = (size_t)m->info.n_layer * (2 + m->info.head_size) * m->info.n_embd;
    return RWKVC_OK;
}

static void v6_state_init(const rwkvc_model *m, float *state) {
    memset(state, 0, m->info.state_len * sizeof(float));
}

/* ---- Forward ---- */

static void v6_time_mix(rwkvc_ctx *c, const rwkvc_layer *ly, size_t T, float *st, rwkvc_legacy_bufs *b) {
    const size_t D = c->model->info.n_embd;
    const size_t Rm5 = ly->maa_w1.rows, Rm = Rm5 / 5, Rd = ly->decay_w1.rows;
    float *const outs[5] = {b->xw, b->xk, b->xv, b->xr, b->xg};

    /* T1-T2: s = a + (prev - a) * maa_x, into xw (consumed by the first LoRA product below). */
    for (size_t t = 0; t < T; t++) {
        const float *at = b->a + t * D, *pt = t == 0 ? st : b->a + (t - 1) * D;
        float *s = b->xw + t * D;
        for (size_t i = 0; i < D; i++) {
            s[i] = at[i] + (pt[i] - at[i]) * ly->maa_x[i];
        }
    }
    /* T3: m = tanh(s W1) [T][5 Rm]; m_j = m[j] W2[j] [T][D] for j = w, k, v, r, g. */
    rwkvc_matmul(c, &ly->maa_w1, b->xw, D, T, b->lora, Rm5);
    for (size_t i = 0; i < T * Rm5; i++) {
        b->lora[i] = tanhf(b->lora[i]);
    }
    rwkvc_mm_op ops[5];
    for (int j = 0; j < 5; j++) {
        ops[j] = (rwkvc_mm_op){&ly->maa_w2[j], b->lora + (size_t)j * Rm, Rm5, outs[j], D};
    }
    rwkvc_matmul_multi(c, ops, 5, T);
    /* T4: x_j = a + (prev - a) * (maa_j + m_j). */
    for (size_t t = 0; t < T; t++) {
        const float *at = b->a + t * D, *pt = t == 0 ? st : b->a + (t - 1) * D;
        for (int j = 0; j < 5; j++) {
            float *o = outs[j] + t * D;
            const float *mu = ly->maa + (size_t)j * D;
            for (size_t i = 0; i < D; i++) {
                o[i] = at[i] + (pt[i] - at[i]) * (mu[i] + o[i]);
            }
        }
    }
    /*
     * T5: projections (the gate's silu is applied with the group norm) and the decay LoRA's first product
     * (T6: d = exp(-exp(time_decay + tanh(x_w Wd1) Wd2)), in fp32, per token and channel), one pool job. The
     * token-shift LoRA's hidden vectors in lora are no longer read, so Wd1 may write there.
     */
    ops[0] = (rwkvc_mm_op){&ly->att_r, b->xr, D, b->r, D};
    ops[1] = (rwkvc_mm_op){&ly->att_k, b->xk, D, b->k, D};
    ops[2] = (rwkvc_mm_op){&ly->att_v, b->xv, D, b->v, D};
    ops[3] = (rwkvc_mm_op){&ly->gate, b->xg, D, b->g, D};
    ops[4] = (rwkvc_mm_op){&ly->decay_w1, b->xw, D, b->lora, Rd};
    rwkvc_matmul_multi(c, ops, 5, T);
    for (size_t i = 0; i < T * Rd; i++) {
        b->lora[i] = tanhf(b->lora[i]);
    }
    rwkvc_matmul(c, &ly->decay_w2, b->lora, Rd, T, b->dec, D);
    /* The two exponentials in batches over each token's channels (the same bits as expf: vexp.h). */
    const rwkvc_expf_fn exp_fn = rwkvc_expf_get(c->model->isa);
    for (size_t t = 0; t < T; t++) {
        float *d = b->dec + t * D;
        for (size_t i = 0; i < D; i++) {
            d[i] = ly->decay[i] + d[i];
        }
        exp_fn(d, D);
        for (size_t i = 0; i < D; i++) {
            d[i] = -d[i];
        }
        exp_fn(d, D);
    }
    /* T7-T8: WKV with this token's decay, group norm, gate, output. */
    rwkvc_v5_wkv_out(c, ly, T, st, b, D, 1);
}

static void v6_eval_chunk(rwkvc_ctx *c, const uint32_t *tokens, size_t T, float *state, float *logits,
                          int all_logits) {
    const rwkvc_model *m = c->model;
    rwkvc_legacy_eval(c, tokens, T, state, logits, all_logits, (2 + (size_t)m->info.head_size) * m->info.n_embd,
                      v6_time_mix, 1);
}

const rwkvc_arch_ops rwkvc_ops_v6 = {"rwkv6", v6_load, rwkvc_legacy_scratch_floats, v6_state_init, v6_eval_chunk};
