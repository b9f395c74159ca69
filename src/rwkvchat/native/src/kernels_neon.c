/*
 * kernels_neon.c: AArch64 NEON matrix kernels for float weights (f32, f16, bf16).
 *
 * Same scheme as kernels_avx512.c with 4 lanes: weights become fp32 in registers (fcvtl for f16, a 16-bit
 * shift for bf16), accumulation is fp32, and a tile of up to 4 rows x 4 vectors (16 accumulators of the 32
 * vector registers) reads each weight chunk once per 4 vectors. Every (row, vector) pair is accumulated in the
 * same order whatever the tile, so matvec and matmat agree bit for bit. The column tail (cols % 4) is loaded
 * through a zero-padded buffer. Untested on hardware here (no ARM machine); kept simple on purpose.
 */
#include <arm_neon.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "kernels.h"

#define WT_F32 0
#define WT_F16 1
#define WT_BF16 30

#define RWKVC_INLINE static inline __attribute__((always_inline))

RWKVC_INLINE float32x4_t cvt_w(uint16x4_t h, int wt) {
    if (wt == WT_F16) {
        return vcvt_f32_f16(vreinterpret_f16_u16(h));
    }
    return vreinterpretq_f32_u32(vshlq_n_u32(vmovl_u16(h), 16));
}

RWKVC_INLINE float32x4_t load_w(const void *w, size_t c, int wt) {
    if (wt == WT_F32) {
        return vld1q_f32((const float *)w + c);
    }
    return cvt_w(vld1_u16((const uint16_t *)w + c), wt);
}

RWKVC_INLINE float32x4_t load_w_tail(const void *w, size_t c, size_t n, int wt) {
    if (wt == WT_F32) {
        float buf[4] = {0};
        memcpy(buf, (const float *)w + c, n * sizeof(float));
        return vld1q_f32(buf);
    }
    uint16_t buf[4] = {0};
    memcpy(buf, (const uint16_t *)w + c, n * sizeof(uint16_t));
    return cvt_w(vld1_u16(buf), wt);
}

RWKVC_INLINE float32x4_t load_x_tail(const float *x, size_t n) {
    float buf[4] = {0};
    memcpy(buf, x, n * sizeof(float));
    return vld1q_f32(buf);
}

/* Y[t + j][r + i] = W[r + i] . X[t + j] for i < RB, j < TB (compile-time constants after inlining). */
RWKVC_INLINE void tile(const char *W, size_t row_bytes, const char *X, size_t x_stride, float *Y, size_t ldy,
                       size_t r, size_t t, size_t cols, int RB, int TB, int wt) {
    float32x4_t acc[4][4];
    const void *w[4];
    const float *x[4];
    for (int i = 0; i < RB; i++) {
        w[i] = W + (r + i) * row_bytes;
        for (int j = 0; j < TB; j++) {
            acc[i][j] = vdupq_n_f32(0.0f);
        }
    }
    for (int j = 0; j < TB; j++) {
        x[j] = (const float *)(X + (t + j) * x_stride);
    }
    size_t c = 0;
    for (; c + 4 <= cols; c += 4) {
        float32x4_t xv[4];
        for (int j = 0; j < TB; j++) {
            xv[j] = vld1q_f32(x[j] + c);
        }
        for (int i = 0; i < RB; i++) {
            float32x4_t wv = load_w(w[i], c, wt);
            for (int j = 0; j < TB; j++) {
                acc[i][j] = vfmaq_f32(acc[i][j], wv, xv[j]);
            }
        }
    }
    if (c < cols) {
        size_t n = cols - c;
        float32x4_t xv[4];
        for (int j = 0; j < TB; j++) {
            xv[j] = load_x_tail(x[j] + c, n);
        }
        for (int i = 0; i < RB; i++) {
            float32x4_t wv = load_w_tail(w[i], c, n, wt);
            for (int j = 0; j < TB; j++) {
                acc[i][j] = vfmaq_f32(acc[i][j], wv, xv[j]);
            }
        }
    }
    for (int i = 0; i < RB; i++) {
        for (int j = 0; j < TB; j++) {
            Y[(t + j) * ldy + r + i] = vaddvq_f32(acc[i][j]);
        }
    }
}

RWKVC_INLINE void rows_all_vecs(const char *W, size_t row_bytes, const char *X, size_t x_stride, size_t n_vec,
                                float *Y, size_t ldy, size_t r, size_t cols, int RB, int wt) {
    size_t t = 0;
    for (; t + 4 <= n_vec; t += 4) {
        tile(W, row_bytes, X, x_stride, Y, ldy, r, t, cols, RB, 4, wt);
    }
    switch (n_vec - t) {
    case 3: tile(W, row_bytes, X, x_stride, Y, ldy, r, t, cols, RB, 3, wt); break;
    case 2: tile(W, row_bytes, X, x_stride, Y, ldy, r, t, cols, RB, 2, wt); break;
    case 1: tile(W, row_bytes, X, x_stride, Y, ldy, r, t, cols, RB, 1, wt); break;
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
    static const rwkvc_matmul_kernels k_##suffix = {float_act_bytes, NULL, matvec_##suffix, matmat_##suffix,      \
                                                    NULL, NULL, NULL, 0};

DEFINE_KERNELS(f32, WT_F32)
DEFINE_KERNELS(f16, WT_F16)
DEFINE_KERNELS(bf16, WT_BF16)

const rwkvc_matmul_kernels *rwkvc_float_kernels_neon(uint32_t type) {
    switch (type) {
    case WT_F32: return &k_f32;
    case WT_F16: return &k_f16;
    case WT_BF16: return &k_bf16;
    default: return NULL;
    }
}
