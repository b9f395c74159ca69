/*
 * wkv7.h: the RWKV-7 WKV recurrence (rwkv-architectures.md §4.2 T9) for one head over T tokens, per instruction set.
 *
 * For each token t (vectors of N floats at offset t * stride):
 *   sa_j = -sum_i S[j][i] kk_i;   S[j][i] <- S[j][i] w_i + sa_j bb_i + v_j k_i;   y_j = sum_i S[j][i] r_i
 * with S the head's N x N state indexed [value j][key i], kk the normalised key (the "a" vector is -kk),
 * bb = kk * alpha, w the decay. The SIMD versions handle N a multiple of their width (every released model
 * has N = 64) and fall back to the reference otherwise.
 */
#ifndef RWKVC_WKV7_H
#define RWKVC_WKV7_H

#include <stddef.h>

#include "kernels.h"

/*
 * Decode reads each head's state (N * N floats, 16 KB at N = 64) from memory once per token and writes it back:
 * the weights streamed through the caches since the last token evicted it. The SIMD versions prefetch the state
 * this many bytes ahead of the row they work on (into L1), into the next head's state at the end of one, since a
 * thread runs adjacent heads. The hardware prefetcher alone left the heads job latency-bound: 0.4B Q4_0 decode
 * (2 threads, 16 heads a layer) spent 27-28 us a layer there, 21-23 us with 4 KB (1 KB 24-26, 2 KB 24-25, 8 KB
 * 23-24).
 */
#define RWKVC_WKV_PREFETCH_BYTES 4096

typedef void (*rwkvc_wkv7_fn)(float *S, size_t N, size_t T, size_t stride, const float *r, const float *w,
                              const float *k, const float *v, const float *kk, const float *bb, float *y);

void rwkvc_wkv7_ref(float *S, size_t N, size_t T, size_t stride, const float *r, const float *w, const float *k,
                    const float *v, const float *kk, const float *bb, float *y);
void rwkvc_wkv7_avx2(float *S, size_t N, size_t T, size_t stride, const float *r, const float *w, const float *k,
                     const float *v, const float *kk, const float *bb, float *y);
void rwkvc_wkv7_avx512(float *S, size_t N, size_t T, size_t stride, const float *r, const float *w, const float *k,
                       const float *v, const float *kk, const float *bb, float *y);

/* The version for an instruction set (the reference for scalar, NEON and unknown levels). */
rwkvc_wkv7_fn rwkvc_wkv7_get(rwkvc_isa isa);

#endif /* RWKVC_WKV7_H */
