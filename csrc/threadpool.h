/* A persistent pool of worker threads for the kernels, and per-thread scratch memory.
 *
 * Workers are created once and wait for tasks by spinning briefly, then sleeping on a condition
 * variable: a call into the kernels costs a cache-line handoff (about a microsecond), not a thread
 * start.  The calling thread takes part as thread 0.
 *
 * A pool serves one caller at a time.  `exec_begin` claims it; a second caller (another Python
 * thread with the GIL released) gets a single-threaded context with its own scratch instead of
 * waiting, so kernels never block on each other. */
#ifndef EDGELM_THREADPOOL_H
#define EDGELM_THREADPOOL_H

#include <stddef.h>

/* A task runs as fn(ctx, ith, nth) for ith = 0 .. nth-1, each on its own thread. */
typedef void (*pool_task_fn)(void *ctx, int ith, int nth);

struct pool;

struct pool *pool_create(int n_threads); /* n_threads counts the caller; NULL on failure */
void pool_destroy(struct pool *pool);
int pool_n_threads(const struct pool *pool);

/* Grow-only 64-byte-aligned scratch buffers, one per slot (thread index, plus shared slots). */
#define SCRATCH_SLOTS_SHARED 2 /* slots after the per-thread ones: activations, their panel */
struct scratch {
    void *ptr;
    size_t size;
};

/* One kernel call's hold on the threads and scratch memory. */
struct exec {
    struct pool *pool; /* NULL when running on the caller's thread only */
    int n_threads;
    struct scratch *slots; /* n_threads + SCRATCH_SLOTS_SHARED */
    struct scratch own[1 + SCRATCH_SLOTS_SHARED]; /* used when the pool was busy */
};

void exec_begin(struct exec *ex, struct pool *pool);
void exec_end(struct exec *ex);

/* Run fn over nth threads (nth <= ex->n_threads); returns when all are done. */
void exec_run(struct exec *ex, pool_task_fn fn, void *ctx, int nth);

/* Chunks 0 .. n_chunks-1 handed out one at a time to nth threads: fn(ctx, chunk, ith).  A thread
 * the OS has descheduled (the machine is shared) then holds up one chunk, not a fixed share. */
typedef void (*chunk_task_fn)(void *ctx, long long chunk, int ith);
void exec_run_chunks(struct exec *ex, chunk_task_fn fn, void *ctx, long long n_chunks, int nth);

/* Chunk size (a multiple of align) that gives each of nth threads several chunks of n items. */
long long chunk_size(long long n, int nth, long long align);

/* Scratch of at least `bytes` for thread `ith`, or a shared slot (ex->n_threads + k); NULL when out
 * of memory.  Valid until exec_end; a later request for the same slot may move it. */
void *exec_scratch(struct exec *ex, int slot, size_t bytes);

/* Rows [*begin, *end) of n_rows for thread ith of nth, in whole multiples of `align` rows. */
void split_range(long long n_rows, int ith, int nth, long long align, long long *begin, long long *end);

#endif
