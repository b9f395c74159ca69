/*
 * rwkvc.h: the public C API of the rwkvchat native runtime.
 *
 * A small C11 library that runs RWKV language models (v4 to v7) stored in GGUF files.
 * It reports and never decides: every function returns an rwkvc_status, a detail message is
 * kept per thread (rwkvc_last_error), and nothing is printed, exited or aborted on bad input.
 *
 * Ownership: *_load / *_new pair with *_free. Out-parameters are written only on success.
 * The recurrent state is a caller-owned float buffer; every buffer comes with its length.
 * Threading: a model is immutable after load and may be shared by threads; a context (scratch
 * activations and a worker pool) must be used by one thread at a time.
 */
#ifndef RWKVC_H
#define RWKVC_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(_WIN32)
#define RWKVC_API __declspec(dllexport)
#else
#define RWKVC_API __attribute__((visibility("default")))
#endif

/* Bumped on any change to a signature or struct below; _native.py refuses a mismatch. */
#define RWKVC_ABI_VERSION 3

typedef struct rwkvc_model rwkvc_model;         /* Weights (mmap of the file) + metadata; immutable after load. */
typedef struct rwkvc_ctx rwkvc_ctx;             /* Scratch activations + worker threads; one user thread at a time. */
typedef struct rwkvc_tokenizer rwkvc_tokenizer; /* Greedy longest-match byte tokenizer (RWKV World). */

typedef enum {
    RWKVC_OK = 0,
    RWKVC_ERR_ARG = 1,      /* A NULL pointer, a token id out of range, an unknown type name... */
    RWKVC_ERR_IO = 2,       /* The file cannot be opened, read or mapped. */
    RWKVC_ERR_FORMAT = 3,   /* The file is not a valid model: bad magic, bad tensor table, wrong shape... */
    RWKVC_ERR_VERSION = 4,  /* A valid file of an unsupported version or architecture. */
    RWKVC_ERR_NOMEM = 5,    /* An allocation failed. */
    RWKVC_ERR_SIZE = 6,     /* A caller buffer has the wrong length. */
    RWKVC_ERR_BACKEND = 7,  /* The requested backend (CUDA) is unavailable. */
    RWKVC_ERR_INTERNAL = 8  /* A bug: an internal invariant failed. */
} rwkvc_status;

/* Tensor element types: the ggml / GGUF type ids, so a file's type field is used as it is. */
typedef enum {
    RWKVC_TYPE_F32 = 0,
    RWKVC_TYPE_F16 = 1,
    RWKVC_TYPE_Q4_0 = 2,
    RWKVC_TYPE_Q4_1 = 3,
    RWKVC_TYPE_Q5_0 = 6,
    RWKVC_TYPE_Q5_1 = 7,
    RWKVC_TYPE_Q8_0 = 8,
    RWKVC_TYPE_Q8_1 = 9,
    RWKVC_TYPE_Q2_K = 10,
    RWKVC_TYPE_Q3_K = 11,
    RWKVC_TYPE_Q4_K = 12,
    RWKVC_TYPE_Q5_K = 13,
    RWKVC_TYPE_Q6_K = 14,
    RWKVC_TYPE_Q8_K = 15,
    RWKVC_TYPE_BF16 = 30
} rwkvc_type;

/* GGUF metadata value types, as stored in the file. */
typedef enum {
    RWKVC_META_U8 = 0, RWKVC_META_I8 = 1, RWKVC_META_U16 = 2, RWKVC_META_I16 = 3,
    RWKVC_META_U32 = 4, RWKVC_META_I32 = 5, RWKVC_META_F32 = 6, RWKVC_META_BOOL = 7,
    RWKVC_META_STRING = 8, RWKVC_META_ARRAY = 9, RWKVC_META_U64 = 10, RWKVC_META_I64 = 11,
    RWKVC_META_F64 = 12
} rwkvc_meta_type;

typedef struct {
    /* Architecture version times ten: 40, 50, 51, 52, 60 or 70 (5.0/5.1/5.2 as the official package names them). */
    uint32_t arch_version;
    uint32_t n_vocab;
    uint32_t n_embd;
    uint32_t n_layer;
    uint32_t n_ffn;
    uint32_t head_size;   /* N; 0 for v4. */
    uint32_t n_head;      /* H = n_embd / head_size; 0 for v4. */
    uint32_t weight_type; /* rwkvc_type of the largest share of matrix bytes. */
    size_t state_len;     /* Floats in one recurrent state. */
    uint64_t n_params;    /* Elements in all tensors. */
    uint64_t file_size;   /* Bytes. */
    uint64_t n_meta;      /* Metadata key/value pairs in the file. */
    uint64_t n_tensors;
} rwkvc_info;

/* Returns RWKVC_ABI_VERSION of the compiled library. */
RWKVC_API uint32_t rwkvc_abi_version(void);

/* Returns a static English name for a status ("ok", "invalid argument", ...). */
RWKVC_API const char *rwkvc_status_str(rwkvc_status s);

/*
 * Returns the detail message of the last failed call on this thread ("" if none).
 * The pointer stays valid until the next rwkvc_ call on the same thread.
 */
RWKVC_API const char *rwkvc_last_error(void);

/*
 * Returns a static description of the kernels chosen for this CPU, e.g. "AVX2=1 AVX512=1 ... kernels=avx512".
 * UNIFORM_CORES=1: the CPU reports cores of one kind, and contexts split each job into one chunk per thread
 * (two otherwise, so a fast core of a hybrid CPU can take over work).
 */
RWKVC_API const char *rwkvc_system_info(void);

/* Where a loaded model's weights are read from (rwkvc_model_load_ex). */
typedef enum {
    /* The file mapping at first, moved into private huge-page memory by a background thread when that fits
       (Linux with transparent huge pages, at least 16 MiB of weights, at most half of MemAvailable); else mapped.
       Loading and the first token cost what a plain mmap costs; decode gets faster once the move is done. */
    RWKVC_WEIGHTS_AUTO = 0,
    /* The file mapping only (zero-copy; pages shared with other processes reading the file). */
    RWKVC_WEIGHTS_MMAP = 1,
    /* Moved into private memory before the load returns (llama.cpp's --no-mmap); fails if it cannot be. */
    RWKVC_WEIGHTS_COPY = 2
} rwkvc_weights_mode;

/*
 * Loads a GGUF model and validates it fully; the weights stay in the read-only mapping of the file, or are
 * moved into private memory as weights_mode says (the embedding stays mapped: decode reads one row of it).
 * Moving never changes a result: the engine reads the same bytes at the same addresses.
 * - path: UTF-8 file path.
 * - n_threads: default worker count for contexts made from this model (0 = number of CPUs).
 * - weights_mode: an rwkvc_weights_mode.
 * - out: receives the model on RWKVC_OK; untouched otherwise.
 * Environment: RWKVC_FORCE_SCALAR=1 selects the scalar reference kernels (read at load).
 */
RWKVC_API rwkvc_status rwkvc_model_load_ex(const char *path, uint32_t n_threads, uint32_t weights_mode,
                                           rwkvc_model **out);

/* rwkvc_model_load_ex with RWKVC_WEIGHTS_AUTO. */
RWKVC_API rwkvc_status rwkvc_model_load(const char *path, uint32_t n_threads, rwkvc_model **out);

/*
 * Bytes of weights moved into private memory so far (*moved) out of those to move (*total; 0 when they stay
 * mapped). wait != 0 first waits for a background move to end (also if it ended early on an error).
 */
RWKVC_API rwkvc_status rwkvc_model_weights_moved(rwkvc_model *m, uint32_t wait, uint64_t *moved, uint64_t *total);

/* Frees a model. NULL-safe. Every context made from it must be freed first. */
RWKVC_API void rwkvc_model_free(rwkvc_model *m);

/* Fills *out with sizes and types. */
RWKVC_API rwkvc_status rwkvc_model_info(const rwkvc_model *m, rwkvc_info *out);

/*
 * Describes tensor i (0 <= i < info.n_tensors): its name (borrowed, valid while m lives, not
 * NUL-terminated: use name_len), type, number of dims and ne (ggml order, innermost first).
 * - ne: 4 entries; unused dims are 1.
 */
RWKVC_API rwkvc_status rwkvc_model_tensor(const rwkvc_model *m, uint64_t i, const char **name, size_t *name_len,
                                          uint32_t *type, uint32_t *n_dims, uint64_t ne[4]);

/* Metadata key i (0 <= i < info.n_meta); borrowed and not NUL-terminated. */
RWKVC_API rwkvc_status rwkvc_model_meta_key(const rwkvc_model *m, uint64_t i, const char **key, size_t *key_len);

/*
 * Type of the value under key: *value_type is an rwkvc_meta_type; for arrays *array_type is the
 * element type and *count the element count (count = 1 for scalars). RWKVC_ERR_ARG if absent.
 */
RWKVC_API rwkvc_status rwkvc_model_meta_kind(const rwkvc_model *m, const char *key, uint32_t *value_type,
                                             uint32_t *array_type, uint64_t *count);

/* Integer or bool value (index 0 for a scalar, the element index for an array).
   A u64 is returned as its bit pattern: one above INT64_MAX comes back negative (add 2^64). */
RWKVC_API rwkvc_status rwkvc_model_meta_int(const rwkvc_model *m, const char *key, uint64_t index, int64_t *out);

/* Float value of an f32/f64 (or integer) entry. */
RWKVC_API rwkvc_status rwkvc_model_meta_float(const rwkvc_model *m, const char *key, uint64_t index, double *out);

/* String value (borrowed pointer into the mapped file, not NUL-terminated, valid while m lives). */
RWKVC_API rwkvc_status rwkvc_model_meta_string(const rwkvc_model *m, const char *key, uint64_t index,
                                               const char **out, size_t *out_len);

/*
 * All elements of a string array in one call (e.g. 65536 tokenizer entries).
 * - ptrs, lens: caller arrays of exactly count entries, count equal to the array's length.
 */
RWKVC_API rwkvc_status rwkvc_model_meta_strings(const rwkvc_model *m, const char *key, const char **ptrs,
                                                size_t *lens, size_t count);

/*
 * Makes a context: scratch buffers and a worker pool that lives until rwkvc_ctx_free.
 * Borrows m: free the context before the model.
 * - n_threads: worker count (0 = the model's default).
 */
RWKVC_API rwkvc_status rwkvc_ctx_new(const rwkvc_model *m, uint32_t n_threads, rwkvc_ctx **out);

/* Frees a context. NULL-safe. */
RWKVC_API void rwkvc_ctx_free(rwkvc_ctx *c);

/* Writes the initial (empty-history) state: zeros, with v4's pp entries at -1e30. state_len must equal info.state_len. */
RWKVC_API rwkvc_status rwkvc_state_init(const rwkvc_model *m, float *state, size_t state_len);

/*
 * Feeds n_tokens (>= 1) tokens, batching the matrix products over them (sequence mode).
 * - state: float32[state_len], read and updated in place. Left unchanged if an argument is invalid.
 * - logits: NULL to skip the output head, else float32[logits_len] with logits_len == n_vocab,
 *   receiving the last token's logits.
 * Each token id must be < n_vocab (RWKVC_ERR_ARG otherwise, checked before anything runs).
 */
RWKVC_API rwkvc_status rwkvc_eval(rwkvc_ctx *c, const uint32_t *tokens, size_t n_tokens, float *state,
                                  size_t state_len, float *logits, size_t logits_len);

/*
 * As rwkvc_eval, but writes the logits of every token: logits is float32[n_tokens][n_vocab] and
 * logits_len must equal n_tokens * n_vocab. Used for perplexity and for conformance tests.
 */
RWKVC_API rwkvc_status rwkvc_eval_all(rwkvc_ctx *c, const uint32_t *tokens, size_t n_tokens, float *state,
                                      size_t state_len, float *logits, size_t logits_len);

/* ---- Block quantization (ggml-compatible layouts) ---- */

/* Name ("q4_0"), elements per block and bytes per block of a type. RWKVC_ERR_ARG for an unknown type. */
RWKVC_API rwkvc_status rwkvc_type_info(uint32_t type, const char **name, size_t *block_size, size_t *block_bytes);

/*
 * Quantizes n_rows rows of row_len floats (row_len a multiple of the block size) with the reference rounding.
 * - dst: dst_len bytes, exactly n_rows * row_len / block_size * block_bytes.
 */
RWKVC_API rwkvc_status rwkvc_quantize(uint32_t type, const float *src, size_t n_rows, size_t row_len, void *dst,
                                      size_t dst_len);

/* Dequantizes n elements (a multiple of the block size) from src (src_len bytes) into dst (n floats). */
RWKVC_API rwkvc_status rwkvc_dequantize(uint32_t type, const void *src, size_t src_len, float *dst, size_t n);

/* ---- Tokenizer: greedy longest match over bytes (RWKV World) ---- */

/*
 * Builds a tokenizer from a vocabulary: token id i is the byte string tokens[i] of token_lens[i] bytes.
 * Empty entries (length 0) are never produced (id 0, padding). Copies what it needs.
 */
RWKVC_API rwkvc_status rwkvc_tokenizer_new(const uint8_t *const *tokens, const size_t *token_lens, size_t n_tokens,
                                           rwkvc_tokenizer **out);

/* Frees a tokenizer. NULL-safe. */
RWKVC_API void rwkvc_tokenizer_free(rwkvc_tokenizer *t);

/*
 * Encodes text_len bytes. ids has ids_cap entries; text_len entries always suffice.
 * *n_ids receives the count. RWKVC_ERR_SIZE if ids_cap is too small; RWKVC_ERR_FORMAT if a byte
 * has no token (a vocabulary without all 256 single bytes).
 */
RWKVC_API rwkvc_status rwkvc_tokenizer_encode(const rwkvc_tokenizer *t, const uint8_t *text, size_t text_len,
                                              uint32_t *ids, size_t ids_cap, size_t *n_ids);

/* ---- GPU ---- */

/*
 * Makes a context whose rwkvc_eval / rwkvc_eval_all run every block on CUDA GPU `device` (0 = the first),
 * with the weights resident in GPU memory. The state stays the caller's host buffer, as for CPU contexts.
 * - n_gpu_layers: 0 = all blocks (the only supported placement so far besides n_layer itself).
 * RWKVC_ERR_BACKEND when the library was built without CUDA, no device is usable, the weights do not fit,
 * or the model's version or a weight type has no GPU kernels (RWKV-7 with f32/f16/bf16/q8_0/q4_0 is supported).
 */
RWKVC_API rwkvc_status rwkvc_ctx_new_cuda(const rwkvc_model *m, int device, uint32_t n_gpu_layers, rwkvc_ctx **out);

#ifdef __cplusplus
}
#endif

#endif /* RWKVC_H */
