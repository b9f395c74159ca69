/*
 * backend_cuda_stub.c: the CUDA backend of a build without CUDA (see backend_cuda.h). Every entry point
 * reports RWKVC_ERR_BACKEND, so rwkvc_ctx_new_cuda fails cleanly and the CPU path is unchanged.
 */
#include "backend_cuda.h"
#include "status.h"

#ifndef RWKVC_WITH_CUDA

rwkvc_status rwkvc_cuda_new(const struct rwkvc_model *m, int device, uint32_t n_gpu_layers, rwkvc_cuda **out) {
    (void)m;
    (void)device;
    (void)n_gpu_layers;
    (void)out;
    return rwkvc_fail(RWKVC_ERR_BACKEND, "this build has no CUDA support (rebuild with -DRWKVC_CUDA=ON)");
}

void rwkvc_cuda_free(rwkvc_cuda *g) {
    (void)g;
}

rwkvc_status rwkvc_cuda_eval(rwkvc_cuda *g, const uint32_t *tokens, size_t n_tokens, float *state, float *logits,
                             int all) {
    (void)g;
    (void)tokens;
    (void)n_tokens;
    (void)state;
    (void)logits;
    (void)all;
    return rwkvc_fail(RWKVC_ERR_BACKEND, "this build has no CUDA support (rebuild with -DRWKVC_CUDA=ON)");
}

#endif
