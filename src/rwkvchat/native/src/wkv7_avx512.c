/*
 * wkv7_avx512.c: the RWKV-7 WKV recurrence (see wkv7.h) with AVX-512: one value row of the state is N / 16
 * vectors; the token's key-side vectors (r, w, k, kk, bb) are loaded once per token and reused for all N rows.
 */
#include <immintrin.h>

#include "wkv7.h"

#define RWKVC_INLINE static inline __attribute__((always_inline))

/* NC = N / 16 vectors per row; a compile-time constant after inlining for the common N = 64. */
RWKVC_INLINE void run(float *S, size_t NC, size_t T, size_t stride, const float *r, const float *w, const float *k,
                      const float *v, const float *kk, const float *bb, float *y) {
    const size_t N = NC * 16;
    __m512 rv[16], wv[16], kv[16], kkv[16], bbv[16];
    for (size_t t = 0; t < T; t++) {
        const size_t o = t * stride;
        for (size_t c = 0; c < NC; c++) {
            rv[c] = _mm512_loadu_ps(r + o + 16 * c);
            wv[c] = _mm512_loadu_ps(w + o + 16 * c);
            kv[c] = _mm512_loadu_ps(k + o + 16 * c);
            kkv[c] = _mm512_loadu_ps(kk + o + 16 * c);
            bbv[c] = _mm512_loadu_ps(bb + o + 16 * c);
        }
        for (size_t j = 0; j < N; j++) {
            float *Sj = S + j * N;
            for (size_t c = 0; c < NC; c++) {
                _mm_prefetch((const char *)(Sj + 16 * c) + RWKVC_WKV_PREFETCH_BYTES, _MM_HINT_T0);
            }
            __m512 acc = _mm512_setzero_ps();
            for (size_t c = 0; c < NC; c++) {
                acc = _mm512_fmadd_ps(_mm512_loadu_ps(Sj + 16 * c), kkv[c], acc);
            }
            const __m512 sa = _mm512_set1_ps(-_mm512_reduce_add_ps(acc));
            const __m512 vj = _mm512_set1_ps(v[o + j]);
            __m512 yacc = _mm512_setzero_ps();
            for (size_t c = 0; c < NC; c++) {
                __m512 s = _mm512_loadu_ps(Sj + 16 * c);
                s = _mm512_fmadd_ps(s, wv[c], _mm512_fmadd_ps(sa, bbv[c], _mm512_mul_ps(vj, kv[c])));
                _mm512_storeu_ps(Sj + 16 * c, s);
                yacc = _mm512_fmadd_ps(s, rv[c], yacc);
            }
            y[o + j] = _mm512_reduce_add_ps(yacc);
        }
    }
}

void rwkvc_wkv7_avx512(float *S, size_t N, size_t T, size_t stride, const float *r, const float *w, const float *k,
                       const float *v, const float *kk, const float *bb, float *y) {
    if (N == 64) {
        run(S, 4, T, stride, r, w, k, v, kk, bb, y);
    } else if (N % 16 == 0 && N <= 256) {
        run(S, N / 16, T, stride, r, w, k, v, kk, bb, y);
    } else {
        rwkvc_wkv7_ref(S, N, T, stride, r, w, k, v, kk, bb, y);
    }
}
