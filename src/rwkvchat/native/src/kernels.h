/*
 * kernels.h: the matrix-kernel table shared by every weight type and instruction set.
 *
 * Weights are row-major matrices of `rows` rows by `cols` columns (GGUF ne = [cols, rows]); each
 * row is cols / block_size blocks of block_bytes, so a row is row_bytes = cols / block_size * block_bytes.
 * The dot-product dimension is cols (ne0), as ggml quantizes along it.
 *
 * A kernel set is registered per (type, instruction set). The caller (forward pass) converts the
 * float activation once with prepare_act (Q8 blocks for quantized weights, a plain copy or NULL
 * for float weights) and then splits rows among worker threads, calling matvec / matmat on row ranges.
 * Every SIMD kernel has a scalar reference beside it (kernels_ref.c / quant_ref.c) and a test comparing them.
 */
#ifndef RWKVC_KERNELS_H
#define RWKVC_KERNELS_H

#include <stddef.h>
#include <stdint.h>

typedef enum {
    RWKVC_ISA_SCALAR = 0,
    RWKVC_ISA_AVX2 = 1,   /* AVX2 + FMA + F16C */
    RWKVC_ISA_AVX512 = 2, /* AVX-512 F/BW/VL/DQ (+VNNI/BF16 where the kernel checks for them) */
    RWKVC_ISA_NEON = 3
} rwkvc_isa;

/* Element type traits: the block layout and reference conversions. */
typedef struct {
    const char *name;   /* "f32", "f16", "bf16", "q8_0", "q4_k", ... (lower case, as llama.cpp prints them) */
    uint32_t type;      /* rwkvc_type / ggml type id */
    size_t block_size;  /* Elements per block (1 for f32/f16/bf16, 32 for q*_0/q*_1, 256 for K-quants). */
    size_t block_bytes; /* Bytes per block. */
    /* Reference (scalar, exact ggml rounding) conversions; n is a multiple of block_size. NULL if unsupported. */
    void (*quantize_row)(const float *src, void *dst, size_t n);
    void (*dequantize_row)(const void *src, float *dst, size_t n);
} rwkvc_type_traits;

/* Matrix kernels for one weight type on one instruction set. */
typedef struct {
    /*
     * Bytes of prepared activation for one vector of `cols` floats (0: the kernel reads float32 x as is).
     */
    size_t (*act_bytes)(size_t cols);
    /* Converts x (float32[cols]) into xq (act_bytes(cols) bytes). NULL when act_bytes returns 0. */
    void (*prepare_act)(const float *x, void *xq, size_t cols);
    /*
     * y[r] = sum_c W[r][c] * x[c] for r in [row_begin, row_end).
     * - W: the whole matrix; row r starts at (const char *)W + r * row_bytes.
     * - x: prepared activation (or float32[cols] when act_bytes is 0).
     * - y: float32[rows]; only [row_begin, row_end) is written.
     */
    void (*matvec)(const void *W, size_t row_bytes, const void *x, float *y, size_t row_begin, size_t row_end,
                   size_t cols);
    /*
     * Y[t][r] = sum_c W[r][c] * X_t[c] for t < n_vec and r in [row_begin, row_end).
     * - X: n_vec prepared activations, x_stride bytes apart (float32[cols] each when act_bytes is 0).
     * - Y: row t starts at Y + t * ldy (ldy >= rows floats).
     * May be NULL: the caller then loops matvec over t (correct, slower).
     * Float-weight SIMD kernels with n_vec >= RWKVC_GEMM_MIN_VEC may sum in another order than matvec (a blocked
     * GEMM: see rwkvc_float_matmat_fma_ref); below it row t equals matvec of X_t bit for bit. Quantized types sum
     * each block exactly and scale in fp32, but not always in matvec's order: the AVX-512 decode kernels (matvec)
     * take several blocks per register and sum them otherwise than its matmat, so there row t is within rounding
     * of matvec's, not its bits.
     */
    void (*matmat)(const void *W, size_t row_bytes, const void *X, size_t x_stride, size_t n_vec, float *Y,
                   size_t ldy, size_t row_begin, size_t row_end, size_t cols);
    /*
     * Optional sequence mode on activations prepared as a whole (NULL in most sets): for n_vec >=
     * RWKVC_GEMM_MIN_VEC, when seq_act_bytes(cols) is not 0 now (it depends on the CPU and on test hooks), the
     * caller may run prepare_seq once and then matmat_seq on row ranges instead of matmat.
     * - seq_act_bytes: bytes per vector; n_vec vectors take rwkvc_seq_act_total(seq_act_bytes, n_vec) bytes
     *   (vectors are grouped, and the last group is padded).
     * - prepare_seq: X holds n_vec float32[cols] vectors x_stride floats apart; Xp receives the prepared block.
     * - matmat_seq: Y as in matmat. Its sums are not matvec's nor rwkvc_float_matmat_fma_ref's bits: each set
     *   documents its accuracy, and its result does not depend on the row range or the thread split either.
     */
    size_t (*seq_act_bytes)(size_t cols);
    void (*prepare_seq)(const float *X, size_t x_stride, size_t n_vec, void *Xp, size_t cols);
    void (*matmat_seq)(const void *W, size_t row_bytes, const void *Xp, size_t n_vec, float *Y, size_t ldy,
                       size_t row_begin, size_t row_end, size_t cols);
    /*
     * Elements per independently prepared group of prepare_act's q8 act layout (quant.h): 32, or 256 for the
     * super-block variant. Preparing columns [c0, c1) at multiples of it (c1 may be cols) on their own gives the
     * same bytes as the whole vector, so threads can share the preparation. 0 when act_bytes is 0.
     */
    size_t act_group;
} rwkvc_matmul_kernels;

/* Vectors per group of a prepare_seq block: n_vec vectors take whole groups. */
#define RWKVC_SEQ_GROUP 16

/* Bytes of a prepare_seq block of n_vec vectors of seq_bytes bytes each. */
static inline size_t rwkvc_seq_act_total(size_t seq_bytes, size_t n_vec) {
    return (n_vec + RWKVC_SEQ_GROUP - 1) / RWKVC_SEQ_GROUP * RWKVC_SEQ_GROUP * seq_bytes;
}

/*
 * Test hook: non-zero keeps the f16/bf16 sequence mode off AMX (seq_act_bytes returns 0), on the blocked FMA GEMM
 * whose bits are rwkvc_float_matmat_fma_ref's.
 */
extern int rwkvc_float_disable_amx;

/*
 * Sequence-mode threshold of the float (f32/f16/bf16) SIMD kernels: matmat with at least this many vectors runs
 * a blocked GEMM whose outputs are each one fp32 fused multiply-add chain over the columns in order, which is
 * faster for many tokens but not bit-identical with matvec.
 */
#define RWKVC_GEMM_MIN_VEC 32

/*
 * Scalar reference of that GEMM: Y[t][r] = fmaf chain over c = 0 .. cols-1 of W[r][c] * X_t[c], starting from 0,
 * for t < n_vec and r in [row_begin, row_end). Arguments as matmat's; type is 0 (f32), 1 (f16) or 30 (bf16),
 * other types are ignored. The SIMD GEMMs must give these bits exactly.
 */
void rwkvc_float_matmat_fma_ref(uint32_t type, const void *W, size_t row_bytes, const void *X, size_t x_stride,
                                size_t n_vec, float *Y, size_t ldy, size_t row_begin, size_t row_end, size_t cols);

/* Traits of a type, or NULL if the type is unknown to this library. */
const rwkvc_type_traits *rwkvc_type_traits_get(uint32_t type);

/* The best instruction set this CPU supports (RWKVC_FORCE_SCALAR is handled by the caller). */
rwkvc_isa rwkvc_isa_detect(void);

/* Short name of an instruction set ("scalar", "avx2", "avx512", "neon"). */
const char *rwkvc_isa_name(rwkvc_isa isa);

/*
 * Kernels for a weight type at the best level <= isa that implements it, falling back to scalar.
 * NULL if the type has no kernels at all.
 */
const rwkvc_matmul_kernels *rwkvc_matmul_get(uint32_t type, rwkvc_isa isa);

/*
 * Per-file registries consulted by rwkvc_matmul_get; each returns NULL for a type it lacks.
 * Float types (f32, f16, bf16) live in kernels_{ref,avx2,avx512,neon}.c;
 * block-quantized types in quant_{ref,avx2,avx512,neon}.c.
 */
const rwkvc_matmul_kernels *rwkvc_float_kernels_ref(uint32_t type);
const rwkvc_matmul_kernels *rwkvc_float_kernels_avx2(uint32_t type);
const rwkvc_matmul_kernels *rwkvc_float_kernels_avx512(uint32_t type);
const rwkvc_matmul_kernels *rwkvc_float_kernels_neon(uint32_t type);
const rwkvc_matmul_kernels *rwkvc_quant_kernels_ref(uint32_t type);
const rwkvc_matmul_kernels *rwkvc_quant_kernels_avx2(uint32_t type);
const rwkvc_matmul_kernels *rwkvc_quant_kernels_avx512(uint32_t type);
const rwkvc_matmul_kernels *rwkvc_quant_kernels_neon(uint32_t type);
/* Traits of block-quantized types (quant_ref.c); NULL for other types. */
const rwkvc_type_traits *rwkvc_quant_traits(uint32_t type);

#endif /* RWKVC_KERNELS_H */
