/*
 * vexp_avx512.c: e^x over arrays with AVX-512 (see vexp.h): 16 floats a step, as two vectors of 8 doubles; the
 * 32-entry table is two vpermt2q lookups and a blend.
 */
#include <immintrin.h>
#include <math.h>
#include <string.h>

#include "vexp.h"

/* e^x of 8 floats (no special lanes) in double, rounded to float once at the end, as expf does. */
static inline __m256 exp8(__m256 x, const __m512i *tab) {
    const __m512d xd = _mm512_cvtps_pd(x);
    const __m512d inv = _mm512_set1_pd(RWKVC_EXPF_INV_LN2_N);
    const __m512d shift = _mm512_set1_pd(RWKVC_EXPF_SHIFT);
    /* k = round(x * 32/ln2) in the low bits of kd; r = x * 32/ln2 - k. */
    __m512d kd = _mm512_fmadd_pd(inv, xd, shift);
    const __m512i ki = _mm512_castpd_si512(kd);
    kd = _mm512_sub_pd(kd, shift);
    const __m512d r = _mm512_fmsub_pd(inv, xd, kd);
    /* s = 2^(k/32): table entry k % 32 plus k << 47 (the integer part into the exponent). */
    const __m512i lo = _mm512_permutex2var_epi64(tab[0], ki, tab[1]);
    const __m512i hi = _mm512_permutex2var_epi64(tab[2], ki, tab[3]);
    const __mmask8 upper = _mm512_test_epi64_mask(ki, _mm512_set1_epi64(16));
    const __m512i t = _mm512_add_epi64(_mm512_mask_blend_epi64(upper, lo, hi), _mm512_slli_epi64(ki, 47));
    const __m512d s = _mm512_castsi512_pd(t);
    /* 2^(r/32) ~= C0 r^3 + C1 r^2 + C2 r + 1, evaluated as (C0 r + C1) r^2 + (C2 r + 1). */
    const __m512d z = _mm512_fmadd_pd(r, _mm512_set1_pd(RWKVC_EXPF_C0), _mm512_set1_pd(RWKVC_EXPF_C1));
    const __m512d r2 = _mm512_mul_pd(r, r);
    __m512d y = _mm512_fmadd_pd(r, _mm512_set1_pd(RWKVC_EXPF_C2), _mm512_set1_pd(1.0));
    y = _mm512_fmadd_pd(z, r2, y);
    return _mm512_cvtpd_ps(_mm512_mul_pd(y, s));
}

/* 16 floats at p in place. */
static inline void exp16(float *p, const __m512i *tab) {
    const __m512 x = _mm512_loadu_ps(p);
    const __mmask16 special = _mm512_cmp_epu32_mask(
        _mm512_and_si512(_mm512_castps_si512(x), _mm512_set1_epi32(0x7fffffff)),
        _mm512_set1_epi32((int)RWKVC_EXPF_SPECIAL_ABS_BITS), _MM_CMPINT_NLT);
    const __m256 a = exp8(_mm512_castps512_ps256(x), tab);
    const __m256 b = exp8(_mm512_extractf32x8_ps(x, 1), tab);
    _mm256_storeu_ps(p, a);
    _mm256_storeu_ps(p + 8, b);
    if (special) {
        float in[16];
        _mm512_storeu_ps(in, x);
        for (int i = 0; i < 16; i++) {
            if (special & (1u << i)) {
                p[i] = expf(in[i]);
            }
        }
    }
}

void rwkvc_expf_avx512(float *x, size_t n) {
    __m512i tab[4];
    for (int i = 0; i < 4; i++) {
        tab[i] = _mm512_loadu_si512((const void *)(rwkvc_exp2f_table + 8 * i));
    }
    size_t i = 0;
    for (; i + 16 <= n; i += 16) {
        exp16(x + i, tab);
    }
    if (i < n) {
        /* The tail through a padded copy, so it gets the same arithmetic. */
        float buf[16] = {0};
        memcpy(buf, x + i, (n - i) * sizeof(float));
        exp16(buf, tab);
        memcpy(x + i, buf, (n - i) * sizeof(float));
    }
}
