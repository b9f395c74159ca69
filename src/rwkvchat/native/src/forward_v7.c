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
#include <stdint.h>
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

/* Token shift (T1) of one token over channels [c0, c1): x_k = a + (prev - a) * mu_k for the n_mix coefficient
   vectors mu ([n_mix][D]), into outs[k] + offset. */
static void shift_channels(const float *a, const float *prev, const float *mu, float *const *outs, size_t offset,
                           int n_mix, size_t D, size_t c0, size_t c1) {
    for (int k = 0; k < n_mix; k++) {
        float *o = outs[k] + offset;
        const float *mk = mu + (size_t)k * D;
        for (size_t c = c0; c < c1; c++) {
            o[c] = a[c] + (prev[c] - a[c]) * mk[c];
        }
    }
}

static void shift_task(void *arg, size_t t0, size_t t1) {
    const shift_job *j = arg;
    const size_t D = j->D;
    for (size_t t = t0; t < t1; t++) {
        const float *pt = t == 0 ? j->prev0 : j->a + (t - 1) * D;
        shift_channels(j->a + t * D, pt, j->mu, j->outs, t * D, j->n_mix, D, 0, D);
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

/*
 * Time mix of a chunk of T tokens. Only the last n_out tokens' outputs are wanted (n_out = T except in the last
 * layer, see v7_eval_chunk): the receptance r, the output projection and the residual add run for those alone, and
 * the other tokens' r is 0 (r does not enter the state, only the output y = S r, which then is 0 for them).
 */
static void time_mix(rwkvc_ctx *c, const rwkvc_layer *ly, uint32_t l, size_t T, size_t n_out, float *st,
                     v7_bufs *b) {
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
    const size_t skip = T - n_out; /* leading tokens whose output nobody reads */
    if (skip == 0) {
        rwkvc_matmul_multi(c, ops, 3 + (size_t)n_lora, T);
    } else {
        rwkvc_matmul_multi(c, ops + 1, 2 + (size_t)n_lora, T);
        memset(b->r, 0, skip * D * sizeof(float));
        rwkvc_matmul(c, &ly->att_r, b->xr + skip * D, D, n_out, b->r + skip * D, D);
    }
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
    rwkvc_matmul(c, &ly->att_o, b->y + skip * D, D, n_out, b->tmp + skip * D, D);
    elem_job add = {b->x + skip * D, b->tmp + skip * D, NULL};
    rwkvc_parallel(c, n_out * D, n_out * D, add_task, &add);
}

/*
 * Channel mix of the last n_out of T tokens (n_out = T except in the last layer, see v7_eval_chunk; n_out = 0 only
 * brings the token-shift state up to date). x must hold the tokens from T - n_out - 1 on: the one before the first
 * output token is that token's shifted-in input (the state's ffn_prev when n_out = T).
 */
static void channel_mix(rwkvc_ctx *c, const rwkvc_layer *ly, size_t T, size_t n_out, float *st, v7_bufs *b) {
    const rwkvc_model *m = c->model;
    const size_t D = m->info.n_embd, N = m->info.head_size, F = m->info.n_ffn;
    float *ffn_prev = st + D + D * N;
    const size_t skip = T - n_out;
    if (n_out == 0) {
        rwkvc_layer_norm(b->x + (T - 1) * D, ffn_prev, ly->ln2_w, ly->ln2_b, D, m->ln_eps);
        return;
    }
    /* The previous normalised input of the first output token: ffn_prev, or token skip - 1's, into y (free now). */
    const float *prev0 = ffn_prev;
    if (skip > 0) {
        rwkvc_layer_norm(b->x + (skip - 1) * D, b->y, ly->ln2_w, ly->ln2_b, D, m->ln_eps);
        prev0 = b->y;
    }
    float *x = b->x + skip * D;
    float *const outs[1] = {b->xk};
    shift_job sj = {x, b->a, ly->ln2_w, ly->ln2_b, m->ln_eps, prev0, ly->ffn_mix_k, 1, outs, D};
    norm_and_shift(c, &sj, n_out, ffn_prev);
    /* out = Wv relu(Wk xk)^2 */
    rwkvc_matmul(c, &ly->ffn_k, b->xk, D, n_out, b->ffn, F);
    elem_job sq = {NULL, NULL, b->ffn};
    rwkvc_parallel(c, n_out * F, n_out * F, relu_sq_task, &sq);
    rwkvc_matmul(c, &ly->ffn_v, b->ffn, F, n_out, b->tmp, D);
    elem_job add = {x, b->tmp, NULL};
    rwkvc_parallel(c, n_out * D, n_out * D, add_task, &add);
}

/*
 * ---- Decode as one team job ----
 *
 * A single token's layer is a chain of short steps: norms, token shifts and the activations' preparation between
 * the products, each too small to hand off as a job (they used to run on the calling thread while the others
 * waited: 13 us of each 0.4B layer). Here every thread runs the whole token, sharing each step by channels, each
 * product by rows, and the heads, with a barrier wherever a step reads what other threads wrote: seven a layer.
 * Every element takes the same arithmetic as in v7_eval_chunk's path, so the results are the same bits.
 */

/* Columns of the element-wise shares: a multiple of every act_group, so a thread prepares the columns it computed. */
#define TEAM_COL_UNIT 256

typedef struct {
    rwkvc_ctx *c;
    float *state;
    float *logits;     /* NULL: no head */
    const v7_bufs *b;
} v7_team;

/* This layer's products and where their prepared inputs go (every thread plans the same). */
typedef struct {
    rwkvc_team_products mix;   /* r, k, v and the LoRAs' first stages */
    rwkvc_team_products lora2; /* the LoRAs' second stages, with this thread's own prepared inputs */
    rwkvc_team_products att_o, ffn_k, ffn_v;
    int n_lora;
} v7_team_plan;

/* Plans layer l's products for thread tid of nt; 0 when the activation buffer is too small. */
static int team_plan_layer(const rwkvc_ctx *c, const v7_bufs *b, uint32_t l, uint32_t tid, uint32_t nt,
                           v7_team_plan *p) {
    const rwkvc_layer *ly = &c->model->layers[l];
    char *act = c->act;
    size_t cap = c->act_cap, off = 0;
    p->n_lora = l > 0 ? 4 : 3;
    const rwkvc_weight *mw[7] = {&ly->att_r, &ly->att_k, &ly->att_v, &ly->w1, &ly->a1, &ly->g1, &ly->v1};
    const float *mx[7] = {b->xr, b->xk, b->xv, b->xw, b->xa, b->xg, b->xv};
    float *my[7] = {b->r, b->k, b->v, b->lora[0], b->lora[1], b->lora[2], b->lora[3]};
    /* The regions do not overlap: ffn_v's input is prepared while ffn_k's is still being read. */
#define PLAN(tp, W, X, Y, n)                                                                                       \
    do {                                                                                                           \
        if (!rwkvc_team_plan(tp, W, X, Y, n, act ? act + off : NULL, cap - off)) {                                 \
            return 0;                                                                                              \
        }                                                                                                          \
        off += (tp)->act_used;                                                                                     \
    } while (0)
    PLAN(&p->mix, mw, mx, my, 3 + (size_t)p->n_lora);
    const rwkvc_weight *ow[1] = {&ly->att_o}, *kw[1] = {&ly->ffn_k}, *vw[1] = {&ly->ffn_v};
    const float *ox[1] = {b->y}, *kx[1] = {b->xk}, *vx[1] = {b->ffn};
    float *oy[1] = {b->tmp}, *ky[1] = {b->ffn}, *vy[1] = {b->tmp};
    PLAN(&p->att_o, ow, ox, oy, 1);
    PLAN(&p->ffn_k, kw, kx, ky, 1);
    PLAN(&p->ffn_v, vw, vx, vy, 1);
    /* The second stages' inputs are small: each thread prepares all of them, into a region of its own. */
    const rwkvc_weight *lw[4] = {&ly->w2, &ly->a2, &ly->g2, &ly->v2};
    const float *lx[4] = {b->lora[0], b->lora[1], b->lora[2], b->lora[3]};
    float *ly_out[4] = {b->dec, b->alpha, b->g, b->tmp};
    const size_t lora2_start = off;
    PLAN(&p->lora2, lw, lx, ly_out, (size_t)p->n_lora);
    const size_t per_thread = p->lora2.act_used;
    if (per_thread * nt > cap - lora2_start) {
        return 0;
    }
    if (tid > 0) {
        off = lora2_start + per_thread * tid;
        PLAN(&p->lora2, lw, lx, ly_out, (size_t)p->n_lora);
    }
#undef PLAN
    return 1;
}

/* Heads per share of the heads step: the att_o input columns a thread prepares must start at a group boundary. */
static size_t team_head_unit(const rwkvc_model *m, const rwkvc_weight *att_o) {
    const size_t N = m->info.head_size, group = att_o->kern->act_group;
    if (group == 0 || group <= N) {
        return group == 0 || N % group == 0 ? 1 : m->info.n_head;
    }
    return group % N == 0 ? group / N : m->info.n_head;
}

typedef struct {
    const v7_bufs *b;
    rwkvc_expf_fn exp_fn;
    const rwkvc_team_products *next; /* ffn_v, whose input the ffn_k rows are */
} team_epilogue;

/* After r/k/v and the LoRAs' first stages: tanh of the decay LoRA's hidden rows, sigmoid of the gate's. */
static void team_lora_act(void *arg, size_t i, size_t r0, size_t r1) {
    const team_epilogue *e = arg;
    if (i == 3) {
        for (size_t r = r0; r < r1; r++) {
            e->b->lora[0][r] = tanhf(e->b->lora[0][r]);
        }
    } else if (i == 5) {
        rwkvc_sigmoid_batch(e->exp_fn, e->b->lora[2] + r0, e->b->lora[2] + r0, r1 - r0);
    }
}

/* After a projection into tmp: the residual add of those rows. */
static void team_residual(void *arg, size_t i, size_t r0, size_t r1) {
    const team_epilogue *e = arg;
    (void)i;
    rwkvc_add(e->b->x + r0, e->b->tmp + r0, r1 - r0);
}

/* After ffn_k's rows: relu^2, then their columns of ffn_v's prepared input. */
static void team_relu_sq(void *arg, size_t i, size_t r0, size_t r1) {
    const team_epilogue *e = arg;
    (void)i;
    rwkvc_relu_sq(e->b->ffn + r0, r1 - r0);
    rwkvc_team_prepare_cols(e->next, 0, r0, r1);
}

/* LN of x into a over this thread's columns [c0, c1), then the token shift of n_mix outputs, and prev = a there. */
static void team_norm_shift(const v7_bufs *b, const float *w, const float *bias, float eps, float *prev,
                            const float *mu, float *const *outs, int n_mix, size_t D, size_t c0, size_t c1) {
    rwkvc_layer_norm_range(b->x, b->a, w, bias, rwkvc_layer_norm_stats(b->x, D, eps), c0, c1);
    shift_channels(b->a, prev, mu, outs, 0, n_mix, D, c0, c1);
    memcpy(prev + c0, b->a + c0, (c1 - c0) * sizeof(float));
}

static void team_layer(const v7_team *t, uint32_t l, uint32_t tid, uint32_t nt) {
    rwkvc_ctx *c = t->c;
    const rwkvc_model *m = c->model;
    const rwkvc_layer *ly = &m->layers[l];
    const size_t D = m->info.n_embd, N = m->info.head_size, H = m->info.n_head;
    const v7_bufs *b = t->b;
    float *st = t->state + (size_t)l * (2 + N) * D;
    float *att_prev = st, *S = st + D, *ffn_prev = st + D + D * N;
    v7_team_plan p;
    team_plan_layer(c, b, l, tid, nt, &p); /* checked for every layer by team_decode_possible */
    const rwkvc_expf_fn exp_fn = rwkvc_expf_get(m->isa);
    team_epilogue ep = {b, exp_fn, &p.ffn_v};
    size_t c0, c1;
    rwkvc_team_share(D, TEAM_COL_UNIT, tid, nt, &c0, &c1);

    /* T1, then the inputs of r, k, v and the LoRAs' first stages. */
    float *const mixes[6] = {b->xr, b->xw, b->xk, b->xv, b->xa, b->xg};
    team_norm_shift(b, ly->ln1_w, ly->ln1_b, m->ln_eps, att_prev, ly->mix, mixes, 6, D, c0, c1);
    rwkvc_team_prepare(&p.mix, c0, c1);
    rwkvc_pool_barrier(c->pool);
    rwkvc_team_rows(&p.mix, tid, nt, 16, team_lora_act, &ep);
    rwkvc_pool_barrier(c->pool);

    /* The LoRAs' second stages and T3..T12's gate over this thread's heads, then their columns of att_o's input. */
    rwkvc_team_prepare(&p.lora2, 0, SIZE_MAX);
    head_job hj = {m, ly, l, rwkvc_wkv7_get(m->isa), exp_fn, 1, S, b, p.lora2.op, p.n_lora};
    size_t h0, h1;
    rwkvc_team_share(H, team_head_unit(m, &ly->att_o), tid, nt, &h0, &h1);
    if (h0 < h1) {
        heads_task(&hj, h0, h1);
    }
    rwkvc_team_prepare(&p.att_o, h0 * N, h1 * N);
    rwkvc_pool_barrier(c->pool);
    rwkvc_team_rows(&p.att_o, tid, nt, 16, team_residual, &ep);
    rwkvc_pool_barrier(c->pool);

    /* Channel mix. */
    float *const outs[1] = {b->xk};
    team_norm_shift(b, ly->ln2_w, ly->ln2_b, m->ln_eps, ffn_prev, ly->ffn_mix_k, outs, 1, D, c0, c1);
    rwkvc_team_prepare(&p.ffn_k, c0, c1);
    rwkvc_pool_barrier(c->pool);
    const size_t group = ly->ffn_v.kern->act_group;
    rwkvc_team_rows(&p.ffn_k, tid, nt, group > 16 ? group : 16, team_relu_sq, &ep);
    rwkvc_pool_barrier(c->pool);
    rwkvc_team_rows(&p.ffn_v, tid, nt, 16, team_residual, &ep);
    rwkvc_pool_barrier(c->pool);
}

static void team_token(void *arg, uint32_t tid, uint32_t nt) {
    const v7_team *t = arg;
    const rwkvc_model *m = t->c->model;
    const size_t D = m->info.n_embd;
    for (uint32_t l = 0; l < m->info.n_layer; l++) {
        team_layer(t, l, tid, nt);
    }
    if (!t->logits) {
        return;
    }
    const v7_bufs *b = t->b;
    size_t c0, c1;
    rwkvc_team_share(D, TEAM_COL_UNIT, tid, nt, &c0, &c1);
    rwkvc_layer_norm_range(b->x, b->a, m->lnout_w, m->lnout_b, rwkvc_layer_norm_stats(b->x, D, m->ln_eps), c0, c1);
    rwkvc_team_products head;
    const rwkvc_weight *hw[1] = {&m->head};
    const float *hx[1] = {b->a};
    float *hy[1] = {t->logits};
    rwkvc_team_plan(&head, hw, hx, hy, 1, t->c->act, t->c->act_cap);
    rwkvc_team_prepare(&head, c0, c1);
    rwkvc_pool_barrier(t->c->pool);
    rwkvc_team_rows(&head, tid, nt, 16, NULL, NULL);
}

/*
 * Whether this context decodes as a team: more than one thread (one thread has no hand-offs to save), heads of a
 * multiple of 16 channels (the LoRAs' second stages are split at head boundaries), every plan fits the activation
 * buffer, and one chunk per thread (CPUs with cores of two kinds keep the jobs, whose chunks a fast core can take
 * over). Decided once per context.
 */
static int team_decode_possible(rwkvc_ctx *c, const v7_bufs *b) {
    if (c->decode_team == 0) {
        const rwkvc_model *m = c->model;
        const uint32_t nt = rwkvc_pool_threads(c->pool);
        int ok = nt > 1 && m->info.head_size % 16 == 0 && rwkvc_pool_chunks_per_thread(c->pool) == 1;
        for (uint32_t l = 0; ok && l < m->info.n_layer; l++) {
            v7_team_plan p;
            ok = team_plan_layer(c, b, l, nt - 1, nt, &p);
        }
        rwkvc_team_products head;
        const rwkvc_weight *hw[1] = {&m->head};
        const float *hx[1] = {b->a};
        float *hy[1] = {NULL};
        ok = ok && rwkvc_team_plan(&head, hw, hx, hy, 1, c->act, c->act_cap);
        c->decode_team = ok ? 1 : -1;
    }
    return c->decode_team > 0;
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
    if (T == 1 && team_decode_possible(c, &b)) {
        v7_team team = {c, state, logits, &b};
        rwkvc_pool_team(c->pool, team_token, &team);
        return;
    }
    /*
     * The last layer's outputs matter only for the tokens whose logits are wanted (the last one, or none: an
     * earlier chunk of a prompt leaves only its state); its state needs just the last token's normalised input of
     * the channel mix. So its channel mix runs for n_ffn tokens, and its time-mix output for the last two (the last
     * one's channel mix shifts in the one before): of a 0.4B model's 24 layers of products, 10/12 of one
     * (receptance, output, channel mix) is left out for each chunk of a prompt, as llama.cpp does.
     */
    const size_t n_ffn = all_logits ? T : logits ? 1 : 0;
    /* Two tokens even when n_ffn is 0, so that the state comes out the same bits with logits or without: products
       of 1 and of 2-3 vectors may take different kernels (kernels.h). */
    const size_t n_att = all_logits || T < 2 ? T : 2;
    for (uint32_t l = 0; l < m->info.n_layer; l++) {
        float *st = state + (size_t)l * (2 + N) * D;
        const int last = l + 1 == m->info.n_layer;
        time_mix(c, &m->layers[l], l, T, last ? n_att : T, st, &b);
        channel_mix(c, &m->layers[l], T, last ? n_ffn : T, st, &b);
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
