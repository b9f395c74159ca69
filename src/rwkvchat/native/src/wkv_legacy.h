/*
 * wkv_legacy.h: the WKV recurrences of RWKV-4 and RWKV-5/6 (rwkv-architectures.md §1.2 T3-T4, §2.2 T3, §3.2 T7).
 *
 * Both run token by token over a chunk of T tokens; the vectors of token t are at offset t * stride floats.
 * Everything is fp32, the state included.
 */
#ifndef RWKVC_WKV_LEGACY_H
#define RWKVC_WKV_LEGACY_H

#include <stddef.h>

/*
 * RWKV-4, channels [c0, c1) over T tokens, with the max trick written literally:
 *   out:    ww = u + k; q = max(pp, ww); e1 = exp(pp - q); e2 = exp(ww - q); y = (e1 aa + e2 v) / (e1 bb + e2)
 *   update: ww = pp + w; q = max(ww, k); e1 = exp(ww - q); e2 = exp(k - q);
 *           aa = e1 aa + e2 v; bb = e1 bb + e2; pp = q
 * aa, bb, pp: the layer's state vectors [D]; w = -exp(time_decay), u = time_first [D]; k, v, y: [T][stride].
 */
void rwkvc_wkv4(float *aa, float *bb, float *pp, const float *w, const float *u, const float *k, const float *v,
                float *y, size_t T, size_t stride, size_t c0, size_t c1);

/*
 * RWKV-5/6, one head of N channels over T tokens; S is the head's N x N state indexed [key i][value j]:
 *   y_j = sum_i r_i (u_i k_i v_j + S[i][j]);   S[i][j] <- d_i S[i][j] + k_i v_j
 * r, k, v, y advance by stride per token; d by d_stride (0 for v5's constant decay, stride for v6's per-token one);
 * u is the head's bonus [N].
 */
void rwkvc_wkv5(float *S, size_t N, size_t T, size_t stride, const float *r, const float *k, const float *v,
                const float *d, size_t d_stride, const float *u, float *y);

#endif /* RWKVC_WKV_LEGACY_H */
