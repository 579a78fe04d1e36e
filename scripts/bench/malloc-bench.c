/*
 * malloc-bench: a malloc-bound microbenchmark for measuring the overhead of
 * allocation tracers.
 *
 *   malloc-bench [--depth D] [--ops N] [--threads T]
 *
 * Performs N alloc/free pairs ("ops") over a ring of 64 live blocks per
 * thread: op i frees the block in slot i % 64 and allocates a new one there,
 * so a block lives for 64 ops before it is freed, as in real programs.  The
 * sizes come from an LCG of period 2^32 (no short cycle): mostly 16..4096 bytes, one
 * in 64 between 8 and 16 KiB (no mmap, hardly any brk).  The first byte of
 * every block is written so the allocation cannot be optimised away.
 *
 * --depth D   malloc is called with D malloc-bench frames on the stack (the
 *             thread's entry function, main or the thread start routine,
 *             included); the extra frames come from a recursive noinline
 *             function.  Minimum and default 3: entry -> run_ops -> site.
 *             Four different allocation sites are used in turn, so there
 *             are four distinct allocation stacks.
 * --ops N     total alloc/free pairs (default 1000000), split evenly over
 *             the threads
 * --threads T threads (default 1: the main thread does the work)
 *
 * Prints one line: "ops N ns_per_op X", where X is the wall time of the
 * measured loops (CLOCK_MONOTONIC, from the first thread's loop start to
 * the last one's end; thread start and the initial/final 64 allocations and
 * frees excluded) divided by N.
 *
 * Build: cc -O2 -g -fno-omit-frame-pointer -o malloc-bench malloc-bench.c -lpthread
 */
#define _GNU_SOURCE
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define RING 64
#define MIN_DEPTH 3

#define NOINLINE __attribute__((noinline, noclone))
/* Keeps the compiler from turning a call into a tail call or merging code. */
#define BARRIER() __asm__ volatile("" ::: "memory")

struct worker {
    uint64_t ops;
    unsigned levels; /* descend() frames between the entry and run_ops */
    unsigned seed;
    pthread_barrier_t *start;
    double t0, t1; /* CLOCK_MONOTONIC ns around the measured loop */
    uint32_t lcg; /* size generator state */
    void *ring[RING];
};

static void die(const char *msg)
{
    fprintf(stderr, "malloc-bench: %s\n", msg);
    exit(1);
}

/* Sizes come from an LCG of period 2^32, drawn as the loop runs: no short
 * cycle that a compressor could exploit, as in a real program. */
static void seed_sizes(struct worker *w)
{
    w->lcg = 0x2545f491u ^ (w->seed * 0x9e3779b9u);
}

static inline size_t next_size(struct worker *w)
{
    w->lcg = w->lcg * 1664525u + 1013904223u; /* Numerical Recipes LCG */
    uint32_t r = w->lcg >> 8;
    if ((r & 63) == 0)
        return 8192 + (r >> 6) % 8193;
    return 16 + (r >> 6) % 4081;
}

/* Four allocation sites, deliberately different so they are not merged. */
#define SITE(n)                                                       \
    static NOINLINE void *alloc_site##n(size_t size)                  \
    {                                                                 \
        char *p = malloc(size);                                       \
        if (!p)                                                       \
            die("out of memory");                                     \
        *(volatile char *)p = (char)(n + 1);                          \
        BARRIER();                                                    \
        return p;                                                     \
    }
SITE(0)
SITE(1)
SITE(2)
SITE(3)

static double now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec;
}

static NOINLINE void run_ops(struct worker *w)
{
    for (unsigned i = 0; i < RING; i++)
        w->ring[i] = alloc_site0(next_size(w));

    if (w->start)
        pthread_barrier_wait(w->start);

    const uint64_t n = w->ops;
    w->t0 = now_ns();
    for (uint64_t i = 0; i < n; i++) {
        unsigned slot = (unsigned)(i % RING);
        size_t size = next_size(w);
        free(w->ring[slot]);
        void *p;
        switch (i & 3) {
        case 0: p = alloc_site0(size); break;
        case 1: p = alloc_site1(size); break;
        case 2: p = alloc_site2(size); break;
        default: p = alloc_site3(size); break;
        }
        w->ring[slot] = p;
    }
    w->t1 = now_ns();

    for (unsigned i = 0; i < RING; i++)
        free(w->ring[i]);
    BARRIER();
}

/* One frame per level; the barrier after the call prevents a tail call. */
static NOINLINE void descend(struct worker *w, unsigned levels)
{
    if (levels > 1)
        descend(w, levels - 1);
    else
        run_ops(w);
    BARRIER();
}

/* Called from the entry frame (main or thread_main). */
static inline void work(struct worker *w)
{
    if (w->levels > 0)
        descend(w, w->levels);
    else
        run_ops(w);
    BARRIER();
}

static void *thread_main(void *arg)
{
    work(arg);
    BARRIER();
    return NULL;
}

static uint64_t parse_u64(const char *opt, const char *s, uint64_t min, uint64_t max)
{
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || end == s || *end || s[0] == '-' || v < min || v > max) {
        fprintf(stderr, "malloc-bench: bad value for %s: '%s' (want %" PRIu64 "..%" PRIu64 ")\n",
                opt, s, min, max);
        exit(2);
    }
    return v;
}

static void usage(FILE *f)
{
    fputs("usage: malloc-bench [--depth D] [--ops N] [--threads T]\n"
          "  --depth D    frames on the stack at each malloc (min and default 3)\n"
          "  --ops N      alloc/free pairs in total (default 1000000)\n"
          "  --threads T  worker threads (default 1)\n",
          f);
}

int main(int argc, char **argv)
{
    uint64_t depth = MIN_DEPTH, ops = 1000000, threads = 1;

    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            usage(stdout);
            return 0;
        }
        if (i + 1 >= argc) {
            usage(stderr);
            return 2;
        }
        if (!strcmp(a, "--depth"))
            depth = parse_u64(a, argv[++i], MIN_DEPTH, 100000);
        else if (!strcmp(a, "--ops"))
            ops = parse_u64(a, argv[++i], 1, UINT64_MAX / 2);
        else if (!strcmp(a, "--threads"))
            threads = parse_u64(a, argv[++i], 1, 1024);
        else {
            usage(stderr);
            return 2;
        }
    }

    /* Frames at each malloc: entry (main or thread_main), 'levels' descend
     * frames, run_ops, the allocation site. */
    unsigned levels = (unsigned)(depth - MIN_DEPTH);

    struct worker *ws = calloc(threads, sizeof *ws);
    if (!ws)
        die("out of memory");
    for (uint64_t t = 0; t < threads; t++) {
        ws[t].ops = ops / threads + (t < ops % threads ? 1 : 0);
        ws[t].levels = levels;
        ws[t].seed = (unsigned)t;
        seed_sizes(&ws[t]);
    }

    if (threads == 1) {
        work(&ws[0]);
    } else {
        pthread_barrier_t start;
        pthread_barrier_init(&start, NULL, (unsigned)threads);
        pthread_t *tids = calloc(threads, sizeof *tids);
        if (!tids)
            die("out of memory");
        for (uint64_t t = 0; t < threads; t++) {
            ws[t].start = &start;
            int err = pthread_create(&tids[t], NULL, thread_main, &ws[t]);
            if (err) {
                fprintf(stderr, "malloc-bench: pthread_create: %s\n", strerror(err));
                return 1;
            }
        }
        for (uint64_t t = 0; t < threads; t++)
            pthread_join(tids[t], NULL);
        pthread_barrier_destroy(&start);
        free(tids);
    }

    /* Wall time from the first loop start to the last loop end. */
    double t0 = ws[0].t0, t1 = ws[0].t1;
    for (uint64_t t = 1; t < threads; t++) {
        if (ws[t].t0 < t0)
            t0 = ws[t].t0;
        if (ws[t].t1 > t1)
            t1 = ws[t].t1;
    }
    double elapsed = t1 - t0;

    printf("ops %" PRIu64 " ns_per_op %.2f\n", ops, elapsed / (double)ops);
    free(ws);
    return 0;
}
