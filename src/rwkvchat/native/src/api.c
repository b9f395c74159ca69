/*
 * api.c: the public context and evaluation functions. Every argument is checked before the state is touched,
 * so a failed call leaves the caller's state exactly as it was.
 */
#include <stdlib.h>
#include <string.h>

#include "backend_cuda.h"
#include "cpu.h"
#include "forward.h"
#include "private_weights.h"
#include "status.h"

/* Tokens per chunk: large enough to read each weight row once per many tokens, bounded so that the scratch of a
   context stays within SCRATCH_BUDGET bytes for big models. */
#define MAX_CHUNK 256
#define SCRATCH_BUDGET ((size_t)24 << 20)

RWKVC_API rwkvc_status rwkvc_ctx_new(const rwkvc_model *m, uint32_t n_threads, rwkvc_ctx **out) {
    rwkvc_clear_error();
    if (!m || !out) {
        return rwkvc_fail(RWKVC_ERR_ARG, "rwkvc_ctx_new: NULL argument");
    }
    rwkvc_ctx *c = calloc(1, sizeof(*c));
    if (!c) {
        return rwkvc_fail(RWKVC_ERR_NOMEM, "out of memory");
    }
    c->model = m;
    size_t T = MAX_CHUNK;
    while (T > 1 && m->ops->scratch_floats(m, T) * sizeof(float) > SCRATCH_BUDGET) {
        T /= 2;
    }
    c->max_T = T;
    size_t bytes = (m->ops->scratch_floats(m, T) * sizeof(float) + 63) & ~(size_t)63;
    c->scratch = aligned_alloc(64, bytes);
    if (m->max_act_bytes > 0) {
        /* Each slot starts 64-byte aligned (the prepared blocks are read and written with aligned vectors). */
        c->act_cap = RWKVC_ACT_SLOTS * ((T * m->max_act_bytes + 63) & ~(size_t)63);
        c->act = aligned_alloc(64, c->act_cap);
    }
    c->pool = rwkvc_pool_new(n_threads ? n_threads : m->n_threads);
    if (c->pool && rwkvc_cpu_features()->uniform_cores) {
        /*
         * Cores of one kind finish equal chunks together, so one chunk per thread saves the second chunk's claim
         * and cold start: alternating decode runs, 2 threads, 0.4B Q4_0 8.74-9.23 -> 8.49-8.77 ms, 0.4B Q4_K
         * 9.09-9.64 -> 8.85-9.37. Hybrid CPUs keep two, so a fast core can take over a slow core's second chunk.
         */
        rwkvc_pool_set_chunks_per_thread(c->pool, 1);
    }
    if (!c->scratch || (m->max_act_bytes > 0 && !c->act) || !c->pool) {
        rwkvc_ctx_free(c);
        return rwkvc_fail(RWKVC_ERR_NOMEM, "out of memory creating a context (%zu bytes of scratch)", bytes);
    }
    *out = c;
    return RWKVC_OK;
}

RWKVC_API void rwkvc_ctx_free(rwkvc_ctx *c) {
    if (!c) {
        return;
    }
    rwkvc_cuda_free(c->cuda);
    rwkvc_pool_free(c->pool);
    free(c->scratch);
    free(c->act);
    free(c);
}

RWKVC_API rwkvc_status rwkvc_state_init(const rwkvc_model *m, float *state, size_t state_len) {
    rwkvc_clear_error();
    if (!m || !state) {
        return rwkvc_fail(RWKVC_ERR_ARG, "rwkvc_state_init: NULL argument");
    }
    if (state_len != m->info.state_len) {
        return rwkvc_fail(RWKVC_ERR_SIZE, "state buffer has %zu floats, expected %zu", state_len, m->info.state_len);
    }
    m->ops->state_init(m, state);
    return RWKVC_OK;
}

static rwkvc_status eval_common(const char *fn, rwkvc_ctx *c, const uint32_t *tokens, size_t n_tokens, float *state,
                                size_t state_len, float *logits, size_t logits_len, int all) {
    rwkvc_clear_error();
    if (!c || !tokens || !state || (all && !logits)) {
        return rwkvc_fail(RWKVC_ERR_ARG, "%s: NULL argument", fn);
    }
    const rwkvc_model *m = c->model;
    const size_t V = m->info.n_vocab;
    if (n_tokens < 1) {
        return rwkvc_fail(RWKVC_ERR_ARG, "%s: n_tokens must be at least 1", fn);
    }
    if (state_len != m->info.state_len) {
        return rwkvc_fail(RWKVC_ERR_SIZE, "state buffer has %zu floats, expected %zu", state_len, m->info.state_len);
    }
    if (logits) {
        size_t want = all ? n_tokens * V : V;
        if (all && n_tokens > SIZE_MAX / V) {
            return rwkvc_fail(RWKVC_ERR_SIZE, "logits buffer size overflows");
        }
        if (logits_len != want) {
            return rwkvc_fail(RWKVC_ERR_SIZE, "logits buffer has %zu floats, expected %zu", logits_len, want);
        }
    }
    for (size_t i = 0; i < n_tokens; i++) {
        if (tokens[i] >= V) {
            return rwkvc_fail(RWKVC_ERR_ARG, "token id %u out of range (n_vocab %zu)", tokens[i], V);
        }
    }
    if (c->cuda) {
        return rwkvc_cuda_eval(c->cuda, tokens, n_tokens, state, logits, all);
    }
    rwkvc_private_weights_eval_begin(m->private_weights);
    for (size_t done = 0; done < n_tokens;) {
        size_t T = n_tokens - done;
        if (T > c->max_T) {
            T = c->max_T;
        }
        int last = done + T == n_tokens;
        float *lg = NULL;
        if (all) {
            lg = logits + done * V;
        } else if (last) {
            lg = logits;
        }
        m->ops->eval_chunk(c, tokens + done, T, state, lg, all);
        done += T;
    }
    rwkvc_private_weights_eval_end(m->private_weights);
    return RWKVC_OK;
}

RWKVC_API rwkvc_status rwkvc_eval(rwkvc_ctx *c, const uint32_t *tokens, size_t n_tokens, float *state,
                                  size_t state_len, float *logits, size_t logits_len) {
    return eval_common("rwkvc_eval", c, tokens, n_tokens, state, state_len, logits, logits_len, 0);
}

RWKVC_API rwkvc_status rwkvc_eval_all(rwkvc_ctx *c, const uint32_t *tokens, size_t n_tokens, float *state,
                                      size_t state_len, float *logits, size_t logits_len) {
    return eval_common("rwkvc_eval_all", c, tokens, n_tokens, state, state_len, logits, logits_len, 1);
}
