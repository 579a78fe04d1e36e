/* sites: per-site heap numbers, temporaries, size histogram, timeline and
 * call tree in one pass (see sites.h).
 *
 * The hot path is one call per heap event: mt_sites_alloc finds the site
 * (a small direct-mapped cache, then the site index), stores the block with its size
 * and site, and updates the site, the totals, the histogram and the
 * timeline; mt_sites_free takes the block out and updates the same. The
 * tables are hash-table.h's with 24-byte entries, so a block carries its
 * size and site and a node its parent and address in one probe.
 *
 * Blocks. A block id is the seq of its allocation, and in merged order the
 * ids of allocations nearly always increase. An allocation with an id above
 * every earlier one (max_block) goes to young[id % MT_SITES_WINDOW], moving
 * the slot's previous block, if it is still live, to the hash table; that
 * id is new, so it is in neither place. Any other allocation (an id seen
 * out of order, or id 0, in damaged traces) first drops a live block of the
 * same id from wherever it is, then goes to the hash table. So an id is in
 * at most one of the two, and a free looks in its window slot, then in the
 * table. Backward-shift deletion in the table reads the slot after the
 * hole, a branch that a half-full table mispredicts half the time; the
 * window avoids that for the common short-lived block.
 *
 * Temporaries: the last heap event of each thread is remembered as the
 * block it allocated (0 after a free); a free by that thread of exactly
 * that block is a temporary. The thread of the previous event is held in
 * cur_tid/cur_last, so a run of events of one thread touches no table.
 *
 * Invariants: sum of sites' live_bytes = live_bytes; a site's peak_* hold
 * its live numbers at the last peak once its epoch equals s->epoch, and
 * its live numbers are unchanged since that peak while its epoch is older.
 * Timeline: buckets past max(tl_heap_last, tl_rss_last) are zero.
 */
#include "sites.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "memtrace-format.h"

/* ---- the wide table: hash-table.h for 24-byte entries ------------------------ */

#define HT_PREFIX wt
#define HT_TABLE struct mt_wide_table
#define HT_ENTRY struct mt_wide_entry
#define HT_MIN_BITS 6
#include "hash-table.h"

/* ---- setup ------------------------------------------------------------------------ */

void mt_sites_init(struct mt_sites *s)
{
    memset(s, 0, sizeof *s);
    for (unsigned i = 0; i < MT_SITES_CACHE; i++)
        s->site_cache[i].site = UINT32_MAX;
    mt_live_table_init(&s->threads);
    wt_init(&s->blocks);
    wt_init(&s->site_index);
    wt_init(&s->nodes);
}

void mt_sites_destroy(struct mt_sites *s)
{
    if (!s)
        return;
    free(s->sites);
    free(s->young);
    mt_live_table_destroy(&s->threads);
    wt_destroy(&s->blocks);
    wt_destroy(&s->site_index);
    wt_destroy(&s->nodes);
    mt_sites_init(s);
}

/* ---- timeline ---------------------------------------------------------------------- */

/* Halves the resolution: bucket i becomes buckets 2i and 2i+1. */
static void tl_merge(struct mt_sites *s)
{
    struct mt_timeline_bucket *b = s->timeline;
    for (unsigned i = 0; i < MT_TIMELINE_BUCKETS / 2; i++) {
        const struct mt_timeline_bucket *x = &b[2 * i], *y = &b[2 * i + 1];
        struct mt_timeline_bucket m = {
            .heap_bytes = x->heap_bytes > y->heap_bytes ? x->heap_bytes : y->heap_bytes,
            .has_rss = x->has_rss || y->has_rss,
        };
        if (x->has_rss)
            m.rss_bytes = x->rss_bytes;
        if (y->has_rss && y->rss_bytes > m.rss_bytes)
            m.rss_bytes = y->rss_bytes;
        b[i] = m;
    }
    memset(&b[MT_TIMELINE_BUCKETS / 2], 0, sizeof *b * (MT_TIMELINE_BUCKETS / 2));
    s->tl_shift++;
    s->tl_heap_last >>= 1;
    s->tl_rss_last >>= 1;
}

/* The bucket of time t, merging until it fits. */
static inline unsigned tl_bucket(struct mt_sites *s, uint64_t t)
{
    uint64_t i = t >> s->tl_shift;
    while (__builtin_expect(i >= MT_TIMELINE_BUCKETS, 0)) {
        tl_merge(s);
        i = t >> s->tl_shift;
    }
    return (unsigned)i;
}

/* Carries the live heap value (unchanged since the last heap event) into
 * the buckets after the last one that saw it, up to i. */
static inline void tl_heap_carry(struct mt_sites *s, unsigned i)
{
    while (s->tl_heap_last < i) {
        struct mt_timeline_bucket *b = &s->timeline[++s->tl_heap_last];
        if (s->live_bytes > b->heap_bytes)
            b->heap_bytes = s->live_bytes;
    }
}

static void tl_rss_carry(struct mt_sites *s, unsigned i)
{
    if (!s->have_rss) {
        if (s->tl_rss_last < i)
            s->tl_rss_last = i;
        return;
    }
    while (s->tl_rss_last < i) {
        struct mt_timeline_bucket *b = &s->timeline[++s->tl_rss_last];
        if (!b->has_rss || s->rss_now > b->rss_bytes)
            b->rss_bytes = s->rss_now;
        b->has_rss = true;
    }
}

void mt_sites_rss(struct mt_sites *s, uint64_t time_ns, uint64_t bytes)
{
    unsigned i = tl_bucket(s, time_ns);
    tl_rss_carry(s, i);
    struct mt_timeline_bucket *b = &s->timeline[i];
    if (!b->has_rss || bytes > b->rss_bytes)
        b->rss_bytes = bytes;
    b->has_rss = true;
    s->rss_now = bytes;
    s->have_rss = true;
}

/* ---- sites ------------------------------------------------------------------------- */

/* Before a site's live numbers change: keep them as its at-peak numbers if
 * a peak was reached since it last changed. */
static inline void site_settle(struct mt_sites *s, struct mt_site *site)
{
    if (site->epoch != s->epoch) {
        site->peak_bytes = site->live_bytes;
        site->peak_count = site->live_count;
        site->epoch = s->epoch;
    }
}

static int site_of(struct mt_sites *s, uint64_t stack_id, uint32_t *out)
{
    struct mt_wide_entry *e = wt_find(&s->site_index, stack_id);
    if (e) {
        *out = (uint32_t)e->a;
        return 0;
    }
    if (s->nsites == s->cap_sites) {
        size_t ncap = s->cap_sites ? s->cap_sites * 2 : 64;
        if (ncap > UINT32_MAX)
            return -ENOMEM;
        struct mt_site *n = realloc(s->sites, ncap * sizeof *n);
        if (!n)
            return -ENOMEM;
        s->sites = n;
        s->cap_sites = ncap;
    }
    struct mt_wide_entry ne = { stack_id, s->nsites, 0 }, old;
    int rc = wt_insert(&s->site_index, &ne, &old);
    if (rc < 0)
        return rc;
    /* A site created now has seen no peak: its at-peak numbers are 0. */
    s->sites[s->nsites] = (struct mt_site){ .stack_id = stack_id, .epoch = s->epoch };
    *out = (uint32_t)s->nsites++;
    return 0;
}

long mt_sites_find(const struct mt_sites *s, uint64_t stack_id)
{
    const struct mt_wide_entry *e = wt_find(&s->site_index, stack_id);
    return e ? (long)e->a : -1;
}

/* ---- temporaries ------------------------------------------------------------------ */

/* Makes tid the current thread (cur_last its last block). */
static inline int thread_switch(struct mt_sites *s, uint32_t tid)
{
    if (__builtin_expect(s->have_cur_tid && s->cur_tid == tid, 1))
        return 0;
    if (s->have_cur_tid) {
        struct mt_live_entry e = { s->cur_tid, s->cur_last };
        int rc = mt_live_table_insert(&s->threads, &e, NULL);
        if (rc < 0)
            return rc;
    }
    struct mt_live_entry *f = mt_live_table_find(&s->threads, tid);
    s->cur_tid = tid;
    s->cur_last = f ? f->value : 0;
    s->have_cur_tid = true;
    return 0;
}

/* ---- events ------------------------------------------------------------------------ */

/* Takes a released block off its site and the totals. */
static inline void block_gone(struct mt_sites *s, const struct mt_wide_entry *b)
{
    struct mt_site *site = &s->sites[b->b];
    site_settle(s, site);
    site->live_bytes -= b->a;
    site->live_count--;
    s->live_bytes -= b->a;
    s->live_count--;
}

/* Stores a new live block (see "Blocks" above). 0 or -ENOMEM (nothing
 * changed). */
static inline int block_put(struct mt_sites *s, uint64_t block, uint64_t size, uint32_t si)
{
    struct mt_wide_entry e = { block, size, si }, old;
    if (__builtin_expect(!s->young, 0)) {
        s->young = calloc(MT_SITES_WINDOW, sizeof *s->young);
        if (!s->young)
            return -ENOMEM;
    }
    struct mt_wide_entry *y = &s->young[block & (MT_SITES_WINDOW - 1)];
    if (__builtin_expect(block > s->max_block, 1)) {
        if (y->key) {
            int rc = wt_insert(&s->blocks, y, &old);
            if (rc < 0)
                return rc;
        }
        *y = e;
        s->max_block = block;
        return 0;
    }
    /* An id not above every earlier one: a damaged trace, or a record
     * merged out of order. Keep the id in one place. */
    int rc = wt_insert(&s->blocks, &e, &old);
    if (rc < 0)
        return rc;
    if (rc == 1) { /* two allocations with one seq: a damaged trace */
        block_gone(s, &old);
    } else if (block && y->key == block) {
        block_gone(s, y);
        y->key = 0;
    }
    return 0;
}

/* Takes block out: 1 and its entry in *out, or 0 if it is not live. */
static inline int block_take(struct mt_sites *s, uint64_t block, struct mt_wide_entry *out)
{
    if (!block)
        return wt_remove(&s->blocks, 0, out);
    if (s->young) {
        struct mt_wide_entry *y = &s->young[block & (MT_SITES_WINDOW - 1)];
        if (y->key == block) {
            *out = *y;
            y->key = 0;
            return 1;
        }
    }
    return wt_remove(&s->blocks, block, out);
}

int mt_sites_alloc(struct mt_sites *s, uint64_t block, uint64_t size, uint64_t stack_id,
                   uint32_t tid, uint64_t time_ns)
{
    uint32_t si;
    typeof(s->site_cache[0]) *c = &s->site_cache[stack_id & (MT_SITES_CACHE - 1)];
    if (__builtin_expect(c->stack_id == stack_id && c->site != UINT32_MAX, 1)) {
        si = c->site;
    } else {
        int rc = site_of(s, stack_id, &si);
        if (rc < 0)
            return rc;
        c->stack_id = stack_id;
        c->site = si;
    }
    int rc = thread_switch(s, tid);
    if (rc < 0)
        return rc;
    unsigned ti = tl_bucket(s, time_ns);
    tl_heap_carry(s, ti);

    rc = block_put(s, block, size, si);
    if (rc < 0)
        return rc;
    s->cur_last = block;

    struct mt_site *site = &s->sites[si];
    site_settle(s, site);
    site->alloc_count++;
    site->alloc_bytes += size;
    site->live_bytes += size;
    site->live_count++;
    s->alloc_count++;
    s->alloc_bytes += size;
    s->live_count++;
    s->live_bytes += size;
    if (s->live_bytes > s->peak_bytes) {
        s->peak_bytes = s->live_bytes;
        s->peak_time_ns = time_ns;
        s->epoch++;
    }
    struct mt_timeline_bucket *tb = &s->timeline[ti];
    if (s->live_bytes > tb->heap_bytes)
        tb->heap_bytes = s->live_bytes;
    unsigned k = size ? 64u - (unsigned)__builtin_clzll(size) : 0;
    s->sizes[k].count++;
    s->sizes[k].bytes += size;
    return 0;
}

int mt_sites_free(struct mt_sites *s, uint64_t block, uint32_t tid, uint64_t time_ns, bool implicit,
                  uint64_t *size)
{
    unsigned ti = tl_bucket(s, time_ns);
    tl_heap_carry(s, ti);
    struct mt_wide_entry b = { 0, 0, 0 };
    int released = block && block_take(s, block, &b);
    if (released)
        block_gone(s, &b);
    if (implicit) {
        s->implicit_frees++;
    } else {
        int rc = thread_switch(s, tid);
        if (rc < 0)
            return rc;
        if (released) {
            s->free_count++;
            s->sites[b.b].free_count++;
            if (s->cur_last == block) {
                s->temp_count++;
                s->temp_bytes += b.a;
                s->sites[b.b].temp_count++;
                s->sites[b.b].temp_bytes += b.a;
            }
        } else {
            s->unmatched_frees++;
        }
        s->cur_last = 0;
    }
    if (released && size)
        *size = b.a;
    return released;
}

int mt_sites_node(struct mt_sites *s, uint64_t id, uint64_t parent, uint64_t ip)
{
    struct mt_wide_entry e = { id, parent, ip }, old;
    int rc = wt_insert(&s->nodes, &e, &old);
    if (rc < 0)
        return rc;
    s->node_count += rc == 0;
    return 0;
}

void mt_sites_finish(struct mt_sites *s, uint64_t end_ns)
{
    for (size_t i = 0; i < s->nsites; i++)
        site_settle(s, &s->sites[i]);
    unsigned last = tl_bucket(s, end_ns);
    tl_heap_carry(s, last);
    tl_rss_carry(s, last);
    s->tl_used = last + 1;
}

unsigned mt_sites_frames(const struct mt_sites *s, uint64_t stack_id, uint64_t *ips, unsigned max)
{
    unsigned n = 0;
    uint64_t id = stack_id;
    while (id && n < max && n < MT_MAX_FRAMES) {
        const struct mt_wide_entry *e = wt_find(&s->nodes, id);
        if (!e)
            break;
        ips[n++] = e->b;
        id = e->a;
    }
    return n;
}
