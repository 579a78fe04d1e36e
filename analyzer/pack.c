/* pack: RAW trace -> packed trace (see pack.h).
 *
 * The source is opened with the reader, so the whole chunk chain is
 * validated before anything is written, then read record by record in
 * merged order (every record checked on the way). Each source chunk the
 * merge has started and not finished has an encoder holding its streams
 * and the delta state a reader will have (seq, time, heap address, stack
 * ip), starting from the chunk's seq_base and time_base; a record's fields
 * go to the streams of their classes. When the reader says a record was its
 * chunk's last, the streams are assembled (varint lengths, then the bytes),
 * compressed as one zstd frame and the chunk appended to the output, so
 * chunks come out in the order they complete. The reader ranks chunks by
 * (seq_base, tid, file offset), so only chunks sharing seq_base and tid
 * must keep their file order (a reused tid, a chunk without events and the
 * next one): link_groups chains them, and one that completes before its
 * predecessor in the chain is held back (compressed) until that one is
 * written. The packed file thus ranks every chunk as the original did and
 * yields the same records in the same order. Heap blocks need no map here:
 * the reader has already named each free's block.
 *
 * The output goes to "<dir>/.<name>.pack-XXXXXX" next to the real file
 * (symlinks resolved), is fsync'ed and re-opened with the reader as a
 * check, then renamed over the original: a crash or error at any point
 * leaves the original intact.
 *
 * Memory: the reader's (its resident chunks, and the address map of live
 * heap blocks), one encoder per chunk in progress (streams about the size
 * of the chunk's payload so far; encoders are reused), one assembly and one
 * compression buffer the size of the largest chunk, and the chunks held
 * back. No shared state.
 */
#include "pack.h"
#include "progress.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <zstd.h>

#include "crc32.h"
#include "reader.h"
#include "report.h"

static int write_full(int fd, const void *buf, size_t n)
{
    const char *p = buf;
    while (n) {
        ssize_t k = write(fd, p, n);
        if (k < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        p += k;
        n -= (size_t)k;
    }
    return 0;
}

static int read_full(int fd, void *buf, size_t n, uint64_t off)
{
    char *p = buf;
    while (n) {
        ssize_t k = pread(fd, p, n, (off_t)off);
        if (k < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        if (k == 0)
            return -EIO; /* shorter than the index said: the file changed */
        p += k;
        n -= (size_t)k;
        off += (uint64_t)k;
    }
    return 0;
}

/* True if pid names a running (not zombie) process on this machine. */
static bool process_alive(uint32_t pid)
{
    if (pid == 0 || pid > INT_MAX)
        return false;
    if (kill((pid_t)pid, 0) != 0 && errno != EPERM)
        return false;
    char path[64];
    snprintf(path, sizeof path, "/proc/%" PRIu32 "/stat", pid);
    FILE *f = fopen(path, "re");
    if (!f)
        return false;
    char buf[512];
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = 0;
    const char *rp = strrchr(buf, ')');
    if (rp && rp[1] == ' ' && (rp[2] == 'Z' || rp[2] == 'X'))
        return false;
    return true;
}

/* ---- the encoder --------------------------------------------------------------- */

struct pk_stream {
    uint8_t *b;
    size_t len, cap;
};

/* One packed chunk being built from the records of one source chunk. */
struct pk_enc {
    struct pk_stream s[MT_STREAM_COUNT];
    uint64_t seq, time, addr, ip; /* delta state, as the reader keeps it */
    uint32_t chunk;               /* source chunk index */
    uint32_t tid;
    uint64_t seq_base, time_base;
};

#define PK_NONE UINT32_MAX

/* A finished chunk waiting for an earlier chunk of its (seq_base, tid). */
struct pk_held {
    uint8_t *bytes; /* chunk header and compressed payload */
    size_t n;
};

struct pk_state {
    struct mt_reader *r;
    int fd;
    int level;
    bool keep_addresses;
    unsigned shift;
    ZSTD_CCtx *cctx;
    struct pk_enc **encs;   /* encoders, the first nbusy in use */
    uint32_t nenc, nbusy;
    uint32_t *enc_of;       /* source chunk index -> encoder slot + 1 (0: none) */
    /* Per source chunk: the data chunk before and after it with the same
     * (seq_base, tid) in file order (PK_NONE: none), whether it is written,
     * and its bytes while held back. */
    uint32_t *grp_prev, *grp_next;
    bool *written;
    struct pk_held *held;
    uint8_t *payload, *out; /* assembly and compression buffers */
    size_t payload_cap, out_cap;
    uint64_t chunks, bytes;
    const char *path;
    struct mt_error *err;
};

static int grow(uint8_t **buf, size_t *cap, size_t want)
{
    if (*cap >= want)
        return 0;
    size_t n = *cap ? *cap : 4096;
    while (n < want)
        n *= 2;
    uint8_t *nb = realloc(*buf, n);
    if (!nb)
        return -ENOMEM;
    *buf = nb;
    *cap = n;
    return 0;
}

static inline int put_v(struct pk_enc *e, unsigned cls, uint64_t v)
{
    struct pk_stream *s = &e->s[cls];
    if (__builtin_expect(s->cap - s->len < 10, 0) && grow(&s->b, &s->cap, s->len + 10) < 0)
        return -ENOMEM;
    s->len = (size_t)(mt_put_varint(s->b + s->len, v) - s->b);
    return 0;
}

static int put_bytes(struct pk_enc *e, unsigned cls, const void *p, size_t n)
{
    struct pk_stream *s = &e->s[cls];
    if (grow(&s->b, &s->cap, s->len + n) < 0)
        return -ENOMEM;
    if (n)
        memcpy(s->b + s->len, p, n);
    s->len += n;
    return 0;
}

/* The encoder of source chunk ci, started if needed. */
static struct pk_enc *enc_for(struct pk_state *st, uint32_t ci)
{
    if (st->enc_of[ci])
        return st->encs[st->enc_of[ci] - 1];
    if (st->nbusy == st->nenc) {
        struct pk_enc **ne = realloc(st->encs, (st->nenc + 1) * sizeof *ne);
        if (!ne)
            return NULL;
        st->encs = ne;
        if (!(ne[st->nenc] = calloc(1, sizeof **ne)))
            return NULL;
        st->nenc++;
    }
    struct pk_enc *e = st->encs[st->nbusy++];
    st->enc_of[ci] = st->nbusy;
    struct mt_chunk_info c;
    mt_reader_chunk(st->r, ci, &c);
    for (unsigned i = 0; i < MT_STREAM_COUNT; i++)
        e->s[i].len = 0;
    e->chunk = ci;
    e->tid = c.tid;
    e->seq_base = e->seq = c.seq_base;
    e->time_base = e->time = c.time_base;
    e->addr = e->ip = 0;
    return e;
}

/* Writes the record into e's streams as the format lists its fields. */
static int encode(struct pk_state *st, struct pk_enc *e, const struct mt_record *rec)
{
    unsigned type = rec->type, kind = rec->kind;
    bool with_seq = true, with_time = true;
    switch (type) {
    case MT_REC_ALLOC:
        if (!(rec->has_addr && st->keep_addresses))
            type = MT_REC_BLOCK_ALLOC;
        break;
    case MT_REC_FREE:
        if (kind == MT_FREE_IMPLICIT && rec->has_addr && st->keep_addresses)
            return 0; /* made up by the reader; it makes it up again */
        if (!(rec->has_addr && (st->keep_addresses || rec->block == 0)) ||
            kind == MT_FREE_IMPLICIT)
            type = MT_REC_BLOCK_FREE;
        break;
    case MT_REC_MMAP:
    case MT_REC_MUNMAP:
    case MT_REC_GPU:
        break;
    case MT_REC_MARK:
        with_seq = with_time = kind != MT_MARK_STRING;
        break;
    case MT_REC_RSS:
    case MT_REC_END:
        with_seq = false;
        break;
    default:
        with_seq = with_time = false;
        break;
    }

    int rc = 0;
    uint8_t tag = mt_tag(type, kind);
    rc |= put_bytes(e, MT_STREAM_TAG, &tag, 1);
    if (with_seq) {
        rc |= put_v(e, MT_STREAM_SEQ, rec->seq - e->seq);
        e->seq = rec->seq;
    }
    if (with_time) {
        /* time_ns is the unit count shifted: shifting back gives it modulo
         * 2^(64 - shift), which decodes to the same time_ns. */
        uint64_t t = rec->time_ns >> st->shift;
        rc |= put_v(e, MT_STREAM_TIME, t - e->time);
        e->time = t;
    }
    switch (type) {
    case MT_REC_ALLOC:
    case MT_REC_FREE:
        rc |= put_v(e, MT_STREAM_ADDR, mt_zigzag((int64_t)(rec->addr - e->addr)));
        e->addr = rec->addr;
        if (type == MT_REC_ALLOC) {
            rc |= put_v(e, MT_STREAM_SIZE, rec->size);
            rc |= put_v(e, MT_STREAM_STACK, rec->stack_id);
        }
        break;
    case MT_REC_BLOCK_ALLOC:
        rc |= put_v(e, MT_STREAM_SIZE, rec->size);
        rc |= put_v(e, MT_STREAM_STACK, rec->stack_id);
        break;
    case MT_REC_BLOCK_FREE:
        rc |= put_v(e, MT_STREAM_REF, rec->seq - rec->block);
        break;
    case MT_REC_MMAP:
    case MT_REC_MUNMAP:
        rc |= put_v(e, MT_STREAM_ADDR, rec->addr);
        rc |= put_v(e, MT_STREAM_SIZE, rec->size);
        if (type == MT_REC_MMAP) {
            rc |= put_v(e, MT_STREAM_MISC, rec->prot);
            rc |= put_v(e, MT_STREAM_MISC, rec->flags);
            rc |= put_v(e, MT_STREAM_STACK, rec->stack_id);
        }
        break;
    case MT_REC_STACK:
        rc |= put_v(e, MT_STREAM_STACK, rec->stack_id);
        rc |= put_v(e, MT_STREAM_STACK, rec->stack_id - rec->parent_id);
        rc |= put_v(e, MT_STREAM_ADDR, mt_zigzag((int64_t)(rec->ip - e->ip)));
        e->ip = rec->ip;
        break;
    case MT_REC_MODULE:
        rc |= put_v(e, MT_STREAM_MISC, rec->bias);
        if (kind == MT_MODULE_LOAD) {
            rc |= put_v(e, MT_STREAM_MISC, rec->nsegs);
            for (uint32_t i = 0; i < rec->nsegs; i++) {
                rc |= put_v(e, MT_STREAM_MISC, rec->segs[i][0]);
                rc |= put_v(e, MT_STREAM_MISC, rec->segs[i][1]);
            }
            rc |= put_v(e, MT_STREAM_MISC, rec->build_id_len);
            rc |= put_bytes(e, MT_STREAM_MISC, rec->build_id, rec->build_id_len);
            rc |= put_v(e, MT_STREAM_MISC, rec->path_len);
            rc |= put_bytes(e, MT_STREAM_MISC, rec->path, rec->path_len);
        }
        break;
    case MT_REC_RSS:
        rc |= put_v(e, MT_STREAM_MISC, rec->rss_bytes);
        break;
    case MT_REC_PROCESS:
        rc |= put_v(e, MT_STREAM_MISC, rec->pid);
        rc |= put_v(e, MT_STREAM_MISC, rec->ppid);
        rc |= put_v(e, MT_STREAM_MISC, rec->exe_len);
        rc |= put_bytes(e, MT_STREAM_MISC, rec->exe, rec->exe_len);
        rc |= put_v(e, MT_STREAM_MISC, rec->argv_len);
        rc |= put_bytes(e, MT_STREAM_MISC, rec->argv, rec->argv_len);
        break;
    case MT_REC_END:
        rc |= put_v(e, MT_STREAM_MISC, rec->status);
        break;
    case MT_REC_LOST:
        rc |= put_v(e, MT_STREAM_MISC, rec->lost);
        break;
    case MT_REC_MARK:
        switch (kind) {
        case MT_MARK_STRING:
            rc |= put_v(e, MT_STREAM_MISC, rec->value);
            rc |= put_v(e, MT_STREAM_MISC, rec->str_len);
            rc |= put_bytes(e, MT_STREAM_MISC, rec->str, rec->str_len);
            break;
        case MT_MARK_PHASE_PUSH:
        case MT_MARK_SCOPE_PUSH:
        case MT_MARK_STEP:
            rc |= put_v(e, MT_STREAM_MISC, rec->value);
            break;
        case MT_MARK_TAG: /* a GPU tag: the reader resolved host ones */
            rc |= put_v(e, MT_STREAM_ADDR, rec->addr);
            rc |= put_v(e, MT_STREAM_MISC, rec->value);
            rc |= put_v(e, MT_STREAM_MISC, rec->space);
            break;
        case MT_MARK_TAG_BLOCK:
            rc |= put_v(e, MT_STREAM_REF, rec->seq - rec->block);
            rc |= put_v(e, MT_STREAM_MISC, rec->value);
            break;
        }
        break;
    case MT_REC_GPU:
        if (kind != MT_GPU_OOM)
            rc |= put_v(e, MT_STREAM_ADDR, rec->addr);
        if (kind != MT_GPU_FREE)
            rc |= put_v(e, MT_STREAM_SIZE, rec->size);
        rc |= put_v(e, MT_STREAM_MISC, rec->device);
        if (kind == MT_GPU_ALLOC)
            rc |= put_v(e, MT_STREAM_MISC, rec->stream);
        rc |= put_v(e, MT_STREAM_MISC, rec->api);
        rc |= put_v(e, MT_STREAM_MISC, rec->space);
        if (kind == MT_GPU_OOM)
            rc |= put_v(e, MT_STREAM_MISC, rec->result);
        if (kind != MT_GPU_FREE)
            rc |= put_v(e, MT_STREAM_STACK, rec->stack_id);
        break;
    }
    return rc ? -ENOMEM : 0;
}

/* Appends a chunk (header h, then z bytes) to the output. */
static int write_chunk(struct pk_state *st, uint32_t ci, const struct mt_chunk_hdr *h,
                       const void *data, size_t z)
{
    int rc = write_full(st->fd, h, sizeof *h);
    if (rc == 0)
        rc = write_full(st->fd, data, z);
    if (rc < 0) {
        mti_error_set(st->err, "cannot write the packed copy of '%s': %s", st->path, strerror(-rc));
        return rc;
    }
    st->bytes += h->size;
    st->chunks++;
    st->written[ci] = true;
    return 0;
}

static int write_held(struct pk_state *st, uint32_t ci)
{
    struct pk_held *hd = &st->held[ci];
    struct mt_chunk_hdr h;
    memcpy(&h, hd->bytes, sizeof h);
    int rc = write_chunk(st, ci, &h, hd->bytes + sizeof h, hd->n - sizeof h);
    free(hd->bytes);
    hd->bytes = NULL;
    return rc;
}

/* Assembles e's streams into a payload, compresses it and appends the
 * chunk to the output (or holds it back, see pk_state); e goes back to the
 * free encoders. */
static int flush(struct pk_state *st, struct pk_enc *e)
{
    size_t n = 0;
    for (unsigned i = 0; i < MT_STREAM_COUNT; i++)
        n += 10 + e->s[i].len;
    if (grow(&st->payload, &st->payload_cap, n) < 0)
        goto nomem;
    uint8_t *p = st->payload;
    for (unsigned i = 0; i < MT_STREAM_COUNT; i++)
        p = mt_put_varint(p, e->s[i].len);
    for (unsigned i = 0; i < MT_STREAM_COUNT; i++) {
        if (e->s[i].len)
            memcpy(p, e->s[i].b, e->s[i].len);
        p += e->s[i].len;
    }
    n = (size_t)(p - st->payload);
    if (n > MT_MAX_CHUNK_PAYLOAD) {
        mti_error_set(st->err, "%s: a chunk of %zu bytes is too large to pack", st->path, n);
        return -EFBIG;
    }
    if (grow(&st->out, &st->out_cap, ZSTD_compressBound(n)) < 0)
        goto nomem;
    size_t z = ZSTD_compressCCtx(st->cctx, st->out, st->out_cap, st->payload, n, st->level);
    if (ZSTD_isError(z)) {
        mti_error_set(st->err, "%s: compression failed: %s", st->path, ZSTD_getErrorName(z));
        return -EIO;
    }
    if (z > UINT32_MAX) {
        mti_error_set(st->err, "%s: a chunk of %zu bytes is too large to pack", st->path, n);
        return -EFBIG;
    }
    struct mt_chunk_hdr h = {
        .magic = MT_CHUNK_MAGIC, .type = MT_CHUNK_ZSTD, .hdr_size = MT_CHUNK_HDR_SIZE,
        .tid = e->tid, .size = MT_CHUNK_HDR_SIZE + (uint64_t)z, .used = n,
        .seq_base = e->seq_base, .time_base = e->time_base, .stored = (uint32_t)z,
        .crc = mt_crc32(0, st->out, z),
    };
    uint32_t ci = e->chunk;
    uint32_t prev = st->grp_prev[ci];
    int rc;
    if (prev != PK_NONE && !st->written[prev]) {
        /* An earlier chunk of this (seq_base, tid) is not written yet: the
         * reader ranks such chunks by file offset, so this one waits. */
        uint8_t *b = malloc(sizeof h + z);
        if (!b)
            goto nomem;
        memcpy(b, &h, sizeof h);
        memcpy(b + sizeof h, st->out, z);
        st->held[ci] = (struct pk_held){ b, sizeof h + z };
    } else {
        rc = write_chunk(st, ci, &h, st->out, z);
        /* then those of its group it held back */
        for (uint32_t j = st->grp_next[ci]; rc == 0 && j != PK_NONE && st->held[j].bytes;
             j = st->grp_next[j])
            rc = write_held(st, j);
        if (rc < 0)
            return rc;
    }

    /* Free the encoder: swap it with the last busy one. */
    uint32_t slot = st->enc_of[e->chunk] - 1, last = st->nbusy - 1;
    st->enc_of[e->chunk] = 0;
    if (slot != last) {
        st->encs[slot] = st->encs[last];
        st->encs[last] = e;
        st->enc_of[st->encs[slot]->chunk] = slot + 1;
    }
    st->nbusy--;
    return 0;

nomem:
    mti_error_set(st->err, "%s: out of memory", st->path);
    return -ENOMEM;
}

struct pk_key {
    uint64_t seq_base, offset;
    uint32_t tid, idx;
};

static int key_cmp(const void *pa, const void *pb)
{
    const struct pk_key *a = pa, *b = pb;
    if (a->seq_base != b->seq_base)
        return a->seq_base < b->seq_base ? -1 : 1;
    if (a->tid != b->tid)
        return a->tid < b->tid ? -1 : 1;
    return a->offset < b->offset ? -1 : a->offset > b->offset;
}

/* Links the non-empty data chunks that share (seq_base, tid), in file
 * order: the reader breaks ties between them by file offset, so pack must
 * write them in that order. */
static int link_groups(struct pk_state *st, size_t nchunks)
{
    st->grp_prev = malloc((nchunks + 1) * sizeof *st->grp_prev);
    st->grp_next = malloc((nchunks + 1) * sizeof *st->grp_next);
    struct pk_key *k = malloc((nchunks + 1) * sizeof *k);
    if (!st->grp_prev || !st->grp_next || !k) {
        free(k);
        return -ENOMEM;
    }
    size_t n = 0;
    for (size_t i = 0; i < nchunks; i++) {
        struct mt_chunk_info c;
        mt_reader_chunk(st->r, i, &c);
        st->grp_prev[i] = st->grp_next[i] = PK_NONE;
        if ((c.type == MT_CHUNK_RAW || c.type == MT_CHUNK_ZSTD) && c.used)
            k[n++] = (struct pk_key){ c.seq_base, c.offset, c.tid, (uint32_t)i };
    }
    qsort(k, n, sizeof *k, key_cmp);
    for (size_t i = 1; i < n; i++) {
        if (k[i].seq_base == k[i - 1].seq_base && k[i].tid == k[i - 1].tid) {
            st->grp_prev[k[i].idx] = k[i - 1].idx;
            st->grp_next[k[i - 1].idx] = k[i].idx;
        }
    }
    free(k);
    return 0;
}

/* Writes the packed form of r into fd. */
static int pack_into(struct mt_reader *r, int fd, const char *path, int level, unsigned flags,
                     void (*progress)(uint64_t, uint64_t, void *), void *progress_arg, uint64_t *chunks_out,
                     uint64_t *bytes_out, struct mt_error *err)
{
    struct pk_state st = {
        .r = r, .fd = fd, .level = level, .keep_addresses = (flags & MT_PACK_KEEP_ADDRESSES) != 0,
        .shift = mt_reader_info(r)->time_shift, .path = path, .err = err,
    };
    size_t nchunks = mt_reader_chunk_count(r);
    st.cctx = ZSTD_createCCtx();
    st.enc_of = calloc(nchunks + 1, sizeof *st.enc_of);
    st.written = calloc(nchunks + 1, sizeof *st.written);
    st.held = calloc(nchunks + 1, sizeof *st.held);
    int rc = 0;
    if (!st.cctx || !st.enc_of || !st.written || !st.held || link_groups(&st, nchunks) < 0)
        goto nomem;

    struct mt_file_hdr fh;
    rc = read_full(mt_reader_fd(r), &fh, sizeof fh, 0);
    if (rc < 0) {
        mti_error_set(err, "cannot read '%s': %s", path, strerror(-rc));
        goto out;
    }
    fh.flags |= MT_FILE_PACKED;
    rc = write_full(fd, &fh, sizeof fh);
    if (rc < 0)
        goto wr;
    st.bytes = sizeof fh;

    struct mt_record rec;
    uint64_t n_rec = 0;
    while ((rc = mt_reader_next(r, &rec)) > 0) {
        if (progress && (++n_rec & 0xffff) == 0) {
            uint64_t done, total;
            mt_reader_progress(r, &done, &total);
            progress(done, total, progress_arg);
        }
        struct pk_enc *e = enc_for(&st, rec.chunk);
        if (!e || encode(&st, e, &rec) < 0)
            goto nomem;
        if (rec.chunk_last && (rc = flush(&st, e)) < 0)
            goto out;
    }
    if (rc < 0) {
        mti_error_set(err, "%s", mt_reader_error(r));
        goto out;
    }
    if (mt_reader_partial(r)) { /* the file was cut while it was read */
        mti_error_set(err, "%s: trace is truncated; not packing it (the packed file would hide the cut)",
                      path);
        rc = -EINVAL;
        goto out;
    }
    while (st.nbusy) /* defensive: every chunk ended with its last record */
        if ((rc = flush(&st, st.encs[st.nbusy - 1])) < 0)
            goto out;
    for (uint32_t i = 0; i < nchunks; i++) /* defensive: a chunk held back for one without records */
        if (st.held[i].bytes && (rc = write_held(&st, i)) < 0)
            goto out;

    struct mt_chunk_hdr t = {
        .magic = MT_CHUNK_MAGIC, .type = MT_CHUNK_TRAILER, .hdr_size = MT_CHUNK_HDR_SIZE,
        .size = MT_CHUNK_HDR_SIZE, .used = st.chunks,
    };
    rc = write_full(fd, &t, sizeof t);
    if (rc < 0)
        goto wr;
    st.bytes += sizeof t;
    if (fsync(fd) < 0) {
        rc = -errno;
        goto wr;
    }
    *chunks_out = st.chunks;
    *bytes_out = st.bytes;
    goto out;

nomem:
    rc = -ENOMEM;
    mti_error_set(err, "%s: out of memory", path);
    goto out;
wr:
    mti_error_set(err, "cannot write the packed copy of '%s': %s", path, strerror(-rc));
out:
    for (uint32_t i = 0; i < st.nenc; i++) {
        for (unsigned k = 0; k < MT_STREAM_COUNT; k++)
            free(st.encs[i]->s[k].b);
        free(st.encs[i]);
    }
    free(st.encs);
    free(st.enc_of);
    for (size_t i = 0; st.held && i < nchunks; i++)
        free(st.held[i].bytes);
    free(st.held);
    free(st.written);
    free(st.grp_prev);
    free(st.grp_next);
    free(st.payload);
    free(st.out);
    ZSTD_freeCCtx(st.cctx);
    return rc;
}

int mt_pack_file_ex(const char *path, int level, unsigned flags, struct mt_pack_result *res,
                    struct mt_error *err)
{
    return mt_pack_file_progress(path, level, flags, NULL, NULL, res, err);
}

int mt_pack_file_progress(const char *path, int level, unsigned flags,
                          void (*progress)(uint64_t done, uint64_t total, void *arg), void *arg,
                          struct mt_pack_result *res, struct mt_error *err)
{
    if (level < 1 || level > ZSTD_maxCLevel()) {
        mti_error_set(err, "compression level %d out of range (1..%d)", level, ZSTD_maxCLevel());
        return -EINVAL;
    }
    struct mt_reader *r = NULL;
    int rc = mt_reader_open(path, &r, err);
    if (rc < 0)
        return rc;
    const struct mt_trace_info *info = mt_reader_info(r);
    struct mt_pack_result out = { .bytes_before = info->file_size };
    char *real = NULL, *tmp = NULL;
    int fd = -1;

    if (info->packed) {
        out.already_packed = true;
        out.bytes_after = info->file_size;
        out.chunks = info->data_chunks;
        goto done;
    }
    if (mt_reader_partial(r)) {
        mti_error_set(err, "%s: trace is truncated; not packing it (the packed file would hide the cut)",
                      path);
        rc = -EINVAL;
        goto done;
    }
    if (!(flags & MT_PACK_FORCE) && process_alive(info->pid)) {
        mti_error_set(err, "%s: process %" PRIu32 " is still running and may still write this trace;"
                      " not packing it (--force packs anyway)", path, info->pid);
        rc = -EBUSY;
        goto done;
    }

    real = realpath(path, NULL);
    if (!real) {
        rc = -errno;
        mti_error_set(err, "cannot open '%s': %s", path, strerror(-rc));
        goto done;
    }
    const char *slash = strrchr(real, '/');
    size_t dlen = (size_t)(slash - real);
    size_t tlen = strlen(real) + 32;
    tmp = malloc(tlen);
    if (!tmp) {
        rc = -ENOMEM;
        mti_error_set(err, "%s: out of memory", path);
        goto done;
    }
    snprintf(tmp, tlen, "%.*s/.%s.pack-XXXXXX", (int)dlen, real, slash + 1);
    fd = mkostemp(tmp, O_CLOEXEC);
    if (fd < 0) {
        rc = -errno;
        mti_error_set(err, "cannot create a temporary file beside '%s': %s", path, strerror(-rc));
        free(tmp);
        tmp = NULL;
        goto done;
    }
    struct stat st;
    if (fstat(mt_reader_fd(r), &st) == 0)
        (void)fchmod(fd, st.st_mode & 07777);

    rc = pack_into(r, fd, path, level, flags, progress, arg, &out.chunks, &out.bytes_after, err);
    if (close(fd) < 0 && rc == 0) {
        rc = -errno;
        mti_error_set(err, "cannot write the packed copy of '%s': %s", path, strerror(-rc));
    }
    fd = -1;
    if (rc < 0)
        goto done;

    /* Check what was written before it replaces the original. */
    struct mt_reader *check = NULL;
    struct mt_error cerr;
    rc = mt_reader_open(tmp, &check, &cerr);
    if (rc == 0 && (mt_reader_partial(check) || mt_reader_info(check)->data_chunks != out.chunks))
        rc = -EIO;
    mt_reader_close(check);
    if (rc < 0) {
        mti_error_set(err, "%s: the packed copy does not read back; original kept", path);
        goto done;
    }
    if (rename(tmp, real) < 0) {
        rc = -errno;
        mti_error_set(err, "cannot replace '%s': %s", path, strerror(-rc));
        goto done;
    }
    free(tmp);
    tmp = NULL;

done:
    if (fd >= 0)
        close(fd);
    if (tmp) {
        unlink(tmp);
        free(tmp);
    }
    free(real);
    mt_reader_close(r);
    if (rc == 0 && res)
        *res = out;
    return rc;
}

int mt_pack_file(const char *path, int level, struct mt_error *err)
{
    return mt_pack_file_ex(path, level, 0, NULL, err);
}

/* ---- command line ------------------------------------------------------------ */

static void pack_usage(FILE *f)
{
    fprintf(f,
            "Usage: memtrace pack [--level N] [--force] [--keep-addresses] FILE...\n"
            "\n"
            "Compress traces left uncompressed (a run that was killed, or run with packing\n"
            "off). Each FILE is rewritten in place; an already packed FILE is left as it is.\n"
            "Heap block addresses are dropped (each free names its allocation instead)\n"
            "unless --keep-addresses.\n"
            "\n"
            "Options:\n"
            "  -l, --level N         zstd compression level, 1..%d (default 3)\n"
            "  -f, --force           pack even if the traced process still seems to be running\n"
            "      --keep-addresses  keep the addresses of heap blocks (a larger file)\n"
            "  -h, --help            show this help\n"
            "\n"
            "Exit status: 0 all packed, 1 a FILE could not be packed, 2 usage error.\n",
            ZSTD_maxCLevel());
}

static int pack_usage_error(const char *fmt, const char *arg)
{
    fprintf(stderr, "memtrace pack: ");
    fprintf(stderr, fmt, arg);
    fprintf(stderr, "\nTry 'memtrace pack --help'.\n");
    return 2;
}

static bool parse_level(const char *s, int *out)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || end == s || *end || v < 1 || v > ZSTD_maxCLevel())
        return false;
    *out = (int)v;
    return true;
}

int mt_pack_main(int argc, char **argv)
{
    int level = 3;
    unsigned flags = 0;
    int nfiles = 0;
    char **files = calloc((size_t)argc + 1, sizeof *files);
    if (!files) {
        fprintf(stderr, "memtrace: out of memory\n");
        return 1;
    }
    bool opts = true;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (opts && !strcmp(a, "--")) {
            opts = false;
        } else if (opts && (!strcmp(a, "-h") || !strcmp(a, "--help"))) {
            pack_usage(stdout);
            free(files);
            return 0;
        } else if (opts && (!strcmp(a, "-f") || !strcmp(a, "--force"))) {
            flags |= MT_PACK_FORCE;
        } else if (opts && !strcmp(a, "--keep-addresses")) {
            flags |= MT_PACK_KEEP_ADDRESSES;
        } else if (opts && (!strcmp(a, "-l") || !strcmp(a, "--level"))) {
            if (i + 1 >= argc) {
                free(files);
                return pack_usage_error("option '%s' needs a value", a);
            }
            if (!parse_level(argv[++i], &level)) {
                free(files);
                return pack_usage_error("invalid compression level '%s'", argv[i]);
            }
        } else if (opts && !strncmp(a, "--level=", 8)) {
            if (!parse_level(a + 8, &level)) {
                free(files);
                return pack_usage_error("invalid compression level '%s'", a + 8);
            }
        } else if (opts && a[0] == '-' && a[1]) {
            free(files);
            return pack_usage_error("unknown option '%s'", a);
        } else {
            files[nfiles++] = argv[i];
        }
    }
    if (nfiles == 0) {
        free(files);
        return pack_usage_error("%s", "no trace file given");
    }
    int status = 0;
    for (int i = 0; i < nfiles; i++) {
        struct mt_error err;
        struct mt_pack_result res;
        struct mt_progress pr;
        mt_progress_init(&pr, "packing", files[i]);
        int prc = mt_pack_file_progress(files[i], level, flags, mt_progress_update, &pr, &res, &err);
        mt_progress_done(&pr);
        if (prc < 0) {
            fprintf(stderr, "memtrace: %s\n", err.msg);
            status = 1;
            continue;
        }
        if (res.already_packed) {
            printf("%s: already packed\n", files[i]);
            continue;
        }
        char before[32], after[32];
        mt_human_size(res.bytes_before, before, sizeof before);
        mt_human_size(res.bytes_after, after, sizeof after);
        printf("%s: packed, %s -> %s (%" PRIu64 " chunks)\n", files[i], before, after, res.chunks);
    }
    fflush(stdout);
    free(files);
    return status;
}
