/*
 * test_matmul_multi.c: rwkvc_matmul_multi (several products as one thread-pool job) against one rwkvc_matmul call
 * per product, bit for bit, with 1..4 threads and 1..3 chunks per thread, one and several vectors, float and
 * quantized weights, inputs shared between products (prepared once), row counts that are and are not multiples
 * of 16, and a job too large for the context's activation slots (the per-product fallback).
 */
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "forward.h"
#include "kernels.h"

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

static uint64_t g_rng = 0x9E3779B97F4A7C15ull;

static float frand(void) {
    g_rng ^= g_rng << 13;
    g_rng ^= g_rng >> 7;
    g_rng ^= g_rng << 17;
    return (float)((g_rng >> 40) & 0xFFFFFF) / (float)0x1000000 * 2.0f - 1.0f;
}

/* A rows x cols weight of `type`, quantized from random floats by the type's reference conversion. */
static void make_weight(rwkvc_weight *w, uint32_t type, size_t rows, size_t cols, rwkvc_isa isa) {
    const rwkvc_type_traits *tr = rwkvc_type_traits_get(type);
    w->type = type;
    w->rows = rows;
    w->cols = cols;
    w->row_bytes = cols / tr->block_size * tr->block_bytes;
    w->kern = rwkvc_matmul_get(type, isa);
    void *data = malloc(rows * w->row_bytes);
    float *row = malloc(cols * sizeof(float));
    for (size_t r = 0; r < rows; r++) {
        for (size_t c = 0; c < cols; c++) {
            row[c] = frand();
        }
        tr->quantize_row(row, (char *)data + r * w->row_bytes, cols);
    }
    free(row);
    w->data = data;
}

#define N_OPS 6

/* A team job running products as decode does (forward_v7.c): plan, prepare a share of the columns, barrier, rows. */
typedef struct {
    struct rwkvc_ctx *c;
    const rwkvc_weight *const *W;
    const float *const *x;
    float *const *y;
    size_t cols;
    int plan_failed;
} team_case;

static void team_products(void *arg, uint32_t tid, uint32_t nt) {
    team_case *tc = arg;
    rwkvc_team_products tp;
    if (!rwkvc_team_plan(&tp, tc->W, tc->x, tc->y, N_OPS, tc->c->act, tc->c->act_cap)) {
        tc->plan_failed = 1; /* every thread fails alike, so none waits at the barrier below */
        return;
    }
    size_t c0, c1;
    rwkvc_team_share(tc->cols, 256, tid, nt, &c0, &c1);
    rwkvc_team_prepare(&tp, c0, c1);
    rwkvc_pool_barrier(tc->c->pool);
    rwkvc_team_rows(&tp, tid, nt, 16, NULL, NULL);
}

static void run_case(uint32_t type, uint32_t threads, uint32_t chunks, size_t n_vec, size_t act_slots) {
    const rwkvc_isa isa = rwkvc_isa_detect();
    /* D x D products, a LoRA-like (R, D) and one sharing the first product's input; rows 1024, 1024, 512, 64,
       40 (not a multiple of 16), 1024. */
    const size_t D = 1024, R = 64;
    const size_t rows[N_OPS] = {D, D, D / 2, R, 40, D};
    rwkvc_weight w[N_OPS];
    float *x[N_OPS], *y1[N_OPS], *y2[N_OPS];
    for (int i = 0; i < N_OPS; i++) {
        make_weight(&w[i], i == 3 ? 1 : type, rows[i], D, isa);
        x[i] = malloc(n_vec * D * sizeof(float));
        for (size_t j = 0; j < n_vec * D; j++) {
            x[i][j] = frand();
        }
        y1[i] = calloc(n_vec * rows[i], sizeof(float));
        y2[i] = calloc(n_vec * rows[i], sizeof(float));
    }
    size_t max_ab = 0;
    for (int i = 0; i < N_OPS; i++) {
        size_t ab = w[i].kern->act_bytes ? w[i].kern->act_bytes(D) : 0;
        max_ab = ab > max_ab ? ab : max_ab;
    }
    struct rwkvc_ctx c;
    memset(&c, 0, sizeof(c));
    c.pool = rwkvc_pool_new(threads);
    rwkvc_pool_set_chunks_per_thread(c.pool, chunks);
    CHECK(rwkvc_pool_chunks_per_thread(c.pool) == chunks, "chunks per thread %u not kept", chunks);
    c.max_T = n_vec;
    c.act_cap = act_slots * n_vec * max_ab;
    c.act = c.act_cap ? aligned_alloc(64, (c.act_cap + 63) & ~(size_t)63) : NULL;
    rwkvc_mm_op ops[N_OPS];
    for (int i = 0; i < N_OPS; i++) {
        /* Product 5 reads product 0's input (its activation is prepared once). */
        const float *xi = i == 5 ? x[0] : x[i];
        ops[i] = (rwkvc_mm_op){&w[i], xi, D, y2[i], rows[i]};
        rwkvc_matmul(&c, &w[i], xi, D, n_vec, y1[i], rows[i]);
    }
    rwkvc_matmul_multi(&c, ops, N_OPS, n_vec);
    for (int i = 0; i < N_OPS; i++) {
        CHECK(memcmp(y1[i], y2[i], n_vec * rows[i] * sizeof(float)) == 0,
              "type %u, %u threads x %u chunks, %zu vectors, %zu slots: product %d differs from rwkvc_matmul", type,
              threads, chunks, n_vec, act_slots, i);
    }
    if (n_vec == 1 && act_slots == RWKVC_ACT_SLOTS) {
        /* The same products in a team job: the same bits as rwkvc_matmul. */
        const rwkvc_weight *W[N_OPS];
        const float *X[N_OPS];
        for (int i = 0; i < N_OPS; i++) {
            W[i] = &w[i];
            X[i] = ops[i].X;
            memset(y2[i], 0, rows[i] * sizeof(float));
        }
        team_case tc = {&c, W, X, y2, D, 0};
        rwkvc_pool_team(c.pool, team_products, &tc);
        CHECK(!tc.plan_failed, "type %u: the team plan did not fit %zu bytes", type, c.act_cap);
        for (int i = 0; i < N_OPS; i++) {
            CHECK(memcmp(y1[i], y2[i], rows[i] * sizeof(float)) == 0,
                  "type %u, %u threads: team product %d differs from rwkvc_matmul", type, threads, i);
        }
    }
    rwkvc_pool_free(c.pool);
    free(c.act);
    for (int i = 0; i < N_OPS; i++) {
        free((void *)w[i].data);
        free(x[i]);
        free(y1[i]);
        free(y2[i]);
    }
}

/*
 * Preparing an input piecewise, act_group columns at a time (the last piece possibly shorter), gives the bytes of
 * preparing it whole: what lets the threads of a team share the preparation. Every quantized type, every ISA here.
 */
static int isa_runs_here(rwkvc_isa isa) {
    const rwkvc_isa best = rwkvc_isa_detect();
    if (isa == RWKVC_ISA_SCALAR) {
        return 1;
    }
    return best == RWKVC_ISA_NEON ? isa == RWKVC_ISA_NEON : isa != RWKVC_ISA_NEON && isa <= best;
}

static void test_prepare_pieces(void) {
    const uint32_t types[] = {8, 2, 3, 6, 7, 12, 13, 14};
    const rwkvc_isa isas[] = {RWKVC_ISA_SCALAR, RWKVC_ISA_AVX2, RWKVC_ISA_AVX512, RWKVC_ISA_NEON};
    const size_t cols = 1280; /* five super-blocks */
    float *x = malloc(cols * sizeof(float));
    for (size_t i = 0; i < cols; i++) {
        x[i] = frand() * (i % 7 == 0 ? 10.0f : 1.0f);
    }
    int checked = 0;
    for (size_t t = 0; t < sizeof(types) / sizeof(types[0]); t++) {
        for (size_t k = 0; k < sizeof(isas) / sizeof(isas[0]); k++) {
            if (!isa_runs_here(isas[k])) {
                continue;
            }
            rwkvc_weight w;
            make_weight(&w, types[t], 16, cols, isas[k]);
            const size_t group = w.kern->act_group;
            CHECK(group == 32 || group == 256, "type %u isa %d: act_group %zu", types[t], (int)isas[k], group);
            const size_t ab = w.kern->act_bytes(cols);
            const size_t alloc = (ab + 63) & ~(size_t)63;
            char *whole = aligned_alloc(64, alloc), *pieces = aligned_alloc(64, alloc);
            memset(pieces, 0x5A, ab);
            w.kern->prepare_act(x, whole, cols);
            const rwkvc_weight *W[1] = {&w};
            const float *X[1] = {x};
            float *Y[1] = {NULL};
            rwkvc_team_products tp;
            CHECK(rwkvc_team_plan(&tp, W, X, Y, 1, pieces, ab), "type %u: plan", types[t]);
            /* Pieces in reverse order, so no piece relies on an earlier one. */
            for (size_t c1 = cols; c1 > 0;) {
                const size_t c0 = (c1 - 1) / group * group;
                rwkvc_team_prepare_cols(&tp, 0, c0, c1);
                c1 = c0;
            }
            CHECK(memcmp(whole, pieces, ab) == 0, "type %u isa %d: prepared by pieces of %zu differs", types[t],
                  (int)isas[k], group);
            free(whole);
            free(pieces);
            free((void *)w.data);
            checked++;
        }
    }
    CHECK(checked >= 8, "only %d type/ISA pairs checked", checked);
    free(x);
}

/* Barriers order the threads' phases: after barrier k every thread sees every slot written before it. */
typedef struct {
    rwkvc_pool *p;
    _Atomic int wrong;
    int slot[8];
} barrier_case;

static void barrier_phases(void *arg, uint32_t tid, uint32_t nt) {
    barrier_case *bc = arg;
    for (int k = 1; k <= 2000; k++) {
        bc->slot[tid] = k;
        rwkvc_pool_barrier(bc->p);
        for (uint32_t j = 0; j < nt; j++) {
            if (bc->slot[j] != k) {
                bc->wrong++;
            }
        }
        rwkvc_pool_barrier(bc->p);
    }
}

static void test_team_barrier(void) {
    for (uint32_t threads = 1; threads <= 4; threads++) {
        barrier_case bc = {rwkvc_pool_new(threads), 0, {0}};
        for (int rep = 0; rep < 3; rep++) {
            rwkvc_pool_team(bc.p, barrier_phases, &bc);
        }
        CHECK(bc.wrong == 0, "%u threads: %d stale reads after barriers", threads, (int)bc.wrong);
        rwkvc_pool_free(bc.p);
    }
}

int main(void) {
    test_prepare_pieces();
    test_team_barrier();
    /* f32, f16, q8_0, q4_0, q5_1, q4_K. */
    const uint32_t types[] = {0, 1, 8, 2, 7, 12};
    for (size_t t = 0; t < sizeof(types) / sizeof(types[0]); t++) {
        for (uint32_t threads = 1; threads <= 4; threads++) {
            for (uint32_t chunks = 1; chunks <= 3; chunks++) {
                run_case(types[t], threads, chunks, 1, RWKVC_ACT_SLOTS);
                run_case(types[t], threads, chunks, 5, RWKVC_ACT_SLOTS);
            }
        }
        /* Too few slots: falls back to one job per product. */
        run_case(types[t], 2, 2, 1, 1);
    }
    /* The chunk count is clamped to [1, RWKVC_POOL_MAX_CHUNKS_PER_THREAD]; a NULL pool reads as the default. */
    rwkvc_pool *p = rwkvc_pool_new(2);
    CHECK(rwkvc_pool_chunks_per_thread(p) == RWKVC_POOL_DEFAULT_CHUNKS_PER_THREAD, "new pool: %u chunks",
          rwkvc_pool_chunks_per_thread(p));
    rwkvc_pool_set_chunks_per_thread(p, 0);
    CHECK(rwkvc_pool_chunks_per_thread(p) == 1, "0 chunks kept as %u", rwkvc_pool_chunks_per_thread(p));
    rwkvc_pool_set_chunks_per_thread(p, 1000);
    CHECK(rwkvc_pool_chunks_per_thread(p) == RWKVC_POOL_MAX_CHUNKS_PER_THREAD, "1000 chunks kept as %u",
          rwkvc_pool_chunks_per_thread(p));
    rwkvc_pool_free(p);
    rwkvc_pool_set_chunks_per_thread(NULL, 3);
    CHECK(rwkvc_pool_chunks_per_thread(NULL) == RWKVC_POOL_DEFAULT_CHUNKS_PER_THREAD, "NULL pool");
    printf("test_matmul_multi: %d failures\n", g_failures);
    return g_failures ? 1 : 0;
}
