/*
 * backend_cuda.h: the CUDA backend of a context (the .cu files in src/cuda when built with -DRWKVC_CUDA=ON,
 * backend_cuda_stub.c otherwise).
 *
 * A backend holds the model's weights resident on one GPU, device copies of the activations, and a device
 * copy of one recurrent state. The state stays caller-owned on the host in the public API: each call uploads
 * it, runs every block on the GPU and writes it back, so CPU and GPU contexts can share State objects.
 */
#ifndef RWKVC_BACKEND_CUDA_H
#define RWKVC_BACKEND_CUDA_H

#include <stddef.h>
#include <stdint.h>

#include "rwkvc.h"

#ifdef __cplusplus
extern "C" {
#endif

struct rwkvc_model;
typedef struct rwkvc_cuda rwkvc_cuda;

/*
 * Uploads m's weights to GPU `device`. n_gpu_layers 0 places every block; other values must currently equal
 * n_layer (placing only the first N blocks is not implemented yet). RWKVC_ERR_BACKEND when the build has no
 * CUDA, no device is usable, or a weight type has no GPU kernel.
 */
rwkvc_status rwkvc_cuda_new(const struct rwkvc_model *m, int device, uint32_t n_gpu_layers, rwkvc_cuda **out);

/* Frees the device memory. NULL-safe. */
void rwkvc_cuda_free(rwkvc_cuda *g);

/*
 * Runs n_tokens validated tokens (the caller checked ids and lengths), reading and updating the host state
 * (state_len floats). logits: NULL, float32[n_vocab] for the last token, or float32[n_tokens][n_vocab] if all.
 */
rwkvc_status rwkvc_cuda_eval(rwkvc_cuda *g, const uint32_t *tokens, size_t n_tokens, float *state, float *logits,
                             int all);

#ifdef __cplusplus
}
#endif

#endif /* RWKVC_BACKEND_CUDA_H */
