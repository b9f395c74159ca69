/*
 * kernels_avx2.c: AVX2 + FMA + F16C matrix kernels for float weights (f32, f16, bf16).
 *
 * Same scheme as kernels_avx512.c with 8 lanes: weights become fp32 in registers, accumulation is fp32, and a
 * tile of up to 4 rows x 2 vectors (8 accumulators; 16 ymm registers in all) reads each weight chunk once per
 * 2 vectors. Every (row, vector) pair is accumulated in the same order whatever the tile, so matvec and matmat
 * agree bit for bit. The column tail (cols % 8) is loaded through a zero-padded buffer.
 */
#include <immintrin.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "kernels.h"

#define WT_F32 0
#define WT_F16 1
#define WT_BF16 30

#define RWKVC_INLINE static inline __attribute__((always_inline))

/* Prefetch distance in rows (one 4-row block ahead). Prefetching past the matrix end is harmless. */
#define PF_ROWS 4

RWKVC_INLINE __m256 cvt_w(__m128i h, int wt) {
    if (wt == WT_F16) {
        return _mm256_cvtph_ps(h);
    }
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
}

RWKVC_INLINE __m256 load_w(const void *w, size_t c, int wt) {
    if (wt == WT_F32) {
        return _mm256_loadu_ps((const float *)w + c);
    }
    return cvt_w(_mm_loadu_si128((const __m128i *)((const uint16_t *)w + c)), wt);
}

/* Loads n < 8 weights from column c, zero-padded to 8 lanes. */
RWKVC_INLINE __m256 load_w_tail(const void *w, size_t c, size_t n, int wt) {
    if (wt == WT_F32) {
        float buf[8] = {0};
        memcpy(buf, (const float *)w + c, n * sizeof(float));
        return _mm256_loadu_ps(buf);
    }
    uint16_t buf[8] = {0};
    memcpy(buf, (const uint16_t *)w + c, n * sizeof(uint16_t));
    return cvt_w(_mm_loadu_si128((const __m128i *)buf), wt);
}

RWKVC_INLINE __m256 load_x_tail(const float *x, size_t n) {
    float buf[8] = {0};
    memcpy(buf, x, n * sizeof(float));
    return _mm256_loadu_ps(buf);
}

RWKVC_INLINE float hsum(__m256 v) {
    __m128 lo = _mm256_castps256_ps128(v);
    __m128 hi = _mm256_extractf128_ps(v, 1);
    lo = _mm_add_ps(lo, hi);
    __m128 sh = _mm_movehl_ps(lo, lo);
    lo = _mm_add_ps(lo, sh);
    sh = _mm_shuffle_ps(lo, lo, 0x1);
    lo = _mm_add_ss(lo, sh);
    return _mm_cvtss_f32(lo);
}

/* Y[t + j][r + i] = W[r + i] . X[t + j] for i < RB, j < TB (compile-time constants after inlining). */
RWKVC_INLINE void tile(const char *W, size_t row_bytes, const char *X, size_t x_stride, float *Y, size_t ldy,
                       size_t r, size_t t, size_t cols, int RB, int TB, int wt, int pf) {
    __m256 acc[4][2];
    const void *w[4];
    const float *x[2];
    for (int i = 0; i < RB; i++) {
        w[i] = W + (r + i) * row_bytes;
        for (int j = 0; j < TB; j++) {
            acc[i][j] = _mm256_setzero_ps();
        }
    }
    for (int j = 0; j < TB; j++) {
        x[j] = (const float *)(X + (t + j) * x_stride);
    }
    size_t c = 0;
    for (; c + 8 <= cols; c += 8) {
        __m256 xv[2];
        for (int j = 0; j < TB; j++) {
            xv[j] = _mm256_loadu_ps(x[j] + c);
        }
        for (int i = 0; i < RB; i++) {
            __m256 wv = load_w(w[i], c, wt);
            if (pf) {
                /* Rows are short streams (2-8 KB) that the hardware prefetcher picks up late: fetch the same
                   columns of the next block of rows while this one is computed. */
                _mm_prefetch((const char *)w[i] + PF_ROWS * row_bytes + c * (wt == WT_F32 ? 4 : 2), _MM_HINT_T0);
            }
            for (int j = 0; j < TB; j++) {
                acc[i][j] = _mm256_fmadd_ps(wv, xv[j], acc[i][j]);
            }
        }
    }
    if (c < cols) {
        size_t n = cols - c;
        __m256 xv[2];
        for (int j = 0; j < TB; j++) {
            xv[j] = load_x_tail(x[j] + c, n);
        }
        for (int i = 0; i < RB; i++) {
            __m256 wv = load_w_tail(w[i], c, n, wt);
            for (int j = 0; j < TB; j++) {
                acc[i][j] = _mm256_fmadd_ps(wv, xv[j], acc[i][j]);
            }
        }
    }
    for (int i = 0; i < RB; i++) {
        for (int j = 0; j < TB; j++) {
            Y[(t + j) * ldy + r + i] = hsum(acc[i][j]);
        }
    }
}

RWKVC_INLINE void rows_all_vecs(const char *W, size_t row_bytes, const char *X, size_t x_stride, size_t n_vec,
                                float *Y, size_t ldy, size_t r, size_t cols, int RB, int wt) {
    /* Only the first tile of a row block prefetches; the others find the rows in cache. */
    size_t t = 0;
    if (n_vec >= 2) {
        tile(W, row_bytes, X, x_stride, Y, ldy, r, 0, cols, RB, 2, wt, 1);
        t = 2;
    }
    for (; t + 2 <= n_vec; t += 2) {
        tile(W, row_bytes, X, x_stride, Y, ldy, r, t, cols, RB, 2, wt, 0);
    }
    if (t < n_vec) {
        tile(W, row_bytes, X, x_stride, Y, ldy, r, t, cols, RB, 1, wt, t == 0);
    }
}

RWKVC_INLINE void matmat_generic(const void *W, size_t row_bytes, const void *X, size_t x_stride, size_t n_vec,
                                 float *Y, size_t ldy, size_t r0, size_t r1, size_t cols, int wt) {
    size_t r = r0;
    for (; r + 4 <= r1; r += 4) {
        rows_all_vecs(W, row_bytes, X, x_stride, n_vec, Y, ldy, r, cols, 4, wt);
    }
    for (; r < r1; r++) {
        rows_all_vecs(W, row_bytes, X, x_stride, n_vec, Y, ldy, r, cols, 1, wt);
    }
}

static size_t float_act_bytes(size_t cols) {
    (void)cols;
    return 0;
}

#define DEFINE_KERNELS(suffix, wt)                                                                                 \
    static void matmat_##suffix(const void *W, size_t row_bytes, const void *X, size_t x_stride, size_t n_vec,     \
                                float *Y, size_t ldy, size_t r0, size_t r1, size_t cols) {                         \
        matmat_generic(W, row_bytes, X, x_stride, n_vec, Y, ldy, r0, r1, cols, wt);                                \
    }                                                                                                              \
    static void matvec_##suffix(const void *W, size_t row_bytes, const void *x, float *y, size_t r0, size_t r1,    \
                                size_t cols) {                                                                     \
        matmat_generic(W, row_bytes, x, 0, 1, y, 0, r0, r1, cols, wt);                                             \
    }                                                                                                              \
    static const rwkvc_matmul_kernels k_##suffix = {float_act_bytes, NULL, matvec_##suffix, matmat_##suffix};

DEFINE_KERNELS(f32, WT_F32)
DEFINE_KERNELS(f16, WT_F16)
DEFINE_KERNELS(bf16, WT_BF16)

const rwkvc_matmul_kernels *rwkvc_float_kernels_avx2(uint32_t type) {
    switch (type) {
    case WT_F32: return &k_f32;
    case WT_F16: return &k_f16;
    case WT_BF16: return &k_bf16;
    default: return NULL;
    }
}
