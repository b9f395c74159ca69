/*
 * ab_decode.c: decode speed of two builds of librwkvc, alternating in one process.
 *
 * The development VMs' memory bandwidth moves by tens of percent within seconds, so two builds timed in separate
 * runs (even alternating ones) differ by the memory's phase more than by their code. Here both builds are loaded
 * into the same process (dlopen, RTLD_LOCAL: each has its own symbols and thread pool) with the same model, and
 * decode single tokens in blocks, A B B A A B ..., so neighbouring blocks see the same memory. Reported: each
 * build's median over blocks of its per-block median ms per token, the median of the per-block ratios B / A, and
 * the same over the third of the blocks that ran fastest (the memory's fast phases, where decode is nearest to
 * the kernels' own speed).
 *
 * Build: cc -O2 -I src/rwkvchat/native/include scripts/ab_decode.c -ldl -o ab_decode
 * Run:   ./ab_decode LIB_A.so LIB_B.so MODEL.gguf [BLOCKS [TOKENS_PER_BLOCK [THREADS]]]   (defaults 60 12 2)
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "rwkvc.h"

#define MAX_BLOCKS 4096

typedef struct {
    rwkvc_ctx *ctx;
    float *state, *logits;
    size_t state_len, n_vocab;
    rwkvc_status (*eval)(rwkvc_ctx *, const uint32_t *, size_t, float *, size_t, float *, size_t);
} engine;

static double now_s(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

static int cmp_double(const void *a, const void *b) {
    const double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* Median of v[0..n) (v is not modified). */
static double median(const double *v, int n) {
    double t[MAX_BLOCKS];
    memcpy(t, v, (size_t)n * sizeof *t);
    qsort(t, (size_t)n, sizeof *t, cmp_double);
    return t[n / 2];
}

static int open_engine(engine *e, const char *lib, const char *model, uint32_t threads) {
    void *h = dlopen(lib, RTLD_NOW | RTLD_LOCAL);
    if (!h) {
        fprintf(stderr, "ab_decode: %s\n", dlerror());
        return 0;
    }
    rwkvc_status (*load)(const char *, uint32_t, uint32_t, rwkvc_model **) = dlsym(h, "rwkvc_model_load_ex");
    rwkvc_status (*moved)(rwkvc_model *, uint32_t, uint64_t *, uint64_t *) = dlsym(h, "rwkvc_model_weights_moved");
    rwkvc_status (*info)(const rwkvc_model *, rwkvc_info *) = dlsym(h, "rwkvc_model_info");
    rwkvc_status (*ctx_new)(const rwkvc_model *, uint32_t, rwkvc_ctx **) = dlsym(h, "rwkvc_ctx_new");
    rwkvc_status (*state_init)(const rwkvc_model *, float *, size_t) = dlsym(h, "rwkvc_state_init");
    e->eval = dlsym(h, "rwkvc_eval");
    if (!load || !moved || !info || !ctx_new || !state_init || !e->eval) {
        fprintf(stderr, "ab_decode: %s lacks the rwkvc API\n", lib);
        return 0;
    }
    rwkvc_model *m = NULL;
    rwkvc_info mi;
    uint64_t done, total;
    /* Decode is timed after the weights' move into huge-page memory, as the bench does. */
    if (load(model, threads, RWKVC_WEIGHTS_AUTO, &m) != RWKVC_OK || moved(m, 1, &done, &total) != RWKVC_OK ||
        info(m, &mi) != RWKVC_OK || ctx_new(m, threads, &e->ctx) != RWKVC_OK) {
        fprintf(stderr, "ab_decode: %s could not load %s\n", lib, model);
        return 0;
    }
    e->state_len = mi.state_len;
    e->n_vocab = mi.n_vocab;
    e->state = malloc(e->state_len * sizeof(float));
    e->logits = malloc(e->n_vocab * sizeof(float));
    return e->state && e->logits && state_init(m, e->state, e->state_len) == RWKVC_OK;
}

int main(int argc, char **argv) {
    if (argc < 4) {
        fprintf(stderr, "usage: %s LIB_A LIB_B MODEL [BLOCKS [TOKENS_PER_BLOCK [THREADS]]]\n", argv[0]);
        return 2;
    }
    const int n_blocks = argc > 4 ? atoi(argv[4]) : 60;
    const int n_tokens = argc > 5 ? atoi(argv[5]) : 12;
    const uint32_t threads = argc > 6 ? (uint32_t)atoi(argv[6]) : 2;
    if (n_blocks < 1 || n_blocks > MAX_BLOCKS || n_tokens < 1 || n_tokens > MAX_BLOCKS) {
        fprintf(stderr, "ab_decode: BLOCKS and TOKENS_PER_BLOCK must be 1..%d\n", MAX_BLOCKS);
        return 2;
    }
    engine e[2];
    if (!open_engine(&e[0], argv[1], argv[3], threads) || !open_engine(&e[1], argv[2], argv[3], threads)) {
        return 1;
    }
    static double block_ms[2][MAX_BLOCKS], token_s[MAX_BLOCKS], ratio[MAX_BLOCKS];
    unsigned seed = 1;
    for (int b = 0; b < n_blocks; b++) {
        for (int k = 0; k < 2; k++) {
            const int w = (b & 1) ? 1 - k : k; /* A B, B A, A B, ... */
            /* Two untimed tokens first: the pool's workers may have gone to sleep during the other build's block. */
            for (int i = -2; i < n_tokens; i++) {
                const uint32_t tok = (uint32_t)(rand_r(&seed) % e[w].n_vocab);
                const double t0 = now_s();
                if (e[w].eval(e[w].ctx, &tok, 1, e[w].state, e[w].state_len, e[w].logits, e[w].n_vocab) != RWKVC_OK) {
                    fprintf(stderr, "ab_decode: eval failed\n");
                    return 1;
                }
                if (i >= 0) {
                    token_s[i] = now_s() - t0;
                }
            }
            block_ms[w][b] = median(token_s, n_tokens) * 1e3;
        }
        ratio[b] = block_ms[1][b] / block_ms[0][b];
    }
    printf("A %.3f ms  B %.3f ms  B/A %.4f  (%d blocks of %d tokens, %u threads)\n", median(block_ms[0], n_blocks),
           median(block_ms[1], n_blocks), median(ratio, n_blocks), n_blocks, n_tokens, threads);
    /* The fastest third of the blocks, by A + B. */
    int order[MAX_BLOCKS];
    for (int b = 0; b < n_blocks; b++) {
        order[b] = b;
    }
    for (int i = 1; i < n_blocks; i++) {
        for (int j = i; j > 0 && block_ms[0][order[j]] + block_ms[1][order[j]] <
                                     block_ms[0][order[j - 1]] + block_ms[1][order[j - 1]]; j--) {
            const int t = order[j];
            order[j] = order[j - 1];
            order[j - 1] = t;
        }
    }
    const int n_fast = n_blocks / 3 > 0 ? n_blocks / 3 : 1;
    double fa[MAX_BLOCKS], fb[MAX_BLOCKS], fr[MAX_BLOCKS];
    for (int i = 0; i < n_fast; i++) {
        fa[i] = block_ms[0][order[i]];
        fb[i] = block_ms[1][order[i]];
        fr[i] = ratio[order[i]];
    }
    printf("fastest third: A %.3f ms  B %.3f ms  B/A %.4f\n", median(fa, n_fast), median(fb, n_fast),
           median(fr, n_fast));
    return 0;
}
