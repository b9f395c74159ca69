/*
 * quant_avx512.c: AVX-512 (F/BW/VL/DQ) kernels for the block-quantized weight types, with VNNI where present.
 *
 * Same arithmetic as quant_ref.c: exact integer dot products per 32-element block, scaled in fp32. With
 * AVX512_VNNI (checked at run time through rwkvc_cpu_features) the u8 x s8 product is one vpdpbusd; without it
 * vpmaddubsw + vpmaddwd. AVX-512 has no vpsignb, so in 512-bit code signed weights move their sign onto the
 * activation with a mask subtract (x -> -x where w < 0) and use |w| as the unsigned operand.
 * - matvec (decode, memory-bound): the 256-bit row kernels of quant_x86.h with vpdpbusd on 256-bit registers.
 *   Joining block pairs into 512-bit registers measured slower there: the decode and the per-block scale
 *   broadcasts crowd port 5, and 512-bit operations have two ports instead of three.
 * - matmat (sequence mode) with VNNI, 4 or more vectors and every type but Q6_K: the packed int8 GEMM (pk_pack in
 *   quant_x86.h; 16 rows x 8 vectors per register tile). Otherwise the 32-element types use 4-row x 4-vector
 *   register tiles over block pairs, where each decode and each activation load is shared by four products, and
 *   the K-quants pair adjacent sub-blocks.
 */
#include <immintrin.h>
#include <stdlib.h>
#include <string.h>

#include "cpu.h"
#include "kernels.h"
#include "quant.h"
#include "quant_x86.h"

/* Integer dot of 64 unsigned weight bytes with 64 signed activation bytes, as 16 int32 partial sums. */
ALWAYS_INLINE __m512i dot64(int vnni, __m512i wu, __m512i x) {
    if (vnni) {
        return _mm512_dpbusd_epi32(_mm512_setzero_si512(), wu, x);
    }
    return _mm512_madd_epi16(_mm512_maddubs_epi16(wu, x), _mm512_set1_epi16(1));
}

ALWAYS_INLINE __m512i join256(__m256i lo, __m256i hi) {
    return _mm512_inserti64x4(_mm512_castsi256_si512(lo), hi, 1);
}

/* [a x 8, b x 8] */
ALWAYS_INLINE __m512 pair_ps(float a, float b) {
    return _mm512_insertf32x8(_mm512_castps256_ps512(_mm256_set1_ps(a)), _mm256_set1_ps(b), 1);
}

ALWAYS_INLINE __m256i dot32_u8s8(__m256i wu, __m256i x) {
    return _mm256_madd_epi16(_mm256_maddubs_epi16(wu, x), _mm256_set1_epi16(1));
}

/* Rows of Q4_K / Q5_K: sub-blocks 2g and 2g+1 meet activation blocks that are adjacent, so one 512-bit dot each. */
ALWAYS_INLINE void rows_k45(int type, int nv, int vnni, const uint8_t *W, size_t row_bytes, const act_view *xs,
                            float *Y, size_t ldy, size_t r0, size_t r1, size_t cols) {
    const size_t nsb = cols / QK_K;
    const size_t bb = type_block_bytes(type);
    const __m256i m4 = _mm256_set1_epi8(0x0F);
    const __m256i one = _mm256_set1_epi8(1);
    for (size_t r = r0; r < r1; r++) {
        const uint8_t *row = W + r * row_bytes;
        __m512 acc[2][MAX_NV];
        float accm[MAX_NV];
        for (int t = 0; t < nv; t++) {
            acc[0][t] = _mm512_setzero_ps();
            acc[1][t] = _mm512_setzero_ps();
            accm[t] = 0.0f;
        }
        for (size_t i = 0; i < nsb; i++) {
            const uint8_t *blk = row + i * bb;
            __m256 dv;
            __m256 mv;
            k4_scales_vec(blk, &dv, &mv);
            float dsc[8];
            float dmn[8];
            _mm256_storeu_ps(dsc, dv);
            _mm256_storeu_ps(dmn, mv);
            const uint8_t *qs = type == T_Q4_K ? blk + 16 : blk + 48;
            const __m256i hb =
                type == T_Q5_K ? _mm256_loadu_si256((const __m256i *)(blk + 16)) : _mm256_setzero_si256();
#pragma GCC unroll 4
            for (int g = 0; g < 4; g++) {
                const __m256i v = _mm256_loadu_si256((const __m256i *)(qs + 32 * g));
                __m256i qa = _mm256_and_si256(v, m4);
                __m256i qb = _mm256_and_si256(_mm256_srli_epi16(v, 4), m4);
                if (type == T_Q5_K) {
                    const __m256i ha = _mm256_and_si256(_mm256_srli_epi16(hb, 2 * g), one);
                    const __m256i hbb = _mm256_and_si256(_mm256_srli_epi16(hb, 2 * g + 1), one);
                    qa = _mm256_or_si256(qa, _mm256_slli_epi16(ha, 4));
                    qb = _mm256_or_si256(qb, _mm256_slli_epi16(hbb, 4));
                }
                const __m512i q = join256(qa, qb);
                const size_t ba = i * 8 + 2 * g;
                for (int t = 0; t < nv; t++) {
                    const __m512i x = _mm512_loadu_si512((const void *)(xs[t].q + ba * QK));
                    const __m512 p = _mm512_cvtepi32_ps(dot64(vnni, q, x));
                    acc[g & 1][t] = _mm512_fmadd_ps(
                        pair_ps(dsc[2 * g] * xs[t].d[ba], dsc[2 * g + 1] * xs[t].d[ba + 1]), p, acc[g & 1][t]);
                    accm[t] += dmn[2 * g] * xs[t].s[ba] + dmn[2 * g + 1] * xs[t].s[ba + 1];
                }
            }
        }
        for (int t = 0; t < nv; t++) {
            Y[t * ldy + r] = _mm512_reduce_add_ps(_mm512_add_ps(acc[0][t], acc[1][t])) - accm[t];
        }
    }
}

/* Rows of Q6_K: groups (0,1) and (2,3) of each 128-element half pair up with adjacent activation blocks. */
ALWAYS_INLINE void rows_q6k(int nv, const uint8_t *W, size_t row_bytes, const act_view *xs, float *Y, size_t ldy,
                            size_t r0, size_t r1, size_t cols) {
    const size_t nsb = cols / QK_K;
    const __m256i m4 = _mm256_set1_epi8(0x0F);
    const __m256i m2 = _mm256_set1_epi8(0x03);
    const __m512i off = _mm512_set1_epi8(32);
    for (size_t r = r0; r < r1; r++) {
        const rwkvc_block_q6_K *row = (const rwkvc_block_q6_K *)(W + r * row_bytes);
        __m512 acc[2][MAX_NV];
        for (int t = 0; t < nv; t++) {
            acc[0][t] = _mm512_setzero_ps();
            acc[1][t] = _mm512_setzero_ps();
        }
        for (size_t i = 0; i < nsb; i++) {
            const rwkvc_block_q6_K *blk = &row[i];
            const float d = h2f(&blk->d);
#pragma GCC unroll 2
            for (int h = 0; h < 2; h++) {
                const __m256i l0 = _mm256_loadu_si256((const __m256i *)(blk->ql + 64 * h));
                const __m256i l1 = _mm256_loadu_si256((const __m256i *)(blk->ql + 64 * h + 32));
                const __m256i hh = _mm256_loadu_si256((const __m256i *)(blk->qh + 32 * h));
                __m256i q[4];
                q[0] = _mm256_or_si256(_mm256_and_si256(l0, m4), _mm256_slli_epi16(_mm256_and_si256(hh, m2), 4));
                q[1] = _mm256_or_si256(_mm256_and_si256(l1, m4),
                                       _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(hh, 2), m2), 4));
                q[2] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(l0, 4), m4),
                                       _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(hh, 4), m2), 4));
                q[3] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(l1, 4), m4),
                                       _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(hh, 6), m2), 4));
                for (int g = 0; g < 4; g += 2) {
                    const __m512i qs = _mm512_sub_epi8(join256(q[g], q[g + 1]), off);
                    const __m512i aq = _mm512_abs_epi8(qs);
                    const __mmask64 neg = _mm512_movepi8_mask(qs);
                    const int8_t *sc = blk->scales + 8 * h + 2 * g;
                    /* int16 scale per 128-bit lane: elements 0-15, 16-31 of group g, then of group g+1. */
                    const __m512i scv = _mm512_inserti64x4(
                        _mm512_castsi256_si512(_mm256_set_m128i(_mm_set1_epi16(sc[1]), _mm_set1_epi16(sc[0]))),
                        _mm256_set_m128i(_mm_set1_epi16(sc[3]), _mm_set1_epi16(sc[2])), 1);
                    const size_t b = i * 8 + 4 * h + g;
                    for (int t = 0; t < nv; t++) {
                        __m512i x = _mm512_loadu_si512((const void *)(xs[t].q + b * QK));
                        x = _mm512_mask_sub_epi8(x, neg, _mm512_setzero_si512(), x);
                        const __m512i p = _mm512_madd_epi16(_mm512_maddubs_epi16(aq, x), scv);
                        acc[h][t] = _mm512_fmadd_ps(pair_ps(d * xs[t].d[b], d * xs[t].d[b + 1]),
                                                    _mm512_cvtepi32_ps(p), acc[h][t]);
                    }
                }
            }
        }
        for (int t = 0; t < nv; t++) {
            Y[t * ldy + r] = _mm512_reduce_add_ps(_mm512_add_ps(acc[0][t], acc[1][t]));
        }
    }
}

/* Sequence-mode rows of the K-quants (the 32-element types use the register tiles below). */
ALWAYS_INLINE void rows_k(int type, int nv, int vnni, const uint8_t *W, size_t row_bytes, const act_view *xs,
                          float *Y, size_t ldy, size_t r0, size_t r1, size_t cols) {
    if (type == T_Q6_K) {
        rows_q6k(nv, W, row_bytes, xs, Y, ldy, r0, r1, cols);
    } else {
        rows_k45(type, nv, vnni, W, row_bytes, xs, Y, ldy, r0, r1, cols);
    }
}

/*
 * matvec (one vector, memory-bound decode) runs the 256-bit row kernels of quant_x86.h with vpdpbusd: measured
 * faster than joining block pairs into 512-bit registers, whose decode and scale broadcasts crowd port 5.
 */
ALWAYS_INLINE void matvec_generic(int type, int vnni, const void *W, size_t row_bytes, const void *x, float *y,
                                  size_t r0, size_t r1, size_t cols) {
    const act_view xs[1] = {view_of(x, cols)};
    rows_any_256(type, 1, vnni, (const uint8_t *)W, row_bytes, xs, y, 0, r0, r1, cols);
}

/*
 * Sequence mode for the 32-element types: a register tile of NR rows x NV vectors (4 x 4: 16 accumulators of the
 * 32 zmm registers) over pairs of blocks. Each weight pair is decoded once per NV vectors, each activation pair
 * and its scales loaded once per NR rows, so the inner step is vpdpbusd, a convert, a scale multiply and an FMA
 * per 64 multiply-adds. The min term of Q4_1 / Q5_1 rides on the same accumulators: m * s is spread over the
 * 8 lanes of a block as (m) x (s / 8), exact in binary.
 */
ALWAYS_INLINE __m512 pair_from2(const float *p) {
    const __m512i idx = _mm512_set_epi32(1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0);
    return _mm512_permutexvar_ps(idx, _mm512_castps128_ps512(_mm_castsi128_ps(_mm_loadl_epi64((const __m128i *)p))));
}

ALWAYS_INLINE void tile32(int type, int vnni, int nr, int nv, const uint8_t *W, size_t row_bytes,
                          const act_view *xs, float *Y, size_t ldy, size_t r, size_t cols) {
    const size_t nb = cols / QK;
    const size_t bb = type_block_bytes(type);
    const int sgn = type_is_signed(type);
    const int has_min = type_has_min(type);
    const __m512 eighth = _mm512_set1_ps(0.125f);
    __m512 acc[4][MAX_NV];
    for (int i = 0; i < nr; i++) {
        for (int t = 0; t < nv; t++) {
            acc[i][t] = _mm512_setzero_ps();
        }
    }
    size_t b = 0;
    for (; b + 2 <= nb; b += 2) {
        __m512i xv[MAX_NV];
        __m512 dxp[MAX_NV];
        __m512 sxp[MAX_NV];
        for (int t = 0; t < nv; t++) {
            xv[t] = _mm512_loadu_si512((const void *)(xs[t].q + b * QK));
            dxp[t] = pair_from2(xs[t].d + b);
            if (has_min) {
                sxp[t] = _mm512_mul_ps(pair_from2(xs[t].s + b), eighth);
            }
        }
        for (int i = 0; i < nr; i++) {
            const uint8_t *blk = W + (r + i) * row_bytes + b * bb;
            float d0;
            float m0;
            float d1;
            float m1;
            const __m256i q0 = decode32(type, blk, &d0, &m0);
            const __m256i q1 = decode32(type, blk + bb, &d1, &m1);
            const __m512i q = join256(q0, q1);
            const __m512i aq = sgn ? _mm512_abs_epi8(q) : q;
            const __mmask64 neg = sgn ? _mm512_movepi8_mask(q) : 0;
            const __m512 dwp = pair_ps(d0, d1);
            const __m512 mwp = has_min ? pair_ps(m0, m1) : _mm512_setzero_ps();
            for (int t = 0; t < nv; t++) {
                const __m512i x = sgn ? _mm512_mask_sub_epi8(xv[t], neg, _mm512_setzero_si512(), xv[t]) : xv[t];
                const __m512 p = _mm512_mul_ps(_mm512_cvtepi32_ps(dot64(vnni, aq, x)), dwp);
                acc[i][t] = _mm512_fmadd_ps(p, dxp[t], acc[i][t]);
                if (has_min) {
                    acc[i][t] = _mm512_fmadd_ps(mwp, sxp[t], acc[i][t]);
                }
            }
        }
    }
    for (int i = 0; i < nr; i++) {
        for (int t = 0; t < nv; t++) {
            float tail = 0.0f;
            if (b < nb) {
                /* The last, unpaired block, in 256-bit registers. */
                float d;
                float m;
                const __m256i q = decode32(type, W + (r + i) * row_bytes + b * bb, &d, &m);
                const __m256i aq = sgn ? _mm256_sign_epi8(q, q) : q;
                __m256i x = _mm256_loadu_si256((const __m256i *)(xs[t].q + b * QK));
                if (sgn) {
                    x = _mm256_sign_epi8(x, q);
                }
                tail = d * xs[t].d[b] * hsum8(_mm256_cvtepi32_ps(dot32_u8s8(aq, x))) + m * xs[t].s[b];
            }
            Y[t * ldy + r + i] = _mm512_reduce_add_ps(acc[i][t]) + tail;
        }
    }
}

ALWAYS_INLINE void tiles32(int type, int vnni, int nv, const uint8_t *W, size_t row_bytes, const act_view *xs,
                           float *Y, size_t ldy, size_t r0, size_t r1, size_t cols) {
    size_t r = r0;
    for (; r + 4 <= r1; r += 4) {
        tile32(type, vnni, 4, nv, W, row_bytes, xs, Y, ldy, r, cols);
    }
    for (; r < r1; r++) {
        tile32(type, vnni, 1, nv, W, row_bytes, xs, Y, ldy, r, cols);
    }
}

/*
 * Sequence mode with VNNI: the packed int8 GEMM of quant_x86.h (pk_pack). One vpdpbusd of a packed group of 4
 * elements x 16 rows against 4 activation bytes broadcast from memory adds 4 products to each of 16 rows, so the
 * 16 int32 lanes of a block sum are the 16 rows' exact integer block dots, scaled by a convert and three vector
 * operations per block and vector (two where the min is a fixed multiple of d). PK_NV vectors share each packed
 * weight register.
 */
#define PK_NV 8
/* Below this many vectors the packing does not pay for itself; the register tiles above run instead. */
#define PK_MIN_NV 4

/* Y[t][r + i] for t < nv, i < 16 (masked) from a packed tile. */
ALWAYS_INLINE void pk_tile(float cmin, int nv, const uint8_t *wq, const float *dw, const float *mw, size_t nb,
                           const act_view *xs, float *Y, size_t ldy, size_t r, __mmask16 mask) {
    __m512 acc[PK_NV];
    for (int t = 0; t < nv; t++) {
        acc[t] = _mm512_setzero_ps();
    }
    for (size_t b = 0; b < nb; b++) {
        const __m512i *wb = (const __m512i *)(wq + b * QK * PK_ROWS);
        __m512i s[PK_NV];
        for (int t = 0; t < nv; t++) {
            s[t] = _mm512_setzero_si512();
        }
#pragma GCC unroll 8
        for (int g = 0; g < 8; g++) {
            const __m512i w = _mm512_load_si512(wb + g);
            for (int t = 0; t < nv; t++) {
                int32_t x4;
                memcpy(&x4, xs[t].q + b * QK + 4 * g, 4);
                s[t] = _mm512_dpbusd_epi32(s[t], w, _mm512_set1_epi32(x4));
            }
        }
        const __m512 dwb = _mm512_load_ps(dw + b * PK_ROWS);
        for (int t = 0; t < nv; t++) {
            if (cmin != 0.0f) {
                /* m = cmin * d: d * (q . x * d_x + cmin * s_x), one vector operation fewer. */
                const __m512 v = _mm512_fmadd_ps(_mm512_cvtepi32_ps(s[t]), _mm512_set1_ps(xs[t].d[b]),
                                                 _mm512_set1_ps(cmin * xs[t].s[b]));
                acc[t] = _mm512_fmadd_ps(dwb, v, acc[t]);
            } else {
                const __m512 sc = _mm512_mul_ps(dwb, _mm512_set1_ps(xs[t].d[b]));
                acc[t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(s[t]), sc, acc[t]);
                acc[t] = _mm512_fmadd_ps(_mm512_load_ps(mw + b * PK_ROWS), _mm512_set1_ps(xs[t].s[b]), acc[t]);
            }
        }
    }
    for (int t = 0; t < nv; t++) {
        _mm512_mask_storeu_ps(Y + t * ldy + r, mask, acc[t]);
    }
}

ALWAYS_INLINE void pk_tiles_nv(float cmin, int nv, const uint8_t *wq, const float *dw, const float *mw, size_t nb,
                               const act_view *xs, float *Y, size_t ldy, size_t r, __mmask16 mask) {
    switch (nv) {
    case 1:
        pk_tile(cmin, 1, wq, dw, mw, nb, xs, Y, ldy, r, mask);
        break;
    case 2:
        pk_tile(cmin, 2, wq, dw, mw, nb, xs, Y, ldy, r, mask);
        break;
    case 3:
        pk_tile(cmin, 3, wq, dw, mw, nb, xs, Y, ldy, r, mask);
        break;
    case 4:
        pk_tile(cmin, 4, wq, dw, mw, nb, xs, Y, ldy, r, mask);
        break;
    case 5:
        pk_tile(cmin, 5, wq, dw, mw, nb, xs, Y, ldy, r, mask);
        break;
    case 6:
        pk_tile(cmin, 6, wq, dw, mw, nb, xs, Y, ldy, r, mask);
        break;
    case 7:
        pk_tile(cmin, 7, wq, dw, mw, nb, xs, Y, ldy, r, mask);
        break;
    default:
        pk_tile(cmin, PK_NV, wq, dw, mw, nb, xs, Y, ldy, r, mask);
        break;
    }
}

/* Packed GEMM over rows [r0, r1); returns 0 (nothing written) if the scratch buffers cannot be allocated. */
ALWAYS_INLINE int matmat_packed(int type, const void *W, size_t row_bytes, const void *X, size_t x_stride,
                                size_t n_vec, float *Y, size_t ldy, size_t r0, size_t r1, size_t cols) {
    const size_t nb = cols / QK;
    /* Types whose min is a fixed multiple of d (value = d * (q + cmin)); 0 for a stored min. */
    const float cmin = type == T_Q8_0 ? -128.0f : type == T_Q4_0 ? -8.0f : type == T_Q5_0 ? -16.0f : 0.0f;
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
                const __mmask16 mask = (__mmask16)((1u << nr) - 1u);
                pk_tiles_nv(cmin, (int)nv, pb[k].wq, pb[k].dw, pb[k].mw, nb, xs, Y + t * ldy, ldy, r, mask);
            }
        }
    }
    for (size_t k = 0; k < ntiles; k++) {
        free(buf[k]);
    }
    return 1;
}

ALWAYS_INLINE void matmat_generic(int type, int vnni, const void *W, size_t row_bytes, const void *X,
                                  size_t x_stride, size_t n_vec, float *Y, size_t ldy, size_t r0, size_t r1,
                                  size_t cols) {
    if (vnni && type != T_Q6_K && n_vec >= PK_MIN_NV &&
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
            if (type <= T_Q5_1) {
                tiles32(type, vnni, MAX_NV, (const uint8_t *)W, row_bytes, xs, Y + t * ldy, ldy, rt, re, cols);
            } else {
                rows_k(type, MAX_NV, vnni, (const uint8_t *)W, row_bytes, xs, Y + t * ldy, ldy, rt, re, cols);
            }
        }
        for (; t < n_vec; t++) {
            const act_view xs[1] = {view_of((const char *)X + t * x_stride, cols)};
            rows_any_256(type, 1, vnni, (const uint8_t *)W, row_bytes, xs, Y + t * ldy, ldy, rt, re, cols);
        }
    }
}

static size_t act_bytes_avx512(size_t cols) {
    return rwkvc_q8act_bytes(cols);
}

/* Whether to take the VNNI path: the CPU has it and the test hook does not forbid it (two cached loads). */
static inline int use_vnni(void) {
    return rwkvc_cpu_features()->avx512_vnni && !rwkvc_quant_disable_vnni;
}

/* Each type gets a VNNI and a plain specialisation. */
#define DEFINE_AVX512(name, tid)                                                                                  \
    static void matvec_##name(const void *W, size_t row_bytes, const void *x, float *y, size_t r0, size_t r1,    \
                              size_t cols) {                                                                      \
        if (use_vnni()) {                                                                                         \
            matvec_generic(tid, 1, W, row_bytes, x, y, r0, r1, cols);                                             \
        } else {                                                                                                  \
            matvec_generic(tid, 0, W, row_bytes, x, y, r0, r1, cols);                                             \
        }                                                                                                         \
    }                                                                                                             \
    static void matmat_##name(const void *W, size_t row_bytes, const void *X, size_t x_stride, size_t n_vec,      \
                              float *Y, size_t ldy, size_t r0, size_t r1, size_t cols) {                          \
        if (use_vnni()) {                                                                                         \
            matmat_generic(tid, 1, W, row_bytes, X, x_stride, n_vec, Y, ldy, r0, r1, cols);                       \
        } else {                                                                                                  \
            matmat_generic(tid, 0, W, row_bytes, X, x_stride, n_vec, Y, ldy, r0, r1, cols);                       \
        }                                                                                                         \
    }                                                                                                             \
    static const rwkvc_matmul_kernels kernels_##name = {act_bytes_avx512, q8act_prepare_x86, matvec_##name,       \
                                                        matmat_##name};

DEFINE_AVX512(q8_0, T_Q8_0)
DEFINE_AVX512(q4_0, T_Q4_0)
DEFINE_AVX512(q4_1, T_Q4_1)
DEFINE_AVX512(q5_0, T_Q5_0)
DEFINE_AVX512(q5_1, T_Q5_1)
DEFINE_AVX512(q4_K, T_Q4_K)
DEFINE_AVX512(q5_K, T_Q5_K)
DEFINE_AVX512(q6_K, T_Q6_K)

const rwkvc_matmul_kernels *rwkvc_quant_kernels_avx512(uint32_t type) {
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
