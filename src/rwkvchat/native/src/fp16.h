/*
 * fp16.h: portable scalar conversions between float32 and the 16-bit float formats (IEEE binary16, bfloat16).
 *
 * These are the reference conversions: exact for fp16/bf16 -> fp32, round-to-nearest-even for fp32 -> fp16/bf16,
 * matching F16C's vcvtps2ph (imm 0) and ggml's bf16 rounding. SIMD kernels convert in registers instead.
 */
#ifndef RWKVC_FP16_H
#define RWKVC_FP16_H

#include <stdint.h>
#include <string.h>

static inline float rwkvc_bits_to_f32(uint32_t u) {
    float f;
    memcpy(&f, &u, sizeof(f));
    return f;
}

static inline uint32_t rwkvc_f32_to_bits(float f) {
    uint32_t u;
    memcpy(&u, &f, sizeof(u));
    return u;
}

/* binary16 -> binary32, exact (subnormals, infinities and NaNs included). */
static inline float rwkvc_fp16_to_fp32(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    uint32_t exp = (h >> 10) & 0x1Fu;
    uint32_t man = h & 0x3FFu;
    if (exp == 0x1Fu) {
        /* Infinity or NaN: keep the payload. */
        return rwkvc_bits_to_f32(sign | 0x7F800000u | (man << 13));
    }
    if (exp == 0) {
        if (man == 0) {
            return rwkvc_bits_to_f32(sign);
        }
        /* Subnormal: value = man * 2^-24, exact in binary32. */
        float v = (float)man * (1.0f / 16777216.0f);
        return sign ? -v : v;
    }
    return rwkvc_bits_to_f32(sign | ((exp + 112u) << 23) | (man << 13));
}

/* binary32 -> binary16 with round-to-nearest-even; overflow gives infinity, NaN stays NaN. */
static inline uint16_t rwkvc_fp32_to_fp16(float f) {
    uint32_t x = rwkvc_f32_to_bits(f);
    uint32_t sign = (x >> 16) & 0x8000u;
    uint32_t ax = x & 0x7FFFFFFFu;
    if (ax >= 0x7F800000u) {
        /* Infinity, or NaN (forced quiet so the payload cannot become zero). */
        return (uint16_t)(sign | 0x7C00u | (ax > 0x7F800000u ? 0x200u | ((ax >> 13) & 0x3FFu) : 0));
    }
    if (ax >= 0x477FF000u) {
        /* Rounds to a value >= 65520: infinity. */
        return (uint16_t)(sign | 0x7C00u);
    }
    if (ax < 0x38800000u) {
        /* Below the smallest normal half (2^-14): produce a subnormal (or zero) by rounding man * 2^24. */
        if (ax < 0x33000000u) {
            /* Below 2^-25: rounds to zero (2^-25 itself is a tie that goes to even zero). */
            return (uint16_t)sign;
        }
        uint32_t e = ax >> 23;
        uint32_t m = (ax & 0x7FFFFFu) | 0x800000u;
        /* The half subnormal unit is 2^-24; value = m * 2^(e-150), so shift right by (126 - e). */
        uint32_t shift = 126u - e;
        uint32_t q = m >> shift;
        uint32_t rem = m & ((1u << shift) - 1u);
        uint32_t halfway = 1u << (shift - 1u);
        if (rem > halfway || (rem == halfway && (q & 1u))) {
            q++;
        }
        return (uint16_t)(sign | q);
    }
    /* Normal: rebias the exponent and round the 13 dropped mantissa bits to nearest even. */
    uint32_t r = ax - 0x38000000u;
    uint32_t q = r >> 13;
    uint32_t rem = r & 0x1FFFu;
    if (rem > 0x1000u || (rem == 0x1000u && (q & 1u))) {
        q++;
    }
    return (uint16_t)(sign | q);
}

static inline float rwkvc_bf16_to_fp32(uint16_t b) {
    return rwkvc_bits_to_f32((uint32_t)b << 16);
}

/* As ggml: NaN keeps its top half with the quiet bit forced; others round to nearest even. */
static inline uint16_t rwkvc_fp32_to_bf16(float f) {
    uint32_t u = rwkvc_f32_to_bits(f);
    if ((u & 0x7FFFFFFFu) > 0x7F800000u) {
        return (uint16_t)((u >> 16) | 0x40u);
    }
    return (uint16_t)((u + 0x7FFFu + ((u >> 16) & 1u)) >> 16);
}

#endif /* RWKVC_FP16_H */
