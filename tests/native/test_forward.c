/*
 * test_forward.c: the RWKV-7 forward pass and the public evaluation API on small random models built in memory.
 *
 * A minimal GGUF writer (below) makes rwkv7 files with llama.cpp's names and shapes (odd sizes on purpose: 3
 * heads of 32, FFN 160, vocabulary 97, different LoRA ranks). Checked:
 * - sequence mode == token by token, and chunks 1+7+16+40 == one call (logits and final state, 1e-5 relative;
 *   1e-4 where f16/bf16 matrices run the split-bf16 AMX GEMM in sequence mode, kernels.h matmat_seq);
 * - rwkvc_eval's logits == the last row of rwkvc_eval_all (1e-6 relative, 1e-4 with that GEMM), and
 *   logits == NULL still advances the state;
 * - two contexts on one model in two threads == the same work one after the other (bit for bit);
 * - bad arguments give the right status and message and leave the state untouched;
 * - scalar (RWKVC_FORCE_SCALAR=1) and SIMD kernels agree, for f32, f16 and bf16 weights;
 * - the loader's messages for a missing tensor, a wrong shape, an unsupported architecture and a type without
 *   kernels.
 */
#include <math.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cpu.h"
#include "forward.h"
#include "gguf.h"
#include "model.h"
#include "rwkvc.h"
#include "status.h"

static int g_failures = 0;

#define CHECK(cond, ...)                                                                                           \
    do {                                                                                                           \
        if (!(cond)) {                                                                                             \
            fprintf(stderr, "FAIL %s:%d: ", __FILE__, __LINE__);                                                   \
            fprintf(stderr, __VA_ARGS__);                                                                          \
            fprintf(stderr, "\n");                                                                                 \
            g_failures++;                                                                                          \
        }                                                                                                          \
    } while (0)

/* ---- A minimal GGUF v3 writer ---- */

#define MAX_T 256
#define MAX_KV 16

typedef struct {
    char name[96];
    uint32_t n_dims;
    uint64_t ne[4];
    uint32_t type;
    void *data;
    size_t nbytes;
} wt;

typedef struct {
    char key[96];
    uint32_t type; /* 4 u32, 6 f32, 8 string */
    uint32_t u;
    float f;
    char s[64];
} wkv;

typedef struct {
    wt t[MAX_T];
    int n_t;
    wkv kv[MAX_KV];
    int n_kv;
} gguf_builder;

typedef struct {
    uint8_t *p;
    size_t n, cap;
} buf;

static void put(buf *b, const void *d, size_t n) {
    if (b->n + n > b->cap) {
        b->cap = (b->n + n) * 2 + 1024;
        b->p = realloc(b->p, b->cap);
    }
    memcpy(b->p + b->n, d, n);
    b->n += n;
}
static void put_u32(buf *b, uint32_t v) { put(b, &v, 4); }
static void put_u64(buf *b, uint64_t v) { put(b, &v, 8); }
static void put_str(buf *b, const char *s) {
    put_u64(b, strlen(s));
    put(b, s, strlen(s));
}
static void pad(buf *b, size_t align) {
    static const uint8_t z[64] = {0};
    while (b->n % align) {
        put(b, z, 1);
    }
}

static void add_u32(gguf_builder *g, const char *key, uint32_t v) {
    wkv *k = &g->kv[g->n_kv++];
    snprintf(k->key, sizeof(k->key), "%s", key);
    k->type = 4;
    k->u = v;
}
static void add_f32(gguf_builder *g, const char *key, float v) {
    wkv *k = &g->kv[g->n_kv++];
    snprintf(k->key, sizeof(k->key), "%s", key);
    k->type = 6;
    k->f = v;
}
static void add_str(gguf_builder *g, const char *key, const char *v) {
    wkv *k = &g->kv[g->n_kv++];
    snprintf(k->key, sizeof(k->key), "%s", key);
    k->type = 8;
    snprintf(k->s, sizeof(k->s), "%s", v);
}

static buf serialize(const gguf_builder *g) {
    buf b = {0};
    put_u32(&b, 0x46554747u);
    put_u32(&b, 3);
    put_u64(&b, (uint64_t)g->n_t);
    put_u64(&b, (uint64_t)g->n_kv);
    for (int i = 0; i < g->n_kv; i++) {
        put_str(&b, g->kv[i].key);
        put_u32(&b, g->kv[i].type);
        if (g->kv[i].type == 4) {
            put_u32(&b, g->kv[i].u);
        } else if (g->kv[i].type == 6) {
            put(&b, &g->kv[i].f, 4);
        } else {
            put_str(&b, g->kv[i].s);
        }
    }
    uint64_t off = 0;
    for (int i = 0; i < g->n_t; i++) {
        put_str(&b, g->t[i].name);
        put_u32(&b, g->t[i].n_dims);
        for (uint32_t d = 0; d < g->t[i].n_dims; d++) {
            put_u64(&b, g->t[i].ne[d]);
        }
        put_u32(&b, g->t[i].type);
        put_u64(&b, off);
        off += (g->t[i].nbytes + 31) / 32 * 32;
    }
    pad(&b, 32);
    for (int i = 0; i < g->n_t; i++) {
        put(&b, g->t[i].data, g->t[i].nbytes);
        pad(&b, 32);
    }
    return b;
}

/* ---- A random v7 model ---- */

typedef struct {
    uint32_t V, D, L, N, F, Rw, Ra, Rv, Rg;
    uint32_t mat_type;  /* type of the large matrices: 0 f32, 1 f16, 30 bf16 */
    uint32_t vec_type;  /* type of the 1-D vectors */
    uint64_t seed;
    int lora_own_type;  /* 1: the LoRA matrices are stored as lora_type, not mat_type */
    uint32_t lora_type;
} spec;

static uint64_t g_rng;
static float frand(void) {
    g_rng ^= g_rng << 13;
    g_rng ^= g_rng >> 7;
    g_rng ^= g_rng << 17;
    return (float)((g_rng >> 11) * (1.0 / 9007199254740992.0)) * 2.0f - 1.0f;
}

/* Adds a tensor of n_dims with ne, values base + scale * U(-1, 1), stored as `type`. */
static wt *add_tensor(gguf_builder *g, const char *name, uint32_t n_dims, const uint64_t *ne, uint32_t type,
                      float base, float scale) {
    wt *t = &g->t[g->n_t++];
    snprintf(t->name, sizeof(t->name), "%s", name);
    t->n_dims = n_dims;
    size_t n = 1;
    for (uint32_t d = 0; d < 4; d++) {
        t->ne[d] = d < n_dims ? ne[d] : 1;
        n *= t->ne[d];
    }
    t->type = type;
    float *f = malloc(n * sizeof(float));
    for (size_t i = 0; i < n; i++) {
        f[i] = base + scale * frand();
    }
    const rwkvc_type_traits *tr = rwkvc_type_traits_get(type);
    t->nbytes = n / tr->block_size * tr->block_bytes;
    t->data = malloc(t->nbytes);
    tr->quantize_row(f, t->data, n);
    free(f);
    return t;
}

static void vec(gguf_builder *g, const spec *s, const char *name, float base, float scale) {
    uint64_t ne[1] = {s->D};
    add_tensor(g, name, 1, ne, s->vec_type, base, scale);
}

static void mat(gguf_builder *g, const spec *s, const char *name, uint64_t cols, uint64_t rows) {
    uint64_t ne[2] = {cols, rows};
    add_tensor(g, name, 2, ne, s->mat_type, 0.0f, 1.7f / sqrtf((float)cols));
}

/* A LoRA matrix: mat_type, or the spec's own LoRA type (files keep them F16 where the big matrices are quantized). */
static void lora_mat(gguf_builder *g, const spec *s, const char *name, uint64_t cols, uint64_t rows) {
    uint64_t ne[2] = {cols, rows};
    add_tensor(g, name, 2, ne, s->lora_own_type ? s->lora_type : s->mat_type, 0.0f, 1.7f / sqrtf((float)cols));
}

static void build_v7(gguf_builder *g, const spec *s) {
    memset(g, 0, sizeof(*g));
    g_rng = s->seed;
    add_str(g, "general.architecture", "rwkv7");
    add_u32(g, "rwkv7.embedding_length", s->D);
    add_u32(g, "rwkv7.block_count", s->L);
    add_u32(g, "rwkv7.wkv.head_size", s->N);
    add_u32(g, "rwkv7.feed_forward_length", s->F);
    add_f32(g, "rwkv7.attention.layer_norm_epsilon", 1e-5f);
    uint64_t emb_ne[2] = {s->D, s->V};
    add_tensor(g, "token_embd.weight", 2, emb_ne, s->mat_type, 0.0f, 1.0f);
    vec(g, s, "token_embd_norm.weight", 1.0f, 0.2f);
    vec(g, s, "token_embd_norm.bias", 0.0f, 0.1f);
    char n[96];
    for (uint32_t l = 0; l < s->L; l++) {
#define NM(suffix) (snprintf(n, sizeof(n), "blk.%u." suffix, l), n)
        vec(g, s, NM("attn_norm.weight"), 1.0f, 0.2f);
        vec(g, s, NM("attn_norm.bias"), 0.0f, 0.1f);
        vec(g, s, NM("attn_norm_2.weight"), 1.0f, 0.2f);
        vec(g, s, NM("attn_norm_2.bias"), 0.0f, 0.1f);
        uint64_t fused[4] = {s->D, 1, 1, 6};
        add_tensor(g, NM("time_mix_lerp_fused.weight"), 4, fused, s->vec_type, 0.5f, 0.45f);
        vec(g, s, NM("time_mix_w0.weight"), 0.0f, 2.0f);
        vec(g, s, NM("time_mix_a0.weight"), 0.0f, 1.0f);
        if (l > 0) {
            vec(g, s, NM("time_mix_v0.weight"), 0.0f, 1.0f);
        }
        vec(g, s, NM("time_mix_k_k.weight"), 0.8f, 0.2f);
        vec(g, s, NM("time_mix_k_a.weight"), 0.8f, 0.2f);
        uint64_t rk[2] = {s->N, s->D / s->N};
        add_tensor(g, NM("time_mix_r_k.weight"), 2, rk, s->vec_type, 0.0f, 0.5f);
        vec(g, s, NM("time_mix_ln.weight"), 1.0f, 0.2f);
        vec(g, s, NM("time_mix_ln.bias"), 0.0f, 0.1f);
        mat(g, s, NM("time_mix_receptance.weight"), s->D, s->D);
        mat(g, s, NM("time_mix_key.weight"), s->D, s->D);
        mat(g, s, NM("time_mix_value.weight"), s->D, s->D);
        mat(g, s, NM("time_mix_output.weight"), s->D, s->D);
        lora_mat(g, s, NM("time_mix_w1.weight"), s->D, s->Rw);
        lora_mat(g, s, NM("time_mix_w2.weight"), s->Rw, s->D);
        lora_mat(g, s, NM("time_mix_a1.weight"), s->D, s->Ra);
        lora_mat(g, s, NM("time_mix_a2.weight"), s->Ra, s->D);
        if (l > 0) {
            lora_mat(g, s, NM("time_mix_v1.weight"), s->D, s->Rv);
            lora_mat(g, s, NM("time_mix_v2.weight"), s->Rv, s->D);
        }
        lora_mat(g, s, NM("time_mix_g1.weight"), s->D, s->Rg);
        lora_mat(g, s, NM("time_mix_g2.weight"), s->Rg, s->D);
        vec(g, s, NM("channel_mix_lerp_k.weight"), 0.5f, 0.45f);
        mat(g, s, NM("channel_mix_key.weight"), s->D, s->F);
        mat(g, s, NM("channel_mix_value.weight"), s->F, s->D);
#undef NM
    }
    vec(g, s, "output_norm.weight", 1.0f, 0.2f);
    vec(g, s, "output_norm.bias", 0.0f, 0.1f);
    mat(g, s, "output.weight", s->D, s->V);
}

static void free_builder(gguf_builder *g) {
    for (int i = 0; i < g->n_t; i++) {
        free(g->t[i].data);
    }
}

static wt *find_t(gguf_builder *g, const char *name) {
    for (int i = 0; i < g->n_t; i++) {
        if (strcmp(g->t[i].name, name) == 0) {
            return &g->t[i];
        }
    }
    return NULL;
}

/* Loads a serialized builder; the returned bytes must outlive the model. */
static rwkvc_status load(const gguf_builder *g, uint32_t threads, buf *bytes, rwkvc_model **m) {
    *bytes = serialize(g);
    rwkvc_gguf *gg = NULL;
    rwkvc_status st = rwkvc_gguf_open_memory(bytes->p, bytes->n, &gg);
    if (st != RWKVC_OK) {
        return st;
    }
    return rwkvc_model_from_gguf(gg, threads, m);
}

static const spec SPEC_F32 = {97, 96, 3, 32, 160, 16, 8, 8, 24, 0, 0, 0x1234567ull};

/* ---- Helpers ---- */

static double max_abs(const float *a, size_t n) {
    double m = 0.0;
    for (size_t i = 0; i < n; i++) {
        double d = fabs(a[i]);
        /* Written so that a NaN propagates (and then fails every tolerance check). */
        if (!(d <= m)) {
            m = d;
        }
    }
    return m;
}

static double max_diff(const float *a, const float *b, size_t n) {
    double m = 0.0;
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)a[i] - b[i]);
        if (!(d <= m)) {
            m = d;
        }
    }
    return m;
}

#define N_TOK 64

static void make_tokens(uint32_t *tok, uint32_t V) {
    for (int i = 0; i < N_TOK; i++) {
        tok[i] = (uint32_t)((i * 37u + 11u) % V);
    }
    tok[3] = V - 1;
    tok[10] = 0;
    tok[20] = tok[19];
}

/* Logits [N_TOK][V] and the final state, token by token. */
static void run_one_by_one(rwkvc_ctx *c, const rwkvc_info *info, const uint32_t *tok, float *logits, float *state) {
    rwkvc_state_init(c->model, state, info->state_len);
    for (int t = 0; t < N_TOK; t++) {
        rwkvc_status st = rwkvc_eval(c, tok + t, 1, state, info->state_len, logits + (size_t)t * info->n_vocab,
                                     info->n_vocab);
        CHECK(st == RWKVC_OK, "eval token %d: %s", t, rwkvc_last_error());
    }
}

static void run_chunks(rwkvc_ctx *c, const rwkvc_info *info, const uint32_t *tok, const int *chunks, int n_chunks,
                       float *logits, float *state) {
    rwkvc_state_init(c->model, state, info->state_len);
    int pos = 0;
    for (int i = 0; i < n_chunks; i++) {
        rwkvc_status st = rwkvc_eval_all(c, tok + pos, (size_t)chunks[i], state, info->state_len,
                                         logits + (size_t)pos * info->n_vocab, (size_t)chunks[i] * info->n_vocab);
        CHECK(st == RWKVC_OK, "eval_all chunk %d: %s", i, rwkvc_last_error());
        pos += chunks[i];
    }
}

/* ---- Tests ---- */

static void test_modes(const spec *s, const char *label) {
    gguf_builder *g = malloc(sizeof(*g));
    build_v7(g, s);
    buf bytes;
    rwkvc_model *m = NULL;
    rwkvc_status st = load(g, 2, &bytes, &m);
    CHECK(st == RWKVC_OK, "%s: load: %s", label, rwkvc_last_error());
    if (st != RWKVC_OK) {
        free_builder(g);
        free(g);
        free(bytes.p);
        return;
    }
    rwkvc_info info;
    rwkvc_model_info(m, &info);
    CHECK(info.arch_version == 70 && info.n_vocab == s->V && info.n_embd == s->D && info.n_layer == s->L &&
              info.n_ffn == s->F && info.head_size == s->N && info.n_head == s->D / s->N &&
              info.state_len == (size_t)s->L * (2 + s->N) * s->D && info.weight_type == s->mat_type,
          "%s: info fields", label);
    rwkvc_ctx *c = NULL;
    CHECK(rwkvc_ctx_new(m, 2, &c) == RWKVC_OK, "%s: ctx_new", label);
    const size_t V = info.n_vocab, SL = info.state_len;
    uint32_t tok[N_TOK];
    make_tokens(tok, s->V);
    float *l_one = malloc(N_TOK * V * sizeof(float)), *l_seq = malloc(N_TOK * V * sizeof(float));
    float *l_chk = malloc(N_TOK * V * sizeof(float));
    float *s_one = malloc(SL * sizeof(float)), *s_seq = malloc(SL * sizeof(float)), *s_chk = malloc(SL * sizeof(float));

    run_one_by_one(c, &info, tok, l_one, s_one);
    int whole[1] = {N_TOK};
    run_chunks(c, &info, tok, whole, 1, l_seq, s_seq);
    int parts[4] = {1, 7, 16, 40};
    run_chunks(c, &info, tok, parts, 4, l_chk, s_chk);

    double scale = max_abs(l_one, N_TOK * V), sscale = max_abs(s_one, SL);
    CHECK(scale > 0.1 && sscale > 0.01, "%s: logits/state are not trivially small (%g, %g)", label, scale, sscale);
    double d1 = max_diff(l_one, l_seq, N_TOK * V), d2 = max_diff(l_one, l_chk, N_TOK * V);
    double d3 = max_diff(s_one, s_seq, SL), d4 = max_diff(s_one, s_chk, SL);
    /* The split-bf16 GEMM keeps about 17 bits of each product (kernels_avx512.c), the FMA GEMM all 24. */
    const rwkvc_matmul_kernels *mk = rwkvc_matmul_get(s->mat_type, rwkvc_isa_select());
    const int split_bf16 = mk->seq_act_bytes && mk->seq_act_bytes(s->D) > 0;
    /* Quantized weights: decode and the sequence GEMM sum in different orders, and a last-bit difference can move
       a quantized activation to the next step (logits moved by about 0.3% of their scale here). */
    const int quantized = s->mat_type == 8;
    const double tol = quantized ? 1e-2 : split_bf16 ? 1e-4 : 1e-5;
    const double tol_head = quantized ? 1e-2 : split_bf16 ? 1e-4 : 1e-6;
    CHECK(d1 <= tol * scale, "%s: sequence vs token by token logits differ by %g (scale %g)", label, d1, scale);
    CHECK(d2 <= tol * scale, "%s: chunked vs token by token logits differ by %g", label, d2);
    CHECK(d3 <= tol * sscale && d4 <= tol * sscale, "%s: states differ by %g / %g", label, d3, d4);

    /* The state matters: the last token's logits from a fresh state differ clearly. */
    float *fresh = malloc(SL * sizeof(float)), *lf = malloc(V * sizeof(float));
    rwkvc_state_init(m, fresh, SL);
    rwkvc_eval(c, tok + N_TOK - 1, 1, fresh, SL, lf, V);
    CHECK(max_diff(lf, l_one + (N_TOK - 1) * V, V) > 1e-3 * scale, "%s: the state has no effect", label);

    /* rwkvc_eval logits == last row of eval_all; logits NULL advances the state the same way. */
    float *s_a = malloc(SL * sizeof(float)), *s_b = malloc(SL * sizeof(float));
    rwkvc_state_init(m, s_a, SL);
    rwkvc_state_init(m, s_b, SL);
    CHECK(rwkvc_eval(c, tok, N_TOK, s_a, SL, lf, V) == RWKVC_OK, "%s: eval", label);
    CHECK(max_diff(lf, l_seq + (N_TOK - 1) * V, V) <= tol_head * scale, "%s: eval logits != eval_all last row (%g)",
          label, max_diff(lf, l_seq + (N_TOK - 1) * V, V));
    CHECK(rwkvc_eval(c, tok, N_TOK, s_b, SL, NULL, 0) == RWKVC_OK, "%s: eval without logits", label);
    CHECK(memcmp(s_a, s_b, SL * sizeof(float)) == 0, "%s: eval with and without logits leave different states",
          label);
    /* rwkvc_eval leaves out the last layer's outputs that no logit reads; the state must not notice. */
    CHECK(max_diff(s_a, s_one, SL) <= tol * sscale, "%s: eval's state differs from token by token by %g", label,
          max_diff(s_a, s_one, SL));

    free(s_a);
    free(s_b);
    free(fresh);
    free(lf);
    free(l_one);
    free(l_seq);
    free(l_chk);
    free(s_one);
    free(s_seq);
    free(s_chk);
    rwkvc_ctx_free(c);
    rwkvc_model_free(m);
    free_builder(g);
    free(g);
    free(bytes.p);
}

typedef struct {
    rwkvc_model *m;
    const uint32_t *tok;
    float *logits;
    float *state;
    int ok;
} thread_arg;

static void *thread_main(void *p) {
    thread_arg *a = p;
    rwkvc_info info;
    rwkvc_model_info(a->m, &info);
    rwkvc_ctx *c = NULL;
    a->ok = rwkvc_ctx_new(a->m, 2, &c) == RWKVC_OK;
    if (a->ok) {
        int parts[3] = {5, 30, 29};
        run_chunks(c, &info, a->tok, parts, 3, a->logits, a->state);
        rwkvc_ctx_free(c);
    }
    return NULL;
}

static void test_threads_and_args(void) {
    gguf_builder *g = malloc(sizeof(*g));
    build_v7(g, &SPEC_F32);
    buf bytes;
    rwkvc_model *m = NULL;
    if (load(g, 2, &bytes, &m) != RWKVC_OK) {
        CHECK(0, "load: %s", rwkvc_last_error());
        return;
    }
    rwkvc_info info;
    rwkvc_model_info(m, &info);
    const size_t V = info.n_vocab, SL = info.state_len;
    uint32_t tok1[N_TOK], tok2[N_TOK];
    make_tokens(tok1, (uint32_t)V);
    for (int i = 0; i < N_TOK; i++) {
        tok2[i] = (tok1[i] * 7u + 3u) % (uint32_t)V;
    }
    /* Two contexts on one model, concurrently, against the same work done one after the other. */
    float *la = malloc(N_TOK * V * sizeof(float)), *lb = malloc(N_TOK * V * sizeof(float));
    float *sa = malloc(SL * sizeof(float)), *sb = malloc(SL * sizeof(float));
    float *la2 = malloc(N_TOK * V * sizeof(float)), *lb2 = malloc(N_TOK * V * sizeof(float));
    float *sa2 = malloc(SL * sizeof(float)), *sb2 = malloc(SL * sizeof(float));
    thread_arg a1 = {m, tok1, la, sa, 0}, a2 = {m, tok2, lb, sb, 0};
    thread_main(&a1);
    thread_main(&a2);
    thread_arg c1 = {m, tok1, la2, sa2, 0}, c2 = {m, tok2, lb2, sb2, 0};
    pthread_t t1, t2;
    pthread_create(&t1, NULL, thread_main, &c1);
    pthread_create(&t2, NULL, thread_main, &c2);
    pthread_join(t1, NULL);
    pthread_join(t2, NULL);
    CHECK(a1.ok && a2.ok && c1.ok && c2.ok, "contexts created");
    CHECK(memcmp(la, la2, N_TOK * V * sizeof(float)) == 0 && memcmp(lb, lb2, N_TOK * V * sizeof(float)) == 0,
          "concurrent contexts give different logits");
    CHECK(memcmp(sa, sa2, SL * sizeof(float)) == 0 && memcmp(sb, sb2, SL * sizeof(float)) == 0,
          "concurrent contexts give different states");
    CHECK(max_diff(la, lb, N_TOK * V) > 0.1, "the two token streams differ");

    /* Bad arguments: right status and message, state untouched. */
    rwkvc_ctx *c = NULL;
    rwkvc_ctx_new(m, 1, &c);
    float *state = malloc(SL * sizeof(float)), *copy = malloc(SL * sizeof(float)), *lg = malloc(2 * V * sizeof(float));
    memcpy(state, sa, SL * sizeof(float));
    memcpy(copy, state, SL * sizeof(float));
    uint32_t bad[3] = {1, (uint32_t)V, 2};
    static const struct {
        rwkvc_status want;
        const char *msg;
    } cases[] = {
        {RWKVC_ERR_ARG, "token id 97 out of range (n_vocab 97)"},
        {RWKVC_ERR_ARG, "n_tokens must be at least 1"},
        {RWKVC_ERR_ARG, "NULL"},
        {RWKVC_ERR_ARG, "NULL"},
        {RWKVC_ERR_ARG, "NULL"},
        {RWKVC_ERR_SIZE, "state buffer has 10 floats, expected 9792"},
        {RWKVC_ERR_SIZE, "logits buffer has 96 floats, expected 97"},
        {RWKVC_ERR_SIZE, "logits buffer has 97 floats, expected 194"},
        {RWKVC_ERR_ARG, "NULL"},
        {RWKVC_ERR_SIZE, "state buffer has 9793 floats, expected 9792"},
    };
    CHECK(SL == 9792, "state_len of the test model is 3 * (2 + 32) * 96 = 9792, got %zu", SL);
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        rwkvc_status st = RWKVC_OK;
        switch (i) {
        case 0: st = rwkvc_eval(c, bad, 3, state, SL, lg, V); break;
        case 1: st = rwkvc_eval(c, tok1, 0, state, SL, lg, V); break;
        case 2: st = rwkvc_eval(NULL, tok1, 1, state, SL, lg, V); break;
        case 3: st = rwkvc_eval(c, NULL, 1, state, SL, lg, V); break;
        case 4: st = rwkvc_eval(c, tok1, 1, NULL, SL, lg, V); break;
        case 5: st = rwkvc_eval(c, tok1, 1, state, 10, lg, V); break;
        case 6: st = rwkvc_eval(c, tok1, 1, state, SL, lg, V - 1); break;
        case 7: st = rwkvc_eval_all(c, tok1, 2, state, SL, lg, V); break;
        case 8: st = rwkvc_eval_all(c, tok1, 2, state, SL, NULL, 0); break;
        case 9: st = rwkvc_state_init(m, state, SL + 1); break;
        }
        CHECK(st == cases[i].want && strstr(rwkvc_last_error(), cases[i].msg) != NULL,
              "case %zu: got %d \"%s\", want %d \"%s\"", i, st, rwkvc_last_error(), cases[i].want, cases[i].msg);
        CHECK(memcmp(state, copy, SL * sizeof(float)) == 0, "case %zu: the failed call changed the state", i);
    }
    CHECK(rwkvc_eval(c, tok1, 1, state, SL, lg, V) == RWKVC_OK && rwkvc_last_error()[0] == '\0',
          "a good call after failures succeeds and clears the message");

    free(state);
    free(copy);
    free(lg);
    rwkvc_ctx_free(c);
    free(la);
    free(lb);
    free(sa);
    free(sb);
    free(la2);
    free(lb2);
    free(sa2);
    free(sb2);
    rwkvc_model_free(m);
    free_builder(g);
    free(g);
    free(bytes.p);
}

/*
 * Logits of the N_TOK tokens fed in one call, with the kernels chosen by the environment at load:
 * force_scalar 1 sets RWKVC_FORCE_SCALAR=1; 2 caps the level at AVX2 with RWKVC_ISA=avx2.
 */
static float *logits_of(const spec *s, int force_scalar) {
    unsetenv("RWKVC_FORCE_SCALAR");
    unsetenv("RWKVC_ISA");
    if (force_scalar == 1) {
        setenv("RWKVC_FORCE_SCALAR", "1", 1);
    } else if (force_scalar == 2) {
        setenv("RWKVC_ISA", "avx2", 1);
    }
    gguf_builder *g = malloc(sizeof(*g));
    build_v7(g, s);
    buf bytes;
    rwkvc_model *m = NULL;
    float *out = NULL;
    if (load(g, 2, &bytes, &m) == RWKVC_OK) {
        if (force_scalar == 2) {
            CHECK(m->isa == RWKVC_ISA_AVX2, "RWKVC_ISA=avx2 is honoured at load");
        } else {
            CHECK((m->isa == RWKVC_ISA_SCALAR) == (force_scalar || rwkvc_isa_detect() == RWKVC_ISA_SCALAR),
                  "RWKVC_FORCE_SCALAR=%d is honoured at load", force_scalar);
        }
        rwkvc_info info;
        rwkvc_model_info(m, &info);
        rwkvc_ctx *c = NULL;
        rwkvc_ctx_new(m, 2, &c);
        out = malloc(N_TOK * info.n_vocab * sizeof(float));
        float *state = malloc(info.state_len * sizeof(float));
        uint32_t tok[N_TOK];
        make_tokens(tok, info.n_vocab);
        int whole[1] = {N_TOK};
        run_chunks(c, &info, tok, whole, 1, out, state);
        free(state);
        rwkvc_ctx_free(c);
        rwkvc_model_free(m);
    } else {
        CHECK(0, "load: %s", rwkvc_last_error());
    }
    unsetenv("RWKVC_FORCE_SCALAR");
    unsetenv("RWKVC_ISA");
    free_builder(g);
    free(g);
    free(bytes.p);
    return out;
}

static void test_scalar_vs_simd(void) {
    /* The Q8_0 model has quantized LoRA matrices too, whose activations decode prepares for the heads job
       (rwkvc_matvec_prepare, one slot per LoRA). */
    const uint32_t types[4][2] = {{0, 0}, {1, 1}, {30, 0}, {8, 0}};
    for (int i = 0; i < 4; i++) {
        spec s = SPEC_F32;
        s.mat_type = types[i][0];
        s.vec_type = types[i][1];
        /* Also a model with a 64-wide head and ranks that are multiples of the SIMD width. */
        if (i == 1 || i == 3) {
            s.D = 128;
            s.N = 64;
            s.F = 512;
            s.Rw = s.Ra = s.Rv = 32;
            s.Rg = 64;
        }
        /* Q8_0: the paths sum floats in different orders, and a last-bit difference can move a quantized
           activation to the next step, which later layers and tokens carry on (about 1% of the scale here). */
        const double tol = s.mat_type == 8 ? 2e-2 : 1e-4;
        float *a = logits_of(&s, 1), *b = logits_of(&s, 0);
        if (a && b) {
            size_t n = N_TOK * (size_t)s.V;
            double scale = max_abs(a, n), d = max_diff(a, b, n);
            CHECK(d <= tol * scale, "type %u: scalar vs SIMD logits differ by %g (scale %g)", types[i][0], d, scale);
        }
        free(b);
        /* On an AVX-512 CPU, the AVX2 path too. */
        if (rwkvc_isa_detect() == RWKVC_ISA_AVX512) {
            b = logits_of(&s, 2);
            if (a && b) {
                size_t n = N_TOK * (size_t)s.V;
                double scale = max_abs(a, n), d = max_diff(a, b, n);
                CHECK(d <= tol * scale, "type %u: scalar vs AVX2 logits differ by %g (scale %g)", types[i][0], d,
                      scale);
            }
            free(b);
        }
        free(a);
        test_modes(&s, i == 0 ? "f32" : i == 1 ? "f16 (D128)" : i == 2 ? "bf16" : "q8_0 (D128)");
    }
}

/* Expects loading to fail with `want` and a message containing `phrase`. */
static void expect_load_error(gguf_builder *g, rwkvc_status want, const char *phrase) {
    buf bytes;
    rwkvc_model *m = NULL;
    rwkvc_status st = load(g, 1, &bytes, &m);
    CHECK(st == want && strstr(rwkvc_last_error(), phrase) != NULL, "load: got %d \"%s\", want %d \"%s\"", st,
          rwkvc_last_error(), want, phrase);
    if (st == RWKVC_OK) {
        rwkvc_model_free(m);
    }
    free(bytes.p);
}

static void test_loader_errors(void) {
    gguf_builder *g = malloc(sizeof(*g));

    build_v7(g, &SPEC_F32);
    wt *t = find_t(g, "blk.0.time_mix_w0.weight");
    snprintf(t->name, sizeof(t->name), "blk.0.time_mix_w0_renamed.weight");
    expect_load_error(g, RWKVC_ERR_FORMAT, "missing tensor blk.0.time_mix_w0.weight");
    free_builder(g);

    build_v7(g, &SPEC_F32);
    t = find_t(g, "blk.2.time_mix_key.weight");
    free(t->data);
    uint64_t ne[2] = {96, 64};
    t = find_t(g, "blk.2.time_mix_key.weight");
    t->ne[1] = 64;
    t->nbytes = 96 * 64 * 4;
    t->data = calloc(1, t->nbytes);
    (void)ne;
    expect_load_error(g, RWKVC_ERR_FORMAT, "tensor blk.2.time_mix_key.weight: expected [96, 96], found [96, 64]");
    free_builder(g);

    build_v7(g, &SPEC_F32);
    /* Another RWKV generation's name over v7 tensors: refused, either as not supported yet or (once that version
       is implemented) because its own tensors are missing; never loaded as v7. */
    snprintf(g->kv[0].s, sizeof(g->kv[0].s), "rwkv6");
    {
        buf bytes;
        rwkvc_model *m = NULL;
        rwkvc_status st = load(g, 1, &bytes, &m);
        const char *msg = rwkvc_last_error();
        CHECK((st == RWKVC_ERR_VERSION && strstr(msg, "architecture 'rwkv6' is not supported yet")) ||
                  (st == RWKVC_ERR_FORMAT && strstr(msg, "missing")),
              "rwkv6 over v7 tensors: got %d \"%s\"", st, msg);
        if (st == RWKVC_OK) {
            rwkvc_model_free(m);
        }
        free(bytes.p);
    }
    snprintf(g->kv[0].s, sizeof(g->kv[0].s), "llama");
    expect_load_error(g, RWKVC_ERR_VERSION, "unsupported architecture 'llama'");
    snprintf(g->kv[0].s, sizeof(g->kv[0].s), "arwkv7");
    expect_load_error(g, RWKVC_ERR_VERSION, "unsupported architecture 'arwkv7'");
    snprintf(g->kv[0].s, sizeof(g->kv[0].s), "rwkv7");

    /* Block-count metadata that disagrees with the tensors. */
    g->kv[2].u = 4;
    expect_load_error(g, RWKVC_ERR_FORMAT, "missing tensor blk.3.");
    g->kv[2].u = 2;
    expect_load_error(g, RWKVC_ERR_FORMAT, "metadata says 2 blocks but tensor blk.2.attn_norm.weight exists");
    g->kv[2].u = 3;
    /* An FFN width in the metadata that the tensors contradict. */
    g->kv[4].u = 150;
    expect_load_error(g, RWKVC_ERR_FORMAT, "feed_forward_length is 150");
    g->kv[4].u = 160;
    free_builder(g);

    /* A matrix type that has traits but no kernels, if this build has one. */
    uint32_t no_kern = 0;
    for (uint32_t ty = 2; ty < 40 && !no_kern; ty++) {
        const rwkvc_type_traits *tr = rwkvc_type_traits_get(ty);
        if (tr && tr->quantize_row && !rwkvc_matmul_get(ty, rwkvc_isa_detect()) && 96 % tr->block_size == 0) {
            no_kern = ty;
        }
    }
    if (no_kern) {
        build_v7(g, &SPEC_F32);
        t = find_t(g, "blk.1.time_mix_value.weight");
        const rwkvc_type_traits *tr = rwkvc_type_traits_get(no_kern);
        size_t n = 96 * 96;
        float *f = calloc(n, sizeof(float));
        free(t->data);
        t->type = no_kern;
        t->nbytes = n / tr->block_size * tr->block_bytes;
        t->data = malloc(t->nbytes);
        tr->quantize_row(f, t->data, n);
        free(f);
        char want[96];
        snprintf(want, sizeof(want), "tensor blk.1.time_mix_value.weight: type %s has no kernels", tr->name);
        expect_load_error(g, RWKVC_ERR_FORMAT, want);
        free_builder(g);
    }

    /* Block 0 may carry v0/v1/v2 (llama.cpp writes copies): accepted and ignored. */
    build_v7(g, &SPEC_F32);
    spec s = SPEC_F32;
    uint64_t v0ne[1] = {96}, v1ne[2] = {96, 8}, v2ne[2] = {8, 96};
    add_tensor(g, "blk.0.time_mix_v0.weight", 1, v0ne, 0, 0.0f, 1.0f);
    add_tensor(g, "blk.0.time_mix_v1.weight", 2, v1ne, 0, 0.0f, 1.0f);
    add_tensor(g, "blk.0.time_mix_v2.weight", 2, v2ne, 0, 0.0f, 1.0f);
    (void)s;
    expect_load_error(g, RWKVC_OK, "");
    free_builder(g);
    free(g);
}

/* A call longer than the context's chunk (max_T) is cut into chunks inside rwkvc_eval_all: same results. */
static void test_long_call(void) {
    gguf_builder *g = malloc(sizeof(*g));
    build_v7(g, &SPEC_F32);
    buf bytes;
    rwkvc_model *m = NULL;
    if (load(g, 2, &bytes, &m) != RWKVC_OK) {
        CHECK(0, "load: %s", rwkvc_last_error());
        return;
    }
    rwkvc_info info;
    rwkvc_model_info(m, &info);
    rwkvc_ctx *c = NULL;
    rwkvc_ctx_new(m, 2, &c);
    const size_t V = info.n_vocab, SL = info.state_len, n = 2 * c->max_T + 22;
    uint32_t *tok = malloc(n * sizeof(uint32_t));
    for (size_t i = 0; i < n; i++) {
        tok[i] = (uint32_t)((i * 53u + 7u) % V);
    }
    float *la = malloc(n * V * sizeof(float)), *lb = malloc(n * V * sizeof(float));
    float *sa = malloc(SL * sizeof(float)), *sb = malloc(SL * sizeof(float));
    rwkvc_state_init(m, sa, SL);
    rwkvc_state_init(m, sb, SL);
    CHECK(rwkvc_eval_all(c, tok, n, sa, SL, la, n * V) == RWKVC_OK, "long eval_all: %s", rwkvc_last_error());
    for (size_t i = 0; i < n; i++) {
        rwkvc_eval(c, tok + i, 1, sb, SL, lb + i * V, V);
    }
    double scale = max_abs(lb, n * V);
    CHECK(max_diff(la, lb, n * V) <= 1e-5 * scale, "long call (%zu tokens, chunk %zu) differs from token by token",
          n, c->max_T);
    CHECK(max_diff(sa, sb, SL) <= 1e-5 * max_abs(sb, SL), "long call state differs");
    free(tok);
    free(la);
    free(lb);
    free(sa);
    free(sb);
    rwkvc_ctx_free(c);
    rwkvc_model_free(m);
    free_builder(g);
    free(g);
    free(bytes.p);
}

/*
 * A single token runs as one team job where the pool has several threads and takes one chunk per thread
 * (forward_v7.c), and as a job per step otherwise. Both must give the same bits, logits and state, for every type
 * mix and thread count.
 */
static void decode_tokens(const rwkvc_model *m, uint32_t threads, uint32_t chunks, int want_team, float *logits,
                          float *state, const char *label) {
    rwkvc_info info;
    rwkvc_model_info(m, &info);
    rwkvc_ctx *c = NULL;
    CHECK(rwkvc_ctx_new(m, threads, &c) == RWKVC_OK, "%s: ctx_new", label);
    if (!c) {
        return;
    }
    rwkvc_pool_set_chunks_per_thread(c->pool, chunks);
    uint32_t tok[N_TOK];
    make_tokens(tok, info.n_vocab);
    CHECK(rwkvc_state_init(m, state, info.state_len) == RWKVC_OK, "%s: state_init", label);
    for (int t = 0; t < N_TOK; t++) {
        /* One token without logits: the head is skipped, the state must still advance alike. */
        float *out = t == 2 ? NULL : logits + (size_t)t * info.n_vocab;
        CHECK(rwkvc_eval(c, tok + t, 1, state, info.state_len, out, out ? info.n_vocab : 0) == RWKVC_OK,
              "%s: eval token %d: %s", label, t, rwkvc_last_error());
    }
    CHECK(c->decode_team == (want_team ? 1 : -1), "%s: %u threads x %u chunks decoded %s a team job", label,
          threads, chunks, want_team ? "without" : "with");
    rwkvc_ctx_free(c);
}

static void test_team_decode(void) {
    struct {
        const char *label;
        uint32_t D, N, F, R, mat_type, lora_type;
    } cases[] = {
        {"f32, 32-wide heads", 96, 32, 160, 16, 0, 0},
        {"f16", 128, 64, 512, 32, 1, 1},
        {"q4_0 with q8_0 LoRAs", 256, 64, 512, 32, 2, 8},
        {"q4_K with f16 LoRAs", 512, 64, 1024, 32, 12, 1},
        {"q5_1 with f32 LoRAs, 3 x 256 columns", 768, 64, 1536, 32, 7, 0},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        spec s = SPEC_F32;
        s.D = cases[i].D;
        s.N = cases[i].N;
        s.F = cases[i].F;
        s.Rw = s.Ra = s.Rv = cases[i].R;
        s.Rg = 2 * cases[i].R;
        s.mat_type = cases[i].mat_type;
        s.lora_own_type = 1;
        s.lora_type = cases[i].lora_type;
        gguf_builder *g = malloc(sizeof(*g));
        build_v7(g, &s);
        buf bytes;
        rwkvc_model *m = NULL;
        if (load(g, 2, &bytes, &m) != RWKVC_OK) {
            CHECK(0, "%s: load: %s", cases[i].label, rwkvc_last_error());
        } else {
            rwkvc_info info;
            rwkvc_model_info(m, &info);
            const size_t nl = (size_t)N_TOK * info.n_vocab, ns = info.state_len;
            float *l_jobs = calloc(nl, sizeof(float)), *l_team = calloc(nl, sizeof(float));
            float *s_jobs = malloc(ns * sizeof(float)), *s_team = malloc(ns * sizeof(float));
            decode_tokens(m, 2, 2, 0, l_jobs, s_jobs, cases[i].label);
            CHECK(max_abs(l_jobs, nl) > 0.1, "%s: logits are not trivially small", cases[i].label);
            /* One thread has no team (nothing to hand off): it takes the job path and must match too. */
            for (uint32_t threads = 1; threads <= 3; threads++) {
                decode_tokens(m, threads, 1, threads > 1, l_team, s_team, cases[i].label);
                CHECK(memcmp(l_jobs, l_team, nl * sizeof(float)) == 0 &&
                          memcmp(s_jobs, s_team, ns * sizeof(float)) == 0,
                      "%s, %u threads: team decode differs from the jobs' (logits by %g)", cases[i].label, threads,
                      max_diff(l_jobs, l_team, nl));
            }
            free(l_jobs);
            free(l_team);
            free(s_jobs);
            free(s_team);
            rwkvc_model_free(m);
            free(bytes.p);
        }
        free_builder(g);
        free(g);
    }
}

int main(void) {
    test_team_decode();
    test_long_call();
    test_loader_errors();
    test_threads_and_args();
    test_scalar_vs_simd();
    printf("test_forward: %d failures\n", g_failures);
    return g_failures ? 1 : 0;
}
