/*
 * forward_common.c: building blocks shared by every version's forward pass (see forward.h).
 */
#include <math.h>
#include <string.h>

#include "forward.h"

void rwkvc_layer_norm(const float *x, float *y, const float *w, const float *b, size_t n, float eps) {
    double mean = 0.0;
    for (size_t i = 0; i < n; i++) {
        mean += x[i];
    }
    mean /= (double)n;
    double var = 0.0;
    for (size_t i = 0; i < n; i++) {
        double d = x[i] - mean;
        var += d * d;
    }
    var /= (double)n;
    const float fm = (float)mean;
    const float inv = (float)(1.0 / sqrt(var + eps));
    for (size_t i = 0; i < n; i++) {
        y[i] = (x[i] - fm) * inv * w[i] + b[i];
    }
}

void rwkvc_group_norm(float *x, const float *w, const float *b, size_t n_groups, size_t group_size, float eps) {
    for (size_t g = 0; g < n_groups; g++) {
        float *xg = x + g * group_size;
        rwkvc_layer_norm(xg, xg, w + g * group_size, b + g * group_size, group_size, eps);
    }
}

void rwkvc_embed_row(const rwkvc_model *m, uint32_t token, float *out) {
    const char *row = (const char *)m->emb.data + (size_t)token * m->emb.row_bytes;
    m->emb_traits->dequantize_row(row, out, m->emb.cols);
}

/* Below this many multiply-adds a job runs on the calling thread: waking workers would cost more. */
#define PARALLEL_MIN_WORK 65536

void rwkvc_parallel(rwkvc_ctx *c, size_t n, size_t work, rwkvc_task_fn fn, void *arg) {
    if (work < PARALLEL_MIN_WORK) {
        fn(arg, 0, n);
        return;
    }
    rwkvc_pool_for(c->pool, n, 1, fn, arg);
}

typedef struct {
    const rwkvc_weight *W;
    const void *X;      /* Prepared activations or float32 vectors. */
    size_t x_stride;    /* Bytes between vectors of X. */
    size_t n_vec;
    float *Y;
    size_t ldy;
} matmul_job;

static void matmul_task(void *arg, size_t r0, size_t r1) {
    const matmul_job *j = arg;
    const rwkvc_weight *W = j->W;
    const rwkvc_matmul_kernels *k = W->kern;
    if (j->n_vec == 1) {
        k->matvec(W->data, W->row_bytes, j->X, j->Y, r0, r1, W->cols);
    } else if (k->matmat) {
        k->matmat(W->data, W->row_bytes, j->X, j->x_stride, j->n_vec, j->Y, j->ldy, r0, r1, W->cols);
    } else {
        for (size_t t = 0; t < j->n_vec; t++) {
            k->matvec(W->data, W->row_bytes, (const char *)j->X + t * j->x_stride, j->Y + t * j->ldy, r0, r1,
                      W->cols);
        }
    }
}

void rwkvc_matmul(rwkvc_ctx *c, const rwkvc_weight *W, const float *X, size_t x_stride, size_t n_vec, float *Y,
                  size_t ldy) {
    const rwkvc_matmul_kernels *k = W->kern;
    matmul_job j = {W, X, x_stride * sizeof(float), n_vec, Y, ldy};
    size_t ab = k->act_bytes ? k->act_bytes(W->cols) : 0;
    if (ab > 0) {
        /* Quantized weights: convert each activation vector once, before the rows are split. */
        char *act = c->act;
        for (size_t t = 0; t < n_vec; t++) {
            k->prepare_act(X + t * x_stride, act + t * ab, W->cols);
        }
        j.X = act;
        j.x_stride = ab;
    }
    /* Row ranges are split at multiples of 16 so every SIMD tile of 4 rows stays whole. */
    size_t work = W->rows * W->cols * n_vec;
    if (work < PARALLEL_MIN_WORK || W->rows <= 16) {
        matmul_task(&j, 0, W->rows);
        return;
    }
    rwkvc_pool_for(c->pool, W->rows, 16, matmul_task, &j);
}
