/* offload.c: host-side offload copies: into a pinned buffer, and to and
 * from a file through double-buffered staging.
 *
 * Pinned memory: an anonymous mapping, populated, then mlock'd when the
 * memlock limit allows; otherwise it stays an ordinary (pageable) mapping
 * and says so, since a caller measuring transfer time must know which it
 * measured. Copies are cut into runs of whole chunks over max(2,
 * mt_threads_current()) threads, on the kernels' pool (parallel.c).
 *
 * Files: two page-aligned staging buffers of one chunk each. Writing, the
 * caller copies chunk i into buffer i % 2 while the helper thread writes
 * chunk i - 1 from the other; reading, the helper reads ahead while the
 * caller copies out. O_DIRECT where the file system accepts it (writes are
 * padded to 4 KiB and the file truncated to its size afterwards), buffered
 * I/O with a final fdatasync otherwise. The two threads hand buffers over
 * under one mutex and condition variable.
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "kernels-internal.h"

#define ALIGN 4096

int mt_pinned_alloc(size_t bytes, struct mt_pinned *ret)
{
    if (!bytes)
        return -EINVAL;
    void *p = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE,
                   -1, 0);
    if (p == MAP_FAILED)
        return -errno;
    ret->ptr = p;
    ret->bytes = bytes;
    ret->locked = mlock(p, bytes) == 0;
    return 0;
}

void mt_pinned_free(struct mt_pinned *p)
{
    if (!p || !p->ptr)
        return;
    if (p->locked)
        munlock(p->ptr, p->bytes);
    munmap(p->ptr, p->bytes);
    p->ptr = NULL;
    p->bytes = 0;
}

int mt_offload_copy(void *dst, const void *src, size_t bytes, size_t chunk)
{
    if (!chunk)
        return -EINVAL;
    size_t threads = mt_threads_current();
    mti_copy(dst, src, bytes, chunk, threads < 2 ? 2 : threads);
    return 0;
}

struct pipe {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    char *buf[2];
    int full[2];
    size_t bytes, chunk, nchunks;
    int fd, direct, writing, err;
};

static size_t round_up(size_t x)
{
    return (x + ALIGN - 1) / ALIGN * ALIGN;
}

/* Wait until buffer b is full (want = 1) or empty (want = 0); 0, or the
 * other side's error. */
static int wait_for(struct pipe *p, int b, int want)
{
    pthread_mutex_lock(&p->mu);
    while (p->full[b] != want && !p->err)
        pthread_cond_wait(&p->cv, &p->mu);
    int err = p->err;
    pthread_mutex_unlock(&p->mu);
    return err;
}

static void post(struct pipe *p, int b, int full, int err)
{
    pthread_mutex_lock(&p->mu);
    p->full[b] = full;
    if (err && !p->err)
        p->err = err;
    pthread_cond_broadcast(&p->cv);
    pthread_mutex_unlock(&p->mu);
}

static int io_chunk(struct pipe *p, size_t i)
{
    int b = (int)(i & 1);
    size_t off = i * p->chunk;
    size_t len = p->bytes - off < p->chunk ? p->bytes - off : p->chunk;
    size_t io_len = p->direct ? round_up(len) : len;
    size_t done = 0;
    while (done < io_len) {
        ssize_t n = p->writing ? pwrite(p->fd, p->buf[b] + done, io_len - done, (off_t)(off + done))
                               : pread(p->fd, p->buf[b] + done, io_len - done, (off_t)(off + done));
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return -errno;
        if (n == 0)
            break;
        done += (size_t)n;
    }
    return done < len ? -EIO : 0;
}

static void *io_thread(void *arg)
{
    struct pipe *p = arg;
    for (size_t i = 0; i < p->nchunks; i++) {
        int b = (int)(i & 1);
        if (wait_for(p, b, p->writing))
            break;
        int r = io_chunk(p, i);
        post(p, b, !p->writing, r);
        if (r)
            break;
    }
    return NULL;
}

static int open_file(const char *path, int writing, int *direct)
{
    int flags = writing ? O_WRONLY | O_CREAT | O_TRUNC : O_RDONLY;
    int fd = open(path, flags | O_DIRECT | O_CLOEXEC, 0600);
    *direct = fd >= 0;
    if (fd < 0 && errno == EINVAL)
        fd = open(path, flags | O_CLOEXEC, 0600);
    return fd < 0 ? -errno : fd;
}

static int pipeline(const char *path, char *mem, size_t bytes, size_t chunk, int writing,
                    int *ret_direct)
{
    if (!chunk)
        return -EINVAL;
    struct pipe p = {.bytes = bytes, .chunk = round_up(chunk), .writing = writing};
    p.nchunks = (bytes + p.chunk - 1) / p.chunk;
    int fd = open_file(path, writing, &p.direct);
    if (fd < 0)
        return fd;
    p.fd = fd;
    void *stage;
    int r = posix_memalign(&stage, ALIGN, 2 * p.chunk);
    if (r) {
        close(fd);
        return -r;
    }
    p.buf[0] = stage;
    p.buf[1] = (char *)stage + p.chunk;
    pthread_mutex_init(&p.mu, NULL);
    pthread_cond_init(&p.cv, NULL);
    pthread_t t;
    r = -pthread_create(&t, NULL, io_thread, &p);
    int started = r == 0;
    for (size_t i = 0; r == 0 && i < p.nchunks; i++) {
        int b = (int)(i & 1);
        size_t off = i * p.chunk;
        size_t len = bytes - off < p.chunk ? bytes - off : p.chunk;
        if ((r = wait_for(&p, b, !writing)))
            break;
        if (writing) {
            memcpy(p.buf[b], mem + off, len);
            memset(p.buf[b] + len, 0, round_up(len) - len);
        } else {
            memcpy(mem + off, p.buf[b], len);
        }
        post(&p, b, writing, 0);
    }
    if (started) {
        if (r) /* stop the helper */
            post(&p, 0, 0, r);
        pthread_join(t, NULL);
    }
    if (!r)
        r = p.err;
    if (!r && writing) {
        if (p.direct && ftruncate(fd, (off_t)bytes) < 0)
            r = -errno;
        else if (fdatasync(fd) < 0)
            r = -errno;
    }
    pthread_cond_destroy(&p.cv);
    pthread_mutex_destroy(&p.mu);
    free(stage);
    if (close(fd) < 0 && !r)
        r = -errno;
    if (!r && ret_direct)
        *ret_direct = p.direct;
    return r;
}

int mt_offload_file_write(const char *path, const void *src, size_t bytes, size_t chunk,
                          int *ret_direct)
{
    return pipeline(path, (char *)src, bytes, chunk, 1, ret_direct);
}

int mt_offload_file_read(const char *path, void *dst, size_t bytes, size_t chunk,
                         int *ret_direct)
{
    return pipeline(path, dst, bytes, chunk, 0, ret_direct);
}
