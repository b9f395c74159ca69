/*
 * wkv7_avx2.c: the RWKV-7 WKV recurrence (see wkv7.h) with AVX2 + FMA: one value row of the state is N / 8
 * vectors; the token's key-side vectors are reloaded per row (16 ymm registers cannot hold them all), from L1.
 */
#include <immintrin.h>

#include "wkv7.h"

#define RWKVC_INLINE static inline __attribute__((always_inline))

RWKVC_INLINE float hsum(__m256 v) {
    __m128 lo = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    lo = _mm_add_ps(lo, _mm_movehl_ps(lo, lo));
    lo = _mm_add_ss(lo, _mm_shuffle_ps(lo, lo, 0x1));
    return _mm_cvtss_f32(lo);
}

/* NC = N / 8 vectors per row; a compile-time constant after inlining for the common N = 64. */
RWKVC_INLINE void run(float *S, size_t NC, size_t T, size_t stride, const float *r, const float *w, const float *k,
                      const float *v, const float *kk, const float *bb, float *y) {
    const size_t N = NC * 8;
    for (size_t t = 0; t < T; t++) {
        const size_t o = t * stride;
        const float *rt = r + o, *wt = w + o, *kt = k + o, *kkt = kk + o, *bbt = bb + o;
        for (size_t j = 0; j < N; j++) {
            float *Sj = S + j * N;
            for (size_t c = 0; c < NC; c += 2) { /* one per 64-byte line */
                _mm_prefetch((const char *)(Sj + 8 * c) + RWKVC_WKV_PREFETCH_BYTES, _MM_HINT_T0);
            }
            __m256 acc = _mm256_setzero_ps();
            for (size_t c = 0; c < NC; c++) {
                acc = _mm256_fmadd_ps(_mm256_loadu_ps(Sj + 8 * c), _mm256_loadu_ps(kkt + 8 * c), acc);
            }
            const __m256 sa = _mm256_set1_ps(-hsum(acc));
            const __m256 vj = _mm256_set1_ps(v[o + j]);
            __m256 yacc = _mm256_setzero_ps();
            for (size_t c = 0; c < NC; c++) {
                __m256 s = _mm256_loadu_ps(Sj + 8 * c);
                __m256 add = _mm256_fmadd_ps(sa, _mm256_loadu_ps(bbt + 8 * c),
                                             _mm256_mul_ps(vj, _mm256_loadu_ps(kt + 8 * c)));
                s = _mm256_fmadd_ps(s, _mm256_loadu_ps(wt + 8 * c), add);
                _mm256_storeu_ps(Sj + 8 * c, s);
                yacc = _mm256_fmadd_ps(s, _mm256_loadu_ps(rt + 8 * c), yacc);
            }
            y[o + j] = hsum(yacc);
        }
    }
}

void rwkvc_wkv7_avx2(float *S, size_t N, size_t T, size_t stride, const float *r, const float *w, const float *k,
                     const float *v, const float *kk, const float *bb, float *y) {
    if (N == 64) {
        run(S, 8, T, stride, r, w, k, v, kk, bb, y);
    } else if (N % 8 == 0) {
        run(S, N / 8, T, stride, r, w, k, v, kk, bb, y);
    } else {
        rwkvc_wkv7_ref(S, N, T, stride, r, w, k, v, kk, bb, y);
    }
}
