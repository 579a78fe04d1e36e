/* reader: index, chunk loading and merged decoding of memtrace traces.
 *
 * Open: validate the 128-byte file header, then follow the chunk chain with
 * one pread of each 64-byte chunk header; every header is checked (magic,
 * header size, type, size >= 64, used/stored within the chunk, trailer
 * count) and the index keeps offset, type, tid, seq/time bases, used,
 * stored and how much of the payload the file really holds. A chunk that
 * runs past the end of the file is the last one read and marks the trace
 * partial; so does a packed file without a TRAILER. In a RAW file an
 * all-zero chunk header ends the chain: space the recorder reserved but
 * never wrote into.
 *
 * Iterate: every non-empty data chunk is a sorted run of its own (its
 * delta state starts afresh, and seqs within it do not decrease). The
 * runs are merged in two tiers: `order` lists the chunks by (seq_base, file
 * offset) -- the rank of a chunk -- and is consumed front to back; a binary
 * min-heap holds the active chunks (cursors) keyed by (seq, tie), tie =
 * nonevent << 63 | rank << 32 | cursor, so at equal seq events come before
 * non-event records and chunks break ties by rank. A pending chunk is
 * keyed by (seq_base, nonevent, rank), a lower bound of every record in it
 * given that its events have seq > seq_base (the recorder's seq_base is the
 * thread's last seq, and seqs start at 1), and is only activated (read,
 * CRC-checked, decompressed) when that key is below the heap's minimum, so
 * the merge stays exact while chunks are read lazily. (A file breaking that
 * rule is still read; such an event may just sort after a non-event record
 * of another chunk with the same key.) Chunks are not grouped by tid: a
 * thread's chunks need not be in file order (the recorder reuses FREE
 * space) and a tid can be reused by a later thread whose chunks restart at
 * seq_base 0.
 *
 * Parking: a thread's first chunk has seq_base 0, so it is activated at the
 * start even if its first event comes much later. When an active chunk's
 * next record is an event more than MTI_PARK_GAP seqs beyond every other
 * key, its buffer is released and only its position and delta state kept;
 * it is read again when its key reaches the top. This keeps the number of
 * loaded chunks to those overlapping in seq, at the cost of reading a chunk
 * twice now and then (at most once per MTI_PARK_GAP seqs).
 *
 * Seq deltas are added modulo 2^64: a record whose seq was taken before a
 * nested event's (a signal handler allocating in between) has a delta that
 * goes back; it is returned where its chunk puts it.
 *
 * The key of an active chunk is found by peeking the next record's tag and
 * seq delta; a record that fails to peek is keyed at the current seq and
 * reports its error when decoded.
 *
 * Memory: the index and order (one entry per chunk each), the cursors of
 * active chunks, a pool of at most MTI_POOL payload buffers, one buffer for
 * compressed input, a zstd context.
 * Every length read from the file is checked against the chunk and file
 * bounds or an MT_MAX_* limit before it is used, and every varint read is
 * bounds-checked, so no input makes the reader read out of bounds or
 * allocate more than the file size (or MT_MAX_CHUNK_PAYLOAD per chunk).
 *
 * Thread-safety: none inside one reader; readers share nothing.
 */
#include "reader.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <zstd.h>

#include "crc32.h"
#include "live-table.h"

_Static_assert(sizeof(struct mt_file_hdr) == MT_FILE_HDR_SIZE, "file header layout");
_Static_assert(sizeof(struct mt_chunk_hdr) == MT_CHUNK_HDR_SIZE, "chunk header layout");
_Static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__, "the trace format is little-endian");

#define MTI_POOL 8
#define MTI_MIN_BUF (64u * 1024)

enum { MTI_OK = 0, MTI_TRUNC = 1, MTI_BAD = 2 };

struct mti_chunk {
    uint64_t offset;
    uint64_t size;
    uint64_t used;
    uint64_t avail;     /* RAW: payload bytes in the file; ZSTD: stored, or 0 if cut */
    uint64_t seq_base;
    uint64_t time_base;
    uint32_t tid;
    uint32_t stored;
    uint32_t crc;
    uint16_t type;
    bool cut;
};

/* An active chunk. */
struct mti_cursor {
    const uint8_t *p;   /* next record (loaded) */
    const uint8_t *end; /* end of valid payload */
    uint8_t *buf;       /* payload buffer (from the pool), or NULL */
    size_t cap;
    uint64_t seq;       /* running delta state */
    uint64_t time;
    uint64_t addr;
    uint64_t ip;        /* of the last STACK record */
    uint64_t park_off;  /* parked: payload offset of the next record */
    uint32_t chunk;
    uint32_t rank;
    bool loaded;        /* payload is in buf */
    bool counted;       /* counted in bytes_done */
    bool cut;           /* payload may end inside a record (truncation) */
};

struct mti_heap_ent {
    uint64_t seq;
    uint64_t tie;
};

#define MTI_TIE_NONEVENT (1ull << 63)
#define MTI_TIE(nonevent, rank, cur) \
    (((nonevent) ? MTI_TIE_NONEVENT : 0) | ((uint64_t)(rank) << 32) | (uint32_t)(cur))
#define MTI_TIE_CUR(tie) ((uint32_t)(tie))
#define MTI_PARK_GAP (1ull << 18)

struct mt_reader {
    int fd;
    char *path;
    struct mt_trace_info info;

    struct mti_chunk *chunks;
    size_t nchunks;
    uint32_t *order;       /* data chunks by (seq_base, offset) */
    uint32_t norder;
    uint32_t next_pending; /* first rank not activated yet */
    struct mti_cursor *cur;
    uint32_t ncur;         /* cursors ever allocated */
    uint32_t capcur;
    uint32_t *free_cur;    /* released cursor indices */
    uint32_t nfree_cur;
    struct mti_heap_ent *heap;
    uint32_t heap_len;
    uint32_t heap_cap;

    uint8_t *zbuf;
    size_t zcap;
    ZSTD_DCtx *dctx;
    uint8_t *pool[MTI_POOL];
    size_t pool_cap[MTI_POOL];
    unsigned npool;

    uint64_t segs[MT_MAX_SEGMENTS][2];
    char why[96];

    uint64_t bytes_done;
    uint32_t resident;     /* cursors with a chunk loaded */
    uint32_t max_resident;
    bool partial;
    bool ended;
    int err_code;
    char errmsg[256];

    bool have_proc;
    struct mt_process_info proc;
};

/* ---- small helpers --------------------------------------------------------- */

/* Reads up to n bytes at off; returns the count (short only at end of file)
 * or -errno. */
static ssize_t pread_full(int fd, void *buf, size_t n, uint64_t off)
{
    size_t got = 0;
    while (got < n) {
        ssize_t k = pread(fd, (char *)buf + got, n - got, (off_t)(off + got));
        if (k < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        if (k == 0)
            break;
        got += (size_t)k;
    }
    return (ssize_t)got;
}

__attribute__((format(printf, 3, 4)))
static int reader_fail(struct mt_reader *r, int code, const char *fmt, ...)
{
    char detail[200];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(detail, sizeof detail, fmt, ap);
    va_end(ap);
    snprintf(r->errmsg, sizeof r->errmsg, "%s: %s", r->path, detail);
    r->err_code = code;
    return code;
}

#define CORRUPT(r, ...) reader_fail((r), -EBADMSG, "corrupt trace: " __VA_ARGS__)

static uint8_t *pool_get(struct mt_reader *r, size_t n, size_t *cap)
{
    int best = -1;
    for (unsigned i = 0; i < r->npool; i++)
        if (r->pool_cap[i] >= n && (best < 0 || r->pool_cap[i] < r->pool_cap[best]))
            best = (int)i;
    if (best < 0 && r->npool)
        best = (int)r->npool - 1;
    uint8_t *buf = NULL;
    size_t have = 0;
    if (best >= 0) {
        buf = r->pool[best];
        have = r->pool_cap[best];
        r->pool[best] = r->pool[r->npool - 1];
        r->pool_cap[best] = r->pool_cap[r->npool - 1];
        r->npool--;
    }
    if (have < n) {
        size_t want = n < MTI_MIN_BUF ? MTI_MIN_BUF : n;
        uint8_t *nb = realloc(buf, want);
        if (!nb) {
            free(buf);
            return NULL;
        }
        buf = nb;
        have = want;
    }
    *cap = have;
    return buf;
}

static void pool_put(struct mt_reader *r, uint8_t *buf, size_t cap)
{
    if (!buf)
        return;
    if (r->npool < MTI_POOL) {
        r->pool[r->npool] = buf;
        r->pool_cap[r->npool] = cap;
        r->npool++;
    } else {
        free(buf);
    }
}

/* ---- varints ----------------------------------------------------------------- */

/* Like mt_get_varint, but tells running out of input (MTI_TRUNC) from an
 * overlong or overflowing encoding (MTI_BAD), with a one-byte fast path. */
static inline int get_uv(const uint8_t **pp, const uint8_t *end, uint64_t *v)
{
    const uint8_t *p = *pp;
    if (__builtin_expect(p < end && *p < 0x80, 1)) {
        *v = *p;
        *pp = p + 1;
        return MTI_OK;
    }
    uint64_t x = 0;
    for (unsigned shift = 0;; shift += 7) {
        if (p >= end)
            return MTI_TRUNC;
        uint8_t b = *p++;
        if (shift == 63) {
            if (b > 1)
                return MTI_BAD;
            x |= (uint64_t)b << 63;
            break;
        }
        x |= (uint64_t)(b & 0x7f) << shift;
        if (!(b & 0x80))
            break;
    }
    *pp = p;
    *v = x;
    return MTI_OK;
}

/* ---- heap -------------------------------------------------------------------- */

static inline bool ent_less(const struct mti_heap_ent *a, const struct mti_heap_ent *b)
{
    return a->seq < b->seq || (a->seq == b->seq && a->tie < b->tie);
}

static void sift_down(struct mt_reader *r, uint32_t i)
{
    struct mti_heap_ent *h = r->heap;
    uint32_t n = r->heap_len;
    struct mti_heap_ent e = h[i];
    for (;;) {
        uint32_t c = 2 * i + 1;
        if (c >= n)
            break;
        if (c + 1 < n && ent_less(&h[c + 1], &h[c]))
            c++;
        if (!ent_less(&h[c], &e))
            break;
        h[i] = h[c];
        i = c;
    }
    h[i] = e;
}

static void sift_up(struct mt_reader *r, uint32_t i)
{
    struct mti_heap_ent *h = r->heap;
    struct mti_heap_ent e = h[i];
    while (i > 0) {
        uint32_t parent = (i - 1) / 2;
        if (!ent_less(&e, &h[parent]))
            break;
        h[i] = h[parent];
        i = parent;
    }
    h[i] = e;
}

static void heap_pop(struct mt_reader *r)
{
    r->heap[0] = r->heap[--r->heap_len];
    if (r->heap_len)
        sift_down(r, 0);
}

/* ---- open -------------------------------------------------------------------- */

static int read_header(struct mt_reader *r, struct mt_error *err)
{
    uint8_t hb[MT_FILE_HDR_SIZE];
    ssize_t n = pread_full(r->fd, hb, sizeof hb, 0);
    if (n < 0) {
        mti_error_set(err, "cannot read '%s': %s", r->path, strerror((int)-n));
        return (int)n;
    }
    if (n >= 8 && memcmp(hb, MT_FILE_MAGIC, 8) != 0) {
        mti_error_set(err, "%s: not a memtrace trace", r->path);
        return -EINVAL;
    }
    if ((size_t)n < sizeof hb) {
        mti_error_set(err, "%s: not a memtrace trace (too short)", r->path);
        return -EINVAL;
    }
    struct mt_file_hdr h;
    memcpy(&h, hb, sizeof h);
    if (h.version > MT_FORMAT_VERSION) {
        mti_error_set(err, "%s: format version %" PRIu32 " is newer than this memtrace reads (%u)",
                      r->path, h.version, MT_FORMAT_VERSION);
        return -ENOTSUP;
    }
    if (h.version == 0) {
        mti_error_set(err, "%s: not a memtrace trace (format version 0)", r->path);
        return -EINVAL;
    }
    if (h.hdr_size != MT_FILE_HDR_SIZE) {
        mti_error_set(err, "%s: corrupt trace: header size %" PRIu32 " at byte offset %zu (expected %u)",
                      r->path, h.hdr_size, offsetof(struct mt_file_hdr, hdr_size), MT_FILE_HDR_SIZE);
        return -EBADMSG;
    }
    if (h.time_shift >= 64) {
        mti_error_set(err, "%s: corrupt trace: time shift %" PRIu32 " at byte offset %zu",
                      r->path, h.time_shift, offsetof(struct mt_file_hdr, time_shift));
        return -EBADMSG;
    }
    struct mt_trace_info *in = &r->info;
    in->version = h.version;
    in->flags = h.flags;
    in->pid = h.pid;
    in->ppid = h.ppid;
    in->session_pid = h.session_pid;
    in->page_size = h.page_size;
    in->time_shift = h.time_shift;
    in->start_mono_ns = h.start_mono_ns;
    in->start_real_ns = h.start_real_ns;
    in->packed = (h.flags & MT_FILE_PACKED) != 0;
    return 0;
}

static bool all_zero(const void *p, size_t n)
{
    const uint8_t *b = p;
    for (size_t i = 0; i < n; i++)
        if (b[i])
            return false;
    return true;
}

static int walk_chunks(struct mt_reader *r, struct mt_error *err)
{
    const uint64_t fsize = r->info.file_size;
    uint64_t off = MT_FILE_HDR_SIZE;
    uint64_t data = 0;
    size_t cap = 0;
    int rc = 0;

#define WALK_CORRUPT(...)                                                               \
    do {                                                                                \
        rc = -EBADMSG;                                                                  \
        char d_[200];                                                                   \
        snprintf(d_, sizeof d_, __VA_ARGS__);                                           \
        mti_error_set(err, "%s: corrupt trace: %s", r->path, d_);                       \
        return rc;                                                                      \
    } while (0)

    while (off < fsize) {
        if (fsize - off < MT_CHUNK_HDR_SIZE) {
            r->partial = true; /* cut inside a chunk header */
            break;
        }
        struct mt_chunk_hdr h;
        ssize_t n = pread_full(r->fd, &h, sizeof h, off);
        if (n < 0) {
            mti_error_set(err, "cannot read '%s': %s", r->path, strerror((int)-n));
            return (int)n;
        }
        if ((size_t)n < sizeof h) { /* the file shrank under us */
            r->partial = true;
            break;
        }
        if (h.magic != MT_CHUNK_MAGIC) {
            if (!r->info.packed && all_zero(&h, sizeof h))
                break; /* reserved, never written */
            WALK_CORRUPT("bad chunk magic at byte offset %" PRIu64, off);
        }
        if (h.hdr_size != MT_CHUNK_HDR_SIZE)
            WALK_CORRUPT("chunk header size %u at byte offset %" PRIu64, (unsigned)h.hdr_size, off);
        if (h.type < MT_CHUNK_RAW || h.type > MT_CHUNK_TRAILER)
            WALK_CORRUPT("unknown chunk type %u at byte offset %" PRIu64, (unsigned)h.type, off);
        if (h.size < MT_CHUNK_HDR_SIZE)
            WALK_CORRUPT("chunk size %" PRIu64 " too small at byte offset %" PRIu64, h.size, off);
        bool cut = h.size > fsize - off;
        uint64_t room = h.size - MT_CHUNK_HDR_SIZE;
        uint64_t present = (cut ? fsize - off : h.size) - MT_CHUNK_HDR_SIZE;
        uint64_t avail = 0;
        switch (h.type) {
        case MT_CHUNK_RAW:
            if (h.used > room)
                WALK_CORRUPT("chunk payload length %" PRIu64 " exceeds its size %" PRIu64
                             " at byte offset %" PRIu64, h.used, h.size, off);
            avail = h.used < present ? h.used : present;
            data++;
            break;
        case MT_CHUNK_ZSTD:
            if (h.stored > room)
                WALK_CORRUPT("compressed length %" PRIu32 " exceeds the chunk size %" PRIu64
                             " at byte offset %" PRIu64, h.stored, h.size, off);
            if (h.used > MT_MAX_CHUNK_PAYLOAD)
                WALK_CORRUPT("chunk payload length %" PRIu64 " too large at byte offset %" PRIu64,
                             h.used, off);
            if ((h.stored == 0) != (h.used == 0))
                WALK_CORRUPT("compressed chunk lengths disagree at byte offset %" PRIu64, off);
            avail = h.stored <= present ? h.stored : 0;
            data++;
            break;
        case MT_CHUNK_FREE:
            break;
        case MT_CHUNK_TRAILER:
            if (cut)
                break;
            if (h.used != data)
                WALK_CORRUPT("trailer counts %" PRIu64 " data chunks but the file has %" PRIu64
                             " (byte offset %" PRIu64 ")", h.used, data, off);
            if (h.size != fsize - off)
                WALK_CORRUPT("data after the trailer at byte offset %" PRIu64, off + h.size);
            r->info.has_trailer = true;
            break;
        }
        if (r->nchunks == cap) {
            if (cap >= UINT32_MAX / 2)
                WALK_CORRUPT("too many chunks (byte offset %" PRIu64 ")", off);
            size_t ncap = cap ? cap * 2 : 64;
            struct mti_chunk *nc = realloc(r->chunks, ncap * sizeof *nc);
            if (!nc) {
                mti_error_set(err, "%s: out of memory", r->path);
                return -ENOMEM;
            }
            r->chunks = nc;
            cap = ncap;
        }
        r->chunks[r->nchunks++] = (struct mti_chunk){
            .offset = off, .size = h.size, .used = h.used, .avail = avail,
            .seq_base = h.seq_base, .time_base = h.time_base, .tid = h.tid,
            .stored = h.stored, .crc = h.crc, .type = h.type, .cut = cut,
        };
        if (cut) {
            r->partial = true;
            break;
        }
        off += h.size;
    }
#undef WALK_CORRUPT
    if (r->info.packed && !r->info.has_trailer)
        r->partial = true;
    r->info.chunk_count = r->nchunks;
    r->info.data_chunks = data;
    return rc;
}

static int rank_cmp_r(const void *pa, const void *pb, void *arg)
{
    const struct mti_chunk *chunks = arg;
    const struct mti_chunk *a = &chunks[*(const uint32_t *)pa];
    const struct mti_chunk *b = &chunks[*(const uint32_t *)pb];
    if (a->seq_base != b->seq_base)
        return a->seq_base < b->seq_base ? -1 : 1;
    return a->offset < b->offset ? -1 : a->offset > b->offset;
}

/* Lists the non-empty data chunks by rank and counts distinct tids. */
static int build_order(struct mt_reader *r, struct mt_error *err)
{
    struct mt_live_table tids;
    mt_live_table_init(&tids);
    int rc = 0;
    r->order = malloc((r->nchunks + 1) * sizeof *r->order);
    if (!r->order) {
        rc = -ENOMEM;
        goto out;
    }
    uint32_t n = 0;
    for (size_t i = 0; i < r->nchunks; i++) {
        const struct mti_chunk *c = &r->chunks[i];
        if ((c->type != MT_CHUNK_RAW && c->type != MT_CHUNK_ZSTD) || c->used == 0)
            continue;
        r->order[n++] = (uint32_t)i;
        struct mt_live_entry e = { .addr = c->tid };
        rc = mt_live_table_insert(&tids, &e, NULL);
        if (rc < 0)
            goto out;
    }
    r->norder = n;
    r->info.threads = (uint32_t)mt_live_table_count(&tids);
    qsort_r(r->order, n, sizeof *r->order, rank_cmp_r, r->chunks);
out:
    mt_live_table_destroy(&tids);
    if (rc < 0)
        mti_error_set(err, "%s: out of memory", r->path);
    return rc;
}

int mt_reader_open(const char *path, struct mt_reader **out, struct mt_error *err)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        int e = errno;
        mti_error_set(err, "cannot open '%s': %s", path, strerror(e));
        return -e;
    }
    struct stat st;
    int sr = fstat(fd, &st);
    if (sr < 0 || S_ISDIR(st.st_mode)) {
        int e = sr < 0 ? errno : EISDIR;
        mti_error_set(err, "cannot open '%s': %s", path, strerror(e));
        close(fd);
        return -e;
    }
    if (!S_ISREG(st.st_mode)) {
        mti_error_set(err, "%s: not a memtrace trace (not a regular file)", path);
        close(fd);
        return -EINVAL;
    }
    struct mt_reader *r = calloc(1, sizeof *r);
    char *p = strdup(path);
    if (!r || !p) {
        free(r);
        free(p);
        close(fd);
        mti_error_set(err, "%s: out of memory", path);
        return -ENOMEM;
    }
    r->fd = fd;
    r->path = p;
    r->info.file_size = (uint64_t)st.st_size;
    int rc = read_header(r, err);
    if (rc == 0)
        rc = walk_chunks(r, err);
    if (rc == 0)
        rc = build_order(r, err);
    if (rc < 0) {
        mt_reader_close(r);
        return rc;
    }
    *out = r;
    return 0;
}

void mt_reader_close(struct mt_reader *r)
{
    if (!r)
        return;
    for (uint32_t i = 0; i < r->ncur; i++)
        free(r->cur[i].buf);
    for (unsigned i = 0; i < r->npool; i++)
        free(r->pool[i]);
    free(r->order);
    free(r->cur);
    free(r->free_cur);
    free(r->heap);
    free(r->chunks);
    free(r->zbuf);
    ZSTD_freeDCtx(r->dctx);
    free((char *)r->proc.exe);
    free((char *)r->proc.argv);
    if (r->fd >= 0)
        close(r->fd);
    free(r->path);
    free(r);
}

/* ---- chunk loading ------------------------------------------------------------- */

static void cursor_release(struct mt_reader *r, struct mti_cursor *c)
{
    pool_put(r, c->buf, c->cap);
    c->buf = NULL;
    c->cap = 0;
    c->p = c->end = NULL;
    if (c->loaded)
        r->resident--;
    c->loaded = false;
}

/* Reads the payload of c's chunk into c->buf and resets the delta state. */
static int load_chunk(struct mt_reader *r, struct mti_cursor *cu)
{
    const struct mti_chunk *c = &r->chunks[cu->chunk];
    if (!cu->counted) {
        uint64_t in_file = r->info.file_size - c->offset;
        r->bytes_done += c->size < in_file ? c->size : in_file;
        cu->counted = true;
    }
    cu->seq = c->seq_base;
    cu->time = c->time_base;
    cu->addr = 0;
    cu->ip = 0;
    cu->loaded = true;
    if (++r->resident > r->max_resident)
        r->max_resident = r->resident;
    cu->cut = c->cut;
    cu->p = cu->end = NULL;
    if (c->avail == 0) { /* nothing readable: a cut ZSTD chunk */
        if (c->type == MT_CHUNK_ZSTD && c->cut)
            r->partial = true;
        return 0;
    }
    const uint64_t payload = c->offset + MT_CHUNK_HDR_SIZE;

    if (c->type == MT_CHUNK_RAW) {
        cu->buf = pool_get(r, (size_t)c->avail, &cu->cap);
        if (!cu->buf)
            return reader_fail(r, -ENOMEM, "out of memory");
        ssize_t n = pread_full(r->fd, cu->buf, (size_t)c->avail, payload);
        if (n < 0)
            return reader_fail(r, (int)n, "read error: %s", strerror((int)-n));
        if ((uint64_t)n < c->avail) {
            cu->cut = true; /* the file shrank since it was opened */
            r->partial = true;
        }
        cu->p = cu->buf;
        cu->end = cu->buf + n;
        return 0;
    }

    /* ZSTD */
    if (r->zcap < c->stored) {
        size_t want = c->stored < MTI_MIN_BUF ? MTI_MIN_BUF : c->stored;
        uint8_t *z = realloc(r->zbuf, want);
        if (!z)
            return reader_fail(r, -ENOMEM, "out of memory");
        r->zbuf = z;
        r->zcap = want;
    }
    ssize_t n = pread_full(r->fd, r->zbuf, c->stored, payload);
    if (n < 0)
        return reader_fail(r, (int)n, "read error: %s", strerror((int)-n));
    if ((uint64_t)n < c->stored) {
        r->partial = true;
        return 0;
    }
    if (mt_crc32(0, r->zbuf, c->stored) != c->crc)
        return CORRUPT(r, "CRC mismatch in the chunk at byte offset %" PRIu64, c->offset);
    unsigned long long fcs = ZSTD_getFrameContentSize(r->zbuf, c->stored);
    if (fcs == ZSTD_CONTENTSIZE_ERROR || (fcs != ZSTD_CONTENTSIZE_UNKNOWN && fcs != c->used))
        return CORRUPT(r, "compressed chunk at byte offset %" PRIu64 " does not hold %" PRIu64 " bytes",
                       c->offset, c->used);
    if (!r->dctx && !(r->dctx = ZSTD_createDCtx()))
        return reader_fail(r, -ENOMEM, "out of memory");
    cu->buf = pool_get(r, (size_t)c->used, &cu->cap);
    if (!cu->buf)
        return reader_fail(r, -ENOMEM, "out of memory");
    size_t d = ZSTD_decompressDCtx(r->dctx, cu->buf, (size_t)c->used, r->zbuf, c->stored);
    if (ZSTD_isError(d))
        return CORRUPT(r, "cannot decompress the chunk at byte offset %" PRIu64 ": %s", c->offset,
                       ZSTD_getErrorName(d));
    if (d != c->used)
        return CORRUPT(r, "compressed chunk at byte offset %" PRIu64 " holds %zu bytes, not %" PRIu64,
                       c->offset, d, c->used);
    cu->cut = false;
    cu->p = cu->buf;
    cu->end = cu->buf + d;
    return 0;
}

/* ---- decoding -------------------------------------------------------------------- */

#define GET(v)                                                                         \
    do {                                                                               \
        int rc_ = get_uv(&p, end, &(v));                                               \
        if (__builtin_expect(rc_ != MTI_OK, 0)) {                                      \
            rc = rc_;                                                                  \
            goto fail;                                                                 \
        }                                                                              \
    } while (0)

#define BAD(...)                                                                       \
    do {                                                                               \
        snprintf(r->why, sizeof r->why, __VA_ARGS__);                                  \
        return MTI_BAD;                                                                \
    } while (0)

#define NEED(len)                                                                      \
    do {                                                                               \
        if ((uint64_t)(end - p) < (len))                                               \
            return MTI_TRUNC;                                                          \
    } while (0)

static void save_process(struct mt_reader *r, const struct mt_record *rec)
{
    char *exe = malloc((size_t)rec->exe_len + 1);
    char *argv = malloc((size_t)rec->argv_len + 1);
    if (!exe || !argv) {
        free(exe);
        free(argv);
        return;
    }
    memcpy(exe, rec->exe, rec->exe_len);
    exe[rec->exe_len] = 0;
    memcpy(argv, rec->argv, rec->argv_len);
    argv[rec->argv_len] = 0;
    r->proc = (struct mt_process_info){ rec->pid, rec->ppid, exe, rec->exe_len, argv, rec->argv_len };
    r->have_proc = true;
}

/* Decodes the record at s->p into rec and advances s. MTI_OK, MTI_TRUNC
 * (input ends inside the record) or MTI_BAD (r->why says what). */
static int decode(struct mt_reader *r, struct mti_cursor *s, struct mt_record *rec)
{
    const uint8_t *p = s->p, *end = s->end;
    const unsigned shift = r->info.time_shift;
    uint8_t tag = *p++;
    unsigned type = tag >> 4, kind = tag & 15;
    uint64_t a, b, c;
    int rc;

    rec->type = (uint8_t)type;
    rec->kind = (uint8_t)kind;
    rec->tid = r->chunks[s->chunk].tid;

    switch (type) {
    case MT_REC_ALLOC:
    case MT_REC_FREE:
        if (type == MT_REC_ALLOC ? kind >= MT_ALLOC_KIND_COUNT : kind > MT_FREE_REALLOC)
            BAD("unknown %s kind %u", type == MT_REC_ALLOC ? "ALLOC" : "FREE", kind);
        GET(a);
        GET(b);
        GET(c);
        s->seq += a; /* wraps: a seq taken before a nested one goes back */
        s->time += b;
        s->addr += (uint64_t)mt_unzigzag(c);
        rec->addr = s->addr;
        if (type == MT_REC_ALLOC) {
            GET(rec->size);
            GET(rec->stack_id);
        }
        rec->seq = s->seq;
        rec->time_ns = s->time << shift;
        break;
    case MT_REC_MMAP:
    case MT_REC_MUNMAP:
        if (type == MT_REC_MMAP ? kind > MT_MAP_REMAP : kind > MT_UNMAP_REMAP)
            BAD("unknown %s kind %u", type == MT_REC_MMAP ? "MMAP" : "MUNMAP", kind);
        GET(a);
        GET(b);
        s->seq += a;
        s->time += b;
        GET(rec->addr);
        GET(rec->size);
        if (type == MT_REC_MMAP) {
            GET(a);
            GET(b);
            if (a > UINT32_MAX || b > UINT32_MAX)
                BAD("MMAP prot/flags out of range");
            rec->prot = (uint32_t)a;
            rec->flags = (uint32_t)b;
            GET(rec->stack_id);
        }
        rec->seq = s->seq;
        rec->time_ns = s->time << shift;
        break;
    case MT_REC_STACK:
        if (kind)
            BAD("unknown STACK kind %u", kind);
        GET(a);
        GET(b);
        GET(c);
        if (b == 0 || b > a)
            BAD("stack node %" PRIu64 " with parent delta %" PRIu64, a, b);
        rec->stack_id = a;
        rec->parent_id = a - b;
        s->ip += (uint64_t)mt_unzigzag(c);
        rec->ip = s->ip;
        goto untimed;
    case MT_REC_MODULE:
        if (kind > MT_MODULE_UNLOAD)
            BAD("unknown MODULE kind %u", kind);
        GET(rec->bias);
        rec->nsegs = 0;
        rec->build_id_len = rec->path_len = 0;
        rec->build_id = NULL;
        rec->path = NULL;
        rec->segs = r->segs;
        if (kind == MT_MODULE_LOAD) {
            GET(a);
            if (a > MT_MAX_SEGMENTS)
                BAD("module with %" PRIu64 " segments", a);
            for (unsigned i = 0; i < a; i++) {
                GET(r->segs[i][0]);
                GET(r->segs[i][1]);
            }
            rec->nsegs = (uint32_t)a;
            GET(b);
            if (b > MT_MAX_BUILD_ID)
                BAD("build id of %" PRIu64 " bytes", b);
            NEED(b);
            rec->build_id = p;
            rec->build_id_len = (uint32_t)b;
            p += b;
            GET(c);
            if (c > MT_MAX_PATH)
                BAD("module path of %" PRIu64 " bytes", c);
            NEED(c);
            rec->path = (const char *)p;
            rec->path_len = (uint32_t)c;
            p += c;
        }
        goto untimed;
    case MT_REC_RSS:
        if (kind > MT_RSS_HWM)
            BAD("unknown RSS kind %u", kind);
        GET(a);
        GET(rec->rss_bytes);
        s->time += a;
        rec->seq = s->seq;
        rec->time_ns = s->time << shift;
        break;
    case MT_REC_PROCESS:
        if (kind)
            BAD("unknown PROCESS kind %u", kind);
        GET(a);
        GET(b);
        if (a > UINT32_MAX || b > UINT32_MAX)
            BAD("PROCESS pid out of range");
        rec->pid = (uint32_t)a;
        rec->ppid = (uint32_t)b;
        GET(c);
        if (c > MT_MAX_PATH)
            BAD("executable path of %" PRIu64 " bytes", c);
        NEED(c);
        rec->exe = (const char *)p;
        rec->exe_len = (uint32_t)c;
        p += c;
        GET(c);
        if (c > MT_MAX_ARGV)
            BAD("argv of %" PRIu64 " bytes", c);
        NEED(c);
        rec->argv = (const char *)p;
        rec->argv_len = (uint32_t)c;
        p += c;
        if (!r->have_proc)
            save_process(r, rec);
        goto untimed;
    case MT_REC_END:
        if (kind > MT_END_UNDERSCORE_EXIT)
            BAD("unknown END kind %u", kind);
        GET(a);
        GET(rec->status);
        s->time += a;
        rec->seq = s->seq;
        rec->time_ns = s->time << shift;
        r->ended = true;
        break;
    case MT_REC_LOST:
        if (kind)
            BAD("unknown LOST kind %u", kind);
        GET(rec->lost);
        goto untimed;
    default:
        if (tag == 0)
            BAD("zero record tag");
        BAD("unknown record type %u (tag 0x%02x)", type, tag);
    }
    s->p = p;
    return MTI_OK;

untimed:
    rec->seq = s->seq;
    rec->time_ns = s->time << shift;
    s->p = p;
    return MTI_OK;

fail:
    if (rc == MTI_BAD)
        snprintf(r->why, sizeof r->why, "varint overflow");
    return rc;
}

#undef GET
#undef BAD
#undef NEED

/* The key of c's next record (c loaded, not exhausted); *event tells
 * whether it is an event. */
static struct mti_heap_ent cursor_key(const struct mti_cursor *c, uint32_t ci, bool *event)
{
    const uint8_t *p = c->p;
    unsigned type = *p++ >> 4;
    uint64_t d;
    if (type >= MT_REC_ALLOC && type <= MT_REC_MUNMAP && get_uv(&p, c->end, &d) == MTI_OK) {
        *event = true;
        return (struct mti_heap_ent){ c->seq + d, MTI_TIE(0, c->rank, ci) };
    }
    *event = false;
    return (struct mti_heap_ent){ c->seq, MTI_TIE(1, c->rank, ci) };
}

/* Places cursor ci after a record was taken from it (it is heap[0]:
 * at_top) or after its chunk was loaded (not in the heap yet): removes it
 * when exhausted, parks it when its next event is far ahead, re-keys it. */
static void settle(struct mt_reader *r, uint32_t ci, bool at_top)
{
    struct mti_cursor *c = &r->cur[ci];
    if (c->p == c->end) {
        cursor_release(r, c);
        r->free_cur[r->nfree_cur++] = ci;
        if (at_top)
            heap_pop(r);
        return;
    }
    bool event;
    struct mti_heap_ent k = cursor_key(c, ci, &event);
    if (event) {
        /* Smallest other key: the heap (minus this cursor) and the next
         * pending chunk. */
        bool have = false;
        uint64_t other = 0;
        for (uint32_t i = at_top ? 1 : 0; i < (at_top ? 3u : 1u) && i < r->heap_len; i++) {
            if (!have || r->heap[i].seq < other)
                other = r->heap[i].seq;
            have = true;
        }
        if (r->next_pending < r->norder) {
            uint64_t ps = r->chunks[r->order[r->next_pending]].seq_base;
            if (!have || ps < other)
                other = ps;
            have = true;
        }
        if (have && k.seq > other && k.seq - other > MTI_PARK_GAP) {
            c->park_off = (uint64_t)(c->p - c->buf);
            pool_put(r, c->buf, c->cap);
            c->buf = NULL;
            c->cap = 0;
            c->p = c->end = NULL;
            c->loaded = false;
            r->resident--;
        }
    }
    if (at_top) {
        r->heap[0] = k;
        sift_down(r, 0);
    } else {
        r->heap[r->heap_len++] = k;
        sift_up(r, r->heap_len - 1);
    }
}

/* Activates the chunk of rank r->next_pending: a cursor, its payload, and
 * a place in the heap. */
static int activate(struct mt_reader *r)
{
    uint32_t rank = r->next_pending++;
    uint32_t ci;
    if (r->nfree_cur) {
        ci = r->free_cur[--r->nfree_cur];
    } else {
        if (r->ncur == r->capcur) {
            uint32_t ncap = r->capcur ? r->capcur * 2 : 16;
            struct mti_cursor *nc = realloc(r->cur, ncap * sizeof *nc);
            if (!nc)
                return reader_fail(r, -ENOMEM, "out of memory");
            r->cur = nc;
            uint32_t *nf = realloc(r->free_cur, ncap * sizeof *nf);
            if (!nf)
                return reader_fail(r, -ENOMEM, "out of memory");
            r->free_cur = nf;
            struct mti_heap_ent *nh = realloc(r->heap, ncap * sizeof *nh);
            if (!nh)
                return reader_fail(r, -ENOMEM, "out of memory");
            r->heap = nh;
            r->capcur = r->heap_cap = ncap;
        }
        ci = r->ncur++;
    }
    struct mti_cursor *c = &r->cur[ci];
    *c = (struct mti_cursor){ .chunk = r->order[rank], .rank = rank };
    int rc = load_chunk(r, c);
    if (rc < 0)
        return rc;
    settle(r, ci, false);
    return 0;
}

/* Reads a parked cursor's chunk again and puts it back where it was. */
static int unpark(struct mt_reader *r, struct mti_cursor *c)
{
    uint64_t seq = c->seq, time = c->time, addr = c->addr, ip = c->ip, off = c->park_off;
    int rc = load_chunk(r, c);
    if (rc < 0)
        return rc;
    if (off > (uint64_t)(c->end - c->p)) /* the file changed under us */
        return reader_fail(r, -EIO, "the trace changed while it was read");
    c->p += off;
    c->seq = seq;
    c->time = time;
    c->addr = addr;
    c->ip = ip;
    return 0;
}

int mt_reader_next(struct mt_reader *r, struct mt_record *rec)
{
    if (r->err_code)
        return r->err_code;
    for (;;) {
        /* Activate pending chunks that may hold the next record. */
        if (r->next_pending < r->norder) {
            /* Every record of the chunk sorts after (seq_base, nonevent):
             * its events have seq > seq_base, its non-events at least
             * (seq_base, nonevent), and its rank is above every active one. */
            struct mti_heap_ent pk = {
                r->chunks[r->order[r->next_pending]].seq_base, MTI_TIE(1, r->next_pending, 0)
            };
            if (r->heap_len == 0 || ent_less(&pk, &r->heap[0])) {
                int rc = activate(r);
                if (rc < 0)
                    return rc;
                continue;
            }
        }
        if (r->heap_len == 0)
            return 0;
        uint32_t ci = MTI_TIE_CUR(r->heap[0].tie);
        struct mti_cursor *c = &r->cur[ci];
        if (!c->loaded) {
            int rc = unpark(r, c);
            if (rc < 0)
                return rc;
        }
        const uint8_t *start = c->p;
        int rc = decode(r, c, rec);
        if (__builtin_expect(rc == MTI_OK, 1)) {
            settle(r, ci, true);
            return 1;
        }
        const struct mti_chunk *ch = &r->chunks[c->chunk];
        if (rc == MTI_TRUNC && c->cut) {
            /* The file ends inside this record: the chunk ends here. */
            r->partial = true;
            c->p = c->end;
            settle(r, ci, true);
            continue;
        }
        uint64_t at = (uint64_t)(start - c->buf);
        const char *what = rc == MTI_TRUNC ? "record runs past the end of its chunk" : r->why;
        if (ch->type == MT_CHUNK_RAW)
            return CORRUPT(r, "%s at byte offset %" PRIu64, what, ch->offset + MT_CHUNK_HDR_SIZE + at);
        return CORRUPT(r, "%s at byte %" PRIu64 " of the compressed chunk at byte offset %" PRIu64,
                       what, at, ch->offset);
    }
}

/* ---- accessors ------------------------------------------------------------------- */

const char *mt_reader_error(const struct mt_reader *r)
{
    return r->err_code ? r->errmsg : "";
}

const struct mt_trace_info *mt_reader_info(const struct mt_reader *r)
{
    return &r->info;
}

bool mt_reader_partial(const struct mt_reader *r)
{
    return r->partial;
}

bool mt_reader_ended(const struct mt_reader *r)
{
    return r->ended;
}

const struct mt_process_info *mt_reader_process(const struct mt_reader *r)
{
    return r->have_proc ? &r->proc : NULL;
}

void mt_reader_progress(const struct mt_reader *r, uint64_t *done, uint64_t *total)
{
    *done = r->bytes_done;
    *total = r->info.file_size;
}

size_t mt_reader_chunk_count(const struct mt_reader *r)
{
    return r->nchunks;
}

int mt_reader_chunk(const struct mt_reader *r, size_t i, struct mt_chunk_info *out)
{
    if (i >= r->nchunks)
        return -ERANGE;
    const struct mti_chunk *c = &r->chunks[i];
    *out = (struct mt_chunk_info){
        .offset = c->offset, .size = c->size, .used = c->used,
        .avail = c->type == MT_CHUNK_RAW ? c->avail : 0,
        .seq_base = c->seq_base, .time_base = c->time_base, .tid = c->tid,
        .stored = c->stored, .crc = c->crc, .type = c->type, .cut = c->cut,
    };
    return 0;
}

uint32_t mt_reader_max_resident(const struct mt_reader *r)
{
    return r->max_resident;
}

int mt_reader_fd(const struct mt_reader *r)
{
    return r->fd;
}
