/*
 * wkv7_ref.c: the reference RWKV-7 WKV recurrence (see wkv7.h) and the per-ISA choice.
 *
 * The dot products use 8 partial sums so that compilers vectorise them at the baseline ISA too.
 */
#include "wkv7.h"

void rwkvc_wkv7_ref(float *S, size_t N, size_t T, size_t stride, const float *r, const float *w, const float *k,
                    const float *v, const float *kk, const float *bb, float *y) {
    for (size_t t = 0; t < T; t++) {
        const size_t o = t * stride;
        const float *restrict rt = r + o, *restrict wt = w + o, *restrict kt = k + o;
        const float *restrict kkt = kk + o, *restrict bbt = bb + o;
        for (size_t j = 0; j < N; j++) {
            float *restrict Sj = S + j * N;
            float p[8] = {0, 0, 0, 0, 0, 0, 0, 0};
            size_t i = 0;
            for (; i + 8 <= N; i += 8) {
                for (int u = 0; u < 8; u++) {
                    p[u] += Sj[i + u] * kkt[i + u];
                }
            }
            float sa = ((p[0] + p[1]) + (p[2] + p[3])) + ((p[4] + p[5]) + (p[6] + p[7]));
            for (; i < N; i++) {
                sa += Sj[i] * kkt[i];
            }
            sa = -sa;
            const float vj = v[o + j];
            float q[8] = {0, 0, 0, 0, 0, 0, 0, 0};
            i = 0;
            for (; i + 8 <= N; i += 8) {
                for (int u = 0; u < 8; u++) {
                    float s = Sj[i + u] * wt[i + u] + sa * bbt[i + u] + vj * kt[i + u];
                    Sj[i + u] = s;
                    q[u] += s * rt[i + u];
                }
            }
            float yy = ((q[0] + q[1]) + (q[2] + q[3])) + ((q[4] + q[5]) + (q[6] + q[7]));
            for (; i < N; i++) {
                float s = Sj[i] * wt[i] + sa * bbt[i] + vj * kt[i];
                Sj[i] = s;
                yy += s * rt[i];
            }
            y[o + j] = yy;
        }
    }
}

rwkvc_wkv7_fn rwkvc_wkv7_get(rwkvc_isa isa) {
#if defined(RWKVC_X86)
    if (isa == RWKVC_ISA_AVX512) {
        return rwkvc_wkv7_avx512;
    }
    if (isa == RWKVC_ISA_AVX2) {
        return rwkvc_wkv7_avx2;
    }
#else
    (void)isa;
#endif
    return rwkvc_wkv7_ref;
}
