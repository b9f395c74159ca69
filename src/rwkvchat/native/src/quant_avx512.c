/*
 * quant_avx512.c: AVX-512 (F/BW/VL/DQ) kernels for the block-quantized weight types, with VNNI where present.
 *
 * Same arithmetic as quant_ref.c: exact integer dot products per 32-element block, scaled in fp32. With
 * AVX512_VNNI (checked at run time through rwkvc_cpu_features) the u8 x s8 product is one vpdpbusd; without it
 * vpmaddubsw + vpmaddwd. AVX-512 has no vpsignb, so in 512-bit code signed weights move their sign onto the
 * activation with a mask subtract (x -> -x where w < 0) and use |w| as the unsigned operand.
 * - matvec (decode, memory-bound) with VNNI: Q4_0 / Q4_1 / Q5_0 / Q5_1 four blocks per 512-bit register and
 *   Q6_K 64 elements per register on unsigned quants (mv_rows32, mv6_rows below), with the activation rearranged
 *   once per call on the stack so that the scales need no per-block broadcasts and the fixed offsets (-8, -16,
 *   -32) no per-byte work. These decode at 1.4-2x the speed of the 256-bit row kernels (which joined block pairs
 *   the naive way: decode and per-block scale broadcasts crowded port 5), enough to keep 2 threads at the
 *   memory-read rate; Q8_0 two blocks and Q4_K / Q5_K 64 elements per register (mv_rows8, mvk_rows).
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
 * matvec of the 4- and 5-bit 32-element types with VNNI, four blocks ("a quad") per 512-bit register.
 *
 * The 4 * 16 nibble bytes of a quad are gathered into one register by one vpermt2w from two loads that cover
 * the quad (its first 64 bytes, and the 32 bytes that end where the quad ends: quad_tail, so nothing past the row
 * is read); 128-bit lane k then holds block k. One AND gives elements 0..15 of every block, a shift and an AND
 * elements 16..31, and two vpdpbusd against activations laid out to match put block k's exact integer dot in
 * int32 lanes 4k..4k+3. The f16 scales (and mins) of 4 quads are collected from the same loads into one register
 * (mv_quads4; mv_quad does one quad for the last nq % 4), so the scaling is a vpermps, a convert and an FMA per
 * quad plus one f16 conversion and one multiply per 16 blocks: no per-block broadcasts.
 *
 * The matching activation layout is built once per call (mv_prep) on the stack: per quad, the low halves of the
 * 4 activation blocks (64 bytes), their high halves (64), d_x of each block 4 times (16 floats), and either the
 * fixed-offset correction as int32 (Q4_0 / Q5_0: -(8 or 16) * sum(q_x) / 4 per lane, the vpdpbusd start value,
 * so d * d_x * (q . x - 8 sum(x)) is exact in integer) or s_x / 4 (Q4_1 / Q5_1: the min term m * s_x is spread
 * over the block's 4 lanes, exact in binary; used by mv_quad only). 256 bytes per 128 columns, at most 32 KB of
 * stack; wider matrices, rows under 128 columns and CPUs without VNNI keep the 256-bit row kernels.
 */
#define MV_MAX_COLS 16384
#define MV_QUAD_BYTES 256

/*
 * The second load of a quad of 4 * bb = 72..96 bytes: the 32 bytes ending at the quad's end (a 256-bit load into
 * the low half; the high half is never indexed). It replaced a 64-byte load at byte 64 masked down to the quad's
 * tail: on the Zen 5 VM that masked load, whose masked-off bytes reach into lines not yet fetched, held the
 * 4-bit kernels far below the memory's pace (2048 / 4096 columns, 1 thread, ratio to a plain read: Q4_0
 * 0.74 / 0.67 -> 1.10 / 1.14; Q5_1, whose tail fills the load's first half, was not affected).
 */
ALWAYS_INLINE __m512i quad_tail(int type, const uint8_t *p) {
    const int bb = (int)type_block_bytes(type);
    return _mm512_castsi256_si512(_mm256_loadu_si256((const __m256i *)(const void *)(p + 4 * bb - 32)));
}

/* The vpermt2w index of the 16-bit word at byte `byte` (even) of a quad, from its first load or quad_tail. */
ALWAYS_INLINE int16_t quad_word(int type, int byte) {
    const int bb = (int)type_block_bytes(type);
    return (int16_t)(byte < 64 ? byte / 2 : 32 + (byte - (4 * bb - 32)) / 2);
}

/*
 * The 512-bit matvec kernels take a thread's rows in pairs from the two halves of its range, their blocks in step
 * (mv_pair32, mv8_pair, mv6_pair), so each thread reads two regions of the matrix at once, and prefetch each
 * region into L1 (hint T0) MV_PREFETCH_BYTES ahead, two lines per step (Q8_0: every line, MV8_PREFETCH_BYTES).
 * History, 2 threads, 1 GiB matrices, ratio to a plain read (bench_quant_matvec): one stream per thread and T2
 * 8 KB ahead (T0 at 2 KB 0.75-0.80, none 0.67, NTA 0.77); then whole rows from the two halves in turn (row_at)
 * and T2 3 KB, Q4_0 / Q5_1 / Q6_K / Q8_0 at 1024 columns 0.95 / 0.89 / 0.93 / 0.98, 2048 0.98 / 0.92 / 0.93 /
 * 0.94, 8192 0.83 / 0.74 / 0.78 / 0.89: on rows longer than the prefetch distance one region stood idle for most
 * of a row. Pairs in step with T0 3 KB: 1024 0.99 / 1.02 / 0.99 / 0.98, 2048 1.00 / 0.98 / 0.99 / 0.96, 8192
 * 1.10 / 0.93 / 0.93 / 0.92 (T2 with pairs: Q4_0 0.95 at 2048, 0.91 at 8192; T0 2 KB about the same as 3 KB,
 * T2 2 / 4 KB worse). Decode, alternating runs: 1.5B Q5_1 38.6-39.4 -> 33.2-34.8 ms, 1.5B Q8_0 51.0-51.4 ->
 * 49.1-49.8 ms, 1.5B Q4_0 29.8-30.5 -> 28.3-28.8 ms, 0.4B Q5_1 10.2-10.4 -> 10.1 ms.
 */
#define MV_PREFETCH_BYTES 3072
#define MV_PREFETCH(p)                                                                                            \
    do {                                                                                                          \
        _mm_prefetch((const char *)(p) + MV_PREFETCH_BYTES, _MM_HINT_T0);                                         \
        _mm_prefetch((const char *)(p) + MV_PREFETCH_BYTES + 64, _MM_HINT_T0);                                    \
    } while (0)

ALWAYS_INLINE void mv_prep(int type, const act_view *xv, size_t nq, uint8_t *buf) {
    const __m512i ilo = _mm512_setr_epi64(0, 1, 4, 5, 8, 9, 12, 13);
    const __m512i ihi = _mm512_setr_epi64(2, 3, 6, 7, 10, 11, 14, 15);
    const __m512i i4 = _mm512_setr_epi32(0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3);
    const int has_min = type == T_Q4_1 || type == T_Q5_1; /* a stored min */
    for (size_t q = 0; q < nq; q++) {
        uint8_t *o = buf + q * MV_QUAD_BYTES;
        const __m512i a = _mm512_loadu_si512((const void *)(xv->q + q * 128));
        const __m512i b = _mm512_loadu_si512((const void *)(xv->q + q * 128 + 64));
        const __m512i xl = _mm512_permutex2var_epi64(a, ilo, b);
        const __m512i xh = _mm512_permutex2var_epi64(a, ihi, b);
        _mm512_store_si512((void *)o, xl);
        _mm512_store_si512((void *)(o + 64), xh);
        const __m512 d4 = _mm512_castps128_ps512(_mm_loadu_ps(xv->d + 4 * q));
        _mm512_store_ps((float *)(o + 128), _mm512_permutexvar_ps(i4, d4));
        if (has_min) {
            const __m512 s4 = _mm512_castps128_ps512(_mm_loadu_ps(xv->s + 4 * q));
            _mm512_store_ps((float *)(o + 192),
                            _mm512_mul_ps(_mm512_permutexvar_ps(i4, s4), _mm512_set1_ps(0.25f)));
        } else {
            /* Per 128-bit lane (block): the sum of its 32 quants in every int32 lane, times -offset / 4. */
            const __m512i one = _mm512_set1_epi8(1);
            __m512i t = _mm512_dpbusd_epi32(_mm512_dpbusd_epi32(_mm512_setzero_si512(), one, xl), one, xh);
            t = _mm512_add_epi32(t, _mm512_shuffle_epi32(t, _MM_PERM_BADC));
            t = _mm512_add_epi32(t, _mm512_shuffle_epi32(t, _MM_PERM_CDAB));
            t = _mm512_slli_epi32(t, type == T_Q4_0 ? 1 : 2);
            _mm512_store_si512((void *)(o + 192), _mm512_sub_epi32(_mm512_setzero_si512(), t));
        }
    }
}

/*
 * Fifth bits of a Q5_0 / Q5_1 quad (its bytes in l0 : l1): bits 0..15 of block k's qh belong to elements 0..15,
 * bytes 16k..16k+15 of lo; bits 16..31 to elements 16..31, the same bytes of hi. One permute puts qh of block k
 * in every dword of 128-bit lane k (Q5_1's qh is dword-aligned at byte 24k + 4; Q5_0's only word-aligned, at
 * 22k + 2); vpshufb spreads qh byte j / 8 over byte j of the lane and vptestmb picks bit j % 8 into a mask, under
 * which 16 is added. Before, the two masks were assembled from the qh words in general registers (about 24 scalar
 * operations per quad): 1 thread, 4096 x 4096 in cache, on the Zen 5 VM Q5_0 36 -> 49, Q5_1 38.5 -> 51 GB/s.
 */
ALWAYS_INLINE void mv_fifth_bits(int type, __m512i l0, __m512i l1, __m512i *lo, __m512i *hi) {
    __m512i q;
    if (type == T_Q5_1) {
        q = _mm512_permutex2var_epi32(l0, _mm512_setr_epi32(1, 1, 1, 1, 7, 7, 7, 7, 13, 13, 13, 13, 19, 19, 19, 19),
                                      l1);
    } else {
        /* Bytes 22k + 2 .. 22k + 5, repeated: quad_word(T_Q5_0, 22k + 2) and the next word. */
        static const int16_t iq[32] = {1,  2,  1,  2,  1,  2,  1,  2,  12, 13, 12, 13, 12, 13, 12, 13,
                                       23, 24, 23, 24, 23, 24, 23, 24, 38, 39, 38, 39, 38, 39, 38, 39};
        q = _mm512_permutex2var_epi16(l0, _mm512_loadu_si512((const void *)iq), l1);
    }
    const __m512i bit = _mm512_set1_epi64(0x8040201008040201ll);
    /* Per lane: qh bytes 0, 1 for elements 0..15; bytes 2, 3 for 16..31 (8 bytes each). */
    const __m512i sel_lo = _mm512_set4_epi32(0x01010101, 0x01010101, 0x00000000, 0x00000000);
    const __m512i sel_hi = _mm512_set4_epi32(0x03030303, 0x03030303, 0x02020202, 0x02020202);
    const __mmask64 ml = _mm512_test_epi8_mask(_mm512_shuffle_epi8(q, sel_lo), bit);
    const __mmask64 mh = _mm512_test_epi8_mask(_mm512_shuffle_epi8(q, sel_hi), bit);
    const __m512i b16 = _mm512_set1_epi8(0x10);
    *lo = _mm512_mask_add_epi8(*lo, ml, *lo, b16);
    *hi = _mm512_mask_add_epi8(*hi, mh, *hi, b16);
}

/* One quad of a row: acc += its scaled block dots, accm += its min terms (Q4_1 / Q5_1). */
ALWAYS_INLINE void mv_quad(int type, const uint8_t *p, const uint8_t *a, __m512i idx_w, __m512i idx_h, __m512 *acc,
                           __m512 *accm) {
    const int has_min = type == T_Q4_1 || type == T_Q5_1;
    const int is5 = type == T_Q5_0 || type == T_Q5_1;
    const __m512i m4 = _mm512_set1_epi8(0x0F);
    MV_PREFETCH(p);
    const __m512i l0 = _mm512_loadu_si512((const void *)p);
    const __m512i l1 = quad_tail(type, p);
    const __m512i w = _mm512_permutex2var_epi16(l0, idx_w, l1);
    __m512i lo = _mm512_and_si512(w, m4);
    __m512i hi = _mm512_and_si512(_mm512_srli_epi16(w, 4), m4);
    if (is5) {
        mv_fifth_bits(type, l0, l1, &lo, &hi);
    }
    const __m512i start = has_min ? _mm512_setzero_si512() : _mm512_load_si512((const void *)(a + 192));
    __m512i dot = _mm512_dpbusd_epi32(start, lo, _mm512_load_si512((const void *)a));
    dot = _mm512_dpbusd_epi32(dot, hi, _mm512_load_si512((const void *)(a + 64)));
    const __m512i h = _mm512_permutex2var_epi16(l0, idx_h, l1);
    const __m512 sc =
        _mm512_mul_ps(_mm512_cvtph_ps(_mm512_castsi512_si256(h)), _mm512_load_ps((const float *)(a + 128)));
    *acc = _mm512_fmadd_ps(_mm512_cvtepi32_ps(dot), sc, *acc);
    if (has_min) {
        *accm = _mm512_fmadd_ps(_mm512_cvtph_ps(_mm512_extracti64x4_epi64(h, 1)),
                                _mm512_load_ps((const float *)(a + 192)), *accm);
    }
}

/*
 * Four quads (16 blocks) at a time: the 16 scales (and mins) are collected into one register, converted once and
 * multiplied by the 16 activation scales once; each quad then takes its factors with one vpermps, and the min term
 * of Q4_1 / Q5_1 is one FMA per 16 blocks. Q4_0 / Q4_1 have every header of a quad in its first 64 bytes: two
 * vpermt2w over pairs of quads and one vpermt2q. Q5_0 / Q5_1: one vpermt2w per quad (its 4 d in every group of
 * 4 words 0..15, its 4 m in every group of 16..31) and three blends taking words 4j.. and 16 + 4j.. of quad j.
 * Saves 1.5 (Q4_0, Q5_0) to 3.5 (Q5_1) of the 12-23 vector operations per quad of mv_quad (L2-resident matvec
 * 1 thread: Q4_0 +10%, Q5_0 +18%, Q5_1 +25%).
 */
ALWAYS_INLINE void mv_quads4(int type, const uint8_t *p, const uint8_t *a, const float *dx, const float *sx,
                             __m512i idx_w, __m512i idx_d, const __m512i *ex, __m512 *acc0, __m512 *acc1,
                             __m512 *accm) {
    const int bb = (int)type_block_bytes(type);
    const int has_min = type == T_Q4_1 || type == T_Q5_1;
    const int is5 = type == T_Q5_0 || type == T_Q5_1;
    __m512i l0[4];
    __m512i hq[4];
    __m512i dot[4];
    for (int j = 0; j < 4; j++) {
        const uint8_t *pj = p + j * 4 * bb;
        __m512i lo;
        __m512i hi;
        MV_PREFETCH(pj);
        l0[j] = _mm512_loadu_si512((const void *)pj);
        const __m512i l1 = quad_tail(type, pj);
        const __m512i w = _mm512_permutex2var_epi16(l0[j], idx_w, l1);
        lo = _mm512_and_si512(w, _mm512_set1_epi8(0x0F));
        hi = _mm512_and_si512(_mm512_srli_epi16(w, 4), _mm512_set1_epi8(0x0F));
        if (is5) {
            mv_fifth_bits(type, l0[j], l1, &lo, &hi);
            hq[j] = _mm512_permutex2var_epi16(l0[j], idx_d, l1);
        }
        const uint8_t *aj = a + j * MV_QUAD_BYTES;
        const __m512i start = has_min ? _mm512_setzero_si512() : _mm512_load_si512((const void *)(aj + 192));
        dot[j] = _mm512_dpbusd_epi32(start, lo, _mm512_load_si512((const void *)aj));
        dot[j] = _mm512_dpbusd_epi32(dot[j], hi, _mm512_load_si512((const void *)(aj + 64)));
    }
    /* Words 0..15: d of the 16 blocks; 16..31: their mins. */
    __m512i h;
    if (is5) {
        h = _mm512_mask_blend_epi16((__mmask32)0x00F000F0u, hq[0], hq[1]);
        h = _mm512_mask_blend_epi16((__mmask32)0x0F000F00u, h, hq[2]);
        h = _mm512_mask_blend_epi16((__mmask32)0xF000F000u, h, hq[3]);
    } else {
        /* Words 0..7: d of quads j, j + 1; 8..15: their mins. */
        const __m512i h01 = _mm512_permutex2var_epi16(l0[0], idx_d, l0[1]);
        const __m512i h23 = _mm512_permutex2var_epi16(l0[2], idx_d, l0[3]);
        h = _mm512_permutex2var_epi64(h01, _mm512_setr_epi64(0, 1, 8, 9, 2, 3, 10, 11), h23);
    }
    const __m512 cs = _mm512_mul_ps(_mm512_cvtph_ps(_mm512_castsi512_si256(h)), _mm512_loadu_ps(dx));
    for (int j = 0; j < 4; j++) {
        const __m512 f = _mm512_permutexvar_ps(ex[j], cs);
        if (j & 1) {
            *acc1 = _mm512_fmadd_ps(_mm512_cvtepi32_ps(dot[j]), f, *acc1);
        } else {
            *acc0 = _mm512_fmadd_ps(_mm512_cvtepi32_ps(dot[j]), f, *acc0);
        }
    }
    if (has_min) {
        *accm = _mm512_fmadd_ps(_mm512_cvtph_ps(_mm512_extracti64x4_epi64(h, 1)), _mm512_loadu_ps(sx), *accm);
    }
}

/*
 * Rows a and b (n = 2, a compile-time constant after inlining; n = 1: row a alone) with their quads in step, so a
 * thread reads two regions of the matrix at once however long the rows (see MV_PREFETCH_BYTES). Each row keeps
 * its own accumulators and order, so the results are those of one row at a time.
 *
 * whole (a constant): the rows are whole groups of 4 quads (columns a multiple of 512, as in every released
 * model), so there is no tail. The tail code's mere presence made GCC keep the accumulators in memory across it;
 * without it, 1 thread in cache on the Zen 5 VM, Q4_0 1024 x 1024 47 -> 63 GB/s (4096 x 4096 59 -> 65), Q4_1
 * 52 -> 70, Q5_1 48 -> 53. 0.4B decode (scripts/ab_decode.c, fastest third of the blocks): Q4_0 -4%, Q5_1 -3 to
 * -4% (with mv8_pair's, Q8_0 -2%); no change in the memory's slow phases.
 */
ALWAYS_INLINE void mv_pair32(int type, int n, int whole, const uint8_t *W, size_t row_bytes, const act_view *xv,
                             const uint8_t *buf, float *y, size_t a, size_t b, size_t cols, __m512i idx_w,
                             __m512i idx_h, __m512i idx_d, const __m512i *ex) {
    const int bb = (int)type_block_bytes(type);
    const size_t nb = cols / QK;
    const size_t nq = nb / 4;
    const uint8_t *row[2] = {W + a * row_bytes, W + b * row_bytes};
    const size_t r[2] = {a, b};
    __m512 acc0[2], acc1[2], accm[2];
    for (int i = 0; i < n; i++) {
        acc0[i] = acc1[i] = accm[i] = _mm512_setzero_ps();
    }
    size_t q = 0;
    if (whole) {
        for (; q < nq; q += 4) {
            for (int i = 0; i < n; i++) {
                mv_quads4(type, row[i] + q * 4 * bb, buf + q * MV_QUAD_BYTES, xv->d + 4 * q, xv->s + 4 * q, idx_w,
                          idx_d, ex, &acc0[i], &acc1[i], &accm[i]);
            }
        }
        for (int i = 0; i < n; i++) {
            y[r[i]] = _mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(acc0[i], acc1[i]), accm[i]));
        }
        return;
    }
    for (; q + 4 <= nq; q += 4) {
        for (int i = 0; i < n; i++) {
            mv_quads4(type, row[i] + q * 4 * bb, buf + q * MV_QUAD_BYTES, xv->d + 4 * q, xv->s + 4 * q, idx_w, idx_d,
                      ex, &acc0[i], &acc1[i], &accm[i]);
        }
    }
    for (; q + 2 <= nq; q += 2) {
        for (int i = 0; i < n; i++) {
            mv_quad(type, row[i] + q * 4 * bb, buf + q * MV_QUAD_BYTES, idx_w, idx_h, &acc0[i], &accm[i]);
            mv_quad(type, row[i] + (q + 1) * 4 * bb, buf + (q + 1) * MV_QUAD_BYTES, idx_w, idx_h, &acc1[i],
                    &accm[i]);
        }
    }
    if (q < nq) {
        for (int i = 0; i < n; i++) {
            mv_quad(type, row[i] + q * 4 * bb, buf + q * MV_QUAD_BYTES, idx_w, idx_h, &acc0[i], &accm[i]);
        }
    }
    for (int i = 0; i < n; i++) {
        /* The last nb % 4 blocks, one at a time. */
        __m256 t0 = _mm256_setzero_ps();
        float tm = 0.0f;
        for (size_t k = nq * 4; k < nb; k++) {
            step32_256(type, 1, 1, row[i] + k * bb, k, xv, &t0, &tm);
        }
        y[r[i]] = _mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(acc0[i], acc1[i]), accm[i])) + (hsum8(t0) + tm);
    }
}

/* Rows [r0, r1) in pairs from the two halves of the range (see MV_PREFETCH_BYTES); whole as in mv_pair32. */
ALWAYS_INLINE void mv_pairs32(int type, int whole, const uint8_t *W, size_t row_bytes, const act_view *xv,
                              const uint8_t *buf, float *y, size_t r0, size_t r1, size_t cols, __m512i idx_w,
                              __m512i idx_h, __m512i idx_d, const __m512i *ex) {
    const size_t h = (r1 - r0 + 1) / 2;
    for (size_t k = 0; k < h; k++) {
        const size_t a = r0 + k, b = r0 + h + k;
        if (b < r1) {
            mv_pair32(type, 2, whole, W, row_bytes, xv, buf, y, a, b, cols, idx_w, idx_h, idx_d, ex);
        } else {
            mv_pair32(type, 1, whole, W, row_bytes, xv, buf, y, a, a, cols, idx_w, idx_h, idx_d, ex);
        }
    }
}

ALWAYS_INLINE void mv_rows32(int type, const uint8_t *W, size_t row_bytes, const act_view *xv, const uint8_t *buf,
                             float *y, size_t r0, size_t r1, size_t cols) {
    const int bb = (int)type_block_bytes(type);
    const int has_min = type == T_Q4_1 || type == T_Q5_1; /* a stored min */
    const int qs_off = type == T_Q4_0 ? 2 : type == T_Q4_1 ? 4 : type == T_Q5_0 ? 6 : 8;
    /* Word indices into the 128 bytes of a quad (every field of these blocks sits at an even offset). */
    int16_t iw[32];
    int16_t ih[32];
    for (int j = 0; j < 32; j++) {
        iw[j] = quad_word(type, (j / 8) * bb + qs_off + 2 * (j % 8));
        /* Words 0..15: d of block j / 4; 16..31: its min (Q4_1 / Q5_1). */
        ih[j] = quad_word(type, ((j % 16) / 4) * bb + (j >= 16 && has_min ? 2 : 0));
    }
    const __m512i idx_w = _mm512_loadu_si512((const void *)iw);
    const __m512i idx_h = _mm512_loadu_si512((const void *)ih);
    /* Header index of mv_quads4 (see there). */
    const int q4 = type == T_Q4_0 || type == T_Q4_1;
    int16_t id[32];
    for (int j = 0; j < 32; j++) {
        const int mn = j >= (q4 ? 8 : 16) && has_min ? 2 : 0;
        /* Q4_0 / Q4_1: the headers of two quads, all in their first loads (at most byte 62). */
        id[j] = q4 ? (int16_t)(32 * ((j / 4) % 2) + ((j % 4) * bb + mn) / 2) : quad_word(type, (j % 4) * bb + mn);
    }
    const __m512i idx_d = _mm512_loadu_si512((const void *)id);
    __m512i ex[4];
    for (int j = 0; j < 4; j++) {
        ex[j] = _mm512_setr_epi32(4 * j, 4 * j, 4 * j, 4 * j, 4 * j + 1, 4 * j + 1, 4 * j + 1, 4 * j + 1, 4 * j + 2,
                                  4 * j + 2, 4 * j + 2, 4 * j + 2, 4 * j + 3, 4 * j + 3, 4 * j + 3, 4 * j + 3);
    }
    /* Two loops, each with `whole` a constant: one loop testing it per pair measured 8% slower from cache. */
    if (cols % 512 == 0) {
        mv_pairs32(type, 1, W, row_bytes, xv, buf, y, r0, r1, cols, idx_w, idx_h, idx_d, ex);
    } else {
        mv_pairs32(type, 0, W, row_bytes, xv, buf, y, r0, r1, cols, idx_w, idx_h, idx_d, ex);
    }
}

/*
 * matvec of Q8_0 with VNNI, two blocks per 512-bit register. The 32 quants of blocks b, b + 1 are two 256-bit loads
 * into one register; flipping their sign bit makes them unsigned (q + 128), so one vpdpbusd against the activation
 * quants, which are already in this order (64 contiguous bytes), gives block b's dot in int32 lanes 0..7 and block
 * b + 1's in lanes 8..15. The + 128 * sum(x) this adds is taken off exactly by the vpdpbusd start value, -16 * sum
 * of the block's x quants in each of its 8 lanes, built once per call (mv8_prep) on the stack (64 bytes per pair
 * of blocks, at most 16 KB). The f16 scales of 16 blocks are one gather (they sit 34 bytes apart), one convert
 * and one multiply by d_x; each pair then takes its two factors with one vpermps. Per block: about 3 vector
 * operations, against 8-10 for the 256-bit row kernel, which did not keep up with the memory on two cores.
 */
#define MV8_PAIR_BYTES 64

/*
 * This kernel prefetches every line (hint T0), MV8_PREFETCH_BYTES ahead. With one stream per thread and hint T2
 * (1024 / 2048 / 8192 columns, median of 5 back-to-back pairs against a plain read): 8 KB 0.82-0.85 / 0.82-0.84 /
 * 0.82-0.85 (the same as no prefetch at all), 3 KB 0.95 / 0.89-0.90 / 0.85-0.86, 2 KB 0.92 / 0.89 / 0.78-0.80.
 * With row pairs in step: T2 3 KB 0.97 / 0.94 / 0.88, T0 3 KB 0.97 / 0.96 / 0.92; T0 at 2048 / 8192 columns, 2 /
 * 3 / 4 / 6 KB: 0.97 / 0.95 / 0.93 / 0.88 and 0.96 / 0.94 / 0.93 / 0.90. Decode, alternating runs, 2 KB against
 * 3 KB: 1.5B Q8_0 49.6-50.0 -> 48.3-48.8 ms, 0.4B Q8_0 the same within noise.
 */
#define MV8_PREFETCH_BYTES 2048

ALWAYS_INLINE void mv8_prep(const act_view *xv, size_t n_pairs, uint8_t *buf) {
    const __m512i one = _mm512_set1_epi8(1);
    for (size_t i = 0; i < n_pairs; i++) {
        __m512i t = _mm512_dpbusd_epi32(_mm512_setzero_si512(), one,
                                        _mm512_loadu_si512((const void *)(xv->q + i * 2 * QK)));
        /* Sum the 8 lanes of each 256-bit half into all of them. */
        t = _mm512_add_epi32(t, _mm512_shuffle_epi32(t, _MM_PERM_BADC));
        t = _mm512_add_epi32(t, _mm512_shuffle_epi32(t, _MM_PERM_CDAB));
        t = _mm512_add_epi32(t, _mm512_shuffle_i32x4(t, t, _MM_SHUFFLE(2, 3, 0, 1)));
        _mm512_store_si512((void *)(buf + i * MV8_PAIR_BYTES), _mm512_sub_epi32(_mm512_setzero_si512(),
                                                                               _mm512_slli_epi32(t, 4)));
    }
}

/* n_pairs (1..8, a constant after inlining) pairs of blocks from p: acc0 / acc1 += their scaled dots. */
ALWAYS_INLINE void mv8_pairs(int n_pairs, const uint8_t *p, const int8_t *xq, const uint8_t *corr, const float *dx,
                             const __m512i *ex, __m512 *acc0, __m512 *acc1) {
    const __m512i flip = _mm512_set1_epi8((char)0x80);
    const int bb = 34;
    for (int o = 0; o < n_pairs * 2 * bb; o += 64) {
        _mm_prefetch((const char *)p + o + MV8_PREFETCH_BYTES, _MM_HINT_T0);
    }
    __m512i dot[8];
    for (int j = 0; j < n_pairs; j++) {
        const uint8_t *pj = p + j * 2 * bb;
        __m512i w = _mm512_inserti64x4(_mm512_castsi256_si512(_mm256_loadu_si256((const __m256i *)(pj + 2))),
                                       _mm256_loadu_si256((const __m256i *)(pj + bb + 2)), 1);
        w = _mm512_xor_si512(w, flip);
        dot[j] = _mm512_dpbusd_epi32(_mm512_load_si512((const void *)(corr + j * MV8_PAIR_BYTES)), w,
                                     _mm512_loadu_si512((const void *)(xq + j * 2 * QK)));
    }
    /* The scale of block k is the 16-bit word 17 k (byte 34 k). */
    const __mmask16 m = (__mmask16)(n_pairs == 8 ? 0xFFFFu : (1u << (2 * n_pairs)) - 1u);
    __m256i d16;
    if (n_pairs == 8) {
        /*
         * All 16 blocks (544 bytes): the words from eight 64-byte loads of lines the dot products read anyway, four
         * blocks per pair of loads with one vpermt2w (index 17 k less the pair's first word). The 16-lane gather
         * that did this cost a quarter of the kernel on Zen 5 (1 thread from L2, 1024 / 4096 columns: 59.5 / 48.4
         * -> 70.0 / 68.1 GB/s).
         */
        static const int16_t word_of[32] = {0, 17, 34, 51, 4, 21, 38, 55, 8, 25, 42, 59, 12, 29, 46, 63};
        const __m512i idx = _mm512_loadu_si512((const void *)word_of);
        __m512i w = _mm512_setzero_si512();
        for (int q = 0; q < 4; q++) {
            const __m512i lo = _mm512_loadu_si512((const void *)(p + 128 * q));
            const __m512i hi = _mm512_loadu_si512((const void *)(p + 128 * q + 64));
            w = _mm512_or_si512(w, _mm512_maskz_permutex2var_epi16((__mmask32)(0xFu << (4 * q)), lo, idx, hi));
        }
        d16 = _mm512_castsi512_si256(w);
    } else {
        /* A row's last pairs: a masked gather, which reads nothing past them. */
        const __m512i at = _mm512_setr_epi32(0, 34, 68, 102, 136, 170, 204, 238, 272, 306, 340, 374, 408, 442, 476,
                                             510);
        d16 = _mm512_cvtepi32_epi16(_mm512_mask_i32gather_epi32(_mm512_setzero_si512(), m, at, (const void *)p, 1));
    }
    const __m512 cs = _mm512_mul_ps(_mm512_cvtph_ps(d16), _mm512_maskz_loadu_ps(m, dx));
    for (int j = 0; j < n_pairs; j++) {
        const __m512 f = _mm512_permutexvar_ps(ex[j], cs);
        if (j & 1) {
            *acc1 = _mm512_fmadd_ps(_mm512_cvtepi32_ps(dot[j]), f, *acc1);
        } else {
            *acc0 = _mm512_fmadd_ps(_mm512_cvtepi32_ps(dot[j]), f, *acc0);
        }
    }
}

/* The blocks of one Q8_0 row from pair i on (the main step done): the last np - i < 8 pairs and an odd block. */
ALWAYS_INLINE void mv8_tail(const uint8_t *row, const act_view *xv, const uint8_t *corr, size_t i, size_t np,
                            size_t nb, const __m512i *ex, __m512 *acc0, __m512 *acc1, float *tail) {
    const uint8_t *pr = row + i * 68;
    const int8_t *xr = xv->q + i * 2 * QK;
    const uint8_t *cr = corr + i * MV8_PAIR_BYTES;
    const float *dr = xv->d + 2 * i;
    switch (np - i) { /* Constant pair counts, so each tail is unrolled like the main step. */
    case 7: mv8_pairs(7, pr, xr, cr, dr, ex, acc0, acc1); break;
    case 6: mv8_pairs(6, pr, xr, cr, dr, ex, acc0, acc1); break;
    case 5: mv8_pairs(5, pr, xr, cr, dr, ex, acc0, acc1); break;
    case 4: mv8_pairs(4, pr, xr, cr, dr, ex, acc0, acc1); break;
    case 3: mv8_pairs(3, pr, xr, cr, dr, ex, acc0, acc1); break;
    case 2: mv8_pairs(2, pr, xr, cr, dr, ex, acc0, acc1); break;
    case 1: mv8_pairs(1, pr, xr, cr, dr, ex, acc0, acc1); break;
    default: break;
    }
    /* An odd last block. */
    __m256 t0 = _mm256_setzero_ps();
    float tm = 0.0f;
    for (size_t b = np * 2; b < nb; b++) {
        step32_256(T_Q8_0, 1, 1, row + b * 34, b, xv, &t0, &tm);
    }
    *tail = hsum8(t0) + tm;
}

/*
 * Rows a and b (n = 2) or row a alone (n = 1), 8 pairs of blocks at a time in step as in mv_pair32; whole (a
 * constant): columns a multiple of 512, no tail (see mv_pair32). 1 thread in cache on the Zen 5 VM: 1024 x 1024
 * 52 -> 58 GB/s.
 */
ALWAYS_INLINE void mv8_pair(int n, int whole, const uint8_t *W, size_t row_bytes, const act_view *xv,
                            const uint8_t *corr, float *y, size_t a, size_t b, size_t cols, const __m512i *ex) {
    const size_t nb = cols / QK;
    const size_t np = nb / 2;
    const uint8_t *row[2] = {W + a * row_bytes, W + b * row_bytes};
    const size_t r[2] = {a, b};
    __m512 acc0[2], acc1[2];
    for (int k = 0; k < n; k++) {
        acc0[k] = acc1[k] = _mm512_setzero_ps();
    }
    size_t i = 0;
    if (whole) {
        for (; i < np; i += 8) {
            for (int k = 0; k < n; k++) {
                mv8_pairs(8, row[k] + i * 68, xv->q + i * 2 * QK, corr + i * MV8_PAIR_BYTES, xv->d + 2 * i, ex,
                          &acc0[k], &acc1[k]);
            }
        }
        for (int k = 0; k < n; k++) {
            y[r[k]] = _mm512_reduce_add_ps(_mm512_add_ps(acc0[k], acc1[k]));
        }
        return;
    }
    for (; i + 8 <= np; i += 8) {
        for (int k = 0; k < n; k++) {
            mv8_pairs(8, row[k] + i * 68, xv->q + i * 2 * QK, corr + i * MV8_PAIR_BYTES, xv->d + 2 * i, ex, &acc0[k],
                      &acc1[k]);
        }
    }
    for (int k = 0; k < n; k++) {
        float tail;
        mv8_tail(row[k], xv, corr, i, np, nb, ex, &acc0[k], &acc1[k], &tail);
        y[r[k]] = _mm512_reduce_add_ps(_mm512_add_ps(acc0[k], acc1[k])) + tail;
    }
}

/* Rows [r0, r1) in pairs from the two halves of the range, as mv_pairs32. */
ALWAYS_INLINE void mv8_pairs_rows(int whole, const uint8_t *W, size_t row_bytes, const act_view *xv,
                                  const uint8_t *corr, float *y, size_t r0, size_t r1, size_t cols,
                                  const __m512i *ex) {
    const size_t h = (r1 - r0 + 1) / 2;
    for (size_t k = 0; k < h; k++) {
        const size_t a = r0 + k, b = r0 + h + k;
        if (b < r1) {
            mv8_pair(2, whole, W, row_bytes, xv, corr, y, a, b, cols, ex);
        } else {
            mv8_pair(1, whole, W, row_bytes, xv, corr, y, a, a, cols, ex);
        }
    }
}

ALWAYS_INLINE void mv_rows8(const uint8_t *W, size_t row_bytes, const act_view *xv, const uint8_t *corr, float *y,
                            size_t r0, size_t r1, size_t cols) {
    __m512i ex[8];
    for (int j = 0; j < 8; j++) {
        ex[j] = _mm512_setr_epi32(2 * j, 2 * j, 2 * j, 2 * j, 2 * j, 2 * j, 2 * j, 2 * j, 2 * j + 1, 2 * j + 1,
                                  2 * j + 1, 2 * j + 1, 2 * j + 1, 2 * j + 1, 2 * j + 1, 2 * j + 1);
    }
    if (cols % 512 == 0) {
        mv8_pairs_rows(1, W, row_bytes, xv, corr, y, r0, r1, cols, ex);
    } else {
        mv8_pairs_rows(0, W, row_bytes, xv, corr, y, r0, r1, cols, ex);
    }
}

/*
 * matvec of Q6_K with VNNI. Per 128-element half of a super-block, one 64-byte load of ql holds both nibbles of
 * 128 consecutive elements (low nibbles: elements 0..63, high: 64..127) and the 32 qh bytes, broadcast to both
 * 256-bit halves, give their two high bits with one variable shift and an AND per 64 elements; a vpternlog joins
 * them, so each 64 unsigned 6-bit quants cost 3.5 operations. vpdpbusd puts group g's (16 elements) dot in int32
 * lanes 4g..4g+3; the 16 group factors d * sc_g * d_x are one vector per super-block, spread per 64 elements by one
 * vpermps. The -32 offset is one FMA per super-block: sum_g (d * sc_g * d_x) * (-32 * sum of the group's x quants),
 * the second factor built once per call (mv6_prep, with d_x of each group) on the stack, 128 bytes per super-block.
 */
#define MV6_SB_BYTES 128

ALWAYS_INLINE void mv6_prep(const act_view *xv, size_t nsb, uint8_t *buf) {
    const __m512i one = _mm512_set1_epi8(1);
    const __m512i i2 = _mm512_setr_epi32(0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7);
    for (size_t i = 0; i < nsb; i++) {
        float *o = (float *)(buf + i * MV6_SB_BYTES);
        __m512i gs[4];
        for (int t = 0; t < 4; t++) {
            gs[t] = _mm512_dpbusd_epi32(_mm512_setzero_si512(), one,
                                        _mm512_loadu_si512((const void *)(xv->q + i * QK_K + 64 * t)));
        }
        /* Group sums: lanes 4g..4g+3 of gs[t] belong to group 4t + g; reduce each 128-bit lane to one value. */
        __m512i t01 = _mm512_add_epi32(_mm512_unpacklo_epi32(gs[0], gs[1]), _mm512_unpackhi_epi32(gs[0], gs[1]));
        __m512i t23 = _mm512_add_epi32(_mm512_unpacklo_epi32(gs[2], gs[3]), _mm512_unpackhi_epi32(gs[2], gs[3]));
        __m512i u = _mm512_add_epi32(_mm512_unpacklo_epi64(t01, t23), _mm512_unpackhi_epi64(t01, t23));
        /* u: 128-bit lane g holds the sums of groups g, 4 + g, 8 + g, 12 + g; reorder to group order. */
        const __m512i ord = _mm512_setr_epi32(0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15);
        u = _mm512_permutexvar_epi32(ord, u);
        _mm512_store_ps(o, _mm512_mul_ps(_mm512_cvtepi32_ps(u), _mm512_set1_ps(-32.0f)));
        const __m512 d8 = _mm512_castps256_ps512(_mm256_loadu_ps(xv->d + i * 8));
        _mm512_store_ps(o + 16, _mm512_permutexvar_ps(i2, d8));
    }
}

/* One super-block of a Q6_K row: acc0 / acc1 += its scaled group dots, acco += its -32 offset term. */
ALWAYS_INLINE void mv6_sb(const rwkvc_block_q6_K *blk, const float *a, const int8_t *x, const __m512i *ex,
                          __m512 *acc0, __m512 *acc1, __m512 *acco) {
    const __m512i m4 = _mm512_set1_epi8(0x0F);
    const __m512i m30 = _mm512_set1_epi8(0x30);
    const __m512i shl = _mm512_setr_epi64(4, 4, 4, 4, 2, 2, 2, 2);
    const __m512i shr = _mm512_setr_epi64(0, 0, 0, 0, 2, 2, 2, 2);
    MV_PREFETCH(blk);
    MV_PREFETCH((const uint8_t *)blk + 128);
    const __m512 scf =
        _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)(const void *)blk->scales)));
    /* fs: d * sc_g * d_x of group g's block, g = 0..15. */
    const __m512 fs = _mm512_mul_ps(_mm512_mul_ps(scf, _mm512_set1_ps(h2f(&blk->d))), _mm512_load_ps(a + 16));
    *acco = _mm512_fmadd_ps(fs, _mm512_load_ps(a), *acco);
#pragma GCC unroll 2
    for (int h = 0; h < 2; h++) {
        const __m512i al = _mm512_loadu_si512((const void *)(blk->ql + 64 * h));
        const __m512i hh = _mm512_broadcast_i64x4(_mm256_loadu_si256((const __m256i *)(blk->qh + 32 * h)));
        /* Bits 4..5 of each quant: qh bits 0-1 / 2-3 (qa), 4-5 / 6-7 (qb) of the two 32-byte halves. */
        const __m512i ha = _mm512_and_si512(_mm512_sllv_epi64(hh, shl), m30);
        const __m512i hb = _mm512_and_si512(_mm512_srlv_epi64(hh, shr), m30);
        /* 0xEC: (a & c) | b for operands a, b, c; b is zero outside 0x30. */
        const __m512i qa = _mm512_ternarylogic_epi64(al, ha, m4, 0xEC);
        const __m512i qb = _mm512_ternarylogic_epi64(_mm512_srli_epi16(al, 4), hb, m4, 0xEC);
        const __m512i pa =
            _mm512_dpbusd_epi32(_mm512_setzero_si512(), qa, _mm512_loadu_si512((const void *)(x + 128 * h)));
        const __m512i pb =
            _mm512_dpbusd_epi32(_mm512_setzero_si512(), qb, _mm512_loadu_si512((const void *)(x + 128 * h + 64)));
        *acc0 = _mm512_fmadd_ps(_mm512_cvtepi32_ps(pa), _mm512_permutexvar_ps(ex[2 * h], fs), *acc0);
        *acc1 = _mm512_fmadd_ps(_mm512_cvtepi32_ps(pb), _mm512_permutexvar_ps(ex[2 * h + 1], fs), *acc1);
    }
}

/* Rows a and b (n = 2) or row a alone (n = 1), super-blocks in step as in mv_pair32. */
ALWAYS_INLINE void mv6_pair(int n, const uint8_t *W, size_t row_bytes, const act_view *xv, const uint8_t *buf,
                            float *y, size_t a, size_t b, size_t cols, const __m512i *ex) {
    const size_t nsb = cols / QK_K;
    const rwkvc_block_q6_K *row[2] = {(const rwkvc_block_q6_K *)(W + a * row_bytes),
                                      (const rwkvc_block_q6_K *)(W + b * row_bytes)};
    __m512 acc0[2], acc1[2], acco[2];
    for (int i = 0; i < n; i++) {
        acc0[i] = acc1[i] = acco[i] = _mm512_setzero_ps();
    }
    for (size_t k = 0; k < nsb; k++) {
        for (int i = 0; i < n; i++) {
            mv6_sb(&row[i][k], (const float *)(buf + k * MV6_SB_BYTES), xv->q + k * QK_K, ex, &acc0[i], &acc1[i],
                   &acco[i]);
        }
    }
    const size_t r[2] = {a, b};
    for (int i = 0; i < n; i++) {
        y[r[i]] = _mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(acc0[i], acc1[i]), acco[i]));
    }
}

ALWAYS_INLINE void mv6_rows(const uint8_t *W, size_t row_bytes, const act_view *xv, const uint8_t *buf, float *y,
                            size_t r0, size_t r1, size_t cols) {
    __m512i ex[4];
    for (int t = 0; t < 4; t++) {
        /* Chunk t of 64 elements: lanes 4g'..4g'+3 are group 4t + g'. */
        ex[t] = _mm512_setr_epi32(4 * t, 4 * t, 4 * t, 4 * t, 4 * t + 1, 4 * t + 1, 4 * t + 1, 4 * t + 1, 4 * t + 2,
                                  4 * t + 2, 4 * t + 2, 4 * t + 2, 4 * t + 3, 4 * t + 3, 4 * t + 3, 4 * t + 3);
    }
    const size_t h = (r1 - r0 + 1) / 2;
    for (size_t k = 0; k < h; k++) {
        const size_t a = r0 + k, b = r0 + h + k;
        if (b < r1) {
            mv6_pair(2, W, row_bytes, xv, buf, y, a, b, cols, ex);
        } else {
            mv6_pair(1, W, row_bytes, xv, buf, y, a, a, cols, ex);
        }
    }
}

/*
 * matvec of Q4_K / Q5_K with VNNI, 64 elements per 512-bit register. One 64-byte load of a super-block's quants
 * holds groups g, g + 1: its low nibbles are sub-blocks 2g and 2g + 2, its high nibbles 2g + 1 and 2g + 3. The
 * activation quants are copied once per call (mvk_prep, on the stack, 256 bytes per super-block) into that order,
 * sub-blocks 0 2 1 3 4 6 5 7, so each register meets 64 contiguous activation bytes. vpmaddubsw (pairs at most
 * 2 * 31 * 127, exact in int16) and vpdpwssd with the six-bit scales (each 256-bit half takes its sub-block's scale,
 * one vpermd from the unpacked scales) sum the super-block in int32 as k45_sb does; then one convert and one FMA
 * with d * d_x. The min term is one FMA per super-block on [0 x 8, d_x * sum of each sub-block's x quants] from
 * the prep, against the unpacked bytes [scales, mins] converted to float. Per super-block about 40 vector
 * operations against some 75 for the 256-bit k45_sb. One core, 4096 x 4096 in cache (bench_quant_matvec), on the
 * Zen 5 VM: Q4_K 26.5 -> 50.9 GB/s, Q5_K 29.6 -> 50.6. 1.5B Q4_K decode at 2 threads, alternating runs: while the
 * VM's memory read about 46 GB/s, 17.3-20.3 ms either way; in its fast phases 17.3-17.6 -> 13.2-13.9 ms (the
 * 256-bit kernel could not keep up with two cores' share of ~70 GB/s).
 */
#define MVK_SB_BYTES 320

ALWAYS_INLINE void mvk_prep(const act_view *xv, size_t nsb, uint8_t *buf) {
    /* From sub-blocks [a, a + 1] and [a + 2, a + 3]: [a, a + 2] and [a + 1, a + 3]. */
    const __m512i ilo = _mm512_setr_epi64(0, 1, 2, 3, 8, 9, 10, 11);
    const __m512i ihi = _mm512_setr_epi64(4, 5, 6, 7, 12, 13, 14, 15);
    for (size_t i = 0; i < nsb; i++) {
        uint8_t *o = buf + i * MVK_SB_BYTES;
        for (int h = 0; h < 2; h++) {
            const __m512i a = _mm512_loadu_si512((const void *)(xv->q + i * QK_K + 128 * h));
            const __m512i b = _mm512_loadu_si512((const void *)(xv->q + i * QK_K + 128 * h + 64));
            _mm512_store_si512((void *)(o + 128 * h), _mm512_permutex2var_epi64(a, ilo, b));
            _mm512_store_si512((void *)(o + 128 * h + 64), _mm512_permutex2var_epi64(a, ihi, b));
        }
        const __m512 s8 = _mm512_castps256_ps512(_mm256_loadu_ps(xv->s + i * 8));
        _mm512_store_ps((float *)(o + 256), _mm512_maskz_permutexvar_ps((__mmask16)0xFF00,
                                                                       _mm512_setr_epi32(0, 0, 0, 0, 0, 0, 0, 0, 0,
                                                                                         1, 2, 3, 4, 5, 6, 7),
                                                                       s8));
    }
}

/* One super-block of a Q4_K / Q5_K row: acc += d * d_x * its integer sum, accm += dmin * its min term. */
ALWAYS_INLINE void mvk_sb(int type, const uint8_t *blk, const uint8_t *a, float dx, const __m512i *ex, __m512 *acc,
                          __m512 *accm) {
    const __m512i m4 = _mm512_set1_epi8(0x0F);
    MV_PREFETCH(blk);
    _mm_prefetch((const char *)blk + MV_PREFETCH_BYTES + 128, _MM_HINT_T0);
    if (type == T_Q5_K) {
        _mm_prefetch((const char *)blk + MV_PREFETCH_BYTES + 192, _MM_HINT_T0);
    }
    const __m128i v = _mm_loadu_si128((const __m128i *)(const void *)blk);
    const __m512i s32 = _mm512_cvtepu8_epi32(k45_unpack_scales(v));
    /* Dword j: scale j in both 16-bit halves, for vpdpwssd (dwords 8..15, from the mins, are not used). */
    const __m512i sc2 = _mm512_or_si512(s32, _mm512_slli_epi32(s32, 16));
    const __m128 h = _mm_cvtph_ps(v); /* d, dmin, ... */
    const __m512 dmin = _mm512_broadcastss_ps(_mm_movehdup_ps(h));
    *accm = _mm512_fmadd_ps(_mm512_cvtepi32_ps(s32), _mm512_mul_ps(dmin, _mm512_load_ps((const float *)(a + 256))),
                            *accm);
    const uint8_t *qs = type == T_Q4_K ? blk + 16 : blk + 48;
    __m512i hb = _mm512_setzero_si512();
    if (type == T_Q5_K) {
        hb = _mm512_broadcast_i64x4(_mm256_loadu_si256((const __m256i *)(const void *)(blk + 16)));
    }
    __m512i sum = _mm512_setzero_si512();
#pragma GCC unroll 2
    for (int k = 0; k < 2; k++) {
        const __m512i w = _mm512_loadu_si512((const void *)(qs + 64 * k));
        __m512i lo = _mm512_and_si512(w, m4);
        __m512i hi = _mm512_and_si512(_mm512_srli_epi16(w, 4), m4);
        if (type == T_Q5_K) {
            /* Fifth bit of sub-block j is bit j of its qh byte; lo holds sub-blocks 4k, 4k + 2, hi 4k + 1, 4k + 3. */
            const __m512i m10 = _mm512_set1_epi8(0x10);
            __m512i bl;
            __m512i bh;
            if (k == 0) {
                bl = _mm512_sllv_epi64(hb, _mm512_setr_epi64(4, 4, 4, 4, 2, 2, 2, 2));
                bh = _mm512_sllv_epi64(hb, _mm512_setr_epi64(3, 3, 3, 3, 1, 1, 1, 1));
            } else {
                bl = _mm512_srlv_epi64(hb, _mm512_setr_epi64(0, 0, 0, 0, 2, 2, 2, 2));
                bh = _mm512_srlv_epi64(hb, _mm512_setr_epi64(1, 1, 1, 1, 3, 3, 3, 3));
            }
            /* 0xF8: a | (b & c). */
            lo = _mm512_ternarylogic_epi64(lo, bl, m10, 0xF8);
            hi = _mm512_ternarylogic_epi64(hi, bh, m10, 0xF8);
        }
        const __m512i pl = _mm512_maddubs_epi16(lo, _mm512_load_si512((const void *)(a + 128 * k)));
        const __m512i ph = _mm512_maddubs_epi16(hi, _mm512_load_si512((const void *)(a + 128 * k + 64)));
        sum = _mm512_dpwssd_epi32(sum, pl, _mm512_permutexvar_epi32(ex[2 * k], sc2));
        sum = _mm512_dpwssd_epi32(sum, ph, _mm512_permutexvar_epi32(ex[2 * k + 1], sc2));
    }
    *acc = _mm512_fmadd_ps(_mm512_cvtepi32_ps(sum), _mm512_set1_ps(_mm_cvtss_f32(h) * dx), *acc);
}

/* Rows a and b (n = 2) or row a alone (n = 1), super-blocks in step as in mv_pair32. */
ALWAYS_INLINE void mvk_pair(int type, int n, const uint8_t *W, size_t row_bytes, const act_view *xv,
                            const uint8_t *buf, float *y, size_t a, size_t b, size_t cols, const __m512i *ex) {
    const size_t nsb = cols / QK_K;
    const size_t bb = type_block_bytes(type);
    const uint8_t *row[2] = {W + a * row_bytes, W + b * row_bytes};
    __m512 acc[2], accm[2];
    for (int i = 0; i < n; i++) {
        acc[i] = accm[i] = _mm512_setzero_ps();
    }
    for (size_t k = 0; k < nsb; k++) {
        for (int i = 0; i < n; i++) {
            mvk_sb(type, row[i] + k * bb, buf + k * MVK_SB_BYTES, xv->d[k * 8], ex, &acc[i], &accm[i]);
        }
    }
    const size_t r[2] = {a, b};
    for (int i = 0; i < n; i++) {
        y[r[i]] = _mm512_reduce_add_ps(_mm512_sub_ps(acc[i], accm[i]));
    }
}

ALWAYS_INLINE void mvk_rows(int type, const uint8_t *W, size_t row_bytes, const act_view *xv, const uint8_t *buf,
                            float *y, size_t r0, size_t r1, size_t cols) {
    /* Scale lanes for the registers of sub-blocks [0, 2], [1, 3], [4, 6], [5, 7]. */
    __m512i ex[4];
    static const int order[4][2] = {{0, 2}, {1, 3}, {4, 6}, {5, 7}};
    for (int t = 0; t < 4; t++) {
        ex[t] = _mm512_inserti64x4(_mm512_castsi256_si512(_mm256_set1_epi32(order[t][0])),
                                   _mm256_set1_epi32(order[t][1]), 1);
    }
    const size_t h = (r1 - r0 + 1) / 2;
    for (size_t k = 0; k < h; k++) {
        const size_t a = r0 + k, b = r0 + h + k;
        if (b < r1) {
            mvk_pair(type, 2, W, row_bytes, xv, buf, y, a, b, cols, ex);
        } else {
            mvk_pair(type, 1, W, row_bytes, xv, buf, y, a, a, cols, ex);
        }
    }
}

/*
 * matvec (one vector, memory-bound decode). With VNNI the 4- and 5-bit 32-element types take mv_rows32, Q8_0
 * mv_rows8, Q4_K / Q5_K mvk_rows and Q6_K mv6_rows; without, Q6_K takes the unsigned-quant 256-bit kernel of
 * quant_x86.h (rows_q6k_mv_256) and the others its 256-bit row kernels.
 */
ALWAYS_INLINE void matvec_generic(int type, int vnni, const void *W, size_t row_bytes, const void *x, float *y,
                                  size_t r0, size_t r1, size_t cols) {
    const act_view xs[1] = {view_of(x, cols)};
    if (vnni && type == T_Q8_0 && cols >= 2 * QK && cols <= MV_MAX_COLS) {
        _Alignas(64) uint8_t buf[MV_MAX_COLS / (2 * QK) * MV8_PAIR_BYTES];
        mv8_prep(xs, cols / QK / 2, buf);
        mv_rows8((const uint8_t *)W, row_bytes, xs, buf, y, r0, r1, cols);
        return;
    }
    if (vnni && type >= T_Q4_0 && type <= T_Q5_1 && cols >= 4 * QK && cols <= MV_MAX_COLS) {
        _Alignas(64) uint8_t buf[MV_MAX_COLS / 128 * MV_QUAD_BYTES];
        const size_t nq = cols / QK / 4;
        mv_prep(type, xs, nq, buf);
        mv_rows32(type, (const uint8_t *)W, row_bytes, xs, buf, y, r0, r1, cols);
        return;
    }
    if (vnni && (type == T_Q4_K || type == T_Q5_K) && cols <= MV_MAX_COLS) {
        _Alignas(64) uint8_t buf[MV_MAX_COLS / QK_K * MVK_SB_BYTES];
        mvk_prep(xs, cols / QK_K, buf);
        mvk_rows(type, (const uint8_t *)W, row_bytes, xs, buf, y, r0, r1, cols);
        return;
    }
    if (vnni && type == T_Q6_K && cols <= MV_MAX_COLS) {
        _Alignas(64) uint8_t buf[MV_MAX_COLS / QK_K * MV6_SB_BYTES];
        mv6_prep(xs, cols / QK_K, buf);
        mv6_rows((const uint8_t *)W, row_bytes, xs, buf, y, r0, r1, cols);
        return;
    }
    if (type == T_Q6_K && cols <= Q6K_MV_MAX_COLS) {
        /* Without VNNI: the unsigned-quant 256-bit kernel of quant_x86.h. */
        int16_t p32[Q6K_MV_MAX_COLS / 2];
        q6k_mv_prep(xs, cols, p32);
        rows_q6k_mv_256((const uint8_t *)W, row_bytes, xs, p32, y, r0, r1, cols);
        return;
    }
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

/*
 * acc + block b's share of one vector's outputs, from its 16 integer block dots st (as floats), the rows' scales
 * dwb, their mins (mw, [nb][16], read only where cmin == 0), the vector's d_x and its min term min_x (cmin * s_x
 * where cmin != 0, else s_x). The scaling of both pk_tile and pk_tile_amx, so their results are the same bits.
 */
ALWAYS_INLINE __m512 pk_scale(float cmin, __m512 st, __m512 dwb, const float *mw, size_t b, float d_x, float min_x,
                              __m512 acc) {
    if (cmin != 0.0f) {
        /* m = cmin * d: d * (q . x * d_x + cmin * s_x), one vector operation fewer. */
        return _mm512_fmadd_ps(dwb, _mm512_fmadd_ps(st, _mm512_set1_ps(d_x), _mm512_set1_ps(min_x)), acc);
    }
    acc = _mm512_fmadd_ps(st, _mm512_mul_ps(dwb, _mm512_set1_ps(d_x)), acc);
    return _mm512_fmadd_ps(_mm512_load_ps(mw + b * PK_ROWS), _mm512_set1_ps(min_x), acc);
}

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
            const float min_x = cmin != 0.0f ? cmin * xs[t].s[b] : xs[t].s[b];
            acc[t] = pk_scale(cmin, _mm512_cvtepi32_ps(s[t]), dwb, mw, b, xs[t].d[b], min_x, acc[t]);
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

#if defined(RWKVC_HAVE_AMX)
/*
 * The same packed GEMM with AMX computing the integer block dots. A packed block (8 groups of 4 elements x 16 rows,
 * above) is already the layout of an AMX B tile of 8 rows x 64 bytes, so one tdpbsud of an A tile holding the
 * 32 activation quants of up to 16 vectors (rows PK_AMX_NV apart by x_stride, straight from the prepared
 * activations) gives each vector's 16 int32 block dots: the s[t] of pk_tile, exact, for 16 vectors at once
 * instead of 8 vpdpbusd per vector. The dots leave through a 1 KB tile store and go through pk_tile's scaling
 * unchanged, in the same order, so the result is bit-identical to pk_tile's.
 */
#define PK_AMX_NV 16

/*
 * Tiles: per block in flight (PK_AMX_PAIR = 2 at once, so one block's tile work overlaps the other's), the dots
 * (nv rows x 16 int32: tiles 0, 3), the activations (nv rows x 32 bytes: 1, 4) and the packed block (8 x 64: 2, 5).
 */
static void amx_configure(int nv) {
    rwkvc_amx_tile_config c;
    memset(&c, 0, sizeof(c));
    c.palette = 1;
    for (int i = 0; i < 6; i += 3) {
        c.rows[i] = (uint8_t)nv;
        c.colsb[i] = 64;
        c.rows[i + 1] = (uint8_t)nv;
        c.colsb[i + 1] = QK;
        c.rows[i + 2] = QK / 4;
        c.colsb[i + 2] = 64;
    }
    _tile_loadconfig(&c);
}

/* pk_tile's scaling (pk_scale) of block b's dots (nv rows of 16 int32). */
ALWAYS_INLINE void amx_scale_block(float cmin, int nv, const int32_t *dots, const float *dw, const float *mw,
                                   const float *dx, const float *sx, size_t b, __m512 *acc) {
    const __m512 dwb = _mm512_load_ps(dw + b * PK_ROWS);
    const float *dxb = dx + b * PK_AMX_NV;
    const float *sxb = sx + b * PK_AMX_NV;
    for (int t = 0; t < nv; t++) {
        const __m512 st = _mm512_cvtepi32_ps(_mm512_load_si512((const void *)(dots + 16 * t)));
        acc[t] = pk_scale(cmin, st, dwb, mw, b, dxb[t], sxb[t], acc[t]);
    }
}

/*
 * Y[t][r + i] for t < nv (the configured tile rows), i < 16 (masked). q0: vector 0's activation quants, the others
 * x_stride bytes apart; dx / sx: [nb][PK_AMX_NV] activation scales d_x and min terms (cmin * s_x where cmin != 0,
 * else s_x) of the nv vectors, block-major, so each is one broadcast from memory.
 */
ALWAYS_INLINE void pk_tile_amx(float cmin, int nv, const uint8_t *wq, const float *dw, const float *mw, size_t nb,
                               const int8_t *q0, size_t x_stride, const float *dx, const float *sx, float *Y,
                               size_t ldy, size_t r, __mmask16 mask) {
    __m512 acc[PK_AMX_NV];
    int32_t dots[2][PK_AMX_NV * 16] __attribute__((aligned(64)));
    for (int t = 0; t < nv; t++) {
        acc[t] = _mm512_setzero_ps();
    }
    size_t b = 0;
    for (; b + 2 <= nb; b += 2) {
        _tile_zero(0);
        _tile_zero(3);
        _tile_loadd(1, q0 + b * QK, x_stride);
        _tile_loadd(2, wq + b * QK * PK_ROWS, 64);
        _tile_loadd(4, q0 + (b + 1) * QK, x_stride);
        _tile_loadd(5, wq + (b + 1) * QK * PK_ROWS, 64);
        _tile_dpbsud(0, 1, 2);
        _tile_dpbsud(3, 4, 5);
        _tile_stored(0, dots[0], 64);
        _tile_stored(3, dots[1], 64);
        amx_scale_block(cmin, nv, dots[0], dw, mw, dx, sx, b, acc);
        amx_scale_block(cmin, nv, dots[1], dw, mw, dx, sx, b + 1, acc);
    }
    if (b < nb) {
        _tile_zero(0);
        _tile_loadd(1, q0 + b * QK, x_stride);
        _tile_loadd(2, wq + b * QK * PK_ROWS, 64);
        _tile_dpbsud(0, 1, 2);
        _tile_stored(0, dots[0], 64);
        amx_scale_block(cmin, nv, dots[0], dw, mw, dx, sx, b, acc);
    }
    for (int t = 0; t < nv; t++) {
        _mm512_mask_storeu_ps(Y + t * ldy + r, mask, acc[t]);
    }
}

static inline int use_amx(void) {
    return rwkvc_cpu_features()->amx_int8 && !rwkvc_quant_disable_amx;
}
#endif

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
#if defined(RWKVC_HAVE_AMX)
    /* The vectors' scales, block-major per group of PK_AMX_NV vectors: [group][dx, sx][nb][PK_AMX_NV]. */
    float *scales = NULL;
    int amx = use_amx();
    int configured = 0;
    if (amx) {
        const size_t groups = (n_vec + PK_AMX_NV - 1) / PK_AMX_NV;
        scales = malloc(groups * 2 * nb * PK_AMX_NV * sizeof(float));
        amx = scales != NULL;
        for (size_t t = 0; amx && t < n_vec; t++) {
            const act_view xv = view_of((const char *)X + t * x_stride, cols);
            float *dx = scales + (t / PK_AMX_NV) * 2 * nb * PK_AMX_NV + t % PK_AMX_NV;
            float *sx = dx + nb * PK_AMX_NV;
            for (size_t b = 0; b < nb; b++) {
                dx[b * PK_AMX_NV] = xv.d[b];
                sx[b * PK_AMX_NV] = cmin != 0.0f ? cmin * xv.s[b] : xv.s[b];
            }
        }
    }
#endif
    for (size_t rb = r0; rb < r1; rb += ntiles * PK_ROWS) {
        size_t nt = 0;
        for (size_t r = rb; r < r1 && nt < ntiles; r += PK_ROWS, nt++) {
            const size_t nr = r1 - r < PK_ROWS ? r1 - r : PK_ROWS;
            pk_pack(type, (const uint8_t *)W, row_bytes, r, nr, cols, pb[nt].wq, pb[nt].dw, pb[nt].mw, pb[nt].tmp);
        }
#if defined(RWKVC_HAVE_AMX)
        if (amx) {
            for (size_t t = 0; t < n_vec; t += PK_AMX_NV) {
                const size_t nv = n_vec - t < PK_AMX_NV ? n_vec - t : PK_AMX_NV;
                if ((int)nv != configured) {
                    amx_configure((int)nv);
                    configured = (int)nv;
                }
                const int8_t *q0 = view_of((const char *)X + t * x_stride, cols).q;
                const float *dx = scales + (t / PK_AMX_NV) * 2 * nb * PK_AMX_NV;
                const float *sx = dx + nb * PK_AMX_NV;
                for (size_t k = 0; k < nt; k++) {
                    const size_t r = rb + k * PK_ROWS;
                    const size_t nr = r1 - r < PK_ROWS ? r1 - r : PK_ROWS;
                    const __mmask16 mask = (__mmask16)((1u << nr) - 1u);
                    if (nv == PK_AMX_NV) {
                        pk_tile_amx(cmin, PK_AMX_NV, pb[k].wq, pb[k].dw, pb[k].mw, nb, q0, x_stride, dx, sx,
                                    Y + t * ldy, ldy, r, mask);
                    } else {
                        pk_tile_amx(cmin, (int)nv, pb[k].wq, pb[k].dw, pb[k].mw, nb, q0, x_stride, dx, sx,
                                    Y + t * ldy, ldy, r, mask);
                    }
                }
            }
            continue;
        }
#endif
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
#if defined(RWKVC_HAVE_AMX)
    if (configured) {
        /* Leave the tile state clean, so context switches of this thread save no tile data. */
        _tile_release();
    }
    free(scales);
#endif
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
#define DEFINE_AVX512(name, tid, prepare, group)                                                                  \
    static void matvec_##name(const void *W, size_t row_bytes, const void *x, float *y, size_t r0, size_t r1,     \
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
    static const rwkvc_matmul_kernels kernels_##name = {act_bytes_avx512, prepare, matvec_##name,                 \
                                                        matmat_##name, NULL, NULL, NULL, group};

DEFINE_AVX512(q8_0, T_Q8_0, q8act_prepare_x86, 32)
DEFINE_AVX512(q4_0, T_Q4_0, q8act_prepare_x86, 32)
DEFINE_AVX512(q4_1, T_Q4_1, q8act_prepare_x86, 32)
DEFINE_AVX512(q5_0, T_Q5_0, q8act_prepare_x86, 32)
DEFINE_AVX512(q5_1, T_Q5_1, q8act_prepare_x86, 32)
DEFINE_AVX512(q4_K, T_Q4_K, q8act_prepare_sb_x86, 256)
DEFINE_AVX512(q5_K, T_Q5_K, q8act_prepare_sb_x86, 256)
DEFINE_AVX512(q6_K, T_Q6_K, q8act_prepare_x86, 32)

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
