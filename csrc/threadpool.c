/* Persistent worker threads: spin-then-sleep waiting, a generation counter to publish tasks. */
#define _GNU_SOURCE
#include "threadpool.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define cpu_relax() _mm_pause()
#elif defined(__aarch64__)
#define cpu_relax() __asm__ __volatile__("yield")
#else
#define cpu_relax() ((void)0)
#endif

/* How long a waiting thread spins before it sleeps.  Kernel calls in a decode step come every few
 * microseconds to tens of microseconds, so this covers the gaps the Python code between them leaves;
 * an idle pool sleeps after it. */
#define SPIN_BEFORE_SLEEP_NS 200000LL
#define SPINS_PER_CLOCK_READ 64
#define SCRATCH_ALIGN 64

struct worker {
    pthread_t thread;
    struct pool *pool;
    int index;
    int started;
};

struct pool {
    int n_threads;
    unsigned fork_generation; /* value of the global at creation: a forked child has no workers */
    _Atomic unsigned generation; /* bumped to publish a task */
    _Atomic int pending;         /* workers that have not finished the current task */
    _Atomic int n_sleeping;      /* workers blocked on `wake` */
    _Atomic int caller_sleeping;
    _Atomic int busy; /* a caller holds the pool */
    _Atomic int stop;
    pool_task_fn fn;
    void *ctx;
    int nth;
    pthread_mutex_t mutex;
    pthread_cond_t wake;
    pthread_cond_t done;
    struct scratch *slots;
    struct worker workers[];
};

static _Atomic unsigned g_fork_generation;
static pthread_once_t g_atfork_once = PTHREAD_ONCE_INIT;

static void on_fork_child(void) { atomic_fetch_add(&g_fork_generation, 1); }
static void install_atfork(void) { pthread_atfork(NULL, NULL, on_fork_child); }

static long long now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

/* Spin until *word != seen or the spin budget runs out; returns the last value read. */
static unsigned spin_while_equal(_Atomic unsigned *word, unsigned seen) {
    long long deadline = 0;
    for (int i = 1;; i++) {
        const unsigned v = atomic_load_explicit(word, memory_order_acquire);
        if (v != seen) return v;
        cpu_relax();
        if (i % SPINS_PER_CLOCK_READ == 0) {
            const long long t = now_ns();
            if (deadline == 0) deadline = t + SPIN_BEFORE_SLEEP_NS;
            else if (t > deadline) return v;
        }
    }
}

static void *worker_main(void *arg) {
    struct worker *w = arg;
    struct pool *p = w->pool;
    unsigned seen = 0;
    for (;;) {
        unsigned gen = spin_while_equal(&p->generation, seen);
        if (gen == seen) {
            pthread_mutex_lock(&p->mutex);
            atomic_fetch_add(&p->n_sleeping, 1);
            while ((gen = atomic_load(&p->generation)) == seen && !atomic_load(&p->stop))
                pthread_cond_wait(&p->wake, &p->mutex);
            atomic_fetch_sub(&p->n_sleeping, 1);
            pthread_mutex_unlock(&p->mutex);
        }
        if (atomic_load_explicit(&p->stop, memory_order_acquire)) break;
        seen = gen;
        if (w->index < p->nth) p->fn(p->ctx, w->index, p->nth);
        if (atomic_fetch_sub(&p->pending, 1) == 1 && atomic_load(&p->caller_sleeping)) {
            pthread_mutex_lock(&p->mutex);
            pthread_cond_signal(&p->done);
            pthread_mutex_unlock(&p->mutex);
        }
    }
    return NULL;
}

struct pool *pool_create(int n_threads) {
    if (n_threads < 1) n_threads = 1;
    pthread_once(&g_atfork_once, install_atfork);
    struct pool *p = calloc(1, sizeof *p + (size_t)n_threads * sizeof(struct worker));
    if (!p) return NULL;
    p->slots = calloc((size_t)n_threads + SCRATCH_SLOTS_SHARED, sizeof *p->slots);
    if (!p->slots) {
        free(p);
        return NULL;
    }
    p->n_threads = n_threads;
    p->fork_generation = atomic_load(&g_fork_generation);
    pthread_mutex_init(&p->mutex, NULL);
    pthread_cond_init(&p->wake, NULL);
    pthread_cond_init(&p->done, NULL);
    for (int i = 1; i < n_threads; i++) {
        struct worker *w = &p->workers[i];
        w->pool = p;
        w->index = i;
        if (pthread_create(&w->thread, NULL, worker_main, w) != 0) {
            p->n_threads = i; /* run with the workers we got */
            break;
        }
        w->started = 1;
    }
    return p;
}

static void free_slots(struct scratch *slots, int n) {
    for (int i = 0; i < n; i++) free(slots[i].ptr);
}

void pool_destroy(struct pool *p) {
    if (!p) return;
    const int mine = atomic_load(&g_fork_generation) == p->fork_generation;
    if (mine) {
        pthread_mutex_lock(&p->mutex);
        atomic_store(&p->stop, 1);
        atomic_fetch_add(&p->generation, 1);
        pthread_cond_broadcast(&p->wake);
        pthread_mutex_unlock(&p->mutex);
        for (int i = 1; i < p->n_threads; i++)
            if (p->workers[i].started) pthread_join(p->workers[i].thread, NULL);
        pthread_mutex_destroy(&p->mutex);
        pthread_cond_destroy(&p->wake);
        pthread_cond_destroy(&p->done);
    }
    free_slots(p->slots, p->n_threads + SCRATCH_SLOTS_SHARED);
    free(p->slots);
    free(p);
}

int pool_n_threads(const struct pool *p) { return p ? p->n_threads : 1; }

void exec_begin(struct exec *ex, struct pool *pool) {
    memset(ex, 0, sizeof *ex);
    ex->n_threads = 1;
    ex->slots = ex->own;
    if (!pool) return;
    if (atomic_load(&g_fork_generation) != pool->fork_generation) return; /* forked: no workers */
    if (atomic_exchange_explicit(&pool->busy, 1, memory_order_acquire)) return;
    ex->pool = pool;
    ex->n_threads = pool->n_threads;
    ex->slots = pool->slots;
}

void exec_end(struct exec *ex) {
    if (ex->pool) atomic_store_explicit(&ex->pool->busy, 0, memory_order_release);
    else free_slots(ex->own, 1 + SCRATCH_SLOTS_SHARED);
    memset(ex, 0, sizeof *ex);
}

void exec_run(struct exec *ex, pool_task_fn fn, void *ctx, int nth) {
    if (nth > ex->n_threads) nth = ex->n_threads;
    struct pool *p = ex->pool;
    if (nth <= 1 || !p) {
        for (int i = 0; i < (nth < 1 ? 1 : nth); i++) fn(ctx, i, nth < 1 ? 1 : nth);
        return;
    }
    p->fn = fn;
    p->ctx = ctx;
    p->nth = nth;
    atomic_store(&p->pending, p->n_threads - 1);
    atomic_fetch_add(&p->generation, 1); /* seq_cst: pairs with the workers' n_sleeping check */
    if (atomic_load(&p->n_sleeping) > 0) {
        pthread_mutex_lock(&p->mutex);
        pthread_cond_broadcast(&p->wake);
        pthread_mutex_unlock(&p->mutex);
    }
    fn(ctx, 0, nth);
    /* wait for the workers: spin, then sleep */
    long long deadline = 0;
    for (int i = 1; atomic_load_explicit(&p->pending, memory_order_acquire) != 0; i++) {
        cpu_relax();
        if (i % SPINS_PER_CLOCK_READ) continue;
        const long long t = now_ns();
        if (deadline == 0) {
            deadline = t + SPIN_BEFORE_SLEEP_NS;
        } else if (t > deadline) {
            pthread_mutex_lock(&p->mutex);
            atomic_store(&p->caller_sleeping, 1);
            while (atomic_load(&p->pending) != 0) pthread_cond_wait(&p->done, &p->mutex);
            atomic_store(&p->caller_sleeping, 0);
            pthread_mutex_unlock(&p->mutex);
            break;
        }
    }
}

/* Chunks per thread that balance the load when one thread is slowed down, yet keep each chunk long
 * enough to stream memory sequentially. */
#define CHUNKS_PER_THREAD 8

struct chunk_runner {
    chunk_task_fn fn;
    void *ctx;
    long long n_chunks;
    _Atomic long long next;
};

static void run_chunks(void *arg, int ith, int nth) {
    struct chunk_runner *cr = arg;
    (void)nth;
    for (;;) {
        const long long chunk = atomic_fetch_add_explicit(&cr->next, 1, memory_order_relaxed);
        if (chunk >= cr->n_chunks) break;
        cr->fn(cr->ctx, chunk, ith);
    }
}

void exec_run_chunks(struct exec *ex, chunk_task_fn fn, void *ctx, long long n_chunks, int nth) {
    struct chunk_runner cr = {fn, ctx, n_chunks, 0};
    if (nth > n_chunks) nth = (int)n_chunks;
    exec_run(ex, run_chunks, &cr, nth);
}

long long chunk_size(long long n, int nth, long long align) {
    if (align < 1) align = 1;
    const long long want = n / ((long long)nth * CHUNKS_PER_THREAD);
    const long long size = (want + align - 1) / align * align;
    return size < align ? align : size;
}

void *exec_scratch(struct exec *ex, int slot, size_t bytes) {
    struct scratch *s = &ex->slots[slot];
    if (s->size >= bytes && s->ptr) return s->ptr;
    free(s->ptr);
    s->ptr = NULL;
    s->size = 0;
    const size_t rounded = (bytes + SCRATCH_ALIGN - 1) / SCRATCH_ALIGN * SCRATCH_ALIGN;
    /* grow by half again so slowly rising sizes (a growing context) do not reallocate every call */
    const size_t want = rounded + rounded / 2;
    if (posix_memalign(&s->ptr, SCRATCH_ALIGN, want) != 0) {
        s->ptr = NULL;
        return NULL;
    }
    s->size = want;
    return s->ptr;
}

void split_range(long long n, int ith, int nth, long long align, long long *begin, long long *end) {
    if (align < 1) align = 1;
    const long long units = (n + align - 1) / align;
    const long long per = units / nth, extra = units % nth;
    const long long u0 = ith * per + (ith < extra ? ith : extra);
    const long long u1 = u0 + per + (ith < extra ? 1 : 0);
    *begin = u0 * align < n ? u0 * align : n;
    *end = u1 * align < n ? u1 * align : n;
}
