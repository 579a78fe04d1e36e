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
 * runs are merged in two tiers: `order` lists the chunks by (seq_base, tid,
 * file offset) -- the rank of a chunk -- and is consumed front to back; a
 * binary min-heap holds the active chunks (cursors) keyed by (seq, tie),
 * tie = nonevent << 63 | rank << 32 | cursor, so at equal seq events come
 * before non-event records and chunks break ties by rank. The tid comes
 * before the file offset so that file offsets only order chunks of one
 * seq_base and tid (pack writes chunks in the order they complete, keeping
 * just those in their order). A
 * pending chunk is keyed by (seq_base, nonevent, rank), a lower bound of
 * every record in it given that its events have seq > seq_base (the
 * recorder's seq_base is the thread's last seq, and seqs start at 1), and
 * is only activated (read, CRC-checked, decompressed) when that key is
 * below the heap's minimum, so the merge stays exact while chunks are read
 * lazily. (A file breaking that rule is still read; such an event may just
 * sort after a non-event record of another chunk with the same key.)
 * Chunks are not grouped by tid: a thread's chunks need not be in file
 * order (the recorder reuses FREE space) and a tid can be reused by a later
 * thread whose chunks restart at seq_base 0.
 *
 * Parking: a thread's first chunk has seq_base 0, so it is activated at the
 * start even if its first event comes much later. When an active chunk's
 * next record is an event more than MTI_PARK_GAP seqs beyond every other
 * key, its buffer is released and only its position and delta state kept;
 * it is read again when its key reaches the top. This keeps the number of
 * loaded chunks to those overlapping in seq, at the cost of reading a chunk
 * twice now and then (at most once per MTI_PARK_GAP seqs).
 *
 * Streams: a cursor reads through MT_STREAM_COUNT positions, one per field
 * class. For a RAW chunk only position 0 is used (every class reads the
 * one run of records); for a packed (ZSTD) chunk the payload is split at
 * load into its streams (lengths checked to tile the payload exactly) and
 * class c reads position c. decode() is written once over a `packed`
 * constant, so each chunk kind gets its own specialised copy and RAW
 * decoding keeps a single pointer in a register. A packed chunk ends when
 * its TAG stream does, and then every other stream must be used up too.
 *
 * Heap normalization (see reader.h): BLOCK_ALLOC / BLOCK_FREE are turned
 * into ALLOC / FREE with their block (REF gives the allocation's seq);
 * ALLOC / FREE with an address go through `blocks`, a live-table address
 * -> block updated in merged order. An ALLOC at a live address is decoded
 * whole, kept in `pending`, and preceded by the IMPLICIT free of the old
 * block it makes up; the next call returns the pending ALLOC before
 * touching the heap (it is the top of the merge anyway).
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
 * compressed input, a zstd context, and the address map (one entry per live
 * heap block that has an address: RAW traces only, unless pack kept
 * addresses).
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

/* An active chunk. RAW: p[0]..end[0] is the rest of the payload and the
 * other positions are unused; packed: p[c]..end[c] is the rest of stream c
 * (p[MT_STREAM_TAG] the next record's tag). */
struct mti_cursor {
    const uint8_t *p[MT_STREAM_COUNT];   /* loaded: next byte of each stream */
    const uint8_t *end[MT_STREAM_COUNT];
    uint8_t *buf;       /* payload buffer (from the pool), or NULL */
    size_t cap;
    uint64_t seq;       /* running delta state */
    uint64_t time;
    uint64_t addr;
    uint64_t ip;        /* of the last STACK record */
    uint64_t park_off[MT_STREAM_COUNT]; /* parked: buffer offsets of p[] */
    uint64_t tag_base;  /* payload offset of the TAG stream (records count) */
    uint32_t chunk;
    uint32_t rank;
    bool packed;        /* a ZSTD chunk: fields come from their streams */
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
    uint64_t pending_seq;  /* its seq_base, UINT64_MAX when none is left */
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
    char why[128];

    struct mt_live_table blocks; /* address -> block of live heap blocks */
    struct mt_record pending;    /* an ALLOC to return next */
    bool have_pending;

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

/* Places key e at slot i (whose old entry is being replaced) and moves it
 * down. The key comes in a register: writing it to the heap first and
 * reading it straight back stalls on the store. */
static void sift_down_key(struct mt_reader *r, uint32_t i, struct mti_heap_ent e)
{
    struct mti_heap_ent *h = r->heap;
    uint32_t n = r->heap_len;
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
    struct mti_heap_ent last = r->heap[--r->heap_len];
    if (r->heap_len)
        sift_down_key(r, 0, last);
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
    if (a->tid != b->tid)
        return a->tid < b->tid ? -1 : 1;
    return a->offset < b->offset ? -1 : a->offset > b->offset;
}

/* Lists the non-empty data chunks by rank, (seq_base, tid, offset), and
 * counts distinct tids. */
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
        struct mt_live_entry e = { .key = c->tid };
        rc = mt_live_table_insert(&tids, &e, NULL);
        if (rc < 0)
            goto out;
    }
    r->norder = n;
    r->info.threads = (uint32_t)mt_live_table_count(&tids);
    qsort_r(r->order, n, sizeof *r->order, rank_cmp_r, r->chunks);
    r->pending_seq = n ? r->chunks[r->order[0]].seq_base : UINT64_MAX;
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
    mt_live_table_destroy(&r->blocks);
    free((char *)r->proc.exe);
    free((char *)r->proc.argv);
    if (r->fd >= 0)
        close(r->fd);
    free(r->path);
    free(r);
}

/* ---- chunk loading ------------------------------------------------------------- */

static const char *const stream_name[MT_STREAM_COUNT] = {
    "TAG", "SEQ", "TIME", "ADDR", "SIZE", "STACK", "REF", "MISC",
};

static void cursor_release(struct mt_reader *r, struct mti_cursor *c)
{
    pool_put(r, c->buf, c->cap);
    c->buf = NULL;
    c->cap = 0;
    for (unsigned i = 0; i < MT_STREAM_COUNT; i++)
        c->p[i] = c->end[i] = NULL;
    if (c->loaded)
        r->resident--;
    c->loaded = false;
}

/* Splits the decompressed payload buf[0..n) of a packed chunk into its
 * streams: MT_STREAM_COUNT varint lengths, then the streams, which must
 * fill the rest exactly. */
static int split_streams(struct mt_reader *r, struct mti_cursor *cu, size_t n)
{
    const struct mti_chunk *c = &r->chunks[cu->chunk];
    const uint8_t *p = cu->buf, *end = cu->buf + n;
    uint64_t len[MT_STREAM_COUNT], total = 0;
    for (unsigned i = 0; i < MT_STREAM_COUNT; i++) {
        if (get_uv(&p, end, &len[i]) != MTI_OK)
            return CORRUPT(r, "bad length of the %s stream in the compressed chunk at byte offset %" PRIu64,
                           stream_name[i], c->offset);
        total += len[i] > n ? n + 1 : len[i]; /* no overflow: each term <= n + 1 */
    }
    if (total != (uint64_t)(end - p))
        return CORRUPT(r, "stream lengths add up to %" PRIu64 " bytes, not the %zu after them, in the"
                       " compressed chunk at byte offset %" PRIu64, total, (size_t)(end - p), c->offset);
    if (len[MT_STREAM_TAG] == 0 && total != 0)
        return CORRUPT(r, "streams without records in the compressed chunk at byte offset %" PRIu64,
                       c->offset);
    cu->tag_base = (uint64_t)(p - cu->buf);
    for (unsigned i = 0; i < MT_STREAM_COUNT; i++) {
        cu->p[i] = p;
        p += len[i];
        cu->end[i] = p;
    }
    return 0;
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
    cu->packed = c->type == MT_CHUNK_ZSTD;
    if (++r->resident > r->max_resident)
        r->max_resident = r->resident;
    cu->cut = c->cut;
    for (unsigned i = 0; i < MT_STREAM_COUNT; i++)
        cu->p[i] = cu->end[i] = NULL;
    cu->tag_base = 0;
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
        cu->p[0] = cu->buf;
        cu->end[0] = cu->buf + n;
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
    return split_streams(r, cu, d);
}

/* ---- decoding -------------------------------------------------------------------- */

/* Position of class `cls`: its own stream in a packed chunk, the one run of
 * records in a RAW chunk. */
#define S(cls) (packed ? (cls) : 0)

#define GET(cls, v)                                                                    \
    do {                                                                               \
        int rc_ = get_uv(&p[S(cls)], end[S(cls)], &(v));                               \
        if (__builtin_expect(rc_ != MTI_OK, 0)) {                                      \
            rc = rc_;                                                                  \
            bad = (cls);                                                               \
            goto fail;                                                                 \
        }                                                                              \
    } while (0)

#define BAD(...)                                                                       \
    do {                                                                               \
        snprintf(r->why, sizeof r->why, __VA_ARGS__);                                  \
        return MTI_BAD;                                                                \
    } while (0)

/* `len` bytes of a byte string (in MISC) at p[S(MT_STREAM_MISC)]. */
#define NEED(len)                                                                      \
    do {                                                                               \
        if ((uint64_t)(end[S(MT_STREAM_MISC)] - p[S(MT_STREAM_MISC)]) < (len)) {       \
            rc = MTI_TRUNC;                                                            \
            bad = MT_STREAM_MISC;                                                      \
            goto fail;                                                                 \
        }                                                                              \
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

/* Decodes the record at s's positions into rec and advances s. MTI_OK,
 * MTI_TRUNC (input ends inside the record) or MTI_BAD (r->why says what);
 * a failure stops the chunk (the reader) so s need not be kept intact then.
 * Heap records come out normalized except for the address map (see
 * normalize). `packed` is a constant at each call site, so this is compiled
 * once per chunk kind. */
static inline __attribute__((always_inline)) int
decode(struct mt_reader *r, struct mti_cursor *s, struct mt_record *rec, const bool packed)
{
    /* Local copies, indexed by constants only so that they live in
     * registers: no loops over them. */
    const uint8_t *p[MT_STREAM_COUNT], *end[MT_STREAM_COUNT];
#define COPY_IN(i) (p[i] = s->p[i], end[i] = s->end[i])
    COPY_IN(0);
    if (packed) {
        COPY_IN(1), COPY_IN(2), COPY_IN(3), COPY_IN(4), COPY_IN(5), COPY_IN(6), COPY_IN(7);
    }
#undef COPY_IN
    const unsigned shift = r->info.time_shift;
    uint8_t tag = *p[0]++;
    unsigned type = tag >> 4, kind = tag & 15;
    uint64_t seq = s->seq, time = s->time;
    uint64_t a, b, c;
    int rc;
    unsigned bad = 0;

    rec->type = (uint8_t)type;
    rec->kind = (uint8_t)kind;
    rec->tid = r->chunks[s->chunk].tid;
    rec->chunk = s->chunk;

    switch (type) {
    case MT_REC_ALLOC:
    case MT_REC_FREE:
        if (type == MT_REC_ALLOC ? kind >= MT_ALLOC_KIND_COUNT : kind > MT_FREE_REALLOC)
            BAD("unknown %s kind %u", type == MT_REC_ALLOC ? "ALLOC" : "FREE", kind);
        GET(MT_STREAM_SEQ, a);
        GET(MT_STREAM_TIME, b);
        GET(MT_STREAM_ADDR, c);
        seq += a; /* wraps: a seq taken before a nested one goes back */
        time += b;
        rec->addr = s->addr + (uint64_t)mt_unzigzag(c);
        rec->has_addr = true;
        if (type == MT_REC_ALLOC) {
            GET(MT_STREAM_SIZE, rec->size);
            GET(MT_STREAM_STACK, rec->stack_id);
        }
        s->addr = rec->addr;
        goto timed;
    case MT_REC_BLOCK_ALLOC:
    case MT_REC_BLOCK_FREE:
        if (!packed)
            BAD("%s record in a RAW chunk", type == MT_REC_BLOCK_ALLOC ? "BLOCK_ALLOC" : "BLOCK_FREE");
        if (type == MT_REC_BLOCK_ALLOC ? kind >= MT_ALLOC_KIND_COUNT : kind > MT_FREE_IMPLICIT)
            BAD("unknown %s kind %u", type == MT_REC_BLOCK_ALLOC ? "BLOCK_ALLOC" : "BLOCK_FREE",
                kind);
        GET(MT_STREAM_SEQ, a);
        GET(MT_STREAM_TIME, b);
        seq += a;
        time += b;
        rec->has_addr = false;
        rec->addr = 0;
        if (type == MT_REC_BLOCK_ALLOC) {
            GET(MT_STREAM_SIZE, rec->size);
            GET(MT_STREAM_STACK, rec->stack_id);
            rec->type = MT_REC_ALLOC;
            rec->block = seq;
        } else {
            GET(MT_STREAM_REF, c);
            rec->type = MT_REC_FREE;
            rec->block = seq - c;
        }
        goto timed;
    case MT_REC_MMAP:
    case MT_REC_MUNMAP:
        if (type == MT_REC_MMAP ? kind > MT_MAP_REMAP : kind > MT_UNMAP_REMAP)
            BAD("unknown %s kind %u", type == MT_REC_MMAP ? "MMAP" : "MUNMAP", kind);
        GET(MT_STREAM_SEQ, a);
        GET(MT_STREAM_TIME, b);
        seq += a;
        time += b;
        GET(MT_STREAM_ADDR, rec->addr);
        GET(MT_STREAM_SIZE, rec->size);
        rec->has_addr = true;
        if (type == MT_REC_MMAP) {
            GET(MT_STREAM_MISC, a);
            GET(MT_STREAM_MISC, b);
            if (a > UINT32_MAX || b > UINT32_MAX)
                BAD("MMAP prot/flags out of range");
            rec->prot = (uint32_t)a;
            rec->flags = (uint32_t)b;
            GET(MT_STREAM_STACK, rec->stack_id);
        }
        goto timed;
    case MT_REC_STACK:
        if (kind)
            BAD("unknown STACK kind %u", kind);
        GET(MT_STREAM_STACK, a);
        GET(MT_STREAM_STACK, b);
        GET(MT_STREAM_ADDR, c);
        if (b == 0 || b > a)
            BAD("stack node %" PRIu64 " with parent delta %" PRIu64, a, b);
        rec->stack_id = a;
        rec->parent_id = a - b;
        rec->ip = s->ip + (uint64_t)mt_unzigzag(c);
        s->ip = rec->ip;
        goto done;
    case MT_REC_MODULE:
        if (kind > MT_MODULE_UNLOAD)
            BAD("unknown MODULE kind %u", kind);
        GET(MT_STREAM_MISC, rec->bias);
        rec->nsegs = 0;
        rec->build_id_len = rec->path_len = 0;
        rec->build_id = NULL;
        rec->path = NULL;
        rec->segs = r->segs;
        if (kind == MT_MODULE_LOAD) {
            GET(MT_STREAM_MISC, a);
            if (a > MT_MAX_SEGMENTS)
                BAD("module with %" PRIu64 " segments", a);
            for (unsigned i = 0; i < a; i++) {
                GET(MT_STREAM_MISC, r->segs[i][0]);
                GET(MT_STREAM_MISC, r->segs[i][1]);
            }
            rec->nsegs = (uint32_t)a;
            GET(MT_STREAM_MISC, b);
            if (b > MT_MAX_BUILD_ID)
                BAD("build id of %" PRIu64 " bytes", b);
            NEED(b);
            rec->build_id = p[S(MT_STREAM_MISC)];
            rec->build_id_len = (uint32_t)b;
            p[S(MT_STREAM_MISC)] += b;
            GET(MT_STREAM_MISC, c);
            if (c > MT_MAX_PATH)
                BAD("module path of %" PRIu64 " bytes", c);
            NEED(c);
            rec->path = (const char *)p[S(MT_STREAM_MISC)];
            rec->path_len = (uint32_t)c;
            p[S(MT_STREAM_MISC)] += c;
        }
        goto done;
    case MT_REC_RSS:
        if (kind > MT_RSS_HWM)
            BAD("unknown RSS kind %u", kind);
        GET(MT_STREAM_TIME, a);
        GET(MT_STREAM_MISC, rec->rss_bytes);
        time += a;
        goto done;
    case MT_REC_PROCESS:
        if (kind)
            BAD("unknown PROCESS kind %u", kind);
        GET(MT_STREAM_MISC, a);
        GET(MT_STREAM_MISC, b);
        if (a > UINT32_MAX || b > UINT32_MAX)
            BAD("PROCESS pid out of range");
        rec->pid = (uint32_t)a;
        rec->ppid = (uint32_t)b;
        GET(MT_STREAM_MISC, c);
        if (c > MT_MAX_PATH)
            BAD("executable path of %" PRIu64 " bytes", c);
        NEED(c);
        rec->exe = (const char *)p[S(MT_STREAM_MISC)];
        rec->exe_len = (uint32_t)c;
        p[S(MT_STREAM_MISC)] += c;
        GET(MT_STREAM_MISC, c);
        if (c > MT_MAX_ARGV)
            BAD("argv of %" PRIu64 " bytes", c);
        NEED(c);
        rec->argv = (const char *)p[S(MT_STREAM_MISC)];
        rec->argv_len = (uint32_t)c;
        p[S(MT_STREAM_MISC)] += c;
        if (!r->have_proc)
            save_process(r, rec);
        goto done;
    case MT_REC_END:
        if (kind > MT_END_UNDERSCORE_EXIT)
            BAD("unknown END kind %u", kind);
        GET(MT_STREAM_TIME, a);
        GET(MT_STREAM_MISC, rec->status);
        time += a;
        r->ended = true;
        goto done;
    case MT_REC_LOST:
        if (kind)
            BAD("unknown LOST kind %u", kind);
        GET(MT_STREAM_MISC, rec->lost);
        goto done;
    case MT_REC_MARK:
        if (r->info.version < 2)
            BAD("MARK record in a version %u trace", r->info.version);
        rec->has_addr = false;
        rec->addr = 0;
        if (kind == MT_MARK_STRING) {
            GET(MT_STREAM_MISC, rec->value);
            GET(MT_STREAM_MISC, c);
            if (rec->value == 0 || rec->value > UINT32_MAX)
                BAD("string id %" PRIu64, rec->value);
            if (c > MT_MAX_STRING)
                BAD("string of %" PRIu64 " bytes", c);
            NEED(c);
            rec->str = (const char *)p[S(MT_STREAM_MISC)];
            rec->str_len = (uint32_t)c;
            p[S(MT_STREAM_MISC)] += c;
            goto done;
        }
        if (kind > MT_MARK_TAG_BLOCK)
            BAD("unknown MARK kind %u", kind);
        if (kind == MT_MARK_TAG_BLOCK && !packed)
            BAD("TAG_BLOCK record in a RAW chunk");
        GET(MT_STREAM_SEQ, a);
        GET(MT_STREAM_TIME, b);
        seq += a;
        time += b;
        rec->value = 0;
        switch (kind) {
        case MT_MARK_PHASE_PUSH:
        case MT_MARK_SCOPE_PUSH:
        case MT_MARK_STEP:
            GET(MT_STREAM_MISC, rec->value);
            break;
        case MT_MARK_TAG:
            GET(MT_STREAM_ADDR, rec->addr);
            GET(MT_STREAM_MISC, rec->value);
            GET(MT_STREAM_MISC, c);
            if (c > MT_TAG_GPU)
                BAD("unknown TAG space %" PRIu64, c);
            rec->space = (uint32_t)c;
            rec->has_addr = true;
            break;
        case MT_MARK_TAG_BLOCK:
            GET(MT_STREAM_REF, c);
            GET(MT_STREAM_MISC, rec->value);
            rec->block = seq - c;
            rec->space = MT_TAG_HOST;
            break;
        }
        goto timed;
    case MT_REC_GPU:
        if (r->info.version < 2)
            BAD("GPU record in a version %u trace", r->info.version);
        if (kind > MT_GPU_OOM)
            BAD("unknown GPU kind %u", kind);
        GET(MT_STREAM_SEQ, a);
        GET(MT_STREAM_TIME, b);
        seq += a;
        time += b;
        rec->has_addr = kind != MT_GPU_OOM;
        rec->addr = rec->size = rec->stream = rec->result = 0;
        rec->stack_id = 0;
        if (kind != MT_GPU_OOM)
            GET(MT_STREAM_ADDR, rec->addr);
        if (kind != MT_GPU_FREE)
            GET(MT_STREAM_SIZE, rec->size);
        GET(MT_STREAM_MISC, a);
        if (a > UINT32_MAX)
            BAD("GPU device %" PRIu64 " out of range", a);
        rec->device = (uint32_t)a;
        if (kind == MT_GPU_ALLOC)
            GET(MT_STREAM_MISC, rec->stream);
        GET(MT_STREAM_MISC, a);
        GET(MT_STREAM_MISC, b);
        if (a >= MT_GPU_API_COUNT || b >= MT_GPU_SPACE_COUNT)
            BAD("GPU api %" PRIu64 " or space %" PRIu64 " unknown", a, b);
        rec->api = (uint32_t)a;
        rec->space = (uint32_t)b;
        if (kind == MT_GPU_OOM)
            GET(MT_STREAM_MISC, rec->result);
        if (kind != MT_GPU_FREE)
            GET(MT_STREAM_STACK, rec->stack_id);
        goto timed;
    default:
        if (tag == 0)
            BAD("zero record tag");
        BAD("unknown record type %u (tag 0x%02x)", type, tag);
    }

timed:
    s->seq = seq;
done:
    /* Events set s->seq above; the others take the seq of the event
     * before them. */
    rec->seq = s->seq;
    s->time = time;
    rec->time_ns = time << shift;
    rec->chunk_last = p[0] == end[0];
    s->p[0] = p[0];
    if (packed) {
#define LEFT(i)                                                                        \
    if (rec->chunk_last && p[i] != end[i])                                             \
        BAD("%zu bytes left in the %s stream after the last record",                   \
            (size_t)(end[i] - p[i]), stream_name[i]);                                  \
    s->p[i] = p[i];
        LEFT(1) LEFT(2) LEFT(3) LEFT(4) LEFT(5) LEFT(6) LEFT(7)
#undef LEFT
    }
    return MTI_OK;

fail:
    if (packed)
        snprintf(r->why, sizeof r->why, rc == MTI_BAD ? "varint overflow in the %s stream"
                                                      : "the %s stream ends inside the record",
                 stream_name[bad]);
    else if (rc == MTI_BAD)
        snprintf(r->why, sizeof r->why, "varint overflow");
    return rc;
}

#undef S
#undef GET
#undef BAD
#undef NEED

static __attribute__((noinline)) int decode_raw(struct mt_reader *r, struct mti_cursor *s,
                                                struct mt_record *rec)
{
    return decode(r, s, rec, false);
}

/* The packed heap records, nearly all of a big trace, without decode's
 * copies of every stream: reads only the streams they use and commits
 * nothing unless the whole record is there, well formed, and not its
 * chunk's last (whose end checks decode does). true if it decoded rec. */
static inline bool decode_block(const struct mt_reader *r, struct mti_cursor *s,
                                struct mt_record *rec)
{
    const uint8_t *t = s->p[MT_STREAM_TAG];
    if (s->end[MT_STREAM_TAG] - t < 2)
        return false;
    unsigned tag = *t, type = tag >> 4, kind = tag & 15;
    const uint8_t *ps = s->p[MT_STREAM_SEQ], *pt = s->p[MT_STREAM_TIME];
    uint64_t a, b, c, d, seq;
    if (type == MT_REC_BLOCK_ALLOC) {
        const uint8_t *pz = s->p[MT_STREAM_SIZE], *pk = s->p[MT_STREAM_STACK];
        if (kind >= MT_ALLOC_KIND_COUNT || get_uv(&ps, s->end[MT_STREAM_SEQ], &a) ||
            get_uv(&pt, s->end[MT_STREAM_TIME], &b) || get_uv(&pz, s->end[MT_STREAM_SIZE], &c) ||
            get_uv(&pk, s->end[MT_STREAM_STACK], &d))
            return false;
        s->p[MT_STREAM_SIZE] = pz;
        s->p[MT_STREAM_STACK] = pk;
        seq = s->seq + a;
        rec->type = MT_REC_ALLOC;
        rec->block = seq;
        rec->size = c;
        rec->stack_id = d;
    } else if (type == MT_REC_BLOCK_FREE) {
        const uint8_t *pf = s->p[MT_STREAM_REF];
        if (kind > MT_FREE_IMPLICIT || get_uv(&ps, s->end[MT_STREAM_SEQ], &a) ||
            get_uv(&pt, s->end[MT_STREAM_TIME], &b) || get_uv(&pf, s->end[MT_STREAM_REF], &c))
            return false;
        s->p[MT_STREAM_REF] = pf;
        seq = s->seq + a;
        rec->type = MT_REC_FREE;
        rec->block = seq - c;
    } else {
        return false;
    }
    s->p[MT_STREAM_TAG] = t + 1;
    s->p[MT_STREAM_SEQ] = ps;
    s->p[MT_STREAM_TIME] = pt;
    s->seq = seq;
    s->time += b;
    rec->kind = (uint8_t)kind;
    rec->has_addr = false;
    rec->chunk_last = false;
    rec->tid = r->chunks[s->chunk].tid;
    rec->chunk = s->chunk;
    rec->seq = seq;
    rec->addr = 0;
    rec->time_ns = s->time << r->info.time_shift;
    return true;
}

/* Kept out of line so that decode's set-up stays off decode_block's path. */
static __attribute__((noinline)) int decode_packed_any(struct mt_reader *r, struct mti_cursor *s,
                                                       struct mt_record *rec)
{
    return decode(r, s, rec, true);
}

static inline int decode_packed(struct mt_reader *r, struct mti_cursor *s, struct mt_record *rec)
{
    if (decode_block(r, s, rec))
        return MTI_OK;
    return decode_packed_any(r, s, rec);
}

/* Finds the block of a heap record that has an address, in merged order:
 * an ALLOC maps its address to its block, a FREE takes its address out.
 * An ALLOC at a live address becomes pending and rec the IMPLICIT free of
 * the old block. 0 or -ENOMEM. */
static int normalize(struct mt_reader *r, struct mt_record *rec)
{
    if (rec->type == MT_REC_FREE) {
        struct mt_live_entry old;
        rec->block = mt_live_table_remove(&r->blocks, rec->addr, &old) ? old.value : 0;
        return 0;
    }
    rec->block = rec->seq;
    struct mt_live_entry e = { rec->addr, rec->seq }, old;
    int k = mt_live_table_insert(&r->blocks, &e, &old);
    if (k <= 0)
        return k;
    r->pending = *rec;
    r->have_pending = true;
    rec->type = MT_REC_FREE;
    rec->kind = MT_FREE_IMPLICIT;
    rec->block = old.value;
    rec->chunk_last = false;
    return 0;
}

/* The key of c's next record (c loaded, not exhausted); *event tells
 * whether it is an event. */
static struct mti_heap_ent cursor_key(const struct mti_cursor *c, uint32_t ci, bool *event)
{
    unsigned type = *c->p[0] >> 4;
    const unsigned sc = c->packed ? MT_STREAM_SEQ : 0;
    const uint8_t *p = c->packed ? c->p[sc] : c->p[0] + 1;
    uint64_t d;
    if (((type >= MT_REC_ALLOC && type <= MT_REC_MUNMAP) || type == MT_REC_BLOCK_ALLOC ||
         type == MT_REC_BLOCK_FREE || type == MT_REC_GPU ||
         (type == MT_REC_MARK && (*c->p[0] & 15) != MT_MARK_STRING)) &&
        get_uv(&p, c->end[sc], &d) == MTI_OK) {
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
    if (c->p[0] == c->end[0]) {
        cursor_release(r, c);
        r->free_cur[r->nfree_cur++] = ci;
        if (at_top)
            heap_pop(r);
        return;
    }
    bool event;
    struct mti_heap_ent k = cursor_key(c, ci, &event);
    /* Taken from the top, c's last key was the smallest, so no other key is
     * below c->seq: a next event within MTI_PARK_GAP of it cannot be far
     * ahead of the others, and the common case skips the search. */
    if (event && (!at_top || k.seq - c->seq > MTI_PARK_GAP)) {
        /* Smallest other key: the heap (minus this cursor) and the next
         * pending chunk. */
        bool have = false;
        uint64_t other = 0;
        for (uint32_t i = at_top ? 1 : 0; i < (at_top ? 3u : 1u) && i < r->heap_len; i++) {
            if (!have || r->heap[i].seq < other)
                other = r->heap[i].seq;
            have = true;
        }
        if (r->pending_seq != UINT64_MAX) {
            if (!have || r->pending_seq < other)
                other = r->pending_seq;
            have = true;
        }
        if (have && k.seq > other && k.seq - other > MTI_PARK_GAP) {
            for (unsigned i = 0; i < MT_STREAM_COUNT; i++) {
                c->park_off[i] = c->p[i] ? (uint64_t)(c->p[i] - c->buf) : 0;
                c->p[i] = c->end[i] = NULL;
            }
            pool_put(r, c->buf, c->cap);
            c->buf = NULL;
            c->cap = 0;
            c->loaded = false;
            r->resident--;
        }
    }
    if (at_top) {
        if (r->heap_len == 1)
            r->heap[0] = k;
        else
            sift_down_key(r, 0, k);
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
    r->pending_seq = r->next_pending < r->norder ? r->chunks[r->order[r->next_pending]].seq_base
                                                 : UINT64_MAX;
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
    uint64_t seq = c->seq, time = c->time, addr = c->addr, ip = c->ip;
    int rc = load_chunk(r, c);
    if (rc < 0)
        return rc;
    for (unsigned i = 0; i < (c->packed ? MT_STREAM_COUNT : 1u); i++) {
        /* The file changed under us if a position is no longer inside its
         * stream. */
        if (!c->p[i] || c->park_off[i] < (uint64_t)(c->p[i] - c->buf) ||
            c->park_off[i] > (uint64_t)(c->end[i] - c->buf))
            return reader_fail(r, -EIO, "the trace changed while it was read");
        c->p[i] = c->buf + c->park_off[i];
    }
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
    if (r->have_pending) {
        *rec = r->pending;
        r->have_pending = false;
        return 1;
    }
    for (;;) {
        /* Activate pending chunks that may hold the next record. */
        if (r->next_pending < r->norder &&
            (r->heap_len == 0 || r->pending_seq <= r->heap[0].seq)) {
            /* Every record of the chunk sorts after (seq_base, nonevent):
             * its events have seq > seq_base, its non-events at least
             * (seq_base, nonevent), and its rank is above every active one. */
            struct mti_heap_ent pk = { r->pending_seq, MTI_TIE(1, r->next_pending, 0) };
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
        const uint8_t *start = c->p[0];
        int rc = c->packed ? decode_packed(r, c, rec) : decode_raw(r, c, rec);
        if (__builtin_expect(rc == MTI_OK, 1)) {
            settle(r, ci, true);
            if (rec->type <= MT_REC_FREE && rec->has_addr && normalize(r, rec) < 0)
                return reader_fail(r, -ENOMEM, "out of memory");
            if (__builtin_expect(rec->type == MT_REC_MARK, 0) && rec->kind == MT_MARK_TAG &&
                rec->space == MT_TAG_HOST) {
                /* A host TAG names the live block that starts at addr. */
                struct mt_live_entry *e = mt_live_table_find(&r->blocks, rec->addr);
                rec->kind = MT_MARK_TAG_BLOCK;
                rec->block = e ? e->value : 0;
                rec->has_addr = false;
            }
            return 1;
        }
        const struct mti_chunk *ch = &r->chunks[c->chunk];
        if (rc == MTI_TRUNC && c->cut) {
            /* The file ends inside this record: the chunk ends here. */
            r->partial = true;
            c->p[0] = c->end[0];
            settle(r, ci, true);
            continue;
        }
        uint64_t at = (uint64_t)(start - c->buf);
        if (c->packed)
            return CORRUPT(r, "%s, record %" PRIu64 " of the compressed chunk at byte offset %" PRIu64,
                           r->why, at - c->tag_base, ch->offset);
        const char *what = rc == MTI_TRUNC ? "record runs past the end of its chunk" : r->why;
        return CORRUPT(r, "%s at byte offset %" PRIu64, what, ch->offset + MT_CHUNK_HDR_SIZE + at);
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
