/*
 * test_quant.c: block-quantized types.
 *
 * 1. Every SIMD kernel set (AVX2, AVX-512 where this CPU has it) against the scalar reference of the same type:
 *    prepared activations bit-identical; matvec and matmat outputs equal up to float summation order, on random
 *    quantized matrices and on random raw blocks, for 1..20 blocks per row and 1..37 rows, with row sub-ranges,
 *    and one shape wider than the matvec kernels' per-call activation buffers (16640 columns).
 * 2. Reference quantize -> dequantize relative RMSE on Gaussian data within quant-formats.md's figures x 1.5.
 * 3. Hand-derived reference blocks (Q4_0, Q8_0, Q4_1) that pin the exact ggml rounding rules.
 * 4. rwkvc_quantize / rwkvc_dequantize argument checks.
 * 5. The Q4_K / Q5_K activation with one scale per super-block: its values, and every set preparing the same bytes.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cpu.h"
#include "fp16.h"
#include "kernels.h"
#include "quant.h"
#include "rwkvc.h"

static int g_failures = 0;

#define CHECK(cond, ...)                                                                                          \
    do {                                                                                                          \
        if (!(cond)) {                                                                                            \
            g_failures++;                                                                                         \
            fprintf(stderr, "FAIL %s:%d: ", __FILE__, __LINE__);                                                  \
            fprintf(stderr, __VA_ARGS__);                                                                         \
            fprintf(stderr, "\n");                                                                                \
        }                                                                                                         \
    } while (0)

/* xorshift64* and Box-Muller: deterministic data without libc rand differences. */
static uint64_t g_rng = 0x9E3779B97F4A7C15ull;

static uint64_t rng_u64(void) {
    g_rng ^= g_rng >> 12;
    g_rng ^= g_rng << 25;
    g_rng ^= g_rng >> 27;
    return g_rng * 0x2545F4914F6CDD1Dull;
}

static float rng_uniform(void) {
    return (float)((rng_u64() >> 40) + 0.5) / 16777216.0f;
}

static float rng_normal(void) {
    float u = rng_uniform();
    float v = rng_uniform();
    return sqrtf(-2.0f * logf(u)) * cosf(6.2831853f * v);
}

static const uint32_t k_types[] = {RWKVC_TYPE_Q8_0, RWKVC_TYPE_Q4_0, RWKVC_TYPE_Q4_1, RWKVC_TYPE_Q5_0,
                                   RWKVC_TYPE_Q5_1, RWKVC_TYPE_Q4_K, RWKVC_TYPE_Q5_K, RWKVC_TYPE_Q6_K};
#define N_TYPES (sizeof(k_types) / sizeof(k_types[0]))

/* Overwrites the f16 scale fields of random raw blocks with sane values, so products stay finite. */
static void sanitize_scales(uint32_t type, uint8_t *blocks, size_t n_blocks, size_t bb) {
    for (size_t i = 0; i < n_blocks; i++) {
        uint8_t *b = blocks + i * bb;
        const uint16_t h1 = rwkvc_fp32_to_fp16((rng_uniform() - 0.5f) * 0.02f);
        const uint16_t h2 = rwkvc_fp32_to_fp16(rng_uniform() * 0.01f);
        switch (type) {
        case RWKVC_TYPE_Q4_1:
        case RWKVC_TYPE_Q5_1:
        case RWKVC_TYPE_Q4_K:
        case RWKVC_TYPE_Q5_K:
            memcpy(b, &h1, 2);
            memcpy(b + 2, &h2, 2);
            break;
        case RWKVC_TYPE_Q6_K:
            memcpy(b + 208, &h1, 2);
            break;
        default:
            memcpy(b, &h1, 2);
            break;
        }
    }
}

/* Compares one SIMD kernel set with the reference for one shape; returns the worst error / tolerance ratio. */
static double compare_shape(uint32_t type, const rwkvc_type_traits *tr, const rwkvc_matmul_kernels *ref,
                            const rwkvc_matmul_kernels *simd, const char *isa, size_t rows, size_t n_blocks,
                            size_t n_vec, int raw) {
    const size_t cols = n_blocks * tr->block_size;
    const size_t row_bytes = n_blocks * tr->block_bytes;
    uint8_t *W = malloc(rows * row_bytes);
    float *Wf = malloc(rows * cols * sizeof(float));
    float *X = malloc(n_vec * cols * sizeof(float));
    const size_t ab = ref->act_bytes(cols);
    uint8_t *xr = malloc(n_vec * ab);
    uint8_t *xs = malloc(n_vec * ab);
    float *Yr = malloc(n_vec * rows * sizeof(float));
    float *Ys = malloc(n_vec * rows * sizeof(float));
    float *Yv = malloc(rows * sizeof(float));
    double worst = 0.0;

    if (raw) {
        for (size_t i = 0; i < rows * row_bytes; i++) {
            W[i] = (uint8_t)rng_u64();
        }
        sanitize_scales(type, W, rows * n_blocks, tr->block_bytes);
    } else {
        for (size_t i = 0; i < rows * cols; i++) {
            Wf[i] = rng_normal() * 0.05f + (i % 7 == 0 ? 0.01f : 0.0f);
        }
        for (size_t r = 0; r < rows; r++) {
            tr->quantize_row(Wf + r * cols, W + r * row_bytes, cols);
        }
    }
    for (size_t r = 0; r < rows; r++) {
        tr->dequantize_row(W + r * row_bytes, Wf + r * cols, cols);
    }
    for (size_t i = 0; i < n_vec * cols; i++) {
        /* Mostly Gaussian with a few outliers, and an all-zero block now and then. */
        float v = rng_normal();
        if (rng_u64() % 50 == 0) {
            v *= 20.0f;
        }
        X[i] = v;
    }
    if (n_blocks > 2) {
        memset(X + 32, 0, 32 * sizeof(float));
    }

    CHECK(simd->act_bytes(cols) == ab, "%s %s: act_bytes differ", tr->name, isa);
    for (size_t t = 0; t < n_vec; t++) {
        memset(xr + t * ab, 0xAB, ab);
        memset(xs + t * ab, 0xCD, ab);
        ref->prepare_act(X + t * cols, xr + t * ab, cols);
        simd->prepare_act(X + t * cols, xs + t * ab, cols);
        CHECK(memcmp(xr + t * ab, xs + t * ab, ab) == 0, "%s %s: prepared activations differ (cols %zu)", tr->name,
              isa, cols);
    }

    /* A row sub-range, so kernels must honour row_begin and leave other outputs alone. */
    const size_t r0 = rows > 2 ? rows / 3 : 0;
    const size_t r1 = rows;
    for (size_t i = 0; i < n_vec * rows; i++) {
        Yr[i] = NAN;
        Ys[i] = -12345.0f;
    }
    for (size_t t = 0; t < n_vec; t++) {
        ref->matvec(W, row_bytes, xr + t * ab, Yr + t * rows, r0, r1, cols);
    }
    simd->matmat(W, row_bytes, xs, ab, n_vec, Ys, rows, r0, r1, cols);
    for (size_t t = 0; t < n_vec; t++) {
        for (size_t i = 0; i < rows; i++) {
            Yv[i] = -12345.0f;
        }
        simd->matvec(W, row_bytes, xs + t * ab, Yv, r0, r1, cols);
        for (size_t r = 0; r < rows; r++) {
            if (r < r0) {
                CHECK(Ys[t * rows + r] == -12345.0f && Yv[r] == -12345.0f, "%s %s: wrote outside the row range",
                      tr->name, isa);
                continue;
            }
            /* Tolerance: float rounding noise relative to the sum of |products|. */
            double mag = 0.0;
            for (size_t c = 0; c < cols; c++) {
                mag += fabs((double)Wf[r * cols + c] * X[t * cols + c]);
            }
            const double tol = 2e-6 * mag + 1e-30;
            const double e1 = fabs((double)Ys[t * rows + r] - Yr[t * rows + r]);
            const double e2 = fabs((double)Yv[r] - Yr[t * rows + r]);
            const double ratio = (e1 > e2 ? e1 : e2) / tol;
            if (ratio > worst || isnan(ratio)) {
                worst = isnan(ratio) ? INFINITY : ratio;
            }
        }
    }
    CHECK(worst <= 1.0, "%s %s: rows %zu blocks %zu n_vec %zu raw %d: error/tolerance %.3g", tr->name, isa, rows,
          n_blocks, n_vec, raw, worst);
    free(W);
    free(Wf);
    free(X);
    free(xr);
    free(xs);
    free(Yr);
    free(Ys);
    free(Yv);
    return worst;
}

static void test_simd_vs_ref(const char *isa, const rwkvc_matmul_kernels *(*registry)(uint32_t)) {
    for (size_t k = 0; k < N_TYPES; k++) {
        const uint32_t type = k_types[k];
        const rwkvc_type_traits *tr = rwkvc_quant_traits(type);
        const rwkvc_matmul_kernels *ref = rwkvc_quant_kernels_ref(type);
        const rwkvc_matmul_kernels *simd = registry(type);
        if (!simd) {
            printf("  %-5s %-11s: no kernels (falls back)\n", tr->name, isa);
            continue;
        }
        double worst = 0.0;
        int shapes = 0;
        const size_t max_blocks = tr->block_size == 256 ? 12 : 20;
        for (size_t nb = 1; nb <= max_blocks; nb++) {
            for (size_t rows = 1; rows <= 37; rows += (tr->block_size == 256 ? 6 : 3)) {
                const size_t n_vec = 1 + (nb + rows) % 9;
                const double w = compare_shape(type, tr, ref, simd, isa, rows, nb, n_vec, (int)((nb + rows) & 1));
                worst = w > worst ? w : worst;
                shapes++;
            }
        }
        /* Sequence mode beyond one packed row block (64 rows) and two vector groups (16 vectors). */
        {
            const double w = compare_shape(type, tr, ref, simd, isa, 150, tr->block_size == 256 ? 2 : 5, 19, 0);
            worst = w > worst ? w : worst;
            shapes++;
        }
        /* Rows wider than the matvec kernels' per-call stack buffers (16384 columns): their fallback path. */
        {
            const double w = compare_shape(type, tr, ref, simd, isa, 5, 16640 / tr->block_size, 1, 1);
            worst = w > worst ? w : worst;
            shapes++;
        }
        printf("  %-5s %-11s: %d shapes, worst error/tolerance %.3f\n", tr->name, isa, shapes, worst);
    }
}

/*
 * The AMX path of the packed sequence-mode GEMM against its VNNI path: the same integer block dots scaled in the
 * same order, so the outputs must be equal bit for bit, over vector counts below, at and past the 16 vectors of
 * an AMX tile, partial 16-row tiles, and row ranges that start inside the matrix.
 */
static void test_amx_matches_vnni(void) {
    const rwkvc_cpu_flags *f = rwkvc_cpu_features();
    if (!f->amx_int8) {
        printf("  (no AMX-INT8 here: the AMX GEMM is not tested)\n");
        return;
    }
    static const size_t vecs[] = {4, 15, 16, 17, 40};
    static const size_t rows_list[] = {16, 37, 150};
    for (size_t k = 0; k < N_TYPES; k++) {
        const uint32_t type = k_types[k];
        if (type == RWKVC_TYPE_Q6_K) {
            continue; /* no packed GEMM */
        }
        const rwkvc_type_traits *tr = rwkvc_quant_traits(type);
        const rwkvc_matmul_kernels *K = rwkvc_quant_kernels_avx512(type);
        int cases = 0;
        for (size_t nbi = 0; nbi < 3; nbi++) {
            const size_t cols = tr->block_size * (tr->block_size == 256 ? 1 + 2 * nbi : 1 + 5 * nbi);
            for (size_t ri = 0; ri < 3; ri++) {
                const size_t rows = rows_list[ri];
                const size_t row_bytes = cols / tr->block_size * tr->block_bytes;
                const size_t ab = K->act_bytes(cols);
                const size_t n_max = vecs[4];
                float *Wf = malloc(rows * cols * sizeof(float));
                uint8_t *W = malloc(rows * row_bytes);
                float *X = malloc(cols * sizeof(float));
                uint8_t *xq = malloc(n_max * ab);
                float *Ya = malloc(n_max * rows * sizeof(float));
                float *Yv = malloc(n_max * rows * sizeof(float));
                for (size_t i = 0; i < rows * cols; i++) {
                    Wf[i] = rng_normal() * 0.05f;
                }
                for (size_t r = 0; r < rows; r++) {
                    tr->quantize_row(Wf + r * cols, W + r * row_bytes, cols);
                }
                for (size_t t = 0; t < n_max; t++) {
                    for (size_t c = 0; c < cols; c++) {
                        X[c] = rng_normal();
                    }
                    K->prepare_act(X, xq + t * ab, cols);
                }
                for (size_t vi = 0; vi < 5; vi++) {
                    const size_t n_vec = vecs[vi];
                    const size_t r0 = (vi % 2) * 16;
                    memset(Ya, 0, n_max * rows * sizeof(float));
                    memset(Yv, 0, n_max * rows * sizeof(float));
                    K->matmat(W, row_bytes, xq, ab, n_vec, Ya, rows, r0, rows, cols);
                    rwkvc_quant_disable_amx = 1;
                    K->matmat(W, row_bytes, xq, ab, n_vec, Yv, rows, r0, rows, cols);
                    rwkvc_quant_disable_amx = 0;
                    CHECK(memcmp(Ya, Yv, n_vec * rows * sizeof(float)) == 0,
                          "%s AMX GEMM differs from VNNI: rows %zu cols %zu n_vec %zu r0 %zu", tr->name, rows, cols,
                          n_vec, r0);
                    cases++;
                }
                free(Wf);
                free(W);
                free(X);
                free(xq);
                free(Ya);
                free(Yv);
            }
        }
        printf("  %-5s AMX GEMM bit-identical to VNNI in %d cases\n", tr->name, cases);
    }
}

/*
 * The activation with one scale per 256 elements (Q4_K / Q5_K, rwkvc_q8act_prepare_sb_ref): each group of 8 blocks
 * shares d = the group's amax / 127, the largest |x| of the group maps to +-127, s = d * sum(qs) per block; every
 * SIMD set's preparation gives the same bytes, also for column counts that end in a short group (the kernels
 * never ask for those, but the preparation must stay in bounds).
 */
static void test_sb_activation(void) {
    const size_t max_cols = 32 * 21;
    float *x = malloc(max_cols * sizeof(float));
    uint8_t *a = malloc(rwkvc_q8act_bytes(max_cols) + 64);
    uint8_t *b = malloc(rwkvc_q8act_bytes(max_cols) + 64);
    int cases = 0;
    for (size_t nb = 1; nb <= 21; nb++) {
        const size_t cols = 32 * nb;
        for (size_t i = 0; i < cols; i++) {
            x[i] = rng_normal() * (i % 64 < 32 ? 1.0f : 0.01f); /* blocks of very different sizes */
        }
        const size_t big = (nb * 7) % cols;
        x[big] = -9.0f;
        const size_t ab = rwkvc_q8act_bytes(cols);
        memset(a, 0xAB, ab + 64);
        rwkvc_q8act_prepare_sb_ref(x, a, cols);
        CHECK(a[ab] == 0xAB, "sb preparation of %zu columns wrote past its %zu bytes", cols, ab);
        const float *d = rwkvc_q8act_d(a);
        const float *sv = rwkvc_q8act_s(a, cols);
        const int8_t *q = rwkvc_q8act_qs(a, cols);
        for (size_t g = 0; g < nb; g += 8) {
            const size_t g1 = g + 8 < nb ? g + 8 : nb;
            float amax = 0.0f;
            for (size_t i = g * 32; i < g1 * 32; i++) {
                amax = fabsf(x[i]) > amax ? fabsf(x[i]) : amax;
            }
            int extreme = 0;
            for (size_t blk = g; blk < g1; blk++) {
                CHECK(d[blk] == amax / 127.0f, "cols %zu block %zu: d %g, want the group's amax / 127 %g", cols, blk,
                      d[blk], amax / 127.0f);
                int sum = 0;
                for (size_t i = blk * 32; i < blk * 32 + 32; i++) {
                    sum += q[i];
                    extreme |= q[i] == 127 || q[i] == -127;
                    CHECK(fabsf(q[i] * d[blk] - x[i]) <= 0.5f * d[blk] * 1.0001f, "cols %zu element %zu: %d * %g "
                          "is not x = %g to half a step", cols, i, q[i], d[blk], x[i]);
                }
                CHECK(sv[blk] == d[blk] * (float)sum, "cols %zu block %zu: s is not d * sum(qs)", cols, blk);
            }
            CHECK(extreme, "cols %zu group %zu: no quant reaches +-127", cols, g / 8);
        }
#if defined(__x86_64__) || defined(__i386__)
        const rwkvc_cpu_flags *f = rwkvc_cpu_features();
        const rwkvc_matmul_kernels *sets[2] = {f->avx2 ? rwkvc_quant_kernels_avx2(RWKVC_TYPE_Q4_K) : NULL,
                                               f->avx512 ? rwkvc_quant_kernels_avx512(RWKVC_TYPE_Q5_K) : NULL};
#elif defined(__aarch64__)
        const rwkvc_matmul_kernels *sets[2] = {rwkvc_quant_kernels_neon(RWKVC_TYPE_Q4_K), NULL};
#else
        const rwkvc_matmul_kernels *sets[2] = {NULL, NULL};
#endif
        for (int k = 0; k < 2; k++) {
            if (sets[k]) {
                memset(b, 0xCD, ab + 64);
                sets[k]->prepare_act(x, b, cols);
                CHECK(memcmp(a, b, ab) == 0 && b[ab] == 0xCD, "cols %zu: SIMD sb preparation %d differs", cols, k);
            }
        }
        cases++;
    }
    /* The kernel sets of Q4_K / Q5_K prepare this variant; the reference sets too. */
    CHECK(rwkvc_quant_kernels_ref(RWKVC_TYPE_Q4_K)->prepare_act == rwkvc_q8act_prepare_sb_ref &&
              rwkvc_quant_kernels_ref(RWKVC_TYPE_Q5_K)->prepare_act == rwkvc_q8act_prepare_sb_ref &&
              rwkvc_quant_kernels_ref(RWKVC_TYPE_Q6_K)->prepare_act == rwkvc_q8act_prepare_ref,
          "reference sets: Q4_K / Q5_K must prepare one scale per super-block, Q6_K one per block");
    printf("  super-block activation scales: %d column counts\n", cases);
    free(x);
    free(a);
    free(b);
}

/* Relative RMSE of quantize -> dequantize on Gaussian rows (quant-formats.md 5.3 x 1.5; K-quants from ggml). */
static void test_roundtrip_rmse(void) {
    static const struct {
        uint32_t type;
        double max_rel_rmse;
    } bounds[] = {{RWKVC_TYPE_Q8_0, 0.0054 * 1.5}, {RWKVC_TYPE_Q4_0, 0.086 * 1.5}, {RWKVC_TYPE_Q4_1, 0.078 * 1.5},
                  {RWKVC_TYPE_Q5_0, 0.043 * 1.5},  {RWKVC_TYPE_Q5_1, 0.038 * 1.5}, {RWKVC_TYPE_Q4_K, 0.078 * 1.5},
                  {RWKVC_TYPE_Q5_K, 0.038 * 1.5},  {RWKVC_TYPE_Q6_K, 0.02}};
    const size_t rows = 16;
    const size_t cols = 2048;
    float *x = malloc(rows * cols * sizeof(float));
    float *y = malloc(rows * cols * sizeof(float));
    uint8_t *q = malloc(rows * cols * 2);
    for (size_t i = 0; i < rows * cols; i++) {
        x[i] = rng_normal();
    }
    for (size_t k = 0; k < sizeof(bounds) / sizeof(bounds[0]); k++) {
        const rwkvc_type_traits *tr = rwkvc_quant_traits(bounds[k].type);
        const size_t qbytes = rows * cols / tr->block_size * tr->block_bytes;
        CHECK(rwkvc_quantize(bounds[k].type, x, rows, cols, q, qbytes) == RWKVC_OK, "quantize %s", tr->name);
        CHECK(rwkvc_dequantize(bounds[k].type, q, qbytes, y, rows * cols) == RWKVC_OK, "dequantize %s", tr->name);
        double se = 0.0;
        double sx = 0.0;
        for (size_t i = 0; i < rows * cols; i++) {
            se += (double)(y[i] - x[i]) * (y[i] - x[i]);
            sx += (double)x[i] * x[i];
        }
        const double rel = sqrt(se / sx);
        printf("  %-5s round trip relative RMSE %.4f%% (bound %.4f%%)\n", tr->name, 100 * rel,
               100 * bounds[k].max_rel_rmse);
        CHECK(rel <= bounds[k].max_rel_rmse, "%s relative RMSE %.5f above %.5f", tr->name, rel,
              bounds[k].max_rel_rmse);
        CHECK(rel > 1e-6, "%s round trip is lossless, which a quantizer cannot be", tr->name);
    }
    free(x);
    free(y);
    free(q);
}

/* Blocks whose ggml encoding follows by hand from the rounding rules of quant-formats.md. */
static void test_known_blocks(void) {
    float x[32];
    for (int j = 0; j < 32; j++) {
        x[j] = (float)(j - 16);
    }
    /* Q4_0: the largest magnitude is x[0] = -16, so d = -16 / -8 = 2, id = 0.5; q = trunc(x / 2 + 8.5), max 15. */
    rwkvc_block_q4_0 b4;
    CHECK(rwkvc_quantize(RWKVC_TYPE_Q4_0, x, 1, 32, &b4, sizeof(b4)) == RWKVC_OK, "q4_0 quantize");
    CHECK(b4.d == 0x4000, "q4_0 d = %#x, want 0x4000 (2.0)", b4.d);
    for (int j = 0; j < 16; j++) {
        const int lo = (j + 1) / 2;
        int hi = (j + 1) / 2 + 8;
        hi = hi > 15 ? 15 : hi;
        CHECK(b4.qs[j] == (uint8_t)(lo | (hi << 4)), "q4_0 qs[%d] = %#x, want %#x", j, b4.qs[j], lo | (hi << 4));
    }
    /* Q8_0: amax 16, d = 16/127, q = round(x * 127 / 16): x = -16 -> -127, -4 -> -32 (-31.75), 15 -> 119. */
    rwkvc_block_q8_0 b8;
    CHECK(rwkvc_quantize(RWKVC_TYPE_Q8_0, x, 1, 32, &b8, sizeof(b8)) == RWKVC_OK, "q8_0 quantize");
    CHECK(b8.d == rwkvc_fp32_to_fp16(16.0f / 127.0f), "q8_0 d");
    CHECK(b8.qs[0] == -127 && b8.qs[16] == 0 && b8.qs[12] == -32 && b8.qs[20] == 32 && b8.qs[31] == 119,
          "q8_0 quants %d %d %d %d %d", b8.qs[0], b8.qs[16], b8.qs[12], b8.qs[20], b8.qs[31]);
    /* Q4_1: min -16, max 15, d = 31/15, q = trunc((x + 16) * 15/31 + 0.5). */
    rwkvc_block_q4_1 b41;
    CHECK(rwkvc_quantize(RWKVC_TYPE_Q4_1, x, 1, 32, &b41, sizeof(b41)) == RWKVC_OK, "q4_1 quantize");
    CHECK(b41.m == rwkvc_fp32_to_fp16(-16.0f), "q4_1 m");
    CHECK((b41.qs[0] & 0x0F) == 0 && (b41.qs[15] >> 4) == 15 && (b41.qs[1] & 0x0F) == 0 && (b41.qs[2] & 0x0F) == 1,
          "q4_1 quants %#x %#x %#x", b41.qs[0], b41.qs[1], b41.qs[15]);
    /* All-zero input: zero scale and mid-point quants, no NaN. */
    float z[256] = {0};
    float back[256];
    for (size_t k = 0; k < N_TYPES; k++) {
        const rwkvc_type_traits *tr = rwkvc_quant_traits(k_types[k]);
        uint8_t buf[512];
        const size_t n = tr->block_size;
        CHECK(rwkvc_quantize(k_types[k], z, 1, n, buf, tr->block_bytes) == RWKVC_OK, "%s zero quantize", tr->name);
        CHECK(rwkvc_dequantize(k_types[k], buf, tr->block_bytes, back, n) == RWKVC_OK, "%s zero dequantize",
              tr->name);
        for (size_t j = 0; j < n; j++) {
            CHECK(back[j] == 0.0f, "%s: zero block dequantizes to %g", tr->name, back[j]);
        }
    }
}

/*
 * FNV-1a hashes of ggml's own reference quantization (quantize_row_*_ref of ggml 0c1e57098, the llama.cpp inside
 * llama-cpp-python 0.3.36, compiled without FMA) of two fixed inputs: small values with outliers, and coarse
 * values full of exact rounding ties. Ours must produce the same bytes, so our files are llama.cpp's, on every
 * platform. These came from ggml, not from us: a mismatch is a bug here, never a reason to update them.
 */
static uint64_t fnv1a(const uint8_t *p, size_t n) {
    uint64_t h = 0xcbf29ce484222325ull;
    for (size_t i = 0; i < n; i++) {
        h = (h ^ p[i]) * 0x100000001b3ull;
    }
    return h;
}

static void golden_input(float *x, size_t n, int which) {
    uint64_t s = 88172645463325252ull;
    for (size_t i = 0; i < n; i++) {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        const double u = (double)(s >> 11) / 9007199254740992.0;
        float v = which == 0 ? (float)((u - 0.5) * 0.02) : (float)((int)(u * 64) - 32) / 8.0f;
        if (which == 0 && i % 97 == 0) {
            v *= 30;
        }
        if (which == 1 && i % 1024 < 32) {
            v = 0;
        }
        x[i] = v;
    }
}

static void test_ggml_golden_hashes(void) {
    static const struct {
        uint32_t type;
        uint64_t hash[2];
    } golden[] = {
        {RWKVC_TYPE_Q8_0, {0x51756dfd85a319f5ull, 0x5c01f56c09ab4ffcull}},
        {RWKVC_TYPE_Q4_0, {0x42544f053202812full, 0x99ae028e0dc605dbull}},
        {RWKVC_TYPE_Q4_1, {0x3dbfa08f67fc317aull, 0x22eb869cdb6542cdull}},
        {RWKVC_TYPE_Q5_0, {0xa9dc06b52b01008cull, 0xdd3e5209ca8ca855ull}},
        {RWKVC_TYPE_Q5_1, {0xddd5d8fd2115cdd9ull, 0x407c451d3b94661aull}},
        {RWKVC_TYPE_Q4_K, {0xdb8763128a8cf21cull, 0xd15ba0220313492aull}},
        {RWKVC_TYPE_Q5_K, {0x6fb8fc3c0382951eull, 0x65a8187077945eb7ull}},
        {RWKVC_TYPE_Q6_K, {0xe019104e9a5a789cull, 0x06e687cbd7f645c1ull}},
    };
    const size_t rows = 64;
    const size_t cols = 2048;
    float *x = malloc(rows * cols * sizeof(float));
    uint8_t *buf = malloc(rows * cols * 2);
    for (int which = 0; which < 2; which++) {
        golden_input(x, rows * cols, which);
        for (size_t k = 0; k < sizeof(golden) / sizeof(golden[0]); k++) {
            const rwkvc_type_traits *tr = rwkvc_quant_traits(golden[k].type);
            const size_t n = rows * cols / tr->block_size * tr->block_bytes;
            CHECK(rwkvc_quantize(golden[k].type, x, rows, cols, buf, n) == RWKVC_OK, "%s quantize", tr->name);
            const uint64_t h = fnv1a(buf, n);
            CHECK(h == golden[k].hash[which], "%s input %d: bytes hash %#018llx, ggml's %#018llx", tr->name, which,
                  (unsigned long long)h, (unsigned long long)golden[k].hash[which]);
        }
    }
    free(x);
    free(buf);
}

static void test_api_errors(void) {
    float x[64] = {0};
    uint8_t buf[128];
    CHECK(rwkvc_quantize(99, x, 1, 32, buf, 34) == RWKVC_ERR_ARG, "unknown type accepted");
    CHECK(rwkvc_quantize(RWKVC_TYPE_Q8_0, x, 1, 33, buf, 34) == RWKVC_ERR_ARG, "row length 33 accepted");
    CHECK(rwkvc_quantize(RWKVC_TYPE_Q8_0, x, 1, 32, buf, 35) == RWKVC_ERR_SIZE, "wrong dst_len accepted");
    CHECK(rwkvc_quantize(RWKVC_TYPE_Q4_K, x, 1, 64, buf, 128) == RWKVC_ERR_ARG, "q4_K row of 64 accepted");
    CHECK(rwkvc_quantize(RWKVC_TYPE_Q8_K, x, 1, 256, buf, 128) == RWKVC_ERR_ARG, "q8_K weights accepted");
    CHECK(rwkvc_dequantize(RWKVC_TYPE_Q8_0, buf, 33, x, 32) == RWKVC_ERR_SIZE, "short source accepted");
    CHECK(rwkvc_dequantize(RWKVC_TYPE_Q8_0, buf, 34, x, 31) == RWKVC_ERR_ARG, "partial block accepted");
    const char *name = NULL;
    size_t bs = 0;
    size_t bb = 0;
    CHECK(rwkvc_type_info(RWKVC_TYPE_Q5_K, &name, &bs, &bb) == RWKVC_OK && strcmp(name, "q5_K") == 0 && bs == 256 &&
              bb == 176,
          "type_info q5_K");
}

int main(void) {
    const rwkvc_cpu_flags *f = rwkvc_cpu_features();
    printf("SIMD kernels vs scalar reference:\n");
#if defined(__x86_64__) || defined(__i386__)
    if (f->avx2) {
        test_simd_vs_ref("avx2", rwkvc_quant_kernels_avx2);
    } else {
        printf("  (no AVX2 on this CPU)\n");
    }
    if (f->avx512) {
        test_simd_vs_ref(f->avx512_vnni ? "avx512-vnni" : "avx512", rwkvc_quant_kernels_avx512);
        if (f->avx512_vnni) {
            /* The same kernels on their non-VNNI path (what AVX-512 CPUs without VNNI run). */
            rwkvc_quant_disable_vnni = 1;
            test_simd_vs_ref("avx512", rwkvc_quant_kernels_avx512);
            rwkvc_quant_disable_vnni = 0;
            test_amx_matches_vnni();
        }
    } else {
        printf("  (no AVX-512 on this CPU)\n");
    }
#endif
#if defined(__aarch64__)
    test_simd_vs_ref("neon", rwkvc_quant_kernels_neon);
#endif
    (void)f;
    test_sb_activation();
    printf("Round trip:\n");
    test_roundtrip_rmse();
    test_known_blocks();
    test_ggml_golden_hashes();
    test_api_errors();
    if (g_failures) {
        printf("%d failure(s)\n", g_failures);
        return 1;
    }
    printf("all quant tests passed\n");
    return 0;
}
