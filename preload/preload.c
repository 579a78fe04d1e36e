/* The interposed entry points of libmemtrace.so.
 *
 * Every wrapper calls the real function (found with dlsym(RTLD_NEXT)) and
 * passes its result through unchanged; the recording around it never
 * changes what the program sees. The order of the two matters (see the
 * format header): an allocation is numbered after the allocator returned
 * it, a release before the memory goes back, so no other thread can reuse
 * an address "before" it was freed in the merged trace.
 *
 * Bootstrap: dlsym itself may call malloc/calloc before the real functions
 * are known. Those calls are served from a static pool; pointers into it
 * are recognised by free/realloc and never reach the real allocator.
 *
 * Re-entrancy: mti_self.guard is raised while memtrace works (unwinding,
 * writing, initialising), so allocations made by libunwind, stdio or libc on
 * memtrace's behalf go straight through, unrecorded.
 */
/* Both mmap and mmap64 are defined here; with 64-bit file offsets forced
 * (meson does), the headers would rename one onto the other. */
#undef _FILE_OFFSET_BITS
#include "loader-lock.h"
#include "log.h"
#include "options.h"
#include "recorder.h"
#include "stack-table.h"

#include <dlfcn.h>
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#define MT_EXPORT __attribute__((visibility("default")))

static struct {
    void *(*malloc)(size_t);
    void (*free)(void *);
    void *(*calloc)(size_t, size_t);
    void *(*realloc)(void *, size_t);
    int (*posix_memalign)(void **, size_t, size_t);
    void *(*aligned_alloc)(size_t, size_t);
    void *(*memalign)(size_t, size_t);
    void *(*valloc)(size_t);
    void *(*pvalloc)(size_t);
    void *(*mmap)(void *, size_t, int, int, int, off_t);
    void *(*mmap64)(void *, size_t, int, int, int, off_t);
    int (*munmap)(void *, size_t);
    void *(*mremap)(void *, size_t, size_t, int, ...);
    void (*_exit)(int) __attribute__((noreturn));
    void (*_Exit)(int) __attribute__((noreturn));
    pid_t (*_Fork)(void);
    int (*pipe2)(int[2], int);
} real;

/* 0: not started, 1: in progress, 2: done. */
static atomic_int init_state;

/* ---- bootstrap pool --------------------------------------------------- */

static _Alignas(64) char boot_pool[64 << 10];
static atomic_size_t boot_used;

static void *boot_alloc(size_t size, size_t align)
{
    if (align < 16)
        align = 16;
    size_t old = atomic_load(&boot_used), start, end;
    do {
        start = (old + align - 1) & ~(align - 1);
        end = start + size;
        if (end > sizeof(boot_pool))
            return NULL;
    } while (!atomic_compare_exchange_weak(&boot_used, &old, end));
    return boot_pool + start; /* static storage: already zero */
}

static inline int is_boot(const void *p)
{
    return (const char *)p >= boot_pool && (const char *)p < boot_pool + sizeof(boot_pool);
}

/* ---- initialisation ------------------------------------------------------- */

static void at_exit(int status, void *arg);
static void after_fork_child(void);

static void *next_sym(const char *name)
{
    return dlsym(RTLD_NEXT, name);
}

static void init(void)
{
    int expected = 0;
    if (!atomic_compare_exchange_strong(&init_state, &expected, 1)) {
        /* Re-entered by the initialiser itself (its guard is raised): the
         * caller copes with what is resolved so far. Any other thread
         * waits for the initialiser to finish. */
        if (mti_self.guard)
            return;
        while (atomic_load(&init_state) != 2)
            sched_yield();
        return;
    }
    mti_self.guard++;
    real.malloc = next_sym("malloc");
    real.free = next_sym("free");
    real.calloc = next_sym("calloc");
    real.realloc = next_sym("realloc");
    real.posix_memalign = next_sym("posix_memalign");
    real.aligned_alloc = next_sym("aligned_alloc");
    real.memalign = next_sym("memalign");
    real.valloc = next_sym("valloc");
    real.pvalloc = next_sym("pvalloc");
    real.mmap = next_sym("mmap");
    real.mmap64 = next_sym("mmap64");
    real.munmap = next_sym("munmap");
    real.mremap = next_sym("mremap");
    real._exit = next_sym("_exit");
    real._Exit = next_sym("_Exit");
    real._Fork = next_sym("_Fork");
    real.pipe2 = next_sym("pipe2");
    if (!real.malloc || !real.free || !real.calloc || !real.realloc || !real.mmap || !real.munmap ||
        !real._exit) {
        mti_log("cannot find the C library's allocator; recording off");
        atomic_store(&init_state, 2);
        mti_self.guard--;
        return;
    }

    mti_options_load();
    if (mti_opt.enabled) {
        mti_stack_table_init();
        if (mti_recorder_init() == 0) {
            on_exit(at_exit, NULL);
            pthread_atfork(mti_loader_prepare_fork, mti_loader_parent_after_fork, after_fork_child);
        }
    }
    atomic_store(&init_state, 2);
    mti_self.guard--;
}

static inline void ensure_init(void)
{
    if (__builtin_expect(atomic_load_explicit(&init_state, memory_order_acquire) != 2, 0))
        init();
}

__attribute__((constructor)) static void memtrace_constructor(void)
{
    ensure_init();
}

static void at_exit(int status, void *arg)
{
    mti_recorder_finish(MT_END_EXIT, status);
}

static void after_fork_child(void)
{
    mti_recorder_after_fork();
}

/* ---- recording helpers ---------------------------------------------------- */

__attribute__((noinline)) static void record_alloc(unsigned kind, void *p, size_t size)
{
    mti_self.guard++;
    uint32_t stack = mti_stack_capture();
    uint64_t seq = mti_next_seq();
    mti_emit_alloc(kind, seq, mti_now(), (uintptr_t)p, size, stack);
    mti_self.guard--;
}

static inline void record_free(unsigned kind, void *p)
{
    mti_self.guard++;
    uint64_t seq = mti_next_seq();
    mti_emit_free(kind, seq, mti_now(), (uintptr_t)p);
    mti_self.guard--;
}

/* ---- the malloc family -------------------------------------------------- */

MT_EXPORT void *malloc(size_t size)
{
    if (__builtin_expect(!real.malloc, 0)) {
        if (mti_self.guard || atomic_load(&init_state) == 1)
            return boot_alloc(size, 16);
        ensure_init();
        if (!real.malloc)
            return boot_alloc(size, 16);
    }
    void *p = real.malloc(size);
    if (__builtin_expect(p != NULL, 1) && mti_recording())
        record_alloc(MT_ALLOC_MALLOC, p, size);
    return p;
}

MT_EXPORT void free(void *p)
{
    if (!p || is_boot(p))
        return;
    if (__builtin_expect(!real.free, 0)) {
        ensure_init();
        if (!real.free)
            return; /* only while dlsym runs: a block it will never miss */
    }
    if (mti_recording())
        record_free(MT_FREE_FREE, p);
    real.free(p);
}

MT_EXPORT void *calloc(size_t n, size_t size)
{
    if (__builtin_expect(!real.calloc, 0)) {
        if (mti_self.guard || atomic_load(&init_state) == 1) {
            size_t total;
            if (__builtin_mul_overflow(n, size, &total))
                return NULL;
            return boot_alloc(total, 16);
        }
        ensure_init();
        if (!real.calloc)
            return NULL;
    }
    void *p = real.calloc(n, size);
    if (p && mti_recording())
        record_alloc(MT_ALLOC_CALLOC, p, n * size);
    return p;
}

/* realloc and reallocarray: the old block is released (numbered before the
 * call) and the new one allocated (numbered after). A failed call changes
 * nothing; a zero size frees (glibc returns NULL then). */
static void *do_realloc(unsigned kind, void *old, size_t size)
{
    if (!mti_recording())
        return real.realloc(old, size);
    mti_self.guard++;
    uint64_t seq_free = mti_next_seq();
    uint64_t t_free = mti_now();
    void *p = real.realloc(old, size);
    if (p || size == 0) {
        mti_emit_free(MT_FREE_REALLOC, seq_free, t_free, (uintptr_t)old);
        if (p) {
            uint32_t stack = mti_stack_capture();
            uint64_t seq = mti_next_seq();
            mti_emit_alloc(kind, seq, mti_now(), (uintptr_t)p, size, stack);
        }
    }
    mti_self.guard--;
    return p;
}

MT_EXPORT void *realloc(void *old, size_t size)
{
    if (is_boot(old)) {
        /* Move a bootstrap block to the real allocator. */
        void *p = malloc(size);
        if (p && size)
            memcpy(p, old, size < sizeof(boot_pool) - (size_t)((char *)old - boot_pool)
                               ? size
                               : sizeof(boot_pool) - (size_t)((char *)old - boot_pool));
        return p;
    }
    if (__builtin_expect(!real.realloc, 0)) {
        ensure_init();
        if (!real.realloc)
            return NULL;
    }
    if (!old) {
        void *p = real.realloc(NULL, size);
        if (p && mti_recording())
            record_alloc(MT_ALLOC_REALLOC, p, size);
        return p;
    }
    return do_realloc(MT_ALLOC_REALLOC, old, size);
}

MT_EXPORT void *reallocarray(void *old, size_t n, size_t m)
{
    size_t size;
    if (__builtin_mul_overflow(n, m, &size)) {
        errno = ENOMEM;
        return NULL;
    }
    if (is_boot(old))
        return realloc(old, size);
    ensure_init();
    /* glibc's reallocarray calls realloc: go to realloc directly, so that
     * one call is recorded once. */
    if (!old) {
        void *p = real.realloc(NULL, size);
        if (p && mti_recording())
            record_alloc(MT_ALLOC_REALLOCARRAY, p, size);
        return p;
    }
    return do_realloc(MT_ALLOC_REALLOCARRAY, old, size);
}

MT_EXPORT int posix_memalign(void **ret, size_t align, size_t size)
{
    ensure_init();
    int r = real.posix_memalign(ret, align, size);
    if (r == 0 && *ret && mti_recording())
        record_alloc(MT_ALLOC_POSIX_MEMALIGN, *ret, size);
    return r;
}

MT_EXPORT void *aligned_alloc(size_t align, size_t size)
{
    ensure_init();
    void *p = real.aligned_alloc(align, size);
    if (p && mti_recording())
        record_alloc(MT_ALLOC_ALIGNED_ALLOC, p, size);
    return p;
}

MT_EXPORT void *memalign(size_t align, size_t size)
{
    if (__builtin_expect(!real.memalign, 0)) {
        if (mti_self.guard || atomic_load(&init_state) == 1)
            return boot_alloc(size, align);
        ensure_init();
    }
    void *p = real.memalign(align, size);
    if (p && mti_recording())
        record_alloc(MT_ALLOC_MEMALIGN, p, size);
    return p;
}

MT_EXPORT void *valloc(size_t size)
{
    ensure_init();
    void *p = real.valloc(size);
    if (p && mti_recording())
        record_alloc(MT_ALLOC_VALLOC, p, size);
    return p;
}

MT_EXPORT void *pvalloc(size_t size)
{
    ensure_init();
    void *p = real.pvalloc(size);
    if (p && mti_recording())
        record_alloc(MT_ALLOC_PVALLOC, p, size);
    return p;
}

/* ---- mappings --------------------------------------------------------------- */

__attribute__((noinline)) static void record_mmap(void *p, size_t len, int prot, int flags)
{
    mti_self.guard++;
    uint32_t stack = mti_stack_capture();
    uint64_t seq = mti_next_seq();
    unsigned kind = (flags & MAP_ANONYMOUS) ? MT_MAP_ANON : MT_MAP_FILE;
    mti_emit_mmap(kind, seq, mti_now(), (uintptr_t)p, len, prot, flags, stack);
    mti_self.guard--;
}

static inline bool recording_maps(void)
{
    return mti_opt.mmap && mti_recording();
}

static void *raw_mmap(void *addr, size_t len, int prot, int flags, int fd, off_t off)
{
    long r = syscall(SYS_mmap, addr, len, prot, flags, fd, off);
    if (r < 0 && r > -4096) {
        errno = (int)-r;
        return MAP_FAILED;
    }
    return (void *)r;
}

MT_EXPORT void *mmap(void *addr, size_t len, int prot, int flags, int fd, off_t off)
{
    if (__builtin_expect(!real.mmap, 0)) {
        /* Only during initialisation (dlsym's own mappings). */
        if (mti_self.guard || atomic_load(&init_state) == 1)
            return raw_mmap(addr, len, prot, flags, fd, off);
        ensure_init();
    }
    void *p = real.mmap(addr, len, prot, flags, fd, off);
    if (p != MAP_FAILED && recording_maps())
        record_mmap(p, len, prot, flags);
    return p;
}

MT_EXPORT void *mmap64(void *addr, size_t len, int prot, int flags, int fd, off_t off)
{
    if (__builtin_expect(!real.mmap64, 0))
        return mmap(addr, len, prot, flags, fd, off);
    void *p = real.mmap64(addr, len, prot, flags, fd, off);
    if (p != MAP_FAILED && recording_maps())
        record_mmap(p, len, prot, flags);
    return p;
}

MT_EXPORT int munmap(void *addr, size_t len)
{
    if (__builtin_expect(!real.munmap, 0)) {
        long r = syscall(SYS_munmap, addr, len);
        if (r < 0) {
            errno = (int)-r;
            return -1;
        }
        return 0;
    }
    if (!recording_maps())
        return real.munmap(addr, len);
    mti_self.guard++;
    uint64_t seq = mti_next_seq();
    uint64_t t = mti_now();
    int r = real.munmap(addr, len);
    if (r == 0)
        mti_emit_munmap(MT_UNMAP_MUNMAP, seq, t, (uintptr_t)addr, len);
    mti_self.guard--;
    return r;
}

MT_EXPORT void *mremap(void *old, size_t old_len, size_t new_len, int flags, ...)
{
    void *new_addr = NULL;
    if (flags & MREMAP_FIXED) {
        va_list ap;
        va_start(ap, flags);
        new_addr = va_arg(ap, void *);
        va_end(ap);
    }
    ensure_init();
    if (!recording_maps())
        return real.mremap(old, old_len, new_len, flags, new_addr);
    mti_self.guard++;
    uint64_t seq_old = mti_next_seq();
    uint64_t t_old = mti_now();
    void *p = real.mremap(old, old_len, new_len, flags, new_addr);
    if (p != MAP_FAILED) {
        /* old_len 0 duplicates a shared mapping: the old one stays. */
        if (old_len)
            mti_emit_munmap(MT_UNMAP_REMAP, seq_old, t_old, (uintptr_t)old, old_len);
        uint32_t stack = mti_stack_capture();
        uint64_t seq = mti_next_seq();
        mti_emit_mmap(MT_MAP_REMAP, seq, mti_now(), (uintptr_t)p, new_len, 0, flags, stack);
    }
    mti_self.guard--;
    return p;
}

/* ---- process life ----------------------------------------------------------- */

MT_EXPORT void _exit(int status)
{
    mti_recorder_finish(MT_END_UNDERSCORE_EXIT, status);
    if (real._exit)
        real._exit(status);
    syscall(SYS_exit_group, status);
    __builtin_unreachable();
}

MT_EXPORT void _Exit(int status)
{
    mti_recorder_finish(MT_END_UNDERSCORE_EXIT, status);
    if (real._Exit)
        real._Exit(status);
    syscall(SYS_exit_group, status);
    __builtin_unreachable();
}

/* ---- descriptors of memtrace's own -------------------------------------------
 *
 * libunwind opens a pipe for itself (it probes memory by writing to it) and
 * reopens it when a read fails. Left at the lowest free numbers, those
 * descriptors shift every number the program gets from open(), and when the
 * program closes all its descriptors and opens a file that takes the old
 * number, libunwind's reopening closes the program's file. So a pipe made
 * while memtrace is at work (guard raised) is moved to the top of the
 * descriptor range, where programs do not go. */

MT_EXPORT int pipe2(int fds[2], int flags)
{
    if (!real.pipe2) {
        long r = syscall(SYS_pipe2, fds, flags);
        if (r < 0) {
            errno = (int)-r;
            return -1;
        }
        return 0;
    }
    int r = real.pipe2(fds, flags);
    if (r == 0 && mti_self.guard) {
        for (int i = 0; i < 2; i++) {
            int high = mti_move_fd_high(fds[i]);
            if (high >= 0)
                fds[i] = high;
        }
    }
    return r;
}

MT_EXPORT int pipe(int fds[2])
{
    return pipe2(fds, 0);
}

/* _Fork skips the atfork handlers, so the child is set up here. */
MT_EXPORT pid_t _Fork(void)
{
    ensure_init();
    if (!real._Fork) {
        errno = ENOSYS;
        return -1;
    }
    pid_t pid = real._Fork();
    if (pid == 0 && atomic_load(&init_state) == 2)
        mti_recorder_after_fork();
    return pid;
}
