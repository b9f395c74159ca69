/*
 * test_kernels.c: every SIMD float kernel available on this CPU against the scalar reference, plus the
 * fp16/bf16 conversions and the dispatcher's fallback chain.
 *
 * Matrices are random with rows 1..70 and column counts that are and are not multiples of the SIMD widths.
 * SIMD sums in a different order than the reference, so the check is |y - y_ref| <= 2e-6 * sum_c |W x| per
 * output (a bound that a wrong element or a dropped column tail breaks by orders of magnitude). Rows outside
 * [row_begin, row_end) must stay untouched. Below RWKVC_GEMM_MIN_VEC vectors, matvec and matmat of one kernel set
 * must agree bit for bit; from it on, a set with a blocked GEMM must give rwkvc_float_matmat_fma_ref's bits
 * exactly (checked here on odd shapes and, in check_gemm, on shapes that span several row and column blocks).
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#if defined(__x86_64__) || defined(__i386__)
#define TEST_X86 1
#include <immintrin.h>
#endif
#if defined(__aarch64__)
#define TEST_ARM 1
#endif

#include "cpu.h"
#include "fp16.h"
#include "kernels.h"
#include "vexp.h"
#include "wkv7.h"

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
    return (float)((g_rng >> 11) * (1.0 / 9007199254740992.0)) * 2.0f - 1.0f;
}

static const uint32_t TYPES[3] = {0, 1, 30};
static const size_t COLS[] = {1, 3, 7, 8, 15, 16, 17, 31, 33, 64, 100, 129, 256, 1000};
static const size_t ROWS[] = {1, 2, 3, 4, 5, 7, 16, 17, 33, 70};
static const size_t NVEC[] = {1, 2, 3, 4, 5, 6, 9, 15, 16, 17, 33, 64, 70};
#define NVEC_MAX 70

#define SENTINEL 12345.0f

/*
 * gemm: whether the set runs the blocked GEMM from RWKVC_GEMM_MIN_VEC vectors on (its matmat must then equal
 * rwkvc_float_matmat_fma_ref bit for bit there); otherwise matmat must equal matvec bit for bit at every n_vec.
 */
static void check_set(const char *isa_name, uint32_t type, const rwkvc_matmul_kernels *ks,
                      const rwkvc_matmul_kernels *kr, int gemm) {
    const rwkvc_type_traits *tr = rwkvc_type_traits_get(type);
    for (size_t ci = 0; ci < sizeof(COLS) / sizeof(COLS[0]); ci++) {
        for (size_t ri = 0; ri < sizeof(ROWS) / sizeof(ROWS[0]); ri++) {
            size_t cols = COLS[ci], rows = ROWS[ri];
            size_t row_bytes = cols * tr->block_bytes;
            size_t nmax = NVEC_MAX;
            float *wf = malloc(rows * cols * sizeof(float));
            void *w = malloc(rows * row_bytes);
            float *wd = malloc(rows * cols * sizeof(float));
            /* X rows padded by 5 floats, so x_stride != cols is exercised. */
            size_t xs = cols + 5;
            float *x = malloc(nmax * xs * sizeof(float));
            size_t ldy = rows + 3;
            float *yr = malloc(nmax * ldy * sizeof(float));
            float *ys = malloc(nmax * ldy * sizeof(float));
            float *yv = malloc(ldy * sizeof(float));
            float *yf = malloc(nmax * ldy * sizeof(float));
            for (size_t i = 0; i < rows * cols; i++) {
                wf[i] = frand();
            }
            tr->quantize_row(wf, w, rows * cols);
            tr->dequantize_row(w, wd, rows * cols);
            for (size_t i = 0; i < nmax * xs; i++) {
                x[i] = frand();
            }
            for (size_t ni = 0; ni < sizeof(NVEC) / sizeof(NVEC[0]); ni++) {
                size_t n = NVEC[ni];
                /* A sub-range of rows, to check that rows outside it are left alone. */
                size_t r0 = rows > 2 ? 1 : 0, r1 = rows > 3 ? rows - 1 : rows;
                for (size_t i = 0; i < nmax * ldy; i++) {
                    yr[i] = ys[i] = SENTINEL;
                }
                kr->matmat(w, row_bytes, x, xs * sizeof(float), n, yr, ldy, r0, r1, cols);
                ks->matmat(w, row_bytes, x, xs * sizeof(float), n, ys, ldy, r0, r1, cols);
                for (size_t t = 0; t < n; t++) {
                    for (size_t r = 0; r < ldy; r++) {
                        float got = ys[t * ldy + r], want = yr[t * ldy + r];
                        if (r < r0 || r >= r1) {
                            CHECK(got == SENTINEL && want == SENTINEL, "%s %s: row %zu outside [%zu,%zu) written",
                                  isa_name, tr->name, r, r0, r1);
                            continue;
                        }
                        double mag = 0.0;
                        for (size_t c = 0; c < cols; c++) {
                            mag += fabs((double)wd[r * cols + c] * x[t * xs + c]);
                        }
                        CHECK(fabs((double)got - want) <= 2e-6 * mag + 1e-30,
                              "%s %s matmat rows %zu cols %zu n %zu: y[%zu][%zu] = %.9g, reference %.9g", isa_name,
                              tr->name, rows, cols, n, t, r, got, want);
                    }
                    /* matvec of vector t gives the same bits as matmat's row t. */
                    for (size_t r = 0; r < ldy; r++) {
                        yv[r] = SENTINEL;
                    }
                    ks->matvec(w, row_bytes, x + t * xs, yv, r0, r1, cols);
                    for (size_t r = r0; r < r1 && !(gemm && n >= RWKVC_GEMM_MIN_VEC); r++) {
                        CHECK(memcmp(&yv[r], &ys[t * ldy + r], sizeof(float)) == 0,
                              "%s %s matvec != matmat at rows %zu cols %zu n %zu t %zu r %zu", isa_name, tr->name,
                              rows, cols, n, t, r);
                    }
                    CHECK(r0 == 0 || yv[0] == SENTINEL, "%s %s matvec wrote row 0 outside its range", isa_name,
                          tr->name);
                }
                if (gemm && n >= RWKVC_GEMM_MIN_VEC) {
                    /* The GEMM's bits are those of the FMA-chain reference. */
                    for (size_t i = 0; i < nmax * ldy; i++) {
                        yf[i] = SENTINEL;
                    }
                    rwkvc_float_matmat_fma_ref(type, w, row_bytes, x, xs * sizeof(float), n, yf, ldy, r0, r1, cols);
                    CHECK(memcmp(yf, ys, n * ldy * sizeof(float)) == 0,
                          "%s %s GEMM != FMA-chain reference at rows %zu cols %zu n %zu", isa_name, tr->name, rows,
                          cols, n);
                }
            }
            free(wf);
            free(w);
            free(wd);
            free(x);
            free(yr);
            free(ys);
            free(yv);
            free(yf);
        }
    }
}

/*
 * The GEMM on shapes that span several row blocks, column blocks and token blocks, called on row ranges as the
 * thread pool cuts them (and on odd ones): bits equal to the FMA-chain reference, tolerance against the plain one.
 */
static void check_gemm(const char *isa_name, uint32_t type, const rwkvc_matmul_kernels *ks,
                       const rwkvc_matmul_kernels *kr) {
    static const struct {
        size_t rows, cols, n, r0, r1;
    } CASES[] = {
        {400, 1000, 64, 0, 400}, {397, 129, 70, 3, 395}, {256, 300, 130, 16, 240},
        {450, 64, RWKVC_GEMM_MIN_VEC, 0, 449}, {200, 17, 33, 1, 200}, {333, 200, 40, 5, 330}, {50, 31, 50, 0, 50},
    };
    const rwkvc_type_traits *tr = rwkvc_type_traits_get(type);
    for (size_t ci = 0; ci < sizeof(CASES) / sizeof(CASES[0]); ci++) {
        size_t rows = CASES[ci].rows, cols = CASES[ci].cols, n = CASES[ci].n, r0 = CASES[ci].r0, r1 = CASES[ci].r1;
        size_t row_bytes = cols * tr->block_bytes, xs = cols + 3, ldy = rows + 1;
        float *wf = malloc(rows * cols * sizeof(float));
        void *w = malloc(rows * row_bytes);
        float *x = malloc(n * xs * sizeof(float));
        float *ys = malloc(n * ldy * sizeof(float)), *yf = malloc(n * ldy * sizeof(float));
        float *yr = malloc(n * ldy * sizeof(float));
        for (size_t i = 0; i < rows * cols; i++) {
            wf[i] = frand();
        }
        tr->quantize_row(wf, w, rows * cols);
        for (size_t i = 0; i < n * xs; i++) {
            x[i] = frand();
        }
        for (size_t i = 0; i < n * ldy; i++) {
            ys[i] = yf[i] = yr[i] = SENTINEL;
        }
        /* Two calls on the halves of the range, split at a multiple of 16 as the pool does. */
        size_t mid = r0 + ((r1 - r0) / 2) / 16 * 16;
        ks->matmat(w, row_bytes, x, xs * sizeof(float), n, ys, ldy, r0, mid, cols);
        ks->matmat(w, row_bytes, x, xs * sizeof(float), n, ys, ldy, mid, r1, cols);
        rwkvc_float_matmat_fma_ref(type, w, row_bytes, x, xs * sizeof(float), n, yf, ldy, r0, r1, cols);
        kr->matmat(w, row_bytes, x, xs * sizeof(float), n, yr, ldy, r0, r1, cols);
        CHECK(memcmp(yf, ys, n * ldy * sizeof(float)) == 0, "%s %s GEMM rows %zu cols %zu n %zu != FMA reference",
              isa_name, tr->name, rows, cols, n);
        double worst = 0.0;
        for (size_t t = 0; t < n; t++) {
            for (size_t r = r0; r < r1; r++) {
                double d = fabs((double)ys[t * ldy + r] - yr[t * ldy + r]), mag = 0.0;
                const float *xt = x + t * xs;
                for (size_t c = 0; c < cols; c++) {
                    mag += fabs((double)wf[r * cols + c] * xt[c]);
                }
                /* Quantized weights differ from wf by at most 2^-8 relative, well inside the bound's slack. */
                worst = d / (mag * 1.01 + 1e-30) > worst ? d / (mag * 1.01 + 1e-30) : worst;
            }
        }
        CHECK(worst <= 2e-6, "%s %s GEMM rows %zu cols %zu n %zu: |y - ref| up to %g x sum|W x|", isa_name, tr->name,
              rows, cols, n, worst);
        free(wf);
        free(w);
        free(x);
        free(ys);
        free(yf);
        free(yr);
    }
}

/*
 * The optional sequence mode on prepared activations (AMX-BF16 for f16/bf16): the split-bf16 sums are within
 * 2^-16 sum_c |W x| of the exact (double) products of the stored weights (measured: about 2^-21); a left-out
 * wl or xl term breaks that by 2^3 or more. Also: rows outside [r0, r1) and vectors past n stay untouched, a
 * split row range gives the same bits, and the test hook turns the mode off. Returns the cases run.
 */
static int check_seq(const char *isa_name, uint32_t type, const rwkvc_matmul_kernels *ks) {
    static const struct {
        size_t rows, cols, n, r0, r1;
    } CASES[] = {
        {400, 1000, 64, 0, 400}, {397, 129, 70, 3, 395}, {256, 300, 130, 16, 240}, {450, 64, 32, 0, 449},
        {200, 17, 33, 1, 200},   {333, 200, 40, 5, 330}, {50, 31, 50, 0, 50},      {40, 2048, 48, 0, 40},
        {130, 1, 35, 0, 130},    {47, 160, 64, 0, 47},      {70, 100, 300, 0, 70},  {96, 257, 257, 16, 96},
    };
    if (!ks->seq_act_bytes || ks->seq_act_bytes(64) == 0) {
        return 0;
    }
    rwkvc_float_disable_amx = 1;
    CHECK(ks->seq_act_bytes(64) == 0, "%s: the test hook leaves the sequence mode on", isa_name);
    rwkvc_float_disable_amx = 0;
    const rwkvc_type_traits *tr = rwkvc_type_traits_get(type);
    int n_cases = 0;
    for (size_t ci = 0; ci < sizeof(CASES) / sizeof(CASES[0]); ci++) {
        size_t rows = CASES[ci].rows, cols = CASES[ci].cols, n = CASES[ci].n, r0 = CASES[ci].r0, r1 = CASES[ci].r1;
        size_t row_bytes = cols * tr->block_bytes, xs = cols + 3, ldy = rows + 1;
        /* Y has 16 vectors more than n, which must stay untouched. */
        size_t ny = n + 16;
        float *wf = malloc(rows * cols * sizeof(float)), *wd = malloc(rows * cols * sizeof(float));
        void *w = malloc(rows * row_bytes);
        float *x = malloc(n * xs * sizeof(float));
        size_t prep_bytes = rwkvc_seq_act_total(ks->seq_act_bytes(cols), n);
        void *xp = aligned_alloc(64, (prep_bytes + 63) / 64 * 64);
        float *ys = malloc(ny * ldy * sizeof(float)), *yw = malloc(ny * ldy * sizeof(float));
        for (size_t i = 0; i < rows * cols; i++) {
            wf[i] = frand();
        }
        tr->quantize_row(wf, w, rows * cols);
        tr->dequantize_row(w, wd, rows * cols);
        for (size_t i = 0; i < n * xs; i++) {
            /* Activations over a few orders of magnitude, so that xl matters everywhere. */
            x[i] = frand() * (float)(1 << (i % 7));
        }
        for (size_t i = 0; i < ny * ldy; i++) {
            ys[i] = yw[i] = SENTINEL;
        }
        ks->prepare_seq(x, xs, n, xp, cols);
        size_t mid = r0 + ((r1 - r0) / 2) / 16 * 16;
        ks->matmat_seq(w, row_bytes, xp, n, ys, ldy, r0, mid, cols);
        ks->matmat_seq(w, row_bytes, xp, n, ys, ldy, mid, r1, cols);
        ks->matmat_seq(w, row_bytes, xp, n, yw, ldy, r0, r1, cols);
        CHECK(memcmp(ys, yw, ny * ldy * sizeof(float)) == 0, "%s %s seq rows %zu cols %zu n %zu: split range differs",
              isa_name, tr->name, rows, cols, n);
        double worst = 0.0;
        int untouched = 1;
        for (size_t t = 0; t < ny; t++) {
            for (size_t r = 0; r < ldy; r++) {
                float y = ys[t * ldy + r];
                if (t >= n || r < r0 || r >= r1) {
                    untouched &= y == SENTINEL;
                    continue;
                }
                double exact = 0.0, mag = 0.0;
                for (size_t c = 0; c < cols; c++) {
                    double p = (double)wd[r * cols + c] * x[t * xs + c];
                    exact += p;
                    mag += fabs(p);
                }
                double e = fabs(y - exact) / (mag + 1e-30);
                worst = e > worst ? e : worst;
            }
        }
        CHECK(untouched, "%s %s seq rows %zu cols %zu n %zu: wrote outside its rows or vectors", isa_name, tr->name,
              rows, cols, n);
        CHECK(worst <= 1.0 / 65536, "%s %s seq rows %zu cols %zu n %zu: |y - exact| up to 2^%.1f x sum|W x|",
              isa_name, tr->name, rows, cols, n, log2(worst));
        n_cases++;
        free(wf);
        free(wd);
        free(w);
        free(x);
        free(xp);
        free(ys);
        free(yw);
    }
    return n_cases;
}

#if defined(TEST_X86)
__attribute__((target("f16c"))) static uint16_t hw_fp32_to_fp16(float f) {
    return (uint16_t)_cvtss_sh(f, 0);
}
__attribute__((target("f16c"))) static float hw_fp16_to_fp32(uint16_t h) {
    return _cvtsh_ss(h);
}
#endif

static void test_conversions(void) {
    /* Every half value survives fp16 -> fp32 -> fp16 (NaNs stay NaN). */
    for (uint32_t h = 0; h < 65536; h++) {
        float f = rwkvc_fp16_to_fp32((uint16_t)h);
        uint16_t back = rwkvc_fp32_to_fp16(f);
        int is_nan = ((h & 0x7C00) == 0x7C00) && (h & 0x3FF);
        if (is_nan) {
            CHECK(f != f && ((back & 0x7C00) == 0x7C00) && (back & 0x3FF), "fp16 NaN %04x not kept", h);
        } else {
            CHECK(back == h, "fp16 %04x -> %.9g -> %04x", h, f, back);
        }
    }
    /* Known roundings. */
    CHECK(rwkvc_fp32_to_fp16(65504.0f) == 0x7BFF, "65504 -> max half");
    CHECK(rwkvc_fp32_to_fp16(65520.0f) == 0x7C00, "65520 -> inf");
    CHECK(rwkvc_fp32_to_fp16(1.0f + 1.0f / 2048.0f) == 0x3C00, "tie to even at 1 + 2^-11");
    CHECK(rwkvc_fp32_to_fp16(5.9604645e-08f) == 0x0001, "2^-24 -> smallest subnormal");
    CHECK(rwkvc_fp32_to_bf16(1.0f) == 0x3F80, "bf16(1)");
    CHECK(rwkvc_bf16_to_fp32(0x3F80) == 1.0f, "bf16 0x3f80");
    /* bf16 round to nearest even: 1 + 2^-8 is a tie between 0x3F80 and 0x3F81 -> even 0x3F80. */
    CHECK(rwkvc_fp32_to_bf16(1.0f + 1.0f / 256.0f) == 0x3F80, "bf16 tie to even");
    CHECK(rwkvc_fp32_to_bf16(1.0f + 3.0f / 512.0f) == 0x3F81, "bf16 round up");
#if defined(TEST_X86)
    if (rwkvc_cpu_features()->f16c) {
        /* Random floats over a wide exponent range, subnormal halves included, against vcvtps2ph. */
        for (int i = 0; i < 200000; i++) {
            float f = frand() * ldexpf(1.0f, (int)(frand() * 40.0f) - 12);
            uint16_t a = rwkvc_fp32_to_fp16(f), b = hw_fp32_to_fp16(f);
            CHECK(a == b, "fp32 %.9g -> fp16 %04x, F16C gives %04x", f, a, b);
            if (a != b) {
                break;
            }
        }
        for (uint32_t h = 0; h < 65536; h++) {
            float a = rwkvc_fp16_to_fp32((uint16_t)h), b = hw_fp16_to_fp32((uint16_t)h);
            CHECK(a == b || (a != a && b != b), "fp16 %04x -> %.9g, F16C gives %.9g", h, a, b);
        }
    }
#endif
}

static void test_dispatch(void) {
    for (int i = 0; i < 3; i++) {
        CHECK(rwkvc_matmul_get(TYPES[i], RWKVC_ISA_SCALAR) == rwkvc_float_kernels_ref(TYPES[i]),
              "scalar kernels of type %u", TYPES[i]);
        CHECK(rwkvc_type_traits_get(TYPES[i]) != NULL, "traits of type %u", TYPES[i]);
    }
    CHECK(rwkvc_matmul_get(12345, RWKVC_ISA_SCALAR) == NULL, "unknown type has no kernels");
    CHECK(rwkvc_type_traits_get(12345) == NULL, "unknown type has no traits");
    CHECK(strcmp(rwkvc_isa_name(RWKVC_ISA_AVX512), "avx512") == 0, "isa name");
    CHECK(strcmp(rwkvc_isa_name(RWKVC_ISA_SCALAR), "scalar") == 0, "isa name");
#if defined(TEST_X86)
    /* The x86 chain: avx512 -> avx2 -> scalar; float types exist at every level. */
    CHECK(rwkvc_matmul_get(1, RWKVC_ISA_AVX512) == rwkvc_float_kernels_avx512(1), "avx512 f16");
    CHECK(rwkvc_matmul_get(1, RWKVC_ISA_AVX2) == rwkvc_float_kernels_avx2(1), "avx2 f16");
#endif
    rwkvc_isa isa = rwkvc_isa_detect();
    const rwkvc_cpu_flags *f = rwkvc_cpu_features();
    CHECK((isa == RWKVC_ISA_AVX512) == (f->avx512 != 0), "detect agrees with flags");
    setenv("RWKVC_FORCE_SCALAR", "1", 1);
    CHECK(rwkvc_isa_select() == RWKVC_ISA_SCALAR, "RWKVC_FORCE_SCALAR=1 selects scalar");
    unsetenv("RWKVC_FORCE_SCALAR");
    CHECK(rwkvc_isa_select() == isa, "without RWKVC_FORCE_SCALAR the detected level is used");
    setenv("RWKVC_ISA", "scalar", 1);
    CHECK(rwkvc_isa_select() == RWKVC_ISA_SCALAR, "RWKVC_ISA=scalar");
    setenv("RWKVC_ISA", "avx2", 1);
    CHECK(rwkvc_isa_select() == (isa == RWKVC_ISA_AVX512 || isa == RWKVC_ISA_AVX2 ? RWKVC_ISA_AVX2 : isa),
          "RWKVC_ISA=avx2 caps an AVX-512 CPU and is ignored where AVX2 is missing");
    setenv("RWKVC_ISA", isa == RWKVC_ISA_NEON ? "avx512" : "neon", 1);
    CHECK(rwkvc_isa_select() == isa, "RWKVC_ISA naming a foreign level is ignored");
    unsetenv("RWKVC_ISA");
}

/* max(a, b) that returns NaN when b is NaN, so a NaN fails the tolerance checks. */
static double nanmax(double a, double b) {
    return b <= a ? a : b;
}

/* The SIMD WKV recurrences against the reference, for head sizes that use and that skip the SIMD path. */
static void check_wkv(const char *isa_name, rwkvc_wkv7_fn fn) {
    static const size_t NS[] = {64, 32, 16, 24, 8, 5};
    for (size_t ni = 0; ni < sizeof(NS) / sizeof(NS[0]); ni++) {
        const size_t N = NS[ni], T = 7, stride = N + 3;
        float *S0 = malloc(N * N * sizeof(float)), *S1 = malloc(N * N * sizeof(float));
        float *in[6], *y0 = malloc(T * stride * sizeof(float)), *y1 = malloc(T * stride * sizeof(float));
        for (int v = 0; v < 6; v++) {
            in[v] = malloc(T * stride * sizeof(float));
            for (size_t i = 0; i < T * stride; i++) {
                in[v][i] = frand();
            }
        }
        /* Decays in (0.545, 1) as the model produces them; kk of unit norm is not needed for the comparison. */
        for (size_t i = 0; i < T * stride; i++) {
            in[1][i] = 0.77f + 0.22f * in[1][i];
        }
        for (size_t i = 0; i < N * N; i++) {
            S0[i] = S1[i] = frand();
        }
        rwkvc_wkv7_ref(S0, N, T, stride, in[0], in[1], in[2], in[3], in[4], in[5], y0);
        fn(S1, N, T, stride, in[0], in[1], in[2], in[3], in[4], in[5], y1);
        double ds = 0.0, dy = 0.0, ms = 0.0, my = 0.0;
        for (size_t i = 0; i < N * N; i++) {
            ds = nanmax(ds, fabs((double)S0[i] - S1[i]));
            ms = nanmax(ms, fabs(S0[i]));
        }
        for (size_t t = 0; t < T; t++) {
            for (size_t j = 0; j < N; j++) {
                dy = nanmax(dy, fabs((double)y0[t * stride + j] - y1[t * stride + j]));
                my = nanmax(my, fabs(y0[t * stride + j]));
            }
        }
        CHECK(ds <= 1e-5 * ms && dy <= 1e-5 * my,
              "%s wkv7 N %zu: state differs by %g (max %g), y by %g (max %g)", isa_name, N, ds, ms, dy, my);
        for (int v = 0; v < 6; v++) {
            free(in[v]);
        }
        free(S0);
        free(S1);
        free(y0);
        free(y1);
    }
}

/* Distance in units in the last place between two finite floats of one sign (large when signs differ). */
static uint32_t ulp_distance(float a, float b) {
    uint32_t ua, ub;
    memcpy(&ua, &a, 4);
    memcpy(&ub, &b, 4);
    if ((ua ^ ub) >> 31) {
        return (ua & 0x7fffffffu) + (ub & 0x7fffffffu);
    }
    return ua > ub ? ua - ub : ub - ua;
}

/*
 * A SIMD e^x against the reference (the C library's expf): the same bits on glibc 2.28 and later, whose expf runs
 * the algorithm the SIMD versions copy (vexp.h), within 1 ulp elsewhere. Inputs: a fine sweep of [-110, 110] (every
 * gate and decay argument, the overflow and underflow edges), special values, and random bit patterns of every
 * exponent; array lengths that do and do not fill whole vectors (the tail goes through a padded copy).
 */
static void check_expf(const char *isa_name, rwkvc_expf_fn fn) {
#if defined(__GLIBC__) && (__GLIBC__ > 2 || (__GLIBC__ == 2 && __GLIBC_MINOR__ >= 28))
    const uint32_t max_ulp = 0;
#else
    const uint32_t max_ulp = 1;
#endif
    enum { N_SWEEP = 220001, N_RANDOM = 200000, N_SPECIAL = 16 };
    const size_t n = N_SWEEP + N_RANDOM + N_SPECIAL;
    float *x = malloc(n * sizeof(float));
    float *y = malloc(n * sizeof(float));
    float *yr = malloc(n * sizeof(float));
    size_t k = 0;
    for (int i = 0; i < N_SWEEP; i++) {
        x[k++] = -110.0f + 0.001f * (float)i;
    }
    uint64_t rng = 0x9e3779b97f4a7c15ull;
    for (int i = 0; i < N_RANDOM; i++) {
        rng = rng * 6364136223846793005ull + 1442695040888963407ull;
        const uint32_t bits = (uint32_t)(rng >> 32);
        memcpy(&x[k++], &bits, 4);
    }
    const float specials[N_SPECIAL] = {0.0f,      -0.0f,       INFINITY,    -INFINITY,   NAN,         88.72283f,
                                       88.72284f, -103.97208f, -103.97209f, -103.2789f,  -87.33655f,  1e-30f,
                                       -1e-30f,   1.4e-45f,    80.0f,       -79.99999f};
    for (int i = 0; i < N_SPECIAL; i++) {
        x[k++] = specials[i];
    }
    static const size_t LENS[] = {1, 7, 15, 16, 17, 33, 100};
    size_t bad = 0;
    for (size_t li = 0; li < sizeof(LENS) / sizeof(LENS[0]) + 1; li++) {
        /* The whole input at once, then pieces of one length (the last entry: whole arrays only). */
        const size_t len = li < sizeof(LENS) / sizeof(LENS[0]) ? LENS[li] : n;
        memcpy(y, x, n * sizeof(float));
        memcpy(yr, x, n * sizeof(float));
        for (size_t i = 0; i < n; i += len) {
            const size_t m = n - i < len ? n - i : len;
            fn(y + i, m);
            rwkvc_expf_ref(yr + i, m);
        }
        for (size_t i = 0; i < n; i++) {
            const int both_nan = isnan(y[i]) && isnan(yr[i]);
            const int same_inf = isinf(y[i]) && y[i] == yr[i];
            if (!both_nan && !same_inf && (isnan(y[i]) || isnan(yr[i]) || ulp_distance(y[i], yr[i]) > max_ulp)) {
                if (bad++ < 5) {
                    fprintf(stderr, "%s expf(%a) = %a, reference %a\n", isa_name, x[i], y[i], yr[i]);
                }
            }
        }
    }
    CHECK(bad == 0, "%s expf: %zu results beyond %u ulp of the reference", isa_name, bad, max_ulp);
    free(x);
    free(y);
    free(yr);
}

int main(void) {
    test_conversions();
    test_dispatch();
    const rwkvc_cpu_flags *f = rwkvc_cpu_features();
    int n_sets = 0;
    for (int i = 0; i < 3; i++) {
        const rwkvc_matmul_kernels *kr = rwkvc_float_kernels_ref(TYPES[i]);
        /* The reference against itself checks the harness (sentinels, tolerance). */
        check_set("scalar", TYPES[i], kr, kr, 0);
#if defined(TEST_X86)
        if (f->avx2) {
            check_set("avx2", TYPES[i], rwkvc_float_kernels_avx2(TYPES[i]), kr, 1);
            check_gemm("avx2", TYPES[i], rwkvc_float_kernels_avx2(TYPES[i]), kr);
            n_sets++;
            if (i == 0) {
                check_wkv("avx2", rwkvc_wkv7_get(RWKVC_ISA_AVX2));
                CHECK(rwkvc_wkv7_get(RWKVC_ISA_AVX2) == rwkvc_wkv7_avx2, "avx2 wkv7 chosen");
                check_expf("avx2", rwkvc_expf_get(RWKVC_ISA_AVX2));
                CHECK(rwkvc_expf_get(RWKVC_ISA_AVX2) == rwkvc_expf_avx2, "avx2 expf chosen");
            }
        }
        if (f->avx512) {
            check_set("avx512", TYPES[i], rwkvc_float_kernels_avx512(TYPES[i]), kr, 1);
            check_gemm("avx512", TYPES[i], rwkvc_float_kernels_avx512(TYPES[i]), kr);
            int n_seq = check_seq("avx512", TYPES[i], rwkvc_float_kernels_avx512(TYPES[i]));
            /* f16 and bf16 have it wherever the CPU has AMX-BF16 (and this build the compiler support). */
            CHECK(TYPES[i] == 0 ? n_seq == 0 : n_seq == 0 || f->amx_bf16, "avx512 %u: sequence mode without AMX-BF16",
                  TYPES[i]);
            if (n_seq > 0) {
                printf("test_kernels: avx512 type %u sequence mode (AMX-BF16): %d cases\n", TYPES[i], n_seq);
            }
            n_sets++;
            if (i == 0) {
                check_wkv("avx512", rwkvc_wkv7_get(RWKVC_ISA_AVX512));
                CHECK(rwkvc_wkv7_get(RWKVC_ISA_AVX512) == rwkvc_wkv7_avx512, "avx512 wkv7 chosen");
                check_expf("avx512", rwkvc_expf_get(RWKVC_ISA_AVX512));
                CHECK(rwkvc_expf_get(RWKVC_ISA_AVX512) == rwkvc_expf_avx512, "avx512 expf chosen");
            }
        }
#endif
#if defined(TEST_ARM)
        if (f->neon) {
            check_set("neon", TYPES[i], rwkvc_float_kernels_neon(TYPES[i]), kr, 0);
            n_sets++;
        }
#endif
    }
    printf("test_kernels: %d SIMD kernel sets checked on this CPU, %d failures\n", n_sets, g_failures);
    return g_failures ? 1 : 0;
}
