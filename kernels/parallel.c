/* parallel.c: how many threads the kernels use, and their fork-join.
 *
 * A kernel's work is a run of independent units (q8 blocks, AdamW blocks,
 * KV token groups or tokens). mti_parallel cuts [0, units) into up to
 * mt_threads_current() contiguous parts of at least MTI_PART_BYTES each,
 * runs the first part on the caller and the others on threads created for
 * the call, and joins them. A part is the serial kernel on its sub-range,
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
 * Threads are created per call, not pooled: a call worth splitting is at
 * least two parts of MTI_PART_BYTES (hundreds of microseconds of work)
 * against tens of microseconds to start a thread, and nothing lingers in
 * the process between calls. A thread that cannot be created leaves its
 * part to the caller. Parts that make non-temporal stores fence them
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
    if (sched_getaffinity(0, sizeof set, &set) == 0) {
        int n = CPU_COUNT(&set);
        if (n > 0)
            return (unsigned)n;
    }
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n > 0 ? (unsigned)n : 1u;
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
    int started; /* on its own thread */
    int ret;
    pthread_t thread;
};

static void *part_main(void *arg)
{
    struct part *p = arg;
    p->ret = p->fn(p->ctx, p->begin, p->end);
    return NULL;
}

int mti_parallel(size_t units, size_t unit_bytes, mti_part_fn fn, void *ctx)
{
    size_t k = threads_current;
    size_t per = unit_bytes ? (MTI_PART_BYTES + unit_bytes - 1) / unit_bytes : 1;
    size_t by_size = units / per;
    if (k > by_size)
        k = by_size;
    if (k > units)
        k = units;
    if (k <= 1)
        return units ? fn(ctx, 0, units) : 0;
    struct part parts[MT_THREADS_MAX];
    for (size_t i = 0; i < k; i++) {
        parts[i] = (struct part){fn, ctx, units * i / k, units * (i + 1) / k, 0, 0, 0};
        if (i > 0)
            parts[i].started = pthread_create(&parts[i].thread, NULL, part_main, &parts[i]) == 0;
    }
    part_main(&parts[0]);
    for (size_t i = 1; i < k; i++)
        if (!parts[i].started)
            part_main(&parts[i]);
    int ret = 0;
    for (size_t i = 0; i < k; i++) {
        if (parts[i].started)
            pthread_join(parts[i].thread, NULL);
        if (!ret)
            ret = parts[i].ret;
    }
    return ret;
}

struct copy_job {
    char *dst;
    const char *src;
    size_t bytes;
};

static int copy_part(void *ctx, size_t begin, size_t end)
{
    struct copy_job *j = ctx;
    size_t b = begin * 64, e = end * 64 < j->bytes ? end * 64 : j->bytes;
    memcpy(j->dst + b, j->src + b, e - b);
    return 0;
}

void mti_memcpy(void *dst, const void *src, size_t bytes)
{
    struct copy_job j = {dst, src, bytes};
    mti_parallel((bytes + 63) / 64, 64, copy_part, &j);
}
