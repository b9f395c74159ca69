/*
 * rwkv7_cuda.cu: the CUDA backend (backend_cuda.h) for RWKV-7: the whole step of every block on the GPU.
 *
 * Follows forward_v7.c (shared docs rwkv-architectures.md §4.2, T1..T12 and the channel mix) with the same
 * chunking: a call is cut into chunks of at most MAX_T tokens; in a chunk each projection is one matrix-matrix
 * product over the chunk's tokens and only the WKV recurrence runs token by token (one thread block per head).
 * Weights keep their file layout (f32, f16, bf16, q8_0, q4_0 rows) and are copied to the GPU once; the
 * embedding stays in the host mapping (one row per token is dequantized and normalised by ln0 on the CPU, then
 * uploaded: D floats per token). Only the logits that were asked for and the state come back.
 *
 * All device activations are fp32 [T][D] row-major, as on the CPU.
 */
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <stdlib.h>
#include <string.h>

#include <new>
#include <vector>

extern "C" {
#include "../backend_cuda.h"
#include "../forward.h"
#include "../model.h"
#include "../status.h"
}

/* Tokens per chunk (as api.c's MAX_CHUNK): the activations of a chunk are 20 * MAX_T * D floats. */
#define MAX_T 64

/* ---- Device weights ---- */

typedef struct {
    const uint8_t *d;  /* Row r at d + r * row_bytes, file layout. */
    uint32_t type;
    int rows, cols;
    size_t row_bytes;
} dmat;

typedef struct {
    const float *ln1_w, *ln1_b, *ln2_w, *ln2_b, *lnx_w, *lnx_b;
    const float *mix;  /* [6][D] */
    const float *w0, *a0, *v0, *k_k, *k_a, *r_k, *ffn_mix_k;
    dmat w1, w2, a1, a2, v1, v2, g1, g2, att_r, att_k, att_v, att_o, ffn_k, ffn_v;
} dlayer;

struct rwkvc_cuda {
    const rwkvc_model *m;
    int device;
    std::vector<void *> allocs;  /* Every cudaMalloc, freed together. */
    std::vector<dlayer> layers;
    const float *lnout_w, *lnout_b;
    dmat head;
    /* Activations, [MAX_T][D] unless noted. */
    float *x, *a, *xr, *xw, *xk, *xv, *xa, *xg, *r, *k, *v, *dec, *alpha, *g, *vfirst, *y, *tmp;
    float *lora;    /* [MAX_T][max_rank] */
    float *ffn;     /* [MAX_T][F] */
    float *logits;  /* [MAX_T][V] */
    float *state;   /* [state_len] */
    float *host_x;  /* [MAX_T][D] embedding rows on the host */
    cudaStream_t stream;       /* Every kernel of this context; blocking, so it orders with cudaMemcpy. */
    cudaGraphExec_t graph1;    /* All blocks for one token, captured at the first single-token call. */
    bool use_graphs;           /* RWKVC_CUDA_GRAPHS=0 turns graph replay off (for measurements). */
};

static rwkvc_status cuda_fail(cudaError_t e, const char *what) {
    return rwkvc_fail(RWKVC_ERR_BACKEND, "CUDA %s failed: %s", what, cudaGetErrorString(e));
}

static rwkvc_status dalloc(rwkvc_cuda *g, size_t bytes, void **out) {
    void *p = NULL;
    cudaError_t e = cudaMalloc(&p, bytes ? bytes : 16);
    if (e != cudaSuccess) {
        cudaGetLastError();
        return rwkvc_fail(RWKVC_ERR_BACKEND, "CUDA out of memory allocating %zu bytes: %s", bytes,
                          cudaGetErrorString(e));
    }
    g->allocs.push_back(p);
    *out = p;
    return RWKVC_OK;
}

static rwkvc_status upload(rwkvc_cuda *g, const void *src, size_t bytes, const void **out) {
    void *p;
    rwkvc_status st = dalloc(g, bytes, &p);
    if (st != RWKVC_OK) {
        return st;
    }
    cudaError_t e = cudaMemcpy(p, src, bytes, cudaMemcpyHostToDevice);
    if (e != cudaSuccess) {
        return cuda_fail(e, "upload");
    }
    *out = p;
    return RWKVC_OK;
}

static rwkvc_status up_vec(rwkvc_cuda *g, const float *v, size_t n, const float **out) {
    if (!v) {
        *out = NULL;
        return RWKVC_OK;
    }
    return upload(g, v, n * sizeof(float), (const void **)out);
}

static bool type_supported(uint32_t t) {
    return t == RWKVC_TYPE_F32 || t == RWKVC_TYPE_F16 || t == RWKVC_TYPE_BF16 || t == RWKVC_TYPE_Q8_0 ||
           t == RWKVC_TYPE_Q4_0;
}

static rwkvc_status up_mat(rwkvc_cuda *g, const rwkvc_weight *w, dmat *out) {
    memset(out, 0, sizeof(*out));
    if (!w->data) {
        return RWKVC_OK;
    }
    if (!type_supported(w->type)) {
        const rwkvc_type_traits *tr = rwkvc_type_traits_get(w->type);
        return rwkvc_fail(RWKVC_ERR_BACKEND, "weight type %s has no CUDA kernel yet (f32, f16, bf16, q8_0, q4_0 do)",
                          tr ? tr->name : "?");
    }
    out->type = w->type;
    out->rows = (int)w->rows;
    out->cols = (int)w->cols;
    out->row_bytes = w->row_bytes;
    return upload(g, w->data, w->rows * w->row_bytes, (const void **)&out->d);
}

/* The stream of the evaluation in progress on this thread (set by rwkvc_cuda_eval; a context is used by one
   thread at a time). */
static thread_local cudaStream_t tl_stream;

/* ---- Kernels ---- */

__device__ __forceinline__ float warp_sum(float v) {
    for (int o = 16; o > 0; o >>= 1) {
        v += __shfl_xor_sync(0xffffffffu, v, o);
    }
    return v;
}

/* Sum over the block (blockDim.x a multiple of 32 or below 32); every thread gets the result. */
__device__ float block_sum(float v) {
    __shared__ float part[32];
    __shared__ float total;
    const int lane = threadIdx.x & 31, wid = threadIdx.x >> 5;
    const int nw = (blockDim.x + 31) >> 5;
    if (blockDim.x < 32) {
        /* A partial warp: shuffle only among the active lanes. */
        unsigned mask = (blockDim.x == 32) ? 0xffffffffu : ((1u << blockDim.x) - 1u);
        for (int o = 16; o > 0; o >>= 1) {
            float w = __shfl_down_sync(mask, v, o);
            if (lane + o < (int)blockDim.x) {
                v += w;
            }
        }
        v = __shfl_sync(mask, v, 0);
        return v;
    }
    v = warp_sum(v);
    __syncthreads();
    if (lane == 0) {
        part[wid] = v;
    }
    __syncthreads();
    if (threadIdx.x == 0) {
        float s = 0.0f;
        for (int i = 0; i < nw; i++) {
            s += part[i];
        }
        total = s;
    }
    __syncthreads();
    return total;
}

/* Loads element block `b` of a row as BS floats (BS elements per call: 4 for f32, 8 for f16/bf16, 32 for q*_0,
   or 1 for float rows whose length is not a multiple of the vector width). */
template <int TYPE, int BS>
__device__ __forceinline__ void load_block(const uint8_t *row, int b, float *w) {
    if constexpr (TYPE == RWKVC_TYPE_F32) {
        if constexpr (BS == 4) {
            float4 q = reinterpret_cast<const float4 *>(row)[b];
            w[0] = q.x;
            w[1] = q.y;
            w[2] = q.z;
            w[3] = q.w;
        } else {
            w[0] = reinterpret_cast<const float *>(row)[b];
        }
    } else if constexpr (TYPE == RWKVC_TYPE_F16 || TYPE == RWKVC_TYPE_BF16) {
        uint16_t h[BS];
        if constexpr (BS == 8) {
            uint4 q = reinterpret_cast<const uint4 *>(row)[b];
            memcpy(h, &q, 16);
        } else {
            h[0] = reinterpret_cast<const uint16_t *>(row)[b];
        }
#pragma unroll
        for (int i = 0; i < BS; i++) {
            if constexpr (TYPE == RWKVC_TYPE_F16) {
                w[i] = __half2float(__ushort_as_half(h[i]));
            } else {
                w[i] = __uint_as_float((uint32_t)h[i] << 16);
            }
        }
    } else if constexpr (TYPE == RWKVC_TYPE_Q8_0) {
        /* 34 bytes: fp16 scale, 32 int8; 2-byte aligned. */
        const uint16_t *p = reinterpret_cast<const uint16_t *>(row + (size_t)b * 34);
        const float d = __half2float(__ushort_as_half(p[0]));
#pragma unroll
        for (int i = 0; i < 16; i++) {
            uint16_t q = p[1 + i];
            w[2 * i] = d * (float)(int8_t)(q & 0xff);
            w[2 * i + 1] = d * (float)(int8_t)(q >> 8);
        }
    } else {
        /* Q4_0, 18 bytes: fp16 scale, 16 bytes of nibbles; element j is the low nibble of byte j, j + 16 the high. */
        const uint16_t *p = reinterpret_cast<const uint16_t *>(row + (size_t)b * 18);
        const float d = __half2float(__ushort_as_half(p[0]));
#pragma unroll
        for (int i = 0; i < 8; i++) {
            uint16_t q = p[1 + i];
            w[2 * i] = d * (float)((int)(q & 0xf) - 8);
            w[2 * i + 1] = d * (float)((int)((q >> 8) & 0xf) - 8);
            w[2 * i + 16] = d * (float)((int)((q >> 4) & 0xf) - 8);
            w[2 * i + 17] = d * (float)((int)(q >> 12) - 8);
        }
    }
}

#define MM_WARPS 8

/*
 * Y[t][r] (+)= sum_c W[r][c] X[t][c] for t < n_vec: one warp per row, lanes over blocks of the row, MM_TT tokens
 * per pass so each weight block is dequantized once per MM_TT tokens. X rows are ldx floats apart, Y rows ldy.
 */
template <int TYPE, int BS, int MM_TT>
__global__ void __launch_bounds__(MM_WARPS * 32)
    k_matmul(const uint8_t *W, size_t row_bytes, int rows, int cols, const float *X, int ldx, int n_vec, float *Y,
             int ldy, int accumulate) {
    const int lane = threadIdx.x & 31;
    const int r = blockIdx.x * MM_WARPS + (threadIdx.x >> 5);
    if (r >= rows) {
        return;
    }
    const uint8_t *row = W + (size_t)r * row_bytes;
    const int nb = cols / BS;
    for (int t0 = 0; t0 < n_vec; t0 += MM_TT) {
        float acc[MM_TT];
#pragma unroll
        for (int i = 0; i < MM_TT; i++) {
            acc[i] = 0.0f;
        }
#pragma unroll 4
        for (int b = lane; b < nb; b += 32) {
            float w[BS];
            load_block<TYPE, BS>(row, b, w);
#pragma unroll
            for (int i = 0; i < MM_TT; i++) {
                if (t0 + i < n_vec) {
                    const float *x = X + (size_t)(t0 + i) * ldx + (size_t)b * BS;
                    float s = 0.0f;
                    if constexpr (BS % 4 == 0) {
#pragma unroll
                        for (int e = 0; e < BS; e += 4) {
                            float4 q = *reinterpret_cast<const float4 *>(x + e);
                            s += w[e] * q.x + w[e + 1] * q.y + w[e + 2] * q.z + w[e + 3] * q.w;
                        }
                    } else {
#pragma unroll
                        for (int e = 0; e < BS; e++) {
                            s += w[e] * x[e];
                        }
                    }
                    acc[i] += s;
                }
            }
        }
#pragma unroll
        for (int i = 0; i < MM_TT; i++) {
            float s = warp_sum(acc[i]);
            if (lane == 0 && t0 + i < n_vec) {
                float *y = Y + (size_t)(t0 + i) * ldy + r;
                *y = accumulate ? *y + s : s;
            }
        }
    }
}

/* Layer norm of each row of n floats (one block a row), weights at ((row % per_vec) * n): per_vec = 1 for a
   layer norm over D, H for the group norm over heads. Mean and variance in double, as forward_common.c. */
__global__ void k_norm(const float *x, float *y, const float *w, const float *b, int n, int per_vec, float eps) {
    const float *xr = x + (size_t)blockIdx.x * n;
    float *yr = y + (size_t)blockIdx.x * n;
    const int wo = (blockIdx.x % per_vec) * n;
    __shared__ double red[32];
    __shared__ double mean_s, var_s;
    double s = 0.0;
    for (int i = threadIdx.x; i < n; i += blockDim.x) {
        s += xr[i];
    }
    for (int o = 16; o > 0; o >>= 1) {
        s += __shfl_xor_sync(0xffffffffu, s, o);
    }
    if ((threadIdx.x & 31) == 0) {
        red[threadIdx.x >> 5] = s;
    }
    __syncthreads();
    if (threadIdx.x == 0) {
        double t = 0.0;
        for (int i = 0; i < (int)(blockDim.x >> 5); i++) {
            t += red[i];
        }
        mean_s = t / n;
    }
    __syncthreads();
    const double mean = mean_s;
    double v = 0.0;
    for (int i = threadIdx.x; i < n; i += blockDim.x) {
        double d = xr[i] - mean;
        v += d * d;
    }
    for (int o = 16; o > 0; o >>= 1) {
        v += __shfl_xor_sync(0xffffffffu, v, o);
    }
    __syncthreads();
    if ((threadIdx.x & 31) == 0) {
        red[threadIdx.x >> 5] = v;
    }
    __syncthreads();
    if (threadIdx.x == 0) {
        double t = 0.0;
        for (int i = 0; i < (int)(blockDim.x >> 5); i++) {
            t += red[i];
        }
        var_s = t / n;
    }
    __syncthreads();
    const float fm = (float)mean;
    const float inv = (float)(1.0 / sqrt(var_s + eps));
    for (int i = threadIdx.x; i < n; i += blockDim.x) {
        yr[i] = (xr[i] - fm) * inv * w[wo + i] + b[wo + i];
    }
}

typedef struct {
    float *p[6];
} out6;

/* Token shift (T1): out_j[t][c] = a[t][c] + (prev_t[c] - a[t][c]) * mu_j[c], prev_0 = the state's last input. */
__global__ void k_shift(const float *a, const float *prev0, int T, int D, const float *mu, int n_mix, out6 outs) {
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= T * D) {
        return;
    }
    const int t = i / D, c = i % D;
    const float at = a[i];
    const float pt = t == 0 ? prev0[c] : a[i - D];
    for (int j = 0; j < n_mix; j++) {
        outs.p[j][i] = at + (pt - at) * mu[j * D + c];
    }
}

/* act 1 = tanh, 2 = sigmoid, 3 = relu squared. */
__global__ void k_act(float *h, int n, int act) {
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) {
        return;
    }
    float q = h[i];
    if (act == 1) {
        q = tanhf(q);
    } else if (act == 2) {
        q = 1.0f / (1.0f + expf(-q));
    } else {
        q = q > 0.0f ? q * q : 0.0f;
    }
    h[i] = q;
}

__device__ __forceinline__ float sigm(float x) {
    return 1.0f / (1.0f + expf(-x));
}

/*
 * T3..T8 element-wise part, one block per (token, head), N threads: decay, iclr, kappa-hat (into kk), the key
 * update, b = kappa-hat * alpha (into bb) and the value residual (mx holds v's LoRA output in blocks > 0).
 */
__global__ void k_v7_prep(int D, int N, int layer, float *dec, float *alpha, float *k, float *v, float *kk, float *bb,
                          float *vfirst, const float *mx, const float *w0, const float *a0, const float *k_k,
                          const float *k_a, const float *v0) {
    const int t = blockIdx.x / (D / N), h = blockIdx.x % (D / N);
    const int c = h * N + threadIdx.x;
    const size_t i = (size_t)t * D + c;
    const float de = expf(-0.606531f * sigm(w0[c] + dec[i]));
    const float al = sigm(a0[c] + alpha[i]);
    dec[i] = de;
    alpha[i] = al;
    const float kv = k[i];
    const float q = kv * k_k[c];
    const float ss = block_sum(q * q);
    const float norm = sqrtf(ss);
    const float khat = q * (1.0f / (norm > 1e-12f ? norm : 1e-12f));
    kk[i] = khat;
    k[i] = kv * (1.0f + (al - 1.0f) * k_a[c]);
    bb[i] = khat * al;
    if (layer == 0) {
        vfirst[i] = v[i];
    } else {
        const float vv = v[i];
        v[i] = vv + (vfirst[i] - vv) * sigm(v0[c] + mx[i]);
    }
}

/*
 * T9, the WKV recurrence: one block per head, thread j owns row j of the head's state S[j][0..N) (value j,
 * keys i), kept in registers for the chunk when N is a template size (NT > 0), else read from global memory.
 */
template <int NT>
__global__ void k_wkv7(float *S, int N, int T, int D, const float *r, const float *w, const float *k, const float *v,
                       const float *kk, const float *bb, float *y) {
    extern __shared__ float sh[];
    float *sr = sh, *sw = sh + N, *sk = sh + 2 * N, *skk = sh + 3 * N, *sbb = sh + 4 * N;
    const int h = blockIdx.x, j = threadIdx.x;
    float *Sj = S + ((size_t)h * N + j) * N;
    float s[NT > 0 ? NT : 1];
    if (NT > 0) {
#pragma unroll
        for (int i = 0; i < NT; i++) {
            s[i] = Sj[i];
        }
    }
    for (int t = 0; t < T; t++) {
        const size_t o = (size_t)t * D + h * N;
        __syncthreads();
        sr[j] = r[o + j];
        sw[j] = w[o + j];
        sk[j] = k[o + j];
        skk[j] = kk[o + j];
        sbb[j] = bb[o + j];
        __syncthreads();
        const float vj = v[o + j];
        float sa = 0.0f, yy = 0.0f;
        if (NT > 0) {
#pragma unroll
            for (int i = 0; i < NT; i++) {
                sa += s[i] * skk[i];
            }
            sa = -sa;
#pragma unroll
            for (int i = 0; i < NT; i++) {
                s[i] = s[i] * sw[i] + sa * sbb[i] + vj * sk[i];
                yy += s[i] * sr[i];
            }
        } else {
            for (int i = 0; i < N; i++) {
                sa += Sj[i] * skk[i];
            }
            sa = -sa;
            for (int i = 0; i < N; i++) {
                float q = Sj[i] * sw[i] + sa * sbb[i] + vj * sk[i];
                Sj[i] = q;
                yy += q * sr[i];
            }
        }
        y[o + j] = yy;
    }
    if (NT > 0) {
#pragma unroll
        for (int i = 0; i < NT; i++) {
            Sj[i] = s[i];
        }
    }
}

/* T10..T12 before the output projection, one block per (token, head): group norm (eps 64e-5), the bonus
   (r . (k * r_k)) v and the gate. */
__global__ void k_v7_post(int D, int N, float *y, const float *r, const float *k, const float *v, const float *g,
                          const float *lnx_w, const float *lnx_b, const float *r_k) {
    const int t = blockIdx.x / (D / N), h = blockIdx.x % (D / N);
    const int c = h * N + threadIdx.x;
    const size_t i = (size_t)t * D + c;
    const float yv = y[i];
    const float mean = block_sum(yv) / N;
    const float d = yv - mean;
    const float var = block_sum(d * d) / N;
    const float yn = d * rsqrtf(var + 64e-5f) * lnx_w[c] + lnx_b[c];
    const float bonus = block_sum(r[i] * k[i] * r_k[c]);
    y[i] = (yn + bonus * v[i]) * g[i];
}

/* ---- Host side ---- */

template <int TYPE, int BS>
static void launch_mm(const dmat &W, const float *X, int ldx, int n, float *Y, int ldy, int acc) {
    dim3 grid((W.rows + MM_WARPS - 1) / MM_WARPS);
    if (n == 1) {
        k_matmul<TYPE, BS, 1><<<grid, MM_WARPS * 32, 0, tl_stream>>>(W.d, W.row_bytes, W.rows, W.cols, X, ldx, n, Y,
                                                                      ldy, acc);
    } else {
        k_matmul<TYPE, BS, 8><<<grid, MM_WARPS * 32, 0, tl_stream>>>(W.d, W.row_bytes, W.rows, W.cols, X, ldx, n, Y,
                                                                      ldy, acc);
    }
}

/* Y[t] (+)= W X[t] for t < n; X rows ldx floats apart, Y rows ldy. */
static void matmul(const dmat &W, const float *X, int ldx, int n, float *Y, int ldy, int acc) {
    const bool v4 = W.cols % 4 == 0 && ldx % 4 == 0, v8 = W.cols % 8 == 0 && ldx % 4 == 0;
    switch (W.type) {
    case RWKVC_TYPE_F32:
        if (v4) {
            launch_mm<RWKVC_TYPE_F32, 4>(W, X, ldx, n, Y, ldy, acc);
        } else {
            launch_mm<RWKVC_TYPE_F32, 1>(W, X, ldx, n, Y, ldy, acc);
        }
        break;
    case RWKVC_TYPE_F16:
        if (v8) {
            launch_mm<RWKVC_TYPE_F16, 8>(W, X, ldx, n, Y, ldy, acc);
        } else {
            launch_mm<RWKVC_TYPE_F16, 1>(W, X, ldx, n, Y, ldy, acc);
        }
        break;
    case RWKVC_TYPE_BF16:
        if (v8) {
            launch_mm<RWKVC_TYPE_BF16, 8>(W, X, ldx, n, Y, ldy, acc);
        } else {
            launch_mm<RWKVC_TYPE_BF16, 1>(W, X, ldx, n, Y, ldy, acc);
        }
        break;
    case RWKVC_TYPE_Q8_0:
        launch_mm<RWKVC_TYPE_Q8_0, 32>(W, X, ldx, n, Y, ldy, acc);
        break;
    default:
        launch_mm<RWKVC_TYPE_Q4_0, 32>(W, X, ldx, n, Y, ldy, acc);
        break;
    }
}

static inline int blocks_for(size_t n, int threads) {
    return (int)((n + threads - 1) / threads);
}

static void act(float *h, size_t n, int a) {
    k_act<<<blocks_for(n, 256), 256, 0, tl_stream>>>(h, (int)n, a);
}

static void norm_rows(const float *x, float *y, const float *w, const float *b, int rows, int n, int per_vec,
                      float eps) {
    int threads = n >= 256 ? 256 : ((n + 31) / 32) * 32;
    k_norm<<<rows, threads, 0, tl_stream>>>(x, y, w, b, n, per_vec, eps);
}

static void lora(rwkvc_cuda *g, const dmat &W1, const dmat &W2, const float *in, int T, int a, float *out) {
    const int D = (int)g->m->info.n_embd, R = W1.rows;
    matmul(W1, in, D, T, g->lora, R, 0);
    if (a) {
        act(g->lora, (size_t)T * R, a);
    }
    matmul(W2, g->lora, R, T, out, D, 0);
}

static void run_layer(rwkvc_cuda *g, const dlayer &ly, int l, int T, float *st) {
    const rwkvc_model *m = g->m;
    const int D = (int)m->info.n_embd, N = (int)m->info.head_size, H = (int)m->info.n_head, F = (int)m->info.n_ffn;
    float *att_prev = st, *S = st + D, *ffn_prev = st + D + (size_t)D * N;
    const size_t TD = (size_t)T * D;

    /* T1. */
    norm_rows(g->x, g->a, ly.ln1_w, ly.ln1_b, T, D, 1, m->ln_eps);
    out6 o6 = {{g->xr, g->xw, g->xk, g->xv, g->xa, g->xg}};
    k_shift<<<blocks_for(TD, 256), 256, 0, tl_stream>>>(g->a, att_prev, T, D, ly.mix, 6, o6);
    cudaMemcpyAsync(att_prev, g->a + TD - D, D * sizeof(float), cudaMemcpyDeviceToDevice, tl_stream);
    /* T2..T5, T8's LoRA. */
    matmul(ly.att_r, g->xr, D, T, g->r, D, 0);
    matmul(ly.att_k, g->xk, D, T, g->k, D, 0);
    matmul(ly.att_v, g->xv, D, T, g->v, D, 0);
    lora(g, ly.w1, ly.w2, g->xw, T, 1, g->dec);
    lora(g, ly.a1, ly.a2, g->xa, T, 0, g->alpha);
    lora(g, ly.g1, ly.g2, g->xg, T, 2, g->g);
    if (l > 0) {
        lora(g, ly.v1, ly.v2, g->xv, T, 0, g->tmp);
    }
    /* T3..T8 element-wise; kappa-hat into xw, b into xa. */
    k_v7_prep<<<T * H, N, 0, tl_stream>>>(D, N, l, g->dec, g->alpha, g->k, g->v, g->xw, g->xa, g->vfirst, g->tmp, ly.w0, ly.a0,
                            ly.k_k, ly.k_a, ly.v0);
    /* T9. */
    size_t shm = 5 * N * sizeof(float);
    if (N == 64) {
        k_wkv7<64><<<H, N, shm, tl_stream>>>(S, N, T, D, g->r, g->dec, g->k, g->v, g->xw, g->xa, g->y);
    } else if (N == 32) {
        k_wkv7<32><<<H, N, shm, tl_stream>>>(S, N, T, D, g->r, g->dec, g->k, g->v, g->xw, g->xa, g->y);
    } else if (N == 16) {
        k_wkv7<16><<<H, N, shm, tl_stream>>>(S, N, T, D, g->r, g->dec, g->k, g->v, g->xw, g->xa, g->y);
    } else {
        k_wkv7<0><<<H, N, shm, tl_stream>>>(S, N, T, D, g->r, g->dec, g->k, g->v, g->xw, g->xa, g->y);
    }
    /* T10..T12. */
    k_v7_post<<<T * H, N, 0, tl_stream>>>(D, N, g->y, g->r, g->k, g->v, g->g, ly.lnx_w, ly.lnx_b, ly.r_k);
    matmul(ly.att_o, g->y, D, T, g->x, D, 1);

    /* Channel mix. */
    norm_rows(g->x, g->a, ly.ln2_w, ly.ln2_b, T, D, 1, m->ln_eps);
    out6 o1 = {{g->xk, NULL, NULL, NULL, NULL, NULL}};
    k_shift<<<blocks_for(TD, 256), 256, 0, tl_stream>>>(g->a, ffn_prev, T, D, ly.ffn_mix_k, 1, o1);
    cudaMemcpyAsync(ffn_prev, g->a + TD - D, D * sizeof(float), cudaMemcpyDeviceToDevice, tl_stream);
    matmul(ly.ffn_k, g->xk, D, T, g->ffn, F, 0);
    act(g->ffn, (size_t)T * F, 3);
    matmul(ly.ffn_v, g->ffn, F, T, g->x, D, 1);
}

extern "C" void rwkvc_cuda_free(rwkvc_cuda *g) {
    if (!g) {
        return;
    }
    cudaSetDevice(g->device);
    if (g->graph1) {
        cudaGraphExecDestroy(g->graph1);
    }
    if (g->stream) {
        cudaStreamDestroy(g->stream);
    }
    for (void *p : g->allocs) {
        cudaFree(p);
    }
    if (g->host_x) {
        cudaFreeHost(g->host_x);
    }
    delete g;
}

static rwkvc_status build(rwkvc_cuda *g) {
    const rwkvc_model *m = g->m;
    const size_t D = m->info.n_embd, N = m->info.head_size, V = m->info.n_vocab, F = m->info.n_ffn;
    rwkvc_status st;
    g->layers.resize(m->info.n_layer);
    for (uint32_t l = 0; l < m->info.n_layer; l++) {
        const rwkvc_layer *s = &m->layers[l];
        dlayer *d = &g->layers[l];
        if ((st = up_vec(g, s->ln1_w, D, &d->ln1_w)) || (st = up_vec(g, s->ln1_b, D, &d->ln1_b)) ||
            (st = up_vec(g, s->ln2_w, D, &d->ln2_w)) || (st = up_vec(g, s->ln2_b, D, &d->ln2_b)) ||
            (st = up_vec(g, s->lnx_w, D, &d->lnx_w)) || (st = up_vec(g, s->lnx_b, D, &d->lnx_b)) ||
            (st = up_vec(g, s->mix, 6 * D, &d->mix)) || (st = up_vec(g, s->w0, D, &d->w0)) ||
            (st = up_vec(g, s->a0, D, &d->a0)) || (st = up_vec(g, s->v0, D, &d->v0)) ||
            (st = up_vec(g, s->k_k, D, &d->k_k)) || (st = up_vec(g, s->k_a, D, &d->k_a)) ||
            (st = up_vec(g, s->r_k, D, &d->r_k)) || (st = up_vec(g, s->ffn_mix_k, D, &d->ffn_mix_k))) {
            return st;
        }
        if ((st = up_mat(g, &s->w1, &d->w1)) || (st = up_mat(g, &s->w2, &d->w2)) ||
            (st = up_mat(g, &s->a1, &d->a1)) || (st = up_mat(g, &s->a2, &d->a2)) ||
            (st = up_mat(g, &s->g1, &d->g1)) || (st = up_mat(g, &s->g2, &d->g2)) ||
            (st = up_mat(g, &s->att_r, &d->att_r)) || (st = up_mat(g, &s->att_k, &d->att_k)) ||
            (st = up_mat(g, &s->att_v, &d->att_v)) || (st = up_mat(g, &s->att_o, &d->att_o)) ||
            (st = up_mat(g, &s->ffn_k, &d->ffn_k)) || (st = up_mat(g, &s->ffn_v, &d->ffn_v))) {
            return st;
        }
        if (l > 0 && ((st = up_mat(g, &s->v1, &d->v1)) || (st = up_mat(g, &s->v2, &d->v2)))) {
            return st;
        }
    }
    if ((st = up_vec(g, m->lnout_w, D, &g->lnout_w)) || (st = up_vec(g, m->lnout_b, D, &g->lnout_b)) ||
        (st = up_mat(g, &m->head, &g->head))) {
        return st;
    }
    float **td[17] = {&g->x, &g->a, &g->xr, &g->xw, &g->xk, &g->xv, &g->xa, &g->xg, &g->r,
                      &g->k, &g->v, &g->dec, &g->alpha, &g->g, &g->vfirst, &g->y, &g->tmp};
    for (int i = 0; i < 17; i++) {
        if ((st = dalloc(g, MAX_T * D * sizeof(float), (void **)td[i]))) {
            return st;
        }
    }
    if ((st = dalloc(g, MAX_T * m->max_rank * sizeof(float), (void **)&g->lora)) ||
        (st = dalloc(g, MAX_T * F * sizeof(float), (void **)&g->ffn)) ||
        (st = dalloc(g, MAX_T * V * sizeof(float), (void **)&g->logits)) ||
        (st = dalloc(g, m->info.state_len * sizeof(float), (void **)&g->state))) {
        return st;
    }
    cudaError_t e = cudaMallocHost((void **)&g->host_x, MAX_T * D * sizeof(float));
    if (e != cudaSuccess) {
        g->host_x = NULL;
        return cuda_fail(e, "host allocation");
    }
    (void)N;
    if ((e = cudaStreamCreate(&g->stream)) != cudaSuccess) {
        g->stream = NULL;
        return cuda_fail(e, "stream creation");
    }
    const char *env = getenv("RWKVC_CUDA_GRAPHS");
    g->use_graphs = !(env && env[0] == '0');
    return RWKVC_OK;
}

extern "C" rwkvc_status rwkvc_cuda_new(const rwkvc_model *m, int device, uint32_t n_gpu_layers, rwkvc_cuda **out) {
    if (m->info.arch_version != 70) {
        return rwkvc_fail(RWKVC_ERR_BACKEND, "the CUDA backend runs RWKV-7 only so far (this model is v%u.%u)",
                          m->info.arch_version / 10, m->info.arch_version % 10);
    }
    if (n_gpu_layers != 0 && n_gpu_layers != m->info.n_layer) {
        return rwkvc_fail(RWKVC_ERR_BACKEND,
                          "placing %u of %u blocks on the GPU is not implemented yet (use 0 for all blocks)",
                          n_gpu_layers, m->info.n_layer);
    }
    const size_t D = m->info.n_embd, N = m->info.head_size;
    if (N == 0 || N > 1024 || D % N != 0 || N % 16 != 0) {
        return rwkvc_fail(RWKVC_ERR_BACKEND, "head size %zu is not supported by the CUDA backend", N);
    }
    int count = 0;
    cudaError_t e = cudaGetDeviceCount(&count);
    if (e != cudaSuccess || count == 0) {
        cudaGetLastError();
        return rwkvc_fail(RWKVC_ERR_BACKEND, "no CUDA device is usable: %s",
                          e != cudaSuccess ? cudaGetErrorString(e) : "none found");
    }
    if (device >= count) {
        return rwkvc_fail(RWKVC_ERR_BACKEND, "CUDA device %d does not exist (%d found)", device, count);
    }
    if ((e = cudaSetDevice(device)) != cudaSuccess) {
        return cuda_fail(e, "cudaSetDevice");
    }
    rwkvc_cuda *g = new (std::nothrow) rwkvc_cuda();
    if (!g) {
        return rwkvc_fail(RWKVC_ERR_NOMEM, "out of memory");
    }
    g->m = m;
    g->device = device;
    rwkvc_status st = build(g);
    if (st != RWKVC_OK) {
        rwkvc_cuda_free(g);
        return st;
    }
    *out = g;
    return RWKVC_OK;
}

static void run_layers(rwkvc_cuda *g, int T) {
    const size_t D = g->m->info.n_embd, N = g->m->info.head_size;
    for (uint32_t l = 0; l < g->m->info.n_layer; l++) {
        run_layer(g, g->layers[l], (int)l, T, g->state + (size_t)l * (2 + N) * D);
    }
}

extern "C" rwkvc_status rwkvc_cuda_eval(rwkvc_cuda *g, const uint32_t *tokens, size_t n_tokens, float *state,
                                        float *logits, int all) {
    const rwkvc_model *m = g->m;
    const size_t D = m->info.n_embd, V = m->info.n_vocab;
    cudaError_t e = cudaSetDevice(g->device);
    if (e != cudaSuccess) {
        return cuda_fail(e, "cudaSetDevice");
    }
    tl_stream = g->stream;
    /* The state is uploaded whole and written back whole: simple and always correct for a caller-owned buffer. */
    e = cudaMemcpy(g->state, state, m->info.state_len * sizeof(float), cudaMemcpyHostToDevice);
    if (e != cudaSuccess) {
        return cuda_fail(e, "state upload");
    }
    for (size_t done = 0; done < n_tokens;) {
        const int T = (int)(n_tokens - done < MAX_T ? n_tokens - done : MAX_T);
        const bool last = done + T == n_tokens;
        for (int t = 0; t < T; t++) {
            float *xt = g->host_x + (size_t)t * D;
            rwkvc_embed_row(m, tokens[done + t], xt);
            rwkvc_layer_norm(xt, xt, m->ln0_w, m->ln0_b, D, m->ln_eps);
        }
        /* Synchronous: host_x is refilled by the next chunk. */
        e = cudaMemcpy(g->x, g->host_x, (size_t)T * D * sizeof(float), cudaMemcpyHostToDevice);
        if (e != cudaSuccess) {
            return cuda_fail(e, "input upload");
        }
        if (T == 1 && g->use_graphs) {
            /* One token: every kernel argument is the same at each call, so the ~25 launches of each block are
               captured once as a graph and replayed, which removes their launch overhead. */
            if (!g->graph1) {
                cudaGraph_t graph;
                if ((e = cudaStreamBeginCapture(g->stream, cudaStreamCaptureModeThreadLocal)) != cudaSuccess) {
                    return cuda_fail(e, "graph capture");
                }
                run_layers(g, 1);
                if ((e = cudaStreamEndCapture(g->stream, &graph)) != cudaSuccess) {
                    return cuda_fail(e, "graph capture");
                }
                e = cudaGraphInstantiate(&g->graph1, graph, 0);
                cudaGraphDestroy(graph);
                if (e != cudaSuccess) {
                    g->graph1 = NULL;
                    return cuda_fail(e, "graph instantiation");
                }
            }
            if ((e = cudaGraphLaunch(g->graph1, g->stream)) != cudaSuccess) {
                return cuda_fail(e, "graph launch");
            }
        } else {
            run_layers(g, T);
        }
        if (logits && (all || last)) {
            const int t0 = all ? 0 : T - 1, n = T - t0;
            norm_rows(g->x + (size_t)t0 * D, g->a, g->lnout_w, g->lnout_b, n, (int)D, 1, m->ln_eps);
            matmul(g->head, g->a, (int)D, n, g->logits, (int)V, 0);
            float *dst = all ? logits + done * V : logits;
            e = cudaMemcpy(dst, g->logits, (size_t)n * V * sizeof(float), cudaMemcpyDeviceToHost);
            if (e != cudaSuccess) {
                return cuda_fail(e, "logits download");
            }
        }
        done += T;
    }
    /* Written back only when every kernel succeeded, so a failed call leaves the caller's state as it was. */
    e = cudaDeviceSynchronize();
    if (e == cudaSuccess) {
        e = cudaGetLastError();
    }
    if (e != cudaSuccess) {
        return cuda_fail(e, "evaluation");
    }
    e = cudaMemcpy(state, g->state, m->info.state_len * sizeof(float), cudaMemcpyDeviceToHost);
    if (e != cudaSuccess) {
        return cuda_fail(e, "state download");
    }
    return RWKVC_OK;
}
