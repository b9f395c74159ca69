/*
 * wkv_legacy.c: the RWKV-4 and RWKV-5/6 WKV recurrences (see wkv_legacy.h). Plain C written so that the compiler
 * vectorises the inner loops (over channels for v4, over the value index j for v5/v6).
 */
#include <math.h>

#include "wkv_legacy.h"

void rwkvc_wkv4(float *aa, float *bb, float *pp, const float *w, const float *u, const float *k, const float *v,
                float *y, size_t T, size_t stride, size_t c0, size_t c1) {
    for (size_t t = 0; t < T; t++) {
        const float *kt = k + t * stride, *vt = v + t * stride;
        float *yt = y + t * stride;
        for (size_t c = c0; c < c1; c++) {
            const float kc = kt[c], vc = vt[c], p = pp[c], a = aa[c], b = bb[c];
            /* Output with the current token's bonus; numerator and denominator both scaled by exp(-q). */
            float ww = u[c] + kc;
            float q = p > ww ? p : ww;
            float e1 = expf(p - q), e2 = expf(ww - q);
            yt[c] = (e1 * a + e2 * vc) / (e1 * b + e2);
            /* Decay the past in log space (pp + w), then add the current token. */
            ww = p + w[c];
            q = ww > kc ? ww : kc;
            e1 = expf(ww - q);
            e2 = expf(kc - q);
            aa[c] = e1 * a + e2 * vc;
            bb[c] = e1 * b + e2;
            pp[c] = q;
        }
    }
}

void rwkvc_wkv5(float *S, size_t N, size_t T, size_t stride, const float *r, const float *k, const float *v,
                const float *d, size_t d_stride, const float *u, float *y) {
    for (size_t t = 0; t < T; t++) {
        const float *restrict rt = r + t * stride, *restrict kt = k + t * stride, *restrict vt = v + t * stride;
        const float *restrict dt = d + t * d_stride;
        float *restrict yt = y + t * stride;
        /* The bonus term (sum_i r_i u_i k_i) v_j, then the state read before this token's update. */
        float bonus = 0.0f;
        for (size_t i = 0; i < N; i++) {
            bonus += rt[i] * u[i] * kt[i];
        }
        for (size_t j = 0; j < N; j++) {
            yt[j] = bonus * vt[j];
        }
        for (size_t i = 0; i < N; i++) {
            float *restrict Si = S + i * N;
            const float ri = rt[i], ki = kt[i], di = dt[i];
            for (size_t j = 0; j < N; j++) {
                const float s = Si[j];
                yt[j] += ri * s;
                Si[j] = s * di + ki * vt[j];
            }
        }
    }
}
