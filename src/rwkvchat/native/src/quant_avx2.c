/*
 * quant_avx2.c: AVX2 + FMA + F16C kernels for the block-quantized weight types.
 *
 * Same arithmetic as quant_ref.c: per 32-element block an exact integer dot product of weight quants and activation
 * quants (quant.h "q8 act"), scaled in fp32. AVX2 has no signed x signed byte product, so signed weights use the
 * ggml sign trick (|w| as the unsigned operand of vpmaddubsw, the sign moved onto x); unsigned weights (Q4_1, Q5_1,
 * Q4_K, Q5_K) go straight into vpmaddubsw. Pair sums cannot saturate int16: |w| <= 128, |x| <= 127.
 *
 * matmat with 4 or more vectors runs the packed GEMM below for the 4- and 5-bit types and Q8_0 (16 rows decoded
 * once per tile, then every vector against it). Q6_K and fewer vectors decode each weight block once and apply it to
 * up to 4 activation vectors, walking rows in tiles so a tile of weights stays in cache while all the vectors pass
 * over it (sequence mode reads the weights once per tile).
 * The row kernels themselves live in quant_x86.h, shared with quant_avx512.c (which runs them with VNNI).
 */
#include <immintrin.h>
#include <stdlib.h>
#include <string.h>

#include "kernels.h"
#include "quant.h"
#include "quant_x86.h"

static size_t act_bytes_avx2(size_t cols) {
    return rwkvc_q8act_bytes(cols);
}

/* ---- Entry points per type ---- */

ALWAYS_INLINE void matvec_generic(int type, const void *W, size_t row_bytes, const void *x, float *y, size_t r0,
                                  size_t r1, size_t cols) {
    const act_view xs[1] = {view_of(x, cols)};
    if (type == T_Q6_K && cols <= Q6K_MV_MAX_COLS) {
        int16_t p32[Q6K_MV_MAX_COLS / 2];
        q6k_mv_prep(xs, cols, p32);
        rows_q6k_mv_256((const uint8_t *)W, row_bytes, xs, p32, y, r0, r1, cols);
        return;
    }
    rows_any_256(type, 1, 0, (const uint8_t *)W, row_bytes, xs, y, 0, r0, r1, cols);
}

/*
 * Sequence mode for the 4- and 5-bit types: the packed GEMM of quant_x86.h (pk_pack) with 8 rows per register.
 * vpmaddubsw of a packed group (4 elements x 8 rows, unsigned) against 4 activation bytes broadcast to every row
 * gives pair sums that are added in int16 before one vpmaddwd: 4-bit quants allow all 8 groups of a block
 * (16 products of at most 15 * 127: |sum| <= 30480), 5-bit quants 4 groups (8 x 31 * 127 = 31496), so the int16
 * sums are exact. Q8_0 takes a tile of its own (pk_tile_q8_avx2).
 */
#define PK_NV 4
#define PK_MIN_NV 4

/* Y[t][r .. r + nr) = the tile's sums for its nv vectors (acc[0]: rows 0..7, acc[1]: rows 8..15). */
ALWAYS_INLINE void pk_store_tile(int nv, __m256 acc[2][PK_NV], float *Y, size_t ldy, size_t r, size_t nr) {
    for (int t = 0; t < nv; t++) {
        float out[PK_ROWS];
        _mm256_storeu_ps(out, acc[0][t]);
        _mm256_storeu_ps(out + 8, acc[1][t]);
        memcpy(Y + t * ldy + r, out, nr * sizeof(float));
    }
}

ALWAYS_INLINE void pk_tile_avx2(int five, int nv, const uint8_t *wq, const float *dw, const float *mw, size_t nb,
                                const act_view *xs, float *Y, size_t ldy, size_t r, size_t nr) {
    const __m256i ones = _mm256_set1_epi16(1);
    __m256 acc[2][PK_NV];
    for (int t = 0; t < nv; t++) {
        acc[0][t] = _mm256_setzero_ps();
        acc[1][t] = _mm256_setzero_ps();
    }
    for (size_t b = 0; b < nb; b++) {
        const uint8_t *wb = wq + b * QK * PK_ROWS;
        const __m256 dw0 = _mm256_load_ps(dw + b * PK_ROWS);
        const __m256 dw1 = _mm256_load_ps(dw + b * PK_ROWS + 8);
        const __m256 mw0 = _mm256_load_ps(mw + b * PK_ROWS);
        const __m256 mw1 = _mm256_load_ps(mw + b * PK_ROWS + 8);
        for (int t = 0; t < nv; t++) {
            const int8_t *xb = xs[t].q + b * QK;
            __m256i s0 = _mm256_setzero_si256();
            __m256i s1 = _mm256_setzero_si256();
            __m256i i0 = _mm256_setzero_si256();
            __m256i i1 = _mm256_setzero_si256();
#pragma GCC unroll 8
            for (int g = 0; g < 8; g++) {
                int32_t x4;
                memcpy(&x4, xb + 4 * g, 4);
                const __m256i xv = _mm256_set1_epi32(x4);
                s0 = _mm256_add_epi16(s0, _mm256_maddubs_epi16(_mm256_load_si256((const __m256i *)(wb + g * 64)), xv));
                s1 = _mm256_add_epi16(s1,
                                      _mm256_maddubs_epi16(_mm256_load_si256((const __m256i *)(wb + g * 64 + 32)), xv));
                if ((five && g == 3) || g == 7) {
                    i0 = _mm256_add_epi32(i0, _mm256_madd_epi16(s0, ones));
                    i1 = _mm256_add_epi32(i1, _mm256_madd_epi16(s1, ones));
                    s0 = _mm256_setzero_si256();
                    s1 = _mm256_setzero_si256();
                }
            }
            const __m256 dx = _mm256_set1_ps(xs[t].d[b]);
            const __m256 sx = _mm256_set1_ps(xs[t].s[b]);
            acc[0][t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(i0), _mm256_mul_ps(dw0, dx), acc[0][t]);
            acc[1][t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(i1), _mm256_mul_ps(dw1, dx), acc[1][t]);
            acc[0][t] = _mm256_fmadd_ps(mw0, sx, acc[0][t]);
            acc[1][t] = _mm256_fmadd_ps(mw1, sx, acc[1][t]);
        }
    }
    pk_store_tile(nv, acc, Y, ldy, r, nr);
}

/*
 * The packed GEMM's tile for Q8_0. pk_pack stores q + 128 (unsigned), whose vpmaddubsw pair sums would saturate
 * int16 (2 * 255 * 127), so the signed q comes back by an xor and the ggml sign trick applies: |q| as the unsigned
 * operand, the sign moved onto the activation bytes (pairs at most 2 * 128 * 127 = 32512). Groups go outside the
 * vectors, so each group's q and |q| are made once for all nv vectors; each group's pair sums go to int32 at once.
 * Per block and vector, the int32 sums of the 16 rows are scaled by d * d_x (no min term: q is signed).
 * 1 thread, 4096 x 4096, 64 vectors: 58 GMAC/s with the row kernels before, 76.5 with this tile.
 */
ALWAYS_INLINE void pk_tile_q8_avx2(int nv, const uint8_t *wq, const float *dw, size_t nb, const act_view *xs,
                                   float *Y, size_t ldy, size_t r, size_t nr) {
    const __m256i ones = _mm256_set1_epi16(1);
    const __m256i bias = _mm256_set1_epi8((char)0x80);
    __m256 acc[2][PK_NV];
    for (int t = 0; t < nv; t++) {
        acc[0][t] = _mm256_setzero_ps();
        acc[1][t] = _mm256_setzero_ps();
    }
    for (size_t b = 0; b < nb; b++) {
        const uint8_t *wb = wq + b * QK * PK_ROWS;
        __m256i i0[PK_NV];
        __m256i i1[PK_NV];
        for (int t = 0; t < nv; t++) {
            i0[t] = _mm256_setzero_si256();
            i1[t] = _mm256_setzero_si256();
        }
#pragma GCC unroll 8
        for (int g = 0; g < 8; g++) {
            const __m256i w0 = _mm256_xor_si256(_mm256_load_si256((const __m256i *)(wb + g * 64)), bias);
            const __m256i w1 = _mm256_xor_si256(_mm256_load_si256((const __m256i *)(wb + g * 64 + 32)), bias);
            const __m256i a0 = _mm256_sign_epi8(w0, w0);
            const __m256i a1 = _mm256_sign_epi8(w1, w1);
            for (int t = 0; t < nv; t++) {
                int32_t x4;
                memcpy(&x4, xs[t].q + b * QK + 4 * g, 4);
                const __m256i xv = _mm256_set1_epi32(x4);
                const __m256i p0 = _mm256_maddubs_epi16(a0, _mm256_sign_epi8(xv, w0));
                const __m256i p1 = _mm256_maddubs_epi16(a1, _mm256_sign_epi8(xv, w1));
                i0[t] = _mm256_add_epi32(i0[t], _mm256_madd_epi16(p0, ones));
                i1[t] = _mm256_add_epi32(i1[t], _mm256_madd_epi16(p1, ones));
            }
        }
        const __m256 dw0 = _mm256_load_ps(dw + b * PK_ROWS);
        const __m256 dw1 = _mm256_load_ps(dw + b * PK_ROWS + 8);
        for (int t = 0; t < nv; t++) {
            const __m256 dx = _mm256_set1_ps(xs[t].d[b]);
            acc[0][t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(i0[t]), _mm256_mul_ps(dw0, dx), acc[0][t]);
            acc[1][t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(i1[t]), _mm256_mul_ps(dw1, dx), acc[1][t]);
        }
    }
    pk_store_tile(nv, acc, Y, ldy, r, nr);
}

/* kind as in matmat_packed: 1 / 0 the 5- / 4-bit tile (pk_tile_avx2's five), -1 Q8_0's. */
ALWAYS_INLINE void pk_tile_kind(int kind, int nv, const uint8_t *wq, const float *dw, const float *mw, size_t nb,
                                const act_view *xs, float *Y, size_t ldy, size_t r, size_t nr) {
    if (kind < 0) {
        pk_tile_q8_avx2(nv, wq, dw, nb, xs, Y, ldy, r, nr);
    } else {
        pk_tile_avx2(kind, nv, wq, dw, mw, nb, xs, Y, ldy, r, nr);
    }
}

ALWAYS_INLINE void pk_tiles_avx2(int kind, int nv, const uint8_t *wq, const float *dw, const float *mw, size_t nb,
                                 const act_view *xs, float *Y, size_t ldy, size_t r, size_t nr) {
    switch (nv) {
    case 1:
        pk_tile_kind(kind, 1, wq, dw, mw, nb, xs, Y, ldy, r, nr);
        break;
    case 2:
        pk_tile_kind(kind, 2, wq, dw, mw, nb, xs, Y, ldy, r, nr);
        break;
    case 3:
        pk_tile_kind(kind, 3, wq, dw, mw, nb, xs, Y, ldy, r, nr);
        break;
    default:
        pk_tile_kind(kind, PK_NV, wq, dw, mw, nb, xs, Y, ldy, r, nr);
        break;
    }
}

/* Packed GEMM over rows [r0, r1); returns 0 (nothing written) if the scratch buffers cannot be allocated. */
ALWAYS_INLINE int matmat_packed(int type, const void *W, size_t row_bytes, const void *X, size_t x_stride,
                                size_t n_vec, float *Y, size_t ldy, size_t r0, size_t r1, size_t cols) {
    /* 1: 5-bit quants (int16 sums over 4 groups), 0: 4-bit (8 groups), -1: Q8_0 (pk_tile_q8_avx2). */
    const int kind = type == T_Q8_0 ? -1 : type == T_Q5_0 || type == T_Q5_1 || type == T_Q5_K;
    const size_t nb = cols / QK;
    const size_t ntiles = pk_tiles_for(cols);
    pk_buffers pb[PK_TILES];
    void *buf[PK_TILES];
    for (size_t k = 0; k < ntiles; k++) {
        buf[k] = pk_alloc(cols, &pb[k]);
        if (!buf[k]) {
            for (size_t j = 0; j < k; j++) {
                free(buf[j]);
            }
            return 0;
        }
    }
    for (size_t rb = r0; rb < r1; rb += ntiles * PK_ROWS) {
        size_t nt = 0;
        for (size_t r = rb; r < r1 && nt < ntiles; r += PK_ROWS, nt++) {
            const size_t nr = r1 - r < PK_ROWS ? r1 - r : PK_ROWS;
            pk_pack(type, (const uint8_t *)W, row_bytes, r, nr, cols, pb[nt].wq, pb[nt].dw, pb[nt].mw, pb[nt].tmp);
        }
        for (size_t t = 0; t < n_vec; t += PK_NV) {
            const size_t nv = n_vec - t < PK_NV ? n_vec - t : PK_NV;
            act_view xs[PK_NV];
            for (size_t k = 0; k < nv; k++) {
                xs[k] = view_of((const char *)X + (t + k) * x_stride, cols);
            }
            for (size_t k = 0; k < nt; k++) {
                const size_t r = rb + k * PK_ROWS;
                const size_t nr = r1 - r < PK_ROWS ? r1 - r : PK_ROWS;
                pk_tiles_avx2(kind, (int)nv, pb[k].wq, pb[k].dw, pb[k].mw, nb, xs, Y + t * ldy, ldy, r, nr);
            }
        }
    }
    for (size_t k = 0; k < ntiles; k++) {
        free(buf[k]);
    }
    return 1;
}

ALWAYS_INLINE void matmat_generic(int type, const void *W, size_t row_bytes, const void *X, size_t x_stride,
                                  size_t n_vec, float *Y, size_t ldy, size_t r0, size_t r1, size_t cols) {
    if (type != T_Q6_K && n_vec >= PK_MIN_NV &&
        matmat_packed(type, W, row_bytes, X, x_stride, n_vec, Y, ldy, r0, r1, cols)) {
        return;
    }
    for (size_t rt = r0; rt < r1; rt += ROW_TILE) {
        const size_t re = rt + ROW_TILE < r1 ? rt + ROW_TILE : r1;
        size_t t = 0;
        for (; t + MAX_NV <= n_vec; t += MAX_NV) {
            act_view xs[MAX_NV];
            for (int k = 0; k < MAX_NV; k++) {
                xs[k] = view_of((const char *)X + (t + k) * x_stride, cols);
            }
            rows_any_256(type, MAX_NV, 0, (const uint8_t *)W, row_bytes, xs, Y + t * ldy, ldy, rt, re, cols);
        }
        for (; t < n_vec; t++) {
            const act_view xs[1] = {view_of((const char *)X + t * x_stride, cols)};
            rows_any_256(type, 1, 0, (const uint8_t *)W, row_bytes, xs, Y + t * ldy, ldy, rt, re, cols);
        }
    }
}

#define DEFINE_AVX2(name, tid, prepare, group)                                                                    \
    static void matvec_##name(const void *W, size_t row_bytes, const void *x, float *y, size_t r0, size_t r1,     \
                              size_t cols) {                                                                      \
        matvec_generic(tid, W, row_bytes, x, y, r0, r1, cols);                                                    \
    }                                                                                                             \
    static void matmat_##name(const void *W, size_t row_bytes, const void *X, size_t x_stride, size_t n_vec,      \
                              float *Y, size_t ldy, size_t r0, size_t r1, size_t cols) {                          \
        matmat_generic(tid, W, row_bytes, X, x_stride, n_vec, Y, ldy, r0, r1, cols);                              \
    }                                                                                                             \
    static const rwkvc_matmul_kernels kernels_##name = {act_bytes_avx2, prepare, matvec_##name,                   \
                                                        matmat_##name, NULL, NULL, NULL, group};

DEFINE_AVX2(q8_0, T_Q8_0, q8act_prepare_x86, 32)
DEFINE_AVX2(q4_0, T_Q4_0, q8act_prepare_x86, 32)
DEFINE_AVX2(q4_1, T_Q4_1, q8act_prepare_x86, 32)
DEFINE_AVX2(q5_0, T_Q5_0, q8act_prepare_x86, 32)
DEFINE_AVX2(q5_1, T_Q5_1, q8act_prepare_x86, 32)
DEFINE_AVX2(q4_K, T_Q4_K, q8act_prepare_sb_x86, 256)
DEFINE_AVX2(q5_K, T_Q5_K, q8act_prepare_sb_x86, 256)
DEFINE_AVX2(q6_K, T_Q6_K, q8act_prepare_x86, 32)

const rwkvc_matmul_kernels *rwkvc_quant_kernels_avx2(uint32_t type) {
    switch (type) {
    case 8:
        return &kernels_q8_0;
    case 2:
        return &kernels_q4_0;
    case 3:
        return &kernels_q4_1;
    case 6:
        return &kernels_q5_0;
    case 7:
        return &kernels_q5_1;
    case 12:
        return &kernels_q4_K;
    case 13:
        return &kernels_q5_K;
    case 14:
        return &kernels_q6_K;
    default:
        return NULL;
    }
}
