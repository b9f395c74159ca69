/*
 * vexp_avx2.c: e^x over arrays with AVX2 + FMA (see vexp.h): 8 floats a step, as two vectors of 4 doubles; the
 * table lookup is a gather.
 */
#include <immintrin.h>
#include <math.h>
#include <string.h>

#include "vexp.h"

/* e^x of 4 floats (no special lanes) in double, rounded to float once at the end, as expf does. */
static inline __m128 exp4(__m128 x) {
    const __m256d xd = _mm256_cvtps_pd(x);
    const __m256d inv = _mm256_set1_pd(RWKVC_EXPF_INV_LN2_N);
    const __m256d shift = _mm256_set1_pd(RWKVC_EXPF_SHIFT);
    /* k = round(x * 32/ln2) in the low bits of kd; r = x * 32/ln2 - k. */
    __m256d kd = _mm256_fmadd_pd(inv, xd, shift);
    const __m256i ki = _mm256_castpd_si256(kd);
    kd = _mm256_sub_pd(kd, shift);
    const __m256d r = _mm256_fmsub_pd(inv, xd, kd);
    /* s = 2^(k/32): table entry k % 32 plus k << 47 (the integer part into the exponent). */
    const __m256i idx = _mm256_and_si256(ki, _mm256_set1_epi64x(31));
    const __m256i t = _mm256_add_epi64(_mm256_i64gather_epi64((const long long *)rwkvc_exp2f_table, idx, 8),
                                       _mm256_slli_epi64(ki, 47));
    const __m256d s = _mm256_castsi256_pd(t);
    /* 2^(r/32) ~= C0 r^3 + C1 r^2 + C2 r + 1, evaluated as (C0 r + C1) r^2 + (C2 r + 1). */
    const __m256d z = _mm256_fmadd_pd(r, _mm256_set1_pd(RWKVC_EXPF_C0), _mm256_set1_pd(RWKVC_EXPF_C1));
    const __m256d r2 = _mm256_mul_pd(r, r);
    __m256d y = _mm256_fmadd_pd(r, _mm256_set1_pd(RWKVC_EXPF_C2), _mm256_set1_pd(1.0));
    y = _mm256_fmadd_pd(z, r2, y);
    return _mm256_cvtpd_ps(_mm256_mul_pd(y, s));
}

/* 8 floats at p in place. */
static inline void exp8(float *p) {
    const __m256 x = _mm256_loadu_ps(p);
    const __m256i ax = _mm256_and_si256(_mm256_castps_si256(x), _mm256_set1_epi32(0x7fffffff));
    /* |x| bits > limit - 1, as signed compares (|x| bits are non-negative). */
    const int special = _mm256_movemask_ps(_mm256_castsi256_ps(
        _mm256_cmpgt_epi32(ax, _mm256_set1_epi32((int)RWKVC_EXPF_SPECIAL_ABS_BITS - 1))));
    const __m128 a = exp4(_mm256_castps256_ps128(x));
    const __m128 b = exp4(_mm256_extractf128_ps(x, 1));
    _mm_storeu_ps(p, a);
    _mm_storeu_ps(p + 4, b);
    if (special) {
        float in[8];
        _mm256_storeu_ps(in, x);
        for (int i = 0; i < 8; i++) {
            if (special & (1 << i)) {
                p[i] = expf(in[i]);
            }
        }
    }
}

void rwkvc_expf_avx2(float *x, size_t n) {
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        exp8(x + i);
    }
    if (i < n) {
        /* The tail through a padded copy, so it gets the same arithmetic. */
        float buf[8] = {0};
        memcpy(buf, x + i, (n - i) * sizeof(float));
        exp8(buf);
        memcpy(x + i, buf, (n - i) * sizeof(float));
    }
}
