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
#include <string.h>
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
    _Atomic(rwkvc_team_fn) team_fn; /* non-NULL: a team job (one chunk per thread, fn unused) */
    /* Team barrier, each word on a cache line of its own: threads arrived at the current barrier, and how many
       barriers have been passed (a waiting thread watches it change). */
    _Alignas(64) _Atomic uint32_t bar_arrived;
    _Alignas(64) _Atomic uint32_t bar_passed; /* (the struct's size rounds up to a whole line after it) */
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
        rwkvc_team_fn team_fn = atomic_load_explicit(&p->team_fn, memory_order_relaxed);
        if (team_fn) {
            /* One chunk per thread: a thread that took two would wait for itself at the first barrier. */
            team_fn(arg, idx, n_chunks);
            atomic_fetch_add_explicit(&p->done, 1, memory_order_acq_rel);
            return;
        }
        size_t begin = (size_t)idx * chunk;
        size_t end = begin + chunk < n ? begin + chunk : n;
        fn(arg, begin, end);
        atomic_fetch_add_explicit(&p->done, 1, memory_order_acq_rel);
    }
}

static void *worker_main(void *vp) {
    rwkvc_pool *p = vp;
    /* Generation 0 is the pool's state before its first job: a worker that starts after a job was published must
       still take part in it (a team job waits for every thread). */
    uint32_t seen = 0;
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
    /* Aligned for the barrier's cache lines. */
    rwkvc_pool *p = aligned_alloc(64, (sizeof(*p) + 63) & ~(size_t)63);
    if (!p) {
        return NULL;
    }
    memset(p, 0, sizeof(*p));
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

/* Publishes a job of n_chunks chunks of `chunk` items over [0, n) (or a team job: team_fn set, one chunk per
   thread), takes part in it, and waits for it. */
static void run_job(rwkvc_pool *p, size_t n, size_t chunk, uint32_t n_chunks, rwkvc_task_fn fn,
                    rwkvc_team_fn team_fn, void *arg) {
    atomic_store_explicit(&p->fn, fn, memory_order_relaxed);
    atomic_store_explicit(&p->team_fn, team_fn, memory_order_relaxed);
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
    run_job(p, n, chunk, n_chunks, fn, NULL, arg);
}

void rwkvc_pool_for_each(rwkvc_pool *p, size_t n, rwkvc_task_fn fn, void *arg) {
    if (n == 0) {
        return;
    }
    if (!p || p->n_threads <= 1 || n == 1) {
        fn(arg, 0, n);
        return;
    }
    run_job(p, n, 1, (uint32_t)n, fn, NULL, arg);
}

void rwkvc_pool_team(rwkvc_pool *p, rwkvc_team_fn fn, void *arg) {
    if (!p || p->n_threads <= 1) {
        fn(arg, 0, 1);
        return;
    }
    run_job(p, p->n_threads, 1, p->n_threads, NULL, fn, arg);
}

void rwkvc_pool_barrier(rwkvc_pool *p) {
    if (!p || p->n_threads <= 1) {
        return;
    }
    const uint32_t passed = atomic_load_explicit(&p->bar_passed, memory_order_acquire);
    if (atomic_fetch_add_explicit(&p->bar_arrived, 1, memory_order_acq_rel) + 1 == p->n_threads) {
        /* The last to arrive resets the count before it releases the others, so a thread that runs ahead into
           the next barrier counts from zero. */
        atomic_store_explicit(&p->bar_arrived, 0, memory_order_relaxed);
        atomic_store_explicit(&p->bar_passed, passed + 1, memory_order_release);
        return;
    }
    unsigned spins = 0;
    while (atomic_load_explicit(&p->bar_passed, memory_order_acquire) == passed) {
        CPU_RELAX();
        if (++spins % 1024 == 0) {
            sched_yield();
        }
    }
}
