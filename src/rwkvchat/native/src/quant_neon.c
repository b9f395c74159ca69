/*
 * quant_neon.c: AArch64 NEON kernels for the block-quantized weight types.
 *
 * Same arithmetic as quant_ref.c: per 32-element block an exact integer dot product of weight quants (decoded to
 * int8; every type fits: -32..31 or 0..31 or int8) with the activation quants, then an fp32 scale. Plain ARMv8.0
 * NEON (vmull_s8 / vmlal_s8 pair products, |w * x| <= 128 * 127 so a pair fits int16; vpadalq_s16 widens), so it
 * runs on any AArch64 CPU. The activation is prepared by the scalar reference (rwkvc_q8act_prepare_ref, and
 * rwkvc_q8act_prepare_sb_ref for Q4_K / Q5_K as on x86): the layout and rounding are then identical by
 * construction, and it is a small part of the work.
 * matmat walks rows in tiles and runs every vector over a tile while its weights are in cache.
 */
#include <arm_neon.h>
#include <string.h>

#include "fp16.h"
#include "kernels.h"
#include "quant.h"

#define QK RWKVC_QK
#define QK_K RWKVC_QK_K
#define ROW_TILE 16

enum { T_Q8_0, T_Q4_0, T_Q4_1, T_Q5_0, T_Q5_1, T_Q4_K, T_Q5_K, T_Q6_K };

static inline float h2f(const uint8_t *p) {
    uint16_t h;
    memcpy(&h, p, 2);
    return rwkvc_fp16_to_fp32(h);
}

/* 8 bits of one byte -> 8 bytes, byte j = 0x10 if bit j is set (the fifth bit of the Q5 quants). */
static inline uint8x8_t bits8(uint32_t byte) {
    static const uint8_t sel[8] = {1, 2, 4, 8, 16, 32, 64, 128};
    const uint8x8_t set = vtst_u8(vdup_n_u8((uint8_t)byte), vld1_u8(sel));
    return vand_u8(set, vdup_n_u8(0x10));
}

/* Exact dot product of 32 int8 weights with 32 int8 activations, as 4 int32 partial sums. */
static inline int32x4_t dot32(int8x16_t w0, int8x16_t w1, const int8_t *x) {
    const int8x16_t x0 = vld1q_s8(x);
    const int8x16_t x1 = vld1q_s8(x + 16);
    int16x8_t p0 = vmull_s8(vget_low_s8(w0), vget_low_s8(x0));
    p0 = vmlal_s8(p0, vget_high_s8(w0), vget_high_s8(x0));
    int16x8_t p1 = vmull_s8(vget_low_s8(w1), vget_low_s8(x1));
    p1 = vmlal_s8(p1, vget_high_s8(w1), vget_high_s8(x1));
    return vpadalq_s16(vpaddlq_s16(p0), p1);
}

/* Dot of 16 weights with 16 activations (Q6_K sub-blocks). */
static inline int32x4_t dot16(int8x16_t w, const int8_t *x) {
    const int8x16_t xv = vld1q_s8(x);
    int16x8_t p = vmull_s8(vget_low_s8(w), vget_low_s8(xv));
    p = vmlal_s8(p, vget_high_s8(w), vget_high_s8(xv));
    return vpaddlq_s16(p);
}

static inline size_t block_bytes(int type) {
    switch (type) {
    case T_Q8_0:
        return sizeof(rwkvc_block_q8_0);
    case T_Q4_0:
        return sizeof(rwkvc_block_q4_0);
    case T_Q4_1:
        return sizeof(rwkvc_block_q4_1);
    case T_Q5_0:
        return sizeof(rwkvc_block_q5_0);
    default:
        return sizeof(rwkvc_block_q5_1);
    }
}

/* Decodes a 32-element block into w0 (elements 0..15) and w1 (16..31); d, m as in quant_ref.c. */
static inline void decode32(int type, const uint8_t *b, int8x16_t *w0, int8x16_t *w1, float *d, float *m) {
    const uint8x16_t m4 = vdupq_n_u8(0x0F);
    *m = 0.0f;
    *d = h2f(b);
    switch (type) {
    case T_Q8_0:
        *w0 = vld1q_s8((const int8_t *)(b + 2));
        *w1 = vld1q_s8((const int8_t *)(b + 18));
        return;
    case T_Q4_0:
    case T_Q4_1: {
        const uint8x16_t v = vld1q_u8(b + (type == T_Q4_0 ? 2 : 4));
        int8x16_t lo = vreinterpretq_s8_u8(vandq_u8(v, m4));
        int8x16_t hi = vreinterpretq_s8_u8(vshrq_n_u8(v, 4));
        if (type == T_Q4_0) {
            lo = vsubq_s8(lo, vdupq_n_s8(8));
            hi = vsubq_s8(hi, vdupq_n_s8(8));
        } else {
            *m = h2f(b + 2);
        }
        *w0 = lo;
        *w1 = hi;
        return;
    }
    default: { /* T_Q5_0, T_Q5_1 */
        const int one = type == T_Q5_1;
        uint32_t qh;
        memcpy(&qh, b + (one ? 4 : 2), 4);
        const uint8x16_t v = vld1q_u8(b + (one ? 8 : 6));
        const uint8x16_t h0 = vcombine_u8(bits8(qh & 0xFF), bits8((qh >> 8) & 0xFF));
        const uint8x16_t h1 = vcombine_u8(bits8((qh >> 16) & 0xFF), bits8(qh >> 24));
        int8x16_t lo = vreinterpretq_s8_u8(vorrq_u8(vandq_u8(v, m4), h0));
        int8x16_t hi = vreinterpretq_s8_u8(vorrq_u8(vshrq_n_u8(v, 4), h1));
        if (one) {
            *m = h2f(b + 2);
        } else {
            lo = vsubq_s8(lo, vdupq_n_s8(16));
            hi = vsubq_s8(hi, vdupq_n_s8(16));
        }
        *w0 = lo;
        *w1 = hi;
        return;
    }
    }
}

static float row32(int type, const uint8_t *row, const float *xd, const float *xs, const int8_t *xq, size_t nb) {
    const size_t bb = block_bytes(type);
    float32x4_t acc0 = vdupq_n_f32(0.0f);
    float32x4_t acc1 = vdupq_n_f32(0.0f);
    float accm = 0.0f;
    size_t b = 0;
    for (; b + 2 <= nb; b += 2) {
        int8x16_t w0;
        int8x16_t w1;
        float d;
        float m;
        decode32(type, row + b * bb, &w0, &w1, &d, &m);
        acc0 = vmlaq_n_f32(acc0, vcvtq_f32_s32(dot32(w0, w1, xq + b * QK)), d * xd[b]);
        accm += m * xs[b];
        decode32(type, row + (b + 1) * bb, &w0, &w1, &d, &m);
        acc1 = vmlaq_n_f32(acc1, vcvtq_f32_s32(dot32(w0, w1, xq + (b + 1) * QK)), d * xd[b + 1]);
        accm += m * xs[b + 1];
    }
    if (b < nb) {
        int8x16_t w0;
        int8x16_t w1;
        float d;
        float m;
        decode32(type, row + b * bb, &w0, &w1, &d, &m);
        acc0 = vmlaq_n_f32(acc0, vcvtq_f32_s32(dot32(w0, w1, xq + b * QK)), d * xd[b]);
        accm += m * xs[b];
    }
    return vaddvq_f32(vaddq_f32(acc0, acc1)) + accm;
}

/*
 * Q4_K / Q5_K: sub-block 2g from the low nibbles of qs[32g..32g+31], 2g+1 from the high ones. The activation has
 * one scale per super-block (rwkvc_q8act_prepare_sb_ref), so the six-bit sub-block scales multiply the exact
 * integer dots and the super-block sums in int32 (at most 8 * 32 * 31 * 127 * 63 = 63.5M): one convert and one
 * float multiply-add per 256 elements.
 */
static float row_k45(int type, const uint8_t *row, const float *xd, const float *xs, const int8_t *xq, size_t nsb) {
    const size_t bb = type == T_Q4_K ? sizeof(rwkvc_block_q4_K) : sizeof(rwkvc_block_q5_K);
    const uint8x16_t m4 = vdupq_n_u8(0x0F);
    const uint8x16_t one = vdupq_n_u8(1);
    float32x4_t acc = vdupq_n_f32(0.0f);
    float accm = 0.0f;
    for (size_t i = 0; i < nsb; i++) {
        const uint8_t *blk = row + i * bb;
        const float d = h2f(blk);
        const float dmin = h2f(blk + 2);
        const uint8_t *qs = type == T_Q4_K ? blk + 16 : blk + 48;
        uint8x16_t h0 = vdupq_n_u8(0);
        uint8x16_t h1 = vdupq_n_u8(0);
        if (type == T_Q5_K) {
            h0 = vld1q_u8(blk + 16);
            h1 = vld1q_u8(blk + 32);
        }
        int32x4_t isum = vdupq_n_s32(0);
        for (int g = 0; g < 4; g++) {
            uint8_t sca;
            uint8_t mna;
            uint8_t scb;
            uint8_t mnb;
            rwkvc_k4_scale_min(2 * g, blk + 4, &sca, &mna);
            rwkvc_k4_scale_min(2 * g + 1, blk + 4, &scb, &mnb);
            const uint8x16_t v0 = vld1q_u8(qs + 32 * g);
            const uint8x16_t v1 = vld1q_u8(qs + 32 * g + 16);
            uint8x16_t a0 = vandq_u8(v0, m4);
            uint8x16_t a1 = vandq_u8(v1, m4);
            uint8x16_t b0 = vshrq_n_u8(v0, 4);
            uint8x16_t b1 = vshrq_n_u8(v1, 4);
            if (type == T_Q5_K) {
                const int8x16_t sa = vdupq_n_s8((int8_t)(-2 * g));
                const int8x16_t sb = vdupq_n_s8((int8_t)(-2 * g - 1));
                a0 = vorrq_u8(a0, vshlq_n_u8(vandq_u8(vshlq_u8(h0, sa), one), 4));
                a1 = vorrq_u8(a1, vshlq_n_u8(vandq_u8(vshlq_u8(h1, sa), one), 4));
                b0 = vorrq_u8(b0, vshlq_n_u8(vandq_u8(vshlq_u8(h0, sb), one), 4));
                b1 = vorrq_u8(b1, vshlq_n_u8(vandq_u8(vshlq_u8(h1, sb), one), 4));
            }
            const size_t ba = i * 8 + 2 * g;
            const int32x4_t pa = dot32(vreinterpretq_s8_u8(a0), vreinterpretq_s8_u8(a1), xq + ba * QK);
            const int32x4_t pb = dot32(vreinterpretq_s8_u8(b0), vreinterpretq_s8_u8(b1), xq + (ba + 1) * QK);
            isum = vmlaq_n_s32(isum, pa, sca);
            isum = vmlaq_n_s32(isum, pb, scb);
            accm += dmin * mna * xs[ba] + dmin * mnb * xs[ba + 1];
        }
        acc = vmlaq_n_f32(acc, vcvtq_f32_s32(isum), d * xd[i * 8]);
    }
    return vaddvq_f32(acc) - accm;
}

static float row_q6k(const uint8_t *row, const float *xd, const int8_t *xq, size_t nsb) {
    const uint8x16_t m4 = vdupq_n_u8(0x0F);
    const uint8x16_t m2 = vdupq_n_u8(0x03);
    const int8x16_t off = vdupq_n_s8(32);
    float32x4_t acc0 = vdupq_n_f32(0.0f);
    float32x4_t acc1 = vdupq_n_f32(0.0f);
    for (size_t i = 0; i < nsb; i++) {
        const rwkvc_block_q6_K *blk = (const rwkvc_block_q6_K *)row + i;
        const float d = h2f((const uint8_t *)&blk->d);
        for (int h = 0; h < 2; h++) {
            const uint8_t *ql = blk->ql + 64 * h;
            const uint8_t *qh = blk->qh + 32 * h;
            for (int k = 0; k < 2; k++) {
                /* Bytes 16k..16k+15 of the 32 positions l of this half, in the 4 groups. */
                const uint8x16_t l0 = vld1q_u8(ql + 16 * k);
                const uint8x16_t l1 = vld1q_u8(ql + 32 + 16 * k);
                const uint8x16_t hh = vld1q_u8(qh + 16 * k);
                uint8x16_t q[4];
                q[0] = vorrq_u8(vandq_u8(l0, m4), vshlq_n_u8(vandq_u8(hh, m2), 4));
                q[1] = vorrq_u8(vandq_u8(l1, m4), vshlq_n_u8(vandq_u8(vshrq_n_u8(hh, 2), m2), 4));
                q[2] = vorrq_u8(vshrq_n_u8(l0, 4), vshlq_n_u8(vandq_u8(vshrq_n_u8(hh, 4), m2), 4));
                q[3] = vorrq_u8(vshrq_n_u8(l1, 4), vshlq_n_u8(vandq_u8(vshrq_n_u8(hh, 6), m2), 4));
                for (int g = 0; g < 4; g++) {
                    /* Group g covers sub-blocks 2g (positions 0..15) and 2g+1 (16..31): k picks which. */
                    const int8x16_t w = vsubq_s8(vreinterpretq_s8_u8(q[g]), off);
                    const size_t b = i * 8 + 4 * h + g;
                    const int sc = blk->scales[8 * h + 2 * g + k];
                    const int32x4_t p = vmulq_n_s32(dot16(w, xq + b * QK + 16 * k), sc);
                    if (k == 0) {
                        acc0 = vmlaq_n_f32(acc0, vcvtq_f32_s32(p), d * xd[b]);
                    } else {
                        acc1 = vmlaq_n_f32(acc1, vcvtq_f32_s32(p), d * xd[b]);
                    }
                }
            }
        }
    }
    return vaddvq_f32(vaddq_f32(acc0, acc1));
}

static float row_dot(int type, const uint8_t *row, const void *xq, size_t cols) {
    const float *xd = rwkvc_q8act_d(xq);
    const float *xs = rwkvc_q8act_s(xq, cols);
    const int8_t *q = rwkvc_q8act_qs(xq, cols);
    switch (type) {
    case T_Q4_K:
    case T_Q5_K:
        return row_k45(type, row, xd, xs, q, cols / QK_K);
    case T_Q6_K:
        return row_q6k(row, xd, q, cols / QK_K);
    default:
        return row32(type, row, xd, xs, q, cols / QK);
    }
}

static size_t act_bytes_neon(size_t cols) {
    return rwkvc_q8act_bytes(cols);
}

#define DEFINE_NEON(name, tid, prepare, group)                                                                    \
    static void matvec_##name(const void *W, size_t row_bytes, const void *x, float *y, size_t r0, size_t r1,     \
                              size_t cols) {                                                                      \
        for (size_t r = r0; r < r1; r++) {                                                                        \
            y[r] = row_dot(tid, (const uint8_t *)W + r * row_bytes, x, cols);                                     \
        }                                                                                                         \
    }                                                                                                             \
    static void matmat_##name(const void *W, size_t row_bytes, const void *X, size_t x_stride, size_t n_vec,      \
                              float *Y, size_t ldy, size_t r0, size_t r1, size_t cols) {                          \
        for (size_t rt = r0; rt < r1; rt += ROW_TILE) {                                                           \
            const size_t re = rt + ROW_TILE < r1 ? rt + ROW_TILE : r1;                                            \
            for (size_t t = 0; t < n_vec; t++) {                                                                  \
                matvec_##name(W, row_bytes, (const char *)X + t * x_stride, Y + t * ldy, rt, re, cols);           \
            }                                                                                                     \
        }                                                                                                         \
    }                                                                                                             \
    static const rwkvc_matmul_kernels kernels_##name = {act_bytes_neon, prepare, matvec_##name,                   \
                                                        matmat_##name, NULL, NULL, NULL, group};

DEFINE_NEON(q8_0, T_Q8_0, rwkvc_q8act_prepare_ref, 32)
DEFINE_NEON(q4_0, T_Q4_0, rwkvc_q8act_prepare_ref, 32)
DEFINE_NEON(q4_1, T_Q4_1, rwkvc_q8act_prepare_ref, 32)
DEFINE_NEON(q5_0, T_Q5_0, rwkvc_q8act_prepare_ref, 32)
DEFINE_NEON(q5_1, T_Q5_1, rwkvc_q8act_prepare_ref, 32)
DEFINE_NEON(q4_K, T_Q4_K, rwkvc_q8act_prepare_sb_ref, 256)
DEFINE_NEON(q5_K, T_Q5_K, rwkvc_q8act_prepare_sb_ref, 256)
DEFINE_NEON(q6_K, T_Q6_K, rwkvc_q8act_prepare_ref, 32)

const rwkvc_matmul_kernels *rwkvc_quant_kernels_neon(uint32_t type) {
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
