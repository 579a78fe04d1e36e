/* See loader-lock.h.
 *
 * How the lock is found: inside a dl_iterate_phdr() callback the calling
 * thread holds the loader's write lock, a recursive pthread mutex that
 * lives in ld.so's `_rtld_global`. Scanning that object then, and again
 * outside the callback, shows exactly one recursive mutex that is owned by
 * this thread inside and free outside: that is the lock. Any other outcome
 * (symbol missing, no match, several matches) leaves the fix off, and the
 * library behaves as before.
 */
#include "loader-lock.h"

#include <dlfcn.h>
#include <link.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

static pthread_mutex_t *write_lock;
static atomic_int inside;       /* threads between enter and leave */
static atomic_bool fork_pending; /* the gate is closed */
static bool unusable;           /* this process must not touch the loader */
static __thread unsigned depth __attribute__((tls_model("initial-exec"))); /* nesting */

struct scan {
    const char *base;
    size_t size;
    pid_t tid;
    size_t hits[4];
    unsigned n_hits;
};

static bool owned_recursive(const pthread_mutex_t *m, pid_t tid)
{
    return m->__data.__owner == tid && m->__data.__count >= 1 &&
           (m->__data.__kind & 0x7f) == PTHREAD_MUTEX_RECURSIVE_NP;
}

static int scan_inside(struct dl_phdr_info *info, size_t size, void *arg)
{
    struct scan *s = arg;
    for (size_t off = 0; off + sizeof(pthread_mutex_t) <= s->size; off += sizeof(void *)) {
        if (owned_recursive((const pthread_mutex_t *)(s->base + off), s->tid) && s->n_hits < 4)
            s->hits[s->n_hits++] = off;
    }
    return 1; /* once is enough */
}

void mti_loader_lock_init(void)
{
    void *g = dlsym(RTLD_DEFAULT, "_rtld_global");
    Dl_info info;
    const ElfW(Sym) *sym = NULL;
    if (!g || !dladdr1(g, &info, (void **)&sym, RTLD_DL_SYMENT) || !sym || sym->st_size < sizeof(pthread_mutex_t))
        return;
    struct scan s = { .base = g, .size = sym->st_size, .tid = (pid_t)syscall(SYS_gettid) };
    dl_iterate_phdr(scan_inside, &s);
    if (s.n_hits != 1)
        return;
    pthread_mutex_t *m = (pthread_mutex_t *)(s.base + s.hits[0]);
    if (m->__data.__owner != 0) /* must be free again outside the callback */
        return;
    write_lock = m;
}

bool mti_loader_enter(void)
{
    if (unusable)
        return false;
    if (depth++)
        return true; /* already inside: the gate counts threads, not calls */
    for (;;) {
        atomic_fetch_add(&inside, 1);
        if (!atomic_load(&fork_pending))
            return true;
        atomic_fetch_sub(&inside, 1);
        while (atomic_load(&fork_pending))
            sched_yield();
    }
}

void mti_loader_leave(void)
{
    if (--depth == 0)
        atomic_fetch_sub(&inside, 1);
}

void mti_loader_prepare_fork(void)
{
    atomic_store(&fork_pending, true);
    /* Wait for memtrace's own calls to finish; a thread stuck inside for
     * more than a second (it cannot be ours for that long) is left be. */
    struct timespec start, now;
    clock_gettime(CLOCK_MONOTONIC, &start);
    while (atomic_load(&inside) > 0) {
        sched_yield();
        clock_gettime(CLOCK_MONOTONIC, &now);
        if (now.tv_sec - start.tv_sec > 1)
            break;
    }
}

void mti_loader_parent_after_fork(void)
{
    atomic_store(&fork_pending, false);
}

void mti_loader_child_after_fork(void)
{
    depth = 0;
    atomic_store(&inside, 0);
    atomic_store(&fork_pending, false);
    if (write_lock && write_lock->__data.__owner != 0 &&
        write_lock->__data.__owner != (pid_t)syscall(SYS_gettid))
        unusable = true;
}
