/*
 * model.c: loading a model from GGUF: architecture binding, hyperparameters, and validation of every
 * tensor's presence, shape and type before anything runs.
 *
 * Names, shapes (ggml ne order, innermost first) and transforms follow llama.cpp's RWKV GGUF conventions
 * (shared docs file-formats.md §2). Metadata gives D, L, N; each is checked against the tensor shapes, and the
 * vocabulary, FFN width and LoRA ranks are read from the shapes.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cpu.h"
#include "forward.h"
#include "forward_legacy.h"
#include "model.h"
#include "private_weights.h"
#include "status.h"

const rwkvc_gguf *rwkvc_model_gguf(const rwkvc_model *m) {
    return m ? m->gguf : NULL;
}

static const char *type_name(uint32_t type, char *buf, size_t n) {
    const rwkvc_type_traits *t = rwkvc_type_traits_get(type);
    if (t) {
        return t->name;
    }
    snprintf(buf, n, "type %u", type);
    return buf;
}

/* Formats "[a, b, c]" from n dims. */
static void fmt_shape(char *buf, size_t n, const uint64_t *ne, int n_dims) {
    size_t pos = 0;
    pos += (size_t)snprintf(buf + pos, n - pos, "[");
    for (int i = 0; i < n_dims && pos < n; i++) {
        pos += (size_t)snprintf(buf + pos, n - pos, i ? ", %llu" : "%llu", (unsigned long long)ne[i]);
    }
    if (pos < n) {
        snprintf(buf + pos, n - pos, "]");
    }
}

static const rwkvc_gguf_tensor *find(const rwkvc_model *m, const char *name) {
    return rwkvc_gguf_find_tensor(m->gguf, name);
}

/* Keeps the dims != 1 (squeezed shape); returns their count. */
static int squeeze(const uint64_t *ne, int n, uint64_t *out) {
    int k = 0;
    for (int i = 0; i < n; i++) {
        if (ne[i] != 1) {
            out[k++] = ne[i];
        }
    }
    return k;
}

static int same_squeezed(const uint64_t *a, int na, const uint64_t *b, int nb) {
    uint64_t sa[4], sb[4];
    int ka = squeeze(a, na, sa);
    int kb = squeeze(b, nb, sb);
    if (ka != kb) {
        return 0;
    }
    for (int i = 0; i < ka; i++) {
        if (sa[i] != sb[i]) {
            return 0;
        }
    }
    return 1;
}

static rwkvc_status missing(const char *name) {
    return rwkvc_fail(RWKVC_ERR_FORMAT, "missing tensor %s", name);
}

static rwkvc_status bad_shape(const rwkvc_gguf_tensor *t, const char *name, const uint64_t *ne, int n_ne) {
    char want[96], got[96];
    fmt_shape(want, sizeof(want), ne, n_ne);
    fmt_shape(got, sizeof(got), t->ne, (int)t->n_dims);
    return rwkvc_fail(RWKVC_ERR_FORMAT, "tensor %s: expected %s, found %s", name, want, got);
}

static rwkvc_status bind_matrix(rwkvc_model *m, const rwkvc_gguf_tensor *t, const char *name, size_t rows,
                                size_t cols, rwkvc_weight *out) {
    char buf[32];
    const rwkvc_type_traits *tr = rwkvc_type_traits_get(t->type);
    const rwkvc_matmul_kernels *k = rwkvc_matmul_get(t->type, m->isa);
    if (!tr || !k) {
        return rwkvc_fail(RWKVC_ERR_FORMAT, "tensor %s: type %s has no kernels", name,
                          type_name(t->type, buf, sizeof(buf)));
    }
    if (cols % tr->block_size != 0) {
        return rwkvc_fail(RWKVC_ERR_FORMAT, "tensor %s: row length %zu is not a multiple of the %s block size %zu",
                          name, cols, tr->name, tr->block_size);
    }
    out->data = t->data;
    out->type = t->type;
    out->rows = rows;
    out->cols = cols;
    out->row_bytes = cols / tr->block_size * tr->block_bytes;
    out->kern = k;
    size_t ab = k->act_bytes ? k->act_bytes(cols) : 0;
    size_t sb = k->seq_act_bytes ? k->seq_act_bytes(cols) : 0;
    ab = sb > ab ? sb : ab;
    if (ab > m->max_act_bytes) {
        m->max_act_bytes = ab;
    }
    return RWKVC_OK;
}

rwkvc_status rwkvc_load_matrix(rwkvc_model *m, const char *name, size_t rows, size_t cols, rwkvc_weight *out) {
    const rwkvc_gguf_tensor *t = find(m, name);
    uint64_t ne[2] = {cols, rows};
    if (!t) {
        return missing(name);
    }
    if (t->ne[0] != cols || t->ne[1] != rows || t->ne[2] != 1 || t->ne[3] != 1) {
        return bad_shape(t, name, ne, 2);
    }
    return bind_matrix(m, t, name, rows, cols, out);
}

rwkvc_status rwkvc_load_matrix_rows(rwkvc_model *m, const char *name, size_t cols, rwkvc_weight *out) {
    const rwkvc_gguf_tensor *t = find(m, name);
    if (!t) {
        return missing(name);
    }
    if (t->ne[0] != cols || t->ne[2] != 1 || t->ne[3] != 1) {
        char got[96];
        fmt_shape(got, sizeof(got), t->ne, (int)t->n_dims);
        return rwkvc_fail(RWKVC_ERR_FORMAT, "tensor %s: expected [%zu, rank], found %s", name, cols, got);
    }
    return bind_matrix(m, t, name, (size_t)t->ne[1], cols, out);
}

static float *own_floats(rwkvc_model *m, size_t n) {
    if (m->n_owned == m->cap_owned) {
        size_t cap = m->cap_owned ? 2 * m->cap_owned : 64;
        float **p = realloc(m->owned, cap * sizeof(*p));
        if (!p) {
            return NULL;
        }
        m->owned = p;
        m->cap_owned = cap;
    }
    float *v = malloc(n * sizeof(float));
    if (v) {
        m->owned[m->n_owned++] = v;
    }
    return v;
}

float *rwkvc_model_alloc_floats(rwkvc_model *m, size_t n) {
    return own_floats(m, n);
}

rwkvc_status rwkvc_load_vector(rwkvc_model *m, const char *name, const uint64_t *ne, int n_ne, const uint64_t *alt_ne,
                               int n_alt, const float **out) {
    const rwkvc_gguf_tensor *t = find(m, name);
    if (!t) {
        return missing(name);
    }
    if (!same_squeezed(t->ne, (int)t->n_dims, ne, n_ne) &&
        !(alt_ne && same_squeezed(t->ne, (int)t->n_dims, alt_ne, n_alt))) {
        return bad_shape(t, name, ne, n_ne);
    }
    size_t n = 1;
    for (int i = 0; i < 4; i++) {
        n *= (size_t)t->ne[i];
    }
    char buf[32];
    const rwkvc_type_traits *tr = rwkvc_type_traits_get(t->type);
    if (!tr || !tr->dequantize_row || n % tr->block_size != 0) {
        return rwkvc_fail(RWKVC_ERR_FORMAT, "tensor %s: type %s cannot be read as a vector", name,
                          type_name(t->type, buf, sizeof(buf)));
    }
    float *v = own_floats(m, n);
    if (!v) {
        return rwkvc_fail(RWKVC_ERR_NOMEM, "out of memory loading %s", name);
    }
    tr->dequantize_row(t->data, v, n);
    *out = v;
    return RWKVC_OK;
}

/* ---- Weight-type statistics for info.weight_type ---- */

/* Type holding the most matrix bytes, over every bound weight. */
static uint32_t majority_type(const rwkvc_model *m) {
    uint64_t bytes[64] = {0};
    for (uint32_t l = 0; l < m->info.n_layer; l++) {
        const rwkvc_layer *ly = &m->layers[l];
        const rwkvc_weight *all[] = {&ly->w1, &ly->w2, &ly->a1, &ly->a2, &ly->v1, &ly->v2, &ly->g1, &ly->g2,
                                     &ly->att_r, &ly->att_k, &ly->att_v, &ly->att_o, &ly->ffn_k, &ly->ffn_v,
                                     &ly->gate, &ly->ffn_r};
        for (size_t i = 0; i < sizeof(all) / sizeof(all[0]); i++) {
            if (all[i]->data && all[i]->type < 64) {
                bytes[all[i]->type] += (uint64_t)all[i]->rows * all[i]->row_bytes;
            }
        }
    }
    const rwkvc_weight *g[] = {&m->emb, &m->head};
    for (int i = 0; i < 2; i++) {
        if (g[i]->data && g[i]->type < 64) {
            bytes[g[i]->type] += (uint64_t)g[i]->rows * g[i]->row_bytes;
        }
    }
    uint32_t best = 0;
    for (uint32_t t = 1; t < 64; t++) {
        if (bytes[t] > bytes[best]) {
            best = t;
        }
    }
    return best;
}

/* ---- Metadata ---- */

static rwkvc_status meta_u32(const rwkvc_model *m, const char *key, int required, uint32_t dflt, uint32_t *out) {
    const rwkvc_gguf_kv *kv = rwkvc_gguf_find_kv(m->gguf, key);
    if (!kv) {
        if (required) {
            return rwkvc_fail(RWKVC_ERR_FORMAT, "missing metadata key %s", key);
        }
        *out = dflt;
        return RWKVC_OK;
    }
    int64_t v;
    if (kv->type == RWKVC_META_ARRAY || rwkvc_gguf_kv_int(kv, 0, &v) != RWKVC_OK || v < 0 || v > 0x7FFFFFFF) {
        return rwkvc_fail(RWKVC_ERR_FORMAT, "metadata key %s: expected a non-negative integer", key);
    }
    *out = (uint32_t)v;
    return RWKVC_OK;
}

/* ---- Architecture binding ---- */

static rwkvc_status bind_arch(rwkvc_model *m, char *arch, size_t arch_cap) {
    const rwkvc_gguf_kv *kv = rwkvc_gguf_find_kv(m->gguf, "general.architecture");
    const char *s;
    size_t len;
    if (!kv) {
        return rwkvc_fail(RWKVC_ERR_FORMAT, "missing metadata key general.architecture");
    }
    if (kv->type != RWKVC_META_STRING || rwkvc_gguf_kv_string(kv, 0, &s, &len) != RWKVC_OK) {
        return rwkvc_fail(RWKVC_ERR_FORMAT, "metadata key general.architecture: expected a string");
    }
    if (len >= arch_cap) {
        len = arch_cap - 1;
    }
    memcpy(arch, s, len);
    arch[len] = '\0';
    /* A NUL inside the value would make it compare shorter than it is: refuse it as unknown. */
    if (strlen(arch) != len) {
        return rwkvc_fail(RWKVC_ERR_VERSION, "unsupported architecture (name contains a NUL byte)");
    }
    if (strcmp(arch, "rwkv7") == 0) {
        m->ops = &rwkvc_ops_v7;
        return RWKVC_OK;
    }
    /* v4–v6: forward_v4.c, forward_v5.c (5.0/5.1/5.2), forward_v6.c. */
    if (strcmp(arch, "rwkv6") == 0) {
        m->ops = &rwkvc_ops_v6;
        return RWKVC_OK;
    }
    if (strcmp(arch, "rwkv5") == 0) {
        m->ops = &rwkvc_ops_v5;
        return RWKVC_OK;
    }
    if (strcmp(arch, "rwkv4") == 0) {
        m->ops = &rwkvc_ops_v4;
        return RWKVC_OK;
    }
    return rwkvc_fail(RWKVC_ERR_VERSION, "unsupported architecture '%s'", arch);
}

/* Tensors every version has: embedding, ln0, output norm and head, each block's two LayerNorms. */
static rwkvc_status load_common(rwkvc_model *m) {
    const uint32_t D = m->info.n_embd, L = m->info.n_layer;
    const uint64_t vd[1] = {D};
    char name[96];
    rwkvc_status st;

    const rwkvc_gguf_tensor *emb = find(m, "token_embd.weight");
    if (!emb) {
        return missing("token_embd.weight");
    }
    if (emb->n_dims != 2 || emb->ne[0] != D || emb->ne[1] < 1) {
        uint64_t ne[2] = {D, emb->ne[1]};
        return bad_shape(emb, "token_embd.weight", ne, 2);
    }
    if (emb->ne[1] > 0x7FFFFFFF) {
        return rwkvc_fail(RWKVC_ERR_FORMAT, "tensor token_embd.weight: vocabulary too large");
    }
    m->info.n_vocab = (uint32_t)emb->ne[1];
    const uint32_t V = m->info.n_vocab;
    char buf[32];
    m->emb_traits = rwkvc_type_traits_get(emb->type);
    if (!m->emb_traits || !m->emb_traits->dequantize_row || D % m->emb_traits->block_size != 0) {
        return rwkvc_fail(RWKVC_ERR_FORMAT, "tensor token_embd.weight: type %s cannot be dequantized",
                          type_name(emb->type, buf, sizeof(buf)));
    }
    m->emb.data = emb->data;
    m->emb.type = emb->type;
    m->emb.rows = V;
    m->emb.cols = D;
    m->emb.row_bytes = D / m->emb_traits->block_size * m->emb_traits->block_bytes;
    m->emb.kern = NULL;

    if ((st = rwkvc_load_vector(m, "token_embd_norm.weight", vd, 1, NULL, 0, &m->ln0_w)) ||
        (st = rwkvc_load_vector(m, "token_embd_norm.bias", vd, 1, NULL, 0, &m->ln0_b)) ||
        (st = rwkvc_load_vector(m, "output_norm.weight", vd, 1, NULL, 0, &m->lnout_w)) ||
        (st = rwkvc_load_vector(m, "output_norm.bias", vd, 1, NULL, 0, &m->lnout_b)) ||
        (st = rwkvc_load_matrix(m, "output.weight", V, D, &m->head))) {
        return st;
    }
    for (uint32_t l = 0; l < L; l++) {
        rwkvc_layer *ly = &m->layers[l];
        const float **dst[4] = {&ly->ln1_w, &ly->ln1_b, &ly->ln2_w, &ly->ln2_b};
        const char *fmt[4] = {"blk.%u.attn_norm.weight", "blk.%u.attn_norm.bias", "blk.%u.attn_norm_2.weight",
                              "blk.%u.attn_norm_2.bias"};
        for (int i = 0; i < 4; i++) {
            snprintf(name, sizeof(name), fmt[i], l);
            if ((st = rwkvc_load_vector(m, name, vd, 1, NULL, 0, dst[i]))) {
                return st;
            }
        }
    }
    /* A block beyond block_count means the metadata and the tensors disagree. */
    snprintf(name, sizeof(name), "blk.%u.attn_norm.weight", L);
    if (find(m, name)) {
        return rwkvc_fail(RWKVC_ERR_FORMAT, "metadata says %u blocks but tensor %s exists", L, name);
    }
    return RWKVC_OK;
}

void rwkvc_model_free(rwkvc_model *m) {
    if (!m) {
        return;
    }
    rwkvc_private_weights_free(m->private_weights); /* Before the mapping it moves goes away. */
    for (size_t i = 0; i < m->n_owned; i++) {
        free(m->owned[i]);
    }
    free(m->owned);
    free(m->layers);
    rwkvc_gguf_close(m->gguf);
    free(m);
}

rwkvc_status rwkvc_model_from_gguf(rwkvc_gguf *g, uint32_t n_threads, rwkvc_model **out) {
    rwkvc_model *m = calloc(1, sizeof(*m));
    if (!m) {
        rwkvc_gguf_close(g);
        return rwkvc_fail(RWKVC_ERR_NOMEM, "out of memory");
    }
    m->gguf = g;
    m->isa = rwkvc_isa_select();
    m->n_threads = n_threads;
    if (m->n_threads == 0) {
        long n = sysconf(_SC_NPROCESSORS_ONLN);
        m->n_threads = n > 0 ? (uint32_t)(n > 256 ? 256 : n) : 1;
    }

    char arch[64], key[128];
    rwkvc_status st = bind_arch(m, arch, sizeof(arch));
    uint32_t D = 0, L = 0, N = 0;
    if (st == RWKVC_OK) {
        snprintf(key, sizeof(key), "%s.embedding_length", arch);
        st = meta_u32(m, key, 1, 0, &D);
    }
    if (st == RWKVC_OK) {
        snprintf(key, sizeof(key), "%s.block_count", arch);
        st = meta_u32(m, key, 1, 0, &L);
    }
    if (st == RWKVC_OK) {
        snprintf(key, sizeof(key), "%s.wkv.head_size", arch);
        /* RWKV-4 has no heads: head_size is absent (or 0) and stays 0. */
        st = meta_u32(m, key, m->ops != &rwkvc_ops_v4, 0, &N);
    }
    if (st == RWKVC_OK && (D == 0 || L == 0 || L > 4096 ||
                           (m->ops == &rwkvc_ops_v4 ? N != 0 : (N == 0 || D % N != 0)))) {
        st = rwkvc_fail(RWKVC_ERR_FORMAT, "bad hyperparameters: embedding_length %u, block_count %u, head_size %u",
                        D, L, N);
    }
    if (st == RWKVC_OK) {
        double eps = 1e-5;
        snprintf(key, sizeof(key), "%s.attention.layer_norm_epsilon", arch);
        const rwkvc_gguf_kv *kv = rwkvc_gguf_find_kv(g, key);
        if (kv && (rwkvc_gguf_kv_float(kv, 0, &eps) != RWKVC_OK || !(eps > 0.0 && eps < 1.0))) {
            st = rwkvc_fail(RWKVC_ERR_FORMAT, "metadata key %s: expected a small positive float", key);
        }
        m->ln_eps = (float)eps;
    }
    if (st == RWKVC_OK) {
        m->info.n_embd = D;
        m->info.n_layer = L;
        m->info.head_size = N;
        m->info.n_head = N ? D / N : 0;
        m->layers = calloc(L, sizeof(rwkvc_layer));
        if (!m->layers) {
            st = rwkvc_fail(RWKVC_ERR_NOMEM, "out of memory");
        }
    }
    if (st == RWKVC_OK) {
        st = load_common(m);
    }
    if (st == RWKVC_OK) {
        uint32_t F_meta = 0;
        snprintf(key, sizeof(key), "%s.feed_forward_length", arch);
        st = meta_u32(m, key, 0, 0, &F_meta);
        if (st == RWKVC_OK) {
            /* The version loader reads F from the tensors; the metadata value, if any, must agree. */
            st = m->ops->load(m);
        }
        if (st == RWKVC_OK && F_meta != 0 && F_meta != m->info.n_ffn) {
            st = rwkvc_fail(RWKVC_ERR_FORMAT, "metadata %s is %u but tensor blk.0.channel_mix_key.weight has %u rows",
                            key, F_meta, m->info.n_ffn);
        }
    }
    if (st != RWKVC_OK) {
        rwkvc_model_free(m);
        return st;
    }
    m->info.weight_type = majority_type(m);
    m->info.n_meta = g->n_kv;
    m->info.n_tensors = g->n_tensors;
    m->info.file_size = g->size;
    uint64_t n_params = 0;
    for (uint64_t i = 0; i < g->n_tensors; i++) {
        const rwkvc_gguf_tensor *t = &g->tensors[i];
        n_params += t->ne[0] * t->ne[1] * t->ne[2] * t->ne[3];
    }
    m->info.n_params = n_params;
    *out = m;
    return RWKVC_OK;
}

/* Moving in the background pays where decode streams many weights and the memory is there to spare. */
#define AUTO_MIN_BYTES ((uint64_t)16 << 20)

/* Reads a "Key:   N kB" line of /proc/meminfo in bytes; 0 if absent. */
static uint64_t meminfo_bytes(const char *key) {
    FILE *f = fopen("/proc/meminfo", "r");
    if (!f) {
        return 0;
    }
    char line[256];
    uint64_t value = 0;
    size_t n = strlen(key);
    while (fgets(line, sizeof line, f)) {
        if (strncmp(line, key, n) == 0 && line[n] == ':') {
            value = strtoull(line + n + 1, NULL, 10) * 1024;
            break;
        }
    }
    fclose(f);
    return value;
}

/* Whether RWKVC_WEIGHTS_AUTO moves `bytes` of weights: Linux with transparent huge pages not switched off, and
   the copy small next to the memory available (the page cache of the file itself is part of that). */
static bool auto_moves(uint64_t bytes) {
#if defined(__linux__)
    if (bytes < AUTO_MIN_BYTES) {
        return false;
    }
    FILE *f = fopen("/sys/kernel/mm/transparent_hugepage/enabled", "r");
    if (f) {
        char line[128] = {0};
        bool never = fgets(line, sizeof line, f) && strstr(line, "[never]");
        fclose(f);
        if (never) {
            return false;
        }
    }
    uint64_t avail = meminfo_bytes("MemAvailable");
    return avail > 0 && bytes <= avail / 2;
#else
    (void)bytes;
    return false;
#endif
}

/* Starts the move of m's weights that mode asks for (the embedding's huge pages stay mapped). */
static rwkvc_status start_private_weights(rwkvc_model *m, uint32_t mode) {
    if (mode == RWKVC_WEIGHTS_MMAP) {
        return RWKVC_OK;
    }
    const uint8_t *emb = m->emb.data;
    size_t skip_begin = (size_t)(emb - m->gguf->base);
    size_t skip_end = skip_begin + m->emb.rows * m->emb.row_bytes;
    size_t begin, end;
    uint64_t bytes = rwkvc_private_weights_plan(m->gguf, skip_begin, skip_end, &begin, &end);
    if (mode == RWKVC_WEIGHTS_AUTO && !auto_moves(bytes)) {
        return RWKVC_OK;
    }
    return rwkvc_private_weights_start(m->gguf, skip_begin, skip_end, mode == RWKVC_WEIGHTS_AUTO,
                                       &m->private_weights);
}

RWKVC_API rwkvc_status rwkvc_model_load_ex(const char *path, uint32_t n_threads, uint32_t weights_mode,
                                           rwkvc_model **out) {
    rwkvc_clear_error();
    if (!path || !out) {
        return rwkvc_fail(RWKVC_ERR_ARG, "rwkvc_model_load: NULL argument");
    }
    if (weights_mode > RWKVC_WEIGHTS_COPY) {
        return rwkvc_fail(RWKVC_ERR_ARG, "rwkvc_model_load_ex: weights_mode %u is not an rwkvc_weights_mode",
                          weights_mode);
    }
    rwkvc_gguf *g = NULL;
    rwkvc_status st = rwkvc_gguf_open(path, &g);
    if (st != RWKVC_OK) {
        return st;
    }
    rwkvc_model *m = NULL;
    st = rwkvc_model_from_gguf(g, n_threads, &m);
    if (st != RWKVC_OK) {
        return st;
    }
    st = start_private_weights(m, weights_mode);
    if (st != RWKVC_OK) {
        rwkvc_model_free(m);
        return st;
    }
    *out = m;
    return RWKVC_OK;
}

RWKVC_API rwkvc_status rwkvc_model_load(const char *path, uint32_t n_threads, rwkvc_model **out) {
    return rwkvc_model_load_ex(path, n_threads, RWKVC_WEIGHTS_AUTO, out);
}

RWKVC_API rwkvc_status rwkvc_model_weights_moved(rwkvc_model *m, uint32_t wait, uint64_t *moved, uint64_t *total) {
    rwkvc_clear_error();
    if (!m || !moved || !total) {
        return rwkvc_fail(RWKVC_ERR_ARG, "rwkvc_model_weights_moved: NULL argument");
    }
    *moved = 0;
    *total = 0;
    if (m->private_weights) {
        rwkvc_private_weights_progress(m->private_weights, wait != 0, moved, total);
    }
    return RWKVC_OK;
}

RWKVC_API rwkvc_status rwkvc_model_info(const rwkvc_model *m, rwkvc_info *out) {
    rwkvc_clear_error();
    if (!m || !out) {
        return rwkvc_fail(RWKVC_ERR_ARG, "rwkvc_model_info: NULL argument");
    }
    *out = m->info;
    return RWKVC_OK;
}
