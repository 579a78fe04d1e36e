/* parallel.c: how many threads the kernels use, and their fork-join.
 *
 * A kernel's work is a run of independent units (q8 blocks, AdamW blocks,
 * KV token groups or tokens). mti_parallel cuts [0, units) into up to
 * mt_threads_current() contiguous parts of at least MTI_PART_BYTES each,
 * runs the first part on the caller and the others on the pool's worker
 * threads, and waits for them. A part is the serial kernel on its sub-range,
 * so the output is the same bits whatever the thread count; the error
 * returned is that of the first part (in unit order) that failed, which is
 * the serial kernel's, since each part stops at its own first error.
 *
 * Why threads at all: one core of this code cannot keep a server's memory
 * busy (docs/PERFORMANCE.md: on a 2-core VM one core's KV quantize reads
 * 17-20 GB/s while memcpy on both cores moves 40 GB/s; on a 16-core Xeon
 * one core reads 13-17 GB/s), so a kernel held to "the machine's memcpy
 * bandwidth" runs on as many cores as memcpy does.
 *
 * The pool: workers are started when a call first needs them and then wait
 * on a condition variable for the next call (a generation counter says
 * which). Starting 15 threads per call cost 0.2-0.4 ms, 5-8% of a 512 MiB
 * call on 16 cores, and more of the smaller calls `memtrace verify` makes
 * at a trace's sizes. One call uses the pool at a time: a call made while
 * another thread's call holds it runs on its caller alone, as does a part
 * whose worker cannot be started. A forked child starts with an empty pool
 * (pthread_atfork). Parts that make non-temporal stores fence them
 * themselves before returning.
 *
 * The thread count is a plain process-wide setting, like the ISA (isa.c):
 * set it before kernels run, not while they do.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "kernels-internal.h"

static unsigned threads_current = 1;

unsigned mt_threads_available(void)
{
    cpu_set_t set;
    long n = 0;
    if (sched_getaffinity(0, sizeof set, &set) == 0)
        n = CPU_COUNT(&set);
    if (n <= 0)
        n = sysconf(_SC_NPROCESSORS_ONLN);
    return n <= 0 ? 1u : n > MT_THREADS_MAX ? MT_THREADS_MAX : (unsigned)n;
}

int mt_threads_use(unsigned n)
{
    if (n < 1 || n > MT_THREADS_MAX)
        return -EINVAL;
    threads_current = n;
    return 0;
}

unsigned mt_threads_current(void)
{
    return threads_current;
}

struct part {
    mti_part_fn fn;
    void *ctx;
    size_t begin, end;
    int ret;
};

static void run_part(struct part *p)
{
    p->ret = p->fn(p->ctx, p->begin, p->end);
}

/* Worker i runs parts[i + 1] of each call (generation) with k > i + 1. */
static struct {
    pthread_mutex_t busy; /* held by the call using the pool */
    pthread_mutex_t mu;   /* guards the rest */
    pthread_cond_t go, done;
    unsigned long gen;
    struct part *parts;
    size_t k, pending, workers;
} pool = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER,
          PTHREAD_COND_INITIALIZER, 0, NULL, 0, 0, 0};

struct worker_start {
    size_t index;
    unsigned long gen; /* the generation before the first it may run */
};

static void *worker_main(void *arg)
{
    struct worker_start w = *(struct worker_start *)arg;
    free(arg);
    pthread_mutex_lock(&pool.mu);
    for (;;) {
        while (pool.gen == w.gen)
            pthread_cond_wait(&pool.go, &pool.mu);
        w.gen = pool.gen;
        if (w.index + 1 >= pool.k)
            continue;
        struct part *p = &pool.parts[w.index + 1];
        pthread_mutex_unlock(&pool.mu);
        run_part(p);
        pthread_mutex_lock(&pool.mu);
        if (--pool.pending == 0)
            pthread_cond_signal(&pool.done);
    }
    return NULL;
}

/* The child of a fork has none of the workers: it starts over. */
static void pool_after_fork(void)
{
    pthread_mutex_init(&pool.busy, NULL);
    pthread_mutex_init(&pool.mu, NULL);
    pthread_cond_init(&pool.go, NULL);
    pthread_cond_init(&pool.done, NULL);
    pool.workers = 0;
}

static void pool_once(void)
{
    pthread_atfork(NULL, NULL, pool_after_fork);
}

/* Starts workers up to `want` (pool.mu held): how many there are now. */
static size_t pool_grow(size_t want)
{
    static pthread_once_t once = PTHREAD_ONCE_INIT;
    pthread_once(&once, pool_once);
    while (pool.workers < want) {
        struct worker_start *w = malloc(sizeof *w);
        pthread_attr_t attr;
        pthread_t t;
        if (!w || pthread_attr_init(&attr)) {
            free(w);
            break;
        }
        *w = (struct worker_start){pool.workers, pool.gen};
        pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
        int r = pthread_create(&t, &attr, worker_main, w);
        pthread_attr_destroy(&attr);
        if (r) {
            free(w);
            break;
        }
        pool.workers++;
    }
    return pool.workers;
}

int mti_parallel_on(size_t threads, size_t units, size_t unit_bytes, mti_part_fn fn, void *ctx)
{
    size_t k = threads < MT_THREADS_MAX ? threads : MT_THREADS_MAX;
    size_t per = unit_bytes ? (MTI_PART_BYTES + unit_bytes - 1) / unit_bytes : 1;
    size_t by_size = units / per;
    if (k > by_size)
        k = by_size;
    if (k > units)
        k = units;
    if (k <= 1)
        return units ? fn(ctx, 0, units) : 0;
    struct part parts[MT_THREADS_MAX];
    for (size_t i = 0; i < k; i++)
        parts[i] = (struct part){fn, ctx, units * i / k, units * (i + 1) / k, 0};
    size_t given = 0; /* parts 1 .. given go to workers 0 .. given - 1 */
    int pooled = pthread_mutex_trylock(&pool.busy) == 0;
    if (pooled) {
        pthread_mutex_lock(&pool.mu);
        given = pool_grow(k - 1);
        given = given < k - 1 ? given : k - 1;
        pool.parts = parts;
        pool.k = given + 1;
        pool.pending = given;
        pool.gen++;
        pthread_cond_broadcast(&pool.go);
        pthread_mutex_unlock(&pool.mu);
    }
    run_part(&parts[0]);
    for (size_t i = given + 1; i < k; i++)
        run_part(&parts[i]);
    if (pooled) {
        pthread_mutex_lock(&pool.mu);
        while (pool.pending)
            pthread_cond_wait(&pool.done, &pool.mu);
        pool.parts = NULL;
        pool.k = 0;
        pthread_mutex_unlock(&pool.mu);
        pthread_mutex_unlock(&pool.busy);
    }
    int ret = 0;
    for (size_t i = 0; i < k && !ret; i++)
        ret = parts[i].ret;
    return ret;
}

int mti_parallel(size_t units, size_t unit_bytes, mti_part_fn fn, void *ctx)
{
    return mti_parallel_on(threads_current, units, unit_bytes, fn, ctx);
}

struct copy_job {
    char *dst;
    const char *src;
    size_t bytes, unit;
};

static int copy_part(void *ctx, size_t begin, size_t end)
{
    struct copy_job *j = ctx;
    size_t b = begin * j->unit, e = end * j->unit < j->bytes ? end * j->unit : j->bytes;
    memcpy(j->dst + b, j->src + b, e - b);
    return 0;
}

void mti_copy(void *dst, const void *src, size_t bytes, size_t unit, size_t threads)
{
    struct copy_job j = {dst, src, bytes, unit};
    mti_parallel_on(threads, (bytes + unit - 1) / unit, unit, copy_part, &j);
}

void mti_memcpy(void *dst, const void *src, size_t bytes)
{
    mti_copy(dst, src, bytes, 64, threads_current);
}
