/*
 * ctx_cuda.c: rwkvc_ctx_new_cuda, a context whose evaluations run on a GPU (backend_cuda.h).
 *
 * The context is an ordinary one (one worker thread, its CPU scratch) with a CUDA backend attached;
 * api.c's eval hands a context with a backend to rwkvc_cuda_eval after checking the arguments.
 */
#include "backend_cuda.h"
#include "forward.h"
#include "status.h"

RWKVC_API rwkvc_status rwkvc_ctx_new_cuda(const rwkvc_model *m, int device, uint32_t n_gpu_layers, rwkvc_ctx **out) {
    rwkvc_clear_error();
    if (!m || !out) {
        return rwkvc_fail(RWKVC_ERR_ARG, "rwkvc_ctx_new_cuda: NULL argument");
    }
    if (device < 0) {
        return rwkvc_fail(RWKVC_ERR_ARG, "rwkvc_ctx_new_cuda: device index %d is negative", device);
    }
    rwkvc_cuda *g = NULL;
    rwkvc_status st = rwkvc_cuda_new(m, device, n_gpu_layers, &g);
    if (st != RWKVC_OK) {
        return st;
    }
    rwkvc_ctx *c = NULL;
    st = rwkvc_ctx_new(m, 1, &c);
    if (st != RWKVC_OK) {
        rwkvc_cuda_free(g);
        return st;
    }
    c->cuda = g;
    *out = c;
    return RWKVC_OK;
}
