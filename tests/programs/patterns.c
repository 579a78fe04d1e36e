/* Test program with known allocation patterns, run under libmemtrace.so
 * by test-preload.c and under `memtrace run` by test-run.c. `patterns NAME`
 * runs one scenario. Each scenario allocates sizes that nothing else in the
 * process uses (multiples of UNIT plus a small tag), so the test can find
 * exactly its events in the trace even among the C library's own
 * allocations; the expected figures are in test-preload.c next to each
 * scenario's call.
 *
 * No stdio on the recorded paths: output goes through write(2). Every block
 * is written to, and pointers escape through `sink`, so the compiler cannot
 * drop an allocation.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <malloc.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#define UNIT 4096u
void *volatile sink;

static void touch(void *p, size_t n)
{
    if (p && n)
        memset(p, 0xab, n < 64 ? n : 64);
    sink = p;
}

static void *xmalloc(size_t n)
{
    void *p = malloc(n);
    if (!p)
        abort();
    touch(p, n);
    return p;
}

static void say(const char *s)
{
    ssize_t r = write(1, s, strlen(s));
    (void)r;
}

/* malloc/free: peak 6*UNIT+6, end 0. */
static int basic(void)
{
    void *a = xmalloc(1 * UNIT + 1), *b = xmalloc(2 * UNIT + 2), *c = xmalloc(3 * UNIT + 3);
    free(b);
    void *d = xmalloc(1 * UNIT + 4);
    free(a);
    free(c);
    free(d);
    return 0;
}

/* calloc: 7 x (U+3), 5 x U, 1 x (U+5), all live at once: peak 13U+26. */
static int callocs(void)
{
    void *a = calloc(7, UNIT + 3), *b = calloc(5, UNIT), *c = calloc(1, UNIT + 5);
    touch(a, 7 * (UNIT + 3));
    touch(b, 5 * UNIT);
    touch(c, UNIT + 5);
    free(a);
    free(b);
    free(c);
    return 0;
}

/* realloc: NULL -> 2U+1, grow to 8U+1, shrink to U+1, size 0 frees.
 * Peak 8U+1 (+the unit tag), end 0. */
static int reallocs(void)
{
    char *p = realloc(NULL, 2 * UNIT + 1);
    touch(p, 2 * UNIT + 1);
    p = realloc(p, 8 * UNIT + 1);
    touch(p, 8 * UNIT + 1);
    p = realloc(p, UNIT + 1);
    touch(p, UNIT + 1);
    void *r = realloc(p, 0);
    sink = r;
    free(r);
    /* reallocarray: NULL -> 3 x U, then 6 x U, then free. */
    char *q = reallocarray(NULL, 3, UNIT);
    touch(q, 3 * UNIT);
    q = reallocarray(q, 6, UNIT);
    touch(q, 6 * UNIT);
    free(q);
    return 0;
}

/* The aligned family: posix_memalign 2U+1, aligned_alloc 3U, memalign
 * U+7, valloc U+9, pvalloc U+11, all live at once: peak 8U+28. */
static int aligned(void)
{
    void *a, *b, *c, *d, *e;
    if (posix_memalign(&a, 64, 2 * UNIT + 1))
        abort();
    b = aligned_alloc(256, 3 * UNIT);
    c = memalign(128, UNIT + 7);
    d = valloc(UNIT + 9);
    e = pvalloc(UNIT + 11);
    if (!b || !c || !d || !e || ((uintptr_t)a & 63) || ((uintptr_t)b & 255) || ((uintptr_t)c & 127) ||
        ((uintptr_t)d & (UNIT - 1)) || ((uintptr_t)e & (UNIT - 1)))
        abort();
    touch(a, 1);
    touch(b, 1);
    touch(c, 1);
    touch(d, 1);
    touch(e, 1);
    /* Entry points memtrace does not wrap must still work on its blocks. */
    if (malloc_usable_size(a) < 2 * UNIT + 1 || malloc_usable_size(e) < UNIT + 11)
        abort();
    free(a);
    free(b);
    free(c);
    free(d);
    free(e);
    return 0;
}

/* mmap: anonymous 64 pages, file-backed 2 pages; partial munmap of 16
 * pages from the middle; mremap grows the anonymous one to 128 pages
 * (may move); then everything unmapped. Anonymous peak: 64+... see test. */
static int maps(void)
{
    size_t pg = (size_t)sysconf(_SC_PAGESIZE);
    char *a = mmap(NULL, 64 * pg, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (a == MAP_FAILED)
        abort();
    memset(a, 1, 64 * pg);
    char path[] = "/tmp/memtrace-maps-XXXXXX";
    int fd = mkstemp(path);
    if (fd < 0 || ftruncate(fd, (off_t)(2 * pg)))
        abort();
    unlink(path);
    char *f = mmap(NULL, 2 * pg, PROT_READ, MAP_PRIVATE, fd, 0);
    if (f == MAP_FAILED)
        abort();
    close(fd);
    /* Punch 16 pages out of the middle: 48 pages stay, in two pieces. */
    if (munmap(a + 16 * pg, 16 * pg))
        abort();
    /* Grow the tail piece (32 pages at a+32pg) to 96 pages, moving it. */
    char *b = mremap(a + 32 * pg, 32 * pg, 96 * pg, MREMAP_MAYMOVE);
    if (b == MAP_FAILED)
        abort();
    memset(b, 2, 96 * pg);
    /* Live anonymous now: 16 + 96 = 112 pages (the peak). */
    if (munmap(a, 16 * pg) || munmap(b, 96 * pg) || munmap(f, 2 * pg))
        abort();
    return 0;
}

/* Threads: NTHREADS threads each hold PER blocks of THREAD_SIZE until all
 * have allocated (barrier), then free them. */
#define NTHREADS 64
#define PER 1000
#define THREAD_SIZE (UNIT + 13)
static pthread_barrier_t barrier;

static void *thread_main(void *arg)
{
    void **blocks = arg;
    for (int i = 0; i < PER; i++)
        blocks[i] = xmalloc(THREAD_SIZE);
    pthread_barrier_wait(&barrier);
    pthread_barrier_wait(&barrier);
    for (int i = 0; i < PER; i++)
        free(blocks[i]);
    return NULL;
}

static int threads(void)
{
    static void *blocks[NTHREADS][PER];
    pthread_t t[NTHREADS];
    pthread_barrier_init(&barrier, NULL, NTHREADS + 1);
    for (int i = 0; i < NTHREADS; i++)
        if (pthread_create(&t[i], NULL, thread_main, blocks[i]))
            abort();
    pthread_barrier_wait(&barrier);
    pthread_barrier_wait(&barrier);
    for (int i = 0; i < NTHREADS; i++)
        pthread_join(t[i], NULL);
    return 0;
}

/* Fork: the parent allocates 3U+17 x 2, the child 5U+17 x 4 and exits. */
static int forks(void)
{
    void *a = xmalloc(3 * UNIT + 17);
    pid_t pid = fork();
    if (pid < 0)
        abort();
    if (pid == 0) {
        void *c[4];
        for (int i = 0; i < 4; i++)
            c[i] = xmalloc(5 * UNIT + 17);
        for (int i = 0; i < 4; i++)
            free(c[i]);
        exit(0);
    }
    int status;
    waitpid(pid, &status, 0);
    void *b = xmalloc(3 * UNIT + 17);
    free(a);
    free(b);
    return WIFEXITED(status) ? WEXITSTATUS(status) : 99;
}

/* Exec: allocate 7U+19 once, then exec this program as `patterns basic`. */
static int execs(const char *self)
{
    void *a = xmalloc(7 * UNIT + 19);
    (void)a;
    execl(self, self, "basic", (char *)NULL);
    return 98;
}

/* Exit paths. Each leaves 10 blocks of 9U+23 live, then ends its way. */
static void leave_ten(void)
{
    for (int i = 0; i < 10; i++)
        xmalloc(9 * UNIT + 23);
}

static void *exit_thread(void *arg __attribute__((unused)))
{
    leave_ten();
    exit(7);
}

static int ends(const char *how)
{
    if (!strcmp(how, "exit-thread")) {
        pthread_t t;
        pthread_create(&t, NULL, exit_thread, NULL);
        for (;;)
            pause();
    }
    leave_ten();
    say("before end\n");
    if (!strcmp(how, "exit"))
        return 5;
    if (!strcmp(how, "_exit"))
        _exit(6);
    if (!strcmp(how, "abort"))
        abort();
    if (!strcmp(how, "segv")) {
        signal(SIGSEGV, SIG_DFL);
        raise(SIGSEGV);
    }
    if (!strcmp(how, "kill"))
        kill(getpid(), SIGKILL);
    if (!strcmp(how, "pause")) /* until a signal ends it */
        for (;;)
            pause();
    return 100;
}

/* Other glibc entry points that allocate through malloc keep working. */
static int glibc(void)
{
    char *s = strdup("memtrace");
    char *t = NULL;
    if (asprintf(&t, "%s-%d", s, 42) < 0 || strcmp(t, "memtrace-42"))
        abort();
    FILE *f = fopen("/proc/self/status", "r");
    char *line = NULL;
    size_t cap = 0;
    if (!f || getline(&line, &cap, f) <= 0)
        abort();
    fclose(f);
    free(line);
    free(s);
    free(t);
    say("glibc ok\n");
    return 0;
}

/* Fork while eight threads allocate and dlopen/dlclose a library: every
 * child allocates 13U+37 once and exits with k % 3; no child may hang or
 * crash (the loader's lock may be held by a parent thread at fork). */
static volatile int storm_stop;

static void *storm_worker(void *arg __attribute__((unused)))
{
    while (!storm_stop) {
        void *p[16];
        for (int i = 0; i < 16; i++)
            p[i] = xmalloc(16 + (size_t)i * 100);
        for (int i = 0; i < 16; i++)
            free(p[i]);
        void *h = dlopen("libm.so.6", RTLD_NOW);
        if (h)
            dlclose(h);
    }
    return NULL;
}

static int fork_storm(void)
{
    pthread_t t[8];
    for (int i = 0; i < 8; i++)
        if (pthread_create(&t[i], NULL, storm_worker, NULL))
            abort();
    int bad = 0;
    for (int k = 0; k < 50; k++) {
        pid_t pid = fork();
        if (pid < 0)
            abort();
        if (pid == 0) {
            free(xmalloc(13 * UNIT + 37));
            _exit(k % 3);
        }
        int status;
        waitpid(pid, &status, 0);
        bad += !WIFEXITED(status) || WEXITSTATUS(status) != k % 3;
    }
    storm_stop = 1;
    for (int i = 0; i < 8; i++)
        pthread_join(t[i], NULL);
    return bad ? 1 : 0;
}

/* Close every descriptor (as daemons and subprocess children do), open a
 * file of our own (it gets the trace's old number), allocate 50000 blocks
 * of 14U+41, and write one line to the file: memtrace must neither write
 * into that file nor lose the allocations. */
static int close_fds(const char *victim)
{
    for (int f = 3; f < 1024; f++)
        close(f);
    int fd = open(victim, O_RDWR | O_CREAT | O_TRUNC, 0644);
    if (fd < 0)
        return 3;
    for (int i = 0; i < 50000; i++)
        free(xmalloc(14 * UNIT + 41));
    if (write(fd, "victim\n", 7) != 7)
        return 4;
    close(fd);
    return 0;
}

/* Descriptor numbers: allocate (memtrace starts up and unwinds), then
 * print the number open() gives, which must be the same traced or not. */
static int fd_number(void)
{
    free(xmalloc(15 * UNIT + 43));
    int fd = open("/dev/null", O_RDONLY);
    char line[32];
    snprintf(line, sizeof(line), "fd %d\n", fd);
    say(line);
    return 0;
}

/* dlopen: load the plugin (argv path), let it allocate 11U+29 and free it,
 * unload it, then allocate once more after the RSS interval (the next tick
 * notices the unload). */
static int dlopens(const char *path)
{
    void *h = dlopen(path, RTLD_NOW);
    if (!h)
        return 3;
    void *(*plugin_alloc)(size_t) = (void *(*)(size_t))dlsym(h, "plugin_alloc");
    if (!plugin_alloc)
        return 4;
    void *p = plugin_alloc(11 * UNIT + 29);
    free(p);
    if (dlclose(h))
        return 5;
    usleep(50000);
    free(xmalloc(12 * UNIT + 31));
    return 0;
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        say("usage: patterns basic|callocs|reallocs|aligned|maps|threads|forks|execs|glibc|dlopen LIB|fork-storm|close-fds FILE|fd-number|"
            "end-exit|end-_exit|end-abort|end-segv|end-kill|end-exit-thread|end-pause\n");
        return 2;
    }
    const char *s = argv[1];
    if (!strcmp(s, "basic"))
        return basic();
    if (!strcmp(s, "callocs"))
        return callocs();
    if (!strcmp(s, "reallocs"))
        return reallocs();
    if (!strcmp(s, "aligned"))
        return aligned();
    if (!strcmp(s, "maps"))
        return maps();
    if (!strcmp(s, "threads"))
        return threads();
    if (!strcmp(s, "forks"))
        return forks();
    if (!strcmp(s, "execs"))
        return execs(argv[0]);
    if (!strcmp(s, "glibc"))
        return glibc();
    if (!strcmp(s, "close-fds") && argc > 2)
        return close_fds(argv[2]);
    if (!strcmp(s, "fork-storm"))
        return fork_storm();
    if (!strcmp(s, "fd-number"))
        return fd_number();
    if (!strcmp(s, "dlopen") && argc > 2)
        return dlopens(argv[2]);
    if (!strncmp(s, "end-", 4))
        return ends(s + 4);
    return 2;
}
