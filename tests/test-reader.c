/* Tests of the reader library: CRC-32, live table, range set, and the trace
 * reader (round trip in merged order, RAW and packed streams with and
 * without heap addresses, heap normalization, lazy loading, truncation at
 * every byte, corruption by flipping every byte of the file and of packed
 * payloads, header, record and stream errors).
 *
 * Each test writes its traces to its own temporary files and removes them.
 * Criterion runs tests in separate processes, so they share no state.
 */
#include <criterion/criterion.h>

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "crc32.h"
#include "live-table.h"
#include "range-set.h"
#include "reader.h"
#include "trace-writer.h"

/* ---- helpers --------------------------------------------------------------- */

static char *tmp_path(void)
{
    char *p = strdup("/tmp/mt-test-reader-XXXXXX");
    int fd = mkstemp(p);
    cr_assert(fd >= 0);
    close(fd);
    return p;
}

static void drop(char *p)
{
    unlink(p);
    free(p);
}

static uint8_t *slurp(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    cr_assert(f);
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    uint8_t *b = malloc((size_t)n + 1);
    cr_assert(fread(b, 1, (size_t)n, f) == (size_t)n);
    fclose(f);
    *len = (size_t)n;
    return b;
}

static void spit(const char *path, const void *b, size_t n)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    cr_assert(fd >= 0);
    cr_assert(write(fd, b, n) == (ssize_t)n);
    close(fd);
}

static bool is_implicit(const struct mt_record *r)
{
    return r->type == MT_REC_FREE && r->kind == MT_FREE_IMPLICIT;
}

/* Reads the whole trace and checks it against the writer's expected merged
 * order: exactly when `exact`, else as a consistent subset (each thread's
 * records a prefix of what was written, global order kept; heap blocks and
 * IMPLICIT frees are not compared then, since they depend on which chunks
 * survived). `cmp`: TW_CMP_* flags. Returns mt_reader_next's final code;
 * *nread gets the number of records. */
static int check_against_ex(const char *path, struct tw *w, bool exact, unsigned cmp, size_t *nread,
                            bool *partial)
{
    struct mt_reader *r;
    struct mt_error err;
    int rc = mt_reader_open(path, &r, &err);
    if (rc < 0)
        return rc;
    const struct mt_record *exp;
    size_t nexp = tw_expected(w, &exp);
    struct { uint32_t tid; size_t pos; } cur[64];
    size_t ncur = 0;
    size_t n = 0, gi = 0;
    uint64_t last_seq = 0;
    struct mt_record rec;
    char why[128];
    while ((rc = mt_reader_next(r, &rec)) > 0) {
        cr_assert(rec.seq >= last_seq, "seq went backwards: %llu after %llu",
                  (unsigned long long)rec.seq, (unsigned long long)last_seq);
        last_seq = rec.seq;
        if (exact) {
            cr_assert(gi < nexp, "more records than written");
            cr_assert(tw_rec_equal_ex(&rec, &exp[gi], cmp, why, sizeof why), "record %zu: %s", gi,
                      why);
            gi++;
        } else if (!is_implicit(&rec)) {
            /* Each thread's records must be a prefix of what it wrote. */
            size_t k = 0;
            while (k < ncur && cur[k].tid != rec.tid)
                k++;
            if (k == ncur) {
                cr_assert(ncur < 64);
                cur[ncur].tid = rec.tid;
                cur[ncur++].pos = 0;
            }
            size_t i = cur[k].pos;
            while (i < nexp && (exp[i].tid != rec.tid || is_implicit(&exp[i])))
                i++;
            cr_assert(i < nexp, "unexpected record from thread %u", rec.tid);
            cr_assert(tw_rec_equal_ex(&rec, &exp[i], cmp | TW_CMP_NO_BLOCK, why, sizeof why),
                      "record %zu (tid %u): %s", n, rec.tid, why);
            cur[k].pos = i + 1;
        }
        n++;
    }
    if (exact && rc == 0)
        cr_assert_eq(gi, nexp, "read %zu records, wrote %zu", gi, nexp);
    if (rc < 0)
        cr_assert(strlen(mt_reader_error(r)) > 0);
    if (partial)
        *partial = mt_reader_partial(r);
    *nread = n;
    mt_reader_close(r);
    return rc;
}

static int check_against(const char *path, struct tw *w, bool exact, size_t *nread, bool *partial)
{
    return check_against_ex(path, w, exact, 0, nread, partial);
}

/* The sample trace; `blocks`: packed chunks without heap addresses. */
static void write_sample_ex(struct tw **wp, const char *path, bool packed, bool blocks,
                            uint64_t slack, uint32_t shift)
{
    struct tw_opts o;
    tw_default_opts(&o);
    o.slack = slack;
    o.time_shift = shift;
    o.blocks = blocks;
    struct tw *w = tw_new(&o);
    tw_build_sample(w);
    cr_assert_eq(tw_write(w, path, packed), 0);
    *wp = w;
}

static void write_sample(struct tw **wp, const char *path, bool packed, uint64_t slack,
                         uint32_t shift)
{
    write_sample_ex(wp, path, packed, false, slack, shift);
}

static int open_err(const char *path, char *msg, size_t n)
{
    struct mt_reader *r = NULL;
    struct mt_error err = { "" };
    int rc = mt_reader_open(path, &r, &err);
    if (rc == 0) {
        mt_reader_close(r);
        return 0;
    }
    snprintf(msg, n, "%s", err.msg);
    return rc;
}

/* Reads everything; returns the final code and copies the error. */
static int read_err(const char *path, char *msg, size_t n, size_t *count)
{
    struct mt_reader *r = NULL;
    struct mt_error err = { "" };
    int rc = mt_reader_open(path, &r, &err);
    if (rc < 0) {
        snprintf(msg, n, "%s", err.msg);
        return rc;
    }
    struct mt_record rec;
    size_t c = 0;
    while ((rc = mt_reader_next(r, &rec)) > 0)
        c++;
    snprintf(msg, n, "%s", mt_reader_error(r));
    if (count)
        *count = c;
    mt_reader_close(r);
    return rc;
}

/* ---- crc32 ------------------------------------------------------------------- */

Test(crc32, known_values)
{
    cr_assert_eq(mt_crc32(0, "123456789", 9), 0xCBF43926u);
    cr_assert_eq(mt_crc32(0, "", 0), 0u);
    const char *s = "The quick brown fox jumps over the lazy dog";
    cr_assert_eq(mt_crc32(0, s, strlen(s)), 0x414FA339u);
    /* incremental == one shot, across the 8-byte fast path */
    uint32_t c = mt_crc32(0, s, 5);
    c = mt_crc32(c, s + 5, strlen(s) - 5);
    cr_assert_eq(c, 0x414FA339u);
}

/* ---- live table ----------------------------------------------------------------- */

Test(live_table, matches_a_model)
{
    enum { N = 4096 };
    static uint64_t model[N]; /* size + 1, 0 = absent; key = i * 16 */
    struct mt_live_table t;
    mt_live_table_init(&t);
    uint64_t rng = 12345;
    size_t live = 0;
    for (int step = 0; step < 200000; step++) {
        rng = rng * 6364136223846793005ull + 1442695040888963407ull;
        size_t k = (size_t)(rng >> 33) % N;
        uint64_t addr = (uint64_t)k * 16; /* includes address 0 */
        if ((rng >> 20) & 1) {
            struct mt_live_entry e = { addr, (uint64_t)step }, old;
            int rc = mt_live_table_insert(&t, &e, &old);
            cr_assert_eq(rc, model[k] ? 1 : 0);
            if (rc == 1)
                cr_assert_eq(old.value + 1, model[k]);
            else
                live++;
            model[k] = (uint64_t)step + 1;
        } else {
            struct mt_live_entry out;
            int rc = mt_live_table_remove(&t, addr, &out);
            cr_assert_eq(rc, model[k] ? 1 : 0);
            if (rc) {
                cr_assert_eq(out.value + 1, model[k]);
                cr_assert_eq(out.key, addr);
                live--;
            }
            model[k] = 0;
        }
        cr_assert_eq(mt_live_table_count(&t), live);
    }
    for (size_t k = 0; k < N; k++) {
        struct mt_live_entry *e = mt_live_table_find(&t, (uint64_t)k * 16);
        cr_assert_eq(e != NULL, model[k] != 0);
        if (e)
            cr_assert_eq(e->value + 1, model[k]);
    }
    size_t cur = 0, seen = 0;
    struct mt_live_entry e;
    while (mt_live_table_next(&t, &cur, &e)) {
        cr_assert(model[e.key / 16]);
        seen++;
    }
    cr_assert_eq(seen, live);
    mt_live_table_destroy(&t);
    mt_live_table_destroy(NULL);
}

/* ---- range set ------------------------------------------------------------------ */

static int collect(uint64_t s, uint64_t e, void *arg)
{
    uint8_t *bits = arg;
    cr_assert(s < e);
    for (uint64_t i = s; i < e; i++) {
        cr_assert_eq(bits[i], 0, "ranges overlap");
        bits[i] = 2;
    }
    return 0;
}

Test(range_set, matches_a_bitmap)
{
    enum { SPACE = 2048 };
    static uint8_t model[SPACE], seen[SPACE];
    struct mt_range_set *s;
    cr_assert_eq(mt_range_set_new(&s), 0);
    uint64_t rng = 99;
    for (int step = 0; step < 20000; step++) {
        rng = rng * 6364136223846793005ull + 1442695040888963407ull;
        uint64_t a = (rng >> 33) % SPACE;
        uint64_t len = 1 + (rng >> 13) % ((rng >> 60) ? 40 : 400);
        uint64_t b = a + len > SPACE ? SPACE : a + len;
        if ((rng >> 7) % 3) {
            cr_assert_eq(mt_range_set_insert(s, a, b), 0);
            memset(model + a, 1, b - a);
        } else {
            uint64_t before = 0, removed;
            for (uint64_t i = a; i < b; i++)
                before += model[i];
            cr_assert_eq(mt_range_set_remove(s, a, b, &removed), 0);
            cr_assert_eq(removed, before);
            memset(model + a, 0, b - a);
        }
        uint64_t total = 0;
        for (int i = 0; i < SPACE; i++)
            total += model[i];
        cr_assert_eq(mt_range_set_total(s), total, "step %d", step);
        if (step % 97 == 0) {
            memset(seen, 0, sizeof seen);
            mt_range_set_foreach(s, collect, seen);
            for (int i = 0; i < SPACE; i++) {
                cr_assert_eq(seen[i] == 2, model[i] == 1, "byte %d", i);
                cr_assert_eq(mt_range_set_contains(s, (uint64_t)i), model[i] == 1);
            }
        }
    }
    mt_range_set_free(s);
    mt_range_set_free(NULL);
}

Test(range_set, split_and_span)
{
    struct mt_range_set *s;
    cr_assert_eq(mt_range_set_new(&s), 0);
    uint64_t rm;
    cr_assert_eq(mt_range_set_insert(s, 0x1000, 0x11000), 0);
    cr_assert_eq(mt_range_set_remove(s, 0x5000, 0x9000, &rm), 0); /* hole in the middle */
    cr_assert_eq(rm, 0x4000);
    cr_assert_eq(mt_range_set_count(s), 2);
    cr_assert_eq(mt_range_set_total(s), 0xc000);
    cr_assert_eq(mt_range_set_insert(s, 0x20000, 0x30000), 0);
    cr_assert_eq(mt_range_set_remove(s, 0x3000, 0x28000, &rm), 0); /* spans three */
    cr_assert_eq(rm, 0x2000 + 0x8000 + 0x8000);
    cr_assert_eq(mt_range_set_count(s), 2);
    cr_assert_eq(mt_range_set_total(s), 0x2000 + 0x8000);
    cr_assert(mt_range_set_contains(s, 0x1000));
    cr_assert(!mt_range_set_contains(s, 0x3000));
    cr_assert(mt_range_set_contains(s, 0x28000));
    cr_assert_eq(mt_range_set_remove(s, 0, UINT64_MAX, &rm), 0);
    cr_assert_eq(mt_range_set_total(s), 0);
    cr_assert_eq(mt_range_set_count(s), 0);
    mt_range_set_free(s);
}

/* ---- reader: round trip -------------------------------------------------------------- */

static void round_trip(bool packed, bool blocks, uint64_t slack, uint32_t shift)
{
    char *path = tmp_path();
    struct tw *w;
    write_sample_ex(&w, path, packed, blocks, slack, shift);
    size_t n;
    bool partial;
    cr_assert_eq(check_against_ex(path, w, true, blocks ? TW_CMP_NO_ADDR : 0, &n, &partial), 0);
    cr_assert(!partial);
    const struct mt_record *exp;
    cr_assert_eq(n, tw_expected(w, &exp));
    cr_assert_eq(n, 28); /* 27 written, 1 IMPLICIT free */

    struct mt_reader *r;
    struct mt_error err;
    cr_assert_eq(mt_reader_open(path, &r, &err), 0);
    const struct mt_trace_info *in = mt_reader_info(r);
    cr_assert_eq(in->version, MT_FORMAT_VERSION);
    cr_assert_eq(in->pid, 4242424);
    cr_assert_eq(in->ppid, 1);
    cr_assert_eq(in->session_pid, 4242424);
    cr_assert_eq(in->page_size, 4096);
    cr_assert_eq(in->time_shift, shift);
    cr_assert_eq(in->start_mono_ns, 1000000000ull);
    cr_assert_eq(in->start_real_ns, 1700000000000000000ull);
    cr_assert_eq(in->packed, packed);
    cr_assert_eq(in->threads, 3);
    cr_assert_eq(in->data_chunks, packed ? 5 : 6);
    cr_assert_null(mt_reader_process(r));
    cr_assert(!mt_reader_ended(r));
    struct mt_record rec;
    int rc;
    while ((rc = mt_reader_next(r, &rec)) > 0)
        ;
    cr_assert_eq(rc, 0);
    cr_assert_eq(mt_reader_next(r, &rec), 0); /* stays at the end */
    cr_assert(mt_reader_ended(r));
    const struct mt_process_info *p = mt_reader_process(r);
    cr_assert_not_null(p);
    cr_assert_eq(p->pid, 4242424);
    cr_assert_str_eq(p->exe, "/usr/bin/sample");
    cr_assert_eq(p->argv_len, 17);
    cr_assert_eq(memcmp(p->argv, "sample\0--flag\0x y", 18), 0);
    uint64_t done, total;
    mt_reader_progress(r, &done, &total);
    cr_assert_eq(total, in->file_size);
    cr_assert(done > 0 && done <= total);
    mt_reader_close(r);
    mt_reader_close(NULL);
    tw_destroy(w);
    drop(path);
}

Test(reader, round_trip_raw)
{
    round_trip(false, false, 0, 0);
}

Test(reader, round_trip_raw_with_slack_and_shift)
{
    round_trip(false, false, 100, 3);
}

Test(reader, round_trip_packed)
{
    round_trip(true, false, 0, 2);
}

Test(reader, round_trip_packed_blocks)
{
    round_trip(true, true, 0, 2);
}

Test(reader, merged_order_is_seq_order)
{
    /* Events come out by seq although chunks of thread 200 come first in the
     * file; non-events follow the event before them in their thread. */
    char *path = tmp_path();
    struct tw *w;
    write_sample(&w, path, false, 0, 0);
    struct mt_reader *r;
    struct mt_error err;
    cr_assert_eq(mt_reader_open(path, &r, &err), 0);
    struct mt_record rec;
    uint64_t want = 1;
    uint64_t last_event_seq[1000] = { 0 };
    while (mt_reader_next(r, &rec) > 0) {
        if (rec.type <= MT_REC_MUNMAP && !is_implicit(&rec)) {
            cr_assert_eq(rec.seq, want, "event seq %llu, want %llu", (unsigned long long)rec.seq,
                         (unsigned long long)want);
            want++;
            last_event_seq[rec.tid] = rec.seq;
        } else {
            cr_assert(rec.seq >= last_event_seq[rec.tid]);
        }
    }
    cr_assert_eq(want, 16);
    mt_reader_close(r);
    tw_destroy(w);
    drop(path);
}

Test(reader, seq_base_and_time_base_apply_per_chunk)
{
    char *path = tmp_path();
    struct tw_opts o;
    tw_default_opts(&o);
    o.time_shift = 4;
    struct tw *w = tw_new(&o);
    tw_chunk(w, 7, 1000, 500);
    tw_stack(w, 7, 9, 0, 0x1234); /* non-event first: seq_base, time_base */
    tw_alloc(w, 7, MT_ALLOC_MALLOC, 1001, 501, 0xffff000000000000ull, 8, 9);
    tw_free(w, 7, MT_FREE_FREE, 1002, 501, 0x10); /* negative address delta */
    tw_chunk(w, 7, 2000, 900);
    tw_alloc(w, 7, MT_ALLOC_MALLOC, 2000, 900, 0x20, UINT64_MAX, UINT64_MAX);
    cr_assert_eq(tw_write(w, path, false), 0);
    size_t n;
    cr_assert_eq(check_against(path, w, true, &n, NULL), 0);
    cr_assert_eq(n, 4);
    struct mt_reader *r;
    struct mt_error err;
    cr_assert_eq(mt_reader_open(path, &r, &err), 0);
    struct mt_record rec;
    cr_assert_eq(mt_reader_next(r, &rec), 1);
    cr_assert_eq(rec.type, MT_REC_STACK);
    cr_assert_eq(rec.seq, 1000);
    cr_assert_eq(rec.time_ns, 500u << 4);
    cr_assert_eq(mt_reader_next(r, &rec), 1);
    cr_assert_eq(rec.addr, 0xffff000000000000ull);
    cr_assert_eq(mt_reader_next(r, &rec), 1);
    cr_assert_eq(rec.addr, 0x10);
    cr_assert_eq(mt_reader_next(r, &rec), 1);
    cr_assert_eq(rec.seq, 2000);
    cr_assert_eq(rec.addr, 0x20);
    cr_assert_eq(rec.size, UINT64_MAX);
    cr_assert_eq(mt_reader_next(r, &rec), 0);
    mt_reader_close(r);
    tw_destroy(w);
    drop(path);
}

Test(reader, loads_chunks_lazily)
{
    /* 400 threads, one after the other: only one chunk is ever loaded. */
    char *path = tmp_path();
    struct tw *w = tw_new(NULL);
    uint64_t seq = 1;
    for (uint32_t t = 0; t < 400; t++) {
        tw_chunk(w, 1000 + t, seq - 1, seq);
        for (int i = 0; i < 5; i++, seq++)
            tw_alloc(w, 1000 + t, 0, seq, seq, 0x1000 * seq, 16, 0);
    }
    /* then 8 threads whose chunks overlap in seq */
    for (uint32_t t = 0; t < 8; t++)
        tw_chunk(w, 5000 + t, seq - 1, seq);
    for (int i = 0; i < 80; i++, seq++)
        tw_alloc(w, 5000 + (uint32_t)(i % 8), 0, seq, seq, 0x1000 * seq, 16, 0);
    cr_assert_eq(tw_write(w, path, true), 0);
    size_t n;
    cr_assert_eq(check_against(path, w, true, &n, NULL), 0);
    cr_assert_eq(n, 2080);
    struct mt_reader *r;
    struct mt_error err;
    cr_assert_eq(mt_reader_open(path, &r, &err), 0);
    struct mt_record rec;
    for (int i = 0; i < 2000; i++)
        cr_assert_eq(mt_reader_next(r, &rec), 1);
    cr_assert_eq(mt_reader_max_resident(r), 1);
    while (mt_reader_next(r, &rec) > 0)
        ;
    cr_assert_eq(mt_reader_max_resident(r), 8);
    cr_assert_eq(mt_reader_info(r)->threads, 408);
    mt_reader_close(r);
    tw_destroy(w);
    drop(path);
}

Test(reader, late_threads_are_parked)
{
    /* Like the recorder: every thread's first chunk has seq_base 0 although
     * its events come late; chunks are in reverse file order. Only chunks
     * overlapping in seq may be loaded together. */
    char *path = tmp_path();
    struct tw *w = tw_new(NULL);
    for (uint32_t t = 300; t-- > 0;) {
        tw_chunk(w, 10 + t, 0, 0);
        tw_stack(w, 10 + t, t + 1, 0, 0x400000 + t);
        for (uint64_t i = 1; i <= 4; i++)
            tw_alloc(w, 10 + t, 0, (uint64_t)t * 1000000 + i, t, 0x1000 * (t * 8 + i), 16, t);
        tw_rss(w, 10 + t, 0, t, 4096);
    }
    cr_assert_eq(tw_write(w, path, true), 0);
    size_t n;
    cr_assert_eq(check_against(path, w, true, &n, NULL), 0);
    cr_assert_eq(n, 1800);
    struct mt_reader *r;
    struct mt_error err;
    cr_assert_eq(mt_reader_open(path, &r, &err), 0);
    struct mt_record rec;
    while (mt_reader_next(r, &rec) > 0)
        ;
    cr_assert_leq(mt_reader_max_resident(r), 2);
    mt_reader_close(r);
    tw_destroy(w);
    drop(path);
}

Test(reader, chunk_order_and_tid_reuse)
{
    /* A thread's later chunk placed earlier in the file (reused FREE
     * space), and its tid reused by a new thread starting at seq_base 0. */
    char *path = tmp_path();
    struct tw *w = tw_new(NULL);
    tw_chunk(w, 5, 0, 0);
    tw_alloc(w, 5, 0, 1, 1, 0x100, 1, 0);
    tw_alloc(w, 5, 0, 3, 3, 0x200, 2, 0);
    tw_chunk(w, 6, 0, 0);
    tw_alloc(w, 6, 0, 2, 2, 0x300, 3, 0);
    tw_alloc(w, 6, 0, 4, 4, 0x400, 4, 0);
    tw_chunk(w, 5, 3, 3);
    tw_place_chunk(w, 0);
    tw_lost(w, 5, 1);
    tw_alloc(w, 5, 0, 5, 5, 0x500, 5, 0);
    tw_free(w, 5, 0, 7, 7, 0x100);
    tw_chunk(w, 5, 0, 0); /* tid 5 again, another thread */
    tw_alloc(w, 5, 0, 6, 6, 0x600, 6, 0);
    tw_free(w, 5, 0, 8, 8, 0x600);
    for (int packed = 0; packed < 2; packed++) {
        cr_assert_eq(tw_write(w, path, packed), 0);
        size_t n;
        cr_assert_eq(check_against(path, w, true, &n, NULL), 0);
        cr_assert_eq(n, 9);
    }
    tw_destroy(w);
    drop(path);
}

Test(reader, free_and_empty_chunks_and_zero_tail)
{
    char *path = tmp_path();
    struct tw *w = tw_new(NULL);
    tw_free_chunk(w, 64);
    tw_chunk(w, 1, 0, 0); /* empty */
    tw_free_chunk(w, 4096);
    tw_alloc(w, 2, 0, 1, 1, 0x100, 1, 0);
    cr_assert_eq(tw_write(w, path, false), 0);
    /* reserved space the recorder never wrote into */
    size_t len;
    uint8_t *b = slurp(path, &len);
    b = realloc(b, len + 300);
    memset(b + len, 0, 300);
    spit(path, b, len + 300);
    size_t n;
    bool partial;
    cr_assert_eq(check_against(path, w, true, &n, &partial), 0);
    cr_assert_eq(n, 1);
    cr_assert(!partial);
    free(b);
    tw_destroy(w);
    drop(path);
}

Test(reader, empty_trace)
{
    char *path = tmp_path();
    struct tw *w = tw_new(NULL);
    cr_assert_eq(tw_write(w, path, false), 0);
    size_t n;
    bool partial;
    cr_assert_eq(check_against(path, w, true, &n, &partial), 0);
    cr_assert_eq(n, 0);
    cr_assert(!partial);
    cr_assert_eq(tw_write(w, path, true), 0);
    cr_assert_eq(check_against(path, w, true, &n, &partial), 0);
    cr_assert(!partial);
    tw_destroy(w);
    drop(path);
}

/* ---- reader: header errors ------------------------------------------------------------ */

Test(reader, header_errors)
{
    char *path = tmp_path();
    char msg[256];
    cr_assert_eq(open_err("/nonexistent/x.trace", msg, sizeof msg), -ENOENT);
    cr_assert_str_eq(msg, "cannot open '/nonexistent/x.trace': No such file or directory");
    cr_assert_eq(open_err("/tmp", msg, sizeof msg), -EISDIR);

    spit(path, "", 0);
    cr_assert_eq(open_err(path, msg, sizeof msg), -EINVAL);
    cr_assert(strstr(msg, "not a memtrace trace (too short)"), "%s", msg);
    spit(path, "MEMTRACE\1\0\0\0", 12);
    cr_assert_eq(open_err(path, msg, sizeof msg), -EINVAL);
    cr_assert(strstr(msg, "not a memtrace trace (too short)"), "%s", msg);
    char junk[200];
    memset(junk, 'x', sizeof junk);
    spit(path, junk, sizeof junk);
    cr_assert_eq(open_err(path, msg, sizeof msg), -EINVAL);
    cr_assert(strstr(msg, ": not a memtrace trace") && !strstr(msg, "short"), "%s", msg);

    struct tw_opts o;
    tw_default_opts(&o);
    o.version = MT_FORMAT_VERSION + 1;
    struct tw *w = tw_new(&o);
    tw_build_sample(w);
    cr_assert_eq(tw_write(w, path, false), 0);
    cr_assert_eq(open_err(path, msg, sizeof msg), -ENOTSUP);
    char vmsg[96];
    snprintf(vmsg, sizeof vmsg, "format version %u is newer than this memtrace reads (%u)",
             MT_FORMAT_VERSION + 1, MT_FORMAT_VERSION);
    cr_assert(strstr(msg, vmsg), "%s", msg);
    tw_destroy(w);
    drop(path);
}

/* ---- reader: truncation --------------------------------------------------------------- */

static void cut_everywhere(bool packed, bool blocks, uint64_t slack)
{
    char *path = tmp_path(), *cut = tmp_path();
    struct tw *w;
    write_sample_ex(&w, path, packed, blocks, slack, 1);
    const unsigned cmp = blocks ? TW_CMP_NO_ADDR : 0;
    size_t len;
    uint8_t *b = slurp(path, &len);

    /* chunk boundaries of the whole file */
    struct mt_reader *r;
    struct mt_error err;
    cr_assert_eq(mt_reader_open(path, &r, &err), 0);
    size_t nch = mt_reader_chunk_count(r);
    uint64_t *bound = calloc(nch + 1, sizeof *bound);
    for (size_t i = 0; i < nch; i++) {
        struct mt_chunk_info c;
        mt_reader_chunk(r, i, &c);
        bound[i] = c.offset + c.size;
    }
    mt_reader_close(r);

    const struct mt_record *exp;
    size_t nexp = tw_expected(w, &exp);
    size_t last_n = 0;
    for (size_t at = 0; at <= len; at++) {
        spit(cut, b, at);
        char msg[256];
        if (at < MT_FILE_HDR_SIZE) {
            cr_assert_eq(open_err(cut, msg, sizeof msg), -EINVAL, "cut at %zu", at);
            cr_assert(strstr(msg, "too short"), "cut at %zu: %s", at, msg);
            continue;
        }
        size_t n;
        bool partial;
        int rc = check_against_ex(cut, w, at == len, cmp, &n, &partial);
        cr_assert_eq(rc, 0, "cut at %zu: %d", at, rc);
        bool at_boundary = at == MT_FILE_HDR_SIZE;
        for (size_t i = 0; i < nch; i++)
            at_boundary |= bound[i] == at;
        if (at == len)
            cr_assert(!partial);
        else if (packed || !at_boundary)
            cr_assert(partial, "cut at %zu not partial", at);
        else
            cr_assert(!partial, "cut at chunk boundary %zu is partial", at);
        cr_assert(n >= last_n, "cut at %zu lost records", at);
        last_n = n;
    }
    cr_assert_eq(last_n, nexp);
    free(bound);
    free(b);
    tw_destroy(w);
    drop(path);
    drop(cut);
}

Test(reader, cut_at_every_byte_raw)
{
    cut_everywhere(false, false, 0);
}

Test(reader, cut_at_every_byte_raw_slack)
{
    cut_everywhere(false, false, 24);
}

Test(reader, cut_at_every_byte_packed)
{
    cut_everywhere(true, false, 0);
}

Test(reader, cut_at_every_byte_packed_blocks)
{
    cut_everywhere(true, true, 0);
}

/* ---- reader: corruption ------------------------------------------------------------------ */

static void flip_everything(bool packed, bool blocks)
{
    char *path = tmp_path(), *bad = tmp_path();
    struct tw *w;
    write_sample_ex(&w, path, packed, blocks, 0, 0);
    size_t len;
    uint8_t *b = slurp(path, &len);
    /* where compressed bytes are: a flip there must be caught by the CRC */
    uint8_t *in_stored = calloc(len, 1);
    struct mt_reader *r;
    struct mt_error err;
    cr_assert_eq(mt_reader_open(path, &r, &err), 0);
    for (size_t i = 0; i < mt_reader_chunk_count(r); i++) {
        struct mt_chunk_info c;
        mt_reader_chunk(r, i, &c);
        if (c.type == MT_CHUNK_ZSTD)
            memset(in_stored + c.offset + MT_CHUNK_HDR_SIZE, 1, c.stored);
    }
    mt_reader_close(r);

    static const uint8_t masks[] = { 0x01, 0x10, 0x80, 0xff };
    size_t errors = 0;
    for (size_t at = 0; at < len; at++) {
        for (size_t m = 0; m < sizeof masks; m++) {
            b[at] ^= masks[m];
            spit(bad, b, len);
            b[at] ^= masks[m];
            char msg[256] = "";
            size_t count = 0;
            int rc = read_err(bad, msg, sizeof msg, &count);
            cr_assert(rc <= 0);
            if (rc < 0) {
                cr_assert(strlen(msg) > 0, "flip %zu: error without message", at);
                errors++;
            }
            if (in_stored[at])
                cr_assert(rc < 0 && strstr(msg, "CRC"), "flip in compressed byte %zu: %d %s", at, rc,
                          msg);
        }
    }
    cr_assert(errors > 0);
    free(in_stored);
    free(b);
    tw_destroy(w);
    drop(path);
    drop(bad);
}

Test(reader, flip_every_byte_packed)
{
    flip_everything(true, false);
}

Test(reader, flip_every_byte_packed_blocks)
{
    flip_everything(true, true);
}

Test(reader, flip_every_byte_raw)
{
    flip_everything(false, false);
}

/* A RAW trace of one thread whose payload is `bytes`. */
static void raw_with(const char *path, const void *bytes, size_t n)
{
    struct tw *w = tw_new(NULL);
    tw_chunk(w, 1, 0, 0);
    tw_alloc(w, 1, 0, 1, 1, 0x1000, 8, 0);
    tw_bytes(w, 1, bytes, n);
    cr_assert_eq(tw_write(w, path, false), 0);
    tw_destroy(w);
}

#define REC_OFF (MT_FILE_HDR_SIZE + MT_CHUNK_HDR_SIZE + 7) /* after the 7-byte ALLOC */

Test(reader, record_errors_name_the_offset)
{
    char *path = tmp_path();
    char msg[256], want[64];
    snprintf(want, sizeof want, "at byte offset %u", REC_OFF);
    size_t count;

    raw_with(path, "\0", 1);
    cr_assert_eq(read_err(path, msg, sizeof msg, &count), -EBADMSG);
    cr_assert(strstr(msg, "zero record tag") && strstr(msg, want), "%s", msg);
    cr_assert_eq(count, 1);

    raw_with(path, "\xf0", 1);
    cr_assert_eq(read_err(path, msg, sizeof msg, &count), -EBADMSG);
    cr_assert(strstr(msg, "unknown record type 15") && strstr(msg, want), "%s", msg);

    /* BLOCK records belong to packed chunks only */
    raw_with(path, "\xb0\1\1\1\1", 5);
    cr_assert_eq(read_err(path, msg, sizeof msg, &count), -EBADMSG);
    cr_assert(strstr(msg, "BLOCK_ALLOC record in a RAW chunk") && strstr(msg, want), "%s", msg);
    raw_with(path, "\xc0\1\1\1", 4);
    cr_assert_eq(read_err(path, msg, sizeof msg, &count), -EBADMSG);
    cr_assert(strstr(msg, "BLOCK_FREE record in a RAW chunk") && strstr(msg, want), "%s", msg);

    /* IMPLICIT is a kind of BLOCK_FREE only */
    raw_with(path, "\x22\1\1\1", 4);
    cr_assert_eq(read_err(path, msg, sizeof msg, &count), -EBADMSG);
    cr_assert(strstr(msg, "unknown FREE kind 2") && strstr(msg, want), "%s", msg);

    raw_with(path, "\x1f\1\1\1\1\1", 6); /* ALLOC kind 15 */
    cr_assert_eq(read_err(path, msg, sizeof msg, &count), -EBADMSG);
    cr_assert(strstr(msg, "kind") && strstr(msg, want), "%s", msg);

    static const uint8_t overflow[] = { 0x10, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x02 };
    raw_with(path, overflow, sizeof overflow);
    cr_assert_eq(read_err(path, msg, sizeof msg, &count), -EBADMSG);
    cr_assert(strstr(msg, "varint overflow") && strstr(msg, want), "%s", msg);

    static const uint8_t too_long[] = { 0x10, 1, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x01 };
    raw_with(path, too_long, sizeof too_long);
    cr_assert_eq(read_err(path, msg, sizeof msg, &count), -EBADMSG);

    static const uint8_t parent[] = { 0x50, 3, 4, 0 }; /* parent id above the node's */
    raw_with(path, parent, sizeof parent);
    cr_assert_eq(read_err(path, msg, sizeof msg, &count), -EBADMSG);
    cr_assert(strstr(msg, "stack node 3 with parent delta 4") && strstr(msg, want), "%s", msg);
    static const uint8_t self_parent[] = { 0x50, 3, 0, 0 };
    raw_with(path, self_parent, sizeof self_parent);
    cr_assert_eq(read_err(path, msg, sizeof msg, &count), -EBADMSG);
    static const uint8_t stack_kind[] = { 0x51, 3, 1, 0 };
    raw_with(path, stack_kind, sizeof stack_kind);
    cr_assert_eq(read_err(path, msg, sizeof msg, &count), -EBADMSG);

    static const uint8_t long_path[] = { 0x60, 0, 0, 0, 0x81, 0x80, 0x01 }; /* path 16385 */
    raw_with(path, long_path, sizeof long_path);
    cr_assert_eq(read_err(path, msg, sizeof msg, &count), -EBADMSG);
    static const uint8_t short_path[] = { 0x60, 0, 0, 0, 100, 'a' }; /* runs past the chunk */
    raw_with(path, short_path, sizeof short_path);
    cr_assert_eq(read_err(path, msg, sizeof msg, &count), -EBADMSG);
    cr_assert(strstr(msg, "runs past the end") && strstr(msg, want), "%s", msg);
    static const uint8_t segs[] = { 0x60, 0, 17 };
    raw_with(path, segs, sizeof segs);
    cr_assert_eq(read_err(path, msg, sizeof msg, &count), -EBADMSG);
    static const uint8_t argv[] = { 0x80, 1, 1, 0, 0x81, 0x80, 0x04 }; /* 65537 */
    raw_with(path, argv, sizeof argv);
    cr_assert_eq(read_err(path, msg, sizeof msg, &count), -EBADMSG);
    static const uint8_t end_kind[] = { 0x97, 0, 0 };
    raw_with(path, end_kind, sizeof end_kind);
    cr_assert_eq(read_err(path, msg, sizeof msg, &count), -EBADMSG);
    drop(path);
}

static void patch(const char *path, uint64_t off, const void *bytes, size_t n)
{
    int fd = open(path, O_WRONLY);
    cr_assert(fd >= 0);
    cr_assert(pwrite(fd, bytes, n, (off_t)off) == (ssize_t)n);
    close(fd);
}

Test(reader, chunk_errors)
{
    char *path = tmp_path();
    char msg[256];
    struct tw *w;
    write_sample(&w, path, true, 0, 0);
    struct mt_reader *r;
    struct mt_error err;
    cr_assert_eq(mt_reader_open(path, &r, &err), 0);
    struct mt_chunk_info c1, last;
    mt_reader_chunk(r, 1, &c1);
    mt_reader_chunk(r, mt_reader_chunk_count(r) - 1, &last);
    mt_reader_close(r);
    cr_assert_eq(last.type, MT_CHUNK_TRAILER);
    size_t len;
    uint8_t *orig = slurp(path, &len);
    char want[64];

    /* bad magic in the middle */
    patch(path, c1.offset, "XXXX", 4);
    snprintf(want, sizeof want, "bad chunk magic at byte offset %llu", (unsigned long long)c1.offset);
    cr_assert_eq(open_err(path, msg, sizeof msg), -EBADMSG);
    cr_assert(strstr(msg, want), "%s", msg);
    spit(path, orig, len);

    /* CRC mismatch */
    uint32_t crc = c1.crc ^ 1;
    patch(path, c1.offset + offsetof(struct mt_chunk_hdr, crc), &crc, 4);
    cr_assert_eq(read_err(path, msg, sizeof msg, NULL), -EBADMSG);
    snprintf(want, sizeof want, "CRC mismatch in the chunk at byte offset %llu",
             (unsigned long long)c1.offset);
    cr_assert(strstr(msg, want), "%s", msg);
    spit(path, orig, len);

    /* wrong decompressed length */
    uint64_t used = c1.used + 1;
    patch(path, c1.offset + offsetof(struct mt_chunk_hdr, used), &used, 8);
    cr_assert_eq(read_err(path, msg, sizeof msg, NULL), -EBADMSG);
    spit(path, orig, len);

    /* absurd decompressed length is refused before any allocation */
    used = UINT64_MAX / 2;
    patch(path, c1.offset + offsetof(struct mt_chunk_hdr, used), &used, 8);
    cr_assert_eq(open_err(path, msg, sizeof msg), -EBADMSG);
    spit(path, orig, len);

    /* trailer count */
    uint64_t count = 99;
    patch(path, last.offset + offsetof(struct mt_chunk_hdr, used), &count, 8);
    cr_assert_eq(open_err(path, msg, sizeof msg), -EBADMSG);
    cr_assert(strstr(msg, "trailer counts 99"), "%s", msg);
    spit(path, orig, len);

    /* data after the trailer */
    uint8_t *more = malloc(len + 64);
    memcpy(more, orig, len);
    memcpy(more + len, orig + last.offset, 64);
    spit(path, more, len + 64);
    cr_assert_eq(open_err(path, msg, sizeof msg), -EBADMSG);
    free(more);

    /* unknown chunk type, bad header size, size too small */
    spit(path, orig, len);
    uint16_t v = 9;
    patch(path, c1.offset + offsetof(struct mt_chunk_hdr, type), &v, 2);
    cr_assert_eq(open_err(path, msg, sizeof msg), -EBADMSG);
    cr_assert(strstr(msg, "unknown chunk type 9"), "%s", msg);
    spit(path, orig, len);
    v = 32;
    patch(path, c1.offset + offsetof(struct mt_chunk_hdr, hdr_size), &v, 2);
    cr_assert_eq(open_err(path, msg, sizeof msg), -EBADMSG);
    spit(path, orig, len);
    uint64_t size = 10;
    patch(path, c1.offset + offsetof(struct mt_chunk_hdr, size), &size, 8);
    cr_assert_eq(open_err(path, msg, sizeof msg), -EBADMSG);

    /* packed without trailer: partial, everything else read */
    spit(path, orig, last.offset);
    size_t n;
    bool partial;
    cr_assert_eq(check_against(path, w, true, &n, &partial), 0);
    cr_assert(partial);

    free(orig);
    tw_destroy(w);
    drop(path);
}

Test(reader, raw_used_beyond_size_is_corrupt)
{
    char *path = tmp_path();
    char msg[256];
    struct tw *w;
    write_sample(&w, path, false, 0, 0);
    uint64_t used = 1 << 20;
    patch(path, MT_FILE_HDR_SIZE + offsetof(struct mt_chunk_hdr, used), &used, 8);
    cr_assert_eq(open_err(path, msg, sizeof msg), -EBADMSG);
    char want[64];
    snprintf(want, sizeof want, "at byte offset %u", MT_FILE_HDR_SIZE);
    cr_assert(strstr(msg, want), "%s", msg);
    tw_destroy(w);
    drop(path);
}

/* ---- reader: heap normalization ------------------------------------------------------ */

static void next_ok(struct mt_reader *r, struct mt_record *rec)
{
    cr_assert_eq(mt_reader_next(r, rec), 1, "%s", mt_reader_error(r));
}

/* A cross-thread free, a double free, an allocation at a live address, a
 * free of an unknown address; read as RAW, packed with addresses and
 * packed without. */
static void heap_events(struct tw *w)
{
    tw_alloc(w, 1, MT_ALLOC_MALLOC, 1, 10, 0xa000, 10, 0);
    tw_alloc(w, 1, MT_ALLOC_CALLOC, 2, 11, 0xb000, 20, 0);
    tw_free(w, 2, MT_FREE_FREE, 3, 12, 0xa000);      /* block 1, other thread */
    tw_free(w, 2, MT_FREE_FREE, 4, 13, 0xa000);      /* double free: unknown */
    tw_alloc(w, 2, MT_ALLOC_MALLOC, 5, 14, 0xb000, 30, 0); /* 0xb000 still live */
    tw_free(w, 1, MT_FREE_REALLOC, 6, 15, 0xb000);   /* the new block, 5 */
    tw_free(w, 1, MT_FREE_FREE, 7, 16, 0xc000);      /* never allocated */
}

static void check_heap_events(const char *path, bool addrs)
{
    struct mt_reader *r;
    struct mt_error err;
    cr_assert_eq(mt_reader_open(path, &r, &err), 0, "%s", err.msg);
    struct mt_record rec;
    static const struct {
        uint8_t type, kind;
        uint32_t tid;
        uint64_t seq, block, addr;
    } want[] = {
        { MT_REC_ALLOC, MT_ALLOC_MALLOC, 1, 1, 1, 0xa000 },
        { MT_REC_ALLOC, MT_ALLOC_CALLOC, 1, 2, 2, 0xb000 },
        { MT_REC_FREE, MT_FREE_FREE, 2, 3, 1, 0xa000 },
        { MT_REC_FREE, MT_FREE_FREE, 2, 4, 0, 0xa000 },
        { MT_REC_FREE, MT_FREE_IMPLICIT, 2, 5, 2, 0xb000 },
        { MT_REC_ALLOC, MT_ALLOC_MALLOC, 2, 5, 5, 0xb000 },
        { MT_REC_FREE, MT_FREE_REALLOC, 1, 6, 5, 0xb000 },
        { MT_REC_FREE, MT_FREE_FREE, 1, 7, 0, 0xc000 },
    };
    for (size_t i = 0; i < sizeof want / sizeof *want; i++) {
        next_ok(r, &rec);
        cr_assert_eq(rec.type, want[i].type, "record %zu", i);
        cr_assert_eq(rec.kind, want[i].kind, "record %zu", i);
        cr_assert_eq(rec.tid, want[i].tid, "record %zu", i);
        cr_assert_eq(rec.seq, want[i].seq, "record %zu", i);
        cr_assert_eq(rec.time_ns, want[i].seq + 9, "record %zu", i);
        cr_assert_eq(rec.block, want[i].block, "record %zu: block %llu", i,
                     (unsigned long long)rec.block);
        /* Without addresses only frees of unknown blocks keep theirs. */
        bool has = addrs || (rec.type == MT_REC_FREE && want[i].block == 0);
        cr_assert_eq(rec.has_addr, has, "record %zu", i);
        if (has)
            cr_assert_eq(rec.addr, want[i].addr, "record %zu", i);
        if (rec.type == MT_REC_ALLOC)
            cr_assert_eq(rec.size, want[i].seq == 5 ? 30u : want[i].seq * 10, "record %zu", i);
        if (rec.kind == MT_FREE_IMPLICIT && rec.type == MT_REC_FREE)
            cr_assert(!rec.chunk_last);
    }
    cr_assert_eq(mt_reader_next(r, &rec), 0, "%s", mt_reader_error(r));
    mt_reader_close(r);
}

Test(reader, heap_normalization)
{
    char *path = tmp_path();
    for (int mode = 0; mode < 3; mode++) { /* RAW, packed, packed without addresses */
        struct tw_opts o;
        tw_default_opts(&o);
        o.blocks = mode == 2;
        struct tw *w = tw_new(&o);
        heap_events(w);
        cr_assert_eq(tw_write(w, path, mode > 0), 0);
        check_heap_events(path, mode < 2);
        size_t n;
        cr_assert_eq(check_against_ex(path, w, true, mode == 2 ? TW_CMP_NO_ADDR : 0, &n, NULL), 0);
        cr_assert_eq(n, 8);
        tw_destroy(w);
    }
    drop(path);
}

Test(reader, block_records)
{
    /* BLOCK records written by hand: references across threads and
     * chunks, every free kind, a free with an address in a packed chunk. */
    char *path = tmp_path();
    struct tw *w = tw_new(NULL);
    tw_chunk(w, 1, 0, 0);
    tw_block_alloc(w, 1, MT_ALLOC_MALLOC, 1, 1, 100, 7);
    tw_block_alloc(w, 1, MT_ALLOC_ALIGNED_ALLOC, 2, 2, 200, 0);
    tw_chunk(w, 2, 0, 0);
    tw_block_free(w, 2, MT_FREE_FREE, 3, 3, 1);
    tw_block_free(w, 2, MT_FREE_IMPLICIT, 4, 4, 2);
    tw_block_alloc(w, 2, MT_ALLOC_REALLOC, 4, 4, 300, 0);
    tw_chunk(w, 1, 2, 2);
    tw_block_free(w, 1, MT_FREE_REALLOC, 5, 5, 4);
    tw_free(w, 1, MT_FREE_FREE, 6, 6, 0x1234);         /* no allocation in the trace */
    tw_alloc(w, 1, MT_ALLOC_MALLOC, 7, 7, 0x1234, 1, 0); /* addresses kept */
    tw_free(w, 2, MT_FREE_FREE, 8, 8, 0x1234);
    cr_assert_eq(tw_write(w, path, true), 0);
    size_t n;
    cr_assert_eq(check_against(path, w, true, &n, NULL), 0);
    cr_assert_eq(n, 9);
    const struct mt_record *exp;
    tw_expected(w, &exp);
    static const uint64_t blocks[] = { 1, 2, 1, 2, 4, 4, 0, 7, 7 };
    for (int i = 0; i < 9; i++)
        cr_assert_eq(exp[i].block, blocks[i], "record %d", i);

    struct mt_reader *r;
    struct mt_error err;
    cr_assert_eq(mt_reader_open(path, &r, &err), 0);
    struct mt_record rec;
    next_ok(r, &rec);
    cr_assert_eq(rec.type, MT_REC_ALLOC);
    cr_assert(!rec.has_addr);
    cr_assert_eq(rec.block, 1);
    cr_assert_eq(rec.stack_id, 7);
    next_ok(r, &rec);
    next_ok(r, &rec);
    cr_assert_eq(rec.type, MT_REC_FREE);
    cr_assert_eq(rec.tid, 2);
    cr_assert_eq(rec.block, 1);
    cr_assert(!rec.has_addr);
    next_ok(r, &rec);
    cr_assert_eq(rec.kind, MT_FREE_IMPLICIT);
    cr_assert_eq(rec.seq, 4);
    cr_assert_eq(rec.block, 2);
    next_ok(r, &rec);
    cr_assert_eq(rec.type, MT_REC_ALLOC);
    cr_assert_eq(rec.seq, 4);
    cr_assert_eq(rec.kind, MT_ALLOC_REALLOC);
    cr_assert(!rec.chunk_last); /* the free at seq 8 follows in that chunk */
    mt_reader_close(r);

    /* in a RAW file they are corrupt */
    cr_assert_eq(tw_write(w, path, false), 0);
    char msg[256];
    cr_assert_eq(read_err(path, msg, sizeof msg, NULL), -EBADMSG);
    cr_assert(strstr(msg, "BLOCK_ALLOC record in a RAW chunk"), "%s", msg);
    tw_destroy(w);
    drop(path);
}

Test(reader, chunk_index_and_last_record)
{
    char *path = tmp_path();
    for (int mode = 0; mode < 3; mode++) {
        struct tw *w;
        write_sample_ex(&w, path, mode > 0, mode == 2, 0, 0);
        struct mt_reader *r;
        struct mt_error err;
        cr_assert_eq(mt_reader_open(path, &r, &err), 0);
        size_t nch = mt_reader_chunk_count(r);
        size_t *left = calloc(nch, sizeof *left); /* records seen after the last */
        bool *ended = calloc(nch, sizeof *ended);
        struct mt_record rec;
        int rc;
        size_t n = 0;
        while ((rc = mt_reader_next(r, &rec)) > 0) {
            cr_assert_lt(rec.chunk, nch);
            struct mt_chunk_info c;
            cr_assert_eq(mt_reader_chunk(r, rec.chunk, &c), 0);
            cr_assert(c.type == MT_CHUNK_RAW || c.type == MT_CHUNK_ZSTD);
            cr_assert_eq(rec.tid, c.tid);
            cr_assert_geq(rec.seq, c.seq_base);
            if (ended[rec.chunk])
                left[rec.chunk]++;
            if (rec.chunk_last)
                ended[rec.chunk] = true;
            n++;
        }
        cr_assert_eq(rc, 0);
        cr_assert_eq(n, 28);
        size_t nended = 0;
        for (size_t i = 0; i < nch; i++) {
            cr_assert_eq(left[i], 0, "chunk %zu has records after its last", i);
            nended += ended[i];
        }
        cr_assert_eq(nended, 5); /* every non-empty data chunk ends once */
        free(left);
        free(ended);
        mt_reader_close(r);
        tw_destroy(w);
    }
    drop(path);
}

Test(reader, ties_do_not_depend_on_file_order)
{
    /* Non-events at one seq in two chunks: the smaller tid comes first,
     * wherever its chunk is in the file. */
    char *path = tmp_path();
    for (int swap = 0; swap < 2; swap++) {
        struct tw *w = tw_new(NULL);
        tw_chunk(w, 7, 0, 0);
        tw_stack(w, 7, 1, 0, 0x700);
        tw_alloc(w, 7, 0, 1, 1, 0x10, 1, 1);
        tw_chunk(w, 3, 0, 0);
        tw_stack(w, 3, 2, 0, 0x300);
        tw_alloc(w, 3, 0, 2, 2, 0x20, 1, 2);
        if (swap)
            tw_place_chunk(w, 0);
        cr_assert_eq(tw_write(w, path, false), 0);
        size_t n;
        cr_assert_eq(check_against(path, w, true, &n, NULL), 0);
        struct mt_reader *r;
        struct mt_error err;
        cr_assert_eq(mt_reader_open(path, &r, &err), 0);
        struct mt_record rec;
        next_ok(r, &rec);
        cr_assert_eq(rec.tid, 3);
        cr_assert_eq(rec.ip, 0x300);
        next_ok(r, &rec);
        cr_assert_eq(rec.tid, 7);
        mt_reader_close(r);
        tw_destroy(w);
    }
    drop(path);
}

/* ---- reader: packed streams ----------------------------------------------------------- */

/* A packed payload from MT_STREAM_COUNT (bytes, length) pairs. */
static size_t make_payload(uint8_t *out, const char *const st[MT_STREAM_COUNT],
                           const size_t len[MT_STREAM_COUNT])
{
    uint8_t *p = out;
    for (int i = 0; i < MT_STREAM_COUNT; i++)
        p = mt_put_varint(p, len[i]);
    for (int i = 0; i < MT_STREAM_COUNT; i++) {
        memcpy(p, st[i], len[i]);
        p += len[i];
    }
    return (size_t)(p - out);
}

/* Writes a one-chunk packed trace whose payload is payload[0..n) and reads
 * it; returns the final code, the message and the records read. */
static int read_payload(const char *path, const void *payload, size_t n, char *msg, size_t mlen,
                        size_t *count)
{
    struct tw *w = tw_new(NULL);
    tw_chunk(w, 9, 0, 0);
    tw_lost(w, 9, 1); /* any record: the payload is replaced */
    cr_assert_eq(tw_write_packed_with(w, path, 0, payload, n), 0);
    tw_destroy(w);
    return read_err(path, msg, mlen, count);
}

#define CHUNK0 "compressed chunk at byte offset 128"

Test(reader, stream_errors)
{
    char *path = tmp_path();
    char msg[256];
    uint8_t buf[256];
    size_t count, n;
    /* a good chunk: BLOCK_ALLOC, BLOCK_FREE, RSS */
    const char *st[MT_STREAM_COUNT] = { "\xb0\xc0\x70", "\x01\x02", "\x05\x01\x03", "",
                                        "\x10", "\x00", "\x02", "\x80\x01" };
    size_t len[MT_STREAM_COUNT] = { 3, 2, 3, 0, 1, 1, 1, 2 };
    n = make_payload(buf, st, len);
    cr_assert_eq(read_payload(path, buf, n, msg, sizeof msg, &count), 0, "%s", msg);
    cr_assert_eq(count, 3);

    /* one byte more, or less, than the lengths say */
    buf[n] = 0;
    cr_assert_eq(read_payload(path, buf, n + 1, msg, sizeof msg, &count), -EBADMSG);
    cr_assert(strstr(msg, "stream lengths add up to 13 bytes, not the 14") && strstr(msg, CHUNK0),
              "%s", msg);
    cr_assert_eq(count, 0);
    cr_assert_eq(read_payload(path, buf, n - 1, msg, sizeof msg, &count), -EBADMSG);
    cr_assert(strstr(msg, "stream lengths") && strstr(msg, CHUNK0), "%s", msg);
    /* a length runs past the payload */
    uint8_t big[MT_STREAM_COUNT + 2];
    memset(big, 0, sizeof big);
    big[4] = 0xff;
    big[5] = 0x7f;
    cr_assert_eq(read_payload(path, big, sizeof big, msg, sizeof msg, &count), -EBADMSG);
    cr_assert(strstr(msg, "stream lengths") && strstr(msg, CHUNK0), "%s", msg);
    /* a length that is not a varint */
    uint8_t ovf[12];
    memset(ovf, 0xff, sizeof ovf);
    cr_assert_eq(read_payload(path, ovf, sizeof ovf, msg, sizeof msg, &count), -EBADMSG);
    cr_assert(strstr(msg, "bad length of the TAG stream") && strstr(msg, CHUNK0), "%s", msg);
    /* streams but no records */
    uint8_t norec[MT_STREAM_COUNT + 1] = { 0, 0, 0, 0, 0, 0, 0, 1, 5 };
    cr_assert_eq(read_payload(path, norec, sizeof norec, msg, sizeof msg, &count), -EBADMSG);
    cr_assert(strstr(msg, "streams without records") && strstr(msg, CHUNK0), "%s", msg);
    /* no streams at all: an empty chunk */
    uint8_t none[MT_STREAM_COUNT] = { 0 };
    cr_assert_eq(read_payload(path, none, sizeof none, msg, sizeof msg, &count), 0, "%s", msg);
    cr_assert_eq(count, 0);

    /* a stream not used up */
    const char *extra[MT_STREAM_COUNT] = { "\xb0\xc0\x70", "\x01\x02", "\x05\x01\x03", "",
                                           "\x10\x11", "\x00", "\x02", "\x80\x01" };
    size_t elen[MT_STREAM_COUNT] = { 3, 2, 3, 0, 2, 1, 1, 2 };
    n = make_payload(buf, extra, elen);
    cr_assert_eq(read_payload(path, buf, n, msg, sizeof msg, &count), -EBADMSG);
    cr_assert(strstr(msg, "1 bytes left in the SIZE stream after the last record") &&
              strstr(msg, "record 2 of the " CHUNK0), "%s", msg);
    cr_assert_eq(count, 2);
    /* a stream that ends inside a record */
    size_t slen[MT_STREAM_COUNT] = { 3, 2, 3, 0, 1, 1, 0, 2 };
    n = make_payload(buf, st, slen);
    cr_assert_eq(read_payload(path, buf, n, msg, sizeof msg, &count), -EBADMSG);
    cr_assert(strstr(msg, "the REF stream ends inside the record") &&
              strstr(msg, "record 1 of the " CHUNK0), "%s", msg);
    cr_assert_eq(count, 1);
    /* varint overflow in a stream */
    const char *vo[MT_STREAM_COUNT] = { "\xb0", "\x01", "\x01", "",
                                        "\xff\xff\xff\xff\xff\xff\xff\xff\xff\x7f", "\x00", "", "" };
    size_t volen[MT_STREAM_COUNT] = { 1, 1, 1, 0, 10, 1, 0, 0 };
    n = make_payload(buf, vo, volen);
    cr_assert_eq(read_payload(path, buf, n, msg, sizeof msg, &count), -EBADMSG);
    cr_assert(strstr(msg, "varint overflow in the SIZE stream") && strstr(msg, CHUNK0), "%s", msg);
    /* BLOCK_FREE kinds stop at IMPLICIT */
    const char *kind[MT_STREAM_COUNT] = { "\xc3", "\x01", "\x01", "", "", "", "\x01", "" };
    size_t klen[MT_STREAM_COUNT] = { 1, 1, 1, 0, 0, 0, 1, 0 };
    n = make_payload(buf, kind, klen);
    cr_assert_eq(read_payload(path, buf, n, msg, sizeof msg, &count), -EBADMSG);
    cr_assert(strstr(msg, "unknown BLOCK_FREE kind 3") && strstr(msg, CHUNK0), "%s", msg);
    /* byte strings come from MISC */
    const char *proc[MT_STREAM_COUNT] = { "\x80", "", "", "", "", "", "", "\x01\x02\x03xyz\x00" };
    size_t plen[MT_STREAM_COUNT] = { 1, 0, 0, 0, 0, 0, 0, 7 };
    n = make_payload(buf, proc, plen);
    cr_assert_eq(read_payload(path, buf, n, msg, sizeof msg, &count), 0, "%s", msg);
    plen[MT_STREAM_MISC] = 5; /* "xyz" cut */
    n = make_payload(buf, proc, plen);
    cr_assert_eq(read_payload(path, buf, n, msg, sizeof msg, &count), -EBADMSG);
    cr_assert(strstr(msg, "the MISC stream ends inside the record"), "%s", msg);
    drop(path);
}

/* Every byte of every packed payload flipped, every payload cut short and
 * made longer, recompressed with a good CRC: never a crash, errors name
 * what they found. */
static void mangle_payloads(bool blocks)
{
    char *path = tmp_path();
    struct tw *w;
    write_sample_ex(&w, path, true, blocks, 0, 0);
    static const uint8_t masks[] = { 0x01, 0x02, 0x40, 0x80, 0xff };
    size_t errors = 0, tries = 0;
    for (size_t k = 0; k < 5; k++) {
        size_t n;
        uint8_t *pl = tw_packed_payload(w, k, &n);
        uint8_t *b = malloc(n + 1);
        char msg[256];
        size_t count;
        for (size_t at = 0; at < n; at++) {
            for (size_t m = 0; m < sizeof masks; m++) {
                memcpy(b, pl, n);
                b[at] ^= masks[m];
                cr_assert_eq(tw_write_packed_with(w, path, k, b, n), 0);
                int rc = read_err(path, msg, sizeof msg, &count);
                cr_assert(rc <= 0);
                if (rc < 0) {
                    cr_assert(strstr(msg, "corrupt trace:"), "chunk %zu byte %zu: %s", k, at, msg);
                    errors++;
                }
                tries++;
            }
        }
        for (size_t cut = 1; cut < n; cut++) {
            cr_assert_eq(tw_write_packed_with(w, path, k, pl, cut), 0);
            cr_assert_eq(read_err(path, msg, sizeof msg, &count), -EBADMSG, "cut %zu", cut);
            cr_assert(strstr(msg, "compressed chunk at byte offset"), "%s", msg);
        }
        memcpy(b, pl, n);
        b[n] = 1;
        cr_assert_eq(tw_write_packed_with(w, path, k, b, n + 1), 0);
        cr_assert_eq(read_err(path, msg, sizeof msg, &count), -EBADMSG);
        cr_assert(strstr(msg, "stream lengths"), "%s", msg);
        free(b);
        free(pl);
    }
    cr_assert(errors > tries / 4, "%zu errors in %zu tries", errors, tries);
    tw_destroy(w);
    drop(path);
}

Test(reader, mangle_packed_payloads)
{
    mangle_payloads(false);
}

Test(reader, mangle_packed_payloads_blocks)
{
    mangle_payloads(true);
}
