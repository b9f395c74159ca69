/*
 * forward_legacy.c: the parts of the RWKV-4, 5.x and 6 forward passes that do not depend on the version (see
 * forward_legacy.h): chunk scratch, the block loop with the fp16 rescale, the channel mix, the head, and the
 * loader helpers shared by forward_v4.c, forward_v5.c and forward_v6.c.
 *
 * As for v7 (forward_v7.c), every projection of a chunk is one matrix-matrix product over its T tokens; only the
 * recurrences run token by token, and the head runs only for the tokens whose logits are wanted.
 */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "forward_legacy.h"
#include "status.h"

/* ---- Scratch ---- */

#define N_TD_BUFS 14

static size_t round16(size_t n) {
    return (n + 15) & ~(size_t)15;
}

size_t rwkvc_legacy_scratch_floats(const rwkvc_model *m, size_t T) {
    /* Each buffer is rounded up to 16 floats so every one starts 64-byte aligned. */
    return N_TD_BUFS * round16(T * m->info.n_embd) + round16(T * m->max_rank) + round16(T * m->info.n_ffn);
}

static void carve(const rwkvc_model *m, float *base, size_t T, rwkvc_legacy_bufs *b) {
    size_t td = round16(T * m->info.n_embd);
    float **td_bufs[N_TD_BUFS] = {&b->x, &b->a, &b->xk, &b->xv, &b->xr,  &b->xg, &b->xw,
                                  &b->r, &b->k, &b->v,  &b->g,  &b->dec, &b->y,  &b->tmp};
    float *p = base;
    for (int i = 0; i < N_TD_BUFS; i++) {
        *td_bufs[i] = p;
        p += td;
    }
    b->lora = p;
    p += round16(T * m->max_rank);
    b->ffn = p;
}

/* ---- Token shift and channel mix ---- */

void rwkvc_legacy_shift_mu(const float *a, const float *prev0, size_t T, size_t D, const float *mu, float *out) {
    for (size_t t = 0; t < T; t++) {
        const float *at = a + t * D;
        const float *pt = t == 0 ? prev0 : a + (t - 1) * D;
        float *o = out + t * D;
        for (size_t c = 0; c < D; c++) {
            o[c] = at[c] * mu[c] + pt[c] * (1.0f - mu[c]);
        }
    }
}

/* v6 token shift: out[t] = a[t] + (prev[t] - a[t]) * mu. */
static void shift_maa(const float *a, const float *prev0, size_t T, size_t D, const float *mu, float *out) {
    for (size_t t = 0; t < T; t++) {
        const float *at = a + t * D;
        const float *pt = t == 0 ? prev0 : a + (t - 1) * D;
        float *o = out + t * D;
        for (size_t c = 0; c < D; c++) {
            o[c] = at[c] + (pt[c] - at[c]) * mu[c];
        }
    }
}

/*
 * Channel mix (rwkv-architectures.md §1.2 C1-C3, §3.2): x += sigmoid(Wr xr) * (Wv relu(Wk xk)^2), for the last
 * n_out of the T tokens (fewer than T only in the last layer, see rwkvc_legacy_eval; 0 only brings ffn_prev up to
 * date). The token before the first output token is only normalised, as that token's shifted-in input.
 */
static void channel_mix(rwkvc_ctx *c, const rwkvc_layer *ly, size_t T, size_t n_out, float *ffn_prev, int v6_shift,
                        rwkvc_legacy_bufs *b) {
    const rwkvc_model *m = c->model;
    const size_t D = m->info.n_embd, F = m->info.n_ffn;
    const size_t skip = T - n_out, first = skip > 0 ? skip - 1 : 0;
    for (size_t t = first; t < T; t++) {
        rwkvc_layer_norm(b->x + t * D, b->a + t * D, ly->ln2_w, ly->ln2_b, D, m->ln_eps);
    }
    if (n_out == 0) {
        memcpy(ffn_prev, b->a + (T - 1) * D, D * sizeof(float));
        return;
    }
    const float *a = b->a + skip * D, *prev0 = skip > 0 ? a - D : ffn_prev;
    float *x = b->x + skip * D;
    if (v6_shift) {
        shift_maa(a, prev0, n_out, D, ly->ffn_mix_k, b->xk);
        shift_maa(a, prev0, n_out, D, ly->ffn_mix_r, b->xr);
    } else {
        rwkvc_legacy_shift_mu(a, prev0, n_out, D, ly->ffn_mix_k, b->xk);
        rwkvc_legacy_shift_mu(a, prev0, n_out, D, ly->ffn_mix_r, b->xr);
    }
    memcpy(ffn_prev, b->a + (T - 1) * D, D * sizeof(float));
    const rwkvc_mm_op ops[2] = {
        {&ly->ffn_r, b->xr, D, b->r, D},
        {&ly->ffn_k, b->xk, D, b->ffn, F},
    };
    rwkvc_matmul_multi(c, ops, 2, n_out);
    rwkvc_relu_sq(b->ffn, n_out * F);
    rwkvc_matmul(c, &ly->ffn_v, b->ffn, F, n_out, b->tmp, D);
    /* x += sigmoid(r) * out; r is not read again, so it takes the gate (e^x in batches: vexp.h). */
    rwkvc_sigmoid_batch(rwkvc_expf_get(c->model->isa), b->r, b->r, n_out * D);
    for (size_t i = 0; i < n_out * D; i++) {
        x[i] += b->r[i] * b->tmp[i];
    }
}

/* ---- The chunk driver ---- */

void rwkvc_legacy_eval(rwkvc_ctx *c, const uint32_t *tokens, size_t T, float *state, float *logits, int all_logits,
                       size_t layer_len, rwkvc_legacy_time_mix_fn time_mix, int v6_shift) {
    const rwkvc_model *m = c->model;
    const size_t D = m->info.n_embd, V = m->info.n_vocab;
    const uint32_t R = m->rescale_every;
    rwkvc_legacy_bufs b;
    carve(m, c->scratch, T, &b);

    /* Embedding rows, normalised by ln0 (not folded into the table, so any embedding type works). */
    for (size_t t = 0; t < T; t++) {
        rwkvc_embed_row(m, tokens[t], b.x + t * D);
        rwkvc_layer_norm(b.x + t * D, b.x + t * D, m->ln0_w, m->ln0_b, D, m->ln_eps);
    }
    /* The last layer's channel mix runs only for the tokens whose logits are wanted (the last one, or none: an
       earlier chunk of a prompt leaves only its state), as in forward_v7.c: 8/13 of one of a v6 model's layers. */
    const size_t n_ffn = all_logits ? T : logits ? 1 : 0;
    for (uint32_t l = 0; l < m->info.n_layer; l++) {
        const rwkvc_layer *ly = &m->layers[l];
        float *st = state + (size_t)l * layer_len;
        for (size_t t = 0; t < T; t++) {
            rwkvc_layer_norm(b.x + t * D, b.a + t * D, ly->ln1_w, ly->ln1_b, D, m->ln_eps);
        }
        time_mix(c, ly, T, st, &b);
        memcpy(st, b.a + (T - 1) * D, D * sizeof(float));
        channel_mix(c, ly, T, l + 1 == m->info.n_layer ? n_ffn : T, st + layer_len - D, v6_shift, &b);
        /* fp16 rescale (rwkv-architectures.md §7.3): this file's output/value matrices were pre-divided. */
        if (R > 0 && (l + 1) % R == 0) {
            for (size_t i = 0; i < T * D; i++) {
                b.x[i] *= 0.5f;
            }
        }
    }
    if (!logits) {
        return;
    }
    size_t t0 = all_logits ? 0 : T - 1;
    size_t n = T - t0;
    for (size_t t = t0; t < T; t++) {
        rwkvc_layer_norm(b.x + t * D, b.a + (t - t0) * D, m->lnout_w, m->lnout_b, D, m->ln_eps);
    }
    rwkvc_matmul(c, &m->head, b.a, D, n, logits, V);
}

/* ---- Loading ---- */

rwkvc_status rwkvc_legacy_meta_u32(const rwkvc_model *m, const char *arch, const char *suffix, uint32_t dflt,
                                   uint32_t *out) {
    char key[128];
    snprintf(key, sizeof(key), "%s.%s", arch, suffix);
    const rwkvc_gguf_kv *kv = rwkvc_gguf_find_kv(m->gguf, key);
    int64_t v;
    if (!kv) {
        *out = dflt;
        return RWKVC_OK;
    }
    if (kv->type == RWKVC_META_ARRAY || rwkvc_gguf_kv_int(kv, 0, &v) != RWKVC_OK || v < 0 || v > 0x7FFFFFFF) {
        return rwkvc_fail(RWKVC_ERR_FORMAT, "metadata key %s: expected a non-negative integer", key);
    }
    *out = (uint32_t)v;
    return RWKVC_OK;
}

rwkvc_status rwkvc_legacy_check_version(const rwkvc_model *m, const char *arch, const char *want) {
    char key[128];
    snprintf(key, sizeof(key), "%s.architecture_version", arch);
    const rwkvc_gguf_kv *kv = rwkvc_gguf_find_kv(m->gguf, key);
    const char *s;
    size_t len;
    if (!kv) {
        return RWKVC_OK;
    }
    if (kv->type != RWKVC_META_STRING || rwkvc_gguf_kv_string(kv, 0, &s, &len) != RWKVC_OK) {
        return rwkvc_fail(RWKVC_ERR_FORMAT, "metadata key %s: expected a string", key);
    }
    if (len != strlen(want) || memcmp(s, want, len) != 0) {
        return rwkvc_fail(RWKVC_ERR_FORMAT, "metadata %s is '%.*s' but the tensors are those of RWKV %s", key,
                          (int)(len > 32 ? 32 : len), s, want);
    }
    return RWKVC_OK;
}

rwkvc_status rwkvc_legacy_load_channels(rwkvc_model *m, const char *name, float (*fn)(float), const float **out,
                                        int *per_head) {
    const uint64_t D = m->info.n_embd, N = m->info.head_size, H = m->info.n_head;
    const uint64_t vd[1] = {D};
    const uint64_t vnh[2] = {N, H};
    const uint64_t vh[1] = {H};
    const float *raw;
    rwkvc_status st;
    /* v4 has no heads: only [D]. v5/v6: [N, H] (or flat [D]) per channel, or [H] per head. */
    if (H == 0) {
        st = rwkvc_load_vector(m, name, vd, 1, NULL, 0, &raw);
    } else if ((st = rwkvc_load_vector(m, name, vnh, 2, vd, 1, &raw)) != RWKVC_OK) {
        st = rwkvc_load_vector(m, name, vh, 1, NULL, 0, &raw);
        if (st != RWKVC_OK) {
            char want[64];
            snprintf(want, sizeof(want), "[%llu], [%llu, %llu] or [%llu]", (unsigned long long)D,
                     (unsigned long long)N, (unsigned long long)H, (unsigned long long)H);
            const rwkvc_gguf_tensor *t = rwkvc_gguf_find_tensor(m->gguf, name);
            if (!t) {
                return st;
            }
            return rwkvc_fail(RWKVC_ERR_FORMAT, "tensor %s: expected %s, found [%llu, %llu, %llu, %llu]", name, want,
                              (unsigned long long)t->ne[0], (unsigned long long)t->ne[1],
                              (unsigned long long)t->ne[2], (unsigned long long)t->ne[3]);
        }
        if (H != D) {
            if (per_head) {
                *per_head = 1;
            }
            float *v = rwkvc_model_alloc_floats(m, D);
            if (!v) {
                return rwkvc_fail(RWKVC_ERR_NOMEM, "out of memory loading %s", name);
            }
            for (uint64_t c = 0; c < D; c++) {
                v[c] = fn ? fn(raw[c / N]) : raw[c / N];
            }
            *out = v;
            return RWKVC_OK;
        }
    }
    if (st != RWKVC_OK) {
        return st;
    }
    if (per_head) {
        *per_head = 0;
    }
    if (fn) {
        /* The vector is the model's own fp32 copy: transform it in place. */
        float *v = (float *)raw;
        for (uint64_t c = 0; c < D; c++) {
            v[c] = fn(v[c]);
        }
    }
    *out = raw;
    return RWKVC_OK;
}

rwkvc_status rwkvc_legacy_load_att(rwkvc_model *m, uint32_t l, int with_gate) {
    const size_t D = m->info.n_embd;
    rwkvc_layer *ly = &m->layers[l];
    struct {
        const char *suffix;
        rwkvc_weight *w;
    } mats[5] = {
        {"time_mix_receptance.weight", &ly->att_r}, {"time_mix_key.weight", &ly->att_k},
        {"time_mix_value.weight", &ly->att_v},      {"time_mix_output.weight", &ly->att_o},
        {"time_mix_gate.weight", &ly->gate},
    };
    char name[96];
    for (int i = 0; i < (with_gate ? 5 : 4); i++) {
        snprintf(name, sizeof(name), "blk.%u.%s", l, mats[i].suffix);
        rwkvc_status st = rwkvc_load_matrix(m, name, D, D, mats[i].w);
        if (st != RWKVC_OK) {
            return st;
        }
    }
    return RWKVC_OK;
}

rwkvc_status rwkvc_legacy_load_ffn(rwkvc_model *m, uint32_t l) {
    const uint64_t D = m->info.n_embd;
    const uint64_t vd[1] = {D};
    rwkvc_layer *ly = &m->layers[l];
    char n[96];
    rwkvc_status st;
#define NAME(suffix) (snprintf(n, sizeof(n), "blk.%u." suffix, l), n)
    if ((st = rwkvc_load_vector(m, NAME("channel_mix_lerp_k.weight"), vd, 1, NULL, 0, &ly->ffn_mix_k)) ||
        (st = rwkvc_load_vector(m, NAME("channel_mix_lerp_r.weight"), vd, 1, NULL, 0, &ly->ffn_mix_r))) {
        return st;
    }
    /* F comes from block 0's key matrix; every block must agree. */
    if (l == 0) {
        if ((st = rwkvc_load_matrix_rows(m, NAME("channel_mix_key.weight"), D, &ly->ffn_k))) {
            return st;
        }
        m->info.n_ffn = (uint32_t)ly->ffn_k.rows;
    } else if ((st = rwkvc_load_matrix(m, NAME("channel_mix_key.weight"), m->info.n_ffn, D, &ly->ffn_k))) {
        return st;
    }
    if ((st = rwkvc_load_matrix(m, NAME("channel_mix_receptance.weight"), D, D, &ly->ffn_r)) ||
        (st = rwkvc_load_matrix(m, NAME("channel_mix_value.weight"), D, m->info.n_ffn, &ly->ffn_v))) {
        return st;
    }
#undef NAME
    return RWKVC_OK;
}

rwkvc_status rwkvc_legacy_load_rescale(rwkvc_model *m, const char *arch) {
    return rwkvc_legacy_meta_u32(m, arch, "rescale_every_n_layers", 0, &m->rescale_every);
}
