/*
 * model.h: the loaded model: the GGUF mapping, hyperparameters, and per-layer views of the weights.
 *
 * Matrices stay at their address in the read-only mapping (private_weights.c may swap the pages behind it for a
 * private copy of the same bytes); each is described by an rwkvc_weight with the kernels
 * chosen for its type at load. 1-D parameters (norms, token-shift coefficients, decay biases...) are tiny and
 * are converted to owned fp32 copies at load, whatever their stored type.
 *
 * Versions plug in through rwkvc_arch_ops: the loader binds the architecture named in general.architecture to
 * one ops table (forward_v7.c for "rwkv7"), which fills the version-specific layer fields, sizes the scratch and
 * runs chunks of tokens. Another version adds its fields to rwkvc_layer, a loader function and an ops table.
 */
#ifndef RWKVC_MODEL_H
#define RWKVC_MODEL_H

#include <stddef.h>
#include <stdint.h>

#include "gguf.h"
#include "kernels.h"
#include "model_file.h"
#include "rwkvc.h"

/* A weight matrix of rows x cols (GGUF ne = [cols, rows]) in the mapping, with its kernels. */
typedef struct {
    const void *data;                   /* Row r starts at (const char *)data + r * row_bytes. */
    uint32_t type;                      /* rwkvc_type */
    size_t rows;
    size_t cols;                        /* The dot-product (input) dimension. */
    size_t row_bytes;
    const rwkvc_matmul_kernels *kern;   /* Chosen for the model's instruction set; never NULL once loaded. */
} rwkvc_weight;

/*
 * One block's parameters. Vectors are fp32 copies owned by the model (NULL when the version lacks them).
 * D = n_embd, F = n_ffn, H heads of N; R* = LoRA ranks (per layer, from the shapes).
 */
typedef struct {
    const float *ln1_w, *ln1_b;     /* [D] */
    const float *ln2_w, *ln2_b;     /* [D] */
    const float *lnx_w, *lnx_b;     /* [D] group norm of the time-mix output (v5+) */

    /* v7 time mix. */
    const float *mix;               /* [6][D] token-shift coefficients, order r, w, k, v, a, g */
    const float *w0, *a0, *v0;      /* [D] decay bias, iclr bias, value-residual bias (v0 NULL in block 0) */
    const float *k_k, *k_a;         /* [D] */
    const float *r_k;               /* [H][N] bonus weights */
    rwkvc_weight w1, w2;            /* (Rw, D), (D, Rw): decay LoRA */
    rwkvc_weight a1, a2;            /* (Ra, D), (D, Ra): iclr LoRA */
    rwkvc_weight v1, v2;            /* (Rv, D), (D, Rv): value-residual LoRA (unused in block 0) */
    rwkvc_weight g1, g2;            /* (Rg, D), (D, Rg): gate LoRA */

    rwkvc_weight att_r, att_k, att_v, att_o; /* (D, D) receptance, key, value, output */

    /* Channel mix. */
    const float *ffn_mix_k;         /* [D] */
    rwkvc_weight ffn_k;             /* (F, D) */
    rwkvc_weight ffn_v;             /* (D, F) */

    /*
     * v4–v6 (forward_v4.c, forward_v5.c, forward_v6.c; unused by v7). Decay and bonus are expanded to D channels
     * and precomputed at load: decay is v4 w~ = -exp(w), v5 d = exp(-exp(w)), v6 the raw w (decay is per token).
     */
    const float *decay, *first;     /* [D] decay (see above), bonus u used directly */
    const float *mu_k, *mu_v, *mu_r, *mu_g; /* [D] v4/v5 raw token-shift mu: x*mu + prev*(1-mu) (mu_g: 5.1+) */
    const float *maa_x, *maa;       /* v6: [D], [5][D] order w, k, v, r, g: x + (prev-x)*mu */
    rwkvc_weight gate;              /* (D, D) v5.1+, v6 */
    rwkvc_weight maa_w1;            /* (5 Rm, D) v6 token-shift LoRA */
    rwkvc_weight maa_w2[5];         /* (D, Rm) each, order w, k, v, r, g */
    rwkvc_weight decay_w1, decay_w2; /* (Rd, D), (D, Rd) v6 decay LoRA */
    const float *ffn_mix_r;         /* [D] channel-mix receptance shift (v4/v5 raw mu, v6 maa) */
    rwkvc_weight ffn_r;             /* (D, D) channel-mix receptance */
} rwkvc_layer;

typedef struct rwkvc_arch_ops rwkvc_arch_ops;

struct rwkvc_private_weights;

struct rwkvc_model {
    rwkvc_gguf *gguf;               /* Owned; the weights point into its mapping. */
    struct rwkvc_private_weights *private_weights; /* Owned; moves the mapping into private memory, or NULL. */
    rwkvc_info info;
    const rwkvc_arch_ops *ops;
    uint32_t n_threads;             /* Default worker count for new contexts. */
    rwkvc_isa isa;                  /* Kernel level chosen at load (scalar with RWKVC_FORCE_SCALAR=1). */
    float ln_eps;                   /* LayerNorm eps (metadata, default 1e-5). */

    rwkvc_weight emb;               /* (V, D) token embedding, any type with a dequantize_row. */
    const rwkvc_type_traits *emb_traits;
    const float *ln0_w, *ln0_b;     /* [D] applied to each embedding row at run time (not folded). */
    const float *lnout_w, *lnout_b; /* [D] */
    rwkvc_weight head;              /* (V, D) */
    rwkvc_layer *layers;            /* [n_layer] */

    size_t max_rank;                /* Largest LoRA rank over all layers (scratch sizing). */
    size_t max_act_bytes;           /* Largest prepared-activation size of one vector over all matrices. */

    /* v4–v6 (set by their loaders). */
    float gn_eps;                   /* Group-norm eps after the WKV: v5 metadata (default 64e-5), v6 64e-5. */
    uint32_t rescale_every;         /* R: x is halved after every block i with (i+1) % R == 0; 0 = never. */

    float **owned;                  /* Owned fp32 copies of every vector (one allocation each). */
    size_t n_owned, cap_owned;
};

/*
 * Builds a model from an opened GGUF, taking ownership of g (closed on failure too).
 * Used by rwkvc_model_load and by tests that build files in memory.
 */
rwkvc_status rwkvc_model_from_gguf(rwkvc_gguf *g, uint32_t n_threads, rwkvc_model **out);

/* ---- Helpers for the per-version loaders (model.c) ---- */

/* Looks up a matrix: must exist, have ne = [cols, rows] and a type with kernels. */
rwkvc_status rwkvc_load_matrix(rwkvc_model *m, const char *name, size_t rows, size_t cols, rwkvc_weight *out);

/* Same, but the rows are read from the tensor (ne = [cols, any]); for LoRA matrices whose rank is free. */
rwkvc_status rwkvc_load_matrix_rows(rwkvc_model *m, const char *name, size_t cols, rwkvc_weight *out);

/*
 * Loads a vector of n elements as an fp32 copy. The stored shape must equal `ne` (n_ne entries) once size-1 dims
 * are dropped from both; alt_ne (may be NULL) is a second accepted shape.
 */
rwkvc_status rwkvc_load_vector(rwkvc_model *m, const char *name, const uint64_t *ne, int n_ne, const uint64_t *alt_ne,
                               int n_alt, const float **out);

/* An uninitialised fp32 array of n floats owned (and freed) by the model; NULL when out of memory (v4–v6). */
float *rwkvc_model_alloc_floats(rwkvc_model *m, size_t n);

#endif /* RWKVC_MODEL_H */
