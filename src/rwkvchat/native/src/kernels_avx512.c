/*
 * kernels_avx512.c: AVX-512 (F/BW/VL/DQ) matrix kernels for float weights (f32, f16, bf16).
 *
 * Weights are converted to fp32 in registers (vcvtph2ps for f16, a 16-bit shift for bf16) and multiplied with
 * fp32 activations into fp32 accumulators. Three schemes:
 * - matvec, and matmat with n_vec < RWKVC_GEMM_MIN_VEC: a dot-product tile of up to 4 rows x 4 vectors (16
 *   accumulators of 16 lanes, partial sums over columns reduced at the end); a single vector takes two rows at
 *   a time from the two halves of the row range (matvec_generic). Each weight chunk is loaded once and used for
 *   every vector. Every (row, vector) pair is accumulated over the columns in the same order whatever the tile
 *   shape, so matvec and these matmat calls give bit-identical results.
 * - matmat with n_vec >= RWKVC_GEMM_MIN_VEC (sequence mode): a blocked GEMM, lanes along tokens (below). Each
 *   output is one fused multiply-add chain over the columns in order (rwkvc_float_matmat_fma_ref), so it differs
 *   from matvec in the last bits.
 * - f16/bf16 sequence mode on CPUs with AMX-BF16 (matmat_seq, chosen by the caller when seq_act_bytes is not 0):
 *   the same products on AMX tiles, with activations and weights split into bf16 pairs (below). About twice the
 *   FMA GEMM's rate, with about 17 bits of each product instead of 24. f32 weights keep the FMA GEMM.
 * Column tails (cols not a multiple of 16) use masked loads, so any cols >= 1 works.
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

/* Prefetch distance in rows of the multi-vector tiles (one 4-row block ahead). Prefetching past the matrix end is
   harmless. */
#define PF_ROWS 4

/* The 16 bf16 numbers of h as fp32 (a bf16 is the upper half of an fp32). */
RWKVC_INLINE __m512 bf16_to_ps(__m256i h) {
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
}

RWKVC_INLINE __m512 load_w(const void *w, size_t c, int wt) {
    if (wt == WT_F32) {
        return _mm512_loadu_ps((const float *)w + c);
    }
    __m256i h = _mm256_loadu_si256((const __m256i *)((const uint16_t *)w + c));
    if (wt == WT_F16) {
        return _mm512_cvtph_ps(h);
    }
    return bf16_to_ps(h);
}

RWKVC_INLINE __m512 load_w_mask(const void *w, size_t c, __mmask16 m, int wt) {
    if (wt == WT_F32) {
        return _mm512_maskz_loadu_ps(m, (const float *)w + c);
    }
    __m256i h = _mm256_maskz_loadu_epi16(m, (const uint16_t *)w + c);
    if (wt == WT_F16) {
        return _mm512_cvtph_ps(h);
    }
    return bf16_to_ps(h);
}

/*
 * Y[t + j][r + i] = W[r + i] . X[t + j] for i < RB, j < TB (RB, TB compile-time constants after inlining).
 */
RWKVC_INLINE void tile(const char *W, size_t row_bytes, const char *X, size_t x_stride, float *Y, size_t ldy,
                       size_t r, size_t t, size_t cols, int RB, int TB, int wt, int pf) {
    __m512 acc[4][4];
    const void *w[4];
    const float *x[4];
    for (int i = 0; i < RB; i++) {
        w[i] = W + (r + i) * row_bytes;
        for (int j = 0; j < TB; j++) {
            acc[i][j] = _mm512_setzero_ps();
        }
    }
    for (int j = 0; j < TB; j++) {
        x[j] = (const float *)(X + (t + j) * x_stride);
    }
    size_t c = 0;
    for (; c + 16 <= cols; c += 16) {
        __m512 xv[4];
        for (int j = 0; j < TB; j++) {
            xv[j] = _mm512_loadu_ps(x[j] + c);
        }
        for (int i = 0; i < RB; i++) {
            __m512 wv = load_w(w[i], c, wt);
            if (pf) {
                /* Rows are short streams (2-8 KB) that the hardware prefetcher picks up late: fetch the same
                   columns of the next block of rows while this one is computed. */
                _mm_prefetch((const char *)w[i] + PF_ROWS * row_bytes + c * (wt == WT_F32 ? 4 : 2), _MM_HINT_T0);
            }
            for (int j = 0; j < TB; j++) {
                acc[i][j] = _mm512_fmadd_ps(wv, xv[j], acc[i][j]);
            }
        }
    }
    if (c < cols) {
        __mmask16 m = (__mmask16)((1u << (cols - c)) - 1u);
        __m512 xv[4];
        for (int j = 0; j < TB; j++) {
            xv[j] = _mm512_maskz_loadu_ps(m, x[j] + c);
        }
        for (int i = 0; i < RB; i++) {
            __m512 wv = load_w_mask(w[i], c, m, wt);
            for (int j = 0; j < TB; j++) {
                acc[i][j] = _mm512_fmadd_ps(wv, xv[j], acc[i][j]);
            }
        }
    }
    for (int i = 0; i < RB; i++) {
        for (int j = 0; j < TB; j++) {
            Y[(t + j) * ldy + r + i] = _mm512_reduce_add_ps(acc[i][j]);
        }
    }
}

/* All vectors for RB rows starting at r: blocks of 4 vectors, then the remainder. */
RWKVC_INLINE void rows_all_vecs(const char *W, size_t row_bytes, const char *X, size_t x_stride, size_t n_vec,
                                float *Y, size_t ldy, size_t r, size_t cols, int RB, int wt) {
    /* Only the first tile of a row block prefetches; the others find the rows in cache. */
    size_t t = 0;
    if (n_vec >= 4) {
        tile(W, row_bytes, X, x_stride, Y, ldy, r, 0, cols, RB, 4, wt, 1);
        t = 4;
    }
    for (; t + 4 <= n_vec; t += 4) {
        tile(W, row_bytes, X, x_stride, Y, ldy, r, t, cols, RB, 4, wt, 0);
    }
    int pf = t == 0;
    switch (n_vec - t) {
    case 3: tile(W, row_bytes, X, x_stride, Y, ldy, r, t, cols, RB, 3, wt, pf); break;
    case 2: tile(W, row_bytes, X, x_stride, Y, ldy, r, t, cols, RB, 2, wt, pf); break;
    case 1: tile(W, row_bytes, X, x_stride, Y, ldy, r, t, cols, RB, 1, wt, pf); break;
    default: break;
    }
}

/*
 * A single vector (decode, memory-bound): rows in pairs taken from the two halves of [r0, r1) (r0 + k with
 * r0 + h + k), so each thread reads two regions of the matrix at once, each prefetched MV_PF_BYTES ahead into L1
 * once per line. One accumulator per row over the columns in order, as in tile, so the results are the same as
 * matmat's for any row range. Measured (2 threads, 1 GiB f16 matrices, ratio to a plain read, 1024 / 2048 / 4096
 * columns): adjacent row pairs prefetched 4 rows ahead 0.95 / 0.86 / 0.83, split pairs 3 KB ahead 1.00 / 0.98-1.00
 * / 0.94 (2 KB 0.97 / 0.93, 4 KB 0.88 / 0.91, T2 3 KB 1.01 / 0.90). Decode, alternating runs: 1.5B F16 96.2-96.4
 * -> 86.6-87.6 ms, 0.4B F16 25.9-26.3 -> 24.4-25.0 ms.
 */
#define MV_PF_BYTES 3072

RWKVC_INLINE void mv_rows(const char *W, size_t row_bytes, const float *x, float *y, size_t a, size_t b, int two,
                          size_t cols, int wt) {
    const size_t esz = wt == WT_F32 ? 4 : 2;
    const char *wa = W + a * row_bytes;
    const char *wb = W + b * row_bytes;
    __m512 acc_a = _mm512_setzero_ps();
    __m512 acc_b = _mm512_setzero_ps();
    size_t c = 0;
    for (; c + 16 <= cols; c += 16) {
        /* 16 columns are a line of f32, half a line of f16 / bf16. */
        if (wt == WT_F32 || (c & 16) == 0) {
            _mm_prefetch(wa + c * esz + MV_PF_BYTES, _MM_HINT_T0);
            if (two) {
                _mm_prefetch(wb + c * esz + MV_PF_BYTES, _MM_HINT_T0);
            }
        }
        const __m512 xv = _mm512_loadu_ps(x + c);
        acc_a = _mm512_fmadd_ps(load_w(wa, c, wt), xv, acc_a);
        if (two) {
            acc_b = _mm512_fmadd_ps(load_w(wb, c, wt), xv, acc_b);
        }
    }
    if (c < cols) {
        const __mmask16 m = (__mmask16)((1u << (cols - c)) - 1u);
        const __m512 xv = _mm512_maskz_loadu_ps(m, x + c);
        acc_a = _mm512_fmadd_ps(load_w_mask(wa, c, m, wt), xv, acc_a);
        if (two) {
            acc_b = _mm512_fmadd_ps(load_w_mask(wb, c, m, wt), xv, acc_b);
        }
    }
    y[a] = _mm512_reduce_add_ps(acc_a);
    if (two) {
        y[b] = _mm512_reduce_add_ps(acc_b);
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

/* Blocks of 4 rows share each activation load among more rows. */
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
 * ---- Blocked GEMM (sequence mode) ----
 *
 * Y[t][r] = sum_c W[r][c] X[t][c] for n_vec >= RWKVC_GEMM_MIN_VEC tokens, BLIS-style but with the vector lanes
 * along tokens, so that weights need no transposition (only f16/bf16 -> fp32 conversion) and each weight is
 * read and converted once per GB_T tokens:
 * - token blocks of up to GB_T = 64 tokens (NJ = 1..4 vectors of 16 lanes; padding lanes are zero);
 * - row blocks of GB_MC rows whose partial sums live in cb (float32[GB_MC][GB_T], tokens contiguous);
 * - column blocks of GB_KC: X's block is transposed once into xt (float32[GB_KC][NJ * 16]) and stays in L1
 *   while every micro-tile of the row block runs over it;
 * - micro-tile: MR rows x NJ vectors, MR = 6 / 8 / 12 for NJ = 4 / 3 / 2 and 1 (24 or 12 zmm accumulators); per
 *   column one load of NJ token vectors, MR weight broadcasts and MR x NJ FMAs.
 * At the end of a row block cb is transposed into Y (16 x 16 blocks, masked stores).
 * Each output starts at 0 and takes one FMA per column, columns in order, so the result does not depend on the
 * blocking, the row range or the thread split: it is exactly rwkvc_float_matmat_fma_ref.
 * Scratch lives on the stack (about 86 KB: xt 32 KB, cb 48 KB, wb 6 KB), so nothing can fail.
 */
#define GB_T 64
#define GB_MR 12
#define GB_KC 128
#define GB_MC 192
/* Prefetch distance of the weights, in micro-tiles. */
#define GB_PF_TILES 2

/* Transposes a 16 x 16 block held in 16 registers: lane j of r[i] moves to lane i of r[j]. */
RWKVC_INLINE void transpose16(__m512 r[16]) {
    __m512 t[16];
    for (int i = 0; i < 16; i += 2) {
        t[i] = _mm512_unpacklo_ps(r[i], r[i + 1]);
        t[i + 1] = _mm512_unpackhi_ps(r[i], r[i + 1]);
    }
    /* u[4g + c] holds, in 128-bit lane L, column 4L + c of rows 4g..4g+3. */
    __m512 u[16];
    for (int g = 0; g < 16; g += 4) {
        __m512d a = _mm512_castps_pd(t[g]), b = _mm512_castps_pd(t[g + 1]);
        __m512d c = _mm512_castps_pd(t[g + 2]), d = _mm512_castps_pd(t[g + 3]);
        u[g] = _mm512_castpd_ps(_mm512_unpacklo_pd(a, c));
        u[g + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(a, c));
        u[g + 2] = _mm512_castpd_ps(_mm512_unpacklo_pd(b, d));
        u[g + 3] = _mm512_castpd_ps(_mm512_unpackhi_pd(b, d));
    }
    /* Column 4L + c gathers lane L of u[c], u[4 + c], u[8 + c], u[12 + c]. */
    for (int c = 0; c < 4; c++) {
        __m512 a0 = _mm512_shuffle_f32x4(u[c], u[4 + c], 0x44), a1 = _mm512_shuffle_f32x4(u[c], u[4 + c], 0xEE);
        __m512 b0 = _mm512_shuffle_f32x4(u[8 + c], u[12 + c], 0x44);
        __m512 b1 = _mm512_shuffle_f32x4(u[8 + c], u[12 + c], 0xEE);
        r[c] = _mm512_shuffle_f32x4(a0, b0, 0x88);
        r[4 + c] = _mm512_shuffle_f32x4(a0, b0, 0xDD);
        r[8 + c] = _mm512_shuffle_f32x4(a1, b1, 0x88);
        r[12 + c] = _mm512_shuffle_f32x4(a1, b1, 0xDD);
    }
}

/* xt[k][16 j + l] = X[16 j + l][k0 + k] for k < kc, j < NJ; zero for tokens >= nt. X: nt vectors, x_stride bytes. */
RWKVC_INLINE void pack_xt(const char *X, size_t x_stride, size_t nt, size_t k0, size_t kc, float *xt, int NJ) {
    for (int j = 0; j < NJ; j++) {
        for (size_t kk = 0; kk < kc; kk += 16) {
            size_t n = kc - kk < 16 ? kc - kk : 16;
            __mmask16 m = (__mmask16)((1u << n) - 1u);
            __m512 v[16];
            for (int l = 0; l < 16; l++) {
                size_t t = (size_t)j * 16 + (size_t)l;
                v[l] = t < nt ? _mm512_maskz_loadu_ps(m, (const float *)(X + t * x_stride) + k0 + kk)
                              : _mm512_setzero_ps();
            }
            transpose16(v);
            for (int c = 0; c < 16; c++) {
                if ((size_t)c < n) {
                    _mm512_store_ps(xt + (kk + (size_t)c) * (size_t)(NJ * 16) + j * 16, v[c]);
                }
            }
        }
    }
}

/* Column k of a micro-tile: acc[i][j] += w[i][k] * xt[k][16 j .. 16 j + 15]. */
RWKVC_INLINE void micro_col(__m512 acc[GB_MR][4], const float *const *w, const float *xt, size_t k, int MR, int NJ) {
    __m512 xv[4];
    for (int j = 0; j < NJ; j++) {
        xv[j] = _mm512_load_ps(xt + k * (size_t)(NJ * 16) + j * 16);
    }
    for (int i = 0; i < MR; i++) {
        __m512 b = _mm512_set1_ps(w[i][k]);
        for (int j = 0; j < NJ; j++) {
            acc[i][j] = _mm512_fmadd_ps(b, xv[j], acc[i][j]);
        }
    }
}

/*
 * Micro-tile: cb[i][16 j + l] = (first ? 0 : cb[i][16 j + l]) + sum_{k < kc} w[i][k] * xt[k][16 j + l], one FMA
 * per k in order, for i < MR, j < NJ. cb rows are GB_T floats apart.
 * pf, pf_stride: the weights of a later micro-tile (MR rows pf_stride bytes apart, kc elements of es bytes from
 * pf), prefetched into L2 a cache line every few columns: row segments of 256-512 bytes on different pages are
 * too short for the hardware prefetcher, and a burst of prefetches would fill the line-fill buffers.
 */
RWKVC_INLINE void micro(const float *const *w, const float *xt, size_t kc, float *cb, int first, const char *pf,
                        size_t pf_stride, int MR, int NJ, int es) {
    __m512 acc[GB_MR][4];
    for (int i = 0; i < MR; i++) {
        for (int j = 0; j < NJ; j++) {
            acc[i][j] = first ? _mm512_setzero_ps() : _mm512_load_ps(cb + i * GB_T + j * 16);
        }
    }
    /*
     * Lines per row segment (it need not start on a line boundary, hence the extra one), one prefetch every
     * pf_every columns: the column loop runs in pieces between prefetches, so it carries no test of its own.
     */
    const size_t pf_lines = (kc * (size_t)es + 63) / 64 + 1;
    size_t pf_every = kc / ((size_t)MR * pf_lines);
    pf_every = pf_every ? pf_every : 1;
    size_t k = 0;
    for (int i = 0; i < MR; i++) {
        uintptr_t line = ((uintptr_t)pf + (size_t)i * pf_stride) & ~(uintptr_t)63;
        for (size_t l = 0; l < pf_lines; l++, line += 64) {
            _mm_prefetch((const char *)line, _MM_HINT_T1);
            size_t end = k + pf_every < kc ? k + pf_every : kc;
            for (; k < end; k++) {
                micro_col(acc, w, xt, k, MR, NJ);
            }
        }
    }
    for (; k < kc; k++) {
        micro_col(acc, w, xt, k, MR, NJ);
    }
    for (int i = 0; i < MR; i++) {
        for (int j = 0; j < NJ; j++) {
            _mm512_store_ps(cb + i * GB_T + j * 16, acc[i][j]);
        }
    }
}

/*
 * Rows [r, r + MR) x columns [k0, k0 + kc) into the micro-tile; f16/bf16 rows are converted into wb first.
 * pf: where the rows of the tile GB_PF_TILES ahead start (prefetched during this one).
 */
RWKVC_INLINE void gemm_tile(const char *W, size_t row_bytes, size_t r, size_t k0, size_t kc, const float *xt,
                            float *cb, float *wb, int first, const char *pf, int MR, int NJ, int wt) {
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
        for (size_t kk = 0; kk < kc; kk += 16) {
            size_t n = kc - kk < 16 ? kc - kk : 16;
            _mm512_store_ps(d + kk, load_w_mask(wi, k0 + kk, (__mmask16)((1u << n) - 1u), wt));
        }
        w[i] = d;
    }
    micro(w, xt, kc, cb, first, pf, row_bytes, MR, NJ, (int)es);
}

/*
 * Y[t][rb + i] = cb[i][t] for i < mc, t < nt (Y already offset to the block's first token). Sixteen tokens at a
 * time down all the rows: Y's token rows are ldy floats apart (4-16 KB, one cache set), so sixteen rows of Y at a
 * time stay in L1 (the other order kept all 64 in one set; 5% of an AVX2 F16 prefill in its write_out).
 */
RWKVC_INLINE void write_out(const float *cb, size_t mc, size_t nt, float *Y, size_t ldy, size_t rb, int NJ) {
    for (int j = 0; j < NJ; j++) {
        for (size_t rl = 0; rl < mc; rl += 16) {
            size_t nr = mc - rl < 16 ? mc - rl : 16;
            __mmask16 m = (__mmask16)((1u << nr) - 1u);
            __m512 v[16];
            for (int i = 0; i < 16; i++) {
                v[i] = (size_t)i < nr ? _mm512_load_ps(cb + (rl + (size_t)i) * GB_T + j * 16) : _mm512_setzero_ps();
            }
            transpose16(v);
            for (int l = 0; l < 16; l++) {
                size_t t = (size_t)j * 16 + (size_t)l;
                if (t < nt) {
                    _mm512_mask_storeu_ps(Y + t * ldy + rb + rl, m, v[l]);
                }
            }
        }
    }
}

/*
 * The first weight of the micro-tile GB_PF_TILES tiles after the one at block row r, column k0, in the order the
 * tiles run: down the row block, then the next column block, then the next row block. A tile takes about 1500
 * cycles, so the lines arrive in time even from DRAM. Past the matrix end the prefetch is harmless.
 */
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

/*
 * One token block (nt <= GB_T tokens, NJ = ceil(nt / 16)) for rows [r0, r1). xall (NULL: not available) holds room
 * for every column block's transposed activations, so they are transposed once for all row blocks; otherwise xt
 * takes one column block at a time, transposed again for each row block.
 */
RWKVC_INLINE void gemm_tblock(const char *W, size_t row_bytes, const char *X, size_t x_stride, size_t nt, float *Y,
                              size_t ldy, size_t r0, size_t r1, size_t cols, float *xt, float *xall, float *cb,
                              float *wb, int NJ, int wt) {
    /* Rows per micro-tile: MR x NJ accumulators (24 for NJ >= 2), at least 12 independent FMA chains. */
    const int MR = NJ >= 4 ? 6 : NJ == 3 ? 8 : 12;
    const size_t es = wt == WT_F32 ? 4 : 2;
    for (size_t k0 = 0; xall && k0 < cols; k0 += GB_KC) {
        pack_xt(X, x_stride, nt, k0, cols - k0 < GB_KC ? cols - k0 : GB_KC, xall + k0 * GB_T, NJ);
    }
    for (size_t rb = r0; rb < r1; rb += GB_MC) {
        size_t mc = r1 - rb < GB_MC ? r1 - rb : GB_MC;
        for (size_t k0 = 0; k0 < cols; k0 += GB_KC) {
            size_t kc = cols - k0 < GB_KC ? cols - k0 : GB_KC;
            int first = k0 == 0;
            if (xall) {
                xt = xall + k0 * GB_T;
            } else {
                pack_xt(X, x_stride, nt, k0, kc, xt, NJ);
            }
            size_t r = 0;
            for (; r + MR <= mc; r += MR) {
                const char *pf = pf_target(W, row_bytes, rb, mc, r, k0, cols, MR, es);
                gemm_tile(W, row_bytes, rb + r, k0, kc, xt, cb + r * GB_T, wb, first, pf, MR, NJ, wt);
            }
            /* The last mc % MR rows: tiles of 4, 2 and 1 rows. */
            for (; r + 4 <= mc; r += 4) {
                const char *pf = pf_target(W, row_bytes, rb, mc, r, k0, cols, 4, es);
                gemm_tile(W, row_bytes, rb + r, k0, kc, xt, cb + r * GB_T, wb, first, pf, 4, NJ, wt);
            }
            if (r + 2 <= mc) {
                const char *pf = pf_target(W, row_bytes, rb, mc, r, k0, cols, 2, es);
                gemm_tile(W, row_bytes, rb + r, k0, kc, xt, cb + r * GB_T, wb, first, pf, 2, NJ, wt);
                r += 2;
            }
            if (r < mc) {
                const char *pf = pf_target(W, row_bytes, rb, mc, r, k0, cols, 1, es);
                gemm_tile(W, row_bytes, rb + r, k0, kc, xt, cb + r * GB_T, wb, first, pf, 1, NJ, wt);
            }
        }
        write_out(cb, mc, nt, Y, ldy, rb, NJ);
    }
}

RWKVC_INLINE void gemm_generic(const void *W, size_t row_bytes, const void *X, size_t x_stride, size_t n_vec,
                               float *Y, size_t ldy, size_t r0, size_t r1, size_t cols, int wt) {
    _Alignas(64) float xt[GB_KC * GB_T];
    _Alignas(64) float cb[GB_MC * GB_T];
    _Alignas(64) float wb[GB_MR * GB_KC];
    /* Room to transpose a token block's columns once for all row blocks (1 MB at 4096 columns), when there is more
       than one; AVX2 F16 prefill, 0.4B: 297 -> 306 tokens/s. Without it, once per row block as before. */
    float *xall = r1 - r0 > GB_MC ? aligned_alloc(64, (cols + GB_KC - 1) / GB_KC * sizeof(xt)) : NULL;
    for (size_t t0 = 0; t0 < n_vec; t0 += GB_T) {
        size_t nt = n_vec - t0 < GB_T ? n_vec - t0 : GB_T;
        const char *Xb = (const char *)X + t0 * x_stride;
        float *Yb = Y + t0 * ldy;
        switch ((nt + 15) / 16) {
        case 4: gemm_tblock(W, row_bytes, Xb, x_stride, nt, Yb, ldy, r0, r1, cols, xt, xall, cb, wb, 4, wt); break;
        case 3: gemm_tblock(W, row_bytes, Xb, x_stride, nt, Yb, ldy, r0, r1, cols, xt, xall, cb, wb, 3, wt); break;
        case 2: gemm_tblock(W, row_bytes, Xb, x_stride, nt, Yb, ldy, r0, r1, cols, xt, xall, cb, wb, 2, wt); break;
        default: gemm_tblock(W, row_bytes, Xb, x_stride, nt, Yb, ldy, r0, r1, cols, xt, xall, cb, wb, 1, wt); break;
        }
    }
    free(xall);
}

static size_t float_act_bytes(size_t cols) {
    (void)cols;
    return 0;
}

#if defined(RWKVC_HAVE_AMX_BF16)
/*
 * ---- AMX-BF16 GEMM (sequence mode of f16 and bf16 weights) ----
 *
 * Y[t][r] = sum_c W[r][c] X[t][c] on the AMX tiles, about twice the FMA GEMM's rate for f16 and three times for
 * bf16. A tile product takes bf16 (8 significant bits), so each fp32 activation is split into x = xh + xl + e
 * with xh = bf16(x), xl = bf16(x - xh) (round to nearest: |xl| <= 2^-9 |x|, |e| <= 2^-18 |x|), and each weight
 * into w = wh + wl the same way. For f16 weights (11 significant bits) wl has at most 3 and is exact in bf16, so
 * w = wh + wl exactly; bf16 weights have wl = 0. The products wh xh + wl xh + wh xl (the fourth, wl xl <= 2^-18
 * |w x|, is left out) go into fp32 accumulators, so each term is off by at most 2^-17 of |w x| and a sum is
 * within about 2^-17 sum_c |W[r][c] X[t][c]| of the exact value plus fp32 rounding, like an fp32 sum (the unit
 * test holds it to 2^-16; measured about 2^-21). The order of the sum depends only on cols, not on the row range
 * or the thread split.
 *
 * Layouts (tiles are 16 rows x 64 bytes; C += A B with A 16 x 32 bf16, B 16 pairs x 16 columns x 2 bf16):
 * - A: 16 weight rows x 32 columns (wh or wl), packed per row pair and column block into wp.
 * - B: the prepared activations (prepare_seq, shared by every thread): per group of 16 vectors and per 32-column
 *   step, a 1 KB tile of xh pairs then one of xl pairs; row p of a tile holds columns 2p, 2p + 1 of the 16
 *   vectors. Vectors past n_vec and columns past cols are zero.
 * - C: 16 weight rows x 16 vectors in fp32; a register block of 2 row tiles x 2 vector groups (tiles 0-3, with
 *   A in tiles 4-5 and B in 6-7), kept in cb between column blocks and transposed into Y at the end.
 */
#include "cpu.h"

#define AB_KC 128 /* Columns per packed weight block: 32 rows x 128 x (wh, wl) = 16 KB. */
#define AB_MC 64 /* Rows per block: C of 64 rows x 256 vectors (64 KB) is carried between column steps. */
#define AB_GROUPS 16 /* Vector groups per pass over a weight block (256 vectors). */

static int amx_bf16_on(void) {
    return !rwkvc_float_disable_amx && rwkvc_cpu_features()->amx_bf16;
}

static size_t ab_padded_cols(size_t cols) {
    return (cols + 31) & ~(size_t)31;
}

static size_t amx_seq_act_bytes(size_t cols) {
    return amx_bf16_on() ? ab_padded_cols(cols) * 4 : 0;
}

/* The 16 bf16 numbers of the lower (hi = 0) or upper 256 bits of v as fp32. */
RWKVC_INLINE __m512 bf16_half_to_ps(__m512i v, int hi) {
    return bf16_to_ps(hi ? _mm512_extracti64x4_epi64(v, 1) : _mm512_castsi512_si256(v));
}

static void amx_prepare_seq(const float *X, size_t x_stride, size_t n_vec, void *Xp, size_t cols) {
    const size_t kp = ab_padded_cols(cols), steps = kp / 32;
    char *out = Xp;
    for (size_t g = 0; g * 16 < n_vec; g++) {
        for (size_t s = 0; s < steps; s++) {
            const size_t c = s * 32, n = cols - c < 32 ? cols - c : 32;
            const __mmask16 m0 = (__mmask16)(n >= 16 ? 0xFFFFu : (1u << n) - 1u);
            const __mmask16 m1 = (__mmask16)(n <= 16 ? 0u : n >= 32 ? 0xFFFFu : (1u << (n - 16)) - 1u);
            __m512 hi[16], lo[16];
            for (int t = 0; t < 16; t++) {
                const size_t v = g * 16 + (size_t)t;
                __m512 f0 = _mm512_setzero_ps(), f1 = _mm512_setzero_ps();
                if (v < n_vec) {
                    f0 = _mm512_maskz_loadu_ps(m0, X + v * x_stride + c);
                    f1 = _mm512_maskz_loadu_ps(m1, X + v * x_stride + c + 16);
                }
                __m512i h = (__m512i)_mm512_cvtne2ps_pbh(f1, f0);
                __m512 r0 = _mm512_sub_ps(f0, bf16_half_to_ps(h, 0));
                __m512 r1 = _mm512_sub_ps(f1, bf16_half_to_ps(h, 1));
                hi[t] = _mm512_castsi512_ps(h);
                lo[t] = _mm512_castsi512_ps((__m512i)_mm512_cvtne2ps_pbh(r1, r0));
            }
            /* Lane p of vector t's register (columns 2p, 2p + 1) moves to lane t of tile row p. */
            transpose16(hi);
            transpose16(lo);
            float *tile = (float *)(out + ((g * steps + s) * 2) * 1024);
            for (int p = 0; p < 16; p++) {
                _mm512_store_ps(tile + p * 16, hi[p]);
                _mm512_store_ps(tile + 256 + p * 16, lo[p]);
            }
        }
    }
}

/*
 * wp, per 32-column step of columns [k0, k0 + kc): the wh tiles of rows r .. r + 15 and r + 16 .. r + 31, then
 * their wl tiles (f16 only). Rows past nr are zero, as are columns past cols.
 */
RWKVC_INLINE void amx_pack_w(const char *W, size_t row_bytes, size_t r, size_t nr, size_t k0, size_t kc,
                             size_t cols, char *wp, int wt) {
    const size_t steps = (kc + 31) / 32, step_bytes = wt == WT_F16 ? 4096 : 2048;
    for (size_t i = 0; i < 32; i++) {
        char *dst = wp + (i / 16) * 1024 + (i % 16) * 64;
        if (i >= nr) {
            for (size_t s = 0; s < steps; s++) {
                _mm512_store_si512((__m512i *)(dst + s * step_bytes), _mm512_setzero_si512());
                if (wt == WT_F16) {
                    _mm512_store_si512((__m512i *)(dst + s * step_bytes + 2048), _mm512_setzero_si512());
                }
            }
            continue;
        }
        const char *row = W + (r + i) * row_bytes;
        for (size_t s = 0; s < steps; s++) {
            const size_t c = k0 + s * 32, n = cols - c < 32 ? cols - c : 32;
            const __mmask32 m = (__mmask32)(n >= 32 ? 0xFFFFFFFFu : (1u << n) - 1u);
            __m512i w = _mm512_maskz_loadu_epi16(m, row + c * 2);
            if (wt == WT_BF16) {
                _mm512_store_si512((__m512i *)(dst + s * step_bytes), w);
                continue;
            }
            __m512 f0 = _mm512_cvtph_ps(_mm512_castsi512_si256(w));
            __m512 f1 = _mm512_cvtph_ps(_mm512_extracti64x4_epi64(w, 1));
            /* wh: w rounded to bf16; wl: the exact rest (at most 3 significant bits of an f16). */
            __m512i wh = (__m512i)_mm512_cvtne2ps_pbh(f1, f0);
            __m512 r0 = _mm512_sub_ps(f0, bf16_half_to_ps(wh, 0)), r1 = _mm512_sub_ps(f1, bf16_half_to_ps(wh, 1));
            __m512i wl = (__m512i)_mm512_cvtne2ps_pbh(r1, r0);
            _mm512_store_si512((__m512i *)(dst + s * step_bytes), wh);
            _mm512_store_si512((__m512i *)(dst + s * step_bytes + 2048), wl);
        }
    }
}

/* Prefetches pf_lines cache lines from row i's start, for rows i in [i0, i1) row_bytes apart from base. */
RWKVC_INLINE void amx_prefetch_rows(uintptr_t base, size_t row_bytes, size_t i0, size_t i1, size_t pf_lines) {
    for (size_t i = i0; i < i1; i++) {
        /* Integer arithmetic: past the matrix end the address may lie where no pointer may point. */
        uintptr_t line = (base + i * row_bytes) & ~(uintptr_t)63;
        for (size_t l = 0; l < pf_lines; l++, line += 64) {
            _mm_prefetch((const char *)line, _MM_HINT_T0);
        }
    }
}

/* Eight tiles of 16 rows x 64 bytes: C in 0-3, A in 4-5, B in 6-7. */
static void amx_bf16_configure(void) {
    rwkvc_amx_tile_config c;
    memset(&c, 0, sizeof(c));
    c.palette = 1;
    for (int i = 0; i < 8; i++) {
        c.rows[i] = 16;
        c.colsb[i] = 64;
    }
    _tile_loadconfig(&c);
}

/*
 * One step of the register block: C[i][j] += A_i B_j for the row tiles i at a0, a1 and the vector groups j at b0,
 * b1 (tiles of 64-byte rows).
 */
#define AB_DOTS()                                                                                                  \
    do {                                                                                                           \
        _tile_dpbf16ps(0, 4, 6);                                                                                   \
        _tile_dpbf16ps(1, 4, 7);                                                                                   \
        _tile_dpbf16ps(2, 5, 6);                                                                                   \
        _tile_dpbf16ps(3, 5, 7);                                                                                   \
    } while (0)

/* Y[t][r + i] = cb tile (row tile i / 16, group of t) for i < nr, t < nt: each C tile is 16 rows x 16 vectors. */
RWKVC_INLINE void amx_write_out(const float *cb, size_t nr, size_t t0, size_t nt, float *Y, size_t ldy, size_t r) {
    for (size_t rt = 0; rt < 2 && rt * 16 < nr; rt++) {
        const size_t rows = nr - rt * 16 < 16 ? nr - rt * 16 : 16;
        const __mmask16 m = (__mmask16)((1u << rows) - 1u);
        for (size_t j = 0; j < 2 && j * 16 < nt; j++) {
            const float *tile = cb + (rt * 2 + j) * 256;
            __m512 v[16];
            for (int i = 0; i < 16; i++) {
                v[i] = _mm512_load_ps(tile + i * 16);
            }
            transpose16(v);
            for (size_t l = 0; l < 16 && j * 16 + l < nt; l++) {
                _mm512_mask_storeu_ps(Y + (t0 + j * 16 + l) * ldy + r + rt * 16, m, v[l]);
            }
        }
    }
}

/*
 * Loop order: per block of up to 64 vectors and of AB_MC rows, the columns in steps of AB_KC; per step each row
 * pair packs its weights (16 KB, L1) and runs both vector pairs over them, carrying C in cb between steps. The
 * activations of one column step (64 vectors x AB_KC columns, 32 KB) are read once per row pair from L1/L2,
 * however long the rows (at 8192 columns the whole block is 2 MB and would come from L3).
 */
RWKVC_INLINE void amx_matmat_seq(const void *W, size_t row_bytes, const void *Xp, size_t n_vec, float *Y,
                                 size_t ldy, size_t r0, size_t r1, size_t cols, int wt) {
    const size_t kp = ab_padded_cols(cols), group_bytes = 16 * kp * 4;
    const size_t n_groups = (n_vec + 15) / 16;
    _Alignas(64) char wp[AB_KC / 32 * 4096];
    /* C of each row pair and pair of vector groups: 4 tiles of 16 x 16 fp32. */
    _Alignas(64) float cb[AB_MC / 32][AB_GROUPS / 2][4 * 256];
    amx_bf16_configure();
    for (size_t g0 = 0; g0 < n_groups; g0 += AB_GROUPS) {
        const size_t n_pairs = ((n_groups - g0 < AB_GROUPS ? n_groups - g0 : AB_GROUPS) + 1) / 2;
        for (size_t rb = r0; rb < r1; rb += AB_MC) {
            const size_t mc = r1 - rb < AB_MC ? r1 - rb : AB_MC;
            for (size_t k0 = 0; k0 < cols; k0 += AB_KC) {
                const size_t kc = cols - k0 < AB_KC ? cols - k0 : AB_KC, steps = (kc + 31) / 32;
                for (size_t rp = 0; rp * 32 < mc; rp++) {
                    const size_t nr = mc - rp * 32 < 32 ? mc - rp * 32 : 32;
                    amx_pack_w((const char *)W, row_bytes, rb + rp * 32, nr, k0, kc, cols, wp, wt);
                    /* The weights packed next: rows apart by row_bytes are short streams the hardware prefetcher
                       misses, so they are fetched during this pack's tile work, a few rows per step. */
                    size_t nrow = rb + rp * 32 + 32, nk = k0;
                    if ((rp + 1) * 32 >= mc) {
                        nrow = rb;
                        nk = k0 + AB_KC;
                        if (nk >= cols) {
                            nrow = rb + AB_MC;
                            nk = 0;
                        }
                    }
                    const size_t nkc = cols - nk < AB_KC ? cols - nk : AB_KC;
                    const uintptr_t pf0 = (uintptr_t)W + nrow * row_bytes + nk * (size_t)2;
                    const size_t pf_iters = n_pairs * steps, pf_lines = (nkc * 2 + 63) / 64 + 1;
                    size_t pf_it = 0;
                    for (size_t p = 0; p < n_pairs; p++) {
                        const size_t ga = g0 + 2 * p, gb = ga + 1 < n_groups ? ga + 1 : ga;
                        const char *xa = (const char *)Xp + ga * group_bytes + k0 / 32 * 2048;
                        const char *xb = (const char *)Xp + gb * group_bytes + k0 / 32 * 2048;
                        float *c = cb[rp][p];
                        if (k0 == 0) {
                            _tile_zero(0);
                            _tile_zero(1);
                            _tile_zero(2);
                            _tile_zero(3);
                        } else {
                            _tile_loadd(0, c, 64);
                            _tile_loadd(1, c + 256, 64);
                            _tile_loadd(2, c + 512, 64);
                            _tile_loadd(3, c + 768, 64);
                        }
                        for (size_t s = 0; s < steps; s++) {
                            const char *a = wp + s * (wt == WT_F16 ? 4096 : 2048);
                            const char *ba = xa + s * 2048, *bb = xb + s * 2048;
                            amx_prefetch_rows(pf0, row_bytes, pf_it * 32 / pf_iters, (pf_it + 1) * 32 / pf_iters,
                                              pf_lines);
                            pf_it++;
                            /* wh xh; for f16 then wl xh (B stays); then wh xl (bf16: wh = w). */
                            _tile_loadd(4, a, 64);
                            _tile_loadd(5, a + 1024, 64);
                            _tile_loadd(6, ba, 64);
                            _tile_loadd(7, bb, 64);
                            AB_DOTS();
                            if (wt == WT_F16) {
                                _tile_loadd(4, a + 2048, 64);
                                _tile_loadd(5, a + 3072, 64);
                                AB_DOTS();
                                _tile_loadd(4, a, 64);
                                _tile_loadd(5, a + 1024, 64);
                            }
                            _tile_loadd(6, ba + 1024, 64);
                            _tile_loadd(7, bb + 1024, 64);
                            AB_DOTS();
                        }
                        _tile_stored(0, c, 64);
                        _tile_stored(1, c + 256, 64);
                        _tile_stored(2, c + 512, 64);
                        _tile_stored(3, c + 768, 64);
                    }
                }
            }
            for (size_t rp = 0; rp * 32 < mc; rp++) {
                const size_t nr = mc - rp * 32 < 32 ? mc - rp * 32 : 32;
                for (size_t p = 0; p < n_pairs; p++) {
                    const size_t t0 = (g0 + 2 * p) * 16;
                    const size_t nt = n_vec - t0 < 32 ? n_vec - t0 : 32;
                    amx_write_out(cb[rp][p], nr, t0, nt, Y, ldy, rb + rp * 32);
                }
            }
        }
    }
    _tile_release();
}

static void amx_matmat_seq_f16(const void *W, size_t row_bytes, const void *Xp, size_t n_vec, float *Y, size_t ldy,
                               size_t r0, size_t r1, size_t cols) {
    amx_matmat_seq(W, row_bytes, Xp, n_vec, Y, ldy, r0, r1, cols, WT_F16);
}

static void amx_matmat_seq_bf16(const void *W, size_t row_bytes, const void *Xp, size_t n_vec, float *Y,
                                size_t ldy, size_t r0, size_t r1, size_t cols) {
    amx_matmat_seq(W, row_bytes, Xp, n_vec, Y, ldy, r0, r1, cols, WT_BF16);
}
#define SEQ_F16 amx_seq_act_bytes, amx_prepare_seq, amx_matmat_seq_f16
#define SEQ_BF16 amx_seq_act_bytes, amx_prepare_seq, amx_matmat_seq_bf16
#else
#define SEQ_F16 NULL, NULL, NULL
#define SEQ_BF16 NULL, NULL, NULL
#endif
#define SEQ_F32 NULL, NULL, NULL

#define DEFINE_KERNELS(suffix, wt, seq)                                                                            \
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
    static const rwkvc_matmul_kernels k_##suffix = {float_act_bytes, NULL, matvec_##suffix, matmat_##suffix, seq, 0};

DEFINE_KERNELS(f32, WT_F32, SEQ_F32)
DEFINE_KERNELS(f16, WT_F16, SEQ_F16)
DEFINE_KERNELS(bf16, WT_BF16, SEQ_BF16)

const rwkvc_matmul_kernels *rwkvc_float_kernels_avx512(uint32_t type) {
    switch (type) {
    case WT_F32: return &k_f32;
    case WT_F16: return &k_f16;
    case WT_BF16: return &k_bf16;
    default: return NULL;
    }
}
