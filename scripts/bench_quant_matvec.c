/*
 * bench_quant_matvec.c: single-thread throughput of the quantized matrix kernels on a 4096 x 4096 matrix, per type
 * and instruction set (a developer tool, not a test). matvec reports weight bytes per second (decode is
 * memory-bound, so compare with the machine's bandwidth); matmat (argument n_vec > 1) reports multiply-adds.
 *
 * `bench threads N [type ...]` instead runs the best kernels on N threads over matrices of about 1 GiB (beyond any
 * cache) and compares their weight-read rate with a plain N-thread read of the same bytes (the bandwidth bound),
 * alternating the two BENCH_REPS times (default 5) and keeping the best of each; type names (q4_0 ...) select types;
 * RWKVC_ISA=avx2 caps the instruction set as in the library; BENCH_COLS sets the columns (default 8192; the model
 * shapes are 1024-8192). The matrices sit in transparent huge pages, like the weights of a loaded model.
 *
 * Build against the static library of a CMake build dir B:
 *   cc -O2 -I src/rwkvchat/native/src -I src/rwkvchat/native/include scripts/bench_quant_matvec.c \
 *      B/src/rwkvchat/native/librwkvc_static.a -lm -lpthread -o bench && ./bench [n_vec | threads N [type ...]]
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#ifdef __linux__
#include <sys/mman.h>
#endif

#include "cpu.h"
#include "kernels.h"
#include "quant.h"

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

typedef struct {
    const rwkvc_matmul_kernels *k;
    const uint8_t *W;
    size_t rb, r0, r1, cols;
    const void *xq;
    float *y;
    uint64_t sum;
} job;

static void *run_matvec(void *p) {
    job *j = p;
    j->k->matvec(j->W, j->rb, j->xq, j->y, j->r0, j->r1, j->cols);
    return NULL;
}

static void *run_read(void *p) {
    job *j = p;
    const uint64_t *a = (const uint64_t *)(j->W + j->r0 * j->rb);
    const size_t n = (j->r1 - j->r0) * j->rb / 8;
    uint64_t s0 = 0, s1 = 0, s2 = 0, s3 = 0;
    for (size_t i = 0; i + 4 <= n; i += 4) {
        s0 += a[i];
        s1 += a[i + 1];
        s2 += a[i + 2];
        s3 += a[i + 3];
    }
    j->sum = s0 + s1 + s2 + s3;
    return NULL;
}

/* The weights live in transparent huge pages once moved out of the file mapping (private_weights.c): the
   matrices here do too, where the kernel offers them. */
static uint8_t *alloc_weights(size_t bytes) {
    const size_t huge = (size_t)2 << 20;
    void *p = NULL;
    if (posix_memalign(&p, huge, (bytes + huge - 1) / huge * huge) != 0) {
        return NULL;
    }
#ifdef MADV_HUGEPAGE
    madvise(p, (bytes + huge - 1) / huge * huge, MADV_HUGEPAGE);
#endif
    return p;
}

static double run_threads(void *(*fn)(void *), job *jobs, int nt) {
    pthread_t th[256];
    const double t0 = now();
    for (int i = 0; i < nt; i++) {
        pthread_create(&th[i], NULL, fn, &jobs[i]);
    }
    for (int i = 0; i < nt; i++) {
        pthread_join(th[i], NULL);
    }
    return now() - t0;
}

static int bench_threads(int nt, int argc, char **argv) {
    const char *cols_env = getenv("BENCH_COLS");
    const size_t C = cols_env ? (size_t)atol(cols_env) : 8192;
    const uint32_t types[] = {8, 2, 3, 6, 7, 12, 13, 14};
    const rwkvc_isa isa = rwkvc_isa_select(); /* RWKVC_ISA=avx2 times the AVX2 kernels */
    printf("%d threads, %s kernels, about 1 GiB per matrix of %zu columns\n", nt, rwkvc_isa_name(isa), C);
    float *x = malloc(C * sizeof(float));
    for (size_t i = 0; i < C; i++) {
        x[i] = (float)((i * 40503u) % 777) / 777.f - 0.5f;
    }
    const char *reps_env = getenv("BENCH_REPS");
    const int reps = reps_env ? atoi(reps_env) : 5;
    for (int k = 0; k < 8; k++) {
        const rwkvc_type_traits *tr = rwkvc_quant_traits(types[k]);
        int wanted = argc == 0;
        for (int a = 0; a < argc; a++) {
            wanted |= strcmp(argv[a], tr->name) == 0;
        }
        if (!wanted) {
            continue;
        }
        const size_t rb = C / tr->block_size * tr->block_bytes;
        const size_t R = ((size_t)1 << 30) / rb;
        uint8_t *W = alloc_weights(R * rb);
        /* Random bytes with tame scales: the speed does not depend on the values. */
        for (size_t i = 0; i < R * rb; i++) {
            W[i] = (uint8_t)(i * 2654435761u >> 13);
        }
        for (size_t i = 0; i < R * rb; i += tr->block_bytes) {
            const size_t off = types[k] == 14 ? 208 : 0;
            W[i + off] = 0;
            W[i + off + 1] = 0x20;
            if (types[k] == 3 || types[k] == 7 || types[k] == 12 || types[k] == 13) {
                W[i + 2] = 0;
                W[i + 3] = 0x20;
            }
        }
        const rwkvc_matmul_kernels *K = rwkvc_matmul_get(types[k], isa);
        uint8_t *xq = malloc(K->act_bytes(C));
        K->prepare_act(x, xq, C);
        float *y = malloc(R * sizeof(float));
        job jobs[256];
        for (int i = 0; i < nt; i++) {
            jobs[i] = (job){K, W, rb, R * i / nt, R * (i + 1) / nt, C, xq, y, 0};
        }
        double best_mv = 1e30;
        double best_rd = 1e30;
        /* Other tenants move the bandwidth by up to 2x within seconds: also the median of back-to-back pairs. */
        double pair[64];
        const int np = reps < 64 ? reps : 64;
        for (int rep = 0; rep < np; rep++) {
            const double a = run_threads(run_matvec, jobs, nt);
            const double b = run_threads(run_read, jobs, nt);
            best_mv = a < best_mv ? a : best_mv;
            best_rd = b < best_rd ? b : best_rd;
            pair[rep] = b / a;
        }
        for (int i = 1; i < np; i++) {
            for (int j = i; j > 0 && pair[j - 1] > pair[j]; j--) {
                const double t = pair[j];
                pair[j] = pair[j - 1];
                pair[j - 1] = t;
            }
        }
        printf("%-5s matvec %6.1f GB/s   plain read %6.1f GB/s   ratio %.2f   median pair ratio %.2f\n", tr->name,
               R * rb / best_mv / 1e9, R * rb / best_rd / 1e9, best_rd / best_mv, pair[np / 2]);
        free(W);
        free(xq);
        free(y);
    }
    free(x);
    return 0;
}

int main(int argc, char **argv) {
    if (argc > 2 && strcmp(argv[1], "threads") == 0) {
        return bench_threads(atoi(argv[2]), argc - 3, argv + 3);
    }
    const size_t R = 4096;
    const size_t C = 4096;
    const int nvec = argc > 1 ? atoi(argv[1]) : 1;
    const uint32_t types[] = {8, 2, 3, 6, 7, 12, 13, 14};
    float *w = malloc(R * C * sizeof(float));
    float *x = malloc(C * sizeof(float) * 64);
    float *y = malloc(R * sizeof(float) * 64);
    for (size_t i = 0; i < R * C; i++) {
        w[i] = (float)((i * 2654435761u) % 1000) / 1000.f - 0.5f;
    }
    for (size_t i = 0; i < C * 64; i++) {
        x[i] = (float)((i * 40503u) % 777) / 777.f - 0.5f;
    }
    for (int k = 0; k < 8; k++) {
        const rwkvc_type_traits *tr = rwkvc_quant_traits(types[k]);
        const size_t rb = C / tr->block_size * tr->block_bytes;
        uint8_t *W = alloc_weights(R * rb);
        for (size_t r = 0; r < R; r++) {
            tr->quantize_row(w + r * C, W + r * rb, C);
        }
        const rwkvc_matmul_kernels *ks[3] = {rwkvc_quant_kernels_ref(types[k]), rwkvc_quant_kernels_avx2(types[k]),
                                             rwkvc_quant_kernels_avx512(types[k])};
        const char *names[3] = {"ref", "avx2", "avx512"};
        printf("%-5s", tr->name);
        for (int i = 0; i < 3; i++) {
            const rwkvc_matmul_kernels *K = ks[i];
            if (!K || (i == 2 && !rwkvc_cpu_features()->avx512)) {
                continue;
            }
            const size_t ab = K->act_bytes(C);
            uint8_t *xq = malloc(ab * 64);
            for (int t = 0; t < nvec; t++) {
                K->prepare_act(x + t * C, xq + t * ab, C);
            }
            int reps = i == 0 ? 2 : 50;
            if (nvec > 1) {
                reps = i == 0 ? 1 : 4;
            }
            double best = 1e30;
            for (int rep = 0; rep < reps; rep++) {
                const double t0 = now();
                if (nvec == 1) {
                    K->matvec(W, rb, xq, y, 0, R, C);
                } else {
                    K->matmat(W, rb, xq, ab, nvec, y, R, 0, R, C);
                }
                const double dt = now() - t0;
                best = dt < best ? dt : best;
            }
            if (nvec == 1) {
                printf("  %s %6.2f GB/s", names[i], R * rb / best / 1e9);
            } else {
                printf("  %s %6.1f GMAC/s", names[i], (double)R * C * nvec / best / 1e9);
            }
            free(xq);
        }
        printf("\n");
        free(W);
    }
    free(w);
    free(x);
    free(y);
    return 0;
}
