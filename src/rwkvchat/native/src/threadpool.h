/*
 * threadpool.h: a small pthread pool owned by one context, with a parallel-for over index ranges.
 *
 * Workers are created once and wait between jobs (a short spin, then a condition variable), so a job costs
 * a few microseconds. The calling thread takes part in every job. With one thread everything runs inline.
 * One job at a time: the pool is used by the single thread that owns its context.
 */
#ifndef RWKVC_THREADPOOL_H
#define RWKVC_THREADPOOL_H

#include <stddef.h>
#include <stdint.h>

typedef struct rwkvc_pool rwkvc_pool;

/*
 * Chunks per thread of a parallel-for (and pieces per thread of a multi-product job, forward_common.c), 2 unless
 * set otherwise. More chunks let a thread slowed by other load, or a fast core of a hybrid CPU, take over work;
 * each costs a claim and a cold start of its memory stream. Decode jobs are short (a 0.4B Q4_K product is
 * 0.1-0.6 MB): 2 measured faster than 4 (0.4B Q4_K decode 12.3 -> 11.6-11.9 ms, its 512-token prefill 743 -> 790
 * tok/s), and on CPUs whose cores are all alike 1 is faster again (the context picks it there, api.c).
 */
#define RWKVC_POOL_DEFAULT_CHUNKS_PER_THREAD 2
#define RWKVC_POOL_MAX_CHUNKS_PER_THREAD 8

/* Runs items [begin, end) of a job; called on several threads at once with disjoint ranges. */
typedef void (*rwkvc_task_fn)(void *arg, size_t begin, size_t end);

/* One thread's part of a team job: called once on every thread of the pool, tid in [0, n_threads). */
typedef void (*rwkvc_team_fn)(void *arg, uint32_t tid, uint32_t n_threads);

/* Makes a pool of n_threads in all (the caller counts as one; n_threads - 1 workers). NULL on failure. */
rwkvc_pool *rwkvc_pool_new(uint32_t n_threads);

/* Stops and joins the workers. NULL-safe. */
void rwkvc_pool_free(rwkvc_pool *p);

/* Threads in the pool, the caller included. */
uint32_t rwkvc_pool_threads(const rwkvc_pool *p);

/* Chunks per thread of later jobs, clamped to [1, RWKVC_POOL_MAX_CHUNKS_PER_THREAD]. Not during a job. */
void rwkvc_pool_set_chunks_per_thread(rwkvc_pool *p, uint32_t chunks);

/* The current chunks per thread (RWKVC_POOL_DEFAULT_CHUNKS_PER_THREAD for a NULL pool). */
uint32_t rwkvc_pool_chunks_per_thread(const rwkvc_pool *p);

/*
 * Calls fn over [0, n) split into chunks whose boundaries are multiples of grain (except the last), spread over
 * the threads; returns when every chunk is done. Runs inline when the pool has one thread or n <= grain.
 */
void rwkvc_pool_for(rwkvc_pool *p, size_t n, size_t grain, rwkvc_task_fn fn, void *arg);

/*
 * Calls fn(arg, i, i + 1) for every i < n, each index a chunk of its own (for jobs already cut into pieces of
 * about equal cost); returns when all are done. Runs inline when the pool has one thread or n <= 1.
 */
void rwkvc_pool_for_each(rwkvc_pool *p, size_t n, rwkvc_task_fn fn, void *arg);

/*
 * Calls fn(arg, tid, n) once on each of the pool's n threads (the caller among them) and returns when all have
 * returned. fn may call rwkvc_pool_barrier between its phases: a team job is for a sequence of short steps that
 * every thread shares, where a job per step would cost a hand-off each (the decode of one token). The tids are
 * handed out in claim order, not by thread.
 */
void rwkvc_pool_team(rwkvc_pool *p, rwkvc_team_fn fn, void *arg);

/*
 * Inside a team job only: returns when every thread of the pool has called it (the writes before it are then
 * visible to all). Spins, yielding now and then, so it costs a few cache-line transfers rather than a wake-up.
 */
void rwkvc_pool_barrier(rwkvc_pool *p);

#endif /* RWKVC_THREADPOOL_H */
