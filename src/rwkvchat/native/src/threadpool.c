/*
 * threadpool.c: see threadpool.h.
 *
 * Job hand-off: the job fields are written, then `state` = (generation << 32 | next chunk) is published.
 * Threads claim chunks with a compare-and-swap on `state`, so a worker that wakes late for an old generation
 * fails its claim and cannot run a stale job; a successful claim of chunk i < n_chunks guarantees the fields it
 * read belong to that generation (they are rewritten only after every chunk of it completed).
 */
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <time.h>

#include "threadpool.h"

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define CPU_RELAX() _mm_pause()
#elif defined(__aarch64__)
#define CPU_RELAX() __asm__ volatile("yield")
#else
#define CPU_RELAX() ((void)0)
#endif

/* How long an idle worker spins before sleeping: long enough to bridge the gaps between the matrix products
   of one token, short enough not to burn a shared core when the model is idle. */
#define SPIN_NS 200000LL

struct rwkvc_pool {
    uint32_t n_threads;
    uint32_t chunks_per_thread;
    pthread_t *threads;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    _Atomic uint64_t state; /* generation << 32 | next chunk index */
    _Atomic int stop;
    /* The current job; written only by the owner between jobs. */
    _Atomic(rwkvc_task_fn) fn;
    _Atomic(void *) arg;
    _Atomic size_t n;
    _Atomic size_t chunk;
    _Atomic uint32_t n_chunks;
    _Atomic uint32_t done;
};

static long long now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

/* Claims and runs chunks of generation gen until none are left. */
static void run_chunks(rwkvc_pool *p, uint32_t gen) {
    for (;;) {
        uint64_t s = atomic_load_explicit(&p->state, memory_order_acquire);
        if ((uint32_t)(s >> 32) != gen) {
            return;
        }
        rwkvc_task_fn fn = atomic_load_explicit(&p->fn, memory_order_relaxed);
        void *arg = atomic_load_explicit(&p->arg, memory_order_relaxed);
        size_t n = atomic_load_explicit(&p->n, memory_order_relaxed);
        size_t chunk = atomic_load_explicit(&p->chunk, memory_order_relaxed);
        uint32_t n_chunks = atomic_load_explicit(&p->n_chunks, memory_order_relaxed);
        uint32_t idx = (uint32_t)s;
        if (idx >= n_chunks) {
            return;
        }
        if (!atomic_compare_exchange_weak_explicit(&p->state, &s, s + 1, memory_order_acq_rel,
                                                   memory_order_acquire)) {
            continue;
        }
        size_t begin = (size_t)idx * chunk;
        size_t end = begin + chunk < n ? begin + chunk : n;
        fn(arg, begin, end);
        atomic_fetch_add_explicit(&p->done, 1, memory_order_acq_rel);
    }
}

static void *worker_main(void *vp) {
    rwkvc_pool *p = vp;
    uint32_t seen = (uint32_t)(atomic_load(&p->state) >> 32);
    for (;;) {
        /* Wait for a new generation: spin first, then sleep. */
        long long t0 = now_ns();
        unsigned spins = 0;
        uint32_t gen;
        for (;;) {
            gen = (uint32_t)(atomic_load_explicit(&p->state, memory_order_acquire) >> 32);
            if (gen != seen || atomic_load_explicit(&p->stop, memory_order_relaxed)) {
                break;
            }
            CPU_RELAX();
            if (++spins % 256 == 0 && now_ns() - t0 > SPIN_NS) {
                pthread_mutex_lock(&p->mu);
                for (;;) {
                    gen = (uint32_t)(atomic_load(&p->state) >> 32);
                    if (gen != seen || atomic_load(&p->stop)) {
                        break;
                    }
                    pthread_cond_wait(&p->cv, &p->mu);
                }
                pthread_mutex_unlock(&p->mu);
                break;
            }
        }
        if (atomic_load(&p->stop)) {
            return NULL;
        }
        seen = gen;
        run_chunks(p, gen);
    }
}

rwkvc_pool *rwkvc_pool_new(uint32_t n_threads) {
    rwkvc_pool *p = calloc(1, sizeof(*p));
    if (!p) {
        return NULL;
    }
    p->n_threads = n_threads ? n_threads : 1;
    p->chunks_per_thread = RWKVC_POOL_DEFAULT_CHUNKS_PER_THREAD;
    atomic_init(&p->state, 0);
    atomic_init(&p->stop, 0);
    atomic_init(&p->done, 0);
    if (pthread_mutex_init(&p->mu, NULL) != 0) {
        free(p);
        return NULL;
    }
    if (pthread_cond_init(&p->cv, NULL) != 0) {
        pthread_mutex_destroy(&p->mu);
        free(p);
        return NULL;
    }
    if (p->n_threads > 1) {
        p->threads = calloc(p->n_threads - 1, sizeof(pthread_t));
        if (!p->threads) {
            rwkvc_pool_free(p);
            return NULL;
        }
        for (uint32_t i = 0; i + 1 < p->n_threads; i++) {
            if (pthread_create(&p->threads[i], NULL, worker_main, p) != 0) {
                /* Keep the workers that started; the pool just has fewer threads. */
                p->n_threads = i + 1;
                break;
            }
        }
    }
    return p;
}

void rwkvc_pool_free(rwkvc_pool *p) {
    if (!p) {
        return;
    }
    pthread_mutex_lock(&p->mu);
    atomic_store(&p->stop, 1);
    pthread_cond_broadcast(&p->cv);
    pthread_mutex_unlock(&p->mu);
    if (p->threads) {
        for (uint32_t i = 0; i + 1 < p->n_threads; i++) {
            pthread_join(p->threads[i], NULL);
        }
        free(p->threads);
    }
    pthread_cond_destroy(&p->cv);
    pthread_mutex_destroy(&p->mu);
    free(p);
}

uint32_t rwkvc_pool_threads(const rwkvc_pool *p) {
    return p ? p->n_threads : 1;
}

void rwkvc_pool_set_chunks_per_thread(rwkvc_pool *p, uint32_t chunks) {
    if (!p) {
        return;
    }
    if (chunks < 1) {
        chunks = 1;
    }
    if (chunks > RWKVC_POOL_MAX_CHUNKS_PER_THREAD) {
        chunks = RWKVC_POOL_MAX_CHUNKS_PER_THREAD;
    }
    p->chunks_per_thread = chunks;
}

uint32_t rwkvc_pool_chunks_per_thread(const rwkvc_pool *p) {
    return p ? p->chunks_per_thread : RWKVC_POOL_DEFAULT_CHUNKS_PER_THREAD;
}

/* Publishes a job of n_chunks chunks of `chunk` items over [0, n), takes part in it, and waits for it. */
static void run_job(rwkvc_pool *p, size_t n, size_t chunk, uint32_t n_chunks, rwkvc_task_fn fn, void *arg) {
    atomic_store_explicit(&p->fn, fn, memory_order_relaxed);
    atomic_store_explicit(&p->arg, arg, memory_order_relaxed);
    atomic_store_explicit(&p->n, n, memory_order_relaxed);
    atomic_store_explicit(&p->chunk, chunk, memory_order_relaxed);
    atomic_store_explicit(&p->n_chunks, n_chunks, memory_order_relaxed);
    atomic_store_explicit(&p->done, 0, memory_order_relaxed);
    uint32_t gen = (uint32_t)(atomic_load(&p->state) >> 32) + 1;
    atomic_store_explicit(&p->state, (uint64_t)gen << 32, memory_order_release);
    pthread_mutex_lock(&p->mu);
    pthread_cond_broadcast(&p->cv);
    pthread_mutex_unlock(&p->mu);
    run_chunks(p, gen);
    unsigned spins = 0;
    while (atomic_load_explicit(&p->done, memory_order_acquire) < n_chunks) {
        CPU_RELAX();
        if (++spins % 1024 == 0) {
            sched_yield();
        }
    }
}

void rwkvc_pool_for(rwkvc_pool *p, size_t n, size_t grain, rwkvc_task_fn fn, void *arg) {
    if (n == 0) {
        return;
    }
    if (grain == 0) {
        grain = 1;
    }
    if (!p || p->n_threads <= 1 || n <= grain) {
        fn(arg, 0, n);
        return;
    }
    size_t units = (n + grain - 1) / grain;
    size_t want = (size_t)p->n_threads * p->chunks_per_thread;
    size_t per = (units + want - 1) / want;
    size_t chunk = per * grain;
    uint32_t n_chunks = (uint32_t)((n + chunk - 1) / chunk);
    run_job(p, n, chunk, n_chunks, fn, arg);
}

void rwkvc_pool_for_each(rwkvc_pool *p, size_t n, rwkvc_task_fn fn, void *arg) {
    if (n == 0) {
        return;
    }
    if (!p || p->n_threads <= 1 || n == 1) {
        fn(arg, 0, n);
        return;
    }
    run_job(p, n, 1, (uint32_t)n, fn, arg);
}
