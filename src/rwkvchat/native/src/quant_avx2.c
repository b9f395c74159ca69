/*
 * quant_avx2.c: AVX2 + FMA + F16C kernels for the block-quantized weight types.
 *
 * Same arithmetic as quant_ref.c: per 32-element block an exact integer dot product of weight quants and activation
 * quants (quant.h "q8 act"), scaled in fp32. AVX2 has no signed x signed byte product, so signed weights use the
 * ggml sign trick (|w| as the unsigned operand of vpmaddubsw, the sign moved onto x); unsigned weights (Q4_1, Q5_1,
 * Q4_K, Q5_K) go straight into vpmaddubsw. Pair sums cannot saturate int16: |w| <= 128, |x| <= 127.
 *
 * matmat decodes each weight block once and applies it to up to 4 activation vectors, and walks rows in tiles so a
 * tile of weights stays in cache while all the vectors pass over it (sequence mode reads the weights once per tile).
 * The row kernels themselves live in quant_x86.h, shared with quant_avx512.c (which runs them with VNNI).
 */
#include <immintrin.h>
#include <string.h>

#include "kernels.h"
#include "quant.h"
#include "quant_x86.h"

static size_t act_bytes_avx2(size_t cols) {
    return rwkvc_q8act_bytes(cols);
}

/* ---- Entry points per type ---- */

ALWAYS_INLINE void matvec_generic(int type, const void *W, size_t row_bytes, const void *x, float *y, size_t r0,
                                  size_t r1, size_t cols) {
    const act_view xs[1] = {view_of(x, cols)};
    rows_any_256(type, 1, 0, (const uint8_t *)W, row_bytes, xs, y, 0, r0, r1, cols);
}

ALWAYS_INLINE void matmat_generic(int type, const void *W, size_t row_bytes, const void *X, size_t x_stride,
                                  size_t n_vec, float *Y, size_t ldy, size_t r0, size_t r1, size_t cols) {
    for (size_t rt = r0; rt < r1; rt += ROW_TILE) {
        const size_t re = rt + ROW_TILE < r1 ? rt + ROW_TILE : r1;
        size_t t = 0;
        for (; t + MAX_NV <= n_vec; t += MAX_NV) {
            act_view xs[MAX_NV];
            for (int k = 0; k < MAX_NV; k++) {
                xs[k] = view_of((const char *)X + (t + k) * x_stride, cols);
            }
            rows_any_256(type, MAX_NV, 0, (const uint8_t *)W, row_bytes, xs, Y + t * ldy, ldy, rt, re, cols);
        }
        for (; t < n_vec; t++) {
            const act_view xs[1] = {view_of((const char *)X + t * x_stride, cols)};
            rows_any_256(type, 1, 0, (const uint8_t *)W, row_bytes, xs, Y + t * ldy, ldy, rt, re, cols);
        }
    }
}

#define DEFINE_AVX2(name, tid)                                                                                    \
    static void matvec_##name(const void *W, size_t row_bytes, const void *x, float *y, size_t r0, size_t r1,    \
                              size_t cols) {                                                                      \
        matvec_generic(tid, W, row_bytes, x, y, r0, r1, cols);                                                    \
    }                                                                                                             \
    static void matmat_##name(const void *W, size_t row_bytes, const void *X, size_t x_stride, size_t n_vec,      \
                              float *Y, size_t ldy, size_t r0, size_t r1, size_t cols) {                          \
        matmat_generic(tid, W, row_bytes, X, x_stride, n_vec, Y, ldy, r0, r1, cols);                              \
    }                                                                                                             \
    static const rwkvc_matmul_kernels kernels_##name = {act_bytes_avx2, q8act_prepare_x86, matvec_##name,              \
                                                        matmat_##name};

DEFINE_AVX2(q8_0, T_Q8_0)
DEFINE_AVX2(q4_0, T_Q4_0)
DEFINE_AVX2(q4_1, T_Q4_1)
DEFINE_AVX2(q5_0, T_Q5_0)
DEFINE_AVX2(q5_1, T_Q5_1)
DEFINE_AVX2(q4_K, T_Q4_K)
DEFINE_AVX2(q5_K, T_Q5_K)
DEFINE_AVX2(q6_K, T_Q6_K)

const rwkvc_matmul_kernels *rwkvc_quant_kernels_avx2(uint32_t type) {
    switch (type) {
    case 8:
        return &kernels_q8_0;
    case 2:
        return &kernels_q4_0;
    case 3:
        return &kernels_q4_1;
    case 6:
        return &kernels_q5_0;
    case 7:
        return &kernels_q5_1;
    case 12:
        return &kernels_q4_K;
    case 13:
        return &kernels_q5_K;
    case 14:
        return &kernels_q6_K;
    default:
        return NULL;
    }
}
