/*
 * kernels_ref.c: scalar reference matrix kernels for the float weight types (f32, f16, bf16) and their traits.
 *
 * These define the expected results that every SIMD kernel is tested against, and they are the kernels used
 * when RWKVC_FORCE_SCALAR=1 or no SIMD level is available. Each output is one fp32 accumulator summed over
 * the columns in order; the activation is float32 (act_bytes is 0). rwkvc_float_matmat_fma_ref is the exact
 * reference of the SIMD sequence-mode GEMM (one fused multiply-add per column).
 */
#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "fp16.h"
#include "kernels.h"

static size_t float_act_bytes(size_t cols) {
    (void)cols;
    return 0;
}

/* ---- f32 ---- */

static float dot_f32(const float *restrict w, const float *restrict x, size_t n) {
    float s = 0.0f;
    for (size_t i = 0; i < n; i++) {
        s += w[i] * x[i];
    }
    return s;
}

static void matvec_f32(const void *W, size_t row_bytes, const void *x, float *y, size_t r0, size_t r1,
                       size_t cols) {
    for (size_t r = r0; r < r1; r++) {
        y[r] = dot_f32((const float *)((const char *)W + r * row_bytes), (const float *)x, cols);
    }
}

static void matmat_f32(const void *W, size_t row_bytes, const void *X, size_t x_stride, size_t n_vec, float *Y,
                       size_t ldy, size_t r0, size_t r1, size_t cols) {
    for (size_t t = 0; t < n_vec; t++) {
        matvec_f32(W, row_bytes, (const char *)X + t * x_stride, Y + t * ldy, r0, r1, cols);
    }
}

/* ---- f16 ---- */

static float dot_f16(const uint16_t *restrict w, const float *restrict x, size_t n) {
    float s = 0.0f;
    for (size_t i = 0; i < n; i++) {
        s += rwkvc_fp16_to_fp32(w[i]) * x[i];
    }
    return s;
}

static void matvec_f16(const void *W, size_t row_bytes, const void *x, float *y, size_t r0, size_t r1,
                       size_t cols) {
    for (size_t r = r0; r < r1; r++) {
        y[r] = dot_f16((const uint16_t *)((const char *)W + r * row_bytes), (const float *)x, cols);
    }
}

static void matmat_f16(const void *W, size_t row_bytes, const void *X, size_t x_stride, size_t n_vec, float *Y,
                       size_t ldy, size_t r0, size_t r1, size_t cols) {
    for (size_t t = 0; t < n_vec; t++) {
        matvec_f16(W, row_bytes, (const char *)X + t * x_stride, Y + t * ldy, r0, r1, cols);
    }
}

/* ---- bf16 ---- */

static float dot_bf16(const uint16_t *restrict w, const float *restrict x, size_t n) {
    float s = 0.0f;
    for (size_t i = 0; i < n; i++) {
        s += rwkvc_bf16_to_fp32(w[i]) * x[i];
    }
    return s;
}

static void matvec_bf16(const void *W, size_t row_bytes, const void *x, float *y, size_t r0, size_t r1,
                        size_t cols) {
    for (size_t r = r0; r < r1; r++) {
        y[r] = dot_bf16((const uint16_t *)((const char *)W + r * row_bytes), (const float *)x, cols);
    }
}

static void matmat_bf16(const void *W, size_t row_bytes, const void *X, size_t x_stride, size_t n_vec, float *Y,
                        size_t ldy, size_t r0, size_t r1, size_t cols) {
    for (size_t t = 0; t < n_vec; t++) {
        matvec_bf16(W, row_bytes, (const char *)X + t * x_stride, Y + t * ldy, r0, r1, cols);
    }
}

static const rwkvc_matmul_kernels k_f32 = {float_act_bytes, NULL, matvec_f32, matmat_f32, NULL, NULL, NULL, 0};
static const rwkvc_matmul_kernels k_f16 = {float_act_bytes, NULL, matvec_f16, matmat_f16, NULL, NULL, NULL, 0};
static const rwkvc_matmul_kernels k_bf16 = {float_act_bytes, NULL, matvec_bf16, matmat_bf16, NULL, NULL, NULL, 0};

const rwkvc_matmul_kernels *rwkvc_float_kernels_ref(uint32_t type) {
    switch (type) {
    case 0: return &k_f32;
    case 1: return &k_f16;
    case 30: return &k_bf16;
    default: return NULL;
    }
}

/* ---- Reference of the SIMD sequence-mode GEMM (kernels.h, RWKVC_GEMM_MIN_VEC) ---- */

int rwkvc_float_disable_amx = 0;

static float weight_at(uint32_t type, const char *row, size_t c) {
    if (type == 0) {
        float f;
        memcpy(&f, row + c * 4, sizeof(f));
        return f;
    }
    uint16_t h;
    memcpy(&h, row + c * 2, sizeof(h));
    return type == 1 ? rwkvc_fp16_to_fp32(h) : rwkvc_bf16_to_fp32(h);
}

void rwkvc_float_matmat_fma_ref(uint32_t type, const void *W, size_t row_bytes, const void *X, size_t x_stride,
                                size_t n_vec, float *Y, size_t ldy, size_t r0, size_t r1, size_t cols) {
    if (type != 0 && type != 1 && type != 30) {
        return;
    }
    for (size_t t = 0; t < n_vec; t++) {
        const float *x = (const float *)((const char *)X + t * x_stride);
        for (size_t r = r0; r < r1; r++) {
            const char *row = (const char *)W + r * row_bytes;
            /* One rounding per column: fmaf(w, x, s) = w * x + s rounded once, as vfmadd231ps does. */
            float s = 0.0f;
            for (size_t c = 0; c < cols; c++) {
                s = fmaf(weight_at(type, row, c), x[c], s);
            }
            Y[t * ldy + r] = s;
        }
    }
}

/* ---- Type traits: reference row conversions ---- */

static void f32_quantize(const float *src, void *dst, size_t n) {
    memcpy(dst, src, n * sizeof(float));
}

static void f32_dequantize(const void *src, float *dst, size_t n) {
    memcpy(dst, src, n * sizeof(float));
}

static void f16_quantize(const float *src, void *dst, size_t n) {
    uint16_t *d = dst;
    for (size_t i = 0; i < n; i++) {
        d[i] = rwkvc_fp32_to_fp16(src[i]);
    }
}

static void f16_dequantize(const void *src, float *dst, size_t n) {
    const uint16_t *s = src;
    for (size_t i = 0; i < n; i++) {
        dst[i] = rwkvc_fp16_to_fp32(s[i]);
    }
}

static void bf16_quantize(const float *src, void *dst, size_t n) {
    uint16_t *d = dst;
    for (size_t i = 0; i < n; i++) {
        d[i] = rwkvc_fp32_to_bf16(src[i]);
    }
}

static void bf16_dequantize(const void *src, float *dst, size_t n) {
    const uint16_t *s = src;
    for (size_t i = 0; i < n; i++) {
        dst[i] = rwkvc_bf16_to_fp32(s[i]);
    }
}

static const rwkvc_type_traits t_f32 = {"f32", 0, 1, 4, f32_quantize, f32_dequantize};
static const rwkvc_type_traits t_f16 = {"f16", 1, 1, 2, f16_quantize, f16_dequantize};
static const rwkvc_type_traits t_bf16 = {"bf16", 30, 1, 2, bf16_quantize, bf16_dequantize};

/* Traits of the float types (used by rwkvc_type_traits_get in kernels.c). */
const rwkvc_type_traits *rwkvc_float_traits(uint32_t type) {
    switch (type) {
    case 0: return &t_f32;
    case 1: return &t_f16;
    case 30: return &t_bf16;
    default: return NULL;
    }
}
