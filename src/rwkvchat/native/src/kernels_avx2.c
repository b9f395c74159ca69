/*
 * kernels_avx2.c: AVX2 + FMA + F16C matrix kernels for float weights (f32, f16, bf16).
 *
 * Same schemes as kernels_avx512.c with 8 lanes: weights become fp32 in registers, accumulation is fp32.
 * - matvec, and matmat below RWKVC_GEMM_MIN_VEC vectors: a dot-product tile of up to 4 rows x 2 vectors (8
 *   accumulators; 16 ymm registers in all) reads each weight chunk once per 2 vectors. Every (row, vector) pair
 *   is accumulated in the same order whatever the tile, so matvec and these matmat calls agree bit for bit.
 * - matmat from RWKVC_GEMM_MIN_VEC vectors on: the blocked GEMM below (bits of rwkvc_float_matmat_fma_ref).
 * The column tail (cols % 8) is loaded through a zero-padded buffer or masked loads.
 */
#include <immintrin.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "kernels.h"

#define WT_F32 0
#define WT_F16 1
#define WT_BF16 30

#define RWKVC_INLINE static inline __attribute__((always_inline))

/* Prefetch distance in rows (one 4-row block ahead). Prefetching past the matrix end is harmless. */
#define PF_ROWS 4

RWKVC_INLINE __m256 cvt_w(__m128i h, int wt) {
    if (wt == WT_F16) {
        return _mm256_cvtph_ps(h);
    }
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
}

RWKVC_INLINE __m256 load_w(const void *w, size_t c, int wt) {
    if (wt == WT_F32) {
        return _mm256_loadu_ps((const float *)w + c);
    }
    return cvt_w(_mm_loadu_si128((const __m128i *)((const uint16_t *)w + c)), wt);
}

/* Loads n < 8 weights from column c, zero-padded to 8 lanes. */
RWKVC_INLINE __m256 load_w_tail(const void *w, size_t c, size_t n, int wt) {
    if (wt == WT_F32) {
        float buf[8] = {0};
        memcpy(buf, (const float *)w + c, n * sizeof(float));
        return _mm256_loadu_ps(buf);
    }
    uint16_t buf[8] = {0};
    memcpy(buf, (const uint16_t *)w + c, n * sizeof(uint16_t));
    return cvt_w(_mm_loadu_si128((const __m128i *)buf), wt);
}

RWKVC_INLINE __m256 load_x_tail(const float *x, size_t n) {
    float buf[8] = {0};
    memcpy(buf, x, n * sizeof(float));
    return _mm256_loadu_ps(buf);
}

RWKVC_INLINE float hsum(__m256 v) {
    __m128 lo = _mm256_castps256_ps128(v);
    __m128 hi = _mm256_extractf128_ps(v, 1);
    lo = _mm_add_ps(lo, hi);
    __m128 sh = _mm_movehl_ps(lo, lo);
    lo = _mm_add_ps(lo, sh);
    sh = _mm_shuffle_ps(lo, lo, 0x1);
    lo = _mm_add_ss(lo, sh);
    return _mm_cvtss_f32(lo);
}

/* Y[t + j][r + i] = W[r + i] . X[t + j] for i < RB, j < TB (compile-time constants after inlining). */
RWKVC_INLINE void tile(const char *W, size_t row_bytes, const char *X, size_t x_stride, float *Y, size_t ldy,
                       size_t r, size_t t, size_t cols, int RB, int TB, int wt, int pf) {
    __m256 acc[4][2];
    const void *w[4];
    const float *x[2];
    for (int i = 0; i < RB; i++) {
        w[i] = W + (r + i) * row_bytes;
        for (int j = 0; j < TB; j++) {
            acc[i][j] = _mm256_setzero_ps();
        }
    }
    for (int j = 0; j < TB; j++) {
        x[j] = (const float *)(X + (t + j) * x_stride);
    }
    size_t c = 0;
    for (; c + 8 <= cols; c += 8) {
        __m256 xv[2];
        for (int j = 0; j < TB; j++) {
            xv[j] = _mm256_loadu_ps(x[j] + c);
        }
        for (int i = 0; i < RB; i++) {
            __m256 wv = load_w(w[i], c, wt);
            if (pf) {
                /* Rows are short streams (2-8 KB) that the hardware prefetcher picks up late: fetch the same
                   columns of the next block of rows while this one is computed. */
                _mm_prefetch((const char *)w[i] + PF_ROWS * row_bytes + c * (wt == WT_F32 ? 4 : 2), _MM_HINT_T0);
            }
            for (int j = 0; j < TB; j++) {
                acc[i][j] = _mm256_fmadd_ps(wv, xv[j], acc[i][j]);
            }
        }
    }
    if (c < cols) {
        size_t n = cols - c;
        __m256 xv[2];
        for (int j = 0; j < TB; j++) {
            xv[j] = load_x_tail(x[j] + c, n);
        }
        for (int i = 0; i < RB; i++) {
            __m256 wv = load_w_tail(w[i], c, n, wt);
            for (int j = 0; j < TB; j++) {
                acc[i][j] = _mm256_fmadd_ps(wv, xv[j], acc[i][j]);
            }
        }
    }
    for (int i = 0; i < RB; i++) {
        for (int j = 0; j < TB; j++) {
            Y[(t + j) * ldy + r + i] = hsum(acc[i][j]);
        }
    }
}

RWKVC_INLINE void rows_all_vecs(const char *W, size_t row_bytes, const char *X, size_t x_stride, size_t n_vec,
                                float *Y, size_t ldy, size_t r, size_t cols, int RB, int wt) {
    /* Only the first tile of a row block prefetches; the others find the rows in cache. */
    size_t t = 0;
    if (n_vec >= 2) {
        tile(W, row_bytes, X, x_stride, Y, ldy, r, 0, cols, RB, 2, wt, 1);
        t = 2;
    }
    for (; t + 2 <= n_vec; t += 2) {
        tile(W, row_bytes, X, x_stride, Y, ldy, r, t, cols, RB, 2, wt, 0);
    }
    if (t < n_vec) {
        tile(W, row_bytes, X, x_stride, Y, ldy, r, t, cols, RB, 1, wt, t == 0);
    }
}

/*
 * A single vector: row pairs from the two halves of [r0, r1), prefetched MV_PF_BYTES ahead once per line, as in
 * kernels_avx512.c (RWKVC_ISA=avx2 on the AVX-512 machine, 2 threads, alternating runs: 0.4B F16 decode
 * 26.4-27.2 -> 23.5-24.1 ms against adjacent row pairs prefetched 4 rows ahead). One accumulator per row as in
 * tile, so the results do not change.
 */
#define MV_PF_BYTES 3072

RWKVC_INLINE void mv_rows(const char *W, size_t row_bytes, const float *x, float *y, size_t a, size_t b, int two,
                          size_t cols, int wt) {
    const size_t esz = wt == WT_F32 ? 4 : 2;
    const char *wa = W + a * row_bytes;
    const char *wb = W + b * row_bytes;
    __m256 acc_a = _mm256_setzero_ps();
    __m256 acc_b = _mm256_setzero_ps();
    size_t c = 0;
    for (; c + 8 <= cols; c += 8) {
        /* 8 columns are half a line of f32, a quarter of f16 / bf16. */
        if ((c & (wt == WT_F32 ? 8 : 24)) == 0) {
            _mm_prefetch(wa + c * esz + MV_PF_BYTES, _MM_HINT_T0);
            if (two) {
                _mm_prefetch(wb + c * esz + MV_PF_BYTES, _MM_HINT_T0);
            }
        }
        const __m256 xv = _mm256_loadu_ps(x + c);
        acc_a = _mm256_fmadd_ps(load_w(wa, c, wt), xv, acc_a);
        if (two) {
            acc_b = _mm256_fmadd_ps(load_w(wb, c, wt), xv, acc_b);
        }
    }
    if (c < cols) {
        const size_t n = cols - c;
        const __m256 xv = load_x_tail(x + c, n);
        acc_a = _mm256_fmadd_ps(load_w_tail(wa, c, n, wt), xv, acc_a);
        if (two) {
            acc_b = _mm256_fmadd_ps(load_w_tail(wb, c, n, wt), xv, acc_b);
        }
    }
    y[a] = hsum(acc_a);
    if (two) {
        y[b] = hsum(acc_b);
    }
}

RWKVC_INLINE void matvec_generic(const void *W, size_t row_bytes, const float *x, float *y, size_t r0, size_t r1,
                                 size_t cols, int wt) {
    const size_t h = (r1 - r0 + 1) / 2;
    for (size_t k = 0; k < h; k++) {
        const size_t b = r0 + h + k;
        mv_rows((const char *)W, row_bytes, x, y, r0 + k, b < r1 ? b : r0 + k, b < r1, cols, wt);
    }
}

RWKVC_INLINE void matmat_generic(const void *W, size_t row_bytes, const void *X, size_t x_stride, size_t n_vec,
                                 float *Y, size_t ldy, size_t r0, size_t r1, size_t cols, int wt) {
    if (n_vec == 1) {
        matvec_generic(W, row_bytes, (const float *)X, Y, r0, r1, cols, wt);
        return;
    }
    size_t r = r0;
    for (; r + 4 <= r1; r += 4) {
        rows_all_vecs(W, row_bytes, X, x_stride, n_vec, Y, ldy, r, cols, 4, wt);
    }
    for (; r < r1; r++) {
        rows_all_vecs(W, row_bytes, X, x_stride, n_vec, Y, ldy, r, cols, 1, wt);
    }
}

/*
 * ---- Blocked GEMM (sequence mode), as in kernels_avx512.c with 8 lanes ----
 *
 * Y[t][r] = sum_c W[r][c] X[t][c] for n_vec >= RWKVC_GEMM_MIN_VEC, lanes along tokens:
 * - token blocks of up to GB_T = 64 tokens, cut into NS = ceil(nt / 16) sub-blocks of 16 (padding lanes zero);
 * - row blocks of GB_MC rows whose partial sums live in cb (float32[GB_MC][GB_T], tokens contiguous);
 * - column blocks of GB_KC: X's block is transposed once into xt (float32[GB_KC][NS * 16]);
 * - micro-tile: MR = 6 rows x 2 vectors of 8 tokens = 12 ymm accumulators (of 16 registers); f16/bf16 rows are
 *   converted once into wb and reused by all NS sub-blocks.
 * Each output starts at 0 and takes one FMA per column, columns in order: the bits of rwkvc_float_matmat_fma_ref,
 * the same as the AVX-512 GEMM's. Scratch lives on the stack (about 83 KB).
 */
#define GB_T 64
#define GB_MR 6
#define GB_KC 128
#define GB_MC 192
/* Prefetch distance of the weights, in micro-tiles. */
#define GB_PF_TILES 2

/* Lanes [0, n) set, as maskload/maskstore want them (sign bits). Only for partial vectors: a masked store costs
   about as much as 8 plain ones on AMD cores (write_out took 5% of a 0.4B F16 prefill with one per row group). */
RWKVC_INLINE __m256i lane_mask(size_t n) {
    return _mm256_cmpgt_epi32(_mm256_set1_epi32((int)n), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}

/* Transposes an 8 x 8 block held in 8 registers: lane j of r[i] moves to lane i of r[j]. */
RWKVC_INLINE void transpose8(__m256 r[8]) {
    __m256 t[8], u[8];
    for (int i = 0; i < 8; i += 2) {
        t[i] = _mm256_unpacklo_ps(r[i], r[i + 1]);
        t[i + 1] = _mm256_unpackhi_ps(r[i], r[i + 1]);
    }
    /* u[g + c] holds, in 128-bit half h, column 4h + c of rows g..g+3. */
    for (int g = 0; g < 8; g += 4) {
        u[g] = _mm256_shuffle_ps(t[g], t[g + 2], 0x44);
        u[g + 1] = _mm256_shuffle_ps(t[g], t[g + 2], 0xEE);
        u[g + 2] = _mm256_shuffle_ps(t[g + 1], t[g + 3], 0x44);
        u[g + 3] = _mm256_shuffle_ps(t[g + 1], t[g + 3], 0xEE);
    }
    for (int c = 0; c < 4; c++) {
        r[c] = _mm256_permute2f128_ps(u[c], u[4 + c], 0x20);
        r[4 + c] = _mm256_permute2f128_ps(u[c], u[4 + c], 0x31);
    }
}

/* xt[k][8 g + l] = X[8 g + l][k0 + k] for k < kc, g < 2 NS; zero for tokens >= nt. */
static void pack_xt(const char *X, size_t x_stride, size_t nt, size_t NS, size_t k0, size_t kc, float *xt) {
    const size_t stride = NS * 16;
    for (size_t g = 0; g < 2 * NS; g++) {
        for (size_t kk = 0; kk < kc; kk += 8) {
            size_t n = kc - kk < 8 ? kc - kk : 8;
            __m256i m = lane_mask(n);
            __m256 v[8];
            for (int l = 0; l < 8; l++) {
                size_t t = g * 8 + (size_t)l;
                const float *src = (const float *)(X + t * x_stride) + k0 + kk;
                v[l] = t >= nt ? _mm256_setzero_ps() : n == 8 ? _mm256_loadu_ps(src) : _mm256_maskload_ps(src, m);
            }
            transpose8(v);
            for (int c = 0; c < 8; c++) {
                if ((size_t)c < n) {
                    _mm256_store_ps(xt + (kk + (size_t)c) * stride + g * 8, v[c]);
                }
            }
        }
    }
}

/*
 * Micro-tile over one 16-token sub-block: cb[i][l] = (first ? 0 : cb[i][l]) + sum_{k < kc} w[i][k] * xt[k][l],
 * one FMA per k in order, for i < MR, l < 16 (xt rows xs floats apart, cb rows GB_T apart). When pf is not NULL,
 * the rows of a later tile (MR rows pf_stride apart, from pf) are prefetched a line every few columns.
 */
RWKVC_INLINE void micro(const float *const *w, const float *xt, size_t xs, size_t kc, float *cb, int first,
                        const char *pf, size_t pf_stride, int MR, int es) {
    __m256 acc[GB_MR][2];
    for (int i = 0; i < MR; i++) {
        for (int j = 0; j < 2; j++) {
            acc[i][j] = first ? _mm256_setzero_ps() : _mm256_load_ps(cb + i * GB_T + j * 8);
        }
    }
    const size_t pf_lines = pf ? (kc * (size_t)es + 63) / 64 + 1 : 0;
    size_t pf_every = pf ? kc / ((size_t)MR * pf_lines) : kc;
    pf_every = pf_every ? pf_every : 1;
    size_t k = 0;
    for (int i = 0; i < MR && pf; i++) {
        uintptr_t line = ((uintptr_t)pf + (size_t)i * pf_stride) & ~(uintptr_t)63;
        for (size_t l = 0; l < pf_lines; l++, line += 64) {
            _mm_prefetch((const char *)line, _MM_HINT_T1);
            size_t end = k + pf_every < kc ? k + pf_every : kc;
            for (; k < end; k++) {
                __m256 x0 = _mm256_load_ps(xt + k * xs), x1 = _mm256_load_ps(xt + k * xs + 8);
                for (int r = 0; r < MR; r++) {
                    __m256 b = _mm256_broadcast_ss(w[r] + k);
                    acc[r][0] = _mm256_fmadd_ps(b, x0, acc[r][0]);
                    acc[r][1] = _mm256_fmadd_ps(b, x1, acc[r][1]);
                }
            }
        }
    }
    for (; k < kc; k++) {
        __m256 x0 = _mm256_load_ps(xt + k * xs), x1 = _mm256_load_ps(xt + k * xs + 8);
        for (int r = 0; r < MR; r++) {
            __m256 b = _mm256_broadcast_ss(w[r] + k);
            acc[r][0] = _mm256_fmadd_ps(b, x0, acc[r][0]);
            acc[r][1] = _mm256_fmadd_ps(b, x1, acc[r][1]);
        }
    }
    for (int i = 0; i < MR; i++) {
        for (int j = 0; j < 2; j++) {
            _mm256_store_ps(cb + i * GB_T + j * 8, acc[i][j]);
        }
    }
}

/* Rows [r, r + MR) x columns [k0, k0 + kc) for all NS sub-blocks; f16/bf16 rows are converted into wb first. */
RWKVC_INLINE void gemm_tile(const char *W, size_t row_bytes, size_t r, size_t k0, size_t kc, const float *xt,
                            size_t NS, float *cb, float *wb, int first, const char *pf, int MR, int wt) {
    const size_t es = wt == WT_F32 ? 4 : 2;
    const char *row = W + r * row_bytes;
    const float *w[GB_MR];
    for (int i = 0; i < MR; i++) {
        const void *wi = row + (size_t)i * row_bytes;
        if (wt == WT_F32) {
            w[i] = (const float *)wi + k0;
            continue;
        }
        float *d = wb + i * GB_KC;
        size_t kk = 0;
        for (; kk + 8 <= kc; kk += 8) {
            _mm256_store_ps(d + kk, load_w(wi, k0 + kk, wt));
        }
        if (kk < kc) {
            _mm256_store_ps(d + kk, load_w_tail(wi, k0 + kk, kc - kk, wt));
        }
        w[i] = d;
    }
    for (size_t s = 0; s < NS; s++) {
        micro(w, xt + s * 16, NS * 16, kc, cb + s * 16, first, s == 0 ? pf : NULL, row_bytes, MR, (int)es);
    }
}

/*
 * Y[t][rb + i] = cb[i][t] for i < mc, t < nt (Y already offset to the block's first token). Eight tokens at a time
 * down all the rows: Y's token rows are ldy floats apart (4-16 KB, one cache set), so eight rows of Y at a time
 * stay in L1, where eight rows of cb at a time over all the tokens kept 64 rows of Y in one set.
 */
static void write_out(const float *cb, size_t mc, size_t nt, float *Y, size_t ldy, size_t rb) {
    for (size_t g = 0; g * 8 < nt; g++) {
        for (size_t rl = 0; rl < mc; rl += 8) {
            size_t nr = mc - rl < 8 ? mc - rl : 8;
            const __m256i m = lane_mask(nr);
            __m256 v[8];
            for (int i = 0; i < 8; i++) {
                v[i] = (size_t)i < nr ? _mm256_load_ps(cb + (rl + (size_t)i) * GB_T + g * 8) : _mm256_setzero_ps();
            }
            transpose8(v);
            for (int l = 0; l < 8 && g * 8 + (size_t)l < nt; l++) {
                float *dst = Y + (g * 8 + (size_t)l) * ldy + rb + rl;
                if (nr == 8) {
                    _mm256_storeu_ps(dst, v[l]);
                } else {
                    _mm256_maskstore_ps(dst, m, v[l]);
                }
            }
        }
    }
}

/* The first weight of the micro-tile GB_PF_TILES tiles after the one at block row r, column k0 (see avx512). */
RWKVC_INLINE const char *pf_target(const char *W, size_t row_bytes, size_t rb, size_t mc, size_t r, size_t k0,
                                   size_t cols, int MR, size_t es) {
    size_t rr = r + (size_t)(GB_PF_TILES * MR), kk = k0;
    if (rr >= mc) {
        rr -= mc;
        kk += GB_KC;
        if (kk >= cols) {
            kk = 0;
            rr += mc;
        }
    }
    /* Integer arithmetic: the address may lie past the matrix, where a pointer may not point. */
    return (const char *)((uintptr_t)W + (rb + rr) * row_bytes + kk * es);
}

RWKVC_INLINE void gemm_generic(const void *W, size_t row_bytes, const void *X, size_t x_stride, size_t n_vec,
                               float *Y, size_t ldy, size_t r0, size_t r1, size_t cols, int wt) {
    _Alignas(32) float xt[GB_KC * GB_T];
    _Alignas(32) float cb[GB_MC * GB_T];
    _Alignas(32) float wb[GB_MR * GB_KC];
    const size_t es = wt == WT_F32 ? 4 : 2;
    const char *Wc = W;
    /* With more than one row block, the token block's columns are transposed once for all of them (cols x GB_T
       floats, 1 MB at 4096 columns) instead of once per row block; without the memory, once per row block. */
    float *xall = r1 - r0 > GB_MC ? aligned_alloc(32, (cols + GB_KC - 1) / GB_KC * sizeof(xt)) : NULL;
    for (size_t t0 = 0; t0 < n_vec; t0 += GB_T) {
        size_t nt = n_vec - t0 < GB_T ? n_vec - t0 : GB_T, NS = (nt + 15) / 16;
        const char *Xb = (const char *)X + t0 * x_stride;
        for (size_t k0 = 0; xall && k0 < cols; k0 += GB_KC) {
            pack_xt(Xb, x_stride, nt, NS, k0, cols - k0 < GB_KC ? cols - k0 : GB_KC, xall + k0 * GB_T);
        }
        for (size_t rb = r0; rb < r1; rb += GB_MC) {
            size_t mc = r1 - rb < GB_MC ? r1 - rb : GB_MC;
            for (size_t k0 = 0; k0 < cols; k0 += GB_KC) {
                size_t kc = cols - k0 < GB_KC ? cols - k0 : GB_KC;
                int first = k0 == 0;
                float *xt_k = xall ? xall + k0 * GB_T : xt;
                if (!xall) {
                    pack_xt(Xb, x_stride, nt, NS, k0, kc, xt);
                }
                size_t r = 0;
                for (; r + GB_MR <= mc; r += GB_MR) {
                    const char *pf = pf_target(Wc, row_bytes, rb, mc, r, k0, cols, GB_MR, es);
                    gemm_tile(Wc, row_bytes, rb + r, k0, kc, xt_k, NS, cb + r * GB_T, wb, first, pf, GB_MR, wt);
                }
                /* The last mc % 6 rows: tiles of 4, 2 and 1 rows. */
                if (r + 4 <= mc) {
                    const char *pf = pf_target(Wc, row_bytes, rb, mc, r, k0, cols, 4, es);
                    gemm_tile(Wc, row_bytes, rb + r, k0, kc, xt_k, NS, cb + r * GB_T, wb, first, pf, 4, wt);
                    r += 4;
                }
                if (r + 2 <= mc) {
                    const char *pf = pf_target(Wc, row_bytes, rb, mc, r, k0, cols, 2, es);
                    gemm_tile(Wc, row_bytes, rb + r, k0, kc, xt_k, NS, cb + r * GB_T, wb, first, pf, 2, wt);
                    r += 2;
                }
                if (r < mc) {
                    const char *pf = pf_target(Wc, row_bytes, rb, mc, r, k0, cols, 1, es);
                    gemm_tile(Wc, row_bytes, rb + r, k0, kc, xt_k, NS, cb + r * GB_T, wb, first, pf, 1, wt);
                }
            }
            write_out(cb, mc, nt, Y + t0 * ldy, ldy, rb);
        }
    }
    free(xall);
}

static size_t float_act_bytes(size_t cols) {
    (void)cols;
    return 0;
}

#define DEFINE_KERNELS(suffix, wt)                                                                                 \
    static void matmat_##suffix(const void *W, size_t row_bytes, const void *X, size_t x_stride, size_t n_vec,     \
                                float *Y, size_t ldy, size_t r0, size_t r1, size_t cols) {                         \
        if (n_vec >= RWKVC_GEMM_MIN_VEC) {                                                                         \
            gemm_generic(W, row_bytes, X, x_stride, n_vec, Y, ldy, r0, r1, cols, wt);                              \
            return;                                                                                                \
        }                                                                                                          \
        matmat_generic(W, row_bytes, X, x_stride, n_vec, Y, ldy, r0, r1, cols, wt);                                \
    }                                                                                                              \
    static void matvec_##suffix(const void *W, size_t row_bytes, const void *x, float *y, size_t r0, size_t r1,    \
                                size_t cols) {                                                                     \
        matvec_generic(W, row_bytes, (const float *)x, y, r0, r1, cols, wt);                                       \
    }                                                                                                              \
    static const rwkvc_matmul_kernels k_##suffix = {float_act_bytes, NULL, matvec_##suffix, matmat_##suffix,      \
                                                    NULL, NULL, NULL, 0};

DEFINE_KERNELS(f32, WT_F32)
DEFINE_KERNELS(f16, WT_F16)
DEFINE_KERNELS(bf16, WT_BF16)

const rwkvc_matmul_kernels *rwkvc_float_kernels_avx2(uint32_t type) {
    switch (type) {
    case WT_F32: return &k_f32;
    case WT_F16: return &k_f16;
    case WT_BF16: return &k_bf16;
    default: return NULL;
    }
}
