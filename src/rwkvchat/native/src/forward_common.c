/*
 * forward_common.c: building blocks shared by every version's forward pass (see forward.h).
 */
#include <math.h>
#include <string.h>

#include "forward.h"
#include "quant.h"

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

rwkvc_norm_stats rwkvc_layer_norm_stats(const float *x, size_t n, float eps) {
    const double mean = sum8(x, n, 0.0, 0) / (double)n;
    const double var = sum8(x, n, mean, 1) / (double)n;
    return (rwkvc_norm_stats){(float)mean, (float)(1.0 / sqrt(var + eps))};
}

void rwkvc_layer_norm_range(const float *x, float *y, const float *w, const float *b, rwkvc_norm_stats st, size_t i0,
                            size_t i1) {
    for (size_t i = i0; i < i1; i++) {
        y[i] = (x[i] - st.mean) * st.inv * w[i] + b[i];
    }
}

void rwkvc_layer_norm(const float *x, float *y, const float *w, const float *b, size_t n, float eps) {
    rwkvc_layer_norm_range(x, y, w, b, rwkvc_layer_norm_stats(x, n, eps), 0, n);
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

/* ---- Products inside a team job (decode) ---- */

void rwkvc_team_share(size_t n, size_t unit, uint32_t tid, uint32_t nt, size_t *begin, size_t *end) {
    const size_t units = (n + unit - 1) / unit;
    const size_t u0 = units * tid / nt, u1 = units * (tid + 1) / nt;
    *begin = u0 * unit < n ? u0 * unit : n;
    *end = u1 * unit < n ? u1 * unit : n;
}

int rwkvc_team_plan(rwkvc_team_products *tp, const rwkvc_weight *const *W, const float *const *x, float *const *y,
                    size_t n_ops, void *act, size_t act_bytes) {
    if (n_ops > RWKVC_MM_MAX_OPS) {
        return 0;
    }
    size_t used = 0;
    tp->n_ops = n_ops;
    tp->total_bytes = 0;
    for (size_t i = 0; i < n_ops; i++) {
        const rwkvc_matmul_kernels *k = W[i]->kern;
        tp->op[i] = (rwkvc_matvec_op){W[i], x[i], y[i]};
        tp->src[i] = x[i];
        tp->prepares[i] = 0;
        tp->bytes_before[i] = tp->total_bytes;
        tp->total_bytes += W[i]->rows * W[i]->row_bytes;
        const size_t vb = k->act_bytes ? k->act_bytes(W[i]->cols) : 0;
        if (vb == 0) {
            continue;
        }
        if (vb != rwkvc_q8act_bytes(W[i]->cols) || k->act_group == 0) {
            return 0; /* not the shared q8 act layout: its columns cannot be prepared piecewise */
        }
        /* An earlier product with the same input and preparation shares its prepared copy. */
        const void *prep = NULL;
        for (size_t q = 0; q < i && !prep; q++) {
            const rwkvc_matmul_kernels *kq = W[q]->kern;
            if (tp->prepares[q] && x[q] == x[i] && W[q]->cols == W[i]->cols && kq->prepare_act == k->prepare_act) {
                prep = tp->op[q].x;
            }
        }
        if (!prep) {
            if (used + vb > act_bytes) {
                return 0;
            }
            prep = (char *)act + used;
            used += (vb + 63) & ~(size_t)63;
            tp->prepares[i] = 1;
        }
        tp->op[i].x = prep;
    }
    tp->act_used = used;
    return 1;
}

void rwkvc_team_prepare_cols(const rwkvc_team_products *tp, size_t i, size_t c0, size_t c1) {
    const rwkvc_weight *W = tp->op[i].W;
    const rwkvc_matmul_kernels *k = W->kern;
    const size_t cols = W->cols;
    if (!tp->prepares[i] || c0 >= c1) {
        return;
    }
    if (c0 == 0 && c1 == cols) {
        k->prepare_act(tp->src[i], (void *)tp->op[i].x, cols);
        return;
    }
    /*
     * Groups of the layout are independent: prepare at most TEAM_PREP_COLS columns at a time into a small vector of
     * its own, then copy its block scales, sums and quants to their places in the whole vector's layout.
     */
    enum { TEAM_PREP_COLS = 256, TEAM_PREP_HEADER = ((TEAM_PREP_COLS / RWKVC_QK) * 2 * sizeof(float) + 63) & ~63 };
    _Alignas(64) char tmp[TEAM_PREP_HEADER + TEAM_PREP_COLS];
    char *act = (char *)tp->op[i].x;
    float *d = (float *)act, *s = (float *)act + cols / RWKVC_QK;
    int8_t *qs = (int8_t *)act + rwkvc_q8act_header_bytes(cols);
    for (size_t c = c0; c < c1; c += TEAM_PREP_COLS) {
        const size_t n = c1 - c < TEAM_PREP_COLS ? c1 - c : TEAM_PREP_COLS;
        k->prepare_act(tp->src[i] + c, tmp, n);
        memcpy(d + c / RWKVC_QK, rwkvc_q8act_d(tmp), n / RWKVC_QK * sizeof(float));
        memcpy(s + c / RWKVC_QK, rwkvc_q8act_s(tmp, n), n / RWKVC_QK * sizeof(float));
        memcpy(qs + c, rwkvc_q8act_qs(tmp, n), n);
    }
}

void rwkvc_team_prepare(const rwkvc_team_products *tp, size_t c0, size_t c1) {
    for (size_t i = 0; i < tp->n_ops; i++) {
        const size_t cols = tp->op[i].W->cols;
        rwkvc_team_prepare_cols(tp, i, c0 < cols ? c0 : cols, c1 < cols ? c1 : cols);
    }
}

void rwkvc_team_rows(const rwkvc_team_products *tp, uint32_t tid, uint32_t nt, size_t unit,
                     rwkvc_team_epilogue_fn epilogue, void *arg) {
    /*
     * Thread tid takes the bytes [total * tid / nt, total * (tid + 1) / nt) of the products' rows in order, at
     * multiples of `unit` rows: a unit goes to the thread whose share holds its first byte.
     */
    const uint64_t total = tp->total_bytes;
    for (size_t i = 0; i < tp->n_ops; i++) {
        const rwkvc_weight *W = tp->op[i].W;
        const uint64_t unit_bytes = (uint64_t)unit * W->row_bytes, o = tp->bytes_before[i];
        const size_t units = (W->rows + unit - 1) / unit;
        /* First unit whose first byte o + u * unit_bytes has (o + u * unit_bytes) * nt >= total * t. */
        size_t u[2];
        for (int e = 0; e < 2; e++) {
            const uint64_t need = total * (tid + (uint64_t)e), have = o * nt;
            uint64_t first = need > have ? (need - have + unit_bytes * nt - 1) / (unit_bytes * nt) : 0;
            u[e] = first < units ? (size_t)first : units;
        }
        const size_t r0 = u[0] * unit < W->rows ? u[0] * unit : W->rows;
        const size_t r1 = u[1] * unit < W->rows ? u[1] * unit : W->rows;
        if (r0 < r1) {
            rwkvc_matvec_rows(&tp->op[i], r0, r1);
            if (epilogue) {
                epilogue(arg, i, r0, r1);
            }
        }
    }
}
