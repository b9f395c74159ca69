/*
 * forward.h: what every version's forward pass shares: the context, the per-version ops table, and the
 * building blocks (norms, matrix products over the thread pool, embedding rows).
 *
 * All activations are fp32. A call of rwkvc_eval is cut into chunks of at most ctx->max_T tokens; inside a chunk
 * every projection is one matrix-matrix product over the chunk's tokens, and only the recurrence runs token by
 * token.
 */
#ifndef RWKVC_FORWARD_H
#define RWKVC_FORWARD_H

#include <stddef.h>
#include <stdint.h>

#include "model.h"
#include "threadpool.h"

struct rwkvc_ctx {
    const rwkvc_model *model;
    rwkvc_pool *pool;
    size_t max_T;         /* Tokens per chunk. */
    float *scratch;       /* ops->scratch_floats(model, max_T) floats, 64-byte aligned. */
    void *act;            /* Prepared activations: act_cap bytes (NULL if 0). */
    size_t act_cap;       /* RWKVC_ACT_SLOTS * (max_T * model->max_act_bytes, rounded up to 64 bytes): room for
                             one slot per distinct input of a rwkvc_matmul_multi job. */
    struct rwkvc_cuda *cuda; /* GPU backend (backend_cuda.h) when made by rwkvc_ctx_new_cuda; NULL on the CPU. */
    int decode_team;      /* Whether a single token runs as one team job (forward_v7.c): 0 not decided yet, 1, -1. */
};

struct rwkvc_arch_ops {
    const char *name;                 /* "rwkv7" */
    /*
     * Binds and validates the version's tensors (the common ones are already loaded): fills the layer fields,
     * info.arch_version, info.n_ffn, info.state_len and model->max_rank.
     */
    rwkvc_status (*load)(rwkvc_model *m);
    /* Floats of scratch needed to run chunks of T tokens. */
    size_t (*scratch_floats)(const rwkvc_model *m, size_t T);
    /* Writes the empty-history state (state_len floats). */
    void (*state_init)(const rwkvc_model *m, float *state);
    /*
     * Runs T (1..max_T) valid tokens, updating state in place.
     * logits: NULL (no head), else float32[n_vocab] for the last token, or float32[T][n_vocab] when all_logits.
     */
    void (*eval_chunk)(rwkvc_ctx *c, const uint32_t *tokens, size_t T, float *state, float *logits, int all_logits);
};

/* The ops of RWKV-7 (forward_v7.c). A new version adds its own table and a line in model.c's bind_arch. */
extern const rwkvc_arch_ops rwkvc_ops_v7;

/* y = LN(x; w, b) over n channels (x and y may alias). Mean and variance are accumulated in double. */
void rwkvc_layer_norm(const float *x, float *y, const float *w, const float *b, size_t n, float eps);

/* rwkvc_layer_norm in two steps, so that threads can share one vector: the statistics of all n channels (every
   thread may compute them; they come out the same), then channels [i0, i1). Same bits as rwkvc_layer_norm. */
typedef struct {
    float mean, inv; /* mean, and 1 / sqrt(variance + eps) */
} rwkvc_norm_stats;
rwkvc_norm_stats rwkvc_layer_norm_stats(const float *x, size_t n, float eps);
void rwkvc_layer_norm_range(const float *x, float *y, const float *w, const float *b, rwkvc_norm_stats st, size_t i0,
                            size_t i1);

/* In place group norm: n_groups groups of group_size consecutive channels, then the per-channel affine. */
void rwkvc_group_norm(float *x, const float *w, const float *b, size_t n_groups, size_t group_size, float eps);

/*
 * x = relu(x)^2 over n floats, without branches: ffn pre-activations are positive about half the time at random,
 * so a branch per element mispredicted often enough to cost 2 ns an element (6% of a 512-token prefill).
 */
void rwkvc_relu_sq(float *x, size_t n);

/* x += y over n floats (x and y must not overlap; the definition says restrict, which C++, the CUDA build's
   language for this header, does not have). */
void rwkvc_add(float *x, const float *y, size_t n);

/*
 * Y[t][0..W.rows) = W X[t] for t < n_vec, split over the context's threads by rows.
 * X: n_vec vectors of W->cols floats, x_stride floats apart. Y: row t at Y + t * ldy.
 */
void rwkvc_matmul(rwkvc_ctx *c, const rwkvc_weight *W, const float *X, size_t x_stride, size_t n_vec, float *Y,
                  size_t ldy);

/* One product of a rwkvc_matmul_multi job: Y[t][0..W.rows) = W X[t], with the strides of rwkvc_matmul. */
typedef struct {
    const rwkvc_weight *W;
    const float *X;       /* n_vec vectors of W->cols floats, x_stride floats apart. */
    size_t x_stride;
    float *Y;             /* Row t at Y + t * ldy. */
    size_t ldy;
} rwkvc_mm_op;

/* Most products in one rwkvc_matmul_multi job, and prepared-activation slots of a context (one per distinct input). */
#define RWKVC_MM_MAX_OPS 8
#define RWKVC_ACT_SLOTS 8

/*
 * Runs n_ops (<= RWKVC_MM_MAX_OPS) independent products over n_vec vectors as ONE thread-pool job: the products'
 * rows, taken in order, are cut into rwkvc_pool_chunks_per_thread pieces per thread of about equal bytes (at
 * multiples of 16 rows, as rwkvc_matmul cuts them; a piece may span two products) and the threads share the
 * pieces, so a token pays one hand-off instead of one per product. Each distinct input (same
 * X, x_stride, columns and preparation) is prepared once. Every row is computed by the same kernel call on the
 * same 16-row-aligned range as rwkvc_matmul would use, so the results are identical to n_ops rwkvc_matmul calls.
 * No product may write what another reads.
 */
void rwkvc_matmul_multi(rwkvc_ctx *c, const rwkvc_mm_op *ops, size_t n_ops, size_t n_vec);

/*
 * A matrix-vector product run inside another job: its rows are computed by rwkvc_matvec_rows calls on any threads,
 * over disjoint ranges whose bounds are multiples of 16 (as rwkvc_matmul cuts them, so every row comes out the
 * same). For a decode product too small to pay for a job of its own, next to work that needs its rows piecewise.
 */
typedef struct {
    const rwkvc_weight *W;
    const void *x;        /* the prepared activation, or the float32 vector */
    float *y;             /* W->rows floats */
} rwkvc_matvec_op;

/* Prepares x (W->cols floats) for W on the calling thread, into slot `slot` (< RWKVC_ACT_SLOTS) of the context's
   activation buffer where W's type needs it; no other product may use that slot while op is in use. */
void rwkvc_matvec_prepare(rwkvc_ctx *c, const rwkvc_weight *W, const float *x, float *y, size_t slot,
                          rwkvc_matvec_op *op);

/* y[r0..r1) = rows r0..r1 of W times x. */
void rwkvc_matvec_rows(const rwkvc_matvec_op *op, size_t r0, size_t r1);

/*
 * Products inside a team job (rwkvc_pool_team), for decode: every thread plans the same products, prepares its share
 * of their inputs' columns, meets the others at a barrier, and computes its share of the rows. Rows come out as
 * rwkvc_matmul computes them whatever the split (each row takes the same operations in the same order).
 */
typedef struct {
    size_t n_ops;
    rwkvc_matvec_op op[RWKVC_MM_MAX_OPS]; /* x: the prepared input, or the float32 vector */
    const float *src[RWKVC_MM_MAX_OPS];   /* each product's float32 input */
    int prepares[RWKVC_MM_MAX_OPS];       /* 1: this product's input is prepared into op[i].x (not shared) */
    size_t bytes_before[RWKVC_MM_MAX_OPS]; /* weight bytes of the products before this one */
    size_t total_bytes;
    size_t act_used;                      /* bytes of act taken by the prepared inputs */
} rwkvc_team_products;

/* Thread tid's share [*begin, *end) of [0, n) in nt near-equal parts at multiples of unit (the last may end at n). */
void rwkvc_team_share(size_t n, size_t unit, uint32_t tid, uint32_t nt, size_t *begin, size_t *end);

/*
 * Plans y[i] = W[i] x[i] for n_ops (<= RWKVC_MM_MAX_OPS) products of one vector each; inputs that need preparing
 * take room in act (act_bytes bytes, 64-byte aligned), one copy per distinct input and preparation. Returns 0 when
 * act is too small or a type's preparation cannot be shared out (the caller then takes another path).
 */
int rwkvc_team_plan(rwkvc_team_products *tp, const rwkvc_weight *const *W, const float *const *x, float *const *y,
                    size_t n_ops, void *act, size_t act_bytes);

/* Prepares product i's input over columns [c0, c1) (multiples of its kernels' act_group, or c1 = cols). */
void rwkvc_team_prepare_cols(const rwkvc_team_products *tp, size_t i, size_t c0, size_t c1);

/* Prepares columns [c0, c1) (clipped to each product's columns; multiples of every act_group involved) of every
   input the plan prepares. */
void rwkvc_team_prepare(const rwkvc_team_products *tp, size_t c0, size_t c1);

/* Called after a thread computed rows [r0, r1) of product i. */
typedef void (*rwkvc_team_epilogue_fn)(void *arg, size_t i, size_t r0, size_t r1);

/* Computes thread tid's share of the products' rows: equal bytes of weights, at multiples of unit rows (a multiple
   of 16). epilogue (may be NULL) then runs on each row range this thread computed. */
void rwkvc_team_rows(const rwkvc_team_products *tp, uint32_t tid, uint32_t nt, size_t unit,
                     rwkvc_team_epilogue_fn epilogue, void *arg);

/* Row `token` of the embedding as fp32 (n_embd floats), dequantized with the type's traits. */
void rwkvc_embed_row(const rwkvc_model *m, uint32_t token, float *out);

/* Runs fn over [0, n) on the context's threads when the work (in multiply-adds) is large enough. */
void rwkvc_parallel(rwkvc_ctx *c, size_t n, size_t work, rwkvc_task_fn fn, void *arg);

#endif /* RWKVC_FORWARD_H */
