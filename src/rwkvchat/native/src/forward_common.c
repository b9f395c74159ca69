/*
 * forward_common.c: building blocks shared by every version's forward pass (see forward.h).
 */
#include <math.h>
#include <string.h>

#include "forward.h"

/* Sum of x[0..n) (less shift, or the squares of that) in double, in eight independent partial sums: one running
   sum is a chain of dependent adds of 4 cycles each, about 16000 cycles for the two passes over 2048 channels, on
   one thread while the others wait. The order is fixed, so the result does not depend on the instruction set. */
static double sum8(const float *x, size_t n, double shift, int squares) {
    double s[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        for (int k = 0; k < 8; k++) {
            const double d = (double)x[i + k] - shift;
            s[k] += squares ? d * d : d;
        }
    }
    for (; i < n; i++) {
        const double d = (double)x[i] - shift;
        s[i % 8] += squares ? d * d : d;
    }
    return ((s[0] + s[1]) + (s[2] + s[3])) + ((s[4] + s[5]) + (s[6] + s[7]));
}

void rwkvc_layer_norm(const float *x, float *y, const float *w, const float *b, size_t n, float eps) {
    const double mean = sum8(x, n, 0.0, 0) / (double)n;
    const double var = sum8(x, n, mean, 1) / (double)n;
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

void rwkvc_relu_sq(float *x, size_t n) {
    for (size_t i = 0; i < n; i++) {
        const float q = x[i] > 0.0f ? x[i] : 0.0f;
        x[i] = q * q;
    }
}

void rwkvc_add(float *restrict x, const float *restrict y, size_t n) {
    for (size_t i = 0; i < n; i++) {
        x[i] += y[i];
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
    int seq;            /* X is a prepare_seq block: run matmat_seq. */
} matmul_job;

static void matmul_rows(const matmul_job *j, size_t r0, size_t r1) {
    const rwkvc_weight *W = j->W;
    const rwkvc_matmul_kernels *k = W->kern;
    if (j->seq) {
        k->matmat_seq(W->data, W->row_bytes, j->X, j->n_vec, j->Y, j->ldy, r0, r1, W->cols);
    } else if (j->n_vec == 1) {
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

/*
 * How a product's activations are prepared before the rows are split: per vector for quantized weights
 * (prepare_act), as one block in sequence mode where the kernels offer it now (prepare_seq), or not at all.
 */
typedef struct {
    size_t vec_bytes; /* Bytes per prepared vector (0: the kernel reads the float32 vectors). */
    size_t total;     /* Bytes of all n_vec prepared vectors, rounded up to 64 so the next slot stays aligned. */
    int seq;
} act_plan;

static act_plan plan_act(const rwkvc_matmul_kernels *k, size_t cols, size_t n_vec, size_t cap) {
    act_plan p = {0, 0, 0};
    size_t sb = n_vec >= RWKVC_GEMM_MIN_VEC && k->seq_act_bytes ? k->seq_act_bytes(cols) : 0;
    if (sb > 0 && rwkvc_seq_act_total(sb, n_vec) <= cap) {
        p.vec_bytes = sb;
        p.total = rwkvc_seq_act_total(sb, n_vec);
        p.seq = 1;
    } else if (k->act_bytes) {
        p.vec_bytes = k->act_bytes(cols);
        p.total = p.vec_bytes * n_vec;
    }
    p.total = (p.total + 63) & ~(size_t)63;
    return p;
}

typedef struct {
    const rwkvc_matmul_kernels *k;
    const float *X;
    size_t x_stride;   /* floats */
    char *act;
    size_t vec_bytes;
    size_t cols;
} prepare_job;

static void prepare_task(void *arg, size_t t0, size_t t1) {
    const prepare_job *j = arg;
    for (size_t t = t0; t < t1; t++) {
        j->k->prepare_act(j->X + t * j->x_stride, j->act + t * j->vec_bytes, j->cols);
    }
}

/*
 * Converts the n_vec float vectors of X (x_stride floats apart) into act as planned. Vectors are independent, so a
 * sequence's are converted by the pool (a 512-token prefill spent 3% of its samples here on one thread while the
 * others waited); one vector's conversion is too small to hand off.
 */
static void prepare(rwkvc_ctx *c, const rwkvc_matmul_kernels *k, const act_plan *p, const float *X, size_t x_stride,
                    size_t n_vec, char *act, size_t cols) {
    if (p->seq) {
        k->prepare_seq(X, x_stride, n_vec, act, cols);
        return;
    }
    prepare_job j = {k, X, x_stride, act, p->vec_bytes, cols};
    rwkvc_parallel(c, n_vec, n_vec * cols * 4, prepare_task, &j);
}

/* Whether two products' planned preparations of the same input give the same bytes. */
static int same_preparation(const rwkvc_matmul_kernels *a, const act_plan *pa, const rwkvc_matmul_kernels *b,
                            const act_plan *pb) {
    if (pa->seq != pb->seq || pa->vec_bytes != pb->vec_bytes) {
        return 0;
    }
    return pa->seq ? a->prepare_seq == b->prepare_seq : a->prepare_act == b->prepare_act;
}

static void matmul_task(void *arg, size_t r0, size_t r1) {
    matmul_rows(arg, r0, r1);
}

void rwkvc_matmul(rwkvc_ctx *c, const rwkvc_weight *W, const float *X, size_t x_stride, size_t n_vec, float *Y,
                  size_t ldy) {
    const rwkvc_matmul_kernels *k = W->kern;
    matmul_job j = {W, X, x_stride * sizeof(float), n_vec, Y, ldy, 0};
    act_plan p = plan_act(k, W->cols, n_vec, c->act_cap);
    if (p.vec_bytes > 0) {
        /* Convert the activations once, before the rows are split. */
        prepare(c, k, &p, X, x_stride, n_vec, c->act, W->cols);
        j.X = c->act;
        j.x_stride = p.vec_bytes;
        j.seq = p.seq;
    }
    /* Row ranges are split at multiples of 16 so every SIMD tile of 4 rows stays whole. */
    size_t work = W->rows * W->cols * n_vec;
    if (work < PARALLEL_MIN_WORK || W->rows <= 16) {
        matmul_task(&j, 0, W->rows);
        return;
    }
    rwkvc_pool_for(c->pool, W->rows, 16, matmul_task, &j);
}

void rwkvc_matvec_prepare(rwkvc_ctx *c, const rwkvc_weight *W, const float *x, float *y, size_t slot,
                          rwkvc_matvec_op *op) {
    const rwkvc_matmul_kernels *k = W->kern;
    const size_t slot_bytes = c->act_cap / RWKVC_ACT_SLOTS;
    act_plan p = plan_act(k, W->cols, 1, slot_bytes);
    *op = (rwkvc_matvec_op){W, x, y};
    if (p.vec_bytes > 0) {
        char *act = (char *)c->act + slot * slot_bytes;
        k->prepare_act(x, act, W->cols);
        op->x = act;
    }
}

void rwkvc_matvec_rows(const rwkvc_matvec_op *op, size_t r0, size_t r1) {
    const rwkvc_weight *W = op->W;
    W->kern->matvec(W->data, W->row_bytes, op->x, op->y, r0, r1, W->cols);
}

/* Pieces of a multi job: at most this many (rwkvc_pool_chunks_per_thread per thread). A piece is a list of
   segments, each a row range of one product; there is one segment per product plus one per piece boundary that
   falls inside a product, so at most MM_MAX_SEGMENTS. */
#define MM_MAX_PIECES 48
#define MM_MAX_SEGMENTS (MM_MAX_PIECES + RWKVC_MM_MAX_OPS)

typedef struct {
    matmul_job jobs[RWKVC_MM_MAX_OPS];
    size_t n_pieces;
    uint16_t piece_first[MM_MAX_PIECES + 1]; /* piece p is segments [piece_first[p], piece_first[p + 1]) */
    uint8_t seg_op[MM_MAX_SEGMENTS];
    size_t seg_r0[MM_MAX_SEGMENTS], seg_r1[MM_MAX_SEGMENTS];
} multi_job;

static void multi_task(void *arg, size_t p0, size_t p1) {
    const multi_job *mj = arg;
    for (size_t s = mj->piece_first[p0]; s < mj->piece_first[p1]; s++) {
        matmul_rows(&mj->jobs[mj->seg_op[s]], mj->seg_r0[s], mj->seg_r1[s]);
    }
}

void rwkvc_matmul_multi(rwkvc_ctx *c, const rwkvc_mm_op *ops, size_t n_ops, size_t n_vec) {
    /* Activation bytes of every product, and whether they fit the context's slots. */
    act_plan plans[RWKVC_MM_MAX_OPS];
    size_t need = 0;
    for (size_t i = 0; i < n_ops && i < RWKVC_MM_MAX_OPS; i++) {
        plans[i] = plan_act(ops[i].W->kern, ops[i].W->cols, n_vec, c->act_cap);
        need += plans[i].total;
    }
    if (n_ops > RWKVC_MM_MAX_OPS || need > c->act_cap) {
        for (size_t i = 0; i < n_ops; i++) {
            rwkvc_matmul(c, ops[i].W, ops[i].X, ops[i].x_stride, n_vec, ops[i].Y, ops[i].ldy);
        }
        return;
    }
    multi_job mj;
    char *act = c->act;
    size_t total_bytes = 0, total_work = 0;
    for (size_t i = 0; i < n_ops; i++) {
        const rwkvc_weight *W = ops[i].W;
        const rwkvc_matmul_kernels *k = W->kern;
        matmul_job *j = &mj.jobs[i];
        *j = (matmul_job){W, ops[i].X, ops[i].x_stride * sizeof(float), n_vec, ops[i].Y, ops[i].ldy, plans[i].seq};
        if (plans[i].vec_bytes > 0) {
            /* Reuse the prepared copy of an earlier product with the same input and preparation. */
            const void *prep = NULL;
            for (size_t q = 0; q < i && !prep; q++) {
                const rwkvc_weight *Wq = ops[q].W;
                if (ops[q].X == ops[i].X && ops[q].x_stride == ops[i].x_stride && Wq->cols == W->cols &&
                    same_preparation(Wq->kern, &plans[q], k, &plans[i])) {
                    prep = mj.jobs[q].X;
                }
            }
            if (!prep) {
                prepare(c, k, &plans[i], ops[i].X, ops[i].x_stride, n_vec, act, W->cols);
                prep = act;
                act += plans[i].total;
            }
            j->X = prep;
            j->x_stride = plans[i].vec_bytes;
        }
        total_bytes += W->rows * W->row_bytes;
        total_work += W->rows * W->cols * n_vec;
    }
    /*
     * The products' rows, in order, cut into `want` pieces of about total / want bytes each, at multiples of 16
     * rows: a 16-row unit goes to the piece holding its first byte, so a piece may end in one product and go on in
     * the next. Equal pieces keep the threads finishing together (one piece per product would leave 3 products of
     * one size to 2 threads, one thread idle for a whole product at the end).
     */
    uint32_t nt = rwkvc_pool_threads(c->pool);
    size_t want = (size_t)nt * rwkvc_pool_chunks_per_thread(c->pool);
    if (want > MM_MAX_PIECES) {
        want = MM_MAX_PIECES;
    }
    if (total_work < PARALLEL_MIN_WORK || nt <= 1) {
        want = 1;
    }
    size_t n_seg = 0, piece = 0, offset = 0;
    mj.piece_first[0] = 0;
    for (size_t i = 0; i < n_ops; i++) {
        const rwkvc_weight *W = ops[i].W;
        for (size_t r = 0; r < W->rows; r += 16) {
            /* Piece of this unit's first byte: floor(offset * want / total). */
            size_t p = total_bytes ? (size_t)((double)offset * (double)want / (double)total_bytes) : 0;
            p = p < want ? p : want - 1;
            size_t r1 = r + 16 < W->rows ? r + 16 : W->rows;
            if (n_seg > 0 && p == piece && mj.seg_op[n_seg - 1] == i) {
                mj.seg_r1[n_seg - 1] = r1; /* extends the open segment */
            } else {
                for (; piece < p; piece++) {
                    mj.piece_first[piece + 1] = (uint16_t)n_seg;
                }
                mj.seg_op[n_seg] = (uint8_t)i;
                mj.seg_r0[n_seg] = r;
                mj.seg_r1[n_seg] = r1;
                n_seg++;
            }
            offset += (r1 - r) * W->row_bytes;
        }
    }
    for (; piece < want; piece++) {
        mj.piece_first[piece + 1] = (uint16_t)n_seg;
    }
    mj.n_pieces = want;
    if (want == 1) {
        multi_task(&mj, 0, mj.n_pieces);
        return;
    }
    rwkvc_pool_for_each(c->pool, mj.n_pieces, multi_task, &mj);
}
