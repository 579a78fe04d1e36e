/* trace-writer: synthetic trace builder for the tests (see trace-writer.h).
 *
 * Invariants: chunks[] is file order; each record is encoded into its
 * thread's newest chunk with that chunk's running delta state, exactly as
 * include/memtrace-format.h describes, once as RAW bytes and once into the
 * streams of its packed form (with the `blocks` option the heap records of
 * the packed form are the BLOCK ones pack writes, blocks found through an
 * address list kept in call order). Each record is logged with the values
 * the reader must decode (time in ns, seq of the event before for
 * non-events, heap blocks where they are written); tw_expected sorts the
 * log into merged order and then fills in blocks of heap records with
 * addresses, making up IMPLICIT frees, as the reader does. Any misuse
 * aborts. Not thread-safe.
 */
#include "trace-writer.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <errno.h>

#include <zstd.h>

#include "crc32.h"

struct tw_buf {
    uint8_t *b;
    size_t len, cap;
};

struct tw_chunk {
    size_t born; /* creation number: the newest chunk of a tid is current */
    uint32_t tid;
    bool is_free;
    uint64_t free_size;
    uint64_t seq_base, time_base;
    uint8_t *buf; /* RAW payload */
    size_t len, cap;
    struct tw_buf st[MT_STREAM_COUNT]; /* packed streams */
    uint64_t seq, time, addr, ip;      /* running delta state */
    uint64_t paddr;                    /* address chain of the packed form
                                          (differs with the blocks option) */
};

struct tw_log {
    struct mt_record rec;
    size_t born; /* of its chunk */
    bool nonevent;
    void *owned[3];
};

struct tw_live {
    uint64_t addr, block;
};

struct tw {
    struct tw_opts o;
    struct tw_chunk *chunks; /* file order */
    size_t nchunks, cchunks, born;
    struct tw_log *log;
    size_t nlog, clog;
    struct mt_record *sorted;
    size_t nsorted;
    struct tw_live *live; /* `blocks` option: live heap blocks, call order */
    size_t nlive, clive;
};

static void *xrealloc(void *p, size_t n)
{
    p = realloc(p, n ? n : 1);
    if (!p)
        abort();
    return p;
}

static void *xdup(const void *p, size_t n)
{
    void *q = xrealloc(NULL, n);
    if (n)
        memcpy(q, p, n);
    return q;
}

void tw_default_opts(struct tw_opts *o)
{
    *o = (struct tw_opts){
        /* A pid above Linux's largest possible (2^22): never a live process,
         * which pack would refuse to touch. */
        .version = MT_FORMAT_VERSION, .pid = 4242424, .ppid = 1, .session_pid = 4242424,
        .page_size = 4096, .time_shift = 0, .start_mono_ns = 1000000000ull,
        .start_real_ns = 1700000000000000000ull,
    };
}

struct tw *tw_new(const struct tw_opts *o)
{
    struct tw *w = xrealloc(NULL, sizeof *w);
    memset(w, 0, sizeof *w);
    if (o)
        w->o = *o;
    else
        tw_default_opts(&w->o);
    return w;
}

void tw_destroy(struct tw *w)
{
    if (!w)
        return;
    for (size_t i = 0; i < w->nchunks; i++) {
        free(w->chunks[i].buf);
        for (int k = 0; k < MT_STREAM_COUNT; k++)
            free(w->chunks[i].st[k].b);
    }
    free(w->live);
    for (size_t i = 0; i < w->nlog; i++)
        for (int k = 0; k < 3; k++)
            free(w->log[i].owned[k]);
    free(w->chunks);
    free(w->log);
    free(w->sorted);
    free(w);
}

static struct tw_chunk *new_chunk(struct tw *w)
{
    if (w->nchunks == w->cchunks) {
        w->cchunks = w->cchunks ? 2 * w->cchunks : 16;
        w->chunks = xrealloc(w->chunks, w->cchunks * sizeof *w->chunks);
    }
    struct tw_chunk *c = &w->chunks[w->nchunks++];
    memset(c, 0, sizeof *c);
    c->born = w->born++;
    return c;
}

void tw_chunk(struct tw *w, uint32_t tid, uint64_t seq_base, uint64_t time_base)
{
    struct tw_chunk *c = new_chunk(w);
    c->tid = tid;
    c->seq_base = c->seq = seq_base;
    c->time_base = c->time = time_base;
}

void tw_free_chunk(struct tw *w, uint64_t size)
{
    if (size < MT_CHUNK_HDR_SIZE)
        abort();
    struct tw_chunk *c = new_chunk(w);
    c->is_free = true;
    c->free_size = size;
}

void tw_place_chunk(struct tw *w, size_t pos)
{
    if (pos >= w->nchunks)
        abort();
    struct tw_chunk c = w->chunks[w->nchunks - 1];
    memmove(&w->chunks[pos + 1], &w->chunks[pos], (w->nchunks - 1 - pos) * sizeof c);
    w->chunks[pos] = c;
}

static size_t cur_chunk(struct tw *w, uint32_t tid)
{
    size_t best = SIZE_MAX;
    for (size_t i = 0; i < w->nchunks; i++)
        if (!w->chunks[i].is_free && w->chunks[i].tid == tid &&
            (best == SIZE_MAX || w->chunks[i].born > w->chunks[best].born))
            best = i;
    if (best != SIZE_MAX)
        return best;
    tw_chunk(w, tid, 0, 0);
    return w->nchunks - 1;
}

static void buf_put(uint8_t **b, size_t *len, size_t *cap, const void *p, size_t n)
{
    if (*len + n > *cap) {
        *cap = (*len + n) * 2 + 64;
        *b = xrealloc(*b, *cap);
    }
    if (n)
        memcpy(*b + *len, p, n);
    *len += n;
}

/* To the RAW payload only, or to one packed stream only. */
static void raw_bytes(struct tw_chunk *c, const void *p, size_t n)
{
    buf_put(&c->buf, &c->len, &c->cap, p, n);
}

static void stream_bytes(struct tw_chunk *c, unsigned cls, const void *p, size_t n)
{
    buf_put(&c->st[cls].b, &c->st[cls].len, &c->st[cls].cap, p, n);
}

static void raw_v(struct tw_chunk *c, uint64_t v)
{
    uint8_t b[10];
    raw_bytes(c, b, (size_t)(mt_put_varint(b, v) - b));
}

static void stream_v(struct tw_chunk *c, unsigned cls, uint64_t v)
{
    uint8_t b[10];
    stream_bytes(c, cls, b, (size_t)(mt_put_varint(b, v) - b));
}

/* A field of class cls, in both encodings. */
static void put_bytes(struct tw_chunk *c, unsigned cls, const void *p, size_t n)
{
    raw_bytes(c, p, n);
    stream_bytes(c, cls, p, n);
}

static void put_v(struct tw_chunk *c, unsigned cls, uint64_t v)
{
    raw_v(c, v);
    stream_v(c, cls, v);
}

static void put_tag(struct tw_chunk *c, unsigned type, unsigned kind)
{
    uint8_t t = mt_tag(type, kind);
    put_bytes(c, MT_STREAM_TAG, &t, 1);
}

static struct tw_log *log_rec(struct tw *w, size_t ci, unsigned type, unsigned kind, bool nonevent)
{
    if (w->nlog == w->clog) {
        w->clog = w->clog ? 2 * w->clog : 64;
        w->log = xrealloc(w->log, w->clog * sizeof *w->log);
    }
    struct tw_log *l = &w->log[w->nlog++];
    memset(l, 0, sizeof *l);
    struct tw_chunk *c = &w->chunks[ci];
    l->born = c->born;
    l->nonevent = nonevent;
    l->rec.type = (uint8_t)type;
    l->rec.kind = (uint8_t)kind;
    l->rec.tid = c->tid;
    l->rec.seq = c->seq;
    l->rec.time_ns = c->time << w->o.time_shift;
    free(w->sorted);
    w->sorted = NULL;
    return l;
}

/* `blocks` option: the live list, in call order. */
static uint64_t live_take(struct tw *w, uint64_t addr)
{
    for (size_t i = 0; i < w->nlive; i++) {
        if (w->live[i].addr == addr) {
            uint64_t b = w->live[i].block;
            w->live[i] = w->live[--w->nlive];
            return b;
        }
    }
    return 0;
}

static void live_add(struct tw *w, uint64_t addr, uint64_t block)
{
    if (w->nlive == w->clive) {
        w->clive = w->clive ? 2 * w->clive : 64;
        w->live = xrealloc(w->live, w->clive * sizeof *w->live);
    }
    w->live[w->nlive++] = (struct tw_live){ addr, block };
}

/* The head of an event (tag, seq delta, time delta) in one encoding. */
static void raw_head(struct tw_chunk *c, unsigned type, unsigned kind, uint64_t dseq, uint64_t dtime)
{
    uint8_t t = mt_tag(type, kind);
    raw_bytes(c, &t, 1);
    raw_v(c, dseq);
    raw_v(c, dtime);
}

static void stream_head(struct tw_chunk *c, unsigned type, unsigned kind, uint64_t dseq,
                        uint64_t dtime)
{
    uint8_t t = mt_tag(type, kind);
    stream_bytes(c, MT_STREAM_TAG, &t, 1);
    stream_v(c, MT_STREAM_SEQ, dseq);
    stream_v(c, MT_STREAM_TIME, dtime);
}

/* Checks that seq and time do not go backwards in the chunk, advances them
 * and returns the deltas. */
static void advance(struct tw_chunk *c, uint64_t seq, uint64_t time, uint64_t *dseq, uint64_t *dtime)
{
    if (seq < c->seq || time < c->time)
        abort();
    *dseq = seq - c->seq;
    *dtime = time - c->time;
    c->seq = seq;
    c->time = time;
}

static void ev_head(struct tw_chunk *c, unsigned type, unsigned kind, uint64_t seq, uint64_t time)
{
    uint64_t ds, dt;
    advance(c, seq, time, &ds, &dt);
    raw_head(c, type, kind, ds, dt);
    stream_head(c, type, kind, ds, dt);
}

void tw_alloc(struct tw *w, uint32_t tid, unsigned kind, uint64_t seq, uint64_t time,
              uint64_t addr, uint64_t size, uint64_t stack)
{
    size_t ci = cur_chunk(w, tid);
    struct tw_chunk *c = &w->chunks[ci];
    uint64_t ds, dt;
    advance(c, seq, time, &ds, &dt);
    raw_head(c, MT_REC_ALLOC, kind, ds, dt);
    raw_v(c, mt_zigzag((int64_t)(addr - c->addr)));
    c->addr = addr;
    if (w->o.blocks) {
        uint64_t old = live_take(w, addr);
        if (old) { /* as pack writes it: the IMPLICIT free of the old block first */
            stream_head(c, MT_REC_BLOCK_FREE, MT_FREE_IMPLICIT, ds, dt);
            stream_v(c, MT_STREAM_REF, seq - old);
            ds = dt = 0;
        }
        live_add(w, addr, seq);
        stream_head(c, MT_REC_BLOCK_ALLOC, kind, ds, dt);
    } else {
        stream_head(c, MT_REC_ALLOC, kind, ds, dt);
        stream_v(c, MT_STREAM_ADDR, mt_zigzag((int64_t)(addr - c->paddr)));
        c->paddr = addr;
    }
    put_v(c, MT_STREAM_SIZE, size);
    put_v(c, MT_STREAM_STACK, stack);
    struct tw_log *l = log_rec(w, ci, MT_REC_ALLOC, kind, false);
    l->rec.addr = addr;
    l->rec.has_addr = true;
    l->rec.size = size;
    l->rec.stack_id = stack;
}

void tw_free(struct tw *w, uint32_t tid, unsigned kind, uint64_t seq, uint64_t time, uint64_t addr)
{
    size_t ci = cur_chunk(w, tid);
    struct tw_chunk *c = &w->chunks[ci];
    uint64_t ds, dt;
    advance(c, seq, time, &ds, &dt);
    raw_head(c, MT_REC_FREE, kind, ds, dt);
    raw_v(c, mt_zigzag((int64_t)(addr - c->addr)));
    c->addr = addr;
    uint64_t block = w->o.blocks ? live_take(w, addr) : 0;
    if (block) {
        stream_head(c, MT_REC_BLOCK_FREE, kind, ds, dt);
        stream_v(c, MT_STREAM_REF, seq - block);
    } else {
        stream_head(c, MT_REC_FREE, kind, ds, dt);
        stream_v(c, MT_STREAM_ADDR, mt_zigzag((int64_t)(addr - c->paddr)));
        c->paddr = addr;
    }
    struct tw_log *l = log_rec(w, ci, MT_REC_FREE, kind, false);
    l->rec.addr = addr;
    l->rec.has_addr = true;
}

void tw_block_alloc(struct tw *w, uint32_t tid, unsigned kind, uint64_t seq, uint64_t time,
                    uint64_t size, uint64_t stack)
{
    size_t ci = cur_chunk(w, tid);
    struct tw_chunk *c = &w->chunks[ci];
    ev_head(c, MT_REC_BLOCK_ALLOC, kind, seq, time);
    put_v(c, MT_STREAM_SIZE, size);
    put_v(c, MT_STREAM_STACK, stack);
    struct tw_log *l = log_rec(w, ci, MT_REC_ALLOC, kind, false);
    l->rec.size = size;
    l->rec.stack_id = stack;
    l->rec.block = seq;
}

void tw_block_free(struct tw *w, uint32_t tid, unsigned kind, uint64_t seq, uint64_t time,
                   uint64_t block)
{
    size_t ci = cur_chunk(w, tid);
    struct tw_chunk *c = &w->chunks[ci];
    ev_head(c, MT_REC_BLOCK_FREE, kind, seq, time);
    put_v(c, MT_STREAM_REF, seq - block);
    struct tw_log *l = log_rec(w, ci, MT_REC_FREE, kind, false);
    l->rec.block = block;
}

void tw_mmap(struct tw *w, uint32_t tid, unsigned kind, uint64_t seq, uint64_t time,
             uint64_t addr, uint64_t len, uint32_t prot, uint32_t flags, uint64_t stack)
{
    size_t ci = cur_chunk(w, tid);
    struct tw_chunk *c = &w->chunks[ci];
    ev_head(c, MT_REC_MMAP, kind, seq, time);
    put_v(c, MT_STREAM_ADDR, addr);
    put_v(c, MT_STREAM_SIZE, len);
    put_v(c, MT_STREAM_MISC, prot);
    put_v(c, MT_STREAM_MISC, flags);
    put_v(c, MT_STREAM_STACK, stack);
    struct tw_log *l = log_rec(w, ci, MT_REC_MMAP, kind, false);
    l->rec.addr = addr;
    l->rec.size = len;
    l->rec.prot = prot;
    l->rec.flags = flags;
    l->rec.stack_id = stack;
}

void tw_munmap(struct tw *w, uint32_t tid, unsigned kind, uint64_t seq, uint64_t time,
               uint64_t addr, uint64_t len)
{
    size_t ci = cur_chunk(w, tid);
    struct tw_chunk *c = &w->chunks[ci];
    ev_head(c, MT_REC_MUNMAP, kind, seq, time);
    put_v(c, MT_STREAM_ADDR, addr);
    put_v(c, MT_STREAM_SIZE, len);
    struct tw_log *l = log_rec(w, ci, MT_REC_MUNMAP, kind, false);
    l->rec.addr = addr;
    l->rec.size = len;
}

void tw_stack(struct tw *w, uint32_t tid, uint64_t id, uint64_t parent, uint64_t ip)
{
    size_t ci = cur_chunk(w, tid);
    struct tw_chunk *c = &w->chunks[ci];
    put_tag(c, MT_REC_STACK, 0);
    put_v(c, MT_STREAM_STACK, id);
    put_v(c, MT_STREAM_STACK, id - parent);
    put_v(c, MT_STREAM_ADDR, mt_zigzag((int64_t)(ip - c->ip)));
    c->ip = ip;
    struct tw_log *l = log_rec(w, ci, MT_REC_STACK, 0, true);
    l->rec.stack_id = id;
    l->rec.parent_id = parent;
    l->rec.ip = ip;
}

void tw_module_load(struct tw *w, uint32_t tid, uint64_t bias, unsigned nseg,
                    const uint64_t (*segs)[2], const uint8_t *build_id, unsigned bid_len,
                    const char *path)
{
    size_t ci = cur_chunk(w, tid);
    struct tw_chunk *c = &w->chunks[ci];
    size_t plen = strlen(path);
    put_tag(c, MT_REC_MODULE, MT_MODULE_LOAD);
    put_v(c, MT_STREAM_MISC, bias);
    put_v(c, MT_STREAM_MISC, nseg);
    for (unsigned i = 0; i < nseg; i++) {
        put_v(c, MT_STREAM_MISC, segs[i][0]);
        put_v(c, MT_STREAM_MISC, segs[i][1]);
    }
    put_v(c, MT_STREAM_MISC, bid_len);
    put_bytes(c, MT_STREAM_MISC, build_id, bid_len);
    put_v(c, MT_STREAM_MISC, plen);
    put_bytes(c, MT_STREAM_MISC, path, plen);
    struct tw_log *l = log_rec(w, ci, MT_REC_MODULE, MT_MODULE_LOAD, true);
    l->rec.bias = bias;
    l->rec.nsegs = nseg;
    l->rec.segs = l->owned[0] = xdup(segs, nseg * sizeof *segs);
    l->rec.build_id = l->owned[1] = xdup(build_id, bid_len);
    l->rec.build_id_len = bid_len;
    l->rec.path = l->owned[2] = xdup(path, plen);
    l->rec.path_len = (uint32_t)plen;
}

void tw_module_unload(struct tw *w, uint32_t tid, uint64_t bias)
{
    size_t ci = cur_chunk(w, tid);
    struct tw_chunk *c = &w->chunks[ci];
    put_tag(c, MT_REC_MODULE, MT_MODULE_UNLOAD);
    put_v(c, MT_STREAM_MISC, bias);
    struct tw_log *l = log_rec(w, ci, MT_REC_MODULE, MT_MODULE_UNLOAD, true);
    l->rec.bias = bias;
}

void tw_rss(struct tw *w, uint32_t tid, unsigned kind, uint64_t time, uint64_t bytes)
{
    size_t ci = cur_chunk(w, tid);
    struct tw_chunk *c = &w->chunks[ci];
    if (time < c->time)
        abort();
    put_tag(c, MT_REC_RSS, kind);
    put_v(c, MT_STREAM_TIME, time - c->time);
    put_v(c, MT_STREAM_MISC, bytes);
    c->time = time;
    struct tw_log *l = log_rec(w, ci, MT_REC_RSS, kind, true);
    l->rec.rss_bytes = bytes;
}

void tw_process(struct tw *w, uint32_t tid, uint32_t pid, uint32_t ppid, const char *exe,
                const char *argv, size_t argv_len)
{
    size_t ci = cur_chunk(w, tid);
    struct tw_chunk *c = &w->chunks[ci];
    size_t elen = strlen(exe);
    put_tag(c, MT_REC_PROCESS, 0);
    put_v(c, MT_STREAM_MISC, pid);
    put_v(c, MT_STREAM_MISC, ppid);
    put_v(c, MT_STREAM_MISC, elen);
    put_bytes(c, MT_STREAM_MISC, exe, elen);
    put_v(c, MT_STREAM_MISC, argv_len);
    put_bytes(c, MT_STREAM_MISC, argv, argv_len);
    struct tw_log *l = log_rec(w, ci, MT_REC_PROCESS, 0, true);
    l->rec.pid = pid;
    l->rec.ppid = ppid;
    l->rec.exe = l->owned[0] = xdup(exe, elen);
    l->rec.exe_len = (uint32_t)elen;
    l->rec.argv = l->owned[1] = xdup(argv, argv_len);
    l->rec.argv_len = (uint32_t)argv_len;
}

void tw_end(struct tw *w, uint32_t tid, unsigned kind, uint64_t time, uint64_t status)
{
    size_t ci = cur_chunk(w, tid);
    struct tw_chunk *c = &w->chunks[ci];
    if (time < c->time)
        abort();
    put_tag(c, MT_REC_END, kind);
    put_v(c, MT_STREAM_TIME, time - c->time);
    put_v(c, MT_STREAM_MISC, status);
    c->time = time;
    struct tw_log *l = log_rec(w, ci, MT_REC_END, kind, true);
    l->rec.status = status;
}

void tw_lost(struct tw *w, uint32_t tid, uint64_t count)
{
    size_t ci = cur_chunk(w, tid);
    struct tw_chunk *c = &w->chunks[ci];
    put_tag(c, MT_REC_LOST, 0);
    put_v(c, MT_STREAM_MISC, count);
    struct tw_log *l = log_rec(w, ci, MT_REC_LOST, 0, true);
    l->rec.lost = count;
}

void tw_bytes(struct tw *w, uint32_t tid, const void *bytes, size_t n)
{
    raw_bytes(&w->chunks[cur_chunk(w, tid)], bytes, n);
}

void tw_stream_bytes(struct tw *w, uint32_t tid, unsigned stream, const void *bytes, size_t n)
{
    if (stream >= MT_STREAM_COUNT)
        abort();
    stream_bytes(&w->chunks[cur_chunk(w, tid)], stream, bytes, n);
}

void tw_build_sample(struct tw *w)
{
    static const uint64_t segs[2][2] = { { 0x400000, 0x402000 }, { 0x600000, 0x601000 } };
    static const uint8_t bid[20] = { 0xde, 0xad, 0xbe, 0xef, 1, 2, 3, 4, 5, 6, 7, 8, 9 };
    static const char argv[] = "sample\0--flag\0x y";
    const uint64_t m1 = 0x7f0000000000ull, m2 = 0x7f1000000000ull, m3 = 0x7f2000000000ull;

    tw_chunk(w, 200, 0, 0); /* started first, written later */
    tw_chunk(w, 100, 0, 0);
    tw_process(w, 100, 4242424, 1, "/usr/bin/sample", argv, sizeof argv - 1);
    tw_module_load(w, 100, 0x400000, 2, segs, bid, sizeof bid, "/usr/bin/sample");
    tw_stack(w, 100, 1, 0, 0x7f00001000); /* main <- f <- g */
    tw_stack(w, 100, 2, 1, 0x401100);
    tw_stack(w, 100, 3, 2, 0x401234);
    tw_alloc(w, 100, MT_ALLOC_MALLOC, 1, 10, 0x10000, 100, 3);
    tw_alloc(w, 100, MT_ALLOC_CALLOC, 2, 12, 0x10100, 200, 3);
    tw_rss(w, 100, MT_RSS_SAMPLE, 13, 1 << 20);
    tw_stack(w, 200, 4, 1, 0x401000); /* shares node 1 */
    tw_stack(w, 200, 5, 4, 0x402000);
    tw_alloc(w, 200, MT_ALLOC_MALLOC, 3, 20, 0x20000, 1000, 5);
    tw_free(w, 200, MT_FREE_FREE, 4, 25, 0x10100); /* block of thread 100 */
    tw_free_chunk(w, 128);
    tw_chunk(w, 300, 4, 40);
    tw_mmap(w, 300, MT_MAP_ANON, 5, 41, m1, 0x10000, 3, 0x22, 0);
    tw_chunk(w, 100, 5, 30);
    tw_free(w, 100, MT_FREE_REALLOC, 6, 42, 0x10000);
    tw_munmap(w, 300, MT_UNMAP_MUNMAP, 7, 43, m1 + 0x4000, 0x4000); /* hole */
    tw_mmap(w, 300, MT_MAP_FILE, 8, 44, m2, 0x3000, 1, 0x2, 0);
    tw_alloc(w, 100, MT_ALLOC_REALLOC, 9, 45, 0x30000, 5000, 2);
    tw_rss(w, 100, MT_RSS_HWM, 46, 3 << 20);
    tw_chunk(w, 200, 9, 47);
    tw_munmap(w, 200, MT_UNMAP_REMAP, 10, 50, m1, 0x4000);
    tw_mmap(w, 200, MT_MAP_REMAP, 11, 51, m3, 0x20000, 3, 0x22, 5);
    tw_free(w, 200, MT_FREE_FREE, 12, 52, 0xdead0);                 /* unmatched */
    tw_alloc(w, 200, MT_ALLOC_MALLOC, 13, 53, 0x20000, 10, 5);       /* at a live address */
    tw_lost(w, 200, 3);
    tw_chunk(w, 300, 20, 60); /* stays empty */
    tw_free(w, 100, MT_FREE_FREE, 14, 60, 0x30000);
    tw_munmap(w, 100, MT_UNMAP_MUNMAP, 15, 61, m1, 0x1000000);      /* spans the rest */
    tw_module_unload(w, 100, 0x400000);
    tw_end(w, 100, MT_END_EXIT, 70, 0);
}

/* ---- output -------------------------------------------------------------- */

static int put_chunk_hdr(FILE *f, uint16_t type, uint32_t tid, uint64_t size, uint64_t used,
                         uint64_t seq_base, uint64_t time_base, uint32_t stored, uint32_t crc)
{
    struct mt_chunk_hdr h = {
        .magic = MT_CHUNK_MAGIC, .type = type, .hdr_size = MT_CHUNK_HDR_SIZE, .tid = tid,
        .size = size, .used = used, .seq_base = seq_base, .time_base = time_base,
        .stored = stored, .crc = crc,
    };
    return fwrite(&h, sizeof h, 1, f) == 1 ? 0 : -EIO;
}

static bool packed_empty(const struct tw_chunk *c)
{
    for (int k = 0; k < MT_STREAM_COUNT; k++)
        if (c->st[k].len)
            return false;
    return true;
}

static uint8_t *payload_of(const struct tw_chunk *c, size_t *n)
{
    size_t cap = MT_STREAM_COUNT * 10;
    for (int k = 0; k < MT_STREAM_COUNT; k++)
        cap += c->st[k].len;
    uint8_t *b = xrealloc(NULL, cap), *p = b;
    for (int k = 0; k < MT_STREAM_COUNT; k++)
        p = mt_put_varint(p, c->st[k].len);
    for (int k = 0; k < MT_STREAM_COUNT; k++) {
        if (c->st[k].len)
            memcpy(p, c->st[k].b, c->st[k].len);
        p += c->st[k].len;
    }
    *n = (size_t)(p - b);
    return b;
}

uint8_t *tw_packed_payload(struct tw *w, size_t k, size_t *n)
{
    for (size_t i = 0; i < w->nchunks; i++) {
        const struct tw_chunk *c = &w->chunks[i];
        if (c->is_free || packed_empty(c))
            continue;
        if (k-- == 0)
            return payload_of(c, n);
    }
    abort();
}

/* Writes the trace; in a packed one, data chunk `over` (if not SIZE_MAX)
 * gets payload[0..n) instead of its own. */
static int write_trace(struct tw *w, const char *path, bool packed, size_t over, const void *payload,
                       size_t n)
{
    FILE *f = fopen(path, "wb");
    if (!f)
        return -errno;
    struct mt_file_hdr h;
    memset(&h, 0, sizeof h);
    memcpy(h.magic, MT_FILE_MAGIC, 8);
    h.version = w->o.version;
    h.hdr_size = MT_FILE_HDR_SIZE;
    h.flags = w->o.flags | (packed ? MT_FILE_PACKED : 0);
    h.pid = w->o.pid;
    h.ppid = w->o.ppid;
    h.session_pid = w->o.session_pid;
    h.page_size = w->o.page_size;
    h.time_shift = w->o.time_shift;
    h.start_mono_ns = w->o.start_mono_ns;
    h.start_real_ns = w->o.start_real_ns;
    int rc = fwrite(&h, sizeof h, 1, f) == 1 ? 0 : -EIO;
    uint64_t ndata = 0;
    static const uint8_t zeros[4096];
    for (size_t i = 0; rc == 0 && i < w->nchunks; i++) {
        struct tw_chunk *c = &w->chunks[i];
        if (packed) {
            if (c->is_free || packed_empty(c))
                continue;
            size_t len;
            uint8_t *own = payload_of(c, &len);
            const void *data = own;
            if (ndata == over) {
                data = payload;
                len = n;
            }
            size_t bound = ZSTD_compressBound(len);
            void *z = xrealloc(NULL, bound);
            size_t zn = ZSTD_compress(z, bound, data, len, 3);
            if (ZSTD_isError(zn))
                abort();
            rc = put_chunk_hdr(f, MT_CHUNK_ZSTD, c->tid, MT_CHUNK_HDR_SIZE + zn, len,
                               c->seq_base, c->time_base, (uint32_t)zn, mt_crc32(0, z, zn));
            if (rc == 0 && fwrite(z, 1, zn, f) != zn)
                rc = -EIO;
            free(z);
            free(own);
            ndata++;
        } else if (c->is_free) {
            rc = put_chunk_hdr(f, MT_CHUNK_FREE, 0, c->free_size, 0, 0, 0, 0, 0);
            for (uint64_t left = c->free_size - MT_CHUNK_HDR_SIZE; rc == 0 && left;) {
                size_t k = left < sizeof zeros ? (size_t)left : sizeof zeros;
                if (fwrite(zeros, 1, k, f) != k)
                    rc = -EIO;
                left -= k;
            }
        } else {
            rc = put_chunk_hdr(f, MT_CHUNK_RAW, c->tid, MT_CHUNK_HDR_SIZE + c->len + w->o.slack,
                               c->len, c->seq_base, c->time_base, 0, 0);
            if (rc == 0 && c->len && fwrite(c->buf, 1, c->len, f) != c->len)
                rc = -EIO;
            for (uint64_t left = w->o.slack; rc == 0 && left;) {
                size_t k = left < sizeof zeros ? (size_t)left : sizeof zeros;
                if (fwrite(zeros, 1, k, f) != k)
                    rc = -EIO;
                left -= k;
            }
        }
    }
    if (rc == 0 && packed)
        rc = put_chunk_hdr(f, MT_CHUNK_TRAILER, 0, MT_CHUNK_HDR_SIZE, ndata, 0, 0, 0, 0);
    if (fclose(f) != 0 && rc == 0)
        rc = -EIO;
    return rc;
}

int tw_write(struct tw *w, const char *path, bool packed)
{
    return write_trace(w, path, packed, SIZE_MAX, NULL, 0);
}

int tw_write_packed_with(struct tw *w, const char *path, size_t k, const void *payload, size_t n)
{
    return write_trace(w, path, true, k, payload, n);
}

/* ---- expected order -------------------------------------------------------- */

struct tw_sortkey {
    uint64_t seq;
    uint64_t tie;
    size_t idx;
};

static int key_cmp(const void *pa, const void *pb)
{
    const struct tw_sortkey *a = pa, *b = pb;
    if (a->seq != b->seq)
        return a->seq < b->seq ? -1 : 1;
    if (a->tie != b->tie)
        return a->tie < b->tie ? -1 : 1;
    return a->idx < b->idx ? -1 : a->idx > b->idx;
}

size_t tw_expected(struct tw *w, const struct mt_record **recs)
{
    if (!w->sorted) {
        /* Chunk ranks as the reader assigns them: non-empty data chunks by
         * (seq_base, tid, file position). */
        size_t n = w->nchunks;
        struct tw_sortkey *ck = xrealloc(NULL, (n + 1) * sizeof *ck);
        size_t nk = 0;
        for (size_t i = 0; i < n; i++) {
            struct tw_chunk *c = &w->chunks[i];
            if (!c->is_free && c->len)
                ck[nk++] = (struct tw_sortkey){ c->seq_base, (uint64_t)c->tid << 32 | i, i };
        }
        qsort(ck, nk, sizeof *ck, key_cmp);
        uint64_t *rank_of_born = xrealloc(NULL, (w->born + 1) * sizeof *rank_of_born);
        for (size_t r = 0; r < nk; r++)
            rank_of_born[w->chunks[ck[r].idx].born] = r;
        free(ck);

        struct tw_sortkey *k = xrealloc(NULL, (w->nlog + 1) * sizeof *k);
        for (size_t i = 0; i < w->nlog; i++) {
            k[i].seq = w->log[i].rec.seq;
            k[i].tie = ((uint64_t)w->log[i].nonevent << 63) | (rank_of_born[w->log[i].born] << 32);
            k[i].idx = i;
        }
        qsort(k, w->nlog, sizeof *k, key_cmp);

        /* Normalize as the reader does, in merged order: heap records with
         * an address get their block from the live addresses, an allocation
         * at a live address is preceded by the IMPLICIT free of the old
         * block. */
        w->sorted = xrealloc(NULL, (2 * w->nlog + 1) * sizeof *w->sorted);
        struct tw_live *live = NULL;
        size_t nlive = 0, m = 0;
        for (size_t i = 0; i < w->nlog; i++) {
            struct mt_record rec = w->log[k[i].idx].rec;
            if ((rec.type == MT_REC_ALLOC || rec.type == MT_REC_FREE) && rec.has_addr) {
                size_t j = 0;
                while (j < nlive && live[j].addr != rec.addr)
                    j++;
                uint64_t old = j < nlive ? live[j].block : 0;
                if (j < nlive)
                    live[j] = live[--nlive];
                if (rec.type == MT_REC_FREE) {
                    rec.block = old;
                } else {
                    if (old) {
                        struct mt_record im = rec;
                        im.type = MT_REC_FREE;
                        im.kind = MT_FREE_IMPLICIT;
                        im.block = old;
                        w->sorted[m++] = im;
                    }
                    rec.block = rec.seq;
                    live = xrealloc(live, (nlive + 1) * sizeof *live);
                    live[nlive++] = (struct tw_live){ rec.addr, rec.seq };
                }
            }
            w->sorted[m++] = rec;
        }
        w->nsorted = m;
        free(live);
        free(k);
        free(rank_of_born);
    }
    *recs = w->sorted;
    return w->nsorted;
}

#define CMP(field)                                                                      \
    do {                                                                                \
        if (a->field != b->field) {                                                     \
            snprintf(why, n, "%s: %llu != %llu", #field, (unsigned long long)a->field,    \
                     (unsigned long long)b->field);                                     \
            return false;                                                               \
        }                                                                               \
    } while (0)

#define CMPMEM(ptr, len)                                                                \
    do {                                                                                \
        CMP(len);                                                                       \
        if (a->len && memcmp(a->ptr, b->ptr, a->len) != 0) {                            \
            snprintf(why, n, "%s differs", #ptr);                                       \
            return false;                                                               \
        }                                                                               \
    } while (0)

bool tw_rec_equal_ex(const struct mt_record *a, const struct mt_record *b, unsigned flags, char *why,
                     size_t n)
{
    CMP(type);
    CMP(kind);
    CMP(tid);
    CMP(seq);
    CMP(time_ns);
    switch (a->type) {
    case MT_REC_ALLOC:
    case MT_REC_FREE:
        if (!(flags & TW_CMP_NO_ADDR)) {
            CMP(has_addr);
            if (a->has_addr)
                CMP(addr);
        }
        if (!(flags & TW_CMP_NO_BLOCK))
            CMP(block);
        if (a->type == MT_REC_ALLOC) {
            CMP(size);
            CMP(stack_id);
        }
        break;
    case MT_REC_MMAP:
        CMP(prot);
        CMP(flags);
        CMP(stack_id);
        /* fall through */
    case MT_REC_MUNMAP:
        CMP(addr);
        CMP(size);
        break;
    case MT_REC_STACK:
        CMP(stack_id);
        CMP(parent_id);
        CMP(ip);
        break;
    case MT_REC_MODULE:
        CMP(bias);
        if (a->kind == MT_MODULE_LOAD) {
            CMP(nsegs);
            if (a->nsegs && memcmp(a->segs, b->segs, a->nsegs * sizeof *a->segs) != 0) {
                snprintf(why, n, "segments differ");
                return false;
            }
            CMPMEM(build_id, build_id_len);
            CMPMEM(path, path_len);
        }
        break;
    case MT_REC_RSS:
        CMP(rss_bytes);
        break;
    case MT_REC_PROCESS:
        CMP(pid);
        CMP(ppid);
        CMPMEM(exe, exe_len);
        CMPMEM(argv, argv_len);
        break;
    case MT_REC_END:
        CMP(status);
        break;
    case MT_REC_LOST:
        CMP(lost);
        break;
    }
    return true;
}

bool tw_rec_equal(const struct mt_record *a, const struct mt_record *b, char *why, size_t n)
{
    return tw_rec_equal_ex(a, b, 0, why, n);
}
