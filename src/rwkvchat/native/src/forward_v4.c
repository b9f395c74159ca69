/*
 * forward_v4.c: RWKV-4: tensor binding ("rwkv4" GGUF, docs/gguf-rwkv4-rwkv5.md) and the time mix.
 *
 * Follows rwkv-architectures.md §1.2 T1-T5: token shift with the raw mu, r = sigmoid(Wr xr), k, v, the WKV with the
 * max trick (wkv_legacy.c) over all channels, out = Wo (r * wkv). The projections run over the chunk's T tokens at
 * once; the WKV runs token by token, in parallel over channel ranges.
 *
 * State per layer (floats): att_x_prev [D], aa [D], bb [D], pp [D], ffn_x_prev [D]; pp starts at -1e30 so that
 * the first step's max picks the new token and exp(pp - q) is exactly 0.
 */
#include <math.h>
#include <stdio.h>

#include "forward_legacy.h"
#include "status.h"
#include "wkv_legacy.h"

/* Initial pp: far below any real exponent (the official package's value). */
#define V4_PP_INIT (-1e30f)

/* ---- Loading ---- */

/* w~ = -exp(time_decay): the decay in log space, as the max trick adds it to pp. */
static float log_decay(float w) {
    return -expf(w);
}

static rwkvc_status load_layer(rwkvc_model *m, uint32_t l) {
    const uint64_t D = m->info.n_embd;
    const uint64_t vd[1] = {D};
    rwkvc_layer *ly = &m->layers[l];
    char n[96];
    rwkvc_status st;
#define NAME(suffix) (snprintf(n, sizeof(n), "blk.%u." suffix, l), n)
    if ((st = rwkvc_load_vector(m, NAME("time_mix_lerp_k.weight"), vd, 1, NULL, 0, &ly->mu_k)) ||
        (st = rwkvc_load_vector(m, NAME("time_mix_lerp_v.weight"), vd, 1, NULL, 0, &ly->mu_v)) ||
        (st = rwkvc_load_vector(m, NAME("time_mix_lerp_r.weight"), vd, 1, NULL, 0, &ly->mu_r)) ||
        (st = rwkvc_legacy_load_channels(m, NAME("time_mix_decay.weight"), log_decay, &ly->decay, NULL)) ||
        (st = rwkvc_legacy_load_channels(m, NAME("time_mix_first.weight"), NULL, &ly->first, NULL)) ||
        (st = rwkvc_legacy_load_att(m, l, 0)) || (st = rwkvc_legacy_load_ffn(m, l))) {
        return st;
    }
#undef NAME
    return RWKVC_OK;
}

static rwkvc_status v4_load(rwkvc_model *m) {
    rwkvc_status st;
    if ((st = rwkvc_legacy_check_version(m, "rwkv4", "4")) || (st = rwkvc_legacy_load_rescale(m, "rwkv4"))) {
        return st;
    }
    m->info.arch_version = 40;
    for (uint32_t l = 0; l < m->info.n_layer; l++) {
        if ((st = load_layer(m, l)) != RWKVC_OK) {
            return st;
        }
    }
    m->info.state_len = (size_t)m->info.n_layer * 5 * m->info.n_embd;
    return RWKVC_OK;
}

static void v4_state_init(const rwkvc_model *m, float *state) {
    const size_t D = m->info.n_embd;
    for (uint32_t l = 0; l < m->info.n_layer; l++) {
        float *st = state + (size_t)l * 5 * D;
        for (size_t i = 0; i < 5 * D; i++) {
            st[i] = i >= 3 * D && i < 4 * D ? V4_PP_INIT : 0.0f;
        }
    }
}

/* ---- Forward ---- */

typedef struct {
    const rwkvc_layer *ly;
    float *st;
    const rwkvc_legacy_bufs *b;
    size_t T, D;
} wkv_job;

static void wkv_channels(void *arg, size_t c0, size_t c1) {
    const wkv_job *j = arg;
    const size_t D = j->D;
    rwkvc_wkv4(j->st + D, j->st + 2 * D, j->st + 3 * D, j->ly->decay, j->ly->first, j->b->k, j->b->v, j->b->y, j->T,
               D, c0, c1);
}

static void v4_time_mix(rwkvc_ctx *c, const rwkvc_layer *ly, size_t T, float *st, rwkvc_legacy_bufs *b) {
    const size_t D = c->model->info.n_embd;
    /* T1: token shift x*mu + prev*(1-mu). */
    rwkvc_legacy_shift_mu(b->a, st, T, D, ly->mu_k, b->xk);
    rwkvc_legacy_shift_mu(b->a, st, T, D, ly->mu_v, b->xv);
    rwkvc_legacy_shift_mu(b->a, st, T, D, ly->mu_r, b->xr);
    /* T2: projections, one pool job. */
    const rwkvc_mm_op ops[3] = {
        {&ly->att_r, b->xr, D, b->r, D},
        {&ly->att_k, b->xk, D, b->k, D},
        {&ly->att_v, b->xv, D, b->v, D},
    };
    rwkvc_matmul_multi(c, ops, 3, T);
    /* T3-T4: the WKV, token by token; channels are independent. */
    wkv_job j = {ly, st, b, T, D};
    rwkvc_parallel(c, D, T * D * 32, wkv_channels, &j);
    /* T5: out = Wo (r * wkv). */
    rwkvc_sigmoid_batch(rwkvc_expf_get(c->model->isa), b->r, b->r, T * D); /* r is not read again */
    for (size_t i = 0; i < T * D; i++) {
        b->y[i] *= b->r[i];
    }
    rwkvc_matmul(c, &ly->att_o, b->y, D, T, b->tmp, D);
    rwkvc_add(b->x, b->tmp, T * D);
}

static void v4_eval_chunk(rwkvc_ctx *c, const uint32_t *tokens, size_t T, float *state, float *logits,
                          int all_logits) {
    rwkvc_legacy_eval(c, tokens, T, state, logits, all_logits, 5 * (size_t)c->model->info.n_embd, v4_time_mix, 0);
}

const rwkvc_arch_ops rwkvc_ops_v4 = {"rwkv4", v4_load, rwkvc_legacy_scratch_floats, v4_state_init, v4_eval_chunk};
