/*
 * vexp.h: e^x over arrays of floats, per instruction set, for the element-wise steps of the forward passes
 * (sigmoid gates and decays: 4 exponentials per channel per token in RWKV-7, a tenth of a 0.4B decode step's
 * time when done one libm call at a time).
 *
 * Every version returns the C library's expf bits wherever the library is glibc 2.28 or later (its expf, from
 * ARM's optimized-routines, is what the reference calls): the SIMD versions run the same algorithm in double
 * precision lane by lane (x * 32/ln2 split into k + r with the 2^52 * 1.5 shift, a 32-entry table of 2^(i/32),
 * a cubic in r, the same fused multiply-adds), so a forward pass gives the same bits on every instruction set.
 * Lanes with |x| >= 80, infinities and NaN (overflow, underflow and the library's special cases) are handed to
 * expf itself. With another C library the SIMD results stay within 1 ulp of it (the algorithm's own bound).
 */
#ifndef RWKVC_VEXP_H
#define RWKVC_VEXP_H

#include <stddef.h>
#include <stdint.h>

#include "kernels.h"

/* x[i] = e^x[i] for i < n, in place. */
typedef void (*rwkvc_expf_fn)(float *x, size_t n);

void rwkvc_expf_ref(float *x, size_t n);
void rwkvc_expf_avx2(float *x, size_t n);
void rwkvc_expf_avx512(float *x, size_t n);

/* The version for an instruction set (the reference for scalar, NEON and unknown levels). */
rwkvc_expf_fn rwkvc_expf_get(rwkvc_isa isa);

/* y[i] = 1 / (1 + e^-x[i]) for i < n: the float arithmetic of 1.0f / (1.0f + expf(-x)), e^x in a batch. y may be x. */
static inline void rwkvc_sigmoid_batch(rwkvc_expf_fn exp_fn, const float *x, float *y, size_t n) {
    for (size_t i = 0; i < n; i++) {
        y[i] = -x[i];
    }
    exp_fn(y, n);
    for (size_t i = 0; i < n; i++) {
        y[i] = 1.0f / (1.0f + y[i]);
    }
}

/*
 * The algorithm's constants (glibc's __exp2f_data, ARM optimized-routines' exp2f_data; EXP2F_TABLE_BITS = 5):
 * table entry i is the bits of 2^(i/32) less i << 47, so that adding k << 47 (k the rounded x * 32/ln2) puts
 * k / 32 into the exponent.
 */
extern const uint64_t rwkvc_exp2f_table[32];
#define RWKVC_EXPF_INV_LN2_N 0x1.71547652b82fep+5 /* 32 / ln 2 */
#define RWKVC_EXPF_SHIFT 0x1.8p+52                /* rounds to an integer in the low mantissa bits */
#define RWKVC_EXPF_C0 0x1.c6af84b912394p-20       /* cubic in r for 2^(r/32) - 1, r in [-1/2, 1/2] */
#define RWKVC_EXPF_C1 0x1.ebfce50fac4f3p-13
#define RWKVC_EXPF_C2 0x1.62e42ff0c52d6p-6
/* |x| at or above this (bits of |x| >= 0x42a00000) takes expf itself: the library's overflow, underflow and
   NaN paths start at |x| >= 88. */
#define RWKVC_EXPF_SPECIAL_ABS_BITS 0x42a00000u

#endif /* RWKVC_VEXP_H */
