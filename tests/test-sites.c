/* Tests of the sites module (analyzer/sites.c): exact per-site numbers fed
 * through its API (bytes live at the heap peak, including sites whose bytes
 * change after the peak and peaks that move, leaks, temporaries with the
 * cross-thread and in-between cases, the size histogram, the timeline and
 * the call tree), a comparison with a brute-force model on random event
 * streams, and one real program: tests/programs/patterns.c `basic` run
 * under libmemtrace.so, whose report must name `basic` in patterns.c as its
 * top site (paths from MEMTRACE_TEST_LIB and MEMTRACE_TEST_PATTERNS).
 */
#include <criterion/criterion.h>

#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "memtrace-format.h"
#include "report.h"
#include "sites.h"
#include "test-util.h"

static const struct mt_site *site(const struct mt_sites *s, uint64_t stack)
{
    long i = mt_sites_find(s, stack);
    cr_assert_geq(i, 0, "no site for stack %llu", (unsigned long long)stack);
    return &s->sites[i];
}

static void alloc(struct mt_sites *s, uint64_t block, uint64_t size, uint64_t stack, uint32_t tid,
                  uint64_t t)
{
    cr_assert_eq(mt_sites_alloc(s, block, size, stack, tid, t), 0);
}

static int release(struct mt_sites *s, uint64_t block, uint32_t tid, uint64_t t)
{
    int rc = mt_sites_free(s, block, tid, t, false, NULL);
    cr_assert_geq(rc, 0);
    return rc;
}

/* A, B, C allocate; the peak is reached when C allocates; afterwards B's
 * and A's bytes change and a site D appears. */
static void peak_scenario(struct mt_sites *s)
{
    mt_sites_init(s);
    alloc(s, 1, 100, 10, 1, 1);  /* A */
    alloc(s, 2, 200, 20, 1, 2);  /* B: live 300, first peak */
    cr_assert_eq(release(s, 1, 1, 3), 1);
    alloc(s, 3, 50, 20, 1, 4);   /* B: 250, live 250 */
    alloc(s, 4, 400, 30, 1, 5);  /* C: peak 650 = A 0 + B 250 + C 400 */
    cr_assert_eq(release(s, 2, 1, 6), 1); /* B: 50 after the peak */
    alloc(s, 5, 10, 10, 1, 7);   /* A: 10 after the peak */
    alloc(s, 6, 1, 40, 2, 8);    /* D: new after the peak */
}

Test(sites, bytes_at_peak_with_changes_after_it)
{
    struct mt_sites s;
    peak_scenario(&s);
    mt_sites_finish(&s, 8);
    cr_assert_eq(s.peak_bytes, 650);
    cr_assert_eq(s.peak_time_ns, 5);
    cr_assert_eq(s.live_bytes, 461);
    cr_assert_eq(s.nsites, 4);
    const struct mt_site *a = site(&s, 10), *b = site(&s, 20), *c = site(&s, 30), *d = site(&s, 40);
    cr_assert_eq(a->peak_bytes, 0);
    cr_assert_eq(a->peak_count, 0);
    cr_assert_eq(b->peak_bytes, 250);
    cr_assert_eq(b->peak_count, 2);
    cr_assert_eq(c->peak_bytes, 400);
    cr_assert_eq(c->peak_count, 1);
    cr_assert_eq(d->peak_bytes, 0);
    /* live at the end */
    cr_assert_eq(a->live_bytes, 10);
    cr_assert_eq(b->live_bytes, 50);
    cr_assert_eq(b->live_count, 1);
    cr_assert_eq(c->live_bytes, 400);
    cr_assert_eq(d->live_bytes, 1);
    /* allocations */
    cr_assert_eq(a->alloc_count, 2);
    cr_assert_eq(a->alloc_bytes, 110);
    cr_assert_eq(b->alloc_count, 2);
    cr_assert_eq(b->alloc_bytes, 250);
    cr_assert_eq(b->free_count, 1);
    cr_assert_eq(s.alloc_count, 6);
    cr_assert_eq(s.alloc_bytes, 761);
    cr_assert_eq(s.free_count, 2);
    mt_sites_destroy(&s);
    mt_sites_destroy(NULL);
}

Test(sites, peak_that_moves_later_resettles_every_site)
{
    struct mt_sites s;
    peak_scenario(&s);
    alloc(&s, 7, 1000, 30, 1, 9); /* live 1461: a new peak */
    cr_assert_eq(release(&s, 7, 1, 10), 1);
    alloc(&s, 8, 5, 20, 1, 11);
    mt_sites_finish(&s, 12);
    cr_assert_eq(s.peak_bytes, 1461);
    cr_assert_eq(s.peak_time_ns, 9);
    cr_assert_eq(site(&s, 10)->peak_bytes, 10);
    cr_assert_eq(site(&s, 20)->peak_bytes, 50);
    cr_assert_eq(site(&s, 20)->peak_count, 1);
    cr_assert_eq(site(&s, 30)->peak_bytes, 1400);
    cr_assert_eq(site(&s, 30)->peak_count, 2);
    cr_assert_eq(site(&s, 40)->peak_bytes, 1);
    cr_assert_eq(site(&s, 20)->live_bytes, 55);
    mt_sites_destroy(&s);
}

Test(sites, equal_live_total_is_not_a_new_peak)
{
    struct mt_sites s;
    mt_sites_init(&s);
    alloc(&s, 1, 100, 1, 1, 1);
    cr_assert_eq(release(&s, 1, 1, 2), 1);
    alloc(&s, 2, 100, 2, 1, 3); /* the same total from another site */
    mt_sites_finish(&s, 3);
    cr_assert_eq(s.peak_time_ns, 1);
    cr_assert_eq(site(&s, 1)->peak_bytes, 100);
    cr_assert_eq(site(&s, 2)->peak_bytes, 0);
    mt_sites_destroy(&s);
}

Test(sites, leaks_and_unmatched_and_damaged)
{
    struct mt_sites s;
    mt_sites_init(&s);
    alloc(&s, 1, 10, 0, 1, 1);   /* no stack: site 0 */
    alloc(&s, 2, 20, 5, 1, 2);
    alloc(&s, 3, 30, 5, 1, 3);
    cr_assert_eq(release(&s, 2, 1, 4), 1);
    cr_assert_eq(release(&s, 2, 1, 5), 0); /* double free */
    cr_assert_eq(release(&s, 0, 1, 6), 0); /* unknown block */
    uint64_t size = 0;
    cr_assert_eq(mt_sites_free(&s, 3, 9, 7, true, &size), 1); /* IMPLICIT */
    cr_assert_eq(size, 30);
    alloc(&s, 4, 7, 5, 1, 8);
    alloc(&s, 4, 9, 6, 1, 9);    /* the same block again: a damaged trace */
    mt_sites_finish(&s, 9);
    cr_assert_eq(s.live_bytes, 19);
    cr_assert_eq(s.live_count, 2);
    cr_assert_eq(s.free_count, 1);
    cr_assert_eq(s.unmatched_frees, 2);
    cr_assert_eq(s.implicit_frees, 1);
    cr_assert_eq(site(&s, 0)->live_bytes, 10);
    cr_assert_eq(site(&s, 5)->live_bytes, 0);
    cr_assert_eq(site(&s, 5)->live_count, 0);
    cr_assert_eq(site(&s, 5)->free_count, 1);
    cr_assert_eq(site(&s, 6)->live_bytes, 9);
    cr_assert_eq(s.peak_bytes, 60);
    mt_sites_destroy(&s);
}

Test(sites, temporaries)
{
    struct mt_sites s;
    mt_sites_init(&s);
    uint64_t t = 0;
    /* freed right away: a temporary */
    alloc(&s, 1, 11, 1, 1, ++t);
    release(&s, 1, 1, ++t);
    /* another thread's events in between do not matter */
    alloc(&s, 2, 12, 1, 1, ++t);
    alloc(&s, 3, 100, 9, 5, ++t);
    release(&s, 2, 1, ++t);
    /* freed by another thread: not a temporary */
    alloc(&s, 4, 13, 2, 1, ++t);
    release(&s, 4, 2, ++t);
    /* an allocation in between: only the inner one is */
    alloc(&s, 5, 14, 2, 1, ++t);
    alloc(&s, 6, 15, 3, 1, ++t);
    release(&s, 6, 1, ++t);
    release(&s, 5, 1, ++t);
    /* a free in between (of nothing live) */
    alloc(&s, 7, 16, 2, 1, ++t);
    release(&s, 999, 1, ++t);
    release(&s, 7, 1, ++t);
    /* an IMPLICIT free in between is not the program's */
    alloc(&s, 8, 17, 3, 1, ++t);
    alloc(&s, 9, 1, 9, 4, ++t);
    cr_assert_eq(mt_sites_free(&s, 9, 1, ++t, true, NULL), 1);
    release(&s, 8, 1, ++t);
    /* realloc right after malloc: the old block is a temporary */
    alloc(&s, 10, 18, 4, 3, ++t);
    release(&s, 10, 3, ++t);
    alloc(&s, 11, 36, 4, 3, ++t);
    /* thread 5 frees its block after only other threads' events */
    release(&s, 3, 5, ++t);
    mt_sites_finish(&s, t);
    cr_assert_eq(s.temp_count, 6);
    cr_assert_eq(s.temp_bytes, 11 + 12 + 15 + 17 + 18 + 100);
    cr_assert_eq(site(&s, 1)->temp_count, 2);
    cr_assert_eq(site(&s, 1)->temp_bytes, 23);
    cr_assert_eq(site(&s, 2)->temp_count, 0);
    cr_assert_eq(site(&s, 3)->temp_count, 2);
    cr_assert_eq(site(&s, 3)->temp_bytes, 32);
    cr_assert_eq(site(&s, 4)->temp_count, 1);
    cr_assert_eq(site(&s, 9)->temp_count, 1);
    cr_assert_eq(site(&s, 9)->temp_bytes, 100);
    mt_sites_destroy(&s);
}

Test(sites, histogram_buckets)
{
    struct mt_sites s;
    mt_sites_init(&s);
    static const uint64_t sizes[] = { 0, 1, 2, 3, 4, 1023, 1024, 1025, 1ull << 40, 1ull << 63 };
    for (unsigned i = 0; i < sizeof sizes / sizeof *sizes; i++)
        alloc(&s, i + 1, sizes[i], 1, 1, i);
    mt_sites_finish(&s, 10);
    static const struct { unsigned k; uint64_t count, bytes; } want[] = {
        { 0, 1, 0 }, { 1, 1, 1 }, { 2, 2, 5 }, { 3, 1, 4 }, { 10, 1, 1023 },
        { 11, 2, 2049 }, { 41, 1, 1ull << 40 }, { 64, 1, 1ull << 63 },
    };
    uint64_t total = 0;
    for (unsigned i = 0; i < sizeof want / sizeof *want; i++) {
        cr_assert_eq(s.sizes[want[i].k].count, want[i].count, "bucket %u", want[i].k);
        cr_assert_eq(s.sizes[want[i].k].bytes, want[i].bytes, "bucket %u", want[i].k);
        total += want[i].count;
    }
    uint64_t n = 0;
    for (unsigned k = 0; k < MT_SIZE_BUCKETS; k++)
        n += s.sizes[k].count;
    cr_assert_eq(n, total);
    cr_assert_eq(mt_size_bucket_min(0), 0);
    cr_assert_eq(mt_size_bucket_max(0), 0);
    cr_assert_eq(mt_size_bucket_min(1), 1);
    cr_assert_eq(mt_size_bucket_max(1), 1);
    cr_assert_eq(mt_size_bucket_min(11), 1024);
    cr_assert_eq(mt_size_bucket_max(11), 2047);
    cr_assert_eq(mt_size_bucket_max(64), UINT64_MAX);
    mt_sites_destroy(&s);
}

/* The buckets cover [0, end] contiguously, and each holds the most heap
 * bytes live in it (checked against the events' own values). */
Test(sites, timeline_covers_the_run)
{
    struct mt_sites s;
    mt_sites_init(&s);
    mt_sites_rss(&s, 500, 1000);
    alloc(&s, 1, 100, 1, 1, 1000);
    alloc(&s, 2, 200, 1, 1, 2000);
    release(&s, 1, 1, 3000);          /* live 200 */
    mt_sites_rss(&s, 40000, 5000);
    alloc(&s, 3, 1000, 1, 1, 1000000); /* live 1200 */
    release(&s, 3, 1, 1000001);
    mt_sites_rss(&s, 1500000, 3000);
    mt_sites_finish(&s, 2000000);
    cr_assert_geq(s.tl_used, 33);
    cr_assert_leq(s.tl_used, MT_TIMELINE_BUCKETS);
    uint64_t w = 1ull << s.tl_shift;
    cr_assert_leq(2000000, s.tl_used * w - 1, "the last bucket holds the end");
    cr_assert_gt(2000000, (s.tl_used - 1) * w - 1);
    for (unsigned i = 0; i < s.tl_used; i++) {
        uint64_t lo = i * w, hi = lo + w; /* [lo, hi) */
        const struct mt_timeline_bucket *b = &s.timeline[i];
        uint64_t heap = hi <= 1000 ? 0 : hi <= 2000 ? 100 : lo < 3000 ? 300
                      : hi <= 1000000 ? 200 : lo <= 1000000 ? 1200 : 200;
        cr_assert_eq(b->heap_bytes, heap, "bucket %u [%llu, %llu)", i, (unsigned long long)lo,
                     (unsigned long long)hi);
        uint64_t rss = hi <= 500 ? 0 : hi <= 40000 ? 1000 : lo < 40000 ? 5000
                     : hi <= 1500000 ? 5000 : lo <= 1500000 ? 5000 : 3000;
        cr_assert_eq(b->has_rss, hi > 500, "bucket %u", i);
        if (b->has_rss)
            cr_assert_eq(b->rss_bytes, rss, "bucket %u", i);
    }
    mt_sites_destroy(&s);
}

Test(sites, timeline_of_a_short_run)
{
    struct mt_sites s;
    mt_sites_init(&s);
    alloc(&s, 1, 8, 1, 1, 3);
    mt_sites_finish(&s, 10);
    cr_assert_eq(s.tl_shift, 0);
    cr_assert_eq(s.tl_used, 11);
    for (unsigned i = 0; i < 11; i++)
        cr_assert_eq(s.timeline[i].heap_bytes, i < 3 ? 0 : 8);
    mt_sites_destroy(&s);
    /* no event at all */
    mt_sites_init(&s);
    mt_sites_finish(&s, 0);
    cr_assert_eq(s.tl_used, 1);
    cr_assert_eq(s.nsites, 0);
    mt_sites_destroy(&s);
}

Test(sites, call_tree)
{
    struct mt_sites s;
    mt_sites_init(&s);
    alloc(&s, 1, 8, 3, 1, 1);   /* used before its nodes are defined */
    cr_assert_eq(mt_sites_node(&s, 3, 2, 0x3000), 0);
    cr_assert_eq(mt_sites_node(&s, 1, 0, 0x1000), 0);
    cr_assert_eq(mt_sites_node(&s, 2, 1, 0x2000), 0);
    cr_assert_eq(mt_sites_node(&s, 4, 9, 0x4000), 0); /* parent never defined */
    cr_assert_eq(mt_sites_node(&s, 7, 7, 0x7000), 0); /* a cycle (corrupt) */
    uint64_t ips[MT_MAX_FRAMES + 8];
    cr_assert_eq(mt_sites_frames(&s, 3, ips, MT_MAX_FRAMES), 3);
    cr_assert_eq(ips[0], 0x3000);
    cr_assert_eq(ips[1], 0x2000);
    cr_assert_eq(ips[2], 0x1000);
    cr_assert_eq(mt_sites_frames(&s, 3, ips, 2), 2);
    cr_assert_eq(mt_sites_frames(&s, 4, ips, MT_MAX_FRAMES), 1);
    cr_assert_eq(mt_sites_frames(&s, 0, ips, MT_MAX_FRAMES), 0);
    cr_assert_eq(mt_sites_frames(&s, 99, ips, MT_MAX_FRAMES), 0);
    cr_assert_eq(mt_sites_frames(&s, 7, ips, MT_MAX_FRAMES + 8), MT_MAX_FRAMES);
    cr_assert_eq(s.node_count, 5);
    mt_sites_destroy(&s);
}

/* ---- against a brute-force model ------------------------------------------------- */

#define NB 400   /* block ids 1..NB */
#define NS 12    /* sites 0..NS-1 */
#define NT 4     /* threads */

struct model {
    uint64_t size[NB + 1];
    int site[NB + 1];
    bool live[NB + 1];
    uint64_t live_bytes, peak;
    uint64_t site_live[NS], site_count[NS], at_peak[NS], at_peak_count[NS];
    uint64_t temp[NS], temp_bytes[NS];
    int last_event_block[NT]; /* the block the thread last allocated, 0 after a free */
};

static uint64_t rnd(uint64_t *st, uint64_t n)
{
    *st = *st * 6364136223846793005ull + 1442695040888963407ull;
    return (*st >> 33) % n;
}

/* Block ids: in order (all young), spread so that many share a slot of
 * the window of young blocks (moved to the hash table), or shuffled (out
 * of order: straight to the hash table). */
static uint64_t block_id(int mode, const uint64_t *perm, int b)
{
    if (mode == 0)
        return (uint64_t)b;
    if (mode == 1)
        return (uint64_t)b * MT_SITES_WINDOW + (uint64_t)(b % 5);
    return perm[b];
}

Test(sites, random_streams_match_a_model)
{
    for (uint64_t seed = 1; seed <= 30; seed++) {
        uint64_t st = seed;
        struct model *m = calloc(1, sizeof *m);
        struct mt_sites s;
        mt_sites_init(&s);
        uint64_t next_block = 1, t = 0;
        int mode = (int)(seed % 3);
        size_t most_old = 0;
        uint64_t perm[NB + 1];
        for (int i = 0; i <= NB; i++)
            perm[i] = (uint64_t)i;
        for (int i = NB; i > 1; i--) {
            int j = 1 + (int)rnd(&st, (uint64_t)i);
            uint64_t x = perm[i];
            perm[i] = perm[j];
            perm[j] = x;
        }
        for (int step = 0; step < 5000; step++) {
            t += rnd(&st, 1000);
            uint32_t tid = (uint32_t)rnd(&st, NT);
            unsigned what = (unsigned)rnd(&st, 10);
            if (what < 5 && next_block <= NB) {
                int b = (int)next_block++;
                int si = (int)rnd(&st, NS);
                uint64_t size = rnd(&st, 3) ? rnd(&st, 5000) : 0;
                m->size[b] = size;
                m->site[b] = si;
                m->live[b] = true;
                m->site_live[si] += size;
                m->site_count[si]++;
                m->live_bytes += size;
                if (m->live_bytes > m->peak) {
                    m->peak = m->live_bytes;
                    memcpy(m->at_peak, m->site_live, sizeof m->at_peak);
                    memcpy(m->at_peak_count, m->site_count, sizeof m->at_peak_count);
                }
                m->last_event_block[tid] = b;
                alloc(&s, block_id(mode, perm, b), size, (uint64_t)si * 7, tid, t);
                most_old = s.blocks.count > most_old ? s.blocks.count : most_old;
            } else if (what < 9) {
                /* a free of a random block, live or not */
                int b = (int)rnd(&st, next_block);
                bool was_live = b && m->live[b];
                if (was_live) {
                    if (m->last_event_block[tid] == b) {
                        m->temp[m->site[b]]++;
                        m->temp_bytes[m->site[b]] += m->size[b];
                    }
                    m->live[b] = false;
                    m->site_live[m->site[b]] -= m->size[b];
                    m->site_count[m->site[b]]--;
                    m->live_bytes -= m->size[b];
                }
                m->last_event_block[tid] = 0;
                cr_assert_eq(release(&s, b ? block_id(mode, perm, b) : 0, tid, t), was_live ? 1 : 0);
            } else {
                mt_sites_rss(&s, t, rnd(&st, 1u << 30));
            }
        }
        mt_sites_finish(&s, t);
        cr_assert_eq(s.peak_bytes, m->peak);
        cr_assert_eq(s.live_bytes, m->live_bytes);
        uint64_t live = 0;
        for (int b = 1; b < (int)next_block; b++)
            live += m->live[b];
        cr_assert_eq(s.live_count, live);
        if (mode != 0)
            cr_assert_gt(most_old, 0, "blocks outside the window");
        for (int si = 0; si < NS; si++) {
            long i = mt_sites_find(&s, (uint64_t)si * 7);
            if (i < 0)
                continue;
            const struct mt_site *x = &s.sites[i];
            cr_assert_eq(x->peak_bytes, m->at_peak[si], "seed %llu site %d", (unsigned long long)seed, si);
            cr_assert_eq(x->peak_count, m->at_peak_count[si]);
            cr_assert_eq(x->live_bytes, m->site_live[si]);
            cr_assert_eq(x->live_count, m->site_count[si]);
            cr_assert_eq(x->temp_count, m->temp[si], "seed %llu site %d", (unsigned long long)seed, si);
            cr_assert_eq(x->temp_bytes, m->temp_bytes[si]);
        }
        /* the timeline's maximum is the peak, and its buckets cover the run */
        uint64_t most = 0;
        for (unsigned i = 0; i < s.tl_used; i++)
            most = s.timeline[i].heap_bytes > most ? s.timeline[i].heap_bytes : most;
        cr_assert_eq(most, m->peak);
        cr_assert_geq((uint64_t)s.tl_used << s.tl_shift, t + 1);
        mt_sites_destroy(&s);
        free(m);
    }
}

/* ---- a real program ------------------------------------------------------------------ */

TestSuite(sites_program, .init = tu_make_tmpdir, .fini = tu_remove_tmpdir, .timeout = 120);


static bool ends_with(const char *s, const char *suffix)
{
    size_t a = strlen(s), b = strlen(suffix);
    return a >= b && !strcmp(s + a - b, suffix) && (a == b || s[a - b - 1] == '/');
}

Test(sites_program, basic_top_site_is_named)
{
    const char *trace = tu_in_tmp("t.bin");
    tu_trace_pattern("basic", trace);
    struct mt_report rep;
    tu_report_of(trace, &rep);
    cr_assert(rep.symbolized);
    cr_assert_gt(rep.nlist[MT_LIST_PEAK], 0);
    /* basic: a (U+1), b (2U+2), c (3U+3); b freed, then d (U+4): the peak
     * 6U+6 holds c as the largest block */
    const struct mt_report_site *top = &rep.site[rep.list[MT_LIST_PEAK][0]];
    cr_assert_eq(top->peak_bytes, 3 * 4096 + 3);
    cr_assert_eq(top->peak_count, 1);
    cr_assert_gt(top->nframes, 0);
    cr_assert_not_null(top->frames[0].function);
    cr_assert_str_neq(top->frames[0].function, "malloc", "allocator frames are left out");
    bool found = false;
    for (unsigned i = 0; i < top->nframes && !found; i++) {
        const struct mt_report_frame *f = &top->frames[i];
        found = f->function && !strcmp(f->function, "basic") && f->file &&
                ends_with(f->file, "patterns.c") && f->line > 0 && f->module &&
                ends_with(f->module, "patterns");
    }
    cr_assert(found, "no frame basic (patterns.c) in the top site");
    /* the JSON form of the same frame */
    cJSON *o = mt_report_to_json(&rep);
    cr_assert_not_null(o);
    cJSON *ts = cJSON_GetObjectItemCaseSensitive(o, "top_sites");
    cJSON *frames = cJSON_GetObjectItemCaseSensitive(cJSON_GetArrayItem(ts, 0), "frames");
    found = false;
    cJSON *fr;
    cJSON_ArrayForEach(fr, frames)
    {
        cJSON *fn = cJSON_GetObjectItemCaseSensitive(fr, "function");
        cJSON *file = cJSON_GetObjectItemCaseSensitive(fr, "file");
        if (cJSON_IsString(fn) && !strcmp(fn->valuestring, "basic") && cJSON_IsString(file) &&
            ends_with(file->valuestring, "patterns.c"))
            found = true;
    }
    cr_assert(found);
    uint64_t unresolved = 0;
    for (unsigned i = 0; i < 5; i++)
        unresolved += rep.sym_unresolved[i];
    cr_assert_lt(unresolved, rep.sym_frames);
    cJSON_Delete(o);
    mt_report_destroy(&rep);
}
