/*
 * forward_v7.c: RWKV-7 ("Goose", x070): tensor binding and the forward pass over chunks of tokens.
 *
 * Follows shared docs rwkv-architectures.md §4.2 step by step (T1..T12 and the channel mix). In a chunk of T
 * tokens every projection is one matrix-matrix product over the T tokens; only the WKV recurrence (T9) runs
 * token by token, in parallel over heads. v_first (block 0's values, used by the value residual of later blocks)
 * is kept per token in a T x D buffer. The head is computed only for the tokens whose logits are wanted.
 *
 * State per layer (floats): att_x_prev [D], S [H][N][N] indexed [head][value][key], ffn_x_prev [D].
 */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "forward.h"
#include "status.h"
#include "vexp.h"
#include "wkv7.h"

/* ---- Loading ---- */

static rwkvc_status load_layer(rwkvc_model *m, uint32_t l) {
    const uint64_t D = m->info.n_embd, N = m->info.head_size, H = m->info.n_head;
    rwkvc_layer *ly = &m->layers[l];
    const uint64_t vd[1] = {D};
    const uint64_t mix6[2] = {D, 6};
    const uint64_t rk[2] = {N, H};
    char n[96];
    rwkvc_status st;

#define NAME(suffix) (snprintf(n, sizeof(n), "blk.%u." suffix, l), n)
    if ((st = rwkvc_load_vector(m, NAME("time_mix_lerp_fused.weight"), mix6, 2, NULL, 0, &ly->mix)) ||
        (st = rwkvc_load_vector(m, NAME("time_mix_w0.weight"), vd, 1, NULL, 0, &ly->w0)) ||
        (st = rwkvc_load_vector(m, NAME("time_mix_a0.weight"), vd, 1, NULL, 0, &ly->a0)) ||
        (st = rwkvc_load_vector(m, NAME("time_mix_k_k.weight"), vd, 1, NULL, 0, &ly->k_k)) ||
        (st = rwkvc_load_vector(m, NAME("time_mix_k_a.weight"), vd, 1, NULL, 0, &ly->k_a)) ||
        (st = rwkvc_load_vector(m, NAME("time_mix_r_k.weight"), rk, 2, vd, 1, &ly->r_k)) ||
        (st = rwkvc_load_vector(m, NAME("time_mix_ln.weight"), vd, 1, NULL, 0, &ly->lnx_w)) ||
        (st = rwkvc_load_vector(m, NAME("time_mix_ln.bias"), vd, 1, NULL, 0, &ly->lnx_b)) ||
        (st = rwkvc_load_vector(m, NAME("channel_mix_lerp_k.weight"), vd, 1, NULL, 0, &ly->ffn_mix_k))) {
        return st;
    }
    if ((st = rwkvc_load_matrix(m, NAME("time_mix_receptance.weight"), D, D, &ly->att_r)) ||
        (st = rwkvc_load_matrix(m, NAME("time_mix_key.weight"), D, D, &ly->att_k)) ||
        (st = rwkvc_load_matrix(m, NAME("time_mix_value.weight"), D, D, &ly->att_v)) ||
        (st = rwkvc_load_matrix(m, NAME("time_mix_output.weight"), D, D, &ly->att_o))) {
        return st;
    }
    /* LoRA pairs: the first matrix fixes the rank (its rows), the second must be (D, rank). */
    struct {
        const char *a, *b;
        rwkvc_weight *wa, *wb;
    } lora[4] = {
        {"time_mix_w1.weight", "time_mix_w2.weight", &ly->w1, &ly->w2},
        {"time_mix_a1.weight", "time_mix_a2.weight", &ly->a1, &ly->a2},
        {"time_mix_g1.weight", "time_mix_g2.weight", &ly->g1, &ly->g2},
        {"time_mix_v1.weight", "time_mix_v2.weight", &ly->v1, &ly->v2},
    };
    /* Block 0 never uses the value residual: its v0/v1/v2 may be present (llama.cpp writes copies) and are ignored. */
    int n_lora = l == 0 ? 3 : 4;
    for (int i = 0; i < n_lora; i++) {
        char nb[96];
        snprintf(nb, sizeof(nb), "blk.%u.%s", l, lora[i].b);
        if ((st = rwkvc_load_matrix_rows(m, (snprintf(n, sizeof(n), "blk.%u.%s", l, lora[i].a), n), D, lora[i].wa))) {
            return st;
        }
        size_t rank = lora[i].wa->rows;
        if ((st = rwkvc_load_matrix(m, nb, D, rank, lora[i].wb))) {
            return st;
        }
        if (rank > m->max_rank) {
            m->max_rank = rank;
        }
    }
    if (l > 0 && (st = rwkvc_load_vector(m, NAME("time_mix_v0.weight"), vd, 1, NULL, 0, &ly->v0))) {
        return st;
    }
    /* Channel mix: F comes from block 0's key matrix; every block must agree. */
    if (l == 0) {
        if ((st = rwkvc_load_matrix_rows(m, NAME("channel_mix_key.weight"), D, &ly->ffn_k))) {
            return st;
        }
        m->info.n_ffn = (uint32_t)ly->ffn_k.rows;
    } else if ((st = rwkvc_load_matrix(m, NAME("channel_mix_key.weight"), m->info.n_ffn, D, &ly->ffn_k))) {
        return st;
    }
    if ((st = rwkvc_load_matrix(m, NAME("channel_mix_value.weight"), D, m->info.n_ffn, &ly->ffn_v))) {
        return st;
    }
#undef NAME
    return RWKVC_OK;
}

static rwkvc_status v7_load(rwkvc_model *m) {
    m->info.arch_version = 70;
    for (uint32_t l = 0; l < m->info.n_layer; l++) {
        rwkvc_status st = load_layer(m, l);
        if (st != RWKVC_OK) {
            return st;
        }
    }
    m->info.state_len = (size_t)m->info.n_layer * (2 + m->info.head_size) * m->info.n_embd;
    return RWKVC_OK;
}

/* ---- Forward ---- */

/* Scratch buffers of one chunk, carved from ctx->scratch. Shapes are [T][D] unless noted. */
typedef struct {
    float *x;        /* residual stream */
    float *a;        /* LayerNorm output (ln1, then ln2, then ln_out) */
    float *xr, *xw, *xk, *xv, *xa, *xg; /* token-shifted inputs; xw then holds kappa-hat, xa holds b = kappa-hat * alpha */
    float *r, *k, *v;
    float *dec;      /* decay d */
    float *alpha;    /* in-context learning rate */
    float *g;        /* output gate */
    float *vfirst;   /* block 0's v */
    float *y;        /* WKV output */
    float *tmp;      /* projection result added to x */
    float *lora[4];  /* [T][max_rank] each: the hidden vectors of the w, a, g and v LoRAs */
    float *ffn;      /* [T][F] */
} v7_bufs;

#define N_TD_BUFS 17

static size_t v7_scratch_floats(const rwkvc_model *m, size_t T) {
    size_t D = m->info.n_embd;
    /* Each buffer is rounded up to 16 floats so every one starts 64-byte aligned. */
    size_t td = (T * D + 15) & ~(size_t)15;
    size_t tr = (T * m->max_rank + 15) & ~(size_t)15;
    size_t tf = (T * m->info.n_ffn + 15) & ~(size_t)15;
    return N_TD_BUFS * td + 4 * tr + tf;
}

static void carve(const rwkvc_model *m, float *base, size_t T, v7_bufs *b) {
    size_t D = m->info.n_embd;
    size_t td = (T * D + 15) & ~(size_t)15;
    size_t tr = (T * m->max_rank + 15) & ~(size_t)15;
    float **td_bufs[N_TD_BUFS] = {&b->x, &b->a, &b->xr, &b->xw,    &b->xk, &b->xv,  &b->xa, &b->xg, &b->r,
                                  &b->k, &b->v, &b->dec, &b->alpha, &b->g, &b->vfirst, &b->y, &b->tmp};
    float *p = base;
    for (int i = 0; i < N_TD_BUFS; i++) {
        *td_bufs[i] = p;
        p += td;
    }
    for (int i = 0; i < 4; i++) {
        b->lora[i] = p;
        p += tr;
    }
    b->ffn = p;
}

static void v7_state_init(const rwkvc_model *m, float *state) {
    memset(state, 0, m->info.state_len * sizeof(float));
}

/*
 * Everything of the time mix between the LoRAs and the output projection is per channel or per head (T3..T8
 * element-wise, T6 and T10 normalise within a head, T9 runs each head on its own, T11 sums within a head), so it
 * runs as one job over heads: each head's channels go through T3..T8 for every token, then its WKV recurrence
 * over the chunk, then T10..T12's gate. The arithmetic of each element is the same whatever the split.
 */
typedef struct {
    const rwkvc_model *m;
    const rwkvc_layer *ly;
    uint32_t l;
    rwkvc_wkv7_fn fn;
    rwkvc_expf_fn exp_fn;
    size_t T;
    float *S;          /* layer state, [H][N][N] */
    const v7_bufs *b;
    /* Decode: the second stage of the LoRAs, whose outputs head h reads only in its own N rows (NULL otherwise). */
    const rwkvc_matvec_op *lora2;
    int n_lora2;
} head_job;

/* Channels per batch of exponentials in head_pre (a head is usually 64). */
#define EXP_BATCH 64

static void head_pre(const head_job *j, size_t h, size_t t) {
    const rwkvc_layer *ly = j->ly;
    const size_t D = j->m->info.n_embd, N = j->m->info.head_size;
    const size_t o = t * D + h * N, c0 = h * N;
    const v7_bufs *b = j->b;
    float *dec = b->dec + o, *alpha = b->alpha + o, *k = b->k + o, *v = b->v + o;
    float *kk = b->xw + o, *bb = b->xa + o;
    const float *w0 = ly->w0 + c0, *a0 = ly->a0 + c0, *k_k = ly->k_k + c0, *k_a = ly->k_a + c0;
    /*
     * T3 / T4 finish: decay d = exp(-e^-0.5 * sigmoid(w0 + lora_w)), alpha = sigmoid(a0 + lora_a); and T8's gate
     * sigmoid(v0 + lora_v) (block 0 keeps its v as v_first). sigmoid(x) = 1 / (1 + e^-x); the exponentials go
     * through exp_fn in batches (the same bits as expf, vexp.h), everything else is the same float arithmetic.
     */
    const int vres = j->l != 0;
    const float *vf = b->vfirst + o, *mx = b->tmp + o, *v0 = vres ? ly->v0 + c0 : NULL;
    for (size_t i0 = 0; i0 < N; i0 += EXP_BATCH) {
        const size_t n = N - i0 < EXP_BATCH ? N - i0 : EXP_BATCH;
        float e[3 * EXP_BATCH];
        for (size_t i = 0; i < n; i++) {
            e[i] = -(w0[i0 + i] + dec[i0 + i]);
            e[n + i] = -(a0[i0 + i] + alpha[i0 + i]);
            if (vres) {
                e[2 * n + i] = -(v0[i0 + i] + mx[i0 + i]);
            }
        }
        j->exp_fn(e, vres ? 3 * n : 2 * n);
        for (size_t i = 0; i < n; i++) {
            e[i] = -0.606531f * (1.0f / (1.0f + e[i]));
            alpha[i0 + i] = 1.0f / (1.0f + e[n + i]);
        }
        j->exp_fn(e, n);
        memcpy(dec + i0, e, n * sizeof(float));
        if (vres) {
            /* T8: value residual (tmp holds the value LoRA's output). */
            for (size_t i = 0; i < n; i++) {
                v[i0 + i] = v[i0 + i] + (vf[i0 + i] - v[i0 + i]) * (1.0f / (1.0f + e[2 * n + i]));
            }
        }
    }
    if (!vres) {
        memcpy(b->vfirst + o, v, N * sizeof(float));
    }
    /* T6: kappa-hat = normalize(k * k_k) over the head, from k before T7. */
    double ss = 0.0;
    for (size_t n = 0; n < N; n++) {
        float q = k[n] * k_k[n];
        kk[n] = q;
        ss += (double)q * q;
    }
    float norm = (float)sqrt(ss);
    float inv = 1.0f / (norm > 1e-12f ? norm : 1e-12f);
    for (size_t n = 0; n < N; n++) {
        kk[n] *= inv;
    }
    for (size_t i = 0; i < N; i++) {
        /* T7: k <- k * (1 + (alpha - 1) * k_a). */
        k[i] = k[i] * (1.0f + (alpha[i] - 1.0f) * k_a[i]);
        bb[i] = kk[i] * alpha[i];
    }
}

static void head_post(const head_job *j, size_t h, size_t t) {
    const rwkvc_layer *ly = j->ly;
    const size_t D = j->m->info.n_embd, N = j->m->info.head_size;
    const size_t o = t * D + h * N, c0 = h * N;
    const v7_bufs *b = j->b;
    float *y = b->y + o;
    const float *r = b->r + o, *k = b->k + o, *v = b->v + o, *g = b->g + o, *r_k = ly->r_k + c0;
    /* T10: group norm of the head (eps 64e-5), as rwkvc_group_norm does per group. */
    rwkvc_layer_norm(y, y, ly->lnx_w + c0, ly->lnx_b + c0, N, 64e-5f);
    /* T11: bonus (r . (k * r_k)) v. */
    float s = 0.0f;
    for (size_t n = 0; n < N; n++) {
        s += r[n] * k[n] * r_k[n];
    }
    for (size_t n = 0; n < N; n++) {
        y[n] += s * v[n];
    }
    /* T12 (gate). */
    for (size_t i = 0; i < N; i++) {
        y[i] *= g[i];
    }
}

static void heads_task(void *arg, size_t h0, size_t h1) {
    const head_job *j = arg;
    const size_t D = j->m->info.n_embd, N = j->m->info.head_size;
    const v7_bufs *b = j->b;
    for (int i = 0; i < j->n_lora2; i++) {
        rwkvc_matvec_rows(&j->lora2[i], h0 * N, h1 * N);
    }
    for (size_t h = h0; h < h1; h++) {
        const size_t o = h * N;
        for (size_t t = 0; t < j->T; t++) {
            head_pre(j, h, t);
        }
        /* T9. xw holds kappa-hat (a = -kappa-hat) and xa holds b = kappa-hat * alpha at this point. */
        j->fn(j->S + h * N * N, N, j->T, D, b->r + o, b->dec + o, b->k + o, b->v + o, b->xw + o, b->xa + o,
              b->y + o);
        for (size_t t = 0; t < j->T; t++) {
            head_post(j, h, t);
        }
    }
}

/*
 * Sequence-mode element-wise steps as jobs over tokens (one token's arithmetic is the same whatever the split, so
 * results do not depend on the thread count). A single token's steps are too small to hand off and run inline.
 */
typedef struct {
    const float *x;       /* [T][D] input of the layer norm */
    float *a;             /* [T][D] its output */
    const float *w, *b;   /* norm weight and bias, [D] */
    float eps;
    const float *prev0;   /* [D] the previous chunk's last normalised input (token shift of t = 0) */
    const float *mu;      /* [n_mix][D] token-shift coefficients */
    int n_mix;
    float *const *outs;   /* n_mix outputs, [T][D] each */
    size_t D;
} shift_job;

static void norm_task(void *arg, size_t t0, size_t t1) {
    const shift_job *j = arg;
    for (size_t t = t0; t < t1; t++) {
        rwkvc_layer_norm(j->x + t * j->D, j->a + t * j->D, j->w, j->b, j->D, j->eps);
    }
}

/* x_j = a + (prev - a) * mu_j for the n_mix coefficient vectors (token shift, T1). */
static void shift_task(void *arg, size_t t0, size_t t1) {
    const shift_job *j = arg;
    const size_t D = j->D;
    for (size_t t = t0; t < t1; t++) {
        const float *at = j->a + t * D;
        const float *pt = t == 0 ? j->prev0 : j->a + (t - 1) * D;
        for (int k = 0; k < j->n_mix; k++) {
            float *o = j->outs[k] + t * D;
            const float *mk = j->mu + (size_t)k * D;
            for (size_t c = 0; c < D; c++) {
                o[c] = at[c] + (pt[c] - at[c]) * mk[c];
            }
        }
    }
}

/* Layer norm of every token, then the token-shifted mixes; prev (the state's [D]) becomes the last token's. */
static void norm_and_shift(rwkvc_ctx *c, shift_job *j, size_t T, float *prev) {
    const size_t D = j->D;
    rwkvc_parallel(c, T, T * D * 8, norm_task, j);
    rwkvc_parallel(c, T, T * D * (size_t)j->n_mix * 2, shift_task, j);
    memcpy(prev, j->a + (T - 1) * D, D * sizeof(float));
}

typedef struct {
    float *x;
    const float *y;
    float *sq;            /* relu(sq)^2 in place, or NULL */
} elem_job;

/* x += y over [i0, i1). */
static void add_task(void *arg, size_t i0, size_t i1) {
    const elem_job *j = arg;
    rwkvc_add(j->x + i0, j->y + i0, i1 - i0);
}

/* sq = relu(sq)^2 over [i0, i1). */
static void relu_sq_task(void *arg, size_t i0, size_t i1) {
    const elem_job *j = arg;
    rwkvc_relu_sq(j->sq + i0, i1 - i0);
}

static void time_mix(rwkvc_ctx *c, const rwkvc_layer *ly, uint32_t l, size_t T, float *st, v7_bufs *b) {
    const rwkvc_model *m = c->model;
    const size_t D = m->info.n_embd, N = m->info.head_size, H = m->info.n_head;
    float *att_prev = st;
    float *S = st + D;

    /* T1: normalised input and the six token-shifted mixes (r, w, k, v, a, g). */
    float *const mixes[6] = {b->xr, b->xw, b->xk, b->xv, b->xa, b->xg};
    shift_job sj = {b->x, b->a, ly->ln1_w, ly->ln1_b, m->ln_eps, att_prev, ly->mix, 6, mixes, D};
    norm_and_shift(c, &sj, T, att_prev);

    /*
     * T2 and the first stage of the four LoRAs (T3, T4, T5, T8) read only the token-shifted inputs: one job.
     * Block 0 has no value-residual LoRA.
     */
    const rwkvc_weight *W1[4] = {&ly->w1, &ly->a1, &ly->g1, &ly->v1};
    const rwkvc_weight *W2[4] = {&ly->w2, &ly->a2, &ly->g2, &ly->v2};
    const float *lin[4] = {b->xw, b->xa, b->xg, b->xv};
    /* T3 decay LoRA -> dec, T4 alpha -> alpha, T5 gate -> g, T8 value-residual mix -> tmp. */
    float *lout[4] = {b->dec, b->alpha, b->g, b->tmp};
    const int n_lora = l > 0 ? 4 : 3;
    rwkvc_mm_op ops[3 + 4] = {
        {&ly->att_r, b->xr, D, b->r, D},
        {&ly->att_k, b->xk, D, b->k, D},
        {&ly->att_v, b->xv, D, b->v, D},
    };
    for (int i = 0; i < n_lora; i++) {
        ops[3 + i] = (rwkvc_mm_op){W1[i], lin[i], D, b->lora[i], W1[i]->rows};
    }
    rwkvc_matmul_multi(c, ops, 3 + (size_t)n_lora, T);
    /* Hidden activations: tanh for the decay LoRA, sigmoid for the gate, none for alpha and the value mix. */
    for (size_t i = 0; i < T * ly->w1.rows; i++) {
        b->lora[0][i] = tanhf(b->lora[0][i]);
    }
    const rwkvc_expf_fn exp_fn = rwkvc_expf_get(m->isa);
    rwkvc_sigmoid_batch(exp_fn, b->lora[2], b->lora[2], T * ly->g1.rows);
    head_job hj = {m, ly, l, rwkvc_wkv7_get(m->isa), exp_fn, T, S, b, NULL, 0};
    rwkvc_matvec_op lora2[4];
    if (T == 1 && N % 16 == 0) {
        /*
         * Decode: each head computes its own rows of the second stage (8% of a 0.4B layer's bytes) at the start of
         * the heads job. As a job of its own it streamed below the memory's pace, and every job costs a hand-off
         * and a wait for the slower thread.
         */
        for (int i = 0; i < n_lora; i++) {
            rwkvc_matvec_prepare(c, W2[i], b->lora[i], lout[i], (size_t)i, &lora2[i]);
        }
        hj.lora2 = lora2;
        hj.n_lora2 = n_lora;
    } else {
        for (int i = 0; i < n_lora; i++) {
            ops[i] = (rwkvc_mm_op){W2[i], b->lora[i], W1[i]->rows, lout[i], D};
        }
        rwkvc_matmul_multi(c, ops, (size_t)n_lora, T);
    }

    /* T3..T12's gate, per head. */
    rwkvc_parallel(c, H, T * H * N * N * 3, heads_task, &hj);

    /* T12: output projection, added to the residual. */
    rwkvc_matmul(c, &ly->att_o, b->y, D, T, b->tmp, D);
    elem_job add = {b->x, b->tmp, NULL};
    rwkvc_parallel(c, T * D, T * D, add_task, &add);
}

static void channel_mix(rwkvc_ctx *c, const rwkvc_layer *ly, size_t T, float *st, v7_bufs *b) {
    const rwkvc_model *m = c->model;
    const size_t D = m->info.n_embd, N = m->info.head_size, F = m->info.n_ffn;
    float *ffn_prev = st + D + D * N;
    float *const outs[1] = {b->xk};
    shift_job sj = {b->x, b->a, ly->ln2_w, ly->ln2_b, m->ln_eps, ffn_prev, ly->ffn_mix_k, 1, outs, D};
    norm_and_shift(c, &sj, T, ffn_prev);
    /* out = Wv relu(Wk xk)^2 */
    rwkvc_matmul(c, &ly->ffn_k, b->xk, D, T, b->ffn, F);
    elem_job sq = {NULL, NULL, b->ffn};
    rwkvc_parallel(c, T * F, T * F, relu_sq_task, &sq);
    rwkvc_matmul(c, &ly->ffn_v, b->ffn, F, T, b->tmp, D);
    elem_job add = {b->x, b->tmp, NULL};
    rwkvc_parallel(c, T * D, T * D, add_task, &add);
}

static void v7_eval_chunk(rwkvc_ctx *c, const uint32_t *tokens, size_t T, float *state, float *logits,
                          int all_logits) {
    const rwkvc_model *m = c->model;
    const size_t D = m->info.n_embd, N = m->info.head_size, V = m->info.n_vocab;
    v7_bufs b;
    carve(m, c->scratch, T, &b);

    /* Embedding rows, normalised by ln0 (not folded into the table, so any embedding type works). */
    for (size_t t = 0; t < T; t++) {
        rwkvc_embed_row(m, tokens[t], b.x + t * D);
        rwkvc_layer_norm(b.x + t * D, b.x + t * D, m->ln0_w, m->ln0_b, D, m->ln_eps);
    }
    for (uint32_t l = 0; l < m->info.n_layer; l++) {
        float *st = state + (size_t)l * (2 + N) * D;
        time_mix(c, &m->layers[l], l, T, st, &b);
        channel_mix(c, &m->layers[l], T, st, &b);
    }
    if (!logits) {
        return;
    }
    /* Head: only for the tokens whose logits are wanted. */
    size_t t0 = all_logits ? 0 : T - 1;
    size_t n = T - t0;
    for (size_t t = t0; t < T; t++) {
        rwkvc_layer_norm(b.x + t * D, b.a + (t - t0) * D, m->lnout_w, m->lnout_b, D, m->ln_eps);
    }
    rwkvc_matmul(c, &m->head, b.a, D, n, logits, V);
}

const rwkvc_arch_ops rwkvc_ops_v7 = {"rwkv7", v7_load, v7_scratch_floats, v7_state_init, v7_eval_chunk};
