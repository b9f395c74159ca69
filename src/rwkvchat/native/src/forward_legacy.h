/*
 * forward_legacy.h: what the RWKV-4, 5.x and 6 forward passes share (forward_legacy.c): the ops tables, the chunk
 * scratch, the chunk driver (embedding, blocks, fp16 rescale, head), the channel mix and the loader helpers.
 *
 * The three generations differ only in their time mix (forward_v4.c, forward_v5.c, forward_v6.c); the channel mix
 * differs only in the token-shift convention (v4/v5 x*mu + prev*(1-mu), v6 x + (prev-x)*mu).
 *
 * State per layer (floats), in the official package's list order so that it compares directly with its states:
 *   v4:      att_x_prev [D], aa [D], bb [D], pp [D], ffn_x_prev [D]                 (5 D; pp starts at -1e30)
 *   v5, v6:  att_x_prev [D], S [H][N][N] indexed [head][key][value], ffn_x_prev [D] ((2 + N) D)
 * The channel mix's x_prev is always the layer's last D floats.
 */
#ifndef RWKVC_FORWARD_LEGACY_H
#define RWKVC_FORWARD_LEGACY_H

#include <math.h>
#include <stddef.h>
#include <stdint.h>

#include "forward.h"
#include "vexp.h"

/* The ops of RWKV-4 (forward_v4.c), RWKV-5.0/5.1/5.2 (forward_v5.c) and RWKV-6 (forward_v6.c). */
extern const rwkvc_arch_ops rwkvc_ops_v4;
extern const rwkvc_arch_ops rwkvc_ops_v5;
extern const rwkvc_arch_ops rwkvc_ops_v6;

/* Scratch buffers of one chunk of T tokens, carved from ctx->scratch. Shapes are [T][D] unless noted. */
typedef struct {
    float *x;               /* Residual stream. */
    float *a;               /* LayerNorm output: ln1 during the time mix, then ln2, then ln_out. */
    float *xk, *xv, *xr, *xg, *xw; /* Token-shifted inputs. */
    float *r, *k, *v, *g;   /* Projections. */
    float *dec;             /* v6: per-token decay d. */
    float *y;               /* WKV output. */
    float *tmp;             /* Projection added to x. */
    float *lora;            /* [T][max_rank] */
    float *ffn;             /* [T][F] */
} rwkvc_legacy_bufs;

/* Floats of scratch for chunks of T tokens (every version uses the same buffers). */
size_t rwkvc_legacy_scratch_floats(const rwkvc_model *m, size_t T);

/*
 * One layer's time mix over the chunk: reads b->a (= LN(x; ln1), T rows) and the layer state st, adds its output
 * to b->x and updates the recurrent part of st. att_x_prev (st[0..D)) is read as the previous token of row 0 and
 * left for the driver to update.
 */
typedef void (*rwkvc_legacy_time_mix_fn)(rwkvc_ctx *c, const rwkvc_layer *ly, size_t T, float *st,
                                         rwkvc_legacy_bufs *b);

/*
 * Runs a chunk of T tokens through every block (see rwkvc_arch_ops.eval_chunk). layer_len: floats per layer of
 * state; v6_shift: the channel mix uses v6's x + (prev-x)*mu instead of x*mu + prev*(1-mu).
 */
void rwkvc_legacy_eval(rwkvc_ctx *c, const uint32_t *tokens, size_t T, float *state, float *logits, int all_logits,
                       size_t layer_len, rwkvc_legacy_time_mix_fn time_mix, int v6_shift);

/* out[t] = a[t] * mu + prev[t] * (1 - mu) with prev[0] = prev0, prev[t] = a[t-1] (v4/v5 token shift). */
void rwkvc_legacy_shift_mu(const float *a, const float *prev0, size_t T, size_t D, const float *mu, float *out);

/*
 * The v5/v6 time mix after the projections (forward_v5.c): the WKV per head over b->r, b->k, b->v with the bonus
 * ly->first and the decay ly->decay (d_stride 0, v5) or b->dec (d_stride D, v6's per-token decay), then the group
 * norm (m->gn_eps), the gate y * silu(b->g) when gated, and x += Wo y. st: the layer state (S at st + D).
 */
void rwkvc_v5_wkv_out(rwkvc_ctx *c, const rwkvc_layer *ly, size_t T, float *st, rwkvc_legacy_bufs *b,
                      size_t d_stride, int gated);

/* ---- Loading ---- */

/* Reads "{arch}.{suffix}" as a non-negative integer; dflt when absent. */
rwkvc_status rwkvc_legacy_meta_u32(const rwkvc_model *m, const char *arch, const char *suffix, uint32_t dflt,
                                   uint32_t *out);

/*
 * Checks "{arch}.architecture_version" against the version found from the tensors (want, e.g. "5.2"): absent is
 * accepted; a different value is a format error.
 */
rwkvc_status rwkvc_legacy_check_version(const rwkvc_model *m, const char *arch, const char *want);

/*
 * Loads a per-channel parameter that may be stored per head ([H]), per channel ([N, H] or [D]), expanded to D
 * floats (channel c takes entry c / N of a per-head tensor) and passed through fn (NULL: unchanged).
 * per_head (may be NULL) receives whether the tensor had H entries (and H != D).
 */
rwkvc_status rwkvc_legacy_load_channels(rwkvc_model *m, const char *name, float (*fn)(float), const float **out,
                                        int *per_head);

/* Binds block l's receptance, key, value, output (D, D) and, when with_gate, gate (D, D) time-mix matrices. */
rwkvc_status rwkvc_legacy_load_att(rwkvc_model *m, uint32_t l, int with_gate);

/* Binds block l's channel mix (lerp_k, lerp_r, key, receptance, value); block 0's key fixes info.n_ffn. */
rwkvc_status rwkvc_legacy_load_ffn(rwkvc_model *m, uint32_t l);

/* Reads {arch}.rescale_every_n_layers into m->rescale_every (absent: 0). */
rwkvc_status rwkvc_legacy_load_rescale(rwkvc_model *m, const char *arch);

#endif /* RWKVC_FORWARD_LEGACY_H */
