/*
 * quant.h: ggml-compatible block layouts of the quantized weight types, and the prepared-activation layout
 * shared by every quantized kernel (scalar and SIMD).
 *
 * Block layouts are bit-identical to ggml's (ggml-common.h), see shared docs quant-formats.md; the sizes are
 * static-asserted so a file written by llama.cpp is read as it is. All multi-byte fields are little-endian.
 */
#ifndef RWKVC_QUANT_H
#define RWKVC_QUANT_H

#include <assert.h>
#include <stddef.h>
#include <stdint.h>

#define RWKVC_QK 32   /* Elements per block of the 32-element ("legacy") types. */
#define RWKVC_QK_K 256 /* Elements per super-block of the K-quants. */

/* Q8_0: value = d * qs[j]. */
typedef struct {
    uint16_t d; /* f16 scale */
    int8_t qs[RWKVC_QK];
} rwkvc_block_q8_0;
static_assert(sizeof(rwkvc_block_q8_0) == 34, "q8_0 block is 34 bytes");

/* Q4_0: value = d * (q - 8); low nibble of qs[i] is element i, high nibble element i + 16. */
typedef struct {
    uint16_t d;
    uint8_t qs[RWKVC_QK / 2];
} rwkvc_block_q4_0;
static_assert(sizeof(rwkvc_block_q4_0) == 18, "q4_0 block is 18 bytes");

/* Q4_1: value = d * q + m. */
typedef struct {
    uint16_t d;
    uint16_t m;
    uint8_t qs[RWKVC_QK / 2];
} rwkvc_block_q4_1;
static_assert(sizeof(rwkvc_block_q4_1) == 20, "q4_1 block is 20 bytes");

/* Q5_0: value = d * (q - 16); bit j of the little-endian uint32 qh is bit 4 of element j. */
typedef struct {
    uint16_t d;
    uint8_t qh[4];
    uint8_t qs[RWKVC_QK / 2];
} rwkvc_block_q5_0;
static_assert(sizeof(rwkvc_block_q5_0) == 22, "q5_0 block is 22 bytes");

/* Q5_1: value = d * q + m. */
typedef struct {
    uint16_t d;
    uint16_t m;
    uint8_t qh[4];
    uint8_t qs[RWKVC_QK / 2];
} rwkvc_block_q5_1;
static_assert(sizeof(rwkvc_block_q5_1) == 24, "q5_1 block is 24 bytes");

/* Q8_1 (activation type of ggml, listed for type info only): s = d * sum(qs). */
typedef struct {
    uint16_t d;
    uint16_t s;
    int8_t qs[RWKVC_QK];
} rwkvc_block_q8_1;
static_assert(sizeof(rwkvc_block_q8_1) == 36, "q8_1 block is 36 bytes");

/* Q4_K: 8 sub-blocks of 32; value = d * sc[s] * q - dmin * mn[s], six-bit sc/mn packed in scales[12]. */
typedef struct {
    uint16_t d;
    uint16_t dmin;
    uint8_t scales[12];
    uint8_t qs[RWKVC_QK_K / 2];
} rwkvc_block_q4_K;
static_assert(sizeof(rwkvc_block_q4_K) == 144, "q4_K block is 144 bytes");

/* Q5_K: as Q4_K plus qh[32] holding the fifth bits. */
typedef struct {
    uint16_t d;
    uint16_t dmin;
    uint8_t scales[12];
    uint8_t qh[RWKVC_QK_K / 8];
    uint8_t qs[RWKVC_QK_K / 2];
} rwkvc_block_q5_K;
static_assert(sizeof(rwkvc_block_q5_K) == 176, "q5_K block is 176 bytes");

/* Q6_K: 16 sub-blocks of 16 with int8 scales; value = d * scales[s] * (q - 32). */
typedef struct {
    uint8_t ql[RWKVC_QK_K / 2];
    uint8_t qh[RWKVC_QK_K / 4];
    int8_t scales[RWKVC_QK_K / 16];
    uint16_t d;
} rwkvc_block_q6_K;
static_assert(sizeof(rwkvc_block_q6_K) == 210, "q6_K block is 210 bytes");

/* Q8_K (activation type of ggml, type info only). */
typedef struct {
    float d;
    int8_t qs[RWKVC_QK_K];
    int16_t bsums[RWKVC_QK_K / 16];
} rwkvc_block_q8_K;
static_assert(sizeof(rwkvc_block_q8_K) == 292, "q8_K block is 292 bytes");

/*
 * Prepared activation ("q8 act") used by every quantized kernel in this library.
 *
 * ggml quantizes the activation into Q8_0/Q8_1 (f16 scales) or Q8_K (one scale per 256). We use one layout for
 * every weight type instead: the activation is cut into 32-element blocks, each with an fp32 scale d (amax / 127)
 * and int8 quants rounded half-to-even (what ggml's x86 path does), plus s = d * sum(qs) for the min/offset terms.
 * fp32 scales and 32-element granularity for the K-quants make it at least as accurate as ggml's choice; one
 * layout keeps the kernels simple. Layout for cols = 32 * nb elements:
 *   float d[nb]; float s[nb]; (padding to a multiple of 64 bytes); int8 qs[cols].
 * The buffer is written once by prepare_act and then only read, so worker threads can share it.
 *
 * Q4_K and Q5_K prepare the same layout with one scale per 256 elements (rwkvc_q8act_prepare_sb_ref): d is the
 * super-block's amax / 127, stored for each of its 8 blocks, and s = d * sum(qs) per block as above. With d equal
 * across a super-block, the weight's six-bit sub-block scales can be applied to exact integer dots and summed in
 * int32 over the whole super-block, one fp32 multiply-add per 256 elements instead of one per 32 (the decode
 * kernels of those types were bound by that float work). ggml does the same with Q8_K for every K-quant. Any
 * kernel that reads d per block stays correct on either variant.
 */
static inline size_t rwkvc_q8act_header_bytes(size_t cols) {
    size_t nb = cols / RWKVC_QK;
    return (nb * 2 * sizeof(float) + 63) & ~(size_t)63;
}

static inline size_t rwkvc_q8act_bytes(size_t cols) {
    return rwkvc_q8act_header_bytes(cols) + cols;
}

static inline const float *rwkvc_q8act_d(const void *xq) {
    return (const float *)xq;
}

static inline const float *rwkvc_q8act_s(const void *xq, size_t cols) {
    return (const float *)xq + cols / RWKVC_QK;
}

static inline const int8_t *rwkvc_q8act_qs(const void *xq, size_t cols) {
    return (const int8_t *)xq + rwkvc_q8act_header_bytes(cols);
}

/* Unpacks the six-bit scale and min of sub-block j (0..7) of a Q4_K / Q5_K block. */
static inline void rwkvc_k4_scale_min(int j, const uint8_t *q, uint8_t *sc, uint8_t *mn) {
    if (j < 4) {
        *sc = q[j] & 63;
        *mn = q[j + 4] & 63;
    } else {
        *sc = (uint8_t)((q[j + 4] & 0x0F) | ((q[j - 4] >> 6) << 4));
        *mn = (uint8_t)((q[j + 4] >> 4) | ((q[j] >> 6) << 4));
    }
}

/*
 * Test hook: non-zero makes the AVX-512 kernels take their non-VNNI path on a CPU with VNNI, so one machine tests
 * both. Defined in quant_ref.c; never set by the library itself.
 */
extern int rwkvc_quant_disable_vnni;
/* Test hook: non-zero keeps the packed GEMM of sequence mode off AMX, on its VNNI register tiles. */
extern int rwkvc_quant_disable_amx;

/* Scalar activation quantizer shared by the reference kernels and used for the tail checks of the SIMD ones. */
void rwkvc_q8act_prepare_ref(const float *x, void *xq, size_t cols);
/* The same layout with one scale per 256-element super-block (cols a multiple of 256), for Q4_K / Q5_K. */
void rwkvc_q8act_prepare_sb_ref(const float *x, void *xq, size_t cols);

#endif /* RWKVC_QUANT_H */
