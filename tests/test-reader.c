/* Tests of the reader library: CRC-32, live table, range set, and the trace
 * reader (round trip in merged order, lazy loading, truncation at every
 * byte, corruption by flipping every byte, header and record errors).
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

/* Reads the whole trace and checks it against the writer's expected merged
 * order: exactly when `exact`, else as a consistent subset (each thread's
 * records a prefix of what was written, global order kept). Returns
 * mt_reader_next's final code; *nread gets the number of records. */
static int check_against(const char *path, struct tw *w, bool exact, size_t *nread,
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
            cr_assert(tw_rec_equal(&rec, &exp[gi], why, sizeof why), "record %zu: %s", gi, why);
            gi++;
        } else {
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
            while (i < nexp && exp[i].tid != rec.tid)
                i++;
            cr_assert(i < nexp, "unexpected record from thread %u", rec.tid);
            cr_assert(tw_rec_equal(&rec, &exp[i], why, sizeof why), "record %zu (tid %u): %s", n,
                      rec.tid, why);
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

static void write_sample(struct tw **wp, const char *path, bool packed, uint64_t slack,
                         uint32_t shift)
{
    struct tw_opts o;
    tw_default_opts(&o);
    o.slack = slack;
    o.time_shift = shift;
    struct tw *w = tw_new(&o);
    tw_build_sample(w);
    cr_assert_eq(tw_write(w, path, packed), 0);
    *wp = w;
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
            struct mt_live_entry e = { addr, step, 7, 9 }, old;
            int rc = mt_live_table_insert(&t, &e, &old);
            cr_assert_eq(rc, model[k] ? 1 : 0);
            if (rc == 1)
                cr_assert_eq(old.size + 1, model[k]);
            else
                live++;
            model[k] = (uint64_t)step + 1;
        } else {
            struct mt_live_entry out;
            int rc = mt_live_table_remove(&t, addr, &out);
            cr_assert_eq(rc, model[k] ? 1 : 0);
            if (rc) {
                cr_assert_eq(out.size + 1, model[k]);
                cr_assert_eq(out.addr, addr);
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
            cr_assert_eq(e->size + 1, model[k]);
    }
    size_t cur = 0, seen = 0;
    struct mt_live_entry e;
    while (mt_live_table_next(&t, &cur, &e)) {
        cr_assert(model[e.addr / 16]);
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

static void round_trip(bool packed, uint64_t slack, uint32_t shift)
{
    char *path = tmp_path();
    struct tw *w;
    write_sample(&w, path, packed, slack, shift);
    size_t n;
    bool partial;
    cr_assert_eq(check_against(path, w, true, &n, &partial), 0);
    cr_assert(!partial);
    const struct mt_record *exp;
    cr_assert_eq(n, tw_expected(w, &exp));

    struct mt_reader *r;
    struct mt_error err;
    cr_assert_eq(mt_reader_open(path, &r, &err), 0);
    const struct mt_trace_info *in = mt_reader_info(r);
    cr_assert_eq(in->version, MT_FORMAT_VERSION);
    cr_assert_eq(in->pid, 4242);
    cr_assert_eq(in->ppid, 1);
    cr_assert_eq(in->session_pid, 4242);
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
    cr_assert_eq(p->pid, 4242);
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
    round_trip(false, 0, 0);
}

Test(reader, round_trip_raw_with_slack_and_shift)
{
    round_trip(false, 100, 3);
}

Test(reader, round_trip_packed)
{
    round_trip(true, 0, 2);
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
        if (rec.type <= MT_REC_MUNMAP) {
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
            tw_alloc(w, 10 + t, 0, (uint64_t)t * 1000000 + i, t, 0x1000 * i, 16, t);
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
    o.version = 2;
    struct tw *w = tw_new(&o);
    tw_build_sample(w);
    cr_assert_eq(tw_write(w, path, false), 0);
    cr_assert_eq(open_err(path, msg, sizeof msg), -ENOTSUP);
    cr_assert(strstr(msg, "format version 2 is newer than this memtrace reads (1)"), "%s", msg);
    tw_destroy(w);
    drop(path);
}

/* ---- reader: truncation --------------------------------------------------------------- */

static void cut_everywhere(bool packed, uint64_t slack)
{
    char *path = tmp_path(), *cut = tmp_path();
    struct tw *w;
    write_sample(&w, path, packed, slack, 1);
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
        int rc = check_against(cut, w, at == len, &n, &partial);
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
    cut_everywhere(false, 0);
}

Test(reader, cut_at_every_byte_raw_slack)
{
    cut_everywhere(false, 24);
}

Test(reader, cut_at_every_byte_packed)
{
    cut_everywhere(true, 0);
}

/* ---- reader: corruption ------------------------------------------------------------------ */

static void flip_everything(bool packed)
{
    char *path = tmp_path(), *bad = tmp_path();
    struct tw *w;
    write_sample(&w, path, packed, 0, 0);
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
    flip_everything(true);
}

Test(reader, flip_every_byte_raw)
{
    flip_everything(false);
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

    raw_with(path, "\xb0", 1);
    cr_assert_eq(read_err(path, msg, sizeof msg, &count), -EBADMSG);
    cr_assert(strstr(msg, "unknown record type 11") && strstr(msg, want), "%s", msg);

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
