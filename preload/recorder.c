/* See recorder.h for the design. Invariants kept here:
 *
 * - The chunk chain of the file is intact at every instant: extents are
 *   reserved under `file_lock`, and the chunk header is written (pwrite)
 *   before the lock is released, so a reader walking from the file header
 *   never meets a hole, whatever moment the process dies at. A thread that
 *   exits gives the unused tail of its extent back as a FREE chunk (written
 *   before its own chunk is shrunk to cover only what it used).
 * - `used` in a chunk header only grows, and only over whole records.
 * - Space is fallocate()d before it is mapped: writing through the mapping
 *   can never fault for lack of disk. When the disk is full or the file
 *   cannot be written, recording stops for good and one line says why.
 */
#include "recorder.h"
#include "api.h"
#include "clock.h"
#include "cuda.h"
#include "loader-lock.h"
#include "log.h"
#include "modules.h"
#include "options.h"
#include "python.h"
#include "stack-table.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

__thread struct mti_thread mti_self __attribute__((tls_model("initial-exec")));
atomic_int mti_state;

#define EXTENT_MIN (64u << 10)
#define EXTENT_MAX (1u << 20)
#define FREE_REGION_MIN (16u << 10)
#define FREE_REGIONS 256

/* The sequence counter has a cache line to itself: it is the one shared
 * write of the hot path. */
static struct {
    _Alignas(64) atomic_uint_fast64_t seq;
    char pad[64 - sizeof(atomic_uint_fast64_t)];
} seq_line;

static uint64_t start_ns;
static unsigned time_shift;
static uint32_t page_size;
static atomic_uint gen = 1;

/* The output file; everything below is guarded by file_lock. */
static mti_lock_t file_lock;
static int fd = -1;
static dev_t fd_dev;  /* identity of the trace file behind fd */
static ino_t fd_ino;
static bool file_failed;
static uint64_t file_end;
static char out_path[PATH_MAX];  /* this process's trace file */
static char base_path[PATH_MAX]; /* the session's MEMTRACE_OUTPUT, absolute */
static bool is_root;
static uint32_t session_pid;
static struct {
    uint64_t off, size;
} free_regions[FREE_REGIONS];
static unsigned n_free_regions;

static pthread_key_t exit_key;

/* RSS sampling: whoever passes `next_rss` first takes the sample. */
static atomic_uint_fast64_t next_rss;

/* ---- small helpers -------------------------------------------------------- */

void mti_lock(mti_lock_t *l)
{
    for (unsigned spins = 0;; spins++) {
        int expected = 0;
        if (atomic_compare_exchange_weak_explicit(l, &expected, 1, memory_order_acquire, memory_order_relaxed))
            return;
        if (spins > 64)
            sched_yield();
    }
}

bool mti_trylock(mti_lock_t *l)
{
    int expected = 0;
    return atomic_compare_exchange_strong_explicit(l, &expected, 1, memory_order_acquire, memory_order_relaxed);
}

void mti_unlock(mti_lock_t *l)
{
    atomic_store_explicit(l, 0, memory_order_release);
}

static void *sys_mmap(void *addr, size_t len, int prot, int flags, int mfd, off_t off)
{
    long r = syscall(SYS_mmap, addr, len, prot, flags, mfd, off);
    return (r < 0 && r > -4096) ? MAP_FAILED : (void *)r;
}

static void sys_munmap(void *addr, size_t len)
{
    syscall(SYS_munmap, addr, len);
}

uint64_t mti_next_seq(void)
{
    return atomic_fetch_add_explicit(&seq_line.seq, 1, memory_order_relaxed) + 1;
}

uint64_t mti_now(void)
{
    uint64_t t = mti_clock_ns();
    return t > start_ns ? (t - start_ns) >> time_shift : 0;
}

static int write_all(int wfd, const void *buf, size_t len, uint64_t off)
{
    const char *p = buf;
    while (len) {
        ssize_t w = pwrite(wfd, p, len, (off_t)off);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return w < 0 ? -errno : -EIO;
        p += w;
        len -= (size_t)w;
        off += (uint64_t)w;
    }
    return 0;
}

/* Makes [off, off+len) of the file real disk space. */
static int reserve_space(uint64_t off, uint64_t len)
{
    if (fallocate(fd, 0, (off_t)off, (off_t)len) == 0)
        return 0;
    int err = errno;
    if (err != EOPNOTSUPP && err != ENOSYS && err != EINVAL)
        return -err;
    /* No fallocate on this file system: write the zeros ourselves. */
    static const char zeros[4096];
    for (uint64_t o = 0; o < len; o += sizeof(zeros)) {
        int r = write_all(fd, zeros, sizeof(zeros), off + o);
        if (r < 0)
            return r;
    }
    return 0;
}

/* Called with file_lock held: stop recording for good, say why once. */
static void fail_locked(const char *what, int err)
{
    if (!file_failed)
        mti_log("%s '%s': %s; recording stopped, the program runs on", what, out_path, strerror(-err));
    file_failed = true;
    atomic_store(&mti_state, MTI_OFF);
}

int mti_move_fd_high(int lowfd)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0 || rl.rlim_cur < 64)
        return -1;
    rlim_t top = rl.rlim_cur > 65536 ? 65536 : rl.rlim_cur;
    int hi = fcntl(lowfd, F_DUPFD_CLOEXEC, (int)(top - 32));
    if (hi < 0)
        return -1;
    close(lowfd);
    return hi;
}

/* ---- file names ----------------------------------------------------------- */

static int absolute_path(const char *in, char *out, size_t size)
{
    if (in[0] == '/') {
        if (strlen(in) >= size)
            return -ENAMETOOLONG;
        strcpy(out, in);
        return 0;
    }
    if (!getcwd(out, size))
        return -errno;
    size_t n = strlen(out);
    if (n + 1 + strlen(in) >= size)
        return -ENAMETOOLONG;
    out[n] = '/';
    strcpy(out + n + 1, in);
    return 0;
}

/* "dir/trace.bin" -> "dir/trace.<pid>[.<n>].bin"; without a ".bin" ending
 * the pid (and n) are appended. */
static int child_path(char *out, size_t size, unsigned pid, unsigned n)
{
    size_t len = strlen(base_path);
    const char *ext = "";
    if (len > 4 && !strcmp(base_path + len - 4, ".bin")) {
        len -= 4;
        ext = ".bin";
    }
    int w = n ? snprintf(out, size, "%.*s.%u.%u%s", (int)len, base_path, pid, n, ext)
              : snprintf(out, size, "%.*s.%u%s", (int)len, base_path, pid, ext);
    return (w < 0 || (size_t)w >= size) ? -ENAMETOOLONG : 0;
}

/* Called with file_lock held. Creates the file, writes its header and the
 * FREE chunk that pads it to the first page boundary. */
static int open_file_locked(void)
{
    int ofd;
    if (is_root) {
        ofd = open(out_path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    } else {
        unsigned pid = (unsigned)getpid();
        for (unsigned n = 0;; n++) {
            int r = child_path(out_path, sizeof(out_path), pid, n);
            if (r < 0)
                return r;
            ofd = open(out_path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
            if (ofd >= 0 || errno != EEXIST || n > 1000)
                break;
        }
    }
    if (ofd < 0)
        return -errno;
    int high = mti_move_fd_high(ofd);
    fd = high >= 0 ? high : ofd;
    struct stat st;
    if (fstat(fd, &st) == 0) {
        fd_dev = st.st_dev;
        fd_ino = st.st_ino;
    }

    struct mt_file_hdr h;
    memset(&h, 0, sizeof(h));
    memcpy(h.magic, MT_FILE_MAGIC, 8);
    h.version = MT_FORMAT_VERSION;
    h.hdr_size = MT_FILE_HDR_SIZE;
    h.pid = (uint32_t)getpid();
    h.ppid = (uint32_t)getppid();
    h.session_pid = session_pid;
    h.page_size = page_size;
    h.time_shift = time_shift;
    h.start_mono_ns = start_ns;
    struct timespec rt;
    clock_gettime(CLOCK_REALTIME, &rt);
    h.start_real_ns = (uint64_t)rt.tv_sec * 1000000000u + (uint64_t)rt.tv_nsec;

    struct mt_chunk_hdr pad;
    memset(&pad, 0, sizeof(pad));
    pad.magic = MT_CHUNK_MAGIC;
    pad.type = MT_CHUNK_FREE;
    pad.hdr_size = MT_CHUNK_HDR_SIZE;
    pad.size = page_size - MT_FILE_HDR_SIZE;

    int r = reserve_space(0, page_size);
    if (r == 0)
        r = write_all(fd, &pad, sizeof(pad), MT_FILE_HDR_SIZE);
    if (r == 0)
        r = write_all(fd, &h, sizeof(h), 0);
    if (r < 0)
        return r;
    file_end = page_size;
    if (mti_opt.verbose)
        mti_log("tracing pid %u into %s", (unsigned)getpid(), out_path);
    return 0;
}

/* Called with file_lock held, before fd is used. Programs that close every
 * descriptor (daemons, the child side of subprocess) may have closed ours,
 * and its number may now name one of their files: never write through it
 * then. Reopen the trace by name instead (the mappings already made keep
 * the file itself alive). */
static int check_fd_locked(void)
{
    struct stat st;
    if (fstat(fd, &st) == 0 && st.st_dev == fd_dev && st.st_ino == fd_ino)
        return 0;
    int nfd = open(out_path, O_RDWR | O_CLOEXEC);
    if (nfd < 0)
        return -errno;
    int high = mti_move_fd_high(nfd);
    if (high >= 0)
        nfd = high;
    if (fstat(nfd, &st) != 0 || st.st_dev != fd_dev || st.st_ino != fd_ino) {
        close(nfd);
        return -ESTALE; /* the trace was replaced or removed */
    }
    fd = nfd;
    return 0;
}

/* ---- chunks --------------------------------------------------------------- */

static void thread_exit(void *arg);

/* The calling thread lets go of its chunk. With `give_back`, the unused
 * tail of the extent (if large) becomes a FREE chunk for the next thread. */
static void release_chunk(struct mti_thread *th, bool give_back)
{
    if (!th->hdr)
        return;
    uint64_t size = th->hdr->size;
    uint64_t keep = MT_CHUNK_HDR_SIZE + (uint64_t)(th->pos - th->payload);
    keep = (keep + page_size - 1) / page_size * page_size;
    if (give_back && size >= keep + FREE_REGION_MIN) {
        struct mt_chunk_hdr *tail = (struct mt_chunk_hdr *)((uint8_t *)th->hdr + keep);
        memset(tail, 0, sizeof(*tail));
        tail->type = MT_CHUNK_FREE;
        tail->hdr_size = MT_CHUNK_HDR_SIZE;
        tail->size = size - keep;
        __atomic_store_n(&tail->magic, MT_CHUNK_MAGIC, __ATOMIC_RELEASE);
        __atomic_store_n(&th->hdr->size, keep, __ATOMIC_RELEASE);
        mti_lock(&file_lock);
        if (n_free_regions < FREE_REGIONS) {
            free_regions[n_free_regions].off = th->map_off + keep;
            free_regions[n_free_regions].size = size - keep;
            n_free_regions++;
        }
        mti_unlock(&file_lock);
    }
    sys_munmap(th->hdr, size);
    th->hdr = NULL;
    th->pos = th->end = th->payload = NULL;
}

/* Opens a new chunk for the calling thread with room for `need` bytes.
 * Returns false when recording is off or has just failed. */
static bool new_chunk(struct mti_thread *th, size_t need)
{
    unsigned g = atomic_load_explicit(&gen, memory_order_acquire);
    if (th->gen != g) {
        /* First record of this thread, or the first in a forked child: the
         * inherited chunk belongs to the parent's file. */
        if (th->hdr)
            sys_munmap(th->hdr, th->hdr->size);
        th->hdr = NULL;
        th->gen = g;
        th->tid = (uint32_t)syscall(SYS_gettid);
        th->extent_size = EXTENT_MIN;
        th->last_seq = th->last_time = th->last_addr = 0;
    }
    release_chunk(th, false);
    if (!th->key_set) {
        th->key_set = true;
        pthread_setspecific(exit_key, th);
    }

    uint64_t size = th->extent_size;
    while (size < need + MT_CHUNK_HDR_SIZE)
        size *= 2;
    if (th->extent_size < EXTENT_MAX)
        th->extent_size *= 2;

    struct mt_chunk_hdr h;
    memset(&h, 0, sizeof(h));
    h.magic = MT_CHUNK_MAGIC;
    h.type = MT_CHUNK_RAW;
    h.hdr_size = MT_CHUNK_HDR_SIZE;
    h.tid = th->tid;
    h.seq_base = th->last_seq;
    h.time_base = th->last_time;

    mti_lock(&file_lock);
    if (atomic_load(&mti_state) != MTI_ON || file_failed) {
        mti_unlock(&file_lock);
        return false;
    }
    if (fd < 0) {
        int r = open_file_locked();
        if (r < 0) {
            if (fd >= 0)
                close(fd);
            fd = -1;
            fail_locked("cannot write trace", r);
            mti_unlock(&file_lock);
            return false;
        }
        th->intro_pending = true;
    } else {
        int r = check_fd_locked();
        if (r < 0) {
            fail_locked("lost the trace file", r);
            mti_unlock(&file_lock);
            return false;
        }
    }
    uint64_t off = 0;
    for (unsigned i = 0; i < n_free_regions; i++) {
        if (free_regions[i].size >= need + MT_CHUNK_HDR_SIZE + page_size) {
            off = free_regions[i].off;
            size = free_regions[i].size;
            free_regions[i] = free_regions[--n_free_regions];
            break;
        }
    }
    int r = 0;
    if (!off) {
        off = file_end;
        r = reserve_space(off, size);
        if (r == 0)
            file_end += size;
    }
    h.size = size;
    if (r == 0)
        r = write_all(fd, &h, sizeof(h), off);
    if (r < 0) {
        fail_locked("cannot extend trace", r);
        mti_unlock(&file_lock);
        return false;
    }
    mti_unlock(&file_lock);

    void *map = sys_mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, fd, (off_t)off);
    if (map == MAP_FAILED) {
        mti_lock(&file_lock);
        fail_locked("cannot map trace", -errno);
        mti_unlock(&file_lock);
        return false;
    }
    th->hdr = map;
    th->map_off = off;
    th->payload = (uint8_t *)map + MT_CHUNK_HDR_SIZE;
    th->pos = th->payload;
    th->end = (uint8_t *)map + size;
    th->last_addr = 0;
    th->last_ip = 0;
    return true;
}

static void emit_intro(void);

static uint8_t *reserve_slow(struct mti_thread *th, size_t need)
{
    if (!new_chunk(th, need))
        return NULL;
    if (th->intro_pending) {
        th->intro_pending = false;
        emit_intro();
        if (th->pos + need > th->end && !new_chunk(th, need))
            return NULL;
    }
    return th->pos;
}

/* Returns where to write a record of at most `need` bytes, or NULL. */
static inline uint8_t *reserve(struct mti_thread *th, size_t need)
{
    if (__builtin_expect(th->gen == atomic_load_explicit(&gen, memory_order_relaxed) && th->hdr &&
                             th->pos + need <= th->end,
                         1))
        return th->pos;
    return reserve_slow(th, need);
}

static inline void commit(struct mti_thread *th, uint8_t *p)
{
    th->pos = p;
    __atomic_store_n(&th->hdr->used, (uint64_t)(p - th->payload), __ATOMIC_RELEASE);
}

static void thread_exit(void *arg)
{
    struct mti_thread *th = arg;
    if (th != &mti_self)
        return;
    th->guard++;
    if (th->gen == atomic_load(&gen))
        release_chunk(th, true);
    mti_stack_thread_exit(th);
    th->key_set = false;
    th->guard--;
}

/* ---- RSS ------------------------------------------------------------------ */

static void emit_rss(unsigned kind, uint64_t time, uint64_t bytes);
static ssize_t read_small_file(const char *path, char *buf, size_t size);

static void sample_rss(uint64_t time)
{
    uint64_t due = atomic_load_explicit(&next_rss, memory_order_relaxed);
    uint64_t next = time + (((uint64_t)mti_opt.rss_interval_ms * 1000000u) >> time_shift);
    if (!atomic_compare_exchange_strong(&next_rss, &due, next))
        return;
    mti_clock_calibrate();
    /* Opened each time: a descriptor kept open could be closed, and its
     * number reused, by a program that closes all its files. */
    char buf[128];
    ssize_t n = read_small_file("/proc/self/statm", buf, sizeof(buf) - 1);
    if (n > 0) {
        buf[n] = 0;
        unsigned long size, resident;
        if (sscanf(buf, "%lu %lu", &size, &resident) == 2)
            emit_rss(MT_RSS_SAMPLE, time, (uint64_t)resident * page_size);
    }
    mti_modules_poll();
    mti_python_tick();
}

static inline void maybe_sample(uint64_t time)
{
    if (__builtin_expect(time >= atomic_load_explicit(&next_rss, memory_order_relaxed), 0))
        sample_rss(time);
}

/* ---- records -------------------------------------------------------------- */

static inline uint8_t *put_seq_time(struct mti_thread *th, uint8_t *p, uint64_t seq, uint64_t time)
{
    p = mt_put_varint(p, seq - th->last_seq);
    th->last_seq = seq;
    if (time < th->last_time)
        time = th->last_time;
    p = mt_put_varint(p, time - th->last_time);
    th->last_time = time;
    return p;
}

/* Room for an event record, its tag, seq and time written: the rest of
 * the fields follow. NULL when recording stopped. */
static inline uint8_t *event_begin(struct mti_thread *th, uint8_t tag, uint64_t seq, uint64_t time)
{
    uint8_t *p = reserve(th, MT_MAX_EVENT_RECORD);
    if (!p)
        return NULL;
    *p++ = tag;
    return put_seq_time(th, p, seq, time);
}

void mti_emit_alloc(unsigned kind, uint64_t seq, uint64_t time, uintptr_t addr, uint64_t size, uint32_t stack)
{
    struct mti_thread *th = &mti_self;
    uint8_t *p = event_begin(th, mt_tag(MT_REC_ALLOC, kind), seq, time);
    if (!p)
        return;
    p = mt_put_varint(p, mt_zigzag((int64_t)(addr - th->last_addr)));
    th->last_addr = addr;
    p = mt_put_varint(p, size);
    p = mt_put_varint(p, stack);
    commit(th, p);
    maybe_sample(time);
}

void mti_emit_free(unsigned kind, uint64_t seq, uint64_t time, uintptr_t addr)
{
    struct mti_thread *th = &mti_self;
    uint8_t *p = event_begin(th, mt_tag(MT_REC_FREE, kind), seq, time);
    if (!p)
        return;
    p = mt_put_varint(p, mt_zigzag((int64_t)(addr - th->last_addr)));
    th->last_addr = addr;
    commit(th, p);
    maybe_sample(time);
}

void mti_emit_mmap(unsigned kind, uint64_t seq, uint64_t time, uintptr_t addr, uint64_t len, int prot,
                   int flags, uint32_t stack)
{
    struct mti_thread *th = &mti_self;
    uint8_t *p = event_begin(th, mt_tag(MT_REC_MMAP, kind), seq, time);
    if (!p)
        return;
    p = mt_put_varint(p, addr);
    p = mt_put_varint(p, len);
    p = mt_put_varint(p, (uint32_t)prot);
    p = mt_put_varint(p, (uint32_t)flags);
    p = mt_put_varint(p, stack);
    commit(th, p);
    maybe_sample(time);
}

void mti_emit_munmap(unsigned kind, uint64_t seq, uint64_t time, uintptr_t addr, uint64_t len)
{
    struct mti_thread *th = &mti_self;
    uint8_t *p = event_begin(th, mt_tag(MT_REC_MUNMAP, kind), seq, time);
    if (!p)
        return;
    p = mt_put_varint(p, addr);
    p = mt_put_varint(p, len);
    commit(th, p);
}

void mti_emit_mark(unsigned kind, uint64_t seq, uint64_t time, uint64_t value)
{
    struct mti_thread *th = &mti_self;
    uint8_t *p = event_begin(th, mt_tag(MT_REC_MARK, kind), seq, time);
    if (!p)
        return;
    if (kind == MT_MARK_PHASE_PUSH || kind == MT_MARK_SCOPE_PUSH || kind == MT_MARK_STEP)
        p = mt_put_varint(p, value);
    commit(th, p);
}

void mti_emit_string(uint32_t id, const char *str, size_t len)
{
    struct mti_thread *th = &mti_self;
    if (len > MT_MAX_STRING)
        len = MT_MAX_STRING;
    uint8_t *p = reserve(th, 1 + 2 * 10 + len);
    if (!p)
        return;
    *p++ = mt_tag(MT_REC_MARK, MT_MARK_STRING);
    p = mt_put_varint(p, id);
    p = mt_put_varint(p, len);
    memcpy(p, str, len);
    commit(th, p + len);
}

void mti_emit_tag(uint64_t seq, uint64_t time, uintptr_t addr, uint32_t category, unsigned space)
{
    struct mti_thread *th = &mti_self;
    uint8_t *p = event_begin(th, mt_tag(MT_REC_MARK, MT_MARK_TAG), seq, time);
    if (!p)
        return;
    p = mt_put_varint(p, addr);
    p = mt_put_varint(p, category);
    p = mt_put_varint(p, space);
    commit(th, p);
}

void mti_emit_gpu_alloc(uint64_t seq, uint64_t time, uint64_t addr, uint64_t size, uint32_t device,
                        uint64_t stream, unsigned api, unsigned space, uint32_t stack)
{
    struct mti_thread *th = &mti_self;
    uint8_t *p = event_begin(th, mt_tag(MT_REC_GPU, MT_GPU_ALLOC), seq, time);
    if (!p)
        return;
    p = mt_put_varint(p, addr);
    p = mt_put_varint(p, size);
    p = mt_put_varint(p, device);
    p = mt_put_varint(p, stream);
    p = mt_put_varint(p, api);
    p = mt_put_varint(p, space);
    p = mt_put_varint(p, stack);
    commit(th, p);
}

void mti_emit_gpu_free(uint64_t seq, uint64_t time, uint64_t addr, uint32_t device, unsigned api,
                       unsigned space)
{
    struct mti_thread *th = &mti_self;
    uint8_t *p = event_begin(th, mt_tag(MT_REC_GPU, MT_GPU_FREE), seq, time);
    if (!p)
        return;
    p = mt_put_varint(p, addr);
    p = mt_put_varint(p, device);
    p = mt_put_varint(p, api);
    p = mt_put_varint(p, space);
    commit(th, p);
}

void mti_emit_gpu_oom(uint64_t seq, uint64_t time, uint64_t size, uint32_t device, unsigned api,
                      unsigned space, uint64_t result, uint32_t stack)
{
    struct mti_thread *th = &mti_self;
    uint8_t *p = event_begin(th, mt_tag(MT_REC_GPU, MT_GPU_OOM), seq, time);
    if (!p)
        return;
    p = mt_put_varint(p, size);
    p = mt_put_varint(p, device);
    p = mt_put_varint(p, api);
    p = mt_put_varint(p, space);
    p = mt_put_varint(p, result);
    p = mt_put_varint(p, stack);
    commit(th, p);
}

void mti_emit_stack(uint32_t id, uint32_t parent, uintptr_t ip)
{
    struct mti_thread *th = &mti_self;
    uint8_t *p = reserve(th, 1 + 3 * 10);
    if (!p)
        return;
    *p++ = mt_tag(MT_REC_STACK, 0);
    p = mt_put_varint(p, id);
    p = mt_put_varint(p, id - parent);
    p = mt_put_varint(p, mt_zigzag((int64_t)(ip - th->last_ip)));
    th->last_ip = ip;
    commit(th, p);
}

static uint8_t *put_bytes(uint8_t *p, const void *data, size_t len)
{
    p = mt_put_varint(p, len);
    memcpy(p, data, len);
    return p + len;
}

void mti_emit_module_load(uintptr_t bias, unsigned nseg, const uintptr_t (*seg)[2], const uint8_t *build_id,
                          unsigned build_id_len, const char *path)
{
    struct mti_thread *th = &mti_self;
    size_t plen = strnlen(path, MT_MAX_PATH - 1);
    if (nseg > MT_MAX_SEGMENTS)
        nseg = MT_MAX_SEGMENTS;
    if (build_id_len > MT_MAX_BUILD_ID)
        build_id_len = MT_MAX_BUILD_ID;
    uint8_t *p = reserve(th, 1 + 10 + 10 + (size_t)nseg * 20 + 10 + build_id_len + 10 + plen);
    if (!p)
        return;
    *p++ = mt_tag(MT_REC_MODULE, MT_MODULE_LOAD);
    p = mt_put_varint(p, bias);
    p = mt_put_varint(p, nseg);
    for (unsigned i = 0; i < nseg; i++) {
        p = mt_put_varint(p, seg[i][0]);
        p = mt_put_varint(p, seg[i][1]);
    }
    p = put_bytes(p, build_id, build_id_len);
    p = put_bytes(p, path, plen);
    commit(th, p);
}

void mti_emit_module_unload(uintptr_t bias)
{
    struct mti_thread *th = &mti_self;
    uint8_t *p = reserve(th, 11);
    if (!p)
        return;
    *p++ = mt_tag(MT_REC_MODULE, MT_MODULE_UNLOAD);
    p = mt_put_varint(p, bias);
    commit(th, p);
}

static void emit_rss(unsigned kind, uint64_t time, uint64_t bytes)
{
    struct mti_thread *th = &mti_self;
    uint8_t *p = reserve(th, 21);
    if (!p)
        return;
    *p++ = mt_tag(MT_REC_RSS, kind);
    if (time < th->last_time)
        time = th->last_time;
    p = mt_put_varint(p, time - th->last_time);
    th->last_time = time;
    p = mt_put_varint(p, bytes);
    commit(th, p);
}

/* Reads a whole small file (procfs) into buf; returns its length or -1. */
static ssize_t read_small_file(const char *path, char *buf, size_t size)
{
    int rfd = open(path, O_RDONLY | O_CLOEXEC);
    if (rfd < 0)
        return -1;
    size_t len = 0;
    while (len < size) {
        ssize_t n = read(rfd, buf + len, size - len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break;
        len += (size_t)n;
    }
    close(rfd);
    return (ssize_t)len;
}

static void emit_process(void)
{
    struct mti_thread *th = &mti_self;
    char exe[MT_MAX_PATH];
    ssize_t elen = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
    if (elen < 0)
        elen = 0;
    static char argv_buf[MT_MAX_ARGV];
    ssize_t alen = read_small_file("/proc/self/cmdline", argv_buf, sizeof(argv_buf));
    if (alen < 0)
        alen = 0;
    uint8_t *p = reserve(th, 1 + 20 + 10 + (size_t)elen + 10 + (size_t)alen);
    if (!p)
        return;
    *p++ = mt_tag(MT_REC_PROCESS, 0);
    p = mt_put_varint(p, (uint64_t)getpid());
    p = mt_put_varint(p, (uint64_t)getppid());
    p = put_bytes(p, exe, (size_t)elen);
    p = put_bytes(p, argv_buf, (size_t)alen);
    commit(th, p);
}

/* Written by the thread that created the file, right after creating it. */
static void emit_intro(void)
{
    emit_process();
    mti_modules_sync(true);
}

void mti_recorder_finish(unsigned end_kind, int status)
{
    struct mti_thread *th = &mti_self;
    if (atomic_load(&mti_state) != MTI_ON)
        return;
    th->guard++;
    uint64_t time = mti_now();
    char buf[4096];
    ssize_t n = read_small_file("/proc/self/status", buf, sizeof(buf) - 1);
    if (n > 0) {
        buf[n] = 0;
        const char *hwm = strstr(buf, "VmHWM:");
        unsigned long kb;
        if (hwm && sscanf(hwm + 6, "%lu", &kb) == 1)
            emit_rss(MT_RSS_HWM, time, (uint64_t)kb * 1024u);
    }
    uint8_t *p = reserve(th, 1 + 10 + 10);
    if (p) {
        *p++ = mt_tag(MT_REC_END, end_kind);
        if (time < th->last_time)
            time = th->last_time;
        p = mt_put_varint(p, time - th->last_time);
        th->last_time = time;
        p = mt_put_varint(p, (uint64_t)(uint32_t)status);
        commit(th, p);
    }
    th->guard--;
}

/* ---- set-up ------------------------------------------------------------- */

static void start_clock(void)
{
    start_ns = mti_clock_gettime_ns();
    atomic_store(&next_rss, 0);
}

int mti_recorder_init(void)
{
    page_size = (uint32_t)sysconf(_SC_PAGESIZE);
    mti_clock_init();
    mti_loader_lock_init();
    time_shift = (unsigned)mti_opt.time_shift;
    pthread_key_create(&exit_key, thread_exit);

    const char *session = getenv("MEMTRACE_SESSION");
    is_root = !session || !*session;
    if (!is_root && !mti_opt.follow)
        return -ECANCELED;

    char def[64];
    const char *out = mti_opt.output;
    if (!out) {
        snprintf(def, sizeof(def), "memtrace.%u.bin", (unsigned)getpid());
        out = def;
    }
    int r = absolute_path(out, base_path, sizeof(base_path));
    if (r < 0) {
        mti_log("cannot use MEMTRACE_OUTPUT '%s': %s; recording off", out, strerror(-r));
        return r;
    }
    if (is_root) {
        session_pid = (uint32_t)getpid();
        strcpy(out_path, base_path);
        /* Children and exec'd programs find the session and the absolute
         * output name here (a relative name would follow their cwd). */
        char pidbuf[16];
        snprintf(pidbuf, sizeof(pidbuf), "%u", session_pid);
        setenv("MEMTRACE_SESSION", pidbuf, 1);
        setenv("MEMTRACE_OUTPUT", base_path, 1);
    } else {
        session_pid = (uint32_t)strtoul(session, NULL, 10);
    }
    start_clock();
    atomic_store(&mti_state, MTI_ON);
    return 0;
}

void mti_recorder_after_fork(void)
{
    /* Only this thread exists now; whoever held a lock in the parent is
     * gone, and every table refers to the parent's file. */
    atomic_store(&file_lock, 0);
    mti_loader_child_after_fork();
    if (fd >= 0)
        close(fd);
    fd = -1;
    file_end = 0;
    n_free_regions = 0;
    mti_self.key_set = false;
    atomic_fetch_add(&gen, 1);
    mti_stack_table_reset();
    mti_modules_reset();
    mti_api_after_fork();
    mti_cuda_after_fork();
    if (!mti_opt.follow || file_failed || !base_path[0]) {
        atomic_store(&mti_state, MTI_OFF);
        return;
    }
    is_root = false;
    start_clock();
}
