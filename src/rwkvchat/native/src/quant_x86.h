/*
 * quant_x86.h: helpers shared by the AVX2 and AVX-512 quantized kernels (static inline; each including file is
 * compiled with its own ISA flags, so every copy uses the instructions of its file).
 */
#ifndef RWKVC_QUANT_X86_H
#define RWKVC_QUANT_X86_H

#include <immintrin.h>
#include <stdlib.h>
#include <string.h>

#include "quant.h"

#define QK RWKVC_QK
#define QK_K RWKVC_QK_K
#define ALWAYS_INLINE static inline __attribute__((always_inline))

/*
 * Software prefetch distance for the weight stream, in bytes ahead of the block being read. Decode is a pure
 * sequential read from DRAM; without it, each thread alternates between waiting for memory and computing (measured
 * 1 thread from DRAM: 5.6 GB/s against 11 GB/s from cache and 10 GB/s of plain reading), with it the two overlap.
 * Two settings, chosen per kernel by measurement (2 threads, 1 GiB matrices, median of 9 back-to-back pairs
 * against a plain read): PREFETCH into L1 2 KB ahead suits the 256-bit kernels of the 4- and 5-bit 32-element
 * types (AVX2 Q4_0 0.83-0.85, Q5_1 0.79-0.83, against 0.76-0.80 / 0.70-0.75 with the other) and the K-quants
 * (no difference measured); PREFETCH_FAR into L2 (hint T2) 8 KB ahead suits Q8_0 (0.83-0.87 -> 0.95-0.98) and the
 * faster kernels (Q6_K, the 512-bit ones), where L1 prefetches that far ahead hold the line fill buffers that
 * demand loads need.
 */
#define PREFETCH_BYTES 2048
#define PREFETCH(p) _mm_prefetch((const char *)(p) + PREFETCH_BYTES, _MM_HINT_T0)
#define PREFETCH_FAR_BYTES 8192
#define PREFETCH_FAR(p) _mm_prefetch((const char *)(p) + PREFETCH_FAR_BYTES, _MM_HINT_T2)

/* Row tile for matmat: 16 rows of a 4096-column Q8_0 matrix are 70 KB, about an L2 slice. */
#define ROW_TILE 16
#define MAX_NV 4

enum { T_Q8_0, T_Q4_0, T_Q4_1, T_Q5_0, T_Q5_1, T_Q4_K, T_Q5_K, T_Q6_K };

ALWAYS_INLINE float h2f(const void *p) {
    uint16_t h;
    memcpy(&h, p, 2);
    return _cvtsh_ss(h);
}

ALWAYS_INLINE float hsum8(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

/* 16 bytes of packed nibbles -> 32 bytes: low nibbles (elements 0..15) then high nibbles (16..31). */
ALWAYS_INLINE __m256i nibbles32(const uint8_t *p) {
    const __m128i t = _mm_loadu_si128((const __m128i *)p);
    const __m256i v = _mm256_set_m128i(_mm_srli_epi16(t, 4), t);
    return _mm256_and_si256(v, _mm256_set1_epi8(0x0F));
}

ALWAYS_INLINE uint32_t load_u32(const uint8_t *p) {
    uint32_t v;
    memcpy(&v, p, 4);
    return v;
}

/* 32 bits -> 32 bytes, byte j = 0xFF if bit j of x is set. */
ALWAYS_INLINE __m256i bits32(uint32_t x) {
    const __m256i shuf = _mm256_set_epi64x(0x0303030303030303LL, 0x0202020202020202LL, 0x0101010101010101LL, 0);
    __m256i v = _mm256_shuffle_epi8(_mm256_set1_epi32((int)x), shuf);
    v = _mm256_or_si256(v, _mm256_set1_epi64x(0x7FBFDFEFF7FBFDFELL));
    return _mm256_cmpeq_epi8(v, _mm256_set1_epi64x(-1));
}

/*
 * Decodes one 32-element block into its byte quants, the scale d and the min m, so that value = d * q + m: Q8_0
 * gives signed quants and m = 0; the 4- and 5-bit types give unsigned quants (0..15 / 0..31), with m = -8 d or
 * -16 d for Q4_0 / Q5_0. Unsigned quants go straight into vpmaddubsw / vpdpbusd; the min term uses s = d_x * sum(x).
 */
ALWAYS_INLINE __m256i decode32(int type, const uint8_t *b, float *d, float *m) {
    switch (type) {
    case T_Q8_0:
        *d = h2f(b);
        *m = 0.0f;
        return _mm256_loadu_si256((const __m256i *)(b + 2));
    case T_Q4_0:
        /* d * (q - 8) = d * q + (-8 d): unsigned quants with a min, which skips the sign trick. */
        *d = h2f(b);
        *m = -8.0f * *d;
        return nibbles32(b + 2);
    case T_Q4_1:
        *d = h2f(b);
        *m = h2f(b + 2);
        return nibbles32(b + 4);
    case T_Q5_0: {
        /* As Q4_0: d * (q - 16) = d * q + (-16 d). */
        *d = h2f(b);
        *m = -16.0f * *d;
        const __m256i hi = _mm256_and_si256(bits32(load_u32(b + 2)), _mm256_set1_epi8(0x10));
        return _mm256_or_si256(nibbles32(b + 6), hi);
    }
    default: /* T_Q5_1 */ {
        *d = h2f(b);
        *m = h2f(b + 2);
        const __m256i hi = _mm256_and_si256(bits32(load_u32(b + 4)), _mm256_set1_epi8(0x10));
        return _mm256_or_si256(nibbles32(b + 8), hi);
    }
    }
}

ALWAYS_INLINE int type_is_signed(int type) {
    return type == T_Q8_0;
}

ALWAYS_INLINE int type_has_min(int type) {
    return type == T_Q4_0 || type == T_Q4_1 || type == T_Q5_0 || type == T_Q5_1;
}

ALWAYS_INLINE size_t type_block_bytes(int type) {
    switch (type) {
    case T_Q8_0:
        return sizeof(rwkvc_block_q8_0);
    case T_Q4_0:
        return sizeof(rwkvc_block_q4_0);
    case T_Q4_1:
        return sizeof(rwkvc_block_q4_1);
    case T_Q5_0:
        return sizeof(rwkvc_block_q5_0);
    case T_Q5_1:
        return sizeof(rwkvc_block_q5_1);
    case T_Q4_K:
        return sizeof(rwkvc_block_q4_K);
    case T_Q5_K:
        return sizeof(rwkvc_block_q5_K);
    default:
        return sizeof(rwkvc_block_q6_K);
    }
}

/* Activation views of up to MAX_NV vectors. */
typedef struct {
    const float *d;
    const float *s;
    const int8_t *q;
} act_view;

ALWAYS_INLINE act_view view_of(const void *xq, size_t cols) {
    act_view v = {rwkvc_q8act_d(xq), rwkvc_q8act_s(xq, cols), rwkvc_q8act_qs(xq, cols)};
    return v;
}

/* ---- 256-bit row kernels (AVX2; with vnni = 1 they use AVX512-VNNI vpdpbusd on 256-bit registers) ---- */

/* Integer dot of 32 unsigned weight bytes with 32 signed activation bytes, as 8 int32 partial sums. */
ALWAYS_INLINE __m256i dot_u8s8(int vnni, __m256i wu, __m256i x) {
#if defined(__AVX512VNNI__) && defined(__AVX512VL__)
    if (vnni) {
        return _mm256_dpbusd_epi32(_mm256_setzero_si256(), wu, x);
    }
#endif
    (void)vnni;
    return _mm256_madd_epi16(_mm256_maddubs_epi16(wu, x), _mm256_set1_epi16(1));
}

/* One 32-element weight block against nv activation blocks, accumulated into acc / accm. */
ALWAYS_INLINE void step32_256(int type, int nv, int vnni, const uint8_t *blk, size_t b, const act_view *xs,
                              __m256 *acc, float *accm) {
    float d;
    float m;
    const __m256i q = decode32(type, blk, &d, &m);
    const __m256i aq = type_is_signed(type) ? _mm256_sign_epi8(q, q) : q;
    for (int t = 0; t < nv; t++) {
        __m256i x = _mm256_loadu_si256((const __m256i *)(xs[t].q + b * QK));
        if (type_is_signed(type)) {
            x = _mm256_sign_epi8(x, q);
        }
        const __m256 p = _mm256_cvtepi32_ps(dot_u8s8(vnni, aq, x));
        acc[t] = _mm256_fmadd_ps(_mm256_set1_ps(d * xs[t].d[b]), p, acc[t]);
        if (type_has_min(type)) {
            accm[t] += m * xs[t].s[b];
        }
    }
}

/*
 * Scales of 8 consecutive 32-element blocks as 8-float vectors d and m (value = d * q + m, as decode32), instead
 * of 8 scalar conversions, multiplies and broadcasts. The f16 headers are packed by scalar loads, shifts and ors
 * (the integer units are otherwise idle in these kernels) into 64-bit words that become one vector by two moves.
 * A gather (vpgatherdd) did this before: in a one-block-per-register draft of mv32x2_rows (AVX2 Q4_0, Zen 5) it cost
 * about 30% (1 thread, 1024 x 4096 from L2: 20.8 GB/s with it, 29.0 with constant scales, 24.3 with these loads;
 * Q4_1's d and m: 26.2 with it, 30.0 with these), and gathers are slow on Intel CPUs with the Gather Data
 * Sampling microcode too.
 */
ALWAYS_INLINE __m128i pack8_u16(const uint8_t *p, size_t stride) {
    uint64_t w[2];
    for (int h = 0; h < 2; h++) {
        w[h] = 0;
        for (int k = 0; k < 4; k++) {
            /* A 32-bit load and a mask: 16-bit loads measured 12% slower here (GCC 12). */
            w[h] |= (uint64_t)(load_u32(p + (size_t)(4 * h + k) * stride) & 0xFFFF) << (16 * k);
        }
    }
    return _mm_set_epi64x((long long)w[1], (long long)w[0]);
}

ALWAYS_INLINE void scales8(int type, const uint8_t *blk0, __m256 *d, __m256 *m) {
    const size_t bb = type_block_bytes(type);
    if (type == T_Q4_1 || type == T_Q5_1) {
        /* Headers d | m << 16 two by two into 64-bit words, then the d and the m halves apart by one pack each. */
        uint64_t w[4];
        for (int i = 0; i < 4; i++) {
            w[i] = load_u32(blk0 + (size_t)(2 * i) * bb) | (uint64_t)load_u32(blk0 + (size_t)(2 * i + 1) * bb) << 32;
        }
        const __m128i h0 = _mm_set_epi64x((long long)w[1], (long long)w[0]);
        const __m128i h1 = _mm_set_epi64x((long long)w[3], (long long)w[2]);
        const __m128i lo = _mm_set1_epi32(0xFFFF);
        *d = _mm256_cvtph_ps(_mm_packus_epi32(_mm_and_si128(h0, lo), _mm_and_si128(h1, lo)));
        *m = _mm256_cvtph_ps(_mm_packus_epi32(_mm_srli_epi32(h0, 16), _mm_srli_epi32(h1, 16)));
        return;
    }
    *d = _mm256_cvtph_ps(pack8_u16(blk0, bb));
    if (type == T_Q4_0) {
        *m = _mm256_mul_ps(*d, _mm256_set1_ps(-8.0f));
    } else if (type == T_Q5_0) {
        *m = _mm256_mul_ps(*d, _mm256_set1_ps(-16.0f));
    } else {
        *m = _mm256_setzero_ps();
    }
}

/*
 * The k-th row of [r0, r1) in the order the row kernels visit them: r0, r0 + h, r0 + 1, r0 + h + 1, ... with h half
 * the rows, rounded up. Reading two regions of the matrix at once keeps more memory requests in flight than one
 * sequential stream: decode at 2 threads, alternating runs, 0.4B Q4_0 10.5-10.8 -> 10.1-10.2 ms, 0.4B Q4_K
 * 11.2-11.6 -> 9.6-9.8 ms. Two adjacent rows at a time (one stream) was slower. A row's result does not depend
 * on when it is computed. Whole rows in turn leave one region idle for most of a row once rows are much longer
 * than the prefetch distance: the 512-bit kernels (quant_avx512.c), rows32_256 and rows_k45_256 take the two
 * rows with their blocks in step instead.
 */
ALWAYS_INLINE size_t row_at(size_t r0, size_t r1, size_t k) {
    const size_t h = (r1 - r0 + 1) / 2;
    return r0 + ((k & 1) ? h + k / 2 : k / 2);
}

/* Blocks b..b+7 of one row (a group, see rows32_256) against nv activations. */
ALWAYS_INLINE void r32_group8(int type, int nv, int vnni, const uint8_t *row, size_t b, const act_view *xs,
                              __m256 *acc0, __m256 *acc1, __m256 *accv) {
    const size_t bb = type_block_bytes(type);
    const int sgn = type_is_signed(type);
    const int has_min = type_has_min(type);
    const uint8_t *blk = row + b * bb;
    for (size_t o = 0; o < 8 * bb; o += 64) {
        PREFETCH(blk + o);
    }
    __m256 dv;
    __m256 mv;
    scales8(type, blk, &dv, &mv);
    float cs[MAX_NV][8];
    for (int t = 0; t < nv; t++) {
        _mm256_storeu_ps(cs[t], _mm256_mul_ps(dv, _mm256_loadu_ps(xs[t].d + b)));
        if (has_min) {
            accv[t] = _mm256_fmadd_ps(mv, _mm256_loadu_ps(xs[t].s + b), accv[t]);
        }
    }
#pragma GCC unroll 8
    for (int j = 0; j < 8; j++) {
        float dd;
        float mm;
        const __m256i q = decode32(type, blk + j * bb, &dd, &mm);
        const __m256i aq = sgn ? _mm256_sign_epi8(q, q) : q;
        for (int t = 0; t < nv; t++) {
            __m256i x = _mm256_loadu_si256((const __m256i *)(xs[t].q + (b + j) * QK));
            if (sgn) {
                x = _mm256_sign_epi8(x, q);
            }
            const __m256 p = _mm256_cvtepi32_ps(dot_u8s8(vnni, aq, x));
            if (j & 1) {
                acc1[t] = _mm256_fmadd_ps(_mm256_broadcast_ss(&cs[t][j]), p, acc1[t]);
            } else {
                acc0[t] = _mm256_fmadd_ps(_mm256_broadcast_ss(&cs[t][j]), p, acc0[t]);
            }
        }
    }
}

/* Blocks b, b + 1 of one row against nv activations. */
ALWAYS_INLINE void r32_pair(int type, int nv, int vnni, const uint8_t *row, size_t b, const act_view *xs,
                            __m256 *acc0, __m256 *acc1, float *accm0, float *accm1) {
    const size_t bb = type_block_bytes(type);
    if (type == T_Q8_0) {
        PREFETCH_FAR(row + b * bb);
        PREFETCH_FAR(row + b * bb + 64);
    } else {
        PREFETCH(row + b * bb);
        if (bb * 2 > 64) {
            PREFETCH(row + b * bb + 64);
        }
    }
    step32_256(type, nv, vnni, row + b * bb, b, xs, acc0, accm0);
    step32_256(type, nv, vnni, row + (b + 1) * bb, b + 1, xs, acc1, accm1);
}

/*
 * n_rows rows (1, or 2 with their blocks in step) against nv activations.
 * Blocks go in groups of 8 whose scales are computed as vectors (scales8; the per-block products d * d_x are
 * broadcast back from a small stack array, a load rather than a shuffle), into two accumulator sets so the FMA
 * latency chain does not limit a single-vector matvec; the min term is one 8-wide FMA per group. Q8_0 and the
 * last nb % 8 blocks take the per-block path.
 */
ALWAYS_INLINE void r32_rows(int type, int n_rows, int nv, int vnni, const uint8_t *W, size_t row_bytes,
                            const act_view *xs, float *Y, size_t ldy, size_t a, size_t b2, size_t cols) {
    const size_t nb = cols / QK;
    const uint8_t *row[2] = {W + a * row_bytes, W + b2 * row_bytes};
    __m256 acc0[2][MAX_NV];
    __m256 acc1[2][MAX_NV];
    __m256 accv[2][MAX_NV];
    float accm0[2][MAX_NV];
    float accm1[2][MAX_NV];
    for (int k = 0; k < n_rows; k++) {
        for (int t = 0; t < nv; t++) {
            acc0[k][t] = acc1[k][t] = accv[k][t] = _mm256_setzero_ps();
            accm0[k][t] = accm1[k][t] = 0.0f;
        }
    }
    size_t b = 0;
    /* Q8_0 reads twice the bytes per block and measured faster per block (its scalar work is hidden). */
    for (; type != T_Q8_0 && b + 8 <= nb; b += 8) {
        for (int k = 0; k < n_rows; k++) {
            r32_group8(type, nv, vnni, row[k], b, xs, acc0[k], acc1[k], accv[k]);
        }
    }
    for (; b + 2 <= nb; b += 2) {
        for (int k = 0; k < n_rows; k++) {
            r32_pair(type, nv, vnni, row[k], b, xs, acc0[k], acc1[k], accm0[k], accm1[k]);
        }
    }
    const size_t r[2] = {a, b2};
    for (int k = 0; k < n_rows; k++) {
        if (b < nb) {
            step32_256(type, nv, vnni, row[k] + b * type_block_bytes(type), b, xs, acc0[k], accm0[k]);
        }
        for (int t = 0; t < nv; t++) {
            Y[t * ldy + r[k]] = hsum8(_mm256_add_ps(acc0[k][t], acc1[k][t])) +
                                (hsum8(accv[k][t]) + (accm0[k][t] + accm1[k][t]));
        }
    }
}

/* Bytes of a 4- or 5-bit block before its packed nibbles. */
ALWAYS_INLINE size_t nibble_offset(int type) {
    return type == T_Q4_0 ? 2 : type == T_Q4_1 ? 4 : type == T_Q5_0 ? 6 : 8;
}

/*
 * The activation quants of a matvec in the order mv32x2_rows reads them: per two blocks (64 bytes), elements 0..15
 * of both blocks, then elements 16..31 of both. out holds nb / 2 * 64 bytes.
 */
ALWAYS_INLINE void mv32x2_prep(const int8_t *q, size_t nb, int8_t *out) {
    for (size_t i = 0; i + 2 <= nb; i += 2) {
        const __m256i a = _mm256_loadu_si256((const __m256i *)(const void *)(q + i * QK));
        const __m256i b = _mm256_loadu_si256((const __m256i *)(const void *)(q + i * QK + QK));
        _mm256_storeu_si256((__m256i *)(void *)(out + i * QK), _mm256_permute2x128_si256(a, b, 0x20));
        _mm256_storeu_si256((__m256i *)(void *)(out + i * QK + 32), _mm256_permute2x128_si256(a, b, 0x31));
    }
}

/*
 * Integer dots of two consecutive blocks (at p and p + bb) with the activation pair x2 (mv32x2_prep's order), as
 * 8 int32 lanes: lanes 0..3 sum to block 0's dot, lanes 4..7 to block 1's. One 256-bit register holds both blocks'
 * 16 nibble bytes, so the low nibbles (elements 0..15 of each) and the high ones (16..31) come out by an and and
 * a shift with no lane-crossing shuffle; the two vpmaddubsw results are added in int16 (at most 4 * 31 * 127 =
 * 15748) before one vpmaddwd.
 */
ALWAYS_INLINE __m256i dot2_blocks(int type, const uint8_t *p, size_t bb, const int8_t *x2) {
    const size_t o = nibble_offset(type);
    const __m256i m4 = _mm256_set1_epi8(0x0F);
    const __m256i v = _mm256_inserti128_si256(
        _mm256_castsi128_si256(_mm_loadu_si128((const __m128i *)(const void *)(p + o))),
        _mm_loadu_si128((const __m128i *)(const void *)(p + bb + o)), 1);
    __m256i lo = _mm256_and_si256(v, m4);
    __m256i hi = _mm256_and_si256(_mm256_srli_epi16(v, 4), m4);
    if (type == T_Q5_0 || type == T_Q5_1) {
        const size_t ho = type == T_Q5_0 ? 2 : 4;
        const uint32_t h0 = load_u32(p + ho), h1 = load_u32(p + bb + ho);
        const __m256i five = _mm256_set1_epi8(0x10);
        lo = _mm256_or_si256(lo, _mm256_and_si256(bits32((h0 & 0xFFFF) | (h1 << 16)), five));
        hi = _mm256_or_si256(hi, _mm256_and_si256(bits32((h0 >> 16) | (h1 & 0xFFFF0000u)), five));
    }
    const __m256i xa = _mm256_loadu_si256((const __m256i *)(const void *)x2);
    const __m256i xb = _mm256_loadu_si256((const __m256i *)(const void *)(x2 + 32));
    const __m256i s = _mm256_add_epi16(_mm256_maddubs_epi16(lo, xa), _mm256_maddubs_epi16(hi, xb));
    return _mm256_madd_epi16(s, _mm256_set1_epi16(1));
}

/*
 * One vector against n_rows rows (1, or 2 with their blocks in step) of a 4- or 5-bit type, in groups of 8 blocks:
 * four dot2_blocks, horizontal adds that leave block k's exact dot in lane perm(k) = 0 2 4 6 1 3 5 7 order, then
 * one convert and one FMA with the 8 scales d * d_x in the same order; the min term is one FMA per group. The
 * last nb % 8 blocks take step32_256. x2 is the activation in mv32x2_prep's order.
 */
ALWAYS_INLINE void mv32x2_rows(int type, int n_rows, const uint8_t *W, size_t row_bytes, const act_view *xv,
                               const int8_t *x2, float *y, size_t a, size_t b2, size_t cols) {
    const size_t nb = cols / QK, bb = type_block_bytes(type);
    const uint8_t *row[2] = {W + a * row_bytes, W + b2 * row_bytes};
    const __m256i order = _mm256_setr_epi32(0, 2, 4, 6, 1, 3, 5, 7);
    __m256 acc[2], accv[2];
    float accm[2];
    for (int k = 0; k < n_rows; k++) {
        acc[k] = accv[k] = _mm256_setzero_ps();
        accm[k] = 0.0f;
    }
    size_t b = 0;
    for (; b + 8 <= nb; b += 8) {
        for (int k = 0; k < n_rows; k++) {
            const uint8_t *blk = row[k] + b * bb;
            for (size_t o = 0; o < 8 * bb; o += 64) {
                PREFETCH(blk + o);
            }
            __m256i p[4];
#pragma GCC unroll 4
            for (int j = 0; j < 4; j++) {
                p[j] = dot2_blocks(type, blk + 2 * j * bb, bb, x2 + (b + 2 * j) * QK);
            }
            const __m256i sums = _mm256_hadd_epi32(_mm256_hadd_epi32(p[0], p[1]), _mm256_hadd_epi32(p[2], p[3]));
            __m256 dv, mv;
            scales8(type, blk, &dv, &mv);
            const __m256 cs = _mm256_permutevar8x32_ps(_mm256_mul_ps(dv, _mm256_loadu_ps(xv->d + b)), order);
            acc[k] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(sums), cs, acc[k]);
            accv[k] = _mm256_fmadd_ps(mv, _mm256_loadu_ps(xv->s + b), accv[k]);
        }
    }
    const size_t r[2] = {a, b2};
    for (int k = 0; k < n_rows; k++) {
        __m256 acc1 = _mm256_setzero_ps();
        for (size_t t = b; t < nb; t++) {
            step32_256(type, 1, 0, row[k] + t * bb, t, xv, &acc1, &accm[k]);
        }
        y[r[k]] = hsum8(_mm256_add_ps(acc[k], acc1)) + (hsum8(accv[k]) + accm[k]);
    }
}

/* Largest row (columns) mv32x2_rows takes: its reordered activation lives on the stack. */
#define MV32X2_MAX_COLS 16384

/*
 * Whether rows32_256 takes mv32x2_rows for a single vector: in the AVX2 build only. The AVX-512 build decodes
 * with its 512-bit kernels and reaches rows32_256 only for sequence-mode remainders (1-3 vectors), where a new
 * summation order would gain nothing and would move its results: with quantized activations a last-bit change
 * can flip an activation's rounding, and rwkv.cpp's tiny 6v0-3m Q5_0 model then moved its three-token logits by
 * up to 0.03 (a sum of differences past test_rwkvcpp_native's bound).
 */
#if defined(__AVX512F__)
#define MV32X2_ON 0
#else
#define MV32X2_ON 1
#endif

/*
 * Y[t][r] for t < nv over rows [r0, r1) for the 32-element types. type and nv are compile-time constants after
 * inlining, so each (type, nv) pair becomes a branch-free loop. A single vector's rows go in pairs from the two
 * halves of the range, blocks in step; for the 4- and 5-bit types through mv32x2_rows (AVX2, 1 thread, 1024 x
 * 4096 from L2, GB/s: Q4_0 20.8 -> 35.8, Q4_1 22.0 -> 29.3, Q5_0 13.1 -> 21.1, Q5_1 14.6 -> 21.9; 0.4B decode
 * with RWKVC_ISA=avx2, 2 threads, blocks alternating in one process: Q4_0 7.42 -> 5.85 ms, Q5_1 10.67 -> 8.23).
 * Pairs against whole rows in turn (row_at), RWKVC_ISA=avx2, 2 threads, 1 GiB matrices, ratio to a plain read at
 * 1024 / 2048 / 8192 columns (before mv32x2_rows): Q8_0 0.92-0.95 / 0.94-0.95 / 0.78 -> 0.98-1.00 / 1.00 / 0.90,
 * Q4_0 0.84 / 0.85 / 0.78 -> 0.85-0.89 / 0.83 / 0.84-0.89, Q5_1 0.77-0.79 / 0.76 / 0.73 -> 0.83 / 0.73-0.76 / 0.80.
 */
ALWAYS_INLINE void rows32_256(int type, int nv, int vnni, const uint8_t *W, size_t row_bytes, const act_view *xs,
                              float *Y, size_t ldy, size_t r0, size_t r1, size_t cols) {
    if (nv > 1) {
        for (size_t r = r0; r < r1; r++) {
            r32_rows(type, 1, nv, vnni, W, row_bytes, xs, Y, ldy, r, r, cols);
        }
        return;
    }
    const size_t h = (r1 - r0 + 1) / 2;
    if (MV32X2_ON && type != T_Q8_0 && cols <= MV32X2_MAX_COLS) {
        _Alignas(32) int8_t x2[MV32X2_MAX_COLS];
        mv32x2_prep(xs->q, cols / QK, x2);
        for (size_t k = 0; k < h; k++) {
            const size_t a = r0 + k, b = r0 + h + k;
            mv32x2_rows(type, b < r1 ? 2 : 1, W, row_bytes, xs, x2, Y, a, b, cols);
        }
        return;
    }
    for (size_t k = 0; k < h; k++) {
        const size_t a = r0 + k, b = r0 + h + k;
        if (b < r1) {
            r32_rows(type, 2, 1, vnni, W, row_bytes, xs, Y, ldy, a, b, cols);
        } else {
            r32_rows(type, 1, 1, vnni, W, row_bytes, xs, Y, ldy, a, a, cols);
        }
    }
}

/*
 * The 8 six-bit scales and mins of a Q4_K / Q5_K block as 8-float vectors d * sc and dmin * mn, unpacked with
 * ggml's 32-bit mask trick (bytes 0..7 of u become the scales, bytes 8..15 the mins) instead of 8 branchy scalar
 * extractions (rwkvc_k4_scale_min): decode of these types was dominated by that scalar work. The products are
 * the same floats d * (float)sc, dmin * (float)mn.
 */
ALWAYS_INLINE void k4_scales_vec(const uint8_t *blk, __m256 *dsc, __m256 *dmn) {
    uint32_t u[4];
    memcpy(u, blk + 4, 12);
    const uint32_t k1 = 0x3f3f3f3fu;
    const uint32_t k2 = 0x0f0f0f0fu;
    const uint32_t k3 = 0x03030303u;
    u[3] = ((u[2] >> 4) & k2) | (((u[1] >> 6) & k3) << 4);
    const uint32_t mins_lo = u[1] & k1;
    u[1] = (u[2] & k2) | (((u[0] >> 6) & k3) << 4);
    u[2] = mins_lo;
    u[0] &= k1;
    const __m128i v = _mm_loadu_si128((const __m128i *)u);
    *dsc = _mm256_mul_ps(_mm256_set1_ps(h2f(blk)), _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(v)));
    *dmn = _mm256_mul_ps(_mm256_set1_ps(h2f(blk + 2)), _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_srli_si128(v, 8))));
}

/*
 * The six-bit scales and mins (rwkvc_k4_scale_min) of a Q4_K / Q5_K block (its first 16 bytes in v) unpacked in one
 * register: bytes 0..7 the scales, 8..15 the mins. Bytes 4..15 of the block are the packed bytes q0..q11. a = [q0-3,
 * q8-11, q4-7, q8-11 >> 4] masked to [sc0-3, low nibbles of sc4-7, mn0-3, low nibbles of mn4-7]; b supplies the top
 * two bits of sc4-7 (from q0-3) and mn4-7 (from q4-7).
 */
ALWAYS_INLINE __m128i k45_unpack_scales(__m128i v) {
    const __m128i a = _mm_srlv_epi32(_mm_shuffle_epi8(v, _mm_setr_epi8(4, 5, 6, 7, 12, 13, 14, 15, 8, 9, 10, 11, 12,
                                                                       13, 14, 15)),
                                     _mm_setr_epi32(0, 0, 0, 4));
    const __m128i b = _mm_shuffle_epi8(v, _mm_setr_epi8(-1, -1, -1, -1, 4, 5, 6, 7, -1, -1, -1, -1, 8, 9, 10, 11));
    const __m128i lo = _mm_and_si128(a, _mm_setr_epi32(0x3F3F3F3F, 0x0F0F0F0F, 0x3F3F3F3F, 0x0F0F0F0F));
    return _mm_or_si128(lo, _mm_and_si128(_mm_srli_epi16(b, 2), _mm_set1_epi8(0x30)));
}

/*
 * Q4_K / Q5_K on an activation with one scale per super-block (rwkvc_q8act_prepare_sb_ref): per 32-element
 * sub-block, vpmaddubsw of the unsigned quants with the activation (pairs at most 2 * 31 * 127 = 7874, exact in
 * int16), then vpmaddwd (or VNNI's vpdpwssd) with the six-bit scale, summed in int32 over the super-block (at most
 * 8 * 32 * 31 * 127 * 63 = 63.5M); one convert and one FMA with d * d_x per 256 elements. The scales are written
 * once per super-block as 32-bit words holding the scale in both 16-bit halves, so each sub-block's scale vector
 * is a broadcast from memory (a load, not a shuffle). The min term is one 8-wide FMA per super-block.
 * Before, with a scale per activation block, each sub-block needed a convert, a broadcast and a float FMA of its
 * own: 1 thread on a 4096 x 4096 matrix in cache, AVX-512 Q4_K 22.8 GB/s against Q4_0's 29.9; now 28.2.
 */
ALWAYS_INLINE void k45_sb_scales(const uint8_t *blk, int32_t *sc2, __m256 *dv, __m256 *dmn) {
    const __m128i v = _mm_loadu_si128((const __m128i *)(const void *)blk);
    const __m128i sm = k45_unpack_scales(v);
    const __m256i s32 = _mm256_cvtepu8_epi32(sm);
    _mm256_storeu_si256((__m256i *)(void *)sc2, _mm256_or_si256(s32, _mm256_slli_epi32(s32, 16)));
    /*
     * Keeps the compiler from turning the broadcasts back into register shuffles (valignd + vpbroadcastd, port 5
     * on Intel, which was then the bottleneck): it must read the words from memory, a load-port broadcast.
     */
    __asm__ volatile("" : : "r"(sc2) : "memory");
    const __m256 h = _mm256_castps128_ps256(_mm_cvtph_ps(v)); /* d, dmin, ... */
    *dv = _mm256_permutevar8x32_ps(h, _mm256_setzero_si256());
    *dmn = _mm256_mul_ps(_mm256_permutevar8x32_ps(h, _mm256_set1_epi32(1)),
                         _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_srli_si128(sm, 8))));
}

/* Adds pairs of int16 p times the int16 scale held twice in *sc2 to int32 acc. */
ALWAYS_INLINE __m256i scale_add16(int vnni, __m256i acc, __m256i p, const int32_t *sc2) {
#if defined(__AVX512VNNI__) && defined(__AVX512VL__)
    if (vnni) {
        return _mm256_dpwssd_epi32(acc, p, _mm256_set1_epi32(*sc2));
    }
#endif
    (void)vnni;
    return _mm256_add_epi32(acc, _mm256_madd_epi16(p, _mm256_set1_epi32(*sc2)));
}

ALWAYS_INLINE void k45_sb(int type, int nv, int vnni, const uint8_t *blk, size_t i, const act_view *xs, __m256 *acc,
                          __m256 *accm) {
    const __m256i m4 = _mm256_set1_epi8(0x0F);
    const __m256i one = _mm256_set1_epi8(1);
    PREFETCH(blk);
    PREFETCH(blk + 64);
    PREFETCH(blk + 128);
    _Alignas(32) int32_t sc2[8];
    __m256 dv;
    __m256 dmn;
    k45_sb_scales(blk, sc2, &dv, &dmn);
    __m256i sa[MAX_NV];
    __m256i sb[MAX_NV];
    for (int t = 0; t < nv; t++) {
        accm[t] = _mm256_fmadd_ps(dmn, _mm256_loadu_ps(xs[t].s + i * 8), accm[t]);
        sa[t] = sb[t] = _mm256_setzero_si256();
    }
    const uint8_t *qs = type == T_Q4_K ? blk + 16 : blk + 48;
    const __m256i hb = type == T_Q5_K ? _mm256_loadu_si256((const __m256i *)(blk + 16)) : _mm256_setzero_si256();
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
        for (int t = 0; t < nv; t++) {
            const int8_t *x = xs[t].q + i * QK_K + 64 * g;
            const __m256i pa = _mm256_maddubs_epi16(qa, _mm256_loadu_si256((const __m256i *)x));
            const __m256i pb = _mm256_maddubs_epi16(qb, _mm256_loadu_si256((const __m256i *)(x + 32)));
            /* Two int32 chains per super-block (g even / odd), so vpdpwssd latency does not serialize it. */
            __m256i *s = (g & 1) ? &sb[t] : &sa[t];
            *s = scale_add16(vnni, *s, pa, &sc2[2 * g]);
            *s = scale_add16(vnni, *s, pb, &sc2[2 * g + 1]);
        }
    }
    for (int t = 0; t < nv; t++) {
        const __m256 p = _mm256_cvtepi32_ps(_mm256_add_epi32(sa[t], sb[t]));
        acc[t] = _mm256_fmadd_ps(_mm256_mul_ps(dv, _mm256_set1_ps(xs[t].d[i * 8])), p, acc[t]);
    }
}

/*
 * Rows of Q4_K / Q5_K (k45_sb per super-block): n_rows rows (1 or 2; their super-blocks in step, so a single
 * vector's thread reads two regions of the matrix at once) against nv activations. A row's result does not depend
 * on n_rows or nv, so matvec and matmat give the same bits.
 */
ALWAYS_INLINE void k45_rows(int type, int n_rows, int nv, int vnni, const uint8_t *W, size_t row_bytes,
                            const act_view *xs, float *Y, size_t ldy, size_t a, size_t b, size_t cols) {
    const size_t nsb = cols / QK_K;
    const size_t bb = type_block_bytes(type);
    const uint8_t *row[2] = {W + a * row_bytes, W + b * row_bytes};
    __m256 acc[2][MAX_NV];
    __m256 accm[2][MAX_NV];
    for (int k = 0; k < n_rows; k++) {
        for (int t = 0; t < nv; t++) {
            acc[k][t] = accm[k][t] = _mm256_setzero_ps();
        }
    }
    for (size_t i = 0; i < nsb; i++) {
        for (int k = 0; k < n_rows; k++) {
            k45_sb(type, nv, vnni, row[k] + i * bb, i, xs, acc[k], accm[k]);
        }
    }
    const size_t r[2] = {a, b};
    for (int k = 0; k < n_rows; k++) {
        for (int t = 0; t < nv; t++) {
            Y[t * ldy + r[k]] = hsum8(acc[k][t]) - hsum8(accm[k][t]);
        }
    }
}

/*
 * A single vector's rows go in pairs from the two halves of the range, super-blocks in step, so each thread reads
 * two regions of the matrix at once. 2 threads, 1 GiB matrices, ratio to a plain read at 1024 / 2048 / 4096 /
 * 8192 columns: with the float-per-sub-block kernel, pairs 0.83-0.86 / 0.89-0.90 / 0.92-0.95 / 0.90-0.91 against
 * whole rows in turn (row_at) 0.87-0.90 / 0.93-0.97 / 0.96-0.97 / 0.81-0.84, so pairs were kept for rows over
 * 4 KB only. With k45_sb's integer sums pairs are as good or better at every width (1024-4096 columns, pairs
 * against row_at: 0.94-0.96 / 0.97-0.98 / 1.02 against 0.96-0.97 / 0.98-1.00 / 0.93-0.95); the kernel now reads
 * 0.98 / 1.00-1.03 / 1.02-1.03 / 0.94-0.98.
 */
ALWAYS_INLINE void rows_k45_256(int type, int nv, int vnni, const uint8_t *W, size_t row_bytes,
                                const act_view *xs, float *Y, size_t ldy, size_t r0, size_t r1, size_t cols) {
    if (nv > 1) {
        for (size_t r = r0; r < r1; r++) {
            k45_rows(type, 1, nv, vnni, W, row_bytes, xs, Y, ldy, r, r, cols);
        }
        return;
    }
    const size_t h = (r1 - r0 + 1) / 2;
    for (size_t k = 0; k < h; k++) {
        const size_t a = r0 + k, b = r0 + h + k;
        if (b < r1) {
            k45_rows(type, 2, 1, vnni, W, row_bytes, xs, Y, ldy, a, b, cols);
        } else {
            k45_rows(type, 1, 1, vnni, W, row_bytes, xs, Y, ldy, a, a, cols);
        }
    }
}

/*
 * Rows of Q6_K: signed quants (q - 32) with the sign trick; the two 16-element sub-blocks of a 32-element group
 * have their own int8 scales, applied in integer by vpmaddwd (low 128-bit lane = first 16 elements).
 */
ALWAYS_INLINE void rows_q6k_256(int nv, const uint8_t *W, size_t row_bytes, const act_view *xs, float *Y,
                                size_t ldy, size_t r0, size_t r1, size_t cols) {
    const size_t nsb = cols / QK_K;
    const __m256i m4 = _mm256_set1_epi8(0x0F);
    const __m256i m2 = _mm256_set1_epi8(0x03);
    const __m256i off = _mm256_set1_epi8(32);
    for (size_t r = r0; r < r1; r++) {
        const rwkvc_block_q6_K *row = (const rwkvc_block_q6_K *)(W + r * row_bytes);
        __m256 acc[2][MAX_NV];
        for (int t = 0; t < nv; t++) {
            acc[0][t] = _mm256_setzero_ps();
            acc[1][t] = _mm256_setzero_ps();
        }
        for (size_t i = 0; i < nsb; i++) {
            const rwkvc_block_q6_K *blk = &row[i];
            PREFETCH(blk);
            PREFETCH((const char *)blk + 64);
            PREFETCH((const char *)blk + 128);
            PREFETCH((const char *)blk + 192);
            const float d = h2f(&blk->d);
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
#pragma GCC unroll 4
                for (int g = 0; g < 4; g++) {
                    const __m256i qs = _mm256_sub_epi8(q[g], off);
                    const __m256i aq = _mm256_sign_epi8(qs, qs);
                    const int8_t *sc = blk->scales + 8 * h + 2 * g;
                    const __m256i scv = _mm256_set_m128i(_mm_set1_epi16(sc[1]), _mm_set1_epi16(sc[0]));
                    const size_t b = i * 8 + 4 * h + g;
                    for (int t = 0; t < nv; t++) {
                        const __m256i x = _mm256_sign_epi8(_mm256_loadu_si256((const __m256i *)(xs[t].q + b * QK)), qs);
                        const __m256i p = _mm256_madd_epi16(_mm256_maddubs_epi16(aq, x), scv);
                        acc[g & 1][t] =
                            _mm256_fmadd_ps(_mm256_set1_ps(d * xs[t].d[b]), _mm256_cvtepi32_ps(p), acc[g & 1][t]);
                    }
                }
            }
        }
        for (int t = 0; t < nv; t++) {
            Y[t * ldy + r] = hsum8(_mm256_add_ps(acc[0][t], acc[1][t]));
        }
    }
}

/*
 * matvec of Q6_K on 256-bit registers with unsigned quants: q (0..63) goes straight into vpmaddubsw (pairs at most
 * 2 * 63 * 127 = 16002, exact in int16) and the -32 offset is one subtraction of 32 * (the activation's pair sums),
 * prepared once per call (q6k_mv_prep, cols int16 values): no offset subtraction and no two vpsignb per 32
 * elements. The per-block factors d * d_x come from one 8-wide multiply per super-block, broadcast from memory.
 * The int16 scales are applied by vpmaddwd as in rows_q6k_256.
 */
#define Q6K_MV_MAX_COLS 16384

ALWAYS_INLINE void q6k_mv_prep(const act_view *xv, size_t cols, int16_t *p32) {
    const __m256i one = _mm256_set1_epi8(1);
    for (size_t c = 0; c < cols; c += 32) {
        const __m256i x = _mm256_loadu_si256((const __m256i *)(xv->q + c));
        _mm256_storeu_si256((__m256i *)(p32 + c / 2), _mm256_slli_epi16(_mm256_maddubs_epi16(one, x), 5));
    }
}

ALWAYS_INLINE void rows_q6k_mv_256(const uint8_t *W, size_t row_bytes, const act_view *xs, const int16_t *p32,
                                   float *y, size_t r0, size_t r1, size_t cols) {
    const size_t nsb = cols / QK_K;
    const __m256i m4 = _mm256_set1_epi8(0x0F);
    const __m256i m2 = _mm256_set1_epi8(0x03);
    for (size_t k = 0; k < r1 - r0; k++) {
        const size_t r = row_at(r0, r1, k);
        const rwkvc_block_q6_K *row = (const rwkvc_block_q6_K *)(W + r * row_bytes);
        __m256 acc0 = _mm256_setzero_ps();
        __m256 acc1 = _mm256_setzero_ps();
        for (size_t i = 0; i < nsb; i++) {
            const rwkvc_block_q6_K *blk = &row[i];
            PREFETCH_FAR(blk);
            PREFETCH_FAR((const char *)blk + 64);
            PREFETCH_FAR((const char *)blk + 128);
            PREFETCH_FAR((const char *)blk + 192);
            float cs[8];
            _mm256_storeu_ps(cs, _mm256_mul_ps(_mm256_set1_ps(h2f(&blk->d)), _mm256_loadu_ps(xs->d + i * 8)));
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
                /* The half's 8 scales as int16 in both 128-bit lanes; one vpshufb per 32 elements spreads them. */
                const __m256i s16 = _mm256_broadcastsi128_si256(
                    _mm_cvtepi8_epi16(_mm_loadl_epi64((const __m128i *)(const void *)(blk->scales + 8 * h))));
#pragma GCC unroll 4
                for (int g = 0; g < 4; g++) {
                    const __m256i scv = _mm256_shuffle_epi8(s16, _mm256_setr_epi8(
                        (char)(4 * g), (char)(4 * g + 1), (char)(4 * g), (char)(4 * g + 1), (char)(4 * g),
                        (char)(4 * g + 1), (char)(4 * g), (char)(4 * g + 1), (char)(4 * g), (char)(4 * g + 1),
                        (char)(4 * g), (char)(4 * g + 1), (char)(4 * g), (char)(4 * g + 1), (char)(4 * g),
                        (char)(4 * g + 1), (char)(4 * g + 2), (char)(4 * g + 3), (char)(4 * g + 2),
                        (char)(4 * g + 3), (char)(4 * g + 2), (char)(4 * g + 3), (char)(4 * g + 2),
                        (char)(4 * g + 3), (char)(4 * g + 2), (char)(4 * g + 3), (char)(4 * g + 2),
                        (char)(4 * g + 3), (char)(4 * g + 2), (char)(4 * g + 3), (char)(4 * g + 2),
                        (char)(4 * g + 3)));
                    const size_t b = i * 8 + 4 * h + g;
                    const __m256i x = _mm256_loadu_si256((const __m256i *)(xs->q + b * QK));
                    const __m256i pr = _mm256_sub_epi16(_mm256_maddubs_epi16(q[g], x),
                                                        _mm256_loadu_si256((const __m256i *)(p32 + b * 16)));
                    const __m256 p = _mm256_cvtepi32_ps(_mm256_madd_epi16(pr, scv));
                    if (g & 1) {
                        acc1 = _mm256_fmadd_ps(_mm256_broadcast_ss(&cs[4 * h + g]), p, acc1);
                    } else {
                        acc0 = _mm256_fmadd_ps(_mm256_broadcast_ss(&cs[4 * h + g]), p, acc0);
                    }
                }
            }
        }
        y[r] = hsum8(_mm256_add_ps(acc0, acc1));
    }
}

ALWAYS_INLINE void rows_any_256(int type, int nv, int vnni, const uint8_t *W, size_t row_bytes,
                                const act_view *xs, float *Y, size_t ldy, size_t r0, size_t r1, size_t cols) {
    if (type == T_Q4_K || type == T_Q5_K) {
        rows_k45_256(type, nv, vnni, W, row_bytes, xs, Y, ldy, r0, r1, cols);
    } else if (type == T_Q6_K) {
        rows_q6k_256(nv, W, row_bytes, xs, Y, ldy, r0, r1, cols);
    } else {
        rows32_256(type, nv, vnni, W, row_bytes, xs, Y, ldy, r0, r1, cols);
    }
}

/*
 * Sequence mode (matmat) as a packed int8 GEMM. A tile of PK_ROWS = 16 weight rows is decoded once into unsigned
 * byte quants with one scale d and one min m per row and 32-element block (value = d * q + m; Q8_0 becomes
 * q + 128 with m = -128 d, Q4_0 / Q5_0 take m = -8 d / -16 d, the K-quants d * sc and -dmin * mn per sub-block),
 * and stored interleaved: per block, 8 groups of 4 elements x 16 rows x 4 bytes. One vpdpbusd of a packed group
 * against 4 activation bytes broadcast from memory then adds 4 products to each of 16 rows, so the 16 int32 lanes
 * of a block sum are the 16 rows' exact integer block dots (AVX2 does the same with vpmaddubsw / vpmaddwd on
 * 8 rows per register). The packed tile is reused by every vector, and the K-quant scales are unpacked once per
 * tile, not once per vector.
 */
#define PK_ROWS 16

/* 8 x 8 transpose of 32-bit elements: r[i] holds row i; afterwards r[g] holds element g of every row. */
ALWAYS_INLINE void transpose8x8_epi32(__m256i *r) {
    const __m256i t0 = _mm256_unpacklo_epi32(r[0], r[1]);
    const __m256i t1 = _mm256_unpackhi_epi32(r[0], r[1]);
    const __m256i t2 = _mm256_unpacklo_epi32(r[2], r[3]);
    const __m256i t3 = _mm256_unpackhi_epi32(r[2], r[3]);
    const __m256i t4 = _mm256_unpacklo_epi32(r[4], r[5]);
    const __m256i t5 = _mm256_unpackhi_epi32(r[4], r[5]);
    const __m256i t6 = _mm256_unpacklo_epi32(r[6], r[7]);
    const __m256i t7 = _mm256_unpackhi_epi32(r[6], r[7]);
    const __m256i u0 = _mm256_unpacklo_epi64(t0, t2);
    const __m256i u1 = _mm256_unpackhi_epi64(t0, t2);
    const __m256i u2 = _mm256_unpacklo_epi64(t1, t3);
    const __m256i u3 = _mm256_unpackhi_epi64(t1, t3);
    const __m256i u4 = _mm256_unpacklo_epi64(t4, t6);
    const __m256i u5 = _mm256_unpackhi_epi64(t4, t6);
    const __m256i u6 = _mm256_unpacklo_epi64(t5, t7);
    const __m256i u7 = _mm256_unpackhi_epi64(t5, t7);
    r[0] = _mm256_permute2x128_si256(u0, u4, 0x20);
    r[1] = _mm256_permute2x128_si256(u1, u5, 0x20);
    r[2] = _mm256_permute2x128_si256(u2, u6, 0x20);
    r[3] = _mm256_permute2x128_si256(u3, u7, 0x20);
    r[4] = _mm256_permute2x128_si256(u0, u4, 0x31);
    r[5] = _mm256_permute2x128_si256(u1, u5, 0x31);
    r[6] = _mm256_permute2x128_si256(u2, u6, 0x31);
    r[7] = _mm256_permute2x128_si256(u3, u7, 0x31);
}

/*
 * Decodes one unit (one 32-element block, or one 256-element super-block of Q4_K / Q5_K) of one row into unsigned
 * quants q[0..U), and d / m per 32-element block into d[s * PK_ROWS] / m[s * PK_ROWS].
 */
ALWAYS_INLINE void pk_decode_unit(int type, const uint8_t *blk, uint8_t *q, float *d, float *m) {
    if (type == T_Q4_K || type == T_Q5_K) {
        __m256 dv;
        __m256 mv;
        k4_scales_vec(blk, &dv, &mv);
        float dsc[8];
        float dmn[8];
        _mm256_storeu_ps(dsc, dv);
        _mm256_storeu_ps(dmn, mv);
        for (int s = 0; s < 8; s++) {
            d[s * PK_ROWS] = dsc[s];
            m[s * PK_ROWS] = -dmn[s];
        }
        const __m256i m4 = _mm256_set1_epi8(0x0F);
        const __m256i one = _mm256_set1_epi8(1);
        const uint8_t *qs = type == T_Q4_K ? blk + 16 : blk + 48;
        const __m256i hb = type == T_Q5_K ? _mm256_loadu_si256((const __m256i *)(blk + 16)) : _mm256_setzero_si256();
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
            _mm256_storeu_si256((__m256i *)(q + 64 * g), qa);
            _mm256_storeu_si256((__m256i *)(q + 64 * g + 32), qb);
        }
        return;
    }
    __m256i v = decode32(type, blk, d, m);
    if (type_is_signed(type)) {
        /* q + 128 as an unsigned byte; d * q = d * (q + 128) - 128 d. */
        v = _mm256_xor_si256(v, _mm256_set1_epi8((char)0x80));
        *m = -128.0f * *d;
    }
    _mm256_storeu_si256((__m256i *)q, v);
}

/*
 * Packs rows [r, r + nr) (nr <= PK_ROWS) of all blocks into wq (cols * PK_ROWS bytes), dw and mw (nb * PK_ROWS
 * floats each, block-major); rows nr.. of the tile are zero. tmp holds PK_ROWS x 256 bytes.
 */
ALWAYS_INLINE void pk_pack(int type, const uint8_t *W, size_t row_bytes, size_t r, size_t nr, size_t cols,
                           uint8_t *wq, float *dw, float *mw, uint8_t *tmp) {
    const int kq = type == T_Q4_K || type == T_Q5_K;
    if (!kq && row_bytes <= (size_t)0x7FFFFFFF / PK_ROWS) {
        /*
         * 32-element types: quants decoded straight into registers and transposed there; d and m of 8 rows at a
         * time by one gather of the block headers (scales8 across rows instead of along a row).
         */
        const size_t nb = cols / QK;
        const size_t bb = type_block_bytes(type);
        const int rb = (int)row_bytes;
        const __m256i idx = _mm256_setr_epi32(0, rb, 2 * rb, 3 * rb, 4 * rb, 5 * rb, 6 * rb, 7 * rb);
        const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
        const uint8_t *tile = W + r * row_bytes;
        for (size_t b = 0; b < nb; b++) {
            uint8_t *dst = wq + b * QK * PK_ROWS;
            for (int h = 0; h < 2; h++) {
                const uint8_t *base = tile + (size_t)(8 * h) * row_bytes + b * bb;
                __m256i rr[8];
                for (int i = 0; i < 8; i++) {
                    if ((size_t)(8 * h + i) < nr) {
                        float dd;
                        float mm;
                        rr[i] = decode32(type, base + (size_t)i * row_bytes, &dd, &mm);
                        if (type_is_signed(type)) {
                            rr[i] = _mm256_xor_si256(rr[i], _mm256_set1_epi8((char)0x80));
                        }
                    } else {
                        rr[i] = _mm256_setzero_si256();
                    }
                }
                transpose8x8_epi32(rr);
                for (int g = 0; g < 8; g++) {
                    _mm256_store_si256((__m256i *)(dst + g * 64 + 32 * h), rr[g]);
                }
                /* Headers of the valid rows (d, and m for Q4_1 / Q5_1); rows past nr read as zero. */
                const long valid = (long)nr - 8 * h;
                const __m256i vm = _mm256_cmpgt_epi32(_mm256_set1_epi32((int)(valid < 0 ? 0 : valid)), lane);
                const __m256i v =
                    _mm256_mask_i32gather_epi32(_mm256_setzero_si256(), (const int *)(const void *)base, idx, vm, 1);
                const __m256i lo = _mm256_and_si256(v, _mm256_set1_epi32(0xFFFF));
                const __m256 dv =
                    _mm256_cvtph_ps(_mm_packus_epi32(_mm256_castsi256_si128(lo), _mm256_extracti128_si256(lo, 1)));
                __m256 mv;
                if (type == T_Q4_1 || type == T_Q5_1) {
                    const __m256i hi = _mm256_srli_epi32(v, 16);
                    mv = _mm256_cvtph_ps(_mm_packus_epi32(_mm256_castsi256_si128(hi), _mm256_extracti128_si256(hi, 1)));
                } else if (type == T_Q4_0) {
                    mv = _mm256_mul_ps(dv, _mm256_set1_ps(-8.0f));
                } else if (type == T_Q5_0) {
                    mv = _mm256_mul_ps(dv, _mm256_set1_ps(-16.0f));
                } else {
                    mv = _mm256_mul_ps(dv, _mm256_set1_ps(-128.0f));
                }
                _mm256_store_ps(dw + b * PK_ROWS + 8 * h, dv);
                _mm256_store_ps(mw + b * PK_ROWS + 8 * h, mv);
            }
        }
        return;
    }
    const size_t U = kq ? QK_K : QK;
    const size_t nsb = U / QK;
    const size_t nu = cols / U;
    const size_t bb = type_block_bytes(type);
    for (size_t u = 0; u < nu; u++) {
        float *du = dw + u * nsb * PK_ROWS;
        float *mu = mw + u * nsb * PK_ROWS;
        for (size_t i = 0; i < PK_ROWS; i++) {
            if (i < nr) {
                pk_decode_unit(type, W + (r + i) * row_bytes + u * bb, tmp + i * U, du + i, mu + i);
            } else {
                memset(tmp + i * U, 0, U);
                for (size_t s = 0; s < nsb; s++) {
                    du[s * PK_ROWS + i] = 0.0f;
                    mu[s * PK_ROWS + i] = 0.0f;
                }
            }
        }
        for (size_t s = 0; s < nsb; s++) {
            uint8_t *dst = wq + (u * nsb + s) * QK * PK_ROWS;
            for (int h = 0; h < 2; h++) {
                __m256i rr[8];
                for (int i = 0; i < 8; i++) {
                    rr[i] = _mm256_loadu_si256((const __m256i *)(tmp + (8 * h + i) * U + QK * s));
                }
                transpose8x8_epi32(rr);
                for (int g = 0; g < 8; g++) {
                    _mm256_store_si256((__m256i *)(dst + g * 64 + 32 * h), rr[g]);
                }
            }
        }
    }
}

/*
 * Scratch for one packed tile of cols columns: wq (cols * PK_ROWS bytes), dw and mw (nb * PK_ROWS floats each),
 * tmp (PK_ROWS * QK_K bytes). NULL if out of memory; release with free().
 */
typedef struct {
    uint8_t *wq;
    float *dw;
    float *mw;
    uint8_t *tmp;
} pk_buffers;

/*
 * Packed tiles held at once: each group of vectors passes over all of them while its activations stay in L1,
 * so the activations are read from outer caches once per PK_TILES * PK_ROWS rows rather than once per tile (a
 * 512-vector prefill has megabytes of activations). Fewer for wide matrices so the packed tiles fit L2.
 */
#define PK_TILES 4

static inline size_t pk_tiles_for(size_t cols) {
    return cols <= 8192 ? PK_TILES : cols <= 16384 ? 2 : 1;
}

static inline void *pk_alloc(size_t cols, pk_buffers *pb) {
    const size_t nb = cols / QK;
    const size_t wq_bytes = cols * PK_ROWS;
    const size_t f_bytes = nb * PK_ROWS * sizeof(float);
    uint8_t *buf = aligned_alloc(64, wq_bytes + 2 * f_bytes + PK_ROWS * QK_K);
    if (buf) {
        pb->wq = buf;
        pb->dw = (float *)(buf + wq_bytes);
        pb->mw = (float *)(buf + wq_bytes + f_bytes);
        pb->tmp = buf + wq_bytes + 2 * f_bytes;
    }
    return buf;
}

/* Largest |x| of 32 floats. */
ALWAYS_INLINE float amax32_x86(const float *xb) {
    const __m256 sign = _mm256_set1_ps(-0.0f);
    __m256 mx = _mm256_setzero_ps();
    for (int k = 0; k < 4; k++) {
        mx = _mm256_max_ps(mx, _mm256_andnot_ps(sign, _mm256_loadu_ps(xb + 8 * k)));
    }
    __m128 m = _mm_max_ps(_mm256_castps256_ps128(mx), _mm256_extractf128_ps(mx, 1));
    m = _mm_max_ps(m, _mm_movehl_ps(m, m));
    m = _mm_max_ss(m, _mm_movehdup_ps(m));
    return _mm_cvtss_f32(m);
}

/* Quantizes 32 floats with the inverse scale id into qs (half to even); returns the sum of the quants. */
ALWAYS_INLINE int q8_block_x86(const float *xb, float id, int8_t *qs) {
    const __m256 idv = _mm256_set1_ps(id);
    __m256i i32[4];
    for (int k = 0; k < 4; k++) {
        /* vcvtps2dq rounds half to even in the default MXCSR mode, like nearbyintf. */
        i32[k] = _mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(xb + 8 * k), idv));
    }
    /* Sum of the quants, then pack int32 -> int8 in element order. */
    const __m256i s01 = _mm256_add_epi32(i32[0], i32[1]);
    const __m256i s23 = _mm256_add_epi32(i32[2], i32[3]);
    __m256i st = _mm256_add_epi32(s01, s23);
    __m128i s4 = _mm_add_epi32(_mm256_castsi256_si128(st), _mm256_extracti128_si256(st, 1));
    s4 = _mm_add_epi32(s4, _mm_shuffle_epi32(s4, 0x4E));
    s4 = _mm_add_epi32(s4, _mm_shuffle_epi32(s4, 0xB1));
    const __m256i p01 = _mm256_packs_epi32(i32[0], i32[1]);
    const __m256i p23 = _mm256_packs_epi32(i32[2], i32[3]);
    __m256i p = _mm256_packs_epi16(p01, p23);
    /* The two packs interleave 128-bit lanes: restore element order. */
    p = _mm256_permutevar8x32_epi32(p, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
    _mm256_storeu_si256((__m256i *)qs, p);
    return _mm_cvtsi128_si32(s4);
}

/*
 * Activation preparation with AVX2 instructions, bit-identical to rwkvc_q8act_prepare_ref (group 1) and
 * rwkvc_q8act_prepare_sb_ref (group 8: one scale per 256-element super-block).
 */
ALWAYS_INLINE void q8act_prepare_grouped_x86(const float *x, void *xq, size_t cols, size_t group) {
    const size_t nb = cols / QK;
    float *d = (float *)xq;
    float *s = d + nb;
    int8_t *qs = (int8_t *)xq + rwkvc_q8act_header_bytes(cols);
    memset(s + nb, 0, rwkvc_q8act_header_bytes(cols) - 2 * nb * sizeof(float));
    for (size_t g = 0; g < nb; g += group) {
        const size_t g1 = g + group < nb ? g + group : nb; /* as rwkvc_q8act_prepare_sb_ref */
        float am = 0.0f;
        for (size_t b = g; b < g1; b++) {
            const float ab = amax32_x86(x + b * QK);
            am = ab > am ? ab : am;
        }
        const float db = am / 127.0f;
        const float id = db != 0.0f ? 1.0f / db : 0.0f;
        for (size_t b = g; b < g1; b++) {
            const int sum = q8_block_x86(x + b * QK, id, qs + b * QK);
            d[b] = db;
            s[b] = db * (float)sum;
        }
    }
}

static inline void q8act_prepare_x86(const float *x, void *xq, size_t cols) {
    q8act_prepare_grouped_x86(x, xq, cols, 1);
}

static inline void q8act_prepare_sb_x86(const float *x, void *xq, size_t cols) {
    q8act_prepare_grouped_x86(x, xq, cols, QK_K / QK);
}

#endif /* RWKVC_QUANT_X86_H */
