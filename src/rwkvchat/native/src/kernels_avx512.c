/*
 * kernels_avx512.c: AVX-512 (F/BW/VL/DQ) matrix kernels for float weights (f32, f16, bf16).
 *
 * Weights are converted to fp32 in registers (vcvtph2ps for f16, a 16-bit shift for bf16) and multiplied with
 * fp32 activations into fp32 accumulators. The core is a tile of up to 4 rows x 4 vectors (16 accumulators of
 * 16 lanes): each weight chunk is loaded once and used for 4 vectors, which is what makes sequence mode cheaper
 * per token than one matvec per token. Every (row, vector) pair is accumulated over the columns in the same
 * order whatever the tile shape, so matvec and matmat give bit-identical results.
 * Column tails (cols not a multiple of 16) use masked loads, so any cols >= 1 works.
 */
#include <immintrin.h>
#include <stddef.h>
#include <stdint.h>

#include "kernels.h"

#define WT_F32 0
#define WT_F16 1
#define WT_BF16 30

#define RWKVC_INLINE static inline __attribute__((always_inline))

/* Prefetch distance in rows (one 4-row block ahead). Prefetching past the matrix end is harmless. */
#define PF_ROWS 4

RWKVC_INLINE __m512 load_w(const void *w, size_t c, int wt) {
    if (wt == WT_F32) {
        return _mm512_loadu_ps((const float *)w + c);
    }
    __m256i h = _mm256_loadu_si256((const __m256i *)((const uint16_t *)w + c));
    if (wt == WT_F16) {
        return _mm512_cvtph_ps(h);
    }
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
}

RWKVC_INLINE __m512 load_w_mask(const void *w, size_t c, __mmask16 m, int wt) {
    if (wt == WT_F32) {
        return _mm512_maskz_loadu_ps(m, (const float *)w + c);
    }
    __m256i h = _mm256_maskz_loadu_epi16(m, (const uint16_t *)w + c);
    if (wt == WT_F16) {
        return _mm512_cvtph_ps(h);
    }
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
}

/*
 * Y[t + j][r + i] = W[r + i] . X[t + j] for i < RB, j < TB (RB, TB compile-time constants after inlining).
 */
RWKVC_INLINE void tile(const char *W, size_t row_bytes, const char *X, size_t x_stride, float *Y, size_t ldy,
                       size_t r, size_t t, size_t cols, int RB, int TB, int wt, int pf) {
    __m512 acc[4][4];
    const void *w[4];
    const float *x[4];
    for (int i = 0; i < RB; i++) {
        w[i] = W + (r + i) * row_bytes;
        for (int j = 0; j < TB; j++) {
            acc[i][j] = _mm512_setzero_ps();
        }
    }
    for (int j = 0; j < TB; j++) {
        x[j] = (const float *)(X + (t + j) * x_stride);
    }
    size_t c = 0;
    for (; c + 16 <= cols; c += 16) {
        __m512 xv[4];
        for (int j = 0; j < TB; j++) {
            xv[j] = _mm512_loadu_ps(x[j] + c);
        }
        for (int i = 0; i < RB; i++) {
            __m512 wv = load_w(w[i], c, wt);
            if (pf) {
                /* Rows are short streams (2-8 KB) that the hardware prefetcher picks up late: fetch the same
                   columns of the next block of rows while this one is computed. */
                _mm_prefetch((const char *)w[i] + PF_ROWS * row_bytes + c * (wt == WT_F32 ? 4 : 2), _MM_HINT_T0);
            }
            for (int j = 0; j < TB; j++) {
                acc[i][j] = _mm512_fmadd_ps(wv, xv[j], acc[i][j]);
            }
        }
    }
    if (c < cols) {
        __mmask16 m = (__mmask16)((1u << (cols - c)) - 1u);
        __m512 xv[4];
        for (int j = 0; j < TB; j++) {
            xv[j] = _mm512_maskz_loadu_ps(m, x[j] + c);
        }
        for (int i = 0; i < RB; i++) {
            __m512 wv = load_w_mask(w[i], c, m, wt);
            for (int j = 0; j < TB; j++) {
                acc[i][j] = _mm512_fmadd_ps(wv, xv[j], acc[i][j]);
            }
        }
    }
    for (int i = 0; i < RB; i++) {
        for (int j = 0; j < TB; j++) {
            Y[(t + j) * ldy + r + i] = _mm512_reduce_add_ps(acc[i][j]);
        }
    }
}

/* All vectors for RB rows starting at r: blocks of 4 vectors, then the remainder. */
RWKVC_INLINE void rows_all_vecs(const char *W, size_t row_bytes, const char *X, size_t x_stride, size_t n_vec,
                                float *Y, size_t ldy, size_t r, size_t cols, int RB, int wt) {
    /* Only the first tile of a row block prefetches; the others find the rows in cache. */
    size_t t = 0;
    if (n_vec >= 4) {
        tile(W, row_bytes, X, x_stride, Y, ldy, r, 0, cols, RB, 4, wt, 1);
        t = 4;
    }
    for (; t + 4 <= n_vec; t += 4) {
        tile(W, row_bytes, X, x_stride, Y, ldy, r, t, cols, RB, 4, wt, 0);
    }
    int pf = t == 0;
    switch (n_vec - t) {
    case 3: tile(W, row_bytes, X, x_stride, Y, ldy, r, t, cols, RB, 3, wt, pf); break;
    case 2: tile(W, row_bytes, X, x_stride, Y, ldy, r, t, cols, RB, 2, wt, pf); break;
    case 1: tile(W, row_bytes, X, x_stride, Y, ldy, r, t, cols, RB, 1, wt, pf); break;
    default: break;
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

const rwkvc_matmul_kernels *rwkvc_float_kernels_avx512(uint32_t type) {
    switch (type) {
    case WT_F32: return &k_f32;
    case WT_F16: return &k_f16;
    case WT_BF16: return &k_bf16;
    default: return NULL;
    }
}
