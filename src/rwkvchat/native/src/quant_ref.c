/*
 * quant_ref.c: block-quantized weight types, scalar reference.
 *
 * - Reference quantizers that round exactly like ggml's quantize_row_*_ref (what llama-quantize uses without an
 *   importance matrix), so a file we write is bit-identical to llama.cpp's for the same input.
 * - Dequantizers for every type we read (Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, Q4_K, Q5_K, Q6_K).
 * - The prepared activation (quant.h "q8 act") and the scalar mat-vec / mat-mat kernels. These define the expected
 *   results of the SIMD kernels (quant_avx2.c, quant_avx512.c, quant_neon.c) and run when RWKVC_FORCE_SCALAR=1.
 * - The public entry points rwkvc_type_info, rwkvc_quantize and rwkvc_dequantize.
 *
 * Every kernel computes, per 32-element activation block b, an exact integer dot product of the weight quants with
 * the activation quants, scales it in fp32 by (weight scale * d[b]) and sums the blocks in order.
 */
#include <float.h>
#include <math.h>
#include <string.h>

/*
 * No fused multiply-add contraction in this file: `x * id + 8.5f` must round twice, as ggml's reference code does
 * when built without FMA, so that quantized files are the same on every machine (AArch64 compilers and
 * -march=native builds would otherwise fuse it and move rare ties).
 */
#if defined(__clang__)
#pragma STDC FP_CONTRACT OFF
#elif defined(__GNUC__)
#pragma GCC optimize("fp-contract=off")
#endif

#include "fp16.h"
#include "kernels.h"
#include "quant.h"
#include "status.h"

#define QK RWKVC_QK
#define QK_K RWKVC_QK_K

static inline int imin(int a, int b) {
    return a < b ? a : b;
}

static inline int imax(int a, int b) {
    return a > b ? a : b;
}

/* Round to nearest, ties to even, for |f| <= 2^22: ggml's nearest_int (adds 1.5 * 2^23 and reads the bits). */
static inline int nearest_int(float f) {
    float v = f + 12582912.0f;
    int32_t i;
    memcpy(&i, &v, sizeof(i));
    return (i & 0x007FFFFF) - 0x00400000;
}

static inline float f16(uint16_t h) {
    return rwkvc_fp16_to_fp32(h);
}

/* ===================== Reference quantizers (ggml rounding) ===================== */

static void quantize_row_q8_0(const float *x, void *dst, size_t n) {
    rwkvc_block_q8_0 *y = dst;
    for (size_t i = 0; i < n / QK; i++, x += QK) {
        float amax = 0.0f;
        for (int j = 0; j < QK; j++) {
            amax = fmaxf(amax, fabsf(x[j]));
        }
        const float d = amax / 127.0f;
        const float id = d != 0.0f ? 1.0f / d : 0.0f;
        y[i].d = rwkvc_fp32_to_fp16(d);
        for (int j = 0; j < QK; j++) {
            /* roundf: half away from zero, as ggml's reference. */
            y[i].qs[j] = (int8_t)roundf(x[j] * id);
        }
    }
}

static void quantize_row_q4_0(const float *x, void *dst, size_t n) {
    rwkvc_block_q4_0 *y = dst;
    for (size_t i = 0; i < n / QK; i++, x += QK) {
        /* The element of largest magnitude, with its sign, maps exactly to -8 * d. */
        float amax = 0.0f;
        float max = 0.0f;
        for (int j = 0; j < QK; j++) {
            if (amax < fabsf(x[j])) {
                amax = fabsf(x[j]);
                max = x[j];
            }
        }
        const float d = max / -8.0f;
        const float id = d != 0.0f ? 1.0f / d : 0.0f;
        y[i].d = rwkvc_fp32_to_fp16(d);
        for (int j = 0; j < QK / 2; j++) {
            const uint8_t q0 = (uint8_t)imin(15, (int8_t)(x[j] * id + 8.5f));
            const uint8_t q1 = (uint8_t)imin(15, (int8_t)(x[j + QK / 2] * id + 8.5f));
            y[i].qs[j] = (uint8_t)(q0 | (q1 << 4));
        }
    }
}

static void quantize_row_q4_1(const float *x, void *dst, size_t n) {
    rwkvc_block_q4_1 *y = dst;
    for (size_t i = 0; i < n / QK; i++, x += QK) {
        float min = FLT_MAX;
        float max = -FLT_MAX;
        for (int j = 0; j < QK; j++) {
            if (x[j] < min) {
                min = x[j];
            }
            if (x[j] > max) {
                max = x[j];
            }
        }
        const float d = (max - min) / 15.0f;
        const float id = d != 0.0f ? 1.0f / d : 0.0f;
        y[i].d = rwkvc_fp32_to_fp16(d);
        y[i].m = rwkvc_fp32_to_fp16(min);
        for (int j = 0; j < QK / 2; j++) {
            const uint8_t q0 = (uint8_t)imin(15, (int8_t)((x[j] - min) * id + 0.5f));
            const uint8_t q1 = (uint8_t)imin(15, (int8_t)((x[j + QK / 2] - min) * id + 0.5f));
            y[i].qs[j] = (uint8_t)(q0 | (q1 << 4));
        }
    }
}

static void quantize_row_q5_0(const float *x, void *dst, size_t n) {
    rwkvc_block_q5_0 *y = dst;
    for (size_t i = 0; i < n / QK; i++, x += QK) {
        float amax = 0.0f;
        float max = 0.0f;
        for (int j = 0; j < QK; j++) {
            if (amax < fabsf(x[j])) {
                amax = fabsf(x[j]);
                max = x[j];
            }
        }
        const float d = max / -16.0f;
        const float id = d != 0.0f ? 1.0f / d : 0.0f;
        y[i].d = rwkvc_fp32_to_fp16(d);
        uint32_t qh = 0;
        for (int j = 0; j < QK / 2; j++) {
            const uint8_t q0 = (uint8_t)imin(31, (int8_t)(x[j] * id + 16.5f));
            const uint8_t q1 = (uint8_t)imin(31, (int8_t)(x[j + QK / 2] * id + 16.5f));
            y[i].qs[j] = (uint8_t)((q0 & 0x0F) | ((q1 & 0x0F) << 4));
            qh |= ((uint32_t)(q0 & 0x10u) >> 4) << j;
            qh |= ((uint32_t)(q1 & 0x10u) >> 4) << (j + QK / 2);
        }
        memcpy(y[i].qh, &qh, sizeof(qh));
    }
}

static void quantize_row_q5_1(const float *x, void *dst, size_t n) {
    rwkvc_block_q5_1 *y = dst;
    for (size_t i = 0; i < n / QK; i++, x += QK) {
        float min = FLT_MAX;
        float max = -FLT_MAX;
        for (int j = 0; j < QK; j++) {
            if (x[j] < min) {
                min = x[j];
            }
            if (x[j] > max) {
                max = x[j];
            }
        }
        const float d = (max - min) / 31.0f;
        const float id = d != 0.0f ? 1.0f / d : 0.0f;
        y[i].d = rwkvc_fp32_to_fp16(d);
        y[i].m = rwkvc_fp32_to_fp16(min);
        uint32_t qh = 0;
        for (int j = 0; j < QK / 2; j++) {
            const uint8_t q0 = (uint8_t)((x[j] - min) * id + 0.5f);
            const uint8_t q1 = (uint8_t)((x[j + QK / 2] - min) * id + 0.5f);
            y[i].qs[j] = (uint8_t)((q0 & 0x0F) | ((q1 & 0x0F) << 4));
            qh |= ((uint32_t)(q0 & 0x10u) >> 4) << j;
            qh |= ((uint32_t)(q1 & 0x10u) >> 4) << (j + QK / 2);
        }
        memcpy(y[i].qh, &qh, sizeof(qh));
    }
}

/*
 * ggml's make_qkx2_quants: the scale and (non-positive) min of one sub-block that minimise the weighted squared
 * error over a small grid of candidate scales; L receives the quants (0..nmax), *the_min the negated min.
 */
static float make_qkx2_quants(int n, int nmax, const float *x, const float *weights, uint8_t *L, float *the_min,
                              uint8_t *Laux, float rmin, float rdelta, int nstep) {
    float min = x[0];
    float max = x[0];
    float sum_w = weights[0];
    float sum_x = sum_w * x[0];
    for (int i = 1; i < n; i++) {
        if (x[i] < min) {
            min = x[i];
        }
        if (x[i] > max) {
            max = x[i];
        }
        const float w = weights[i];
        sum_w += w;
        sum_x += w * x[i];
    }
    if (min > 0) {
        min = 0;
    }
    if (max == min) {
        for (int i = 0; i < n; i++) {
            L[i] = 0;
        }
        *the_min = -min;
        return 0.0f;
    }
    float iscale = nmax / (max - min);
    float scale = 1 / iscale;
    float best_error = 0;
    for (int i = 0; i < n; i++) {
        const int l = nearest_int(iscale * (x[i] - min));
        L[i] = (uint8_t)imax(0, imin(nmax, l));
        const float diff = scale * L[i] + min - x[i];
        /* w * (diff * diff), in ggml's order: (w * diff) * diff rounds differently. */
        const float diff2 = diff * diff;
        best_error += weights[i] * diff2;
    }
    for (int is = 0; is <= nstep; is++) {
        iscale = (rmin + rdelta * is + nmax) / (max - min);
        float sum_l = 0;
        float sum_l2 = 0;
        float sum_xl = 0;
        for (int i = 0; i < n; i++) {
            int l = nearest_int(iscale * (x[i] - min));
            l = imax(0, imin(nmax, l));
            Laux[i] = (uint8_t)l;
            const float w = weights[i];
            sum_l += w * l;
            sum_l2 += w * l * l;
            sum_xl += w * l * x[i];
        }
        const float D = sum_w * sum_l2 - sum_l * sum_l;
        if (D > 0) {
            float this_scale = (sum_w * sum_xl - sum_x * sum_l) / D;
            float this_min = (sum_l2 * sum_x - sum_l * sum_xl) / D;
            if (this_min > 0) {
                this_min = 0;
                this_scale = sum_xl / sum_l2;
            }
            float cur_error = 0;
            for (int i = 0; i < n; i++) {
                const float diff = this_scale * Laux[i] + this_min - x[i];
                const float diff2 = diff * diff;
                cur_error += weights[i] * diff2;
            }
            if (cur_error < best_error) {
                for (int i = 0; i < n; i++) {
                    L[i] = Laux[i];
                }
                best_error = cur_error;
                scale = this_scale;
                min = this_min;
            }
        }
    }
    *the_min = -min;
    return scale;
}

/* ggml's make_qx_quants with rmse_type 1 and no importance weights (the Q6_K reference path). */
static float make_qx_quants(int n, int nmax, const float *x, int8_t *L) {
    float max = 0;
    float amax = 0;
    for (int i = 0; i < n; i++) {
        const float ax = fabsf(x[i]);
        if (ax > amax) {
            amax = ax;
            max = x[i];
        }
    }
    if (amax < 1e-15f) {
        for (int i = 0; i < n; i++) {
            L[i] = 0;
        }
        return 0.0f;
    }
    float iscale = -nmax / max;
    float sumlx = 0;
    float suml2 = 0;
    for (int i = 0; i < n; i++) {
        int l = nearest_int(iscale * x[i]);
        l = imax(-nmax, imin(nmax - 1, l));
        L[i] = (int8_t)(l + nmax);
        const float w = x[i] * x[i];
        sumlx += w * x[i] * l;
        suml2 += w * l * l;
    }
    float scale = suml2 != 0.0f ? sumlx / suml2 : 0.0f;
    float best = scale * sumlx;
    for (int is = -9; is <= 9; is++) {
        if (is == 0) {
            continue;
        }
        iscale = -(nmax + 0.1f * is) / max;
        sumlx = 0;
        suml2 = 0;
        for (int i = 0; i < n; i++) {
            int l = nearest_int(iscale * x[i]);
            l = imax(-nmax, imin(nmax - 1, l));
            const float w = x[i] * x[i];
            sumlx += w * x[i] * l;
            suml2 += w * l * l;
        }
        if (suml2 > 0 && sumlx * sumlx > best * suml2) {
            for (int i = 0; i < n; i++) {
                const int l = nearest_int(iscale * x[i]);
                L[i] = (int8_t)(nmax + imax(-nmax, imin(nmax - 1, l)));
            }
            scale = sumlx / suml2;
            best = scale * sumlx;
        }
    }
    return scale;
}

/*
 * Shared part of the Q4_K / Q5_K reference quantizers: per sub-block scale/min search, six-bit packing of the
 * scales relative to d = max_scale / 63, then re-rounding of the elements with the stored scales.
 */
static void quantize_k_scales(const float *x, int nmax, float rmin, float rdelta, int nstep, uint16_t *out_d,
                              uint16_t *out_dmin, uint8_t *scales_out, uint8_t *L) {
    uint8_t Laux[32];
    float weights[32];
    float mins[QK_K / 32];
    float scales[QK_K / 32];
    float max_scale = 0;
    float max_min = 0;
    for (int j = 0; j < QK_K / 32; j++) {
        float sum_x2 = 0;
        for (int l = 0; l < 32; l++) {
            sum_x2 += x[32 * j + l] * x[32 * j + l];
        }
        const float av_x = sqrtf(sum_x2 / 32);
        for (int l = 0; l < 32; l++) {
            weights[l] = av_x + fabsf(x[32 * j + l]);
        }
        scales[j] = make_qkx2_quants(32, nmax, x + 32 * j, weights, L + 32 * j, &mins[j], Laux, rmin, rdelta, nstep);
        if (scales[j] > max_scale) {
            max_scale = scales[j];
        }
        if (mins[j] > max_min) {
            max_min = mins[j];
        }
    }
    const float inv_scale = max_scale > 0 ? 63.0f / max_scale : 0.0f;
    const float inv_min = max_min > 0 ? 63.0f / max_min : 0.0f;
    memset(scales_out, 0, 12);
    for (int j = 0; j < QK_K / 32; j++) {
        uint8_t ls = (uint8_t)nearest_int(inv_scale * scales[j]);
        uint8_t lm = (uint8_t)nearest_int(inv_min * mins[j]);
        ls = ls < 63 ? ls : 63;
        lm = lm < 63 ? lm : 63;
        if (j < 4) {
            scales_out[j] = ls;
            scales_out[j + 4] = lm;
        } else {
            scales_out[j + 4] = (uint8_t)((ls & 0xF) | ((lm & 0xF) << 4));
            scales_out[j - 4] |= (uint8_t)((ls >> 4) << 6);
            scales_out[j] |= (uint8_t)((lm >> 4) << 6);
        }
    }
    *out_d = rwkvc_fp32_to_fp16(max_scale / 63.0f);
    *out_dmin = rwkvc_fp32_to_fp16(max_min / 63.0f);
    for (int j = 0; j < QK_K / 32; j++) {
        uint8_t sc;
        uint8_t m;
        rwkvc_k4_scale_min(j, scales_out, &sc, &m);
        const float d = f16(*out_d) * sc;
        if (d == 0.0f) {
            continue;
        }
        const float dm = f16(*out_dmin) * m;
        for (int ii = 0; ii < 32; ii++) {
            const int l = nearest_int((x[32 * j + ii] + dm) / d);
            L[32 * j + ii] = (uint8_t)imax(0, imin(nmax, l));
        }
    }
}

static void quantize_row_q4_K(const float *x, void *dst, size_t n) {
    rwkvc_block_q4_K *y = dst;
    uint8_t L[QK_K];
    for (size_t i = 0; i < n / QK_K; i++, x += QK_K) {
        quantize_k_scales(x, 15, -1.0f, 0.1f, 20, &y[i].d, &y[i].dmin, y[i].scales, L);
        uint8_t *q = y[i].qs;
        for (int j = 0; j < QK_K; j += 64, q += 32) {
            for (int l = 0; l < 32; l++) {
                q[l] = (uint8_t)(L[j + l] | (L[j + l + 32] << 4));
            }
        }
    }
}

static void quantize_row_q5_K(const float *x, void *dst, size_t n) {
    rwkvc_block_q5_K *y = dst;
    uint8_t L[QK_K];
    for (size_t i = 0; i < n / QK_K; i++, x += QK_K) {
        quantize_k_scales(x, 31, -0.5f, 0.1f, 15, &y[i].d, &y[i].dmin, y[i].scales, L);
        uint8_t *qh = y[i].qh;
        uint8_t *ql = y[i].qs;
        memset(qh, 0, QK_K / 8);
        uint8_t m1 = 1;
        uint8_t m2 = 2;
        for (int nn = 0; nn < QK_K; nn += 64, ql += 32) {
            for (int j = 0; j < 32; j++) {
                int l1 = L[nn + j];
                if (l1 > 15) {
                    l1 -= 16;
                    qh[j] |= m1;
                }
                int l2 = L[nn + j + 32];
                if (l2 > 15) {
                    l2 -= 16;
                    qh[j] |= m2;
                }
                ql[j] = (uint8_t)(l1 | (l2 << 4));
            }
            m1 = (uint8_t)(m1 << 2);
            m2 = (uint8_t)(m2 << 2);
        }
    }
}

static void quantize_row_q6_K(const float *x, void *dst, size_t n) {
    rwkvc_block_q6_K *y = dst;
    int8_t L[QK_K];
    float scales[QK_K / 16];
    for (size_t i = 0; i < n / QK_K; i++, x += QK_K) {
        float max_scale = 0;
        float max_abs_scale = 0;
        for (int ib = 0; ib < QK_K / 16; ib++) {
            const float scale = make_qx_quants(16, 32, x + 16 * ib, L + 16 * ib);
            scales[ib] = scale;
            if (fabsf(scale) > max_abs_scale) {
                max_abs_scale = fabsf(scale);
                max_scale = scale;
            }
        }
        if (max_abs_scale < 1e-15f) {
            memset(&y[i], 0, sizeof(y[i]));
            continue;
        }
        const float iscale = -128.0f / max_scale;
        y[i].d = rwkvc_fp32_to_fp16(1 / iscale);
        for (int ib = 0; ib < QK_K / 16; ib++) {
            y[i].scales[ib] = (int8_t)imin(127, nearest_int(iscale * scales[ib]));
        }
        for (int j = 0; j < QK_K / 16; j++) {
            const float d = f16(y[i].d) * y[i].scales[j];
            if (d == 0.0f) {
                continue;
            }
            for (int ii = 0; ii < 16; ii++) {
                int l = nearest_int(x[16 * j + ii] / d);
                l = imax(-32, imin(31, l));
                L[16 * j + ii] = (int8_t)(l + 32);
            }
        }
        uint8_t *ql = y[i].ql;
        uint8_t *qh = y[i].qh;
        for (int j = 0; j < QK_K; j += 128, ql += 64, qh += 32) {
            for (int l = 0; l < 32; l++) {
                const uint8_t q1 = L[j + l] & 0xF;
                const uint8_t q2 = L[j + l + 32] & 0xF;
                const uint8_t q3 = L[j + l + 64] & 0xF;
                const uint8_t q4 = L[j + l + 96] & 0xF;
                ql[l] = (uint8_t)(q1 | (q3 << 4));
                ql[l + 32] = (uint8_t)(q2 | (q4 << 4));
                qh[l] = (uint8_t)((L[j + l] >> 4) | ((L[j + l + 32] >> 4) << 2) | ((L[j + l + 64] >> 4) << 4) |
                                  ((L[j + l + 96] >> 4) << 6));
            }
        }
    }
}

/* ===================== Quant decoding (shared by dequantizers and scalar kernels) ===================== */

/* Writes the 32 integer quants of one 32-element block, with the offset of _0 types already removed. */
static void decode_q8_0(const void *b, int8_t *q, float *d, float *m) {
    const rwkvc_block_q8_0 *x = b;
    *d = f16(x->d);
    *m = 0.0f;
    memcpy(q, x->qs, QK);
}

static void decode_q4_0(const void *b, int8_t *q, float *d, float *m) {
    const rwkvc_block_q4_0 *x = b;
    *d = f16(x->d);
    *m = 0.0f;
    for (int j = 0; j < QK / 2; j++) {
        q[j] = (int8_t)((x->qs[j] & 0x0F) - 8);
        q[j + QK / 2] = (int8_t)((x->qs[j] >> 4) - 8);
    }
}

static void decode_q4_1(const void *b, int8_t *q, float *d, float *m) {
    const rwkvc_block_q4_1 *x = b;
    *d = f16(x->d);
    *m = f16(x->m);
    for (int j = 0; j < QK / 2; j++) {
        q[j] = (int8_t)(x->qs[j] & 0x0F);
        q[j + QK / 2] = (int8_t)(x->qs[j] >> 4);
    }
}

static void decode_q5_0(const void *b, int8_t *q, float *d, float *m) {
    const rwkvc_block_q5_0 *x = b;
    uint32_t qh;
    memcpy(&qh, x->qh, sizeof(qh));
    *d = f16(x->d);
    *m = 0.0f;
    for (int j = 0; j < QK / 2; j++) {
        q[j] = (int8_t)(((x->qs[j] & 0x0F) | (((qh >> j) & 1u) << 4)) - 16);
        q[j + QK / 2] = (int8_t)(((x->qs[j] >> 4) | (((qh >> (j + 16)) & 1u) << 4)) - 16);
    }
}

static void decode_q5_1(const void *b, int8_t *q, float *d, float *m) {
    const rwkvc_block_q5_1 *x = b;
    uint32_t qh;
    memcpy(&qh, x->qh, sizeof(qh));
    *d = f16(x->d);
    *m = f16(x->m);
    for (int j = 0; j < QK / 2; j++) {
        q[j] = (int8_t)((x->qs[j] & 0x0F) | (((qh >> j) & 1u) << 4));
        q[j + QK / 2] = (int8_t)((x->qs[j] >> 4) | (((qh >> (j + 16)) & 1u) << 4));
    }
}

/*
 * K-quant super-block decoding into 256 integer quants q and, per 32-element sub-block s, the float scale dsc[s]
 * and min dmn[s] so that value = dsc[s] * q - dmn[s]. Q6_K has 16-element sub-blocks: it returns per-16 integer
 * scales instead (value = d * sc16[k] * q), see decode_q6_K.
 */
static void decode_q4_K(const void *b, int8_t *q, float *dsc, float *dmn) {
    const rwkvc_block_q4_K *x = b;
    const float d = f16(x->d);
    const float dmin = f16(x->dmin);
    for (int s = 0; s < 8; s++) {
        uint8_t sc;
        uint8_t mn;
        rwkvc_k4_scale_min(s, x->scales, &sc, &mn);
        dsc[s] = d * sc;
        dmn[s] = dmin * mn;
    }
    for (int g = 0; g < 4; g++) {
        for (int l = 0; l < 32; l++) {
            q[64 * g + l] = (int8_t)(x->qs[32 * g + l] & 0x0F);
            q[64 * g + 32 + l] = (int8_t)(x->qs[32 * g + l] >> 4);
        }
    }
}

static void decode_q5_K(const void *b, int8_t *q, float *dsc, float *dmn) {
    const rwkvc_block_q5_K *x = b;
    const float d = f16(x->d);
    const float dmin = f16(x->dmin);
    for (int s = 0; s < 8; s++) {
        uint8_t sc;
        uint8_t mn;
        rwkvc_k4_scale_min(s, x->scales, &sc, &mn);
        dsc[s] = d * sc;
        dmn[s] = dmin * mn;
    }
    for (int g = 0; g < 4; g++) {
        for (int l = 0; l < 32; l++) {
            q[64 * g + l] = (int8_t)((x->qs[32 * g + l] & 0x0F) | (((x->qh[l] >> (2 * g)) & 1) << 4));
            q[64 * g + 32 + l] = (int8_t)((x->qs[32 * g + l] >> 4) | (((x->qh[l] >> (2 * g + 1)) & 1) << 4));
        }
    }
}

/* Q6_K: q = stored - 32 (signed), sc16 the 16 int8 sub-block scales, *d the super-block scale. */
static void decode_q6_K(const void *b, int8_t *q, const int8_t **sc16, float *d) {
    const rwkvc_block_q6_K *x = b;
    *d = f16(x->d);
    *sc16 = x->scales;
    const uint8_t *ql = x->ql;
    const uint8_t *qh = x->qh;
    for (int n = 0; n < QK_K; n += 128, ql += 64, qh += 32) {
        for (int l = 0; l < 32; l++) {
            q[n + l] = (int8_t)(((ql[l] & 0xF) | (((qh[l] >> 0) & 3) << 4)) - 32);
            q[n + l + 32] = (int8_t)(((ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4)) - 32);
            q[n + l + 64] = (int8_t)(((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32);
            q[n + l + 96] = (int8_t)(((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32);
        }
    }
}

/* ===================== Dequantizers ===================== */

typedef void (*decode32_fn)(const void *b, int8_t *q, float *d, float *m);

static void dequantize32(decode32_fn decode, size_t block_bytes, const void *src, float *dst, size_t n) {
    int8_t q[QK];
    for (size_t i = 0; i < n / QK; i++) {
        float d;
        float m;
        decode((const char *)src + i * block_bytes, q, &d, &m);
        for (int j = 0; j < QK; j++) {
            dst[i * QK + j] = q[j] * d + m;
        }
    }
}

static void dequantize_row_q8_0(const void *src, float *dst, size_t n) {
    dequantize32(decode_q8_0, sizeof(rwkvc_block_q8_0), src, dst, n);
}

static void dequantize_row_q4_0(const void *src, float *dst, size_t n) {
    dequantize32(decode_q4_0, sizeof(rwkvc_block_q4_0), src, dst, n);
}

static void dequantize_row_q4_1(const void *src, float *dst, size_t n) {
    dequantize32(decode_q4_1, sizeof(rwkvc_block_q4_1), src, dst, n);
}

static void dequantize_row_q5_0(const void *src, float *dst, size_t n) {
    dequantize32(decode_q5_0, sizeof(rwkvc_block_q5_0), src, dst, n);
}

static void dequantize_row_q5_1(const void *src, float *dst, size_t n) {
    dequantize32(decode_q5_1, sizeof(rwkvc_block_q5_1), src, dst, n);
}

static void dequantize_row_q8_1(const void *src, float *dst, size_t n) {
    const rwkvc_block_q8_1 *x = src;
    for (size_t i = 0; i < n / QK; i++) {
        const float d = f16(x[i].d);
        for (int j = 0; j < QK; j++) {
            dst[i * QK + j] = x[i].qs[j] * d;
        }
    }
}

static void dequantize_row_q4_K(const void *src, float *dst, size_t n) {
    int8_t q[QK_K];
    float dsc[8];
    float dmn[8];
    for (size_t i = 0; i < n / QK_K; i++) {
        decode_q4_K((const char *)src + i * sizeof(rwkvc_block_q4_K), q, dsc, dmn);
        for (int j = 0; j < QK_K; j++) {
            dst[i * QK_K + j] = dsc[j / 32] * q[j] - dmn[j / 32];
        }
    }
}

static void dequantize_row_q5_K(const void *src, float *dst, size_t n) {
    int8_t q[QK_K];
    float dsc[8];
    float dmn[8];
    for (size_t i = 0; i < n / QK_K; i++) {
        decode_q5_K((const char *)src + i * sizeof(rwkvc_block_q5_K), q, dsc, dmn);
        for (int j = 0; j < QK_K; j++) {
            dst[i * QK_K + j] = dsc[j / 32] * q[j] - dmn[j / 32];
        }
    }
}

static void dequantize_row_q6_K(const void *src, float *dst, size_t n) {
    int8_t q[QK_K];
    const int8_t *sc;
    float d;
    for (size_t i = 0; i < n / QK_K; i++) {
        decode_q6_K((const char *)src + i * sizeof(rwkvc_block_q6_K), q, &sc, &d);
        for (int j = 0; j < QK_K; j++) {
            /* Same association as ggml: (d * scale) * q. */
            dst[i * QK_K + j] = d * sc[j / 16] * q[j];
        }
    }
}

static void dequantize_row_q8_K(const void *src, float *dst, size_t n) {
    const rwkvc_block_q8_K *x = src;
    for (size_t i = 0; i < n / QK_K; i++) {
        for (int j = 0; j < QK_K; j++) {
            dst[i * QK_K + j] = x[i].d * x[i].qs[j];
        }
    }
}

/* ===================== Type traits ===================== */

static const rwkvc_type_traits traits_q4_0 = {"q4_0", 2, QK, 18, quantize_row_q4_0, dequantize_row_q4_0};
static const rwkvc_type_traits traits_q4_1 = {"q4_1", 3, QK, 20, quantize_row_q4_1, dequantize_row_q4_1};
static const rwkvc_type_traits traits_q5_0 = {"q5_0", 6, QK, 22, quantize_row_q5_0, dequantize_row_q5_0};
static const rwkvc_type_traits traits_q5_1 = {"q5_1", 7, QK, 24, quantize_row_q5_1, dequantize_row_q5_1};
static const rwkvc_type_traits traits_q8_0 = {"q8_0", 8, QK, 34, quantize_row_q8_0, dequantize_row_q8_0};
static const rwkvc_type_traits traits_q8_1 = {"q8_1", 9, QK, 36, NULL, dequantize_row_q8_1};
static const rwkvc_type_traits traits_q4_K = {"q4_K", 12, QK_K, 144, quantize_row_q4_K, dequantize_row_q4_K};
static const rwkvc_type_traits traits_q5_K = {"q5_K", 13, QK_K, 176, quantize_row_q5_K, dequantize_row_q5_K};
static const rwkvc_type_traits traits_q6_K = {"q6_K", 14, QK_K, 210, quantize_row_q6_K, dequantize_row_q6_K};
static const rwkvc_type_traits traits_q8_K = {"q8_K", 15, QK_K, 292, NULL, dequantize_row_q8_K};

const rwkvc_type_traits *rwkvc_quant_traits(uint32_t type) {
    switch (type) {
    case RWKVC_TYPE_Q4_0:
        return &traits_q4_0;
    case RWKVC_TYPE_Q4_1:
        return &traits_q4_1;
    case RWKVC_TYPE_Q5_0:
        return &traits_q5_0;
    case RWKVC_TYPE_Q5_1:
        return &traits_q5_1;
    case RWKVC_TYPE_Q8_0:
        return &traits_q8_0;
    case RWKVC_TYPE_Q8_1:
        return &traits_q8_1;
    case RWKVC_TYPE_Q4_K:
        return &traits_q4_K;
    case RWKVC_TYPE_Q5_K:
        return &traits_q5_K;
    case RWKVC_TYPE_Q6_K:
        return &traits_q6_K;
    case RWKVC_TYPE_Q8_K:
        return &traits_q8_K;
    default:
        return NULL;
    }
}

/* ===================== Prepared activation ===================== */

int rwkvc_quant_disable_vnni = 0;
int rwkvc_quant_disable_amx = 0;

/*
 * Both activation variants: blocks of 32 sharing one scale in groups of `group` blocks (1: per-block scales,
 * 8: one per 256-element super-block), the scale being the group's amax / 127.
 */
static void q8act_prepare_grouped(const float *x, void *xq, size_t cols, size_t group) {
    const size_t nb = cols / QK;
    float *d = (float *)xq;
    float *s = d + nb;
    int8_t *qs = (int8_t *)xq + rwkvc_q8act_header_bytes(cols);
    memset(s + nb, 0, rwkvc_q8act_header_bytes(cols) - 2 * nb * sizeof(float));
    for (size_t g = 0; g < nb; g += group) {
        /* A last group may be short (cols not a multiple of 256: never for K-quant rows, but stay in bounds). */
        const size_t g1 = g + group < nb ? g + group : nb;
        float amax = 0.0f;
        for (size_t j = g * QK; j < g1 * QK; j++) {
            amax = fmaxf(amax, fabsf(x[j]));
        }
        const float db = amax / 127.0f;
        const float id = db != 0.0f ? 1.0f / db : 0.0f;
        for (size_t b = g; b < g1; b++) {
            int sum = 0;
            for (int j = 0; j < QK; j++) {
                /* Half to even (the default rounding mode), so the SIMD versions round identically. */
                const int v = (int)nearbyintf(x[b * QK + j] * id);
                qs[b * QK + j] = (int8_t)v;
                sum += v;
            }
            d[b] = db;
            s[b] = db * (float)sum;
        }
    }
}

void rwkvc_q8act_prepare_ref(const float *x, void *xq, size_t cols) {
    q8act_prepare_grouped(x, xq, cols, 1);
}

void rwkvc_q8act_prepare_sb_ref(const float *x, void *xq, size_t cols) {
    q8act_prepare_grouped(x, xq, cols, QK_K / QK);
}

static size_t q8act_bytes(size_t cols) {
    return rwkvc_q8act_bytes(cols);
}

/* ===================== Scalar kernels ===================== */

static inline int idot32(const int8_t *a, const int8_t *b) {
    int s = 0;
    for (int j = 0; j < QK; j++) {
        s += a[j] * b[j];
    }
    return s;
}

static float row_dot32(decode32_fn decode, size_t block_bytes, const char *row, const void *xq, size_t cols) {
    const size_t nb = cols / QK;
    const float *xd = rwkvc_q8act_d(xq);
    const float *xs = rwkvc_q8act_s(xq, cols);
    const int8_t *xqs = rwkvc_q8act_qs(xq, cols);
    int8_t q[QK];
    float acc = 0.0f;
    for (size_t b = 0; b < nb; b++) {
        float d;
        float m;
        decode(row + b * block_bytes, q, &d, &m);
        acc += (d * xd[b]) * (float)idot32(q, xqs + b * QK) + m * xs[b];
    }
    return acc;
}

static float row_dot_q4_K(const char *row, const void *xq, size_t cols) {
    const float *xd = rwkvc_q8act_d(xq);
    const float *xs = rwkvc_q8act_s(xq, cols);
    const int8_t *xqs = rwkvc_q8act_qs(xq, cols);
    int8_t q[QK_K];
    float dsc[8];
    float dmn[8];
    float acc = 0.0f;
    for (size_t i = 0; i < cols / QK_K; i++) {
        decode_q4_K(row + i * sizeof(rwkvc_block_q4_K), q, dsc, dmn);
        for (int s = 0; s < 8; s++) {
            const size_t b = i * 8 + s;
            acc += (dsc[s] * xd[b]) * (float)idot32(q + 32 * s, xqs + b * QK) - dmn[s] * xs[b];
        }
    }
    return acc;
}

static float row_dot_q5_K(const char *row, const void *xq, size_t cols) {
    const float *xd = rwkvc_q8act_d(xq);
    const float *xs = rwkvc_q8act_s(xq, cols);
    const int8_t *xqs = rwkvc_q8act_qs(xq, cols);
    int8_t q[QK_K];
    float dsc[8];
    float dmn[8];
    float acc = 0.0f;
    for (size_t i = 0; i < cols / QK_K; i++) {
        decode_q5_K(row + i * sizeof(rwkvc_block_q5_K), q, dsc, dmn);
        for (int s = 0; s < 8; s++) {
            const size_t b = i * 8 + s;
            acc += (dsc[s] * xd[b]) * (float)idot32(q + 32 * s, xqs + b * QK) - dmn[s] * xs[b];
        }
    }
    return acc;
}

static float row_dot_q6_K(const char *row, const void *xq, size_t cols) {
    const float *xd = rwkvc_q8act_d(xq);
    const int8_t *xqs = rwkvc_q8act_qs(xq, cols);
    int8_t q[QK_K];
    const int8_t *sc;
    float d;
    float acc = 0.0f;
    for (size_t i = 0; i < cols / QK_K; i++) {
        decode_q6_K(row + i * sizeof(rwkvc_block_q6_K), q, &sc, &d);
        for (int s = 0; s < 8; s++) {
            const size_t b = i * 8 + s;
            const int8_t *xb = xqs + b * QK;
            int lo = 0;
            int hi = 0;
            for (int j = 0; j < 16; j++) {
                lo += q[32 * s + j] * xb[j];
                hi += q[32 * s + 16 + j] * xb[16 + j];
            }
            acc += (d * xd[b]) * (float)(sc[2 * s] * lo + sc[2 * s + 1] * hi);
        }
    }
    return acc;
}

#define DEFINE_REF_32(name, block_t)                                                                              \
    static void matvec_##name(const void *W, size_t row_bytes, const void *x, float *y, size_t r0, size_t r1,     \
                              size_t cols) {                                                                      \
        for (size_t r = r0; r < r1; r++) {                                                                        \
            y[r] = row_dot32(decode_##name, sizeof(block_t), (const char *)W + r * row_bytes, x, cols);           \
        }                                                                                                         \
    }

#define DEFINE_REF_K(name)                                                                                        \
    static void matvec_##name(const void *W, size_t row_bytes, const void *x, float *y, size_t r0, size_t r1,     \
                              size_t cols) {                                                                      \
        for (size_t r = r0; r < r1; r++) {                                                                        \
            y[r] = row_dot_##name((const char *)W + r * row_bytes, x, cols);                                      \
        }                                                                                                         \
    }

#define DEFINE_REF_MATMAT(name, prepare, group)                                                                   \
    static void matmat_##name(const void *W, size_t row_bytes, const void *X, size_t x_stride, size_t n_vec,      \
                              float *Y, size_t ldy, size_t r0, size_t r1, size_t cols) {                          \
        for (size_t t = 0; t < n_vec; t++) {                                                                      \
            matvec_##name(W, row_bytes, (const char *)X + t * x_stride, Y + t * ldy, r0, r1, cols);               \
        }                                                                                                         \
    }                                                                                                             \
    static const rwkvc_matmul_kernels kernels_##name = {q8act_bytes, prepare, matvec_##name, matmat_##name, NULL, \
                                                        NULL, NULL, group};

DEFINE_REF_32(q8_0, rwkvc_block_q8_0)
DEFINE_REF_32(q4_0, rwkvc_block_q4_0)
DEFINE_REF_32(q4_1, rwkvc_block_q4_1)
DEFINE_REF_32(q5_0, rwkvc_block_q5_0)
DEFINE_REF_32(q5_1, rwkvc_block_q5_1)
DEFINE_REF_K(q4_K)
DEFINE_REF_K(q5_K)
DEFINE_REF_K(q6_K)
DEFINE_REF_MATMAT(q8_0, rwkvc_q8act_prepare_ref, 32)
DEFINE_REF_MATMAT(q4_0, rwkvc_q8act_prepare_ref, 32)
DEFINE_REF_MATMAT(q4_1, rwkvc_q8act_prepare_ref, 32)
DEFINE_REF_MATMAT(q5_0, rwkvc_q8act_prepare_ref, 32)
DEFINE_REF_MATMAT(q5_1, rwkvc_q8act_prepare_ref, 32)
DEFINE_REF_MATMAT(q4_K, rwkvc_q8act_prepare_sb_ref, 256)
DEFINE_REF_MATMAT(q5_K, rwkvc_q8act_prepare_sb_ref, 256)
DEFINE_REF_MATMAT(q6_K, rwkvc_q8act_prepare_ref, 32)

const rwkvc_matmul_kernels *rwkvc_quant_kernels_ref(uint32_t type) {
    switch (type) {
    case RWKVC_TYPE_Q8_0:
        return &kernels_q8_0;
    case RWKVC_TYPE_Q4_0:
        return &kernels_q4_0;
    case RWKVC_TYPE_Q4_1:
        return &kernels_q4_1;
    case RWKVC_TYPE_Q5_0:
        return &kernels_q5_0;
    case RWKVC_TYPE_Q5_1:
        return &kernels_q5_1;
    case RWKVC_TYPE_Q4_K:
        return &kernels_q4_K;
    case RWKVC_TYPE_Q5_K:
        return &kernels_q5_K;
    case RWKVC_TYPE_Q6_K:
        return &kernels_q6_K;
    default:
        return NULL;
    }
}

/* ===================== Public API ===================== */

RWKVC_API rwkvc_status rwkvc_type_info(uint32_t type, const char **name, size_t *block_size, size_t *block_bytes) {
    rwkvc_clear_error();
    const rwkvc_type_traits *t = rwkvc_type_traits_get(type);
    if (!t) {
        return rwkvc_fail(RWKVC_ERR_ARG, "unknown tensor type %u", type);
    }
    if (name) {
        *name = t->name;
    }
    if (block_size) {
        *block_size = t->block_size;
    }
    if (block_bytes) {
        *block_bytes = t->block_bytes;
    }
    return RWKVC_OK;
}

RWKVC_API rwkvc_status rwkvc_quantize(uint32_t type, const float *src, size_t n_rows, size_t row_len, void *dst,
                                      size_t dst_len) {
    rwkvc_clear_error();
    const rwkvc_type_traits *t = rwkvc_type_traits_get(type);
    if (!t) {
        return rwkvc_fail(RWKVC_ERR_ARG, "unknown tensor type %u", type);
    }
    if (!t->quantize_row) {
        return rwkvc_fail(RWKVC_ERR_ARG, "type %s cannot be used for weights (no quantizer)", t->name);
    }
    if (row_len == 0 || row_len % t->block_size != 0) {
        return rwkvc_fail(RWKVC_ERR_ARG, "row length %zu is not a positive multiple of the %s block size %zu",
                          row_len, t->name, t->block_size);
    }
    const size_t row_bytes = row_len / t->block_size * t->block_bytes;
    if (n_rows != 0 && row_bytes > SIZE_MAX / n_rows) {
        return rwkvc_fail(RWKVC_ERR_ARG, "matrix of %zu rows of %zu is too large", n_rows, row_len);
    }
    if (dst_len != n_rows * row_bytes) {
        return rwkvc_fail(RWKVC_ERR_SIZE, "destination is %zu bytes, %zu rows of %s need %zu", dst_len, n_rows,
                          t->name, n_rows * row_bytes);
    }
    if (n_rows == 0) {
        return RWKVC_OK;
    }
    if (!src || !dst) {
        return rwkvc_fail(RWKVC_ERR_ARG, "NULL buffer");
    }
    for (size_t r = 0; r < n_rows; r++) {
        t->quantize_row(src + r * row_len, (char *)dst + r * row_bytes, row_len);
    }
    return RWKVC_OK;
}

RWKVC_API rwkvc_status rwkvc_dequantize(uint32_t type, const void *src, size_t src_len, float *dst, size_t n) {
    rwkvc_clear_error();
    const rwkvc_type_traits *t = rwkvc_type_traits_get(type);
    if (!t) {
        return rwkvc_fail(RWKVC_ERR_ARG, "unknown tensor type %u", type);
    }
    if (!t->dequantize_row) {
        return rwkvc_fail(RWKVC_ERR_ARG, "type %s cannot be dequantized", t->name);
    }
    if (n % t->block_size != 0) {
        return rwkvc_fail(RWKVC_ERR_ARG, "%zu elements is not a multiple of the %s block size %zu", n, t->name,
                          t->block_size);
    }
    const size_t need = n / t->block_size * t->block_bytes;
    if (src_len < need) {
        return rwkvc_fail(RWKVC_ERR_SIZE, "source is %zu bytes, %zu elements of %s need %zu", src_len, n, t->name,
                          need);
    }
    if (n == 0) {
        return RWKVC_OK;
    }
    if (!src || !dst) {
        return rwkvc_fail(RWKVC_ERR_ARG, "NULL buffer");
    }
    t->dequantize_row(src, dst, n);
    return RWKVC_OK;
}
